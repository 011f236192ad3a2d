"""Named sections of a markdown file that several benchmarks write into.

A section is the text between ``<!-- begin:NAME -->`` and ``<!-- end:NAME -->``; a benchmark
replaces its own section and leaves the rest of the file (other benchmarks' tables, prose)
as it is. A missing section is appended at the end.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["replace_section", "sections", "write_section"]


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- begin:{name} -->", f"<!-- end:{name} -->"


def replace_section(document: str, name: str, body: str) -> str:
    """``document`` with section ``name`` holding ``body`` (appended when absent)."""
    begin, end = _markers(name)
    block = f"{begin}\n{body.strip()}\n{end}"
    start = document.find(begin)
    stop = document.find(end, start + len(begin)) if start >= 0 else -1
    if start < 0 or stop < 0:
        separator = "\n\n" if document.strip() else ""
        return document.rstrip() + separator + block + "\n"
    return document[:start] + block + document[stop + len(end) :]


def write_section(path: Path, name: str, body: str) -> None:
    """Replace section ``name`` of the file at ``path`` (created when missing)."""
    existing = path.read_text() if path.is_file() else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(replace_section(existing, name, body))


def sections(document: str) -> dict[str, str]:
    """Every complete section of ``document``: name → body (as ``replace_section`` takes it)."""
    found: dict[str, str] = {}
    for match in _SECTION.finditer(document):
        found[match.group(1)] = match.group(2).strip()
    return found


_SECTION = re.compile(r"<!-- begin:([^ ]+) -->\n(.*?)\n<!-- end:\1 -->", re.DOTALL)
