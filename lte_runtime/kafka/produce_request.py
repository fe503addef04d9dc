"""Produce requests encoded with one join instead of one per nesting level.

aiokafka 0.14 (pinned) encodes a request by recursion over its schema, and every level joins
its children's bytes into new bytes: the record batches of a produce request are copied six
times before the connection adds two more copies of its own (header, size). The worker's
output at d=384 is ~4.7 kB an event, so those copies were a few percent of its thread.
:func:`encode_produce` writes the same bytes from one ``b"".join`` over the request's parts,
batches included by reference; :func:`install` makes it the ``encode`` of aiokafka's produce
request structs (v0-v8, the versions without flexible fields). The bytes are aiokafka's own
(``tests/unit/test_produce_request.py`` compares them), so the change is process-wide by
design: every producer in the process, Faust's included, sends what it sent before.
"""

from __future__ import annotations

import struct
from typing import Any

from aiokafka.protocol import produce

_I16 = struct.Struct(">h")
_I16_I32 = struct.Struct(">hi")
_I32 = struct.Struct(">i")
_I32_I32 = struct.Struct(">ii")

#: aiokafka's produce request structs with the schema :func:`encode_produce` writes.
STRUCTS: tuple[type[Any], ...] = tuple(getattr(produce, f"ProduceRequest_v{v}") for v in range(9))


def _string(text: str | None) -> list[bytes]:
    if text is None:
        return [b"\xff\xff"]
    raw = text.encode("utf-8")
    return [_I16.pack(len(raw)), raw]


def encode_produce(request: Any) -> bytes:
    """``request`` (a ``ProduceRequest_v0`` .. ``v8`` struct) as aiokafka's ``encode``
    writes it: [transactional_id (v3+)], acks, timeout, then per topic its name and per
    partition its index and its record batch (null as length -1)."""
    parts: list[bytes] = []
    if request.API_VERSION >= 3:
        parts += _string(request.transactional_id)
    parts.append(_I16_I32.pack(request.required_acks, request.timeout))
    topics = request.topics
    parts.append(_I32.pack(len(topics)))
    for topic, partitions in topics:
        parts += _string(topic)
        parts.append(_I32.pack(len(partitions)))
        for partition, batch in partitions:
            if batch is None:
                parts.append(_I32_I32.pack(partition, -1))
            else:
                parts += (_I32_I32.pack(partition, len(batch)), batch)
    return b"".join(parts)


def install() -> None:
    """Make :func:`encode_produce` the ``encode`` of :data:`STRUCTS` (idempotent)."""
    for cls in STRUCTS:
        cls.encode = encode_produce
