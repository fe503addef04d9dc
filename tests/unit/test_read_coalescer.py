"""Concurrent single reads become one multi-get (serving/read_coalescer.py).

The store here is a dict behind the :class:`OnlineStore` interface that records each
``get_many`` call: the coalescer is judged by the calls it makes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from lte_core.update import LTEUpdate
from lte_core.update_columns import UpdateColumns
from serving.errors import StoreUnavailableError
from serving.online_store import (
    BatchWrite,
    OnlineStore,
    StoredLTE,
    StoreKey,
    VersionPair,
)
from serving.read_coalescer import ReadCoalescer


class RecordingStore(OnlineStore):
    def __init__(self, users: Sequence[str], *, fail: bool = False) -> None:
        self.entries = {
            StoreKey("b", "mean", u): StoredLTE(
                LTEUpdate(u, "b", "mean", 1.0, 0.0, 1.0, 0, 0.0, None, None, 1.0, 1.0), 2.0
            )
            for u in users
        }
        self.calls: list[list[StoreKey]] = []
        self.fail = fail
        self.called = asyncio.Event()
        self.answer = asyncio.Event()
        self.answer.set()

    async def get_many(self, keys: Sequence[StoreKey]) -> list[StoredLTE | None]:
        self.calls.append(list(keys))
        self.called.set()
        await self.answer.wait()
        if self.fail:
            raise StoreUnavailableError("down")
        return [self.entries.get(k) for k in keys]

    async def write_batch(self, updates: UpdateColumns, *, stored_at: float) -> BatchWrite:
        raise NotImplementedError

    async def versions(self) -> list[VersionPair]:
        return []

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def describe(self) -> str:
        return "recording"


def key(user: str) -> StoreKey:
    return StoreKey("b", "mean", user)


def test_concurrent_reads_share_one_call_and_get_their_own_answer() -> None:
    store = RecordingStore([f"u{i}" for i in range(0, 120, 2)])
    reader = ReadCoalescer(store.get_many, max_keys=50)

    async def scenario() -> list[StoredLTE | None]:
        return await asyncio.gather(*(reader.get(key(f"u{i}")) for i in range(120)))

    found = asyncio.run(scenario())
    assert [len(c) for c in store.calls] == [50, 50, 20]
    for i, entry in enumerate(found):
        assert (entry is None) == (i % 2 == 1)
        assert entry is None or entry.update.user_id == f"u{i}"


def test_a_lone_read_is_sent_at_once_and_later_reads_start_a_new_call() -> None:
    store = RecordingStore(["a", "b"])
    reader = ReadCoalescer(store.get_many)

    async def scenario() -> None:
        first = await reader.get(key("a"))
        second = await reader.get(key("b"))
        assert first is not None and second is not None

    asyncio.run(scenario())
    assert store.calls == [[key("a")], [key("b")]]


def test_a_store_error_reaches_every_waiter_and_a_gone_client_harms_no_one() -> None:
    async def failing() -> list[BaseException | StoredLTE | None]:
        reader = ReadCoalescer(RecordingStore(["a"], fail=True).get_many)
        return list(
            await asyncio.gather(reader.get(key("a")), reader.get(key("b")), return_exceptions=True)
        )

    assert all(isinstance(r, StoreUnavailableError) for r in asyncio.run(failing()))

    async def cancelled() -> StoredLTE | None:
        store = RecordingStore(["a", "b"])
        store.answer.clear()
        reader = ReadCoalescer(store.get_many)
        gone = asyncio.create_task(reader.get(key("a")))
        kept = asyncio.create_task(reader.get(key("b")))
        await store.called.wait()  # both reads are in flight in one call
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        store.answer.set()
        return await kept

    entry = asyncio.run(cancelled())
    assert entry is not None and entry.update.user_id == "b"
