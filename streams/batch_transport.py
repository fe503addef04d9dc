"""A Faust transport that delivers each fetched partition chunk as one message.

Faust's own drain loop (``faust.transport.consumer.Consumer._drain_messages``) hands records
to the conductor one at a time, awaiting mode's ``wait_first`` per record; with the
conductor's per-message work and the stream iterator's per-event ``sleep(0)`` and ack
bookkeeping that is ~88 µs of framework per event on this machine, whatever the agent does.
The engine works on batches, so this transport keeps everything else of the aiokafka driver
(group membership, assignment, rebalance callbacks, commits, the web server, sensors) and
changes only the unit of delivery:

* :meth:`BatchConsumer._drain_messages` turns every ``{tp: [records]}`` chunk of a fetch into
  one :class:`BatchMessage` whose value is the list of aiokafka records and whose offsets
  span ``first_offset..offset``; it goes through the normal conductor -> channel -> stream
  path, so ``stream.events()`` yields one event per chunk;
* an acked batch counts as its whole offset range, and only a run of contiguous ranges
  starting at the committed offset is committed (so a batch acked early never lets the
  commit jump over an unfinished one);
* a fetch takes up to ``batch_max_records`` per partition (the app's attribute; Faust's
  ``broker_max_poll_records`` bounds the whole fetch, so the app sets it to that times the
  partition count) and a longer chunk is split;
* the consumer's ``fetch_max_wait_ms`` comes from the app instead of the driver's
  hard-coded 1500 ms (the embedded broker answers a waiting fetch only when it expires).

It is registered under the URL scheme ``lte`` through Faust's ``faust.transports`` entry
point (``pyproject.toml``), so an app says ``broker="lte://host:port"`` and Faust picks it
like any other driver. The internals it overrides are those of faust-streaming
:data:`FAUST_VERSION`; :func:`check_faust` refuses any other version or a build without the
Cython stream iterator (the pure-Python iterator acks stale-generation events it skips).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from importlib import metadata
from typing import Any, cast

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as driver
from faust.types.tuples import ConsumerMessage, ack_lock
from mode.utils.futures import notify

from lte_core.errors import ConfigError

log = logging.getLogger("lte.worker")

#: The faust-streaming release whose consumer internals this module overrides.
FAUST_VERSION = "0.15.3"
#: Kafka's default when the app does not say.
DEFAULT_FETCH_MAX_WAIT_MS = 1500


def check_faust() -> None:
    """Refuse to run on a faust-streaming whose internals this transport was not built on."""
    installed = metadata.version("faust-streaming")
    if installed != FAUST_VERSION:
        raise ConfigError(
            f"faust-streaming {installed} is installed; the worker's batch transport is "
            f"built on {FAUST_VERSION}'s consumer internals: install faust-streaming=="
            f"{FAUST_VERSION}"
        )
    try:
        from faust._cython.streams import StreamIterator  # noqa: F401, PLC0415
        from faust.transport._cython.conductor import ConductorHandler  # noqa: F401, PLC0415
    except ImportError as exc:
        raise ConfigError(
            "faust-streaming was installed without its Cython extensions (faust._cython); "
            "the worker needs the compiled stream iterator: reinstall faust-streaming=="
            f"{FAUST_VERSION} from a wheel"
        ) from exc


class BatchMessage(ConsumerMessage):
    """One fetched chunk of a partition: ``value`` is the list of aiokafka records,
    ``offset`` the last one's offset and ``first_offset`` where the range begins."""

    __slots__ = ("first_offset",)

    first_offset: int

    @property
    def records(self) -> list[Any]:
        return cast(list[Any], self.value)


def batch_message(tp: Any, records: list[Any], first_offset: int, generation: int) -> BatchMessage:
    last = records[-1]
    timestamp: Any = last.timestamp / 1000.0 if last.timestamp is not None else None
    value: Any = records
    message = BatchMessage(
        last.topic,
        last.partition,
        last.offset,
        timestamp,
        last.timestamp_type,
        None,
        None,
        value,
        None,
        0,
        len(records),
        tp,
        generation_id=generation,
    )
    message.first_offset = first_offset
    return message


class ConsumerAbandonedError(RuntimeError):
    """A call into the consumer thread after the worker failed: it will never be answered."""


class BatchConsumerThread(driver.AIOKafkaConsumerThread):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: calls waiting for the consumer thread's answer
        self._pending: set[asyncio.Future[Any]] = set()
        self._abandoned = False
        super().__init__(*args, **kwargs)

    async def call_thread(self, fun: Any, *args: Any, **kwargs: Any) -> Any:
        """Mode's call into the consumer thread, except that it cannot wait forever: once
        the worker has failed (:meth:`BatchConsumer.abandon`) the thread may already be
        gone, so every pending and later call fails at once instead."""
        if self._abandoned:
            raise ConsumerAbandonedError("the worker failed; the consumer is stopping")
        promise = await self.method_queue.call(
            self.parent_loop.create_future(), fun, *args, **kwargs
        )
        self._pending.add(promise)
        try:
            return await promise
        finally:
            self._pending.discard(promise)

    def abandon(self) -> None:
        self._abandoned = True
        for promise in self._pending:
            if not promise.done():
                promise.set_exception(
                    ConsumerAbandonedError("the worker failed; the consumer is stopping")
                )

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # read by AIOKafkaConsumer.start() when it builds its fetcher
        consumer._fetch_max_wait_ms = getattr(
            self.app, "fetch_max_wait_ms", DEFAULT_FETCH_MAX_WAIT_MS
        )
        return consumer


class BatchConsumer(driver.Consumer):
    """The aiokafka driver's consumer with batch delivery and range acks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: per partition, acked ranges first offset -> last offset
        self._acked_ranges: dict[Any, dict[int, int]] = {}
        #: per partition, where the first delivered batch began (when nothing is committed)
        self._origin: dict[Any, int] = {}
        #: per partition, the offset after the last delivered record
        self._next_offset: dict[Any, int] = {}
        self._abandoned = False
        super().__init__(*args, **kwargs)

    def abandon(self) -> None:
        """After a fatal error: commit nothing more, wait for no batch in flight, and let
        no call wait on the consumer thread.

        The process is going down and a restart redoes whatever was not committed (local
        writes follow the changelog), so a last commit gains nothing; and it can wait
        forever: the consumer thread stops with the crash, while Faust's orderly stop still
        commits and re-subscribes through it (seen when the failure lands while partitions
        are being assigned) and mode's ``call_thread`` then never returns."""
        self._abandoned = True
        self.unacked.clear()
        cast(BatchConsumerThread, self._thread).abandon()

    async def subscribe(self, topics: Any) -> None:
        if not self._abandoned:  # Faust's conductor re-subscribes while it stops
            await super().subscribe(topics)

    def _new_consumer_thread(self) -> BatchConsumerThread:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        # Faust forgets the acks of revoked partitions before the app's revocation handler
        # commits; commit what is acked first, so the next owner redoes less.
        try:
            await self.commit(revoked)
        except Exception as exc:
            log.warning(
                "offset commit at revocation failed (%r); the next owner will redo those "
                "records and recognise them as duplicates",
                exc,
            )
        for tp in revoked:
            self._acked_ranges.pop(tp, None)
            self._origin.pop(tp, None)
            self._next_offset.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    async def perform_seek(self) -> None:
        # positions move back to the committed offsets: forget what was delivered since
        self._next_offset.clear()
        self._origin.clear()
        self._acked_ranges.clear()
        await super().perform_seek()

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - a loop
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records, active = await self._wait_next_records(1.0)
                generation = self.app.consumer_generation_id
                await asyncio.sleep(0)
                if not records or self.should_stop:
                    continue
                if not self.flow_active:
                    try:
                        await self.perform_seek()
                    except Exception as exc:  # as Faust's own getmany does
                        log.warning("seek while flow stopped failed: %r", exc)
                    continue
                await self._deliver(records, active, generation)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _deliver(
        self, records: Mapping[Any, list[Any]], active: Any, generation: int
    ) -> None:
        """Each partition's chunk of one fetch, as one message, through the conductor."""
        for tp, chunk in records.items():
            if not self.flow_active or self.app.consumer_generation_id != generation:
                return
            if active is not None and tp not in active:
                continue
            limit = getattr(self.app, "batch_max_records", None) or len(chunk) or 1
            for start in range(0, len(chunk), limit):
                message = self._batch_of(tp, chunk[start : start + limit], generation)
                if message is None:
                    continue
                self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                # abandoned (not lost: never acked) if a rebalance suspends the flow
                await self.wait_first(self.callback(message), self.suspend_flow.wait())
                self._next_offset[tp] = message.offset + 1
                if not self.flow_active or self.app.consumer_generation_id != generation:
                    return

    def _batch_of(self, tp: Any, chunk: list[Any], generation: int) -> BatchMessage | None:
        """The chunk's undelivered records as one message, or None if there are none."""
        expected = self._next_offset.get(tp)
        if expected is None:
            expected = self._read_offset[tp]  # the committed offset after a seek
        if expected is not None and chunk and chunk[0].offset < expected:
            chunk = [r for r in chunk if r.offset >= expected]
        if not chunk:
            return None
        first = expected if expected is not None else chunk[0].offset
        if self._committed_offset[tp] is None:
            self._origin.setdefault(tp, first)
        return batch_message(tp, chunk, first, generation)

    def ack(self, message: Any) -> bool:
        """Mark the message's whole offset range as processed."""
        with ack_lock:
            if message.acked:
                return False
            message.acked = True
            tp = message.tp
            committed = self._committed_offset[tp]
            try:
                if committed is not None and message.offset < committed:
                    return False
                self._unacked_messages.discard(message)
                first = getattr(message, "first_offset", message.offset)
                self._acked_ranges.setdefault(tp, {})[first] = message.offset
                self._n_acked += 1
                return True
            finally:
                notify(self._waiting_for_ack)

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Iterator[Any]:
        return (
            tp
            for tp, ranges in self._acked_ranges.items()
            if ranges and (topics is None or tp in topics or tp.topic in topics)
        )

    def _new_offset(self, tp: Any) -> int | None:
        """The end of the contiguous run of acked ranges that starts at the committed
        offset (or at the first delivered batch, before any commit)."""
        ranges = self._acked_ranges.get(tp)
        if not ranges:
            return None
        committed = self._committed_offset[tp]
        start = committed if committed is not None else self._origin.get(tp)
        if start is None:
            return None
        for first in [f for f in ranges if ranges[f] < start]:
            del ranges[first]  # already behind the committed offset
        end = start
        while end in ranges:
            end = ranges.pop(end) + 1
        return end if end > start else None

    async def _commit(self, offsets: Mapping[Any, int]) -> bool:
        if self._abandoned:
            return False
        ok = bool(await super()._commit(offsets))
        if not ok:
            log.warning(
                "offset commit failed for %s; those records will be redelivered and "
                "recognised as duplicates",
                ", ".join(f"{tp.topic}[{tp.partition}]@{o}" for tp, o in offsets.items()),
            )
        return ok


class Transport(driver.Transport):
    """The aiokafka transport with :class:`BatchConsumer` (URL scheme ``lte``)."""

    Consumer = BatchConsumer


__all__ = ["FAUST_VERSION", "BatchConsumer", "BatchMessage", "Transport", "check_faust"]
