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

Every write first checks that this worker may still write (:class:`streams.fencing.StallGuard`)
and ships its changelog records under its epoch; the offsets the broker returns must
continue this writer's previous write, or the records in between are examined: a newer epoch
stops the worker before its local commit (:mod:`streams.fencing`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from lte_core.emptied import emptied_result, emptying
from lte_core.engine import (
    APPLIED,
    DUPLICATE,
    LATE,
    PENDING,
    EngineResult,
    EventColumns,
    RangeRequests,
    RangeResult,
    WindowEngine,
)
from lte_runtime.kafka.batch_sender import BatchSender, OutRecord
from lte_runtime.kafka.dead_letter import DeadLetter
from streams.clock import Clock
from streams.fault_hook import crash_point
from streams.fencing import (
    FENCE_KEY,
    META_TAIL,
    PartitionLostError,
    StallGuard,
    epoch_headers,
    fence_epoch,
    pack_tail,
    record_epoch,
)
from streams.metrics import WorkerMetrics
from streams.settings import WorkerSettings
from streams.updates import NO_UPDATES, UpdateBatch, UpdateBuilder
from streams.validation import BatchValidator, RawRecord, ValidBatch
from streams.window_store import (
    CLOCK_FORMAT,
    DUE,
    HEAD,
    META_CHANGELOG,
    META_CLOCK,
    META_EVENTS,
    META_USERS,
    ChangelogRecord,
    StoreWrite,
    WindowStore,
)

log = logging.getLogger(__name__)
_CLOCK = CLOCK_FORMAT


def _stop() -> bool:
    return False


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: a sweep step allocates a few objects per user
    (keys, values, tuples of both) that reference counting frees, and the collections
    their count set off were ~4 % of a sweep's CPU, scanning them for cycles they never
    form. A whole :meth:`PartitionProcessor.sweep` call runs inside one pause: re-enabled
    after each step, the first allocation set off a collection of everything the step
    still held (its records, changelog and updates: ~6 % of the CPU); after the call they
    are freed and one small collection follows."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@dataclass(frozen=True, slots=True)
class _SweepStep:
    """One sweep step, computed and not yet written."""

    write: StoreWrite
    now: float
    updates: UpdateBatch
    users: int
    #: the due-index key the next step starts from
    after: bytes
    #: what each part of the step changed (see :meth:`PartitionProcessor._sweep_step`)
    results: tuple[EngineResult, ...]


class _HeadsRead:
    """A :class:`~lte_core.engine.WindowReader` serving heads read already, and reading
    events as a sweep does (once: not kept in the block cache)."""

    __slots__ = ("_heads", "_store")

    def __init__(self, store: WindowStore, heads: list[bytes | None]) -> None:
        self._store = store
        self._heads = heads

    def read_heads(self, users: Sequence[bytes]) -> list[bytes | None]:
        assert len(users) == len(self._heads)
        return self._heads

    def read_ranges(self, users: Sequence[bytes], requests: RangeRequests) -> RangeResult:
        return self._store.read_ranges(users, requests, once=True)


class RangeReader(Protocol):
    async def read_range(self, partition: int, first: int, last: int | None) -> list[Any]: ...


@dataclass
class WriterFence:
    """What this worker's writes to one changelog partition are checked against."""

    epoch: int
    guard: StallGuard
    reader: RangeReader
    #: the last changelog offset this writer knows to be in the accepted history
    written: int
    #: the guard's stall count when this writer last proved it still owns the partition
    stalls_checked: int = 0


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
        fence: WriterFence | None = None,
    ) -> None:
        self.partition = partition
        self.fence = fence
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
        self._due_from = DUE
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

    async def sweep(
        self, limit: int, *, resume: bool = False, go_on: Callable[[], bool] = _stop
    ) -> int:
        """Advance up to ``limit`` users whose window changes by now; return how many.
        ``resume`` continues the due-index scan where this partition's previous call ended
        (the batches of one pass); otherwise it starts at the front of the index.

        While a step was full and ``go_on()`` says so, the next ``limit`` users are read
        and computed in a thread while this one emits the step before (whose emit order
        waits on the broker's acknowledgements, idle time of this thread otherwise), then
        emitted in turn; the count returned is then of every step, and ends in a step
        smaller than ``limit`` when the pass is done. The caller holds the partition's lock
        throughout: a step computed ahead reads the state before or after the previous
        step's commit, which is right only because no two steps share a user (the due index
        holds one key per user, scanned forward) and no batch runs in between. Computing a
        step changes nothing (:meth:`_sweep_step`), so one dropped by a failed emit leaves
        no trace."""
        with _gc_paused():
            return await self._sweep_steps(limit, resume=resume, go_on=go_on)

    async def _sweep_steps(self, limit: int, *, resume: bool, go_on: Callable[[], bool]) -> int:
        step = self._sweep_step(limit, self._due_from if resume else DUE)
        total = 0
        while step is not None:
            self._due_from = step.after
            for result in step.results:
                self._account(result)
            emitting = asyncio.ensure_future(self._emit_step(step, (self.users, self.events)))
            computing = None
            if step.users == limit and go_on():
                computing = asyncio.ensure_future(
                    asyncio.to_thread(self._sweep_step, limit, step.after)
                )
            try:
                await emitting
                total += step.users
                step = await asyncio.shield(computing) if computing is not None else None
            except BaseException:
                emitting.cancel()
                if computing is not None:
                    # a thread cannot be stopped: it ends before the lock (and so the
                    # store, which closes under it) is let go
                    await asyncio.wait([computing])
                raise
        return total

    def _sweep_step(self, limit: int, first: bytes) -> _SweepStep | None:
        """Read and compute one sweep step from ``first`` on, changing nothing (no write,
        no count): None when nobody is due.

        Users whose every stored event leaves (most of a sweep's: silent users) are
        computed from their heads' headers and their events' keys (:mod:`lte_core.emptied`),
        the others by the engine; both parts are committed and emitted by the same code,
        the engine's part first."""
        now = self.now()
        engine = self._engine
        with _gc_paused():
            users, after = self.store.due_users(now, limit, first)
            if not users:
                return None
            heads = self.store.read_heads(users, once=True)
            parts: list[tuple[list[bytes], EngineResult]] = []
            rest = np.ones(len(users), dtype=bool)
            empty = emptying(engine.spec, heads, now, d=engine.d, decayed=engine.decayed)
            if len(empty):
                gone = list(map(users.__getitem__, empty.rows.tolist()))
                # an emptied window ends at the clock's end bucket: one start for all
                found = self.store.read_below(gone, int(empty.start[0]))
                claimed, emptied = emptied_result(
                    engine.spec, empty, found, d=engine.d, decayed=engine.decayed
                )
                rest[empty.rows[claimed]] = False
                parts.append((list(itertools.compress(gone, claimed.tolist())), emptied))
            if rest.any():
                rows = np.flatnonzero(rest).tolist()
                rest_users = list(map(users.__getitem__, rows))
                result = engine.process(
                    _HeadsRead(self.store, list(map(heads.__getitem__, rows))),
                    rest_users,
                    EventColumns.empty(len(rows)),
                    now,
                    partition=self.partition,
                )
                parts.insert(0, (rest_users, result))
            write = self.store.begin()
            write.clear_due(first, after)
            batches = []
            for part_users, result in parts:
                batches.append(self._builder.build(part_users, result, now))
                write.engine_result(part_users, result, due_cleared=True)
            updates = batches[0] if len(batches) == 1 else _joined(batches)
        return _SweepStep(
            write, now, updates, len(users), after, tuple(result for _, result in parts)
        )

    async def _emit_step(self, step: _SweepStep, counts: tuple[int, int]) -> None:
        await self._emit(step.write, step.now, step.updates, [], trigger="clock", counts=counts)
        self._metrics.sweep_users.inc(step.users)

    async def _emit(
        self,
        write: StoreWrite,
        now: float,
        updates: UpdateBatch,
        dead: list[DeadLetter],
        *,
        trigger: str,
        counts: tuple[int, int] | None = None,
    ) -> None:
        """Produce, ship and commit one batch's writes (the emit order). ``counts``: the
        partition's users and stored events after this write (default: as now), which a
        sweep step computed ahead of the previous one's emit has already moved on."""
        users, events = (self.users, self.events) if counts is None else counts
        topics = self._settings.topics
        await self._may_write()
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
            await self._may_write()
        if now > self.clock_high_water:
            self.clock_high_water = now
            write.meta(META_CLOCK, _CLOCK.pack(now))
        ship = self._settings.changelog and bool(write.changelog)
        if ship:  # with every state change, so a restore on a new disk has them too
            write.meta(META_CLOCK, _CLOCK.pack(self.clock_high_water), shipped=True)
        write.meta_int(META_USERS, users, shipped=ship)
        write.meta_int(META_EVENTS, events, shipped=ship)
        if self._settings.changelog and write.changelog:
            await self._ship(write)
            crash_point("after_changelog")
        self._metrics.state_writes.inc(write.batch.len())
        write.commit()
        crash_point("after_local_write")
        self._publish_state_gauges()

    async def _may_write(self) -> None:
        """After a freeze of the process, prove nobody fenced this writer meanwhile."""
        fence = self.fence
        if fence is None:
            return
        stalls = fence.guard.stalls()
        if stalls == fence.stalls_checked:
            return
        log.warning(
            "partition %d: this worker was frozen for %.1fs (the group may have moved its "
            "partitions); checking the changelog before writing",
            self.partition,
            fence.guard.longest,
        )
        await self._foreign_keys(fence, fence.written + 1, None)
        fence.stalls_checked = stalls

    async def _ship(self, write: StoreWrite) -> None:
        """Produce the batch's changelog records under this writer's epoch and prove that
        nobody else wrote in between (see :mod:`streams.fencing`)."""
        topic = self._settings.topics.changelog
        fence = self.fence
        if fence is None:
            sent = await self._sender.send(topic, write.changelog, partition=self.partition)
            write.meta_int(META_CHANGELOG, sent[self.partition])
            return
        records = write.changelog
        last = (
            await self._sender.send(
                topic, records, partition=self.partition, headers=epoch_headers(fence.epoch)
            )
        )[self.partition]
        tail_key: bytes | None = records[-1][0]
        if last != fence.written + len(records):
            repair = await self._examine_gap(fence, fence.written + 1, last, write.changelog)
            if repair:
                last = (await self._sender.send(topic, repair, partition=self.partition))[
                    self.partition
                ]
                tail_key = repair[-1].key
        fence.written = last
        write.meta_int(META_CHANGELOG, last)
        write.meta(META_TAIL, pack_tail(last, fence.epoch, tail_key))

    async def _examine_gap(
        self, fence: WriterFence, first: int, last: int, pending: Sequence[ChangelogRecord]
    ) -> list[OutRecord]:
        """Records between this writer's previous write and its latest: raise when a newer
        epoch wrote there; return the records that re-assert, under this epoch, every key a
        zombie (older epoch) touched, so compaction cannot keep the zombie's value."""
        stale = await self._foreign_keys(fence, first, last)
        if not stale:
            return []  # only this writer's own records (a retried send wrote some twice)
        log.warning(
            "partition %d: %d changelog keys written by an older epoch after this worker's "
            "fence; ignored by restore, written again under epoch %d",
            self.partition,
            len(stale),
            fence.epoch,
        )
        self._metrics.zombie_records.inc(len(stale))
        values = dict(pending)
        headers = epoch_headers(fence.epoch)
        return [
            OutRecord(key, values[key] if key in values else self.store.get_raw(key), headers)
            for key in sorted(stale)
        ]

    async def _foreign_keys(self, fence: WriterFence, first: int, last: int | None) -> set[bytes]:
        """Keys an older epoch wrote at offsets ``first..last`` (or the end); raises
        :class:`PartitionLostError` when a newer epoch wrote there."""
        stale: set[bytes] = set()
        for record in await fence.reader.read_range(self.partition, first, last):
            epoch = record_epoch(record.headers)
            if record.key == FENCE_KEY:
                epoch = max(epoch, fence_epoch(record.value))
            if epoch > fence.epoch:
                raise PartitionLostError(
                    f"partition {self.partition}: epoch {epoch} wrote to the changelog at "
                    f"offset {record.offset}, after this worker's epoch {fence.epoch}; this "
                    "worker lost the partition and stops before committing locally"
                )
            if epoch < fence.epoch and record.key is not None and record.key != FENCE_KEY:
                stale.add(record.key)
        return stale

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
            self._metrics.fence_epoch,
        ):
            with contextlib.suppress(KeyError):
                gauge.remove(self._label)

    def close(self) -> None:
        self.forget_gauges()
        self.store.close()


def _joined(batches: Sequence[UpdateBatch]) -> UpdateBatch:
    return UpdateBatch(
        [record for batch in batches for record in batch.records],
        np.concatenate([batch.due_at for batch in batches]),
    )


def _event_due(batch: ValidBatch, result: EngineResult) -> np.ndarray:
    """Per user, the earliest arrival of an event that entered the window in this batch."""
    due = np.full(len(batch.users), np.inf)
    per_user = np.repeat(np.arange(len(batch.users)), np.diff(batch.events.seg))
    entered = result.outcome == APPLIED
    np.minimum.at(due, per_user[entered], batch.arrival[entered])
    return due
