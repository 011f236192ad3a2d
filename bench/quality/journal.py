"""The study's journal: every finished run appended to a file, so an interrupted study resumes.

A study of three datasets, three seeds and a dozen rows runs for hours on a 2-core machine; a
crash or a stopped session must not throw the finished runs away. With ``--journal PATH``
each run is appended (pickled with the job that made it) as it finishes; a later study with
the same journal reuses a recorded run only for a job equal to it in every field (dataset,
settings, row, seed, loader options, and the code that trains and tests it:
:func:`code_version`), so a changed setting or a changed model trains again.
"""

from __future__ import annotations

import hashlib
import pickle
import subprocess
from pathlib import Path

from bench.quality.run import RunResult, Skipped
from bench.quality.setup import Job

__all__ = ["CODE_PATHS", "append", "code_version", "recorded"]

CODE_PATHS = ("model", "bench/quality")  # what a run's figures depend on


def code_version(repo: Path) -> str:
    """The version of the code under :data:`CODE_PATHS`: their git tree ids at HEAD, plus a
    digest of their uncommitted changes ("" outside a git checkout: nothing is reused)."""
    try:
        trees = subprocess.run(
            ["git", "rev-parse", *(f"HEAD:{p}" for p in CODE_PATHS)],
            cwd=repo,
            capture_output=True,
            check=True,
            text=True,
        ).stdout.split()
        diff = subprocess.run(
            ["git", "diff", "HEAD", "--", *CODE_PATHS], cwd=repo, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""
    dirty = f"+{hashlib.sha256(diff).hexdigest()[:12]}" if diff else ""
    return ",".join(t[:12] for t in trees) + dirty


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
