"""Use cases and the loaded model: ``ranking`` and ``ingest`` (what the routes call),
``users`` (the one place a user's state is loaded, rebuilt when stale and written back),
``serving_model``, ``items`` (item ids → rows) and ``userlocks``. No FastAPI here."""
