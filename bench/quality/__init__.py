"""The lifelong quality study (``python -m bench.quality``): each row's own model trained,
tested and its serving cost measured; writes docs/RESULTS.md and docs/quality_vs_cost.png.

:mod:`.setup` (what runs: rows, dataset settings, configs), :mod:`.run` (one run),
:mod:`.cost` (a row's serving cost), :mod:`.doc` (the document and plot) and :mod:`.cli`
(the command line, the grid, the worker pool).
"""
