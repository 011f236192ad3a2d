"""bench/common/markdown.py: a benchmark replaces its own section of a shared markdown file only."""

from __future__ import annotations

from pathlib import Path

from bench.common.markdown import replace_section, sections, write_section


def test_a_missing_section_is_appended() -> None:
    text = replace_section("# Title\n\nprose\n", "stages", "| a |\n")
    assert text == "# Title\n\nprose\n\n<!-- begin:stages -->\n| a |\n<!-- end:stages -->\n"


def test_only_the_named_section_changes(tmp_path: Path) -> None:
    path = tmp_path / "B.md"
    write_section(path, "report", "report v1")
    write_section(path, "stages", "stages v1")
    write_section(path, "report", "report v2")
    text = path.read_text()
    assert "report v2" in text and "report v1" not in text
    assert "stages v1" in text
    assert text.index("report v2") < text.index("stages v1")  # kept in place
    assert text.count("<!-- begin:report -->") == 1


def test_sections_reads_back_what_replace_section_wrote() -> None:
    document = replace_section(replace_section("# Title\n\nprose\n", "a", "x\n\ny"), "b", "z")
    assert sections(document) == {"a": "x\n\ny", "b": "z"}
    assert sections(replace_section("# Other\n", "a", sections(document)["a"])) == {"a": "x\n\ny"}
    assert sections("<!-- begin:a -->\nno end\n") == {}  # an unfinished section is no section
