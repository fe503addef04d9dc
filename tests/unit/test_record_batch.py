"""``encode_batch`` writes the bytes aiokafka's own record builder writes for the same
records, headers, timestamp and batch size: the oracle is aiokafka 0.14's C
``DefaultRecordBatchBuilder``, appended record by record until one does not fit."""

from __future__ import annotations

from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from hypothesis import given, settings
from hypothesis import strategies as st

from lte_runtime.kafka.record_batch import encode_batch

Records = list[tuple[bytes | None, bytes | None]]
Headers = list[tuple[str, bytes]]


def aiokafka_batches(records: Records, headers: Headers, ts: int, limit: int) -> list[bytes]:
    out: list[bytes] = []
    i = 0
    while i < len(records):
        builder = DefaultRecordBatchBuilder(
            2, 0, is_transactional=0, producer_id=-1, producer_epoch=-1, base_sequence=0,
            batch_size=limit,
        )  # fmt: skip
        n = 0
        while i < len(records) and builder.append(n, ts, records[i][0], records[i][1], headers):
            i += 1
            n += 1
        out.append(bytes(builder.build()))
    return out


def encoded_batches(records: Records, headers: Headers, ts: int, limit: int) -> list[bytes]:
    out: list[bytes] = []
    done = 0
    while done < len(records):
        batch, count = encode_batch(records, done, headers, ts, limit)
        assert count > 0
        out.append(bytes(batch))
        done += count
    return out


# Lengths on both sides of each varint width (1 byte < 64, 2 bytes < 8192, ...) and past the
# table of ready-made varints (32 kB).
_sizes = st.sampled_from([0, 1, 63, 64, 100, 8191, 8192, 16_383, 16_384, 32_767, 32_768, 70_000])
_blob = st.one_of(
    st.none(),
    st.binary(max_size=200),
    _sizes.flatmap(lambda n: st.binary(min_size=n, max_size=n)),
)


@settings(max_examples=150, deadline=None)
@given(
    records=st.lists(st.tuples(_blob, _blob), min_size=1, max_size=40),
    headers=st.lists(st.tuples(st.text(max_size=12), st.binary(max_size=300)), max_size=3),
    ts=st.integers(min_value=0, max_value=2**62),
    limit=st.one_of(st.integers(min_value=61, max_value=4_000), st.just(1 << 20)),
)
def test_batches_equal_aiokafkas_builder(
    records: Records, headers: Headers, ts: int, limit: int
) -> None:
    ours = encoded_batches(records, headers, ts, limit)
    assert ours == aiokafka_batches(records, headers, ts, limit)
    decoded = []
    for raw in ours:
        batch = DefaultRecordBatch(raw)
        assert batch.validate_crc()
        decoded += [(r.key, r.value, [(k, bytes(v)) for k, v in r.headers]) for r in batch]
    assert decoded == [(k, v, headers) for k, v in records]


def test_many_records_take_offset_deltas_past_the_table() -> None:
    records: Records = [(b"k%d" % i, b"v") for i in range(40_000)]
    ours = encoded_batches(records, [], 1, 1 << 22)
    assert len(ours) == 1
    assert ours == aiokafka_batches(records, [], 1, 1 << 22)


def test_lengths_past_the_table_of_varints() -> None:
    """Keys, values and records of 16 to 2 MiB bytes: varints past the ready-made table."""
    sizes = [16_383, 16_384, 32_766, 32_767, 32_768, 70_000, 1 << 21]
    records: Records = [(bytes(n // 1000), bytes([n % 251]) * n) for n in sizes]
    headers: Headers = [("h", bytes(40_000))]
    assert encoded_batches(records, headers, 7, 1 << 23) == aiokafka_batches(
        records, headers, 7, 1 << 23
    )
