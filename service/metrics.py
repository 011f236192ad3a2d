"""Every Prometheus object of the service (docs/DESIGN.md §6), on a per-app ``CollectorRegistry``.

Several apps in one process (tests, two replicas sharing a Redis) each own a ``Metrics`` and
never collide. Labels are low-cardinality: never a user or an item. Durations in seconds.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

__all__ = ["RANK_STAGES", "REQUEST_BUCKETS_S", "Metrics", "StoreMetrics"]

# The stages of one /rank request, in order (``solar_rank_stage_seconds{stage}``): reading
# the body, decoding it, mapping the candidate ids to rows, the store GET of the user's state
# (and its decoding), waiting in the micro-batch queue, the batched pass (the whole batch's
# compute, as each of its requests waited for it), the hand-back from the batch thread to the
# event loop, encoding the answer.
RANK_STAGES = ("receive", "decode", "lookup", "store", "queue", "pass", "handoff", "encode")

# 0.5 ms … 1 s (docs/DESIGN.md §6).
REQUEST_BUCKETS_S = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.2,
    0.5,
    1.0,
)
_FAST_BUCKETS_S = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
# Finer in the 1-100 ms range, where a stage's tail decides a 30 ms p99 target.
_STAGE_BUCKETS_S = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
_CANDIDATE_BUCKETS = (1, 10, 50, 100, 250, 500, 1_000, 2_048, 4_096, 10_000)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Finer around the 100 ms apply-lag target (docs/DESIGN.md §10), where a p99 is read against it.
_LAG_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.125,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
_APPLY_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1_024, 4_096, 16_384)
_RATIO_BUCKETS = (0.0, 0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


class Metrics:
    """The service's metrics; ``registry`` is what ``GET /metrics`` exposes."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = self.registry
        self.request_duration = Histogram(
            "solar_request_duration_seconds",
            "HTTP request latency by route template and status code",
            ["route", "status"],
            buckets=REQUEST_BUCKETS_S,
            registry=reg,
        )
        self.rank_candidates = Histogram(
            "solar_rank_candidates",
            "Candidates per /rank request",
            buckets=_CANDIDATE_BUCKETS,
            registry=reg,
        )
        self.batch_size = Histogram(
            "solar_batch_size", "Requests per micro-batch", buckets=_BATCH_BUCKETS, registry=reg
        )
        self.batch_queue_seconds = Histogram(
            "solar_batch_queue_seconds",
            "Time a /rank request waited in the micro-batch queue",
            buckets=_FAST_BUCKETS_S,
            registry=reg,
        )
        self.batch_compute_seconds = Histogram(
            "solar_batch_compute_seconds",
            "Time of one batched ranker pass",
            buckets=_FAST_BUCKETS_S,
            registry=reg,
        )
        self.queue_depth = Gauge(
            "solar_queue_depth", "Requests waiting in the micro-batch queue", registry=reg
        )
        self.ingest_events = Counter(
            "solar_ingest_events_total",
            "Ingested events by result (accepted, duplicate, refused: older than the dedup "
            "ring remembers)",
            ["result"],
            registry=reg,
        )
        self.factor_update_seconds = Histogram(
            "solar_factor_update_seconds",
            "Time to update (or rebuild) one user's factors",
            buckets=_FAST_BUCKETS_S,
            registry=reg,
        )
        self.store_seconds = Histogram(
            "solar_store_seconds",
            "Store operation latency by operation",
            ["op"],
            buckets=_FAST_BUCKETS_S,
            registry=reg,
        )
        self.history_seconds = Histogram(
            "solar_history_seconds",
            "Durable history tier operation latency by operation (failed ones included)",
            ["op"],
            buckets=_FAST_BUCKETS_S,
            registry=reg,
        )
        self.history_errors = Counter(
            "solar_history_errors",
            "Durable history tier failures: unavailable (503), corrupt segment, gap",
            ["kind"],
            registry=reg,
        )
        self.history_compacted_segments = Counter(
            "solar_history_compacted_segments",
            "Segments removed (net) by background and explicit compactions",
            registry=reg,
        )
        self.history_compacted_events = Counter(
            "solar_history_compacted_events",
            "Events re-encoded by compactions (write amplification: over appended events)",
            registry=reg,
        )
        self.store_conflicts = Counter(
            "solar_store_conflicts_total",
            "Compare-and-set writes that lost a race and were retried",
            registry=reg,
        )
        self.rejected = Counter(
            "solar_rejected_total", "Requests refused, by reason", ["reason"], registry=reg
        )
        self.unknown_items = Counter(
            "solar_unknown_items_total",
            "Candidate ids outside the model's vocabulary (scored through the OOV row)",
            registry=reg,
        )
        self.factor_residual_ratio = Histogram(
            "solar_factor_residual_ratio",
            "Residual energy ratio ρ/(Σσ²+ρ) of states after an update",
            buckets=_RATIO_BUCKETS,
            registry=reg,
        )
        self.model_info = Gauge(
            "solar_model_info",
            "The loaded model (value 1)",
            ["version", "rank", "dim"],
            registry=reg,
        )
        # process_cpu_seconds_total, memory, open fds (as on the default registry).
        ProcessCollector(registry=reg)
        # Not in docs/DESIGN.md §6: states rebuilt from the event log (model change, drift, config).
        self.state_rebuilds = Counter(
            "solar_state_rebuilds_total",
            "User states rebuilt from the durable history, by reason, model version and path "
            "(rank: on a /rank, apply: by an applier)",
            ["reason", "version", "path"],
            registry=reg,
        )
        # Model rollouts (docs/DESIGN.md §3): the versions applied, their states, the backfill.
        self.model_states = Gauge(
            "solar_model_states",
            "Users with a state under each active model version (kept by the store at state "
            "creation and deletion; exported by appliers)",
            ["version"],
            registry=reg,
        )
        self.applied_versions = Gauge(
            "solar_applied_versions",
            "Model versions this process's applier keeps current",
            registry=reg,
        )
        self.backfill_users_total = Gauge(
            "solar_backfill_users_total",
            "Users the running backfill must cover (listed from the durable history)",
            ["version"],
            registry=reg,
        )
        self.backfill_users_done = Gauge(
            "solar_backfill_users_done",
            "Users the running backfill covered so far",
            ["version"],
            registry=reg,
        )
        self.backfill_events = Counter(
            "solar_backfill_events_total",
            "Events folded into states by the backfill (its rate is the backfill's events/s)",
            ["version"],
            registry=reg,
        )

        self.apply_lag_seconds = Histogram(
            "solar_apply_lag_seconds",
            "Time from an event's acknowledgement to its user's state covering it",
            buckets=_LAG_BUCKETS_S,
            registry=reg,
        )
        self.ingest_pending = Gauge(
            "solar_ingest_pending",
            "Work on an owned ingest partition not yet confirmed applied: notices not yet "
            "acknowledged plus ingest calls' marks of users not yet cleared",
            ["partition"],
            registry=reg,
        )
        # Not in docs/DESIGN.md §6: the sweeper's findings and hot-key repairs (issue: data layer).
        self.ingest_unannounced = Gauge(
            "solar_ingest_unannounced",
            "Stored events the last sweep of an owned partition found unapplied after the "
            "grace period (their serve died between the store and the announce)",
            ["partition"],
            registry=reg,
        )
        self.hot_repairs = Counter(
            "solar_hot_repairs_total",
            "Users whose hot keys (position, dedup ring, tail) were rebuilt from the durable "
            "tier, by outcome",
            ["outcome"],
            registry=reg,
        )
        self.apply_batch_events = Histogram(
            "solar_apply_batch_events",
            "Events folded into one user's state in one block update",
            buckets=_APPLY_BUCKETS,
            registry=reg,
        )

        # Not in docs/DESIGN.md §6: where a /rank request's time goes, and what can stall every
        # request.
        self.rank_stage_seconds = Histogram(
            "solar_rank_stage_seconds",
            "Time of one stage of a /rank request (RANK_STAGES)",
            ["stage"],
            buckets=_STAGE_BUCKETS_S,
            registry=reg,
        )
        self.gc_pause_seconds = Histogram(
            "solar_gc_pause_seconds",
            "Cyclic garbage-collector pauses of this process, by generation",
            ["generation"],
            buckets=_STAGE_BUCKETS_S,
            registry=reg,
        )
        self.event_loop_lag_seconds = Histogram(
            "solar_event_loop_lag_seconds",
            "How late a periodic event-loop tick ran (work holding the loop)",
            buckets=_STAGE_BUCKETS_S,
            registry=reg,
        )
        self.pass_seconds = Histogram(
            "solar_pass_seconds",
            "One batched pass (pack, score, top k) by whether its padded shape was new to the "
            "process (shape=new) or had run before (shape=seen)",
            ["shape"],
            buckets=_STAGE_BUCKETS_S,
            registry=reg,
        )
        self.pass_off_cpu_seconds = Histogram(
            "solar_pass_off_cpu_seconds",
            "Wall time of one batched pass that its thread spent off the CPU: waiting for the "
            "GIL (held by the event loop) or for a free core (a CUDA synchronize spins, so it "
            "counts as CPU; with several torch threads, waits at their barrier count here)",
            buckets=_STAGE_BUCKETS_S,
            registry=reg,
        )

    def stage(self, stage: str, seconds: float) -> None:
        """Record ``seconds`` spent in one /rank ``stage`` (one of RANK_STAGES)."""
        self.rank_stage_seconds.labels(stage=stage).observe(seconds)

    def set_model(self, version: str, rank: int, dim: int) -> None:
        """Expose the loaded model as ``solar_model_info{version,rank,dim} 1``."""
        self.model_info.clear()
        self.model_info.labels(version=version, rank=str(rank), dim=str(dim)).set(1)

    def store_observer(self) -> StoreMetrics:
        return StoreMetrics(self)

    def history_observer(self) -> HistoryMetrics:
        return HistoryMetrics(self)


class StoreMetrics:
    """Adapter implementing ``service.store.StoreObserver`` on top of :class:`Metrics`."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def op_seconds(self, op: str, seconds: float) -> None:
        self._metrics.store_seconds.labels(op=op).observe(seconds)

    def conflict(self) -> None:
        self._metrics.store_conflicts.inc()


class HistoryMetrics:
    """Adapter implementing ``service.history.base.HistoryObserver`` on :class:`Metrics`."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def op_seconds(self, op: str, seconds: float) -> None:
        self._metrics.history_seconds.labels(op=op).observe(seconds)

    def error(self, kind: str) -> None:
        self._metrics.history_errors.labels(kind=kind).inc()

    def compacted(self, segments: int, events: int) -> None:
        self._metrics.history_compacted_segments.inc(segments)
        self._metrics.history_compacted_events.inc(events)
