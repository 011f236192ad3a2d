"""Native code of the serving pass: ``serving.cpp`` built once into a cache, then imported.

The pass's ATen ops run in one call per pass with the GIL released (the reason, and the
functions: ``serving.cpp``). The build (~30 s: a C++ compiler and ninja, through
``torch.utils.cpp_extension``) happens at ``make install``, at the image build, or else at the
first model load. It lands in a directory keyed on the source, the torch and Python versions
and the machine type, so a changed source or torch builds a new module and a process never
imports a stale one:

    $SOLAR_NATIVE_CACHE, else $XDG_CACHE_HOME/solar/native, else ~/.cache/solar/native

A process builds in a private directory and renames the module into place, so processes
starting together (uvicorn workers, test sessions) never import a half-written file; at worst
two of them build it twice.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Protocol, cast

import torch
from torch import Tensor

__all__ = ["NativeServing", "cache_dir", "serving_ops"]

SOURCE = Path(__file__).with_name("serving.cpp")
HEADERS = tuple(sorted(SOURCE.parent.glob("*.h")))  # the kernels serving.cpp includes
CFLAGS = ("-O3",)


class NativeServing(Protocol):
    """The functions of ``serving.cpp`` (shapes there); ``weights`` is a ServingWeights."""

    def gather(self, weights: tuple[Tensor, ...], rows: Tensor) -> tuple[Tensor, Tensor]: ...

    def svd(
        self,
        weights: tuple[Tensor, ...],
        rows: Tensor,
        tokens: Tensor,
        token_mask: Tensor | None,
        heads: int,
    ) -> Tensor: ...

    def channels(
        self,
        weights: tuple[Tensor, ...],
        rows: Tensor,
        tokens: Tensor,
        token_mask: Tensor,
        recent: Tensor,
        recent_mask: Tensor,
        extra: Tensor | None,
        heads: int,
    ) -> Tensor: ...

    def history(
        self,
        weights: tuple[Tensor, ...],
        rows: Tensor,
        context: Tensor,
        bias: Tensor,
        mask: Tensor,
        heads: int,
    ) -> Tensor: ...

    def state_tail(
        self, weights: tuple[Tensor, ...], feats: Tensor, hidden: Tensor, o: Tensor
    ) -> Tensor: ...


def cache_dir() -> Path:
    """Where built modules are kept (see the module docstring)."""
    if explicit := os.environ.get("SOLAR_NATIVE_CACHE"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "solar" / "native"


def module_name() -> str:
    """``solar_serving_<key>``: the key hashes what the built module depends on."""
    key = hashlib.sha256(SOURCE.read_bytes())
    for header in HEADERS:
        key.update(header.read_bytes())
    for part in (torch.__version__, sys.version, platform.machine(), " ".join(CFLAGS)):
        key.update(part.encode())
    return f"solar_serving_{key.hexdigest()[:16]}"


_lock = threading.Lock()
_loaded: NativeServing | None = None


def serving_ops() -> NativeServing:
    """The native module, built first if the cache lacks it.

    Raises:
        RuntimeError: the build failed, naming the cache and what the build needs.
    """
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = cast(NativeServing, _import_or_build(module_name(), cache_dir()))
        return _loaded


def _import_or_build(name: str, cache: Path) -> object:
    built = cache / f"{name}.so"
    if not built.is_file():
        return _build(name, cache)
    spec = importlib.util.spec_from_file_location(name, built)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(name: str, cache: Path) -> object:
    """Build ``name`` in a private directory of ``cache``, move it into place, return it."""
    from torch.utils.cpp_extension import load

    try:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"{name}.", dir=cache) as private:
            with _ninja_on_path():
                module = load(
                    name,
                    [str(SOURCE)],
                    extra_cflags=list(CFLAGS),
                    build_directory=private,
                    verbose=False,
                )
            os.replace(Path(private) / f"{name}.so", cache / f"{name}.so")
            return module
    except (OSError, RuntimeError, ImportError) as exc:
        raise RuntimeError(
            f"solar's native serving pass could not be built into {cache} (it needs a C++ "
            "compiler and ninja, and a writable SOLAR_NATIVE_CACHE): "
            f"{_first_error(exc)}"
        ) from exc


def _first_error(exc: BaseException) -> str:
    """The compiler's first error line of a failed build, else the exception's first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    return (errors or lines or [type(exc).__name__])[0]


@contextmanager
def _ninja_on_path() -> Iterator[None]:
    """PATH with the ninja that the ``ninja`` package installs, where none is on PATH (a
    virtual environment run without being activated), for the build's duration."""
    saved = os.environ.get("PATH", "")
    if shutil.which("ninja") is None:
        with suppress(ImportError):
            import ninja

            os.environ["PATH"] = os.pathsep.join((ninja.BIN_DIR, saved))
    try:
        yield
    finally:
        os.environ["PATH"] = saved
