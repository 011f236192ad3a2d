"""Native code of the serving pass: ``serving.cpp`` built once into a cache, then imported.

The pass's ATen ops run in one call per pass with the GIL released (the reason, and the
functions: ``serving.cpp``). The build (~30 s: a C++ compiler and ninja, through
``torch.utils.cpp_extension``) happens at ``make install``, at the image build, or else at the
first model load. The module's name is keyed on its sources, the build flags, the torch and
Python versions and the machine type, so a changed source or torch builds a new module and a
process never imports a stale one. Modules are kept in

    $SOLAR_NATIVE_CACHE, else $XDG_CACHE_HOME/solar/native, else ~/.cache/solar/native

read here rather than from ``service.settings``: the module is built at install time, before
any service settings exist, and the model library scores without the service.

Builds of one module are serialised by a lock file in ``.build/``: processes starting together
(uvicorn workers, test sessions) wait for the first one's build, then import its module, which
is renamed into place only once it is complete.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import logging
import os
import platform
import shutil
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, cast

import torch
from torch import Tensor

__all__ = ["NativeServing", "cache_dir", "serving_ops"]

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("serving.cpp")
HEADERS = tuple(sorted(SOURCE.parent.glob("*.h")))  # the kernels serving.cpp includes
# OpenMP: at::parallel_for in the kernels runs on torch's intra-op threads (the libgomp torch
# loaded; without it, parallel_for compiles to a plain call).
CFLAGS = ("-O3", "-fopenmp")
LDFLAGS = ("-fopenmp",)


class NativeServing(Protocol):
    """The functions of ``serving.cpp``. ``weights``: a ServingWeights; rows (B, M) long;
    tokens (B, T, d), token_mask (B, T) bool or None (every token real); logits (B, M)
    float32. B requests, M candidates, T tokens, d = H·d_h, BM = B·M."""

    def gather(self, weights: tuple[Tensor, ...], rows: Tensor) -> tuple[Tensor, Tensor]:
        """(features (BM, 2d), the first layer's per-item share (BM, hidden))."""
        ...

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
    ) -> Tensor:
        """recent (B, L, d), recent_mask (B, L); extra (B, M, F) repeat features or None."""
        ...

    def history(
        self,
        weights: tuple[Tensor, ...],
        rows: Tensor,
        context: Tensor,
        bias: Tensor,
        mask: Tensor,
        heads: int,
    ) -> Tensor:
        """context (B, N, d) event rows, bias (B, 1, 1, N) additive, mask (B, N) bool."""
        ...

    def state_tail(
        self, weights: tuple[Tensor, ...], feats: Tensor, hidden: Tensor, o: Tensor
    ) -> Tensor:
        """The MLP after ``gather`` given the attention output o (BM, d) → (BM,) logits."""
        ...

    def attention_output(
        self,
        weights: tuple[Tensor, ...],
        rows: Tensor,
        tokens: Tensor,
        token_mask: Tensor | None,
        heads: int,
        small: bool,
    ) -> Tensor:
        """The svd pass's attention output o (BM, d) through the few-token kernel (``small``)
        or SDPA: a check of the kernel against SDPA, not a serving path."""
        ...

    def small_attention_applies(self, features: Tensor, tokens: Tensor, heads: int) -> bool:
        """Whether a pass over these tokens takes the few-token kernel."""
        ...

    def intra_op_parallel(self) -> bool:
        """Whether the kernels were built to run on torch's intra-op threads."""
        ...


def cache_dir() -> Path:
    """Where built modules are kept (see the module docstring)."""
    if explicit := os.environ.get("SOLAR_NATIVE_CACHE"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "solar" / "native"


def module_name() -> str:
    """``solar_serving_<key>``: the key hashes what the built module depends on."""
    key = hashlib.sha256()
    for source in (SOURCE, *HEADERS):
        key.update(source.name.encode() + b"\0" + source.read_bytes())
    for part in (torch.__version__, sys.version, platform.machine(), *CFLAGS, "|", *LDFLAGS):
        key.update(part.encode() + b"\0")
    return f"solar_serving_{key.hexdigest()[:16]}"


_lock = threading.Lock()
_loaded: NativeServing | None = None


def serving_ops() -> NativeServing:
    """The native module, built first if the cache lacks it.

    Raises:
        RuntimeError: the module could not be built or imported, saying why and what to do.
    """
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = cast(NativeServing, _import_or_build(module_name(), cache_dir()))
        return _loaded


def _import_or_build(name: str, cache: Path) -> object:
    """The module ``name`` from ``cache``, built there first (under the build lock) if absent."""
    built = cache / f"{name}.so"
    if not built.is_file():
        try:
            (cache / ".build").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _build_error(cache, f"{type(exc).__name__}: {exc}") from exc
        with _build_lock(cache / ".build" / f"{name}.lock"):
            if not built.is_file():  # another process may have built it meanwhile
                return _build(name, cache)
    return _import(name, built)


def _import(name: str, built: Path) -> object:
    spec = importlib.util.spec_from_file_location(name, built)
    assert spec is not None and spec.loader is not None
    try:
        module = importlib.util.module_from_spec(spec)  # loads the shared object
        spec.loader.exec_module(module)
    except (ImportError, OSError) as exc:
        raise RuntimeError(
            f"solar's native serving module {built} does not import ({exc}): delete it, and "
            "the next start builds it again"
        ) from exc
    return module


@contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created if absent), held while the block runs."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(name: str, cache: Path) -> object:
    """Build ``name`` in ``cache/.build/<name>``, move it into place, return it (the caller
    holds the build lock)."""
    from torch.utils.cpp_extension import load

    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        raise _build_error(cache, f"no C++ compiler: `{compiler}` is not on PATH (install g++)")
    directory = cache / ".build" / name  # the same for every try: torch keys its builds on it
    log.warning("building solar's native serving module %s (~30 s, once)", name)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with _ninja_on_path():
            module = load(
                name,
                [str(SOURCE)],
                extra_cflags=list(CFLAGS),
                extra_ldflags=list(LDFLAGS),
                build_directory=str(directory),
                verbose=False,
            )
        os.replace(directory / f"{name}.so", cache / f"{name}.so")
    except (OSError, RuntimeError, ImportError) as exc:
        raise _build_error(cache, _first_error(exc)) from exc
    shutil.rmtree(directory, ignore_errors=True)
    return module


def _build_error(cache: Path, why: str) -> RuntimeError:
    return RuntimeError(
        f"solar's native serving module could not be built into {cache} (it needs a C++ "
        f"compiler, ninja and a writable SOLAR_NATIVE_CACHE): {why}"
    )


def _first_error(exc: BaseException) -> str:
    """The compiler's first error line of a failed build, else the exception's first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    return (errors or lines or [type(exc).__name__])[0]


@contextmanager
def _ninja_on_path() -> Iterator[None]:
    """Where no ninja is on PATH (a virtual environment run without being activated), PATH
    with the one the ``ninja`` package installs, for the build's duration."""
    if shutil.which("ninja") is not None:
        yield
        return
    try:
        import ninja
    except ImportError:
        yield  # torch's build then says that ninja is missing
        return
    saved = os.environ.get("PATH")
    os.environ["PATH"] = os.pathsep.join(p for p in (ninja.BIN_DIR, saved) if p)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = saved
