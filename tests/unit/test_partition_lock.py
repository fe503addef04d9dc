"""``PartitionLock`` counts the event batches waiting for it, which is what tells a sweep
holding the lock to stop computing ahead; a waiter that is cancelled is not counted on."""

from __future__ import annotations

import asyncio

from streams.engine_host import PartitionLock


def test_waiting_batches_are_counted_until_they_hold_the_lock() -> None:
    async def run() -> list[int]:
        lock = PartitionLock()
        seen: list[int] = []
        inside = asyncio.Event()

        async def batch() -> None:
            async with lock.for_batch():
                seen.append(lock.batches_waiting)
                inside.set()

        async with lock:  # a sweep step
            first = asyncio.ensure_future(batch())
            second = asyncio.ensure_future(batch())
            await asyncio.sleep(0)  # one turn of the loop: both batches reach the lock
            seen.append(lock.batches_waiting)
        await asyncio.gather(first, second)
        assert inside.is_set()
        seen.append(lock.batches_waiting)
        return seen

    # two wait under the sweep; the first inside sees the second still waiting
    assert asyncio.run(run()) == [2, 1, 0, 0]


def test_a_cancelled_waiter_leaves_the_count() -> None:
    async def run() -> int:
        lock = PartitionLock()
        async with lock:
            waiter = asyncio.ensure_future(lock.for_batch().__aenter__())
            await asyncio.sleep(0)
            assert lock.batches_waiting == 1
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
        return lock.batches_waiting

    assert asyncio.run(run()) == 0
