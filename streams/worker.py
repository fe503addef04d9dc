"""``lte worker``: consumes ``interactions``, keeps lagged windows, emits ``lte-updates``.

Built on aiokafka's consumer group rather than Faust's stream layer: on this machine a
Faust agent tops out near 5k events/s (≈180 µs of framework work per event, whatever the
batch size) against ~280k/s for a bare consumer, and Faust's table API writes one key and
one changelog record per event. The worker instead owns the whole batch path — vectorised
state engine, batched RocksDB writes, batched produce — and keeps the parts of the
stream-processing contract that matter: consumer-group scaling, state that follows its
partition through a changelog, and effectively-once state updates (see
:mod:`streams.partition`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from prometheus_client import CollectorRegistry

from lte_core.basis import BasisArtifact
from lte_core.encoders import build_encoder
from lte_core.engine import WindowEngine
from lte_runtime.kafka.batch_sender import BatchSender, OutRecord
from lte_runtime.kafka.consumer_lag import forget_consumer_lag, observe_consumer_lag
from lte_runtime.status_server import StatusServer
from streams.changelog import ChangelogRestorer
from streams.clock import Clock
from streams.errors import StateStoreError
from streams.metrics import WorkerMetrics
from streams.partition import PartitionProcessor
from streams.settings import WorkerSettings
from streams.updates import UpdateBuilder
from streams.validation import BatchValidator
from streams.window_store import META, META_CONFIG, WindowStore

log = logging.getLogger("lte.worker")
#: Input offsets are committed at most this often (and on revocation and shutdown). A crash
#: redelivers what was processed since, and per-user offsets turn that into duplicates.
COMMIT_INTERVAL_S = 0.5


async def ensure_topics(admin: AIOKafkaAdminClient, settings: WorkerSettings) -> int:
    """Create missing topics; return the partition count of the input topic."""
    topics = settings.topics
    existing = set(await admin.list_topics())
    wanted = [
        NewTopic(topics.interactions, settings.partitions, 1),
        NewTopic(topics.updates, settings.partitions, 1),
        NewTopic(topics.dead_letters, settings.partitions, 1),
    ]
    missing = [t for t in wanted if t.name not in existing]
    if missing:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(missing)
    described = await admin.describe_topics([topics.interactions])
    partitions = len(described[0]["partitions"])
    if settings.changelog and topics.changelog not in existing:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(
                [
                    NewTopic(
                        topics.changelog, partitions, 1, topic_configs={"cleanup.policy": "compact"}
                    )
                ]
            )
    return partitions


class Worker:
    def __init__(self, settings: WorkerSettings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.metrics = WorkerMetrics.create(self.registry)
        self.clock = Clock.create(settings.now)
        self.basis = BasisArtifact.load(settings.basis_dir)
        self.engine = WindowEngine(
            settings.window, self.basis.item_vectors, half_life=settings.half_life
        )
        self.encoder = build_encoder(settings.encoder, self.basis)
        self.validator = BatchValidator(
            self.basis.row_index, settings.rules, settings.topics.interactions
        )
        self.builder = UpdateBuilder(
            settings.window, self.encoder, self.basis.basis_version, self.clock
        )
        self.processors: dict[int, PartitionProcessor] = {}
        self._lock = asyncio.Lock()
        self._pending: dict[TopicPartition, int] = {}
        self._last_commit = 0.0
        self._input_partitions = 0
        self._config = b""
        self._ready = False
        self._sweep_wakeup = asyncio.Event()
        self.status: StatusServer | None = None

    def readiness(self) -> tuple[bool, str]:
        if not self._ready:
            return False, "joining the group or restoring state"
        return True, f"{len(self.processors)} partitions"

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        kafka = s.kafka.client_kwargs()
        consumer_kafka = s.kafka.consumer_kwargs()
        admin = AIOKafkaAdminClient(**kafka)
        await admin.start()
        try:
            self._input_partitions = await ensure_topics(admin, s)
        finally:
            await admin.close()
        self._config = s.state_config(
            self.basis.basis_version, self.basis.d, self._input_partitions
        )
        self.producer = AIOKafkaProducer(
            **kafka,
            acks="all",
            linger_ms=0,
            max_batch_size=1 << 20,
            max_request_size=8 << 20,
            enable_idempotence=False,
        )
        await self.producer.start()
        self.sender = BatchSender(self.producer)
        self.restore_consumer = AIOKafkaConsumer(
            **consumer_kafka,
            enable_auto_commit=False,
            group_id=None,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=16 << 20,
            fetch_max_bytes=64 << 20,
        )
        await self.restore_consumer.start()
        self.restorer = ChangelogRestorer(
            self.restore_consumer,
            s.topics.changelog,
            s.window,
            d=self.basis.d,
            decayed=s.half_life is not None,
            config=self._config,
        )
        self.consumer = AIOKafkaConsumer(
            **consumer_kafka,
            group_id=s.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=16 << 20,
            fetch_max_bytes=64 << 20,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=max(1000, s.session_timeout_ms // 5),
            max_poll_interval_ms=600_000,
        )
        self.consumer.subscribe([s.topics.interactions], listener=_Listener(self))
        self.status = StatusServer(
            self.registry, self.readiness, host=s.metrics_host, port=s.metrics_port
        )
        await self.status.start()
        log.info(
            "worker %s on %s: %s, encoder %s, basis %s, metrics on :%d",
            s.group_id,
            s.kafka.describe(),
            s.window.describe(),
            self.encoder.name,
            self.basis.basis_version,
            self.status.port,
        )
        await self.consumer.start()
        sweeper = asyncio.create_task(self._sweep_loop(stop), name="sweeper")
        try:
            await self._consume_loop(stop)
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await self._shutdown()

    async def _consume_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            batches = await self._fetch()
            if batches:
                async with self._lock:
                    work = [
                        (tp, processor, records)
                        for tp, records in batches.items()
                        if records and (processor := self.processors.get(tp.partition))
                    ]
                    # Partitions are independent (one store each): while one waits for the
                    # broker's acknowledgements, another computes.
                    lasts = await asyncio.gather(*(p.process(r) for _, p, r in work))
                    for (tp, _, _), last in zip(work, lasts, strict=True):
                        self._pending[tp] = last + 1
            if time.monotonic() - self._last_commit >= COMMIT_INTERVAL_S:
                await self._commit()
                await observe_consumer_lag(self.consumer, self.metrics.consumer_lag, "worker")

    async def _fetch(self) -> dict[TopicPartition, list[Any]]:
        """Up to ``batch_max_records`` records from *every* owned partition that has some.

        One ``getmany`` tends to fill its quota from a single partition's prefetched buffer;
        taking each partition's share separately lets the partitions be processed side by
        side, so one partition's CPU work overlaps another's wait for the broker.
        """
        s = self.settings
        batches: dict[TopicPartition, list[Any]] = {}
        for tp in self.consumer.assignment():
            got = await self.consumer.getmany(tp, timeout_ms=0, max_records=s.batch_max_records)
            batches.update((k, v) for k, v in got.items() if v)
        if not batches:
            got = await self.consumer.getmany(
                timeout_ms=s.batch_timeout_ms, max_records=s.batch_max_records
            )
            batches = {k: v for k, v in got.items() if v}
        return batches

    async def _commit(self) -> None:
        self._last_commit = time.monotonic()
        offsets, self._pending = self._pending, {}
        offsets = {tp: o for tp, o in offsets.items() if tp.partition in self.processors}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:
            # The batch is already in the changelog and the local store; a redelivery is
            # recognised as duplicates, so a failed commit costs only repeated work.
            log.warning("offset commit failed (%s); records will be redelivered", exc)

    async def _sweep_loop(self, stop: asyncio.Event) -> None:
        s = self.settings
        last_bytes = 0.0
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._sweep_wakeup.wait(), s.sweep_interval)
            self._sweep_wakeup.clear()
            for partition in list(self.processors):
                while not stop.is_set():
                    async with self._lock:
                        processor = self.processors.get(partition)
                        if processor is None:
                            break
                        swept = await processor.sweep(s.sweep_batch)
                    if swept < s.sweep_batch:
                        break
            if time.monotonic() - last_bytes > 10:
                last_bytes = time.monotonic()
                for p, processor in list(self.processors.items()):
                    self.metrics.state_bytes.labels(str(p)).set(processor.store.live_bytes())

    async def assign(self, assigned: set[TopicPartition]) -> None:
        async with self._lock:
            for tp in sorted(assigned):
                if tp.topic != self.settings.topics.interactions or tp.partition in self.processors:
                    continue
                self.processors[tp.partition] = await self._open(tp.partition)
            self.metrics.assigned_partitions.set(len(self.processors))
            self._ready = True
        self._sweep_wakeup.set()

    async def revoke(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:
            self._ready = False
            offsets = {tp: o for tp, o in self._pending.items() if tp in revoked}
            if offsets:
                with contextlib.suppress(KafkaError):
                    await self.consumer.commit(offsets)
            for tp in revoked:
                self._pending.pop(tp, None)
                processor = self.processors.pop(tp.partition, None)
                if processor is not None:
                    processor.close()
            forget_consumer_lag(self.metrics.consumer_lag, "worker", revoked)
            self.metrics.assigned_partitions.set(len(self.processors))

    async def _open(self, partition: int) -> PartitionProcessor:
        s = self.settings
        store = WindowStore(
            s.state_dir / f"{s.topics.interactions}-{partition}", wal=not s.changelog
        )
        stored = store.get_meta(META_CONFIG)
        if stored is not None and stored != self._config:
            store.close()
            raise StateStoreError(
                f"{store.path} was written with another configuration ({stored.decode()}); "
                f"this worker has {self._config.decode()}. Use a fresh --state-dir."
            )
        if s.changelog:
            applied = await self.restorer.restore(store, partition)
            self.metrics.restored_records.inc(applied)
        if stored is None:
            store.put_meta(META_CONFIG, self._config)
            if s.changelog:
                await self.sender.send(
                    s.topics.changelog,
                    [OutRecord(META + META_CONFIG, self._config)],
                    partition=partition,
                )
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

    async def _shutdown(self) -> None:
        async with self._lock:
            await self._commit()
            for processor in self.processors.values():
                processor.close()
            self.processors.clear()
        await self.consumer.stop()
        await self.restore_consumer.stop()
        await self.producer.stop()
        if self.status is not None:
            await self.status.stop()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._worker.revoke(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._worker.assign(set(assigned))


__all__ = ["Worker", "ensure_topics"]
