"""`solar serve`: run the app under uvicorn.

Host, port and workers come from the command line, else from ``SOLAR_HOST``/``SOLAR_PORT``/
``SOLAR_WORKERS``. Each worker builds its app with ``create_app()`` (a factory), so each
reads the same environment.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

from service.settings import Settings, settings_from_environment

__all__ = ["main"]

logger = logging.getLogger(__name__)


def _parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="solar serve", description="serve the ranking API")
    parser.add_argument("--host", default=settings.host, help="bind address (SOLAR_HOST)")
    parser.add_argument("--port", type=int, default=settings.port, help="port (SOLAR_PORT)")
    parser.add_argument(
        "--workers", type=int, default=settings.workers, help="processes (SOLAR_WORKERS)"
    )
    parser.add_argument("--log-level", default="info", help="uvicorn log level")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, check the checkpoint exists, run uvicorn; the exit code."""
    # Before numpy loads: per-user factor updates multiply 64×64 matrices, where OpenBLAS
    # threads cost far more than they save (45× slower on a busy 2-core machine). Operators
    # can still set OPENBLAS_NUM_THREADS themselves.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import uvicorn  # imported here, after the environment set-up above

    from service.core.serving_model import ModelUnavailable, require_checkpoint

    settings = settings_from_environment()
    if settings is None:
        return 2
    args = _parser(settings).parse_args(list(argv) if argv is not None else None)
    try:
        require_checkpoint(settings.model_path)
    except ModelUnavailable as exc:
        logger.error("%s", exc)
        return 1
    uvicorn.run(
        "service.api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        lifespan="on",
        timeout_graceful_shutdown=30,
    )
    return 0
