"""In-process micro-benchmarks: one piece of the service measured alone, with a same-run
baseline (``python -m bench.micro.<tool>``; ``solar bench`` is :mod:`bench.micro.kernels`).

Importing the package sets ``OPENBLAS_NUM_THREADS=1`` unless the caller chose a value, as
``solar serve`` and ``solar worker`` do: a factor update works on 49×49 matrices, where BLAS
threads only add synchronisation (and, on a busy machine, milliseconds). It must be set
before numpy is first imported, which a tool's own imports would be too late for; torch's
kernels use their own thread pool (unaffected).
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
