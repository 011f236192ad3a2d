"""The ingest stream (docs/DESIGN.md §3): P partitions of notices "user u has unapplied events",
consumed by appliers that each own some partitions (a lease per partition) in one consumer
group. ``base`` (the protocol), ``memory`` (embedded, in-process) and ``redis_stream``
(Redis Streams, cluster-ready: each partition has its own hash tag)."""
