"""The batch side of /rank: the micro-batcher and the batch scorer it runs (no FastAPI here)."""
