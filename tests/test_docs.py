"""The README and docs/: a short front door, links that resolve, docs/DESIGN.md's sections as
the code cites them, every setting documented, every benchmark command runnable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.settings import Settings
from tests.test_docker import DESIGN_METRICS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DESIGN = DOCS / "DESIGN.md"
# What each section of docs/DESIGN.md is about: the code's "DESIGN §N" comments mean these.
SECTIONS = {
    1: "what solar is",
    2: "mathematics",
    3: "data flow",
    4: "storage",
    5: "http api",
    6: "metrics",
    7: "configuration",
    8: "layout",
    9: "python api",
    10: "targets",
}
LINK_RE = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
DESIGN_REF_RE = re.compile(r"DESIGN(?:\.md)? §(\d+)")
SOURCE_SUFFIXES = {".py", ".sh", ".md", ".conf", ".yml", ".toml"}


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces → hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)}


def _sources() -> list[Path]:
    tracked = [
        ROOT / d
        for d in ("model", "service", "solar_tools", "bench", "tests", "loadtest", "docker", "docs")
    ]
    files = [p for d in tracked for p in d.rglob("*") if p.suffix in SOURCE_SUFFIXES]
    return [*files, ROOT / "README.md", ROOT / "Makefile", ROOT / "Dockerfile"]


def test_the_readme_is_a_short_front_door() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, len(lines)
    assert lines[0] == "# solar" and lines[2].startswith("solar is an online ranking service")
    text = "\n".join(lines)
    assert "make run" in text and "make test" in text and "curl " in text
    assert "```mermaid" in text and "| folder | layer |" in text


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: p.name)
def test_relative_links_resolve(path: Path) -> None:
    broken = []
    for target in LINK_RE.findall(path.read_text()):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(target)
    assert not broken, broken


def test_design_sections_carry_the_topics_the_code_cites() -> None:
    headings = re.findall(r"^## (\d+)\. (.+)$", DESIGN.read_text(), flags=re.MULTILINE)
    numbered = {int(n): title.lower() for n, title in headings}
    assert sorted(numbered) == sorted(SECTIONS), numbered
    for number, topic in SECTIONS.items():
        assert topic in numbered[number], (number, numbered[number])


def test_every_design_reference_names_an_existing_section() -> None:
    wrong = []
    for path in _sources():
        for number in DESIGN_REF_RE.findall(path.read_text(errors="replace")):
            if int(number) not in SECTIONS:
                wrong.append(f"{path.relative_to(ROOT)}: §{number}")
    assert not wrong, wrong


def test_references_outside_model_and_service_name_the_file_in_the_repository() -> None:
    """bench/, loadtest/, solar_tools/ and tests/bench point at docs/DESIGN.md, not a brief."""
    bare = []
    for folder in ("bench", "loadtest", "solar_tools", "tests/bench"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in SOURCE_SUFFIXES and re.search(
                r"(?<!docs/)DESIGN §", path.read_text()
            ):
                bare.append(str(path.relative_to(ROOT)))
    assert not bare, bare


def test_every_setting_has_its_line_in_configuration() -> None:
    text = (DOCS / "CONFIGURATION.md").read_text()
    rows = {
        m
        for line in text.splitlines()
        if line.startswith("|")
        for m in re.findall(r"`(SOLAR_[A-Z_]+)`", line.split("|")[1])
    }
    fields = {f"SOLAR_{name.upper()}" for name in Settings.model_fields}
    assert fields - rows == set(), "settings without a line"
    assert rows - fields == set(), "lines without a setting"


def test_design_metrics_table_is_the_promised_list() -> None:
    section = DESIGN.read_text().split("## 6. Metrics", 1)[1].split("\n## ", 1)[0]
    table = dict(re.findall(r"^\| `(solar_[a-z_]+)` \| (histogram|counter|gauge)", section, re.M))
    assert table == DESIGN_METRICS


def test_benchmark_commands_in_the_docs_name_real_tools() -> None:
    """Every ``python -m bench.…`` and ``bench/….py`` the docs, the Makefile and the scripts
    mention exists (a renamed tool must take its documentation along)."""
    texts = [p.read_text() for p in _markdown_files()]
    texts += [(ROOT / "Makefile").read_text(), (ROOT / "bench" / "gpu.sh").read_text()]
    missing = set()
    for text in texts:
        for module in re.findall(r"python3? -m (bench(?:\.\w+)+)", text):
            path = ROOT / module.replace(".", "/")
            if not (path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()):
                missing.add(module)
        for file in re.findall(r"\bbench/[\w/]+\.(?:py|sh)\b", text):
            if not (ROOT / file).is_file():
                missing.add(file)
    assert not missing, sorted(missing)
