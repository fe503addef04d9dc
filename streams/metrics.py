"""Every metric the worker exports, built in one place from an injected registry.

Names follow DESIGN 3.6 (prefix ``lte_``). Histogram buckets are chosen for their unit:
delays from 5 ms (one fetch round) to 5 min (a stuck worker), batch sizes on a log scale.
"""

from __future__ import annotations

from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from lte_core.events import Reason
from lte_runtime.bulk_histogram import BulkHistogram

# finer around 1 s, as lte_staleness_seconds (serving.metrics), whose worker share this is
DELAY_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 5.0),
    *(10.0, 30.0, 60.0, 300.0),
)
BATCH_BUCKETS = (1, 10, 100, 500, 1000, 2500, 5000, 10000, 20000, 50000)
SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

OUTCOMES = ("applied", "late", "duplicate", "invalid", "unknown_item")


class WorkerMetrics(NamedTuple):
    events: Counter
    dead_letters: Counter
    updates: Counter
    update_delay: BulkHistogram
    batch_events: Histogram
    batch_seconds: Histogram
    state_users: Gauge
    state_events: Gauge
    state_bytes: Gauge
    state_writes: Counter
    consumer_lag: Gauge
    sweep_users: Counter
    restored_records: Counter
    clock: Gauge
    assigned_partitions: Gauge
    zombie_records: Counter
    skipped_records: Counter
    fence_epoch: Gauge
    task_retries: Counter
    sweep_last_success: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> WorkerMetrics:
        metrics = cls(
            events=Counter(
                "lte_events_total", "Interaction records by outcome", ["outcome"], registry=registry
            ),
            dead_letters=Counter(
                "lte_dead_letters_total",
                "Records sent to the dead-letter topic, by reason",
                ["reason"],
                registry=registry,
            ),
            updates=Counter(
                "lte_updates_emitted_total",
                "LTE updates produced, by what made "
                "them due (event arrival or the clock crossing a window edge)",
                ["trigger"],
                registry=registry,
            ),
            update_delay=BulkHistogram(
                "lte_update_delay_seconds",
                "Emit time minus due_at of every update (the worker's share of staleness)",
                DELAY_BUCKETS,
                registry,
            ),
            batch_events=Histogram(
                "lte_worker_batch_events",
                "Records per processed batch",
                buckets=BATCH_BUCKETS,
                registry=registry,
            ),
            batch_seconds=Histogram(
                "lte_worker_batch_duration_seconds",
                "Wall time to process one batch, sends and state commit included",
                buckets=SECONDS_BUCKETS,
                registry=registry,
            ),
            state_users=Gauge(
                "lte_state_users", "Users with a window state", ["partition"], registry=registry
            ),
            state_events=Gauge(
                "lte_state_events",
                "Events stored (in window or pending)",
                ["partition"],
                registry=registry,
            ),
            state_bytes=Gauge(
                "lte_state_bytes",
                "RocksDB estimated live data size",
                ["partition"],
                registry=registry,
            ),
            state_writes=Counter(
                "lte_state_writes",
                "RocksDB mutations (puts and deletes, including the due index and metadata); "
                "per event, the write amplification of the state",
                registry=registry,
            ),
            consumer_lag=Gauge(
                "lte_consumer_lag",
                "Records behind the partition high-water mark",
                ["component", "partition"],
                registry=registry,
            ),
            sweep_users=Counter(
                "lte_sweep_users_total",
                "Silent users whose window was advanced by the sweeper",
                registry=registry,
            ),
            restored_records=Counter(
                "lte_changelog_restored_records_total",
                "Changelog records applied while restoring state",
                registry=registry,
            ),
            clock=Gauge(
                "lte_worker_clock_seconds",
                "The window clock T (frozen with --now)",
                registry=registry,
            ),
            assigned_partitions=Gauge(
                "lte_worker_assigned_partitions",
                "Input partitions owned by this worker",
                registry=registry,
            ),
            zombie_records=Counter(
                "lte_changelog_zombie_keys_total",
                "Changelog keys an older epoch (a zombie) wrote after this worker's fence, "
                "written again under this worker's epoch",
                registry=registry,
            ),
            skipped_records=Counter(
                "lte_changelog_skipped_records_total",
                "Changelog records of an older epoch after a newer fence, skipped by restore",
                registry=registry,
            ),
            fence_epoch=Gauge(
                "lte_worker_fence_epoch",
                "The changelog epoch this worker claimed for a partition",
                ["partition"],
                registry=registry,
            ),
            task_retries=Counter(
                "lte_worker_task_retries_total",
                "Transient broker errors a worker task retried after a backoff",
                ["task"],
                registry=registry,
            ),
            sweep_last_success=Gauge(
                "lte_sweep_last_success_timestamp",
                "Unix time of the sweeper's last complete pass over the owned partitions "
                "(its start, before the first)",
                registry=registry,
            ),
        )
        for outcome in OUTCOMES:
            metrics.events.labels(outcome)
        for trigger in ("event", "clock"):
            metrics.updates.labels(trigger)
        for reason in Reason.ALL:
            metrics.dead_letters.labels(reason)
        for task in ("sweeper",):
            metrics.task_retries.labels(task)
        return metrics
