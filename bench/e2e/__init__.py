"""End-to-end benchmarks on real tiers or processes: ``python -m bench.e2e.<name>``."""
