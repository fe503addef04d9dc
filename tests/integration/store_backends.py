"""The online store backends under test, driven synchronously, and the update streams and
oracle comparisons the serving tests share."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import orjson

from lte_core.errors import UpdateFormatError
from lte_core.update import LTEUpdate, decode_update, encode_update
from lte_core.update_avro import decode_mixed
from lte_core.update_columns import UpdateColumns
from lte_runtime.kafka.batch_sender import OutRecord
from lte_runtime.redis_server import RedisServer
from serving.online_store import OnlineStore, StoredLTE, StoreKey, VersionPair, WriteResult
from serving.store_format import as_results
from serving.store_url import RedisLocation, RocksDBLocation, StoreLocation, open_store

T = TypeVar("T")
BACKENDS = ("redis", "rocksdb")


def location(backend: str, redis: RedisServer, tmp_path: Path) -> StoreLocation:
    if backend == "redis":
        return RedisLocation(redis.host, redis.port, 0)
    return RocksDBLocation(tmp_path / "online-store")


class SyncStore:
    """An :class:`OnlineStore` on its own event loop, called from synchronous tests (and
    from hypothesis examples, which cannot be coroutines)."""

    def __init__(self, store: OnlineStore, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.loop = loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def write(self, updates: Sequence[LTEUpdate], stored_at: float = 1e9) -> list[WriteResult]:
        columns = UpdateColumns.of(updates)
        return as_results(columns, self.run(self.store.write_batch(columns, stored_at=stored_at)))

    def get(self, key: StoreKey) -> StoredLTE | None:
        return self.run(self.store.get_many([key]))[0]

    def get_many(self, keys: Sequence[StoreKey]) -> list[StoredLTE | None]:
        return self.run(self.store.get_many(keys))

    def versions(self) -> list[VersionPair]:
        return self.run(self.store.versions())


@contextmanager
def sync_store(where: StoreLocation, *, writer: bool = True) -> Iterator[SyncStore]:
    loop = asyncio.new_event_loop()
    store = open_store(where, writer=writer)
    try:
        yield SyncStore(store, loop)
    finally:
        loop.run_until_complete(store.close())
        loop.close()


def make_update(
    user: str,
    as_of: float,
    due_at: float,
    vector: Sequence[float] | np.ndarray | None,
    *,
    basis_version: str = "basis-a",
    encoder: str = "mean",
    k: int | None = None,
    version: tuple[int, int] | None = None,
) -> LTEUpdate:
    """An update whose coefficients are the first ``k`` vector entries (any float32s do)."""
    vec = None if vector is None else np.asarray(vector, dtype=np.float32)
    coefficients = None if vec is None else vec[: k or len(vec)].copy()
    return LTEUpdate(
        user_id=user,
        basis_version=basis_version,
        encoder=encoder,
        as_of=as_of,
        window_start=as_of - 86400.0,
        window_end=as_of - 3600.0,
        n_events=0 if vec is None else 1 + int(abs(as_of)) % 50,
        weight_sum=0.0 if vec is None else 2.5,
        coefficients=coefficients,
        vector=vec,
        due_at=due_at,
        produced_at=due_at + 0.25,
        version=version,
    )


def update_stream(
    rng: random.Random, *, users: int, count: int, d: int, basis_version: str
) -> list[LTEUpdate]:
    """A topic's worth of updates: out of order, with repeats of the same order key, some
    emptied windows, and records with and without a version (a topic across the upgrade)."""
    np_rng = np.random.default_rng(rng.randrange(2**32))
    out = []
    for _ in range(count):
        user = f"user-{rng.randrange(users)}"
        as_of = 1_700_000_000.0 + rng.randrange(40) * 60.0
        due_at = as_of - rng.randrange(3) * 0.5
        vector = None if rng.random() < 0.05 else np_rng.standard_normal(d).astype(np.float32)
        version = None if rng.random() < 0.3 else (rng.randrange(20), rng.randrange(3))
        out.append(
            make_update(
                user, as_of, due_at, vector, basis_version=basis_version, k=4, version=version
            )
        )
    return out


def records(updates: Sequence[LTEUpdate]) -> list[OutRecord]:
    return [OutRecord(u.user_id.encode(), encode_update(u)) for u in updates]


def newest_per_key(held: Sequence[tuple[bytes | None, bytes | None]]) -> dict[StoreKey, LTEUpdate]:
    """The oracle: per key, the newest update by :func:`newer_or_same` — the later record of
    the topic on a tie — computed from the topic's (key, value) records alone, skipping those
    that break the contract."""
    newest: dict[StoreKey, LTEUpdate] = {}
    for record_key, value in held:
        update = decode_mixed([value or b""])[0]
        if isinstance(update, UpdateFormatError):
            continue
        if record_key != update.user_id.encode():
            continue
        key = StoreKey.of(update)
        have = newest.get(key)
        if have is None or newer_or_same(update, have):
            newest[key] = update
    return newest


def newer_or_same(a: LTEUpdate, b: LTEUpdate) -> bool:
    """The contract's order, written out (DESIGN 3.5, docs/contracts.md): versions decide;
    a record without one (from before the field) loses to any with one; two without one
    compare by ``(as_of, due_at)``."""
    if a.version is not None and b.version is not None:
        return a.version >= b.version
    if a.version is None and b.version is None:
        return (a.as_of, a.due_at) >= (b.as_of, b.due_at)
    return a.version is not None


def same_update(a: LTEUpdate, b: LTEUpdate) -> bool:
    """Field by field, float32 arrays compared bit for bit."""
    for name in LTEUpdate.__dataclass_fields__:
        left, right = getattr(a, name), getattr(b, name)
        if isinstance(left, np.ndarray) and isinstance(right, np.ndarray):
            if left.dtype != right.dtype or left.tobytes() != right.tobytes():
                return False
        elif left is None or right is None:
            if left is not right:
                return False
        elif left != right:
            return False
    return True


def mismatches(store: SyncStore, oracle: dict[StoreKey, LTEUpdate]) -> list[str]:
    """Keys whose stored entry differs from the oracle's update (empty when all match)."""
    keys = list(oracle)
    found = store.get_many(keys)
    bad = []
    for key, entry in zip(keys, found, strict=True):
        if entry is None or not same_update(entry.update, oracle[key]):
            bad.append(key.user_id)
    return bad


def update_from_json(doc: dict[str, Any]) -> LTEUpdate:
    """An API response body parsed back the way a client would (float32 vectors)."""
    fields = {k: v for k, v in doc.items() if k != "stored_at"}
    return decode_update(orjson.dumps(fields))
