"""The Redis store's own connections (serving/redis_store.py ``_Connections``, which carry
reads and batch writes) on a real Redis: a read cut off mid-flight must not leave its late
reply for the next read, and reads and writes must come back on their own after Redis
restarts (a dead connection, a script cache emptied)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from lte_core.update import LTEUpdate
from lte_core.update_columns import UpdateColumns
from lte_runtime.redis_server import RedisServer
from serving.errors import StoreUnavailableError
from serving.online_store import StoreKey, bounded_store_call
from serving.redis_store import RedisStore
from serving.store_format import decode_entry
from serving.store_url import RedisLocation


def _update(user: str, value: float, offset: int = 1) -> LTEUpdate:
    vector = np.full(4, value, dtype=np.float32)
    return LTEUpdate(
        user, "b", "mean", 10.0, 0.0, 5.0, 2, 2.0, vector, vector, 9.0, 9.5, (offset, 1)
    )


def test_reads_after_a_cut_off_read_and_a_restart_answer_their_own_keys(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "redis").start()
    users = {"a": 1.0, "b": 2.0, "c": 3.0}

    async def read(store: RedisStore, user: str) -> float:
        key = StoreKey("b", "mean", user)
        (data,) = await bounded_store_call(store.get_many_raw([key]), 1.0, store)
        assert data is not None
        vector = decode_entry(key, data).update.vector
        assert vector is not None
        return float(vector[0])

    async def scenario() -> None:
        store = RedisStore(RedisLocation(server.host, server.port, 0))
        try:
            updates = UpdateColumns.of([_update(u, v) for u, v in users.items()])
            await store.write_batch(updates, stored_at=time.time())
            assert [await read(store, u) for u in users] == list(users.values())
            assert server.pid is not None
            os.kill(server.pid, signal.SIGSTOP)
            try:
                with pytest.raises(StoreUnavailableError):
                    await bounded_store_call(
                        store.get_many_raw([StoreKey("b", "mean", "a")]), 0.3, store
                    )
            finally:
                os.kill(server.pid, signal.SIGCONT)
            # Redis now answers the cut-off MGET of "a"; a reused connection would hand
            # that reply to these reads
            assert [await read(store, u) for u in ("b", "c")] == [2.0, 3.0]
            server.kill()
            server.start()
            assert [await read(store, u) for u in users] == list(users.values())
            server.kill()
            server.start()
            # the write finds its pooled connection closed and the script cache empty
            newer = UpdateColumns.of([_update(u, v + 10, offset=2) for u, v in users.items()])
            written = await store.write_batch(newer, stored_at=time.time())
            assert written.outcomes.tolist() == [0, 0, 0]
            assert [await read(store, u) for u in users] == [v + 10 for v in users.values()]
        finally:
            await store.close()

    try:
        asyncio.run(scenario())
    finally:
        server.kill()
