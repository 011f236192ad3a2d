"""`solar worker`: a process that only applies ingested events (docs/DESIGN.md §3).

It loads the model (the applier embeds events with it), connects to Redis and runs one
:class:`Applier` until SIGTERM or SIGINT, then releases its partition leases. Run as many as
the ingest rate needs: they share the partitions out (``ceil(P / workers)`` each) and take
over a dead one's partitions after ``SOLAR_APPLY_LEASE_S``. It needs a shared store: with the
embedded store, ``solar serve`` applies in-process instead.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Sequence

from service.settings import Settings, settings_from_environment

__all__ = ["main"]

logger = logging.getLogger(__name__)


async def run_worker(settings: Settings) -> None:
    """Apply until a termination signal arrives."""
    from service.backends import open_backends
    from service.core.model_versions import model_registered
    from service.core.serving_model import load_serving_model
    from service.metrics import Metrics

    metrics = Metrics()
    if settings.worker_metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(
            settings.worker_metrics_port, addr=settings.host, registry=metrics.registry
        )
    # One intra-op thread, as in `solar serve`: the applier's tensors are tiny, and a second
    # OpenMP thread only spins on the core the serve process needs (the worker's CPU shows up
    # in /rank's tail on a shared machine, docs/BENCHMARKS.md "loadrange").
    import torch

    from service.runtime import freeze_heap

    torch.set_num_threads(settings.torch_threads)
    model = await asyncio.to_thread(load_serving_model, settings)
    backends = await open_backends(
        settings,
        metrics.store_observer(),
        history_observer=metrics.history_observer(),
        shares_redis="solar worker",
    )
    if settings.gc_freeze:
        freeze_heap()
    applier = backends.applier(settings, model, metrics)
    loop = asyncio.get_running_loop()
    try:
        async with model_registered(backends.models, settings, model):
            task = asyncio.create_task(applier.run(), name="solar-worker")
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, applier.stop)
            logger.info(
                "solar worker %s: model %s, %d partitions",
                applier.consumer,
                model.version,
                settings.partitions,
            )
            await task
            logger.info("solar worker %s: stopped", applier.consumer)
    finally:
        await backends.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, check the configuration, run the applier; the exit code."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny SVDs: threads only cost
    parser = argparse.ArgumentParser(
        prog="solar worker", description="apply ingested events to user states (needs Redis)"
    )
    parser.parse_args(list(argv) if argv is not None else None)
    settings = settings_from_environment()
    if settings is None:
        return 2
    if not settings.redis_url:
        logger.error("solar worker needs a shared store: set SOLAR_REDIS_URL")
        return 2
    if not settings.history_url:
        from service.backends import UnsharedHistory

        logger.error("%s", UnsharedHistory("solar worker"))
        return 2
    from service.core.serving_model import ModelUnavailable, require_checkpoint
    from service.errors import StoreUnavailable, TooManyModelVersions

    if settings.worker_nice:
        # Before any thread starts: Linux keeps a nice value per thread, and new threads
        # inherit their creator's (the metrics server's, the loop's executor's).
        os.nice(settings.worker_nice)
    try:
        require_checkpoint(settings.model_path)
        asyncio.run(run_worker(settings))
    except (ModelUnavailable, StoreUnavailable, TooManyModelVersions) as exc:
        logger.error("%s", exc)
        return 1
    return 0
