"""``lte refresher``: consumes ``lte-updates`` and keeps the online store current.

One batch at a time, in this order:

1. fetch up to ``--batch-max-records`` records (``getmany``);
2. decode the whole batch at once into columns
   (:func:`lte_core.update_avro.decode_columns` into
   :class:`~lte_core.update_columns.UpdateColumns`, no object per update: Avro records by
   the batch scan, JSON ones by the JSON batch path); a record that breaks the contract
   (DESIGN 3.4) — or whose key is not its ``user_id`` — is dead-lettered with the original
   bytes and counted, never raised;
3. coalesce per ``(basis_version, encoder, user_id)`` on the columns
   (:func:`~lte_core.update_columns.newest_per_key`): the newest by the per-user
   ``version`` (:meth:`LTEUpdate.order_key`) wins (the later record on a tie), the rest
   are counted as ``duplicate`` (same order key as the winner) or ``stale``;
4. send the dead letters, then write the batch to the store in one round trip (Redis: one
   pipeline of script calls; RocksDB: one write batch), monotonic and idempotent, and
   account it (outcomes, staleness and drift of the whole batch in a few numpy calls);
5. only then commit the batch's offsets.

Steps 4-5 of a batch run while the next batch is fetched, decoded and coalesced (1-3): the
store's round trip (an fsync with ``appendfsync always``) and the offset commit's overlap
that CPU work instead of idling the process. Writes stay one at a time and in batch order: a
batch's write starts when the previous batch's write has returned, and its accounting and
offset commit wait for the previous batch's, so the store works on batch N+1 while the
refresher accounts and commits batch N (the store used to idle meanwhile). At most three
batches are held: one being accounted and committed, one being written, one decoded and
waiting.

A crash anywhere before 5 redelivers the batch, and rewriting it is harmless (the store
keeps the newest), so a ``kill -9`` loses nothing. When the store (or the DLQ topic) fails,
the *same* batch is retried with exponential backoff capped at ``--retry-max-seconds``;
nothing more than the one decoded batch is fetched ahead and nothing after it is committed,
``/readyz`` answers 503, one line is logged per outage, and the loop resumes on its own when
the store is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from lte_core.errors import UpdateFormatError
from lte_core.update_avro import DecodedColumns, decode_columns
from lte_core.update_columns import UpdateColumns, newest_per_key
from lte_runtime.crash_only import Heartbeat, supervised
from lte_runtime.kafka.batch_sender import BatchSender, OutRecord
from lte_runtime.kafka.clients import batch_producer, group_consumer
from lte_runtime.kafka.consumer_lag import forget_consumer_lag, observe_consumer_lag
from lte_runtime.kafka.dead_letter import DeadLetter
from lte_runtime.kafka.rebalance import RebalanceCallbacks
from lte_runtime.kafka.topics import TopicSpec, ensure_topics
from lte_runtime.status_server import StatusServer
from serving.drift import PopulationDrift, cosine_distances_raw, load_reference
from serving.errors import StoreUnavailableError
from serving.metrics import RefresherMetrics
from serving.online_store import (
    OUTCOMES,
    STALE,
    WRITTEN,
    BatchWrite,
    OnlineStore,
    bounded_store_call,
)
from serving.read_api import build_app, start_site
from serving.settings import RefresherSettings
from serving.store_format import replaced_parts
from serving.store_url import open_store

log = logging.getLogger("lte.refresher")
T = TypeVar("T")
DEAD_LETTER_REASON = "invalid_update"
IDLE_PING_SECONDS = 1.0
FIRST_RETRY_SECONDS = 0.05
HEARTBEAT_LIMIT_SECONDS = 60.0
PING_TIMEOUT_SECONDS = 1.0
#: CPython's collector thresholds while the refresher runs. A batch allocates a few dozen
#: objects per record that live until it is written; at the default (700, 10, 10) young
#: collections traverse them again and again (one isolated run at d=384: 66 -> 39 µs of
#: CPU per update with these). Cycles are still collected, after 50,000 allocations, not 700.
GC_THRESHOLDS = (50_000, 20, 100)


class Refresher:
    def __init__(
        self, settings: RefresherSettings, registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.metrics = RefresherMetrics.create(self.registry)
        pinned = load_reference(settings.drift_reference) if settings.drift_reference else None
        self.drift = PopulationDrift(
            self.metrics,
            pinned=pinned,
            reference_size=settings.drift_reference_size,
            started_at=time.time(),
        )
        self._store_ok = False
        self._store_checked = 0.0
        self._joined = False
        self._store_name = settings.store.describe()
        # a loop iteration is at most a fetch, a store write with its socket timeout, and
        # a retry wait; far beyond that the loop is stuck, and /healthz says so
        self.heartbeat = Heartbeat(
            "the refresher loop", HEARTBEAT_LIMIT_SECONDS + 2 * settings.retry_max_seconds
        )

    def readiness(self) -> tuple[bool, str]:
        if not self._store_ok:
            return False, f"the store {self._store_name} is unavailable"
        if not self._joined:
            return False, "joining the consumer group"
        return True, f"writing to {self._store_name}"

    async def run(self, stop: asyncio.Event) -> None:
        """Crash-only: an unexpected error ends the process with one line, exit 1."""
        store = open_store(self.settings.store, writer=True)
        thresholds = gc.get_threshold()
        gc.set_threshold(*GC_THRESHOLDS)
        try:
            await supervised("the refresher loop", self._run(store, stop))
        finally:
            gc.set_threshold(*thresholds)
            await store.close()

    async def _run(self, store: OnlineStore, stop: asyncio.Event) -> None:
        s = self.settings
        await ensure_topics(
            s.kafka, [TopicSpec(s.topic, s.partitions), TopicSpec(s.dlq_topic, s.partitions)]
        )
        # A store outage holds one batch for as long as it lasts; leaving the group would
        # only hand the same outage to another refresher.
        self.consumer = group_consumer(
            s.kafka,
            s.group_id,
            session_timeout_ms=s.session_timeout_ms,
            max_poll_interval_ms=3_600_000,
        )
        async with contextlib.AsyncExitStack() as running:
            running.push_async_callback(await self._start_status(store))
            if (
                await self._retrying("reaching the store", _answers(store), stop, "store_ping")
                is None
            ):
                return
            self._store_answered()
            producer = batch_producer(s.kafka)
            await producer.start()
            running.push_async_callback(producer.stop)
            self.sender = BatchSender(producer)
            self.consumer.subscribe(
                [s.topic], listener=RebalanceCallbacks(assigned=self.assigned, revoked=self.revoked)
            )
            await self.consumer.start()
            running.push_async_callback(self.consumer.stop)
            log.info(
                "refresher %s: %s -> %s on %s",
                s.group_id,
                s.topic,
                self._store_name,
                s.kafka.describe(),
            )
            await self._consume_loop(store, stop)

    async def _start_status(self, store: OnlineStore) -> Callable[[], Awaitable[None]]:
        """The read API with the status routes on ``--port`` (``--serve``), else the status
        routes alone on ``--metrics-port``; returns how to stop it."""
        s = self.settings
        if s.api is not None:
            app = build_app(store, s.api, self.registry, self.readiness, self.heartbeat.liveness)
            runner, port = await start_site(
                app, s.api.host, s.api.port, header_timeout=s.api.header_timeout
            )
            log.info(
                "read API and metrics on %s:%d (auth %s)",
                s.api.host,
                port,
                "on" if s.api.token else "off",
            )
            return runner.cleanup
        status = StatusServer(
            self.registry,
            self.readiness,
            host=s.metrics_host,
            port=s.metrics_port,
            alive=self.heartbeat.liveness,
        )
        await status.start()
        log.info("metrics on %s:%d", s.metrics_host, status.port)
        return status.stop

    async def _consume_loop(self, store: OnlineStore, stop: asyncio.Event) -> None:
        s = self.settings
        # the newest batch's steps 4-5, which wait for the batch before (``behind``) to be
        # accounted and committed, and whether its write is in the store yet (``stored``)
        in_flight: asyncio.Task[bool] | None = None
        behind: asyncio.Task[bool] | None = None
        stored: asyncio.Future[bool] | None = None
        try:
            while not stop.is_set():
                self.heartbeat.beat()
                batches = await self.consumer.getmany(
                    timeout_ms=s.batch_timeout_ms, max_records=s.batch_max_records
                )
                batches = {tp: records for tp, records in batches.items() if records}
                if batches:
                    prepared = self._prepare(batches)
                    if stored is not None and not await stored:
                        break  # stopping during an outage: commit nothing more, redeliver later
                    if in_flight is not None and in_flight.done():
                        in_flight.result()  # its accounting or commit failed: crash-only
                    stored = asyncio.get_running_loop().create_future()
                    behind = in_flight
                    in_flight = asyncio.create_task(
                        self._store_and_commit(store, prepared, stop, stored, behind)
                    )
                elif in_flight is not None:
                    if in_flight.done():
                        done, in_flight, behind, stored = in_flight, None, None, None
                        if not done.result():
                            return
                elif time.monotonic() - self._store_checked > IDLE_PING_SECONDS:
                    await self._check_store(store)
                await observe_consumer_lag(self.consumer, self.metrics.consumer_lag, "refresher")
        except BaseException:
            for task in (in_flight, behind):
                if task is not None:
                    task.cancel()
            raise
        if in_flight is not None:
            await in_flight

    async def _store_and_commit(
        self,
        store: OnlineStore,
        prepared: _Prepared,
        stop: asyncio.Event,
        stored: asyncio.Future[bool],
        behind: asyncio.Task[bool] | None,
    ) -> bool:
        """Steps 4-5 of a batch: the write (``stored`` says when it is in the store), then,
        once the batch ``behind`` this one is accounted and committed, its own accounting
        and commit. False if asked to stop before this batch or the one behind was stored."""
        try:
            written = await self._apply(store, prepared, stop)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                stored.cancel()
            else:
                stored.set_exception(exc)
            raise
        written_at = time.time()
        stored.set_result(written is not None)
        if behind is not None and not await behind:
            return False
        if written is None:
            return False
        if len(prepared.updates):
            self._account(prepared.updates, written, written_at=written_at)
        await self._commit(prepared.offsets)
        return True

    def _prepare(self, batches: dict[TopicPartition, list[Any]]) -> _Prepared:
        """Steps 1-3 of a batch: decode, dead letters, coalescing (counted now)."""
        records = [(tp, record) for tp, part in batches.items() for record in part]
        decoded = _decode_all([record for _, record in records])
        dead: list[OutRecord] = []
        for i, exc in sorted(decoded.errors.items()):
            self.metrics.invalid_updates.labels(exc.field).inc()
            dead.append(_dead_letter(records[i][1], records[i][0], exc))
        kept = newest_per_key(decoded.columns)
        if kept.duplicates:
            self.metrics.store_writes.labels("duplicate").inc(kept.duplicates)
        if kept.stale:
            self.metrics.store_writes.labels("stale").inc(kept.stale)
        return _Prepared(
            dead=dead,
            updates=decoded.columns.take(kept.rows),
            offsets={tp: records[-1].offset + 1 for tp, records in batches.items()},
        )

    async def _apply(
        self, store: OnlineStore, prepared: _Prepared, stop: asyncio.Event
    ) -> BatchWrite | None:
        """Dead-letter and store one prepared batch; None if asked to stop before it was
        durably stored."""
        dead, updates = prepared.dead, prepared.updates
        if (
            dead
            and await self._retrying(
                "sending to the dead-letter topic",
                lambda: self.sender.send(self.settings.dlq_topic, dead),
                stop,
                "dlq_send",
            )
            is None
        ):
            return None
        if not len(updates):
            return BatchWrite.empty()

        async def write() -> BatchWrite:
            try:
                return await store.write_batch(updates, stored_at=time.time())
            except StoreUnavailableError:
                self.metrics.store_writes.labels("error").inc(len(updates))
                raise

        started = time.perf_counter()
        written = await self._retrying("writing to the store", write, stop, "store_write")
        if written is None:
            return None
        self._store_answered()
        self.metrics.write_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_updates.observe(len(updates))
        return written

    def _account(self, updates: UpdateColumns, written: BatchWrite, *, written_at: float) -> None:
        """Outcomes, staleness and drift of a whole batch with a few numpy calls."""
        outcomes = written.outcomes
        for code, n in enumerate(np.bincount(outcomes, minlength=len(OUTCOMES)).tolist()):
            if n:
                self.metrics.store_writes.labels(OUTCOMES[code].value).inc(n)
        fresh = outcomes == WRITTEN
        self.metrics.staleness.observe_many(np.maximum(0.0, written_at - updates.due_at[fresh]))
        replaced = replaced_parts(written.previous)
        moved = [
            (old, new)
            for old, new, was_written in zip(
                replaced.vector, updates.vector, fresh.tolist(), strict=True
            )
            if was_written and old is not None and new is not None
        ]
        self.metrics.drift.observe_many(cosine_distances_raw(moved))
        self.drift.observe_batch(updates, outcomes != STALE, replaced)
        self.drift.publish()

    async def _retrying(
        self, what: str, attempt: Callable[[], Awaitable[T]], stop: asyncio.Event, operation: str
    ) -> T | None:
        """``attempt()`` until it succeeds (its result) or ``stop`` is set (None). Only
        transient errors (store outage, broker error) are retried, each counted; anything
        else propagates and stops the process (crash-only)."""
        delay = FIRST_RETRY_SECONDS
        failures = 0
        while True:
            self.heartbeat.beat()
            try:
                result = await attempt()
            except (StoreUnavailableError, KafkaError) as exc:
                failures += 1
                self.metrics.retries.labels(operation).inc()
                if isinstance(exc, StoreUnavailableError):
                    self._store_down()
                if failures == 1:
                    log.warning("%s failed; retrying until it works: %s", what, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    return None
                delay = min(delay * 2, self.settings.retry_max_seconds)
                continue
            if failures:
                log.info("%s works again after %d failed attempts", what, failures)
            return result

    async def _check_store(self, store: OnlineStore) -> None:
        """While idle, notice an outage (readiness) before a batch runs into it."""
        self._store_checked = time.monotonic()
        try:
            # bounded: a hung store (SIGSTOP, a dead connection) turns readiness off within
            # about a second, not after the client's socket timeout
            await bounded_store_call(store.ping(), PING_TIMEOUT_SECONDS, store)
        except StoreUnavailableError as exc:
            if self._store_ok:
                log.warning("the store stopped answering: %s", exc)
            self._store_down()
            return
        if not self._store_ok:
            log.info("the store answers again")
        self._store_answered()

    def _store_answered(self) -> None:
        self._store_ok = True
        self._store_checked = time.monotonic()
        self.metrics.store_up.set(1)

    def _store_down(self) -> None:
        self._store_ok = False
        self.metrics.store_up.set(0)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:
            # The batch is in the store; a redelivery only rewrites what is there.
            log.warning("offset commit failed (%s); records will be redelivered", exc)

    async def assigned(self, _: set[TopicPartition]) -> None:
        self._joined = True
        self.drift.restart(time.time())

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        forget_consumer_lag(self.metrics.consumer_lag, "refresher", partitions)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A batch decoded and coalesced, waiting for its turn to be stored and committed."""

    dead: list[OutRecord]
    updates: UpdateColumns
    offsets: dict[TopicPartition, int]


def _answers(store: OnlineStore) -> Callable[[], Awaitable[bool]]:
    async def ping() -> bool:
        await store.ping()
        return True

    return ping


def _decode_all(records: list[Any]) -> DecodedColumns:
    """Decode a batch into columns, binary and JSON records alike (:func:`decode_columns`),
    then check each record's key; a failed check turns the row into that record's error."""
    values = [r.value if r.value is not None else b"" for r in records]
    decoded = decode_columns(values)
    errors = dict(decoded.errors)
    for i, record in enumerate(records):
        if record.value is None:
            errors[i] = UpdateFormatError("value", "missing (a null record value)")
    source = decoded.source.tolist()
    wrong = [
        row
        for row, (i, user_id) in enumerate(zip(source, decoded.columns.user_id, strict=True))
        if records[i].key != user_id.encode()
    ]
    if not wrong:
        return DecodedColumns(decoded.columns, decoded.source, errors)
    for row in wrong:
        errors[source[row]] = UpdateFormatError("key", "the record key must equal user_id")
    keep = np.setdiff1d(np.arange(len(source)), wrong)
    return DecodedColumns(decoded.columns.take(keep), decoded.source[keep], errors)


def _dead_letter(record: Any, tp: TopicPartition, exc: UpdateFormatError) -> OutRecord:
    letter = DeadLetter(
        key=record.key,
        value=record.value,
        reason=DEAD_LETTER_REASON,
        detail=str(exc),
        source_topic=tp.topic,
        source_partition=tp.partition,
        source_offset=record.offset,
        source_timestamp_ms=record.timestamp,
    )
    return OutRecord(letter.key, letter.value, letter.headers())


__all__ = ["Refresher"]
