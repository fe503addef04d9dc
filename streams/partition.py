"""Processing of one input partition: validate, apply, emit, log, commit — in that order.

The order is what makes redelivery after a crash harmless without transactions:

1. dead letters and LTE updates are produced and acknowledged;
2. the state mutations are produced to the changelog and acknowledged;
3. the same mutations are committed to the local RocksDB in one atomic write batch;
4. (by the worker) the batch is acked, and Faust commits the input offsets.

A crash before 3 redoes the batch: updates are re-sent (the store keeps the newest, so a
repeat is harmless) and the state is rebuilt from the changelog, whose per-user
``last_offset`` makes every already-applied event a duplicate. A crash after 3 only
redelivers events that are duplicates by the same rule. Nothing is applied twice and
nothing is lost; an update may be delivered more than once.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence

import numpy as np

from lte_core.engine import (
    APPLIED,
    DUPLICATE,
    LATE,
    PENDING,
    EngineResult,
    EventColumns,
    WindowEngine,
)
from lte_runtime.kafka.batch_sender import BatchSender, OutRecord
from lte_runtime.kafka.dead_letter import DeadLetter
from streams.clock import Clock
from streams.fault_hook import crash_point
from streams.metrics import WorkerMetrics
from streams.settings import WorkerSettings
from streams.updates import NO_UPDATES, UpdateBatch, UpdateBuilder
from streams.validation import BatchValidator, RawRecord, ValidBatch
from streams.window_store import (
    CLOCK_FORMAT,
    HEAD,
    META_CHANGELOG,
    META_CLOCK,
    META_EVENTS,
    META_USERS,
    StoreWrite,
    WindowStore,
)

log = logging.getLogger(__name__)
_CLOCK = CLOCK_FORMAT


class PartitionProcessor:
    def __init__(
        self,
        partition: int,
        store: WindowStore,
        *,
        settings: WorkerSettings,
        engine: WindowEngine,
        validator: BatchValidator,
        builder: UpdateBuilder,
        sender: BatchSender,
        metrics: WorkerMetrics,
        clock: Clock,
    ) -> None:
        self.partition = partition
        self.store = store
        self._settings = settings
        self._engine = engine
        self._validator = validator
        self._builder = builder
        self._sender = sender
        self._metrics = metrics
        self._clock = clock
        raw = store.get_meta(META_CLOCK)
        self.clock_high_water = _CLOCK.unpack(raw)[0] if raw else float("-inf")
        users = store.get_int(META_USERS)
        # carried by the changelog (with the clock); only a store restored from a changelog
        # written before that counts its heads, once
        self.users = users if users is not None else store.count_keys(HEAD)
        self.events = store.get_int(META_EVENTS) or 0
        self._label = str(partition)
        self._publish_state_gauges()

    def now(self) -> float:
        """The clock for the next batch: never earlier than what this partition has seen."""
        return max(self._clock.now(), self.clock_high_water)

    async def process(self, records: Sequence[RawRecord]) -> int:
        """Apply one batch of input records; return the offset of the last one."""
        started = time.perf_counter()
        now = self.now()
        batch = self._validator.validate(records, self.partition, now)
        updates = NO_UPDATES
        write = self.store.begin()
        if batch.users:
            result = self._engine.process(
                self.store, batch.users, batch.events, now, partition=self.partition
            )
            updates = self._builder.build(batch.users, result, now, _event_due(batch, result))
            write.engine_result(batch.users, result)
            self._count_outcomes(result)
            self._account(result)
        self._metrics.events.labels("invalid").inc(
            sum(n for reason, n in batch.rejected.items() if reason != "unknown_item")
        )
        self._metrics.events.labels("unknown_item").inc(batch.rejected.get("unknown_item", 0))
        for reason, n in batch.rejected.items():
            self._metrics.dead_letters.labels(reason).inc(n)
        await self._emit(write, now, updates, batch.dead, trigger="event")
        self._metrics.batch_events.observe(len(records))
        self._metrics.batch_seconds.observe(time.perf_counter() - started)
        return records[-1].offset

    async def sweep(self, limit: int) -> int:
        """Advance up to ``limit`` users whose window changes by now; return how many."""
        now = self.now()
        users = self.store.due_users(now, limit)
        if not users:
            return 0
        result = self._engine.process(
            self.store, users, EventColumns.empty(len(users)), now, partition=self.partition
        )
        updates = self._builder.build(users, result, now)
        write = self.store.begin()
        write.engine_result(users, result)
        self._account(result)
        await self._emit(write, now, updates, [], trigger="clock")
        self._metrics.sweep_users.inc(len(users))
        return len(users)

    async def _emit(
        self,
        write: StoreWrite,
        now: float,
        updates: UpdateBatch,
        dead: list[DeadLetter],
        *,
        trigger: str,
    ) -> None:
        topics = self._settings.topics
        if dead:
            await self._sender.send(
                topics.dead_letters,
                [OutRecord(d.key, d.value, d.headers()) for d in dead],
            )
        if len(updates):
            await self._sender.send(topics.updates, updates.records)
            emitted = time.time()
            self._metrics.updates.labels(trigger).inc(len(updates))
            self._metrics.update_delay.observe_many(np.maximum(0.0, emitted - updates.due_at))
            crash_point("after_updates")
        if now > self.clock_high_water:
            self.clock_high_water = now
            write.meta(META_CLOCK, _CLOCK.pack(now))
        ship = self._settings.changelog and bool(write.changelog)
        if ship:  # with every state change, so a restore on a new disk has them too
            write.meta(META_CLOCK, _CLOCK.pack(self.clock_high_water), shipped=True)
        write.meta_int(META_USERS, self.users, shipped=ship)
        write.meta_int(META_EVENTS, self.events, shipped=ship)
        if self._settings.changelog and write.changelog:
            last = await self._sender.send(
                topics.changelog, write.changelog, partition=self.partition
            )
            write.meta_int(META_CHANGELOG, last[self.partition])
            crash_point("after_changelog")
        self._metrics.state_writes.inc(write.batch.len())
        write.commit()
        crash_point("after_local_write")
        self._publish_state_gauges()

    def _account(self, result: EngineResult) -> None:
        self.users += result.users_delta
        self.events += result.stored_delta

    def _count_outcomes(self, result: EngineResult) -> None:
        counts = np.bincount(result.outcome, minlength=4)
        self._metrics.events.labels("applied").inc(int(counts[APPLIED] + counts[PENDING]))
        self._metrics.events.labels("late").inc(int(counts[LATE]))
        self._metrics.events.labels("duplicate").inc(int(counts[DUPLICATE]))

    def _publish_state_gauges(self) -> None:
        self._metrics.state_users.labels(self._label).set(self.users)
        self._metrics.state_events.labels(self._label).set(self.events)
        self._metrics.clock.set(max(self.clock_high_water, 0.0))

    def forget_gauges(self) -> None:
        for gauge in (
            self._metrics.state_users,
            self._metrics.state_events,
            self._metrics.state_bytes,
        ):
            with contextlib.suppress(KeyError):
                gauge.remove(self._label)

    def close(self) -> None:
        self.forget_gauges()
        self.store.close()


def _event_due(batch: ValidBatch, result: EngineResult) -> np.ndarray:
    """Per user, the earliest arrival of an event that entered the window in this batch."""
    due = np.full(len(batch.users), np.inf)
    per_user = np.repeat(np.arange(len(batch.users)), np.diff(batch.events.seg))
    entered = result.outcome == APPLIED
    np.minimum.at(due, per_user[entered], batch.arrival[entered])
    return due
