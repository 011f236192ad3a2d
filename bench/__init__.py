"""solar's benchmarks, one package per kind; every tool runs as ``python -m bench.<pkg>.<tool>``.

- :mod:`bench.common`: what the tools share (a private Redis and ``solar serve`` process,
  /rank load generation, named sections of a shared markdown file);
- :mod:`bench.micro`: in-process measurements of one piece (attention kernels, state modes,
  the serving pass's fusions and stages, devices, training steps); ``solar bench`` runs
  :mod:`bench.micro.kernels`, so this package and :mod:`bench.common` ship in the wheel;
- :mod:`bench.e2e`: end-to-end runs over HTTP against real processes (serve, ingest, A/B,
  the report with plots); checkout only;
- :mod:`bench.quality`: the lifelong quality study (``python -m bench.quality``); checkout
  only.
"""
