"""State changelog: every head and event mutation of a partition, in a Kafka topic.

The worker ships a batch's mutations (event puts, then heads, then event deletes) and waits
for the broker before committing them locally, so the changelog is never behind the local
store. A worker that takes over a partition — or restarts with a lost disk — replays the
changelog from the position its local store last saw, up to the partition's high-water
mark read from fetch responses (Tansu's ``ListOffsets`` can undershoot the real end).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition

from lte_core.engine import due_times
from lte_core.head import parse_heads
from lte_core.window import WindowSpec
from streams.errors import StateStoreError
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

    async def restore(self, store: WindowStore, partition: int, *, limit_s: float = 300.0) -> int:
        """Bring ``store`` up to the changelog's end; return the number of records applied."""
        tp = TopicPartition(self._topic, partition)
        start = (store.get_int(META_CHANGELOG) or -1) + 1
        self._consumer.assign([tp])
        self._consumer.seek(tp, start)
        applied = 0
        deadline = time.monotonic() + limit_s
        while True:
            batch = await self._consumer.getmany(tp, timeout_ms=200, max_records=20_000)
            records = batch.get(tp, [])
            if records:
                self.apply(store, [(r.key, r.value) for r in records], records[-1].offset)
                applied += len(records)
            highwater = self._consumer.highwater(tp)
            if highwater is not None and await self._consumer.position(tp) >= highwater:
                break
            if time.monotonic() > deadline:
                raise StateStoreError(
                    f"restoring {self._topic}[{partition}] did not reach the end within "
                    f"{limit_s:g}s ({applied} records applied)"
                )
        self._consumer.assign([])
        if applied:
            log.info("restored %d changelog records for partition %d", applied, partition)
        return applied

    def apply(
        self,
        store: WindowStore,
        records: Sequence[tuple[bytes | None, bytes | None]],
        last_offset: int,
    ) -> None:
        """Apply one chunk of changelog records, keeping the due index in step with heads."""
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
            elif key.startswith(META) and key[len(META) :] not in SHIPPED_META:
                continue
            write.put_raw(key, value)
        for user, old, new in zip(users, old_due.tolist(), new_due.tolist(), strict=True):
            write.reindex(user, old, new)
        write.meta_int(META_CHANGELOG, last_offset)
        write.commit()
