"""``python -m bench.quality``: the study's command line (:func:`bench.quality.cli.main`)."""

from bench.quality.cli import main

raise SystemExit(main())
