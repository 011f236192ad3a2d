"""`solar retire --version V` (or `--model PATH`): end a model version's rollout life
(docs/DESIGN.md §3, "Rollouts"; the procedure: docs/OPERATIONS.md, "Deploying a new model").

The version is removed from the registry of active versions (``service.store.models``), so
the appliers stop applying it within a lease round; then every user's state under it is
deleted (SCAN ``solar:{*}:state:<V>``, every master of a cluster), a second time one lease
later for a commit that was in flight, and its backfill's queue with it. A version that a
replica registered within the last three leases is still served: it is refused unless
``--force`` (a running serve or worker registers its version again every lease, so retire
after the last replica on it stopped).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from service.settings import Settings, settings_from_environment

__all__ = ["main"]

logger = logging.getLogger(__name__)


async def retire(settings: Settings, version: str, *, force: bool) -> int:
    """Retire ``version``; the exit code (0 done, 1 refused)."""
    from service.backends import connect_shared_redis, open_backends
    from service.store.redis_client import redact
    from service.stream.backfill import BackfillQueue

    backends = await open_backends(settings)
    assert settings.redis_url is not None
    client = await connect_shared_redis(settings)
    try:
        active = {a.version: a for a in await backends.models.active()}
        entry = active.get(version)
        if entry is not None and not force:
            age_s = time.time() - entry.seen_ms / 1_000
            if age_s < 3 * settings.apply_lease_s:
                logger.error(
                    "model %s was registered %.1f s ago: a serve or worker still runs it; stop "
                    "its replicas first (or --force)",
                    version,
                    age_s,
                )
                return 1
        await backends.models.remove(version)
        deleted = await backends.store.retire(version)
        await asyncio.sleep(settings.apply_lease_s)  # a commit in flight at the removal
        deleted += await backends.store.retire(version)
        await BackfillQueue(client, redact(settings.redis_url), version).clear()
        logger.info("model %s retired: %d user states deleted", version, deleted)
        return 0
    finally:
        await client.aclose()
        await backends.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, check the configuration, retire; the exit code."""
    parser = argparse.ArgumentParser(
        prog="solar retire",
        description="stop applying a model version and delete its user states (needs Redis)",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", help="the model version (GET /model shows it)")
    which.add_argument("--model", type=Path, help="the checkpoint directory of the version")
    parser.add_argument(
        "--force", action="store_true", help="retire even if a replica registered it lately"
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    settings = settings_from_environment()
    if settings is None:
        return 2
    if not settings.redis_url:
        logger.error("solar retire needs the shared store: set SOLAR_REDIS_URL")
        return 2
    from model.checkpoint import CheckpointError, checkpoint_version
    from service.errors import InvalidModelVersion, StoreUnavailable
    from service.store.keys import validate_model_version

    try:
        version = args.version if args.model is None else checkpoint_version(args.model)
        validate_model_version(version)
        return asyncio.run(retire(settings, version, force=args.force))
    except (CheckpointError, InvalidModelVersion, OSError, StoreUnavailable) as exc:
        logger.error("%s", exc)
        return 1
