"""The worker's output bytes without the worker: what the broker and aiokafka alone allow.

A bare consumer reads ``interactions`` in the worker's batches and, for every batch of
one partition, produces what the worker's contract makes it produce, in the same order
and with the same acknowledgements (:mod:`streams.partition`), but computes nothing:

1. one update per distinct user of the batch (``update_bytes(d)``) to ``updates``,
   acknowledged by all replicas;
2. then, to the same partition of a changelog topic, one event record per event and one
   head per distinct user, acknowledged. The head is ``64 + 8·d`` bytes (format 1), what the
   worker writes for the bench's unit-weight events, whose sums have no low parts
   (:mod:`lte_core.head`).

Its rate is the ceiling of any worker that keeps that contract on this broker and
machine: no engine, no RocksDB, no validation. Run beside ``limit`` by
``python -m bench.runtimes --runtimes faust_worker,emit_bound``.
"""

from __future__ import annotations

import time

from aiokafka import AIOKafkaProducer

from bench.peer import create_topic
from bench.worker import interactions_reader
from lte_core.head import legacy_head_bytes
from lte_runtime.kafka.batch_sender import BatchSender

#: bytes of one event record in the changelog: key ``e`` + u16 length + user + two u64
#: (for the synthetic stream's user ids), value item u32 + weight f32
EVENT_KEY_PAD = 1 + 2 + 16
EVENT_VALUE = bytes(8)


def update_bytes(d: int) -> int:
    """An Avro update at ``d``: ``d`` float32s plus ~90 bytes of key, clock and versions."""
    return 4 * d + 90


async def emit_bound(bootstrap: str, n: int, d: int, *, batch: int = 20_000) -> float:
    """Events per second of consume → produce the worker's output bytes (see the module)."""
    await create_topic(bootstrap, "emit-updates", 4)
    await create_topic(bootstrap, "emit-changelog", 4)
    consumer = interactions_reader(bootstrap)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=0,
        max_batch_size=1 << 20,
        max_request_size=8 << 20,
        enable_idempotence=False,
    )
    await consumer.start()
    await producer.start()
    sender = BatchSender(producer)
    update = bytes(update_bytes(d))
    head = bytes(legacy_head_bytes(d, False))
    seen = 0
    started = None
    try:
        while seen < n:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=batch)
            if started is None and fetched:
                started = time.perf_counter()
            for tp, records in fetched.items():
                users = list(dict.fromkeys(r.key for r in records))
                await sender.send("emit-updates", [(u, update) for u in users])
                events = [(b"e" + r.key.ljust(EVENT_KEY_PAD), EVENT_VALUE) for r in records]
                heads = [(b"h" + u, head) for u in users]
                await sender.send("emit-changelog", events + heads, partition=tp.partition)
                seen += len(records)
    finally:
        await producer.stop()
        await consumer.stop()
    assert started is not None
    return n / (time.perf_counter() - started)
