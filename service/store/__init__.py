"""Storage of user states and event logs: the ``Store`` protocol and its two implementations.

``base`` (the protocol), ``memory`` (embedded), ``redis_store`` (production), ``keys`` (the
Redis key layout and user-id rule) and ``eventlog`` (the 20-byte event record codec).
"""
