"""State changelog: every head and event mutation of a partition, in a Kafka topic.

The worker ships a batch's mutations (event puts, then heads, then event deletes) and waits
for the broker before committing them locally, so the changelog is never behind the local
store. A worker that takes over a partition — or restarts with a lost disk — replays the
changelog from the position its local store last saw, up to the partition's high-water
mark read from fetch responses (Tansu's ``ListOffsets`` can undershoot the real end).
Restore keeps only the accepted history: records a fenced-out zombie wrote after a newer
owner's fence are skipped (:mod:`streams.fencing`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from lte_core.engine import due_times
from lte_core.head import parse_heads
from lte_core.window import WindowSpec
from streams.errors import StateStoreError
from streams.fencing import (
    FENCE_KEY,
    META_FENCE,
    META_TAIL,
    EpochFilter,
    fence_epoch,
    pack_tail,
    record_epoch,
    unpack_tail,
)
from streams.window_store import (
    CLOCK_FORMAT,
    HEAD,
    META,
    META_CHANGELOG,
    META_CLOCK,
    META_CONFIG,
    SHIPPED_META,
    WindowStore,
)

log = logging.getLogger(__name__)


class ChangelogRestorer:
    """Replays changelog partitions into local stores."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        topic: str,
        spec: WindowSpec,
        *,
        d: int,
        decayed: bool,
        config: bytes,
    ) -> None:
        self._consumer = consumer
        self._topic = topic
        self._config = config
        self._spec = spec
        self._d = d
        self._decayed = decayed
        self._lock = asyncio.Lock()  # one reader: restores and fencing checks take turns

    async def restore(
        self, store: WindowStore, partition: int, *, limit_s: float = 300.0
    ) -> RestoreResult:
        """Bring ``store`` up to the changelog's end, skipping what the epoch rule rejects."""
        start = (store.get_int(META_CHANGELOG) or -1) + 1
        epochs = EpochFilter(fence_epoch(store.get_meta(META_FENCE)))
        applied = 0

        def apply_chunk(records: Sequence[Any]) -> None:
            nonlocal applied
            applied += self.apply_accepted(store, records, epochs)

        await self._read(partition, start, None, apply_chunk, limit_s)
        if applied or epochs.ignored:
            log.info(
                "restored %d changelog records for partition %d (%d of older epochs skipped)",
                applied,
                partition,
                epochs.ignored,
            )
        return RestoreResult(applied, epochs.ignored, epochs.current, epochs.highest)

    def apply_accepted(
        self, store: WindowStore, records: Sequence[Any], epochs: EpochFilter
    ) -> int:
        """Apply the records (Kafka consumer records, in log order) that ``epochs`` accepts;
        return how many."""
        accepted = [
            (r.key, r.value)
            for r in records
            if epochs.accept(r.key, r.value, record_epoch(r.headers))
        ]
        last = records[-1]
        tail = pack_tail(last.offset, record_epoch(last.headers), last.key)
        self.apply(store, accepted, last.offset, tail=tail)
        return len(accepted)

    async def read_range(self, partition: int, first: int, last: int | None) -> list[Any]:
        """The changelog records at offsets ``first..last`` (inclusive; None: the end)."""
        found: list[Any] = []
        await self._read(partition, first, last, found.extend, 60.0)
        return found

    async def tail_matches(self, store: WindowStore, partition: int) -> bool:
        """Whether the last changelog record ``store`` holds is still in the changelog, at
        its offset, with its epoch and key. A store ahead of the changelog (records lost by
        the broker) fails this. A record compacted away (a later one of the same key exists)
        cannot be checked and passes."""
        raw = store.get_meta(META_TAIL)
        if raw is None:
            return True
        offset, epoch, key = unpack_tail(raw)
        found = await self.read_range(partition, offset, offset)
        if not found:
            return False
        record = found[0]
        if record.offset != offset:
            return True
        return bool(record_epoch(record.headers) == epoch and (record.key or b"") == key)

    async def _read(
        self,
        partition: int,
        start: int,
        stop: int | None,
        on_chunk: Callable[[Sequence[Any]], None],
        limit_s: float,
    ) -> None:
        """Feed ``on_chunk`` the records from ``start`` to ``stop`` (or the end), in order."""
        tp = TopicPartition(self._topic, partition)
        deadline = time.monotonic() + limit_s
        async with self._lock:
            self._consumer.assign([tp])
            self._consumer.seek(tp, start)
            try:
                while True:
                    batch = await self._consumer.getmany(tp, timeout_ms=200, max_records=20_000)
                    records = batch.get(tp, [])
                    if stop is not None:
                        records = [r for r in records if r.offset <= stop]
                    if records:
                        on_chunk(records)
                    position = await self._consumer.position(tp)
                    if stop is not None and position > stop:
                        break
                    highwater = self._consumer.highwater(tp)
                    if highwater is not None and position >= highwater:
                        break
                    if time.monotonic() > deadline:
                        raise StateStoreError(
                            f"reading {self._topic}[{partition}] from offset {start} did not "
                            f"reach {'the end' if stop is None else stop} within {limit_s:g}s"
                        )
            finally:
                self._consumer.assign([])

    def apply(
        self,
        store: WindowStore,
        records: Sequence[tuple[bytes | None, bytes | None]],
        last_offset: int,
        *,
        tail: bytes | None = None,
    ) -> None:
        """Apply one chunk of (accepted) changelog records, keeping the due index in step
        with heads; ``tail`` describes the chunk's last record (:func:`pack_tail`)."""
        final: dict[bytes, bytes | None] = {}
        for key, value in records:
            if key is None:
                continue
            final[key] = value
        users = [k[1:] for k in final if k.startswith(HEAD)]
        before = parse_heads(store.read_heads(users), self._d, self._decayed)
        after = parse_heads([final[HEAD + u] for u in users], self._d, self._decayed)
        old_due = due_times(self._spec, before)
        new_due = due_times(self._spec, after)
        write = store.begin()
        for key, value in final.items():
            if key == META + META_CONFIG:
                if value != self._config:
                    raise StateStoreError(
                        f"changelog {self._topic} holds state written with another "
                        f"configuration ({value!r}, this worker: {self._config!r}); use a new "
                        "--group-id (and so a new changelog) or the original settings"
                    )
                continue
            if key == META + META_CLOCK and value is not None:
                # the clock never moves back: keep the later of the local and shipped one
                local = store.get_meta(META_CLOCK)
                if local is not None and CLOCK_FORMAT.unpack(local) >= CLOCK_FORMAT.unpack(value):
                    continue
            elif key.startswith(META) and key[len(META) :] not in SHIPPED_META and key != FENCE_KEY:
                continue
            write.put_raw(key, value)
        for user, old, new in zip(users, old_due.tolist(), new_due.tolist(), strict=True):
            write.reindex(user, old, new)
        write.meta_int(META_CHANGELOG, last_offset)
        if tail is not None:
            write.meta(META_TAIL, tail)
        write.commit()


@dataclass(frozen=True, slots=True)
class RestoreResult:
    applied: int
    #: records of an older epoch written after a newer fence, skipped
    skipped: int
    #: the epoch of the last accepted fence
    epoch: int
    #: the highest epoch seen anywhere: a new claim takes the next one
    highest: int
