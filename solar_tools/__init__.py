"""Tools outside the server: ``replay`` (an HTTP client seeding a running service) and
``redis_server`` (a private redis-server process for tests and benchmarks)."""
