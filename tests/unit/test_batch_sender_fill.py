"""``BatchSender`` fills aiokafka's record builder in bulk for plain ``(key, value)``
tuples: the records the broker would get, decoded from the built batches, are the ones sent,
in order, each with the common headers, however the batches split them."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch
from hypothesis import given, settings
from hypothesis import strategies as st

from lte_runtime.kafka.batch_sender import BatchSender

Written = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


class _Meta:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class BuildingProducer:
    """Real ``BatchBuilder``s of ``size`` bytes; a sent batch is built and decoded."""

    def __init__(self, size: int, partitions: int = 1) -> None:
        self.size = size
        self.partitions = partitions
        self.batches: list[list[Written]] = []
        self.by_partition: dict[int, list[Written]] = {}

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.size, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        offset = len(self.by_partition.get(partition, []))
        records = [
            (r.key, r.value, [(k, bytes(v or b"")) for k, v in r.headers])
            for r in DefaultRecordBatch(bytes(batch._build()))
        ]
        assert len(records) == batch.record_count()
        self.batches.append(records)
        self.by_partition.setdefault(partition, []).extend(records)
        future: asyncio.Future[_Meta] = asyncio.get_running_loop().create_future()
        future.set_result(_Meta(offset))
        return future


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.binary(min_size=1, max_size=8), st.one_of(st.none(), st.binary(max_size=90))),
        min_size=1,
        max_size=60,
    ),
    st.booleans(),
)
def test_bulk_filled_batches_carry_every_record_in_order(
    records: list[tuple[bytes, bytes | None]], with_headers: bool
) -> None:
    """Batches of 100 bytes: a record that does not fit starts the next batch (one larger
    than a batch goes alone), and a smaller one after it is not slipped into the full batch
    ahead of it."""
    producer = BuildingProducer(100)
    headers = [("lte-epoch", b"\x00\x01")] if with_headers else []
    last = asyncio.run(BatchSender(producer).send("t", records, partition=0, headers=headers))
    written = [r for batch in producer.batches for r in batch]
    assert written == [(k, v, headers) for k, v in records]
    assert last == {0: len(records) - 1}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.binary(max_size=12)),
            st.one_of(st.none(), st.binary(max_size=40)),
        ),
        min_size=1,
        max_size=80,
    ),
    st.integers(1, 7),
)
def test_records_land_on_their_keys_partition_in_order(
    records: list[tuple[bytes | None, bytes | None]], partitions: int
) -> None:
    """Without a partition, each record goes where Kafka's default partitioner puts its key
    (aiokafka's reference murmur2; a null key hashes as empty), and each partition gets its
    records in the order they were given; the offsets returned are each partition's last."""
    producer = BuildingProducer(120, partitions)
    last = asyncio.run(BatchSender(producer).send("t", records))
    expected: dict[int, list[Written]] = {}
    for key, value in records:
        part = (murmur2(key or b"") & 0x7FFFFFFF) % partitions
        expected.setdefault(part, []).append((key, value, []))
    assert producer.by_partition == expected
    assert last == {part: len(got) - 1 for part, got in expected.items()}
