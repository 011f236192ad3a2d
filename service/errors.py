"""Domain exceptions of the service; ``service.api.errors`` maps them to HTTP in one handler.

This module imports neither FastAPI nor Redis, so the store, the batcher and the use cases
raise them without knowing about the web layer. Each class carries the HTTP status it means
(bad input 422 or 413, a missing token 401, "try again later" 503) and a ``reason`` that
labels ``solar_rejected_total``.
"""

from __future__ import annotations

from service.user_ids import USER_ID_RULE

__all__ = [
    "ApplyTimeout",
    "BatcherClosed",
    "HistoryUnavailable",
    "InvalidInput",
    "InvalidModelVersion",
    "InvalidUserId",
    "NotReady",
    "PayloadTooLarge",
    "QueueFull",
    "RebuildsBusy",
    "ServiceError",
    "ServiceUnavailable",
    "StoreBusy",
    "StoreError",
    "StateUnreadable",
    "StoreFull",
    "StoreUnavailable",
    "TooManyModelVersions",
    "Unauthorized",
    "UnknownUser",
    "UserRepairing",
]


class ServiceError(Exception):
    """Base of the domain errors; ``status_code`` and ``reason`` (a metric label) per class."""

    status_code = 500
    reason = "error"


class InvalidInput(ServiceError, ValueError):
    """Malformed input; ``field`` is a dotted path such as ``body.events.3.ts``."""

    status_code = 422
    reason = "invalid"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class PayloadTooLarge(ServiceError):
    """A body or a list over its limit."""

    status_code = 413
    reason = "too_large"

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"{what} exceeds the limit of {limit}")
        self.what = what
        self.limit = limit


class Unauthorized(ServiceError):
    status_code = 401
    reason = "unauthorized"

    def __init__(self) -> None:
        super().__init__("missing or invalid bearer token")


class ServiceUnavailable(ServiceError):
    """Try again later (503 with Retry-After)."""

    status_code = 503
    reason = "unavailable"


class NotReady(ServiceUnavailable):
    """The app is starting or stopping: ``component`` is not there."""

    def __init__(self, component: str) -> None:
        super().__init__(f"service not ready ({component} not loaded)")
        self.component = component


class QueueFull(ServiceUnavailable):
    reason = "queue_full"

    def __init__(self, capacity: int) -> None:
        super().__init__(f"the scoring queue is full ({capacity} requests)")
        self.capacity = capacity


class BatcherClosed(ServiceUnavailable):
    reason = "shutting_down"

    def __init__(self) -> None:
        super().__init__("the service is shutting down")


class StoreBusy(ServiceUnavailable):
    """Compare-and-set retries exhausted for one user (heavy concurrent writes)."""

    reason = "conflict"

    def __init__(self, attempts: int) -> None:
        super().__init__(f"concurrent updates of the user: gave up after {attempts} attempts")
        self.attempts = attempts


class RebuildsBusy(ServiceUnavailable):
    """Too many users wait for a read-path rebuild of their state (docs/DESIGN.md §3,
    "Rollouts"): 503 with Retry-After rather than a rebuild storm."""

    reason = "rebuilds_busy"

    def __init__(self, waiting: int) -> None:
        super().__init__(f"{waiting} state rebuilds already waiting; retry shortly")
        self.waiting = waiting


class UnknownUser(ServiceError):
    """Nothing is stored for the user."""

    status_code = 404
    reason = "unknown_user"

    def __init__(self, user_id: str) -> None:
        super().__init__(f"unknown user {user_id!r}")
        self.user_id = user_id


class StateUnreadable(ServiceError):
    """The user's stored state does not decode (it is rebuilt on the next /ingest or /rank)."""

    status_code = 409
    reason = "state_unreadable"

    def __init__(self, user_id: str) -> None:
        super().__init__(f"the stored state of user {user_id!r} is unreadable")
        self.user_id = user_id


class ApplyTimeout(ServiceUnavailable):
    """``POST /ingest?wait=true``: the events were stored but not applied in time."""

    reason = "apply_timeout"

    def __init__(self, users: int, wait_s: float) -> None:
        super().__init__(
            f"events stored, but {users} user(s) not applied within {wait_s:g} s: "
            "retry the request (it is idempotent) or read without wait"
        )
        self.users = users


class InvalidUserId(InvalidInput):
    """A user id that breaks the rule of ``service.user_ids`` (empty, too long, a forbidden
    character, not a string)."""

    def __init__(self, user_id: object) -> None:
        super().__init__(
            "user_id",
            f"invalid user_id {user_id!r}: expected {USER_ID_RULE}",
        )
        self.user_id = user_id


class InvalidModelVersion(InvalidInput):
    """A model version that cannot name a key: 1–64 characters of ``[A-Za-z0-9_.-]``."""

    def __init__(self, version: object) -> None:
        super().__init__(
            "model_version",
            f"invalid model version {version!r}: expected 1-64 characters of [A-Za-z0-9_.-]",
        )
        self.version = version


class TooManyModelVersions(ValueError):
    """Registering one more model version would pass ``SOLAR_MAX_MODEL_VERSIONS``: each active
    version costs a state per user and an update per event, so one must be retired first."""

    def __init__(self, version: str, active: list[str], limit: int) -> None:
        super().__init__(
            f"cannot register model version {version}: {len(active)} versions are active "
            f"({', '.join(sorted(active))}; at most {limit}): retire one first with "
            "`solar retire --version V` once no replica serves it"
        )
        self.version = version


class StoreError(Exception):
    """Base class of every store failure; redis exceptions never escape as themselves.

    Answered with 503 like :class:`StoreUnavailable`: the request was fine, the store was not.
    """

    status_code = 503
    reason = "store_unavailable"


class StoreUnavailable(StoreError):
    """The store is unreachable or timed out (HTTP 503 with Retry-After)."""


class HistoryUnavailable(StoreUnavailable):
    """The durable history tier is unreachable or timed out (HTTP 503 with Retry-After).

    A ``StoreUnavailable``, so whatever backs off on an unreachable store (the applier, the
    worker) backs off on the history too; its own ``reason`` labels the metric.
    """

    reason = "history_unavailable"


class StoreFull(StoreError):
    """Redis is at ``maxmemory`` under ``noeviction`` and refuses writes (``OOM command not
    allowed``): 503 with Retry-After until appliers and trims free memory, never a 500."""

    reason = "store_full"


class UserRepairing(StoreError):
    """A user's hot keys were inconsistent (a key lost or malformed) and are being rebuilt
    from the durable tier: 503, retrying is safe."""

    reason = "user_repairing"

    def __init__(self, user_id: str) -> None:
        super().__init__(f"the hot keys of user {user_id!r} are being rebuilt; retry")
        self.user_id = user_id
