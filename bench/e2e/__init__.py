"""End-to-end benchmarks over HTTP against real ``solar serve`` / ``solar worker`` processes
and a private redis-server on 127.0.0.1 (``python -m bench.e2e.<tool>``): :mod:`.serve`
(the targets), :mod:`.ingest`, :mod:`.ab` (this checkout against a base revision),
:mod:`.report` (latency vs N, throughput vs batch, with plots) and :mod:`.storage` (Redis
bytes per user and the hot + durable ingest path, with a private PostgreSQL)."""
