"""What the benchmarks share: :mod:`.harness` (a private Redis, a ``solar serve`` process,
seeding users), :mod:`.load` (/rank load generation) and :mod:`.markdown` (named sections of a
markdown file that several benchmarks write into)."""
