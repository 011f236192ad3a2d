"""Service configuration: one ``Settings`` object read from ``SOLAR_*`` environment variables.

It is created once where the app is built (``service.app.create_app`` or ``solar serve``) and
passed down; no other module reads the environment. Units are in the names (``_s``, ``_ms``,
``_bytes``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Default candidate rows per `svd` pass (and per pass of every mode that does not read the
# log), SOLAR_PASS_ROWS. Past ~8k rows (4 requests of M=2,048) the MLP's activations leave
# the CPU caches and a request costs ~20% more CPU than in a smaller pass (measured: 3.0 ms
# per request at B ≤ 4, 3.5 ms at B = 8, one thread).
SVD_PASS_ROWS = 8_192

__all__ = ["DEFAULT_MODEL_PATH", "Settings", "settings_from_environment"]

logger = logging.getLogger(__name__)

DEFAULT_MODEL_PATH = Path("artifacts/default-model")

Device = Literal["auto", "cpu", "cuda"]
ServeDtype = Literal["auto", "float32", "bfloat16"]


class Settings(BaseSettings):
    """Every knob of the service (docs/DESIGN.md §7 plus operational limits)."""

    model_config = SettingsConfigDict(env_prefix="SOLAR_", extra="ignore", frozen=True)

    # --- docs/DESIGN.md §7
    redis_url: str | None = Field(
        default=None,
        description="redis://host:port/db of the store; unset or empty: embedded store",
    )
    model_path: Path = Field(
        default=DEFAULT_MODEL_PATH,
        description="checkpoint directory (`make model` writes the default)",
    )
    device: Device = Field(default="auto", description="torch device: auto picks CUDA when present")
    serve_dtype: ServeDtype = Field(
        default="auto",
        description="dtype of the /rank pass: auto = bfloat16 on CUDA if it keeps logits within "
        "1e-2 of float32 (checked at start-up; svd family models only: lifelong and baseline "
        "models are always served in float32), float32 otherwise",
    )
    rank: int | None = Field(
        default=None, ge=1, description="served rank r; unset: the checkpoint's rank"
    )
    oversample: int | None = Field(
        default=None, ge=0, description="oversampling p (ℓ = r + p); unset: the checkpoint's value"
    )
    half_life_s: float | None = Field(
        default=None,
        ge=0,
        description="recency half-life in seconds; unset: the checkpoint's; 0: no decay",
    )
    log_cap: int | None = Field(
        default=None,
        ge=1,
        description="operator's cap on the events a rebuild or svd_exact/softmax reads (the "
        "newest N of the durable history); unset: the whole history, never truncated",
    )
    dedup_window: int = Field(
        default=4_000,
        ge=50,
        multiple_of=50,
        description="W: an event re-sent while among its user's last W events is a duplicate "
        "(32 KB of Redis per user at 4,000); older ones are refused",
    )
    max_candidates: int = Field(default=10_000, ge=1, description="candidates per /rank request")
    max_events: int = Field(default=10_000, ge=1, description="events per /ingest request")
    max_batch: int = Field(default=32, ge=1, description="requests per micro-batch")
    # 0: a pass takes what queued while the previous pass ran (batches still grow under load)
    # without waiting; a timed wait costs ~4 ms per request on this CPU for little gain.
    max_wait_ms: float = Field(default=0.0, ge=0, description="how long a batch waits to fill, ms")
    max_queue: int = Field(default=1_024, ge=1, description="queued /rank requests before 503")
    api_token: SecretStr | None = Field(
        default=None, description="bearer token required on /rank, /ingest and /users when set"
    )
    redis_cluster: bool = Field(
        default=False,
        description="use the Redis Cluster client (also implied by a redis+cluster:// URL)",
    )
    partitions: int = Field(
        default=16, ge=1, le=1_024, description="partitions P of the ingest stream"
    )
    applier: Literal["inline", "external"] = Field(
        default="inline",
        description="inline: `solar serve` also runs an applier; external: `solar worker` only",
    )
    host: str = Field(default="127.0.0.1", description="`solar serve` bind address")
    port: int = Field(default=8000, ge=0, le=65_535, description="`solar serve` port")

    # --- operational extras
    workers: int = Field(default=1, ge=1, description="uvicorn worker processes for `solar serve`")
    store_timeout_s: float = Field(default=1.0, gt=0, description="Redis connect/reply timeout")
    store_connect_retries: int = Field(
        default=5, ge=0, description="Redis connect retries at startup"
    )
    store_backoff_s: float = Field(
        default=0.2, ge=0, description="first connect retry delay (doubles)"
    )
    max_body_bytes: int = Field(default=8 << 20, ge=1_024, description="request body limit, bytes")
    torch_threads: int = Field(
        default=1,
        ge=1,
        description="torch intra-op threads per serve process; scale with SOLAR_WORKERS instead",
    )
    batch_threads: int = Field(default=1, ge=1, description="micro-batches scored concurrently")
    pass_rows: int = Field(
        default=SVD_PASS_ROWS,
        ge=1,
        description="most candidate rows per scoring pass of a mode that does not read the log "
        "(svd family, state modes); a request with more gets a pass of its own",
    )
    history_batch_elements: int = Field(
        default=1 << 26,
        ge=1,
        description="svd_exact/softmax: max B·M·N per scoring pass (bounds attention memory)",
    )
    rebuild_residual_ratio: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="rebuild a state from its log when ρ/(Σσ²+ρ) exceeds this after an update",
    )
    retry_after_s: int = Field(default=1, ge=1, description="Retry-After on 503 answers, seconds")
    ingest_wait_s: float = Field(
        default=5.0, gt=0, le=60, description="POST /ingest?wait=true: longest wait, seconds"
    )
    worker_metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65_535,
        description="`solar worker`: serve /metrics on this port (unset: no endpoint)",
    )
    worker_nice: int = Field(
        default=0,
        ge=0,
        le=19,
        description="`solar worker`: raise its nice value by this at start-up, so a serve "
        "process on the same cores is scheduled first (0: unchanged; no effect on a worker "
        "with cores of its own)",
    )
    sweep_s: float = Field(
        default=1.0, gt=0, description="how often an applier sweeps its partitions' marked users"
    )
    sweep_grace_s: float = Field(
        default=5.0,
        gt=0,
        description="an ingest's store step must run within this of its mark; the sweeper "
        "applies users marked longer ago (a serve killed before announcing)",
    )
    apply_linger_ms: float = Field(
        default=5.0,
        ge=0,
        le=50,
        description="an applier waits this long after notices arrive, then applies together "
        "what all its partitions read meanwhile; the wait also lets the announcing ingest's "
        "durable mark land first (0: apply at once)",
    )
    apply_inline_events: int = Field(
        default=16,
        ge=0,
        description="an applier updates blocks of at most this many events on its event loop "
        "instead of a thread (0: always a thread)",
    )
    apply_lease_s: float = Field(
        default=5.0,
        gt=0,
        description="partition lease of an applier: a dead one's work is taken over after it",
    )
    read_rebuilds: int = Field(
        default=2,
        ge=1,
        description="/rank: user states rebuilt from the durable history at once per process "
        "(a user the backfill has not reached, a lost state)",
    )
    read_rebuild_queue: int = Field(
        default=64,
        ge=0,
        description="/rank: requests waiting for a rebuild beyond which 503 + Retry-After",
    )
    max_model_versions: int = Field(
        default=3,
        ge=1,
        le=8,
        description="model versions active at once (each costs a state per user and an update "
        "per event); registering one more fails until one is retired",
    )
    backfill_max_events_per_s: float = Field(
        default=20_000.0,
        gt=0,
        description="`solar backfill`: events folded in per second over all its processes "
        "(paces it so that live /rank p99 holds)",
    )
    warmup: bool = Field(
        default=True, description="score every bucket shape of each served mode at startup"
    )
    warmup_candidates: int = Field(
        default=2_048,
        ge=1,
        description="candidates per request of the warm-up batches (the usual /rank size)",
    )
    gc_freeze: bool = Field(
        default=True,
        description="freeze the start-up heap out of the garbage collector (service.runtime)",
    )

    # --- the durable history tier (service.history)
    history_url: str | None = Field(
        default=None,
        description="postgresql://user@host:port/db of the durable history; unset or empty: "
        "the embedded in-process history",
    )
    history_schema: str = Field(
        default="solar",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="PostgreSQL schema of the history table (created if absent)",
    )
    history_table: str = Field(
        default="history_segments",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="PostgreSQL table of the history segments (created if absent)",
    )
    history_pool_size: int = Field(
        default=4, ge=1, le=100, description="PostgreSQL connections per process"
    )
    history_timeout_s: float = Field(
        default=2.0, gt=0, description="PostgreSQL connect / statement timeout, seconds"
    )
    history_segment_events: int = Field(
        default=2_048,
        ge=1,
        description="events per compacted history segment (what compaction merges up to)",
    )
    history_compact_events: int = Field(
        default=1_024,
        ge=0,
        description="events a process appends for a user in small (plain) segments before it "
        "compacts them in the background; 0: never",
    )
    history_compact_idle_s: float = Field(
        default=10.0,
        gt=0,
        description="a user with fewer small-segment events is compacted this long after "
        "its last append, seconds",
    )

    @field_validator("redis_url")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("history_url")
    @classmethod
    def _postgres_or_none(cls, value: str | None) -> str | None:
        if value and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("SOLAR_HISTORY_URL must be a postgresql:// URL (or empty)")
        return value or None

    @property
    def max_wait_s(self) -> float:
        return self.max_wait_ms / 1_000.0

    def token(self) -> str | None:
        """The configured bearer token, or None when authentication is off."""
        if self.api_token is None or not self.api_token.get_secret_value():
            return None
        return self.api_token.get_secret_value()


def settings_from_environment() -> Settings | None:
    """A command's settings from ``SOLAR_*``, or None once it logged what is invalid (the
    command then exits 2)."""
    try:
        return Settings()
    except ValidationError as exc:
        logger.error("invalid SOLAR_* configuration:\n%s", exc)
        return None
