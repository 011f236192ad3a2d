"""The console script: every sub-command resolves, and its module ships in the wheel."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import tomllib
from setuptools import find_packages

from service.cli import COMMANDS, main

REPO = Path(__file__).resolve().parents[2]


def _packaged() -> set[str]:
    """The packages the wheel holds, by the pyproject's own find rule."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    return set(find_packages(where=str(REPO), include=include))


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_resolves_to_a_packaged_callable(command: str) -> None:
    module_name, func_name = COMMANDS[command][0].split(":")
    assert module_name.rsplit(".", 1)[0] in _packaged(), f"{module_name} is not in the wheel"
    assert callable(getattr(importlib.import_module(module_name), func_name))


def test_tests_are_not_packaged_and_nothing_outside_tests_imports_them() -> None:
    assert not any(p == "tests" or p.startswith("tests.") for p in _packaged())
    for package in ("model", "service", "solar_tools", "bench"):
        for path in (REPO / package).rglob("*.py"):
            text = path.read_text()
            assert "from tests" not in text and "import tests" not in text, path


def test_usage_and_unknown_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["--help"]) == 0
    assert "serve" in capsys.readouterr().out
    assert main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err
