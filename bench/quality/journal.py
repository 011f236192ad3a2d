"""The study's journal: every finished run appended to a file, so an interrupted study resumes.

A study of three datasets, three seeds and a dozen rows runs for hours on a 2-core machine; a
crash or a stopped session must not throw the finished runs away. With ``--journal PATH``
each run is appended (pickled with the job that made it) as it finishes; a later study with
the same journal reuses a recorded run only for a job equal to it in every field (dataset,
settings, row, seed, loader options), so a changed setting trains again.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from bench.quality.run import RunResult, Skipped
from bench.quality.setup import Job

__all__ = ["append", "recorded"]


def recorded(path: Path) -> list[tuple[Job, RunResult | Skipped]]:
    """The (job, result) pairs appended to ``path`` so far, one per job (none if the file
    does not exist). A record that does not load (cut short by a crash, or written by another
    version of the study) ends the journal: the file is truncated before it, so the runs
    appended next are readable, and its job trains again."""
    if not path.exists():
        return []
    out: list[tuple[Job, RunResult | Skipped]] = []
    with path.open("r+b") as f:
        while True:
            good = f.tell()
            try:
                job, result = pickle.load(f)
            except EOFError:
                break
            except Exception:  # noqa: BLE001 - any torn or foreign record ends the journal
                f.truncate(good)
                break
            if all(job != seen for seen, _ in out):
                out.append((job, result))
    return out


def append(path: Path, job: Job, result: RunResult | Skipped) -> None:
    """Append one finished run to the journal (created with its folder if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as f:
        pickle.dump((job, result), f)
