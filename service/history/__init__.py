"""The durable history tier: every event of every user, on disk, by absolute sequence number.

``base`` (the ``HistoryStore`` protocol, ``HistoryChunk``, ``HistorySlice``, the errors),
``memory`` (``MemoryHistory``, the embedded default) and ``postgres`` (``PostgresHistory``,
the production tier: compressed per-user segments in PostgreSQL).
"""
