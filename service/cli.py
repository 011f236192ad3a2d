"""The `solar` console script: `solar serve | worker | backfill | retire | train | eval |
replay | bench`."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Sequence

# Sub-command → "module:function" taking argv and returning an exit code. Imported lazily so
# `solar train` does not import the web stack and `solar serve` does not import training.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("service.api.server:main", "run the HTTP service under uvicorn"),
    "worker": ("service.worker:main", "apply ingested events to user states (Redis)"),
    "backfill": ("service.backfill:main", "build a new model version's states (rollouts)"),
    "retire": ("service.retire:main", "drop a model version and its states (rollouts)"),
    "train": ("model.train:main", "train a ranker and write a checkpoint"),
    "eval": ("model.evaluate:main", "evaluate checkpoints or modes offline"),
    "replay": ("solar_tools.replay:main", "stream a dataset's events into POST /ingest"),
    "bench": ("bench.micro.kernels:main", "attention kernel benchmark"),
}


def _usage() -> str:
    lines = ["usage: solar <command> [options]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def _resolve(target: str) -> Callable[[Sequence[str]], int]:
    module_name, func_name = target.split(":")
    func: Callable[[Sequence[str]], int] = getattr(importlib.import_module(module_name), func_name)
    return func


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"solar: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return _resolve(COMMANDS[command][0])(rest)


if __name__ == "__main__":
    raise SystemExit(main())
