"""The engine's side of the Faust worker: one :class:`PartitionProcessor` per owned input
partition, opened at assignment (restored from the changelog), closed at revocation.

Faust owns the group, the fetches, the acks and the commits (:mod:`streams.app`); this
object owns what Faust does not know about: the RocksDB stores, the changelog, the
producer the emit order writes through, the due-time sweep. Each partition has a lock so a
batch and a sweep of the same partition never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from lte_core import compensated
from lte_core.basis import BasisArtifact
from lte_core.encoders import build_encoder
from lte_core.engine import WindowEngine
from lte_runtime.crash_only import Heartbeat
from lte_runtime.kafka.batch_sender import BatchSender, OutRecord
from lte_runtime.kafka.clients import batch_producer, reader_consumer
from lte_runtime.kafka.consumer_lag import forget_consumer_lag, observe_consumer_lag
from lte_runtime.kafka.topics import TopicSpec, ensure_topics
from streams.changelog import ChangelogRestorer
from streams.clock import Clock
from streams.errors import StateStoreError, StreamsError
from streams.fencing import (
    FENCE_KEY,
    META_FENCE,
    PartitionLostError,
    StallGuard,
    epoch_headers,
    fence_epoch,
    fence_value,
)
from streams.metrics import WorkerMetrics
from streams.partition import PartitionProcessor, WriterFence
from streams.settings import WorkerSettings
from streams.updates import UpdateBuilder
from streams.validation import BatchValidator, RawRecord
from streams.window_store import META, META_CHANGELOG, META_CONFIG, WindowStore

log = logging.getLogger("lte.worker")
#: ``/healthz`` fails when the sweeper has not come round for this long (it beats while it
#: retries too, so only a sweeper stuck in an await that never returns trips it).
SWEEPER_STUCK_S = 120.0


class WorkerFailedError(StreamsError):
    """A partition could not be opened or processed; the worker stops rather than run on
    without it."""


class PartitionLock:
    """One partition's lock, which knows how many event batches wait for it: a sweep holds
    the lock across its steps and stops computing ahead as soon as one does."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self.batches_waiting = 0

    async def __aenter__(self) -> None:
        await self._lock.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()

    @contextlib.asynccontextmanager
    async def for_batch(self) -> AsyncIterator[None]:
        """Hold the lock for an event batch, counted while it waits."""
        self.batches_waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self.batches_waiting -= 1
        try:
            yield
        finally:
            self._lock.release()


class EngineHost:
    def __init__(self, settings: WorkerSettings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.metrics = WorkerMetrics.create(self.registry)
        self.clock = Clock.create(settings.now, settings.simulated)
        self.basis = BasisArtifact.load(settings.basis_dir)
        self.engine = WindowEngine(
            settings.window, self.basis.item_vectors, half_life=settings.half_life
        )
        self.encoder = build_encoder(settings.encoder, self.basis)
        self.validator = BatchValidator(
            self.basis.row_index, settings.rules, settings.topics.interactions
        )
        self.builder = UpdateBuilder(
            settings.window,
            self.encoder,
            self.basis.basis_version,
            self.clock,
            settings.update_format,
        )
        self.processors: dict[int, PartitionProcessor] = {}
        self._locks: dict[int, PartitionLock] = {}
        self._opened: dict[int, asyncio.Event] = {}
        self._config = b""
        self._ready = False
        self._started = False
        self.sweep_wakeup = asyncio.Event()
        #: the first error that stopped the worker (its one-line reason at exit)
        self.fatal: BaseException | None = None
        self._failed = asyncio.Event()
        # a freeze this long may have let the group give our partitions away: the session
        # timeout less one heartbeat interval (the last heartbeat may precede the freeze)
        session_s = settings.session_timeout_ms / 1000
        self.stall_guard = StallGuard(session_s - max(1.0, session_s / 5))
        self.sweeper_heartbeat = Heartbeat("the sweeper", SWEEPER_STUCK_S)

    def liveness(self) -> tuple[bool, str]:
        """``/healthz``: a fatal error, or a sweeper that stopped coming round, is dead."""
        if self.fatal is not None:
            return False, f"failed: {self.fatal}"
        return self.sweeper_heartbeat.liveness()

    def readiness(self) -> tuple[bool, str]:
        if self.fatal is not None:
            return False, f"failed: {self.fatal}"
        if not self._ready:
            return False, "joining the group or restoring state"
        return True, f"{len(self.processors)} partitions"

    async def start(self) -> None:
        """Create the topics, then the producer and the changelog reader. Meanwhile the
        compiled window sums load in a thread (1-2 s from numba's cache, 8-11 s where they
        were never compiled), so that wait falls before the worker is ready, not on the
        staleness of its first batch; a start that fails is a crash, which ends it."""
        warming = asyncio.ensure_future(
            asyncio.to_thread(compensated.warm, (self.basis.item_vectors.dtype,))
        )
        s = self.settings
        t = s.topics
        specs = [
            TopicSpec(t.interactions, s.partitions),
            TopicSpec(t.updates, s.partitions),
            TopicSpec(t.dead_letters, s.partitions),
        ]
        if s.changelog:
            specs.append(
                TopicSpec(
                    t.changelog,
                    None,
                    {"cleanup.policy": "compact"},
                    co_partitioned_with=t.interactions,
                )
            )
        counts = await ensure_topics(s.kafka, specs)
        self._config = s.state_config(
            self.basis.basis_version, self.basis.d, counts[t.interactions]
        )
        self.producer = batch_producer(s.kafka)
        await self.producer.start()
        self.sender = BatchSender(self.producer)
        self.restore_consumer = reader_consumer(s.kafka)
        await self.restore_consumer.start()
        self.restorer = ChangelogRestorer(
            self.restore_consumer,
            t.changelog,
            s.window,
            d=self.basis.d,
            decayed=s.half_life is not None,
            config=self._config,
        )
        await warming
        self._started = True
        log.info(
            "worker %s on %s: %s, encoder %s, basis %s",
            s.group_id,
            s.kafka.describe(),
            s.window.describe(),
            self.encoder.name,
            self.basis.basis_version,
        )

    async def stop(self) -> None:
        """Close every store (after Faust has stopped the agents), then the clients."""
        for partition in list(self.processors):
            async with self._lock(partition):
                processor = self.processors.pop(partition, None)
                if processor is not None:
                    processor.close()
        if self._started:
            self._started = False
            await self.restore_consumer.stop()
            await self.producer.stop()

    def _lock(self, partition: int) -> PartitionLock:
        lock = self._locks.get(partition)
        if lock is None:
            lock = self._locks[partition] = PartitionLock()
        return lock

    def _opened_event(self, partition: int) -> asyncio.Event:
        event = self._opened.get(partition)
        if event is None:
            event = self._opened[partition] = asyncio.Event()
        return event

    def owns(self, tp: Any) -> bool:
        return bool(tp.topic == self.settings.topics.interactions)

    async def assign(self, assigned: Iterable[Any]) -> None:
        """Open (and restore) the input partitions among ``assigned``. Any failure is
        fatal: a partition nobody processes would look healthy with zero lag."""
        try:
            for tp in sorted(tp for tp in assigned if self.owns(tp)):
                partition = tp.partition
                async with self._lock(partition):
                    if partition not in self.processors:
                        self.processors[partition] = await self._open(partition)
                self._opened_event(partition).set()
        except Exception as exc:
            self.failed(exc)
            raise
        self.metrics.assigned_partitions.set(len(self.processors))
        self._ready = True
        self.sweep_wakeup.set()

    async def revoke(self, revoked: Iterable[Any]) -> None:
        self._ready = False
        owned = [tp for tp in revoked if self.owns(tp)]
        for tp in owned:
            self._opened_event(tp.partition).clear()
            async with self._lock(tp.partition):
                processor = self.processors.pop(tp.partition, None)
                if processor is not None:
                    processor.close()
        forget_consumer_lag(self.metrics.consumer_lag, "worker", owned)
        self.metrics.assigned_partitions.set(len(self.processors))

    def failed(self, exc: BaseException) -> None:
        """Record the first fatal error; batches still waiting for a partition give up."""
        if self.fatal is None:
            self.fatal = exc
        self._failed.set()

    async def process(self, partition: int, records: Sequence[RawRecord]) -> int:
        """Run one batch through the partition's emit order; return its last offset."""
        opened = self._opened_event(partition)
        if not opened.is_set():
            waits = [asyncio.ensure_future(e.wait()) for e in (opened, self._failed)]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
        if self._failed.is_set():
            raise WorkerFailedError(f"not processing partition {partition}: {self.fatal}")
        async with self._lock(partition).for_batch():
            processor = self.processors.get(partition)
            if processor is None:
                raise WorkerFailedError(f"partition {partition} is not open on this worker")
            return await processor.process(records)

    async def sweep(self) -> None:
        """Advance every due user of every owned partition, a bounded batch at a time."""
        s = self.settings
        for partition in list(self.processors):
            resume = False
            while True:
                async with self._lock(partition):
                    processor = self.processors.get(partition)
                    if processor is None:
                        break
                    # steps run back to back, each computed while the previous one's
                    # records are acknowledged, until a batch waits for the partition
                    swept = await processor.sweep(
                        s.sweep_batch,
                        resume=resume,
                        go_on=functools.partial(self._no_batch_waiting, partition),
                    )
                # every step but the last of a call is full: a short one ends the pass
                if swept == 0 or swept % s.sweep_batch:
                    break
                resume = True

    def _no_batch_waiting(self, partition: int) -> bool:
        return not self._lock(partition).batches_waiting

    def publish_state_bytes(self) -> None:
        for partition, processor in list(self.processors.items()):
            self.metrics.state_bytes.labels(str(partition)).set(processor.store.live_bytes())

    async def observe_lag(self, consumer: Any) -> None:
        await observe_consumer_lag(consumer, self.metrics.consumer_lag, "worker")

    async def _open(self, partition: int) -> PartitionProcessor:
        s = self.settings
        path = s.state_dir / f"{s.topics.interactions}-{partition}"
        store = WindowStore(path, wal=not s.changelog)
        stored = store.get_meta(META_CONFIG)
        if stored is not None and stored != self._config:
            store.close()
            raise StateStoreError(
                f"{store.path} was written with another configuration ({stored.decode()}); "
                f"this worker has {self._config.decode()}. Use a fresh --state-dir."
            )
        fence: WriterFence | None = None
        if s.changelog:
            if not await self.restorer.tail_matches(store, partition):
                log.warning(
                    "partition %d: the local state is ahead of the changelog (its last record "
                    "is not there); rebuilding it from the changelog",
                    partition,
                )
                store.close()
                shutil.rmtree(path)
                store = WindowStore(path, wal=False)
                stored = None
            fence = await self._claim(store, partition)
        elif stored is None:
            store.put_meta(META_CONFIG, self._config)
        processor = PartitionProcessor(
            partition,
            store,
            settings=s,
            engine=self.engine,
            validator=self.validator,
            builder=self.builder,
            sender=self.sender,
            metrics=self.metrics,
            clock=self.clock,
            fence=fence,
        )
        if s.now is not None and processor.clock_high_water > s.now:
            log.warning(
                "partition %d was already advanced to %s, later than --now %s; the clock "
                "never moves back, so it stays at %s",
                partition,
                processor.clock_high_water,
                s.now,
                processor.clock_high_water,
            )
        return processor

    async def _claim(self, store: WindowStore, partition: int) -> WriterFence:
        """Restore, append a fence with the next epoch (and the configuration, for a new
        changelog), then restore up to it: records another writer slipped in before the fence
        are accepted history and applied here too. A newer claim after ours means another
        worker owns the partition now."""
        s = self.settings
        first = await self.restorer.restore(store, partition)
        epoch = first.highest + 1
        headers = epoch_headers(epoch)
        fence = fence_value(epoch)
        claim = [OutRecord(FENCE_KEY, fence, headers)]
        if store.get_meta(META_CONFIG) is None:
            store.put_meta(META_CONFIG, self._config)
            claim.append(OutRecord(META + META_CONFIG, self._config, headers))
        await self.sender.send(s.topics.changelog, claim, partition=partition)
        second = await self.restorer.restore(store, partition)
        self.metrics.restored_records.inc(first.applied + second.applied)
        self.metrics.skipped_records.inc(first.skipped + second.skipped)
        held = store.get_meta(META_FENCE)
        if held != fence:
            raise PartitionLostError(
                f"partition {partition}: another worker claimed epoch {fence_epoch(held)} "
                f"before or after this worker's claim of {epoch}; it owns the partition"
            )
        self.metrics.fence_epoch.labels(str(partition)).set(epoch)
        log.info("partition %d: claimed changelog epoch %d", partition, epoch)
        return WriterFence(
            epoch, self.stall_guard, self.restorer, store.get_int(META_CHANGELOG) or -1
        )


async def every(interval: float, wakeup: asyncio.Event | None = None) -> None:
    """Sleep ``interval`` seconds, or less if ``wakeup`` is set (then clear it)."""
    if wakeup is None:
        await asyncio.sleep(interval)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wakeup.wait(), interval)
    wakeup.clear()


__all__ = ["EngineHost", "WorkerFailedError", "every"]
