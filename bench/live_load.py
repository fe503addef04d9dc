"""Live interaction events produced at a set rate, and waiting on a pipeline's processes:
what the end-to-end benchmarks (``bench.staleness``) drive the real worker and refresher
with. Events are stamped 2 s in the past so each one is in the window when it arrives."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer

from lte_runtime.kafka.batch_sender import BatchSender
from streams.replay import replay


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def ready(port: int) -> bool:
    import urllib.request  # noqa: PLC0415

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def live_events(users: int, items: int, seed: int) -> Iterator[list[tuple[bytes, bytes]]]:
    """Endless chunks of events stamped just before now (in the window on arrival)."""
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, items + 1) ** 1.1
    pop /= pop.sum()
    while True:
        u = rng.integers(0, users, 2000)
        it = rng.choice(items, 2000, p=pop)
        ts = time.time() - 2.0
        yield [
            (f"u{a}".encode(), orjson.dumps({"user_id": f"u{a}", "item_id": f"i{b}", "ts": ts}))
            for a, b in zip(u.tolist(), it.tolist(), strict=True)
        ]


async def produce_for(bootstrap: str, seconds: float, rate: float, users: int) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=1 << 20, acks=1)
    await producer.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    try:
        return await replay(
            BatchSender(producer),
            "interactions",
            live_events(users, 5000, int(rate)),
            rate=rate,
            stop=stop,
        )
    finally:
        await producer.stop()
