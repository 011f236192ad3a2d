"""The model versions a process works with during a rollout (docs/DESIGN.md §3, "Rollouts").

``register_model``/``keep_registered``: a serve or worker registers its model's version in the
registry (``service.store.models``) at start and every ``every_s`` after; a registration past
``SOLAR_MAX_MODEL_VERSIONS`` fails at start with a message saying which versions to retire.

``AppliedVersions``: what an applier keeps current. Every lease round it reads the registry
and loads the checkpoint of each registered version it does not hold yet (off the event loop;
its own model is always there), so a ``solar backfill`` started on a new model is applied to
by every running applier within a lease round, without a restart. A version whose checkpoint
cannot be loaded here is logged and tried again next round; its states lag meanwhile and
catch up from their own covered position (never wrong, only late).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from service.core.serving_model import ModelUnavailable, ServingModel, load_serving_model
from service.core.users import UserStates
from service.errors import StoreError
from service.history.base import HistoryStore
from service.metrics import Metrics
from service.settings import Settings
from service.store.base import Store
from service.store.models import ModelRegistry

__all__ = ["AppliedVersions", "keep_registered", "model_registered", "register_model"]

logger = logging.getLogger(__name__)


async def register_model(models: ModelRegistry, settings: Settings, model: ServingModel) -> None:
    """Register the process's model version.

    Raises:
        TooManyModelVersions: ``settings.max_model_versions`` others are registered.
    """
    path = str(Path(settings.model_path).resolve())
    await models.register(model.version, path, limit=settings.max_model_versions)


@contextlib.asynccontextmanager
async def model_registered(
    models: ModelRegistry, settings: Settings, model: ServingModel
) -> AsyncIterator[None]:
    """The process's model version registered now and again every lease while inside (what
    serve and worker do for as long as they run).

    Raises:
        TooManyModelVersions: ``settings.max_model_versions`` others are registered.
    """
    await register_model(models, settings, model)
    renewal = asyncio.create_task(
        keep_registered(models, settings, model, settings.apply_lease_s),
        name="solar-model-registration",
    )
    try:
        yield
    finally:
        renewal.cancel()
        await asyncio.gather(renewal, return_exceptions=True)


async def keep_registered(
    models: ModelRegistry, settings: Settings, model: ServingModel, every_s: float
) -> None:
    """Register the version again every ``every_s`` (until cancelled): ``seen_ms`` shows it is
    still served, and a version retired while a replica still runs it comes back."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await register_model(models, settings, model)
        except (StoreError, ValueError) as exc:
            logger.warning("model %s: registration failed: %s", model.version, exc)


@dataclass
class AppliedVersions:
    """The ``UserStates`` of every registered version, the process's own first."""

    own: UserStates
    models: ModelRegistry
    settings: Settings
    store: Store
    history: HistoryStore
    metrics: Metrics
    _others: dict[str, UserStates] = field(default_factory=dict, init=False, repr=False)

    @property
    def current(self) -> list[UserStates]:
        """The states to apply each user's events to: the own version's, then the others'."""
        return [self.own, *self._others.values()]

    async def refresh(self) -> None:
        """Follow the registry: load the versions registered since, drop the retired ones.

        Raises:
            StoreError: the registry could not be read (the versions held stay).
        """
        active = {a.version: a.model_path for a in await self.models.active()}
        for version in [v for v in self._others if v not in active]:
            logger.info("applier: model %s retired, no longer applied", version)
            del self._others[version]
        for version, path in active.items():
            if version == self.own.version or version in self._others:
                continue
            try:
                model = await asyncio.to_thread(self._load, path)
            except ModelUnavailable as exc:
                logger.error("applier: cannot load model %s from %s: %s", version, path, exc)
                continue
            if model.version != version:
                logger.error("applier: %s holds model %s, not %s", path, model.version, version)
                continue
            self._others[version] = UserStates.create(
                self.settings, self.store, model, self.metrics, history=self.history
            )
            logger.info("applier: now also applying model %s (%s)", version, path)
        self.metrics.applied_versions.set(len(self.current))
        counts = await self.store.state_counts()
        self.metrics.model_states.clear()
        for version in active:
            self.metrics.model_states.labels(version=version).set(counts.get(version, 0))

    def _load(self, path: str) -> ServingModel:
        return load_serving_model(self.settings.model_copy(update={"model_path": Path(path)}))
