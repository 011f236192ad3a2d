"""The Dockerfile's build stage, run natively: same COPY steps, same RUN commands, a fresh venv.

There is no Docker engine on these machines, so the image was never built; this test does
what the build stage does, step by step, read from the Dockerfile itself: the COPY sources
(git-tracked files, as a clean build context holds them) go into a temporary ``/src``, each
RUN command runs in bash with ``/opt/venv`` and ``/src`` mapped to temporary directories and
the stage's ENV. A broken COPY, a package missing from pyproject.toml or from the wheel, or a
failing import then fails here.

Two departures, both about torch and the network: right after the venv is created, a ``.pth``
file lets it see this project's torch (and torch's own requirements) instead of pip
downloading the 200 MB wheel again; and ``TORCH_INDEX_URL`` (a build argument) points to an
empty local index, as there is no network but the package registry. Every other package is
installed by the Dockerfile's own pip commands. The installed copy is then imported and
served from outside the source tree.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from importlib.metadata import distribution
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement

from solar_tools.redis_server import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
BUILD_TIMEOUT_S = 600


def _instructions(stage: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of one Dockerfile stage, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    steps: list[tuple[str, str]] = []
    inside = False
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            inside = bool(re.search(rf"\bAS\s+{stage}$", rest, re.IGNORECASE))
        elif inside:
            steps.append((word.upper(), rest.strip()))
    return steps


def _torch_closure() -> set[str]:
    """torch and every distribution it requires (markers evaluated here)."""
    seen: set[str] = set()
    stack = ["torch"]
    while stack:
        name = stack.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        for text in distribution(name).requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                stack.append(requirement.name)
    return seen


def _expose_torch(venv: Path, shelf: Path) -> None:
    """Symlink this environment's torch closure into ``shelf``; the venv sees it by a .pth."""
    shelf.mkdir()
    for name in _torch_closure():
        dist = distribution(name)
        for top in {Path(str(f)).parts[0] for f in dist.files or []} - {".."}:
            source = Path(str(dist.locate_file(top)))
            if source.exists() and not (shelf / top).exists():
                (shelf / top).symlink_to(source)
    (site,) = venv.glob("lib/python3*/site-packages")
    (site / "_solar_test_torch.pth").write_text(f"{shelf}\n")


def _copy(sources: list[str], dest: Path) -> None:
    """``COPY <sources> <dest>`` from a clean build context (the git-tracked files): a file
    lands in ``dest`` under its name, a directory's contents under ``dest``."""
    for source in sources:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--", source], cwd=ROOT, capture_output=True, check=True
        ).stdout
        files = [Path(f) for f in listed.decode().split("\0") if f]
        assert files, f"COPY {source}: not in the build context"
        for name in files:
            relative = Path(name.name) if name == Path(source) else name.relative_to(source)
            (dest / relative).parent.mkdir(parents=True, exist_ok=True)
            (dest / relative).write_bytes((ROOT / name).read_bytes())


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random checkpoint over item ids 1..20 (d=16, r=4) to serve."""
    import torch

    from model.checkpoint import save_checkpoint
    from model.config import RankerConfig
    from model.ranker import Ranker
    from model.vocabulary import Vocabulary

    torch.manual_seed(0)
    vocab = Vocabulary(tuple(str(i) for i in range(1, 21)))
    config = RankerConfig(n_items=vocab.n_items, dim=16, heads=2, rank=4, mlp_hidden=16)
    path = tmp_path_factory.mktemp("model")
    save_checkpoint(path, Ranker(config), vocab)
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build stage run natively; returns the venv (the image's /opt/venv)."""
    tmp = tmp_path_factory.mktemp("image")
    venv, src, index = tmp / "opt-venv", tmp / "src", tmp / "empty-index"
    index.mkdir()
    paths = {
        "/opt/venv": str(venv),
        "/src": str(src),
        "/opt/numba-cache": str(tmp / "opt-numba-cache"),
        "/opt/solar-native": str(tmp / "opt-solar-native"),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = os.pathsep.join(
        p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(ROOT))
    )
    args = {"TORCH_INDEX_URL": index.as_uri()}  # the build argument, pointed at no network
    workdir = tmp
    for word, rest in _instructions("build"):
        for container, here in paths.items():
            rest = rest.replace(container, here)
        if word == "ARG":
            name = rest.split("=", 1)[0]
            args.setdefault(name, rest.split("=", 1)[1] if "=" in rest else "")
        elif word == "ENV":
            for name, value in re.findall(r"(\w+)=(\S+)", rest):
                env[name] = value.replace("$PATH", env["PATH"])
        elif word == "WORKDIR":
            workdir = Path(rest)
            workdir.mkdir(parents=True, exist_ok=True)
        elif word == "COPY":
            *sources, dest = rest.split()
            _copy(sources, (workdir / dest).resolve())
        elif word == "RUN":
            command = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), rest)
            run = subprocess.run(
                ["bash", "-c", command],
                cwd=workdir,
                env=env,
                text=True,
                capture_output=True,
                timeout=BUILD_TIMEOUT_S,
            )
            assert run.returncode == 0, f"RUN {command}\n{run.stdout[-3000:]}{run.stderr[-3000:]}"
            if re.search(r"-m venv ", command):
                _expose_torch(venv, tmp / "torch-shelf")
        else:
            pytest.fail(f"the build stage has a {word} step this test does not know")
    assert (venv / "bin" / "solar").is_file(), "the build stage installed no `solar` script"
    return venv


def test_the_installed_copy_imports_outside_the_source_tree(built: Path, tmp_path: Path) -> None:
    code = (
        "import bench.micro.kernels, model.train, service.cli, solar_tools.client, "
        "solar_tools.replay, torch; from service.api.docs import asset_dir; "
        "print(service.cli.__file__, solar_tools.replay.__file__, asset_dir(), torch.__version__)"
    )
    run = subprocess.run(
        [str(built / "bin" / "python"), "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    service_file, replay_file, assets, version = run.stdout.split()
    for path in (service_file, replay_file, assets):
        assert path.startswith(str(built)) and not path.startswith(str(ROOT)), path
    assert version.startswith("2.13.0")
    typed = list(built.glob("lib/python3*/site-packages/service/py.typed"))
    assert typed, "package data (py.typed) missing from the wheel"
    # Of bench/, only what `solar bench` imports ships: the HTTP runs and the study do not.
    (site,) = built.glob("lib/python3*/site-packages")
    shipped = {p.name for p in (site / "bench").iterdir() if (p / "__init__.py").is_file()}
    assert shipped == {"common", "micro"}, shipped


def test_the_installed_copy_serves(built: Path, tmp_path: Path, tiny_model: Path) -> None:
    """What the runtime stage's CMD runs: `solar serve`, from the installed venv alone, with
    the native module the build stage built and no compiler (the runtime stage has none)."""
    native = built.parent / "opt-solar-native"
    assert list(native.glob("solar_serving_*.so")), "the build stage built no native module"
    port = free_port()
    env = {
        "PATH": f"{built / 'bin'}:/usr/bin:/bin",
        "SOLAR_MODEL_PATH": str(tiny_model),
        "SOLAR_WARMUP": "0",
        "OPENBLAS_NUM_THREADS": "1",
        "SOLAR_NATIVE_CACHE": str(native),
        "CXX": "/bin/false",  # a build would fail: the module must come from the cache
    }
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [str(built / "bin" / "solar"), "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        docs = httpx.get(f"http://127.0.0.1:{port}/docs-static/swagger-ui-bundle.js", timeout=5)
        assert docs.status_code == 200 and len(docs.content) > 100_000
        rank = httpx.post(f"http://127.0.0.1:{port}/rank", json={"user_id": "u", "candidates": [1]})
        assert rank.status_code == 200, rank.text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_the_dockerfile_check_imports_from_the_venv_not_from_src() -> None:
    """Inside the build stage the working directory is /src, where `python -c "import
    service"` would find the copied sources, not the installed package; the check must run
    from another directory."""
    (run,) = [rest for word, rest in _instructions("build") if word == "RUN" and "import" in rest]
    assert re.search(r"&&\s*cd /\S*\s*&&\s*python -c", run), run
