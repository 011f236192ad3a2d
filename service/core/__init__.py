"""Use cases and the loaded model: ``ranking`` and ``ingest`` (what the routes call),
``users`` (the one place a user's state is loaded, rebuilt when stale and written back),
``applier`` (folds the ingest stream into states), ``serving_model`` and ``items`` (item ids
→ rows). No FastAPI here."""
