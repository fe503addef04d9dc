"""Kafka v2 record batches encoded in one pass, checksummed by the CPU's CRC-32C instruction.

Why not aiokafka's record builder: its C ``build()`` computes the batch's CRC-32C with a
table-driven loop (~1.4 GB/s on this machine), and a worker at d=384 produces ~4.7 kB per
event (the changelog head, the update, the event), so the checksum alone was ~3 µs of a ~27 µs
event. :func:`encode_batch` lays the records out with one ``bytearray.join`` (varints from a
table) and checksums the result with the ``crc32c`` package (hardware CRC32C, ~17 GB/s here;
the package kafka-python uses for the same reason): ~1.6 µs less per 3 kB record, measured
against aiokafka 0.14's builder. The bytes are the ones aiokafka's builder writes for the same
records and timestamp (``tests/unit/test_record_batch.py`` compares them), so the broker and
every consumer see no difference.

Only what :class:`~lte_runtime.kafka.batch_sender.BatchSender` needs is supported: no
compression, no transactions or idempotence (the batch producer has neither), one timestamp
for the whole batch (the time it is encoded), the same headers on every record.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import crc32c

#: baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes, lastOffsetDelta,
#: firstTimestamp, maxTimestamp, producerId, producerEpoch, baseSequence, recordCount
_HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = _HEADER.size
#: The checksum covers the batch from the attributes to the end.
_CRC_FROM = 21
_CRC = struct.Struct(">I")
_MAGIC = 2


def zigzag_varint(n: int) -> bytes:
    """``n`` as Kafka writes a signed varint: zigzag, then 7 bits a byte, low first."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


#: Varints of 0 .. 2^15-1: every offset delta, key and header length, and every record and
#: value length below 32 kB, as ready-made bytes (larger ones are encoded when met).
_VARINTS = [zigzag_varint(n) for n in range(1 << 15)]
_NULL = zigzag_varint(-1)
#: A record's attributes (unused, 0) and timestamp delta (0: one timestamp per batch).
_ATTRIBUTES_AND_DELTA = b"\x00\x00"


def _varint(n: int) -> bytes:
    return _VARINTS[n] if n < len(_VARINTS) else zigzag_varint(n)


def _headers_block(headers: Sequence[tuple[str, bytes]]) -> bytes:
    parts = [_varint(len(headers))]
    for name, value in headers:
        raw = name.encode()
        parts += [_varint(len(raw)), raw, _varint(len(value)), value]
    return b"".join(parts)


def encode_batch(
    records: Sequence[tuple[bytes | None, bytes | None]],
    start: int,
    headers: Sequence[tuple[str, bytes]],
    timestamp_ms: int,
    max_bytes: int,
) -> tuple[bytearray, int]:
    """A batch of ``records[start:]``, stopping before the first record that would take it
    past ``max_bytes`` (the first record always goes in, as in aiokafka's builder, so a record
    larger than a batch is sent alone), and how many records it holds. ``None`` keys and
    values (tombstones) are written as null."""
    if start >= len(records):
        raise ValueError("encode_batch needs at least one record")
    table = _VARINTS
    tail = _headers_block(headers)
    fixed = len(_ATTRIBUTES_AND_DELTA) + len(tail)
    parts: list[bytes] = [bytes(HEADER_SIZE)]
    size = HEADER_SIZE
    count = 0
    for index in range(start, len(records)):
        key, value = records[index][0], records[index][1]
        delta = table[count] if count < len(table) else zigzag_varint(count)
        if key is None:
            key_len, key = _NULL, b""
        else:
            key_len = _varint(len(key))
        if value is None:
            value_len, value = _NULL, b""
        else:
            value_len = _varint(len(value))
        body = fixed + len(delta) + len(key_len) + len(key) + len(value_len) + len(value)
        length = _varint(body)
        if count and size + len(length) + body > max_bytes:
            break
        size += len(length) + body
        parts += (length, _ATTRIBUTES_AND_DELTA, delta, key_len, key, value_len, value, tail)
        count += 1
    batch = bytearray().join(parts)
    _HEADER.pack_into(
        batch,
        0,
        0,
        size - 12,
        -1,
        _MAGIC,
        0,
        0,
        count - 1,
        timestamp_ms,
        timestamp_ms,
        -1,
        -1,
        0,
        count,
    )
    _CRC.pack_into(batch, 17, crc32c.crc32c(memoryview(batch)[_CRC_FROM:]))
    return batch, count
