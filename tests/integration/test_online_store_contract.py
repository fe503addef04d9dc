"""The online store contract (serving/online_store.py), run against every backend: a real
redis-server, a real 3-node Redis Cluster and a real RocksDB directory. Every check compares
with an independent model of the rules — the newest by (as_of, due_at) wins, the later write
on a tie."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lte_core.update import LTEUpdate
from lte_core.update_columns import UpdateColumns
from lte_runtime.redis_cluster import LocalRedisCluster
from lte_runtime.redis_server import RedisServer
from serving.errors import StoreOpenError
from serving.online_store import StoredLTE, StoreKey, WriteOutcome
from serving.redis_store import CHUNK
from serving.store_url import (
    RedisLocation,
    RocksDBLocation,
    StoreLocation,
    open_store,
    parse_store_url,
)
from tests.integration.harness import unique, wait_until
from tests.integration.store_backends import (
    BACKENDS,
    SyncStore,
    location,
    make_update,
    newer_or_same,
    same_update,
    sync_store,
)


@pytest.fixture(params=[*BACKENDS, "redis-cluster"])
def store(
    request: pytest.FixtureRequest, redis_server: RedisServer, tmp_path: Path
) -> Iterator[SyncStore]:
    if request.param == "redis-cluster":
        cluster: LocalRedisCluster = request.getfixturevalue("redis_cluster")
        where = parse_store_url(cluster.url)
    else:
        where = location(request.param, redis_server, tmp_path)
    with sync_store(where) as opened:
        yield opened


writes = st.lists(
    st.tuples(
        st.sampled_from(["u1", "u2", "u/3:x"]),
        st.integers(0, 4),  # as_of: few values, so ties and out-of-order are common
        st.integers(0, 2),  # due_at
        st.none() | st.lists(st.floats(width=32, allow_nan=False), min_size=3, max_size=3),
        st.booleans(),  # flush the batch after this write
        # the per-user version, or none (a record from before the field): few values, so
        # ties, migrations and versions that disagree with the clocks are common
        st.none() | st.tuples(st.integers(0, 3), st.integers(0, 1)),
    ),
    min_size=1,
    max_size=40,
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
@given(writes)
def test_any_order_and_batching_leaves_the_newest(
    store: SyncStore,
    steps: list[tuple[str, int, int, list[float] | None, bool, tuple[int, int] | None]],
) -> None:
    basis = unique("b")
    model: dict[str, LTEUpdate] = {}
    batch: list[LTEUpdate] = []
    expected: list[tuple[WriteOutcome, LTEUpdate | None]] = []
    results = []
    for i, (user, as_of, due_at, vector, flush, version) in enumerate(steps):
        update = make_update(
            user, float(as_of), float(due_at), vector, basis_version=basis, version=version
        )
        # produced_at makes every write distinguishable, so "which one won" is observable
        update = _with_produced_at(update, float(i))
        have = model.get(user)
        if have is not None and not newer_or_same(update, have):
            expected.append((WriteOutcome.STALE, None))
        else:
            same = have is not None and newer_or_same(have, update)
            expected.append((WriteOutcome.DUPLICATE if same else WriteOutcome.WRITTEN, have))
            model[user] = update
        batch.append(update)
        if flush or i == len(steps) - 1:
            results.extend(store.write(batch, stored_at=float(i)))
            batch = []
    for (outcome, previous), result in zip(expected, results, strict=True):
        assert result.outcome is outcome
        if outcome is not WriteOutcome.STALE:
            assert (result.previous is None) == (previous is None)
            if previous is not None and result.previous is not None:
                assert same_update(result.previous.update, previous)
    for user, update in model.items():
        entry = store.get(StoreKey(basis, "mean", user))
        assert entry is not None and same_update(entry.update, update)


def _with_produced_at(update: LTEUpdate, produced_at: float) -> LTEUpdate:
    fields = {name: getattr(update, name) for name in LTEUpdate.__dataclass_fields__}
    fields["produced_at"] = produced_at
    return LTEUpdate(**fields)


def test_an_emptied_window_is_kept_as_a_marker_that_older_updates_cannot_undo(
    store: SyncStore,
) -> None:
    basis = unique("b")
    key = StoreKey(basis, "mean", "u")
    store.write([make_update("u", 10.0, 9.0, [1.0, 2.0], basis_version=basis)])
    emptied = make_update("u", 20.0, 19.0, None, basis_version=basis)
    [result] = store.write([emptied], stored_at=5.0)
    assert result.outcome is WriteOutcome.WRITTEN
    assert result.previous is not None and result.previous.update.n_events > 0
    [late] = store.write([make_update("u", 15.0, 15.0, [3.0, 4.0], basis_version=basis)])
    assert late.outcome is WriteOutcome.STALE
    entry = store.get(key)
    assert entry is not None and entry.stored_at == 5.0
    assert entry.update.n_events == 0 and entry.update.vector is None
    assert entry.update.coefficients is None and entry.update.as_of == 20.0


def test_versions_live_side_by_side_for_rollback(store: SyncStore) -> None:
    old, new = unique("b"), unique("b")
    store.write([make_update("u", 1.0, 1.0, [1.0, 0.0], basis_version=old)], stored_at=100.0)
    store.write(
        [
            make_update("u", 2.0, 2.0, [0.0, 1.0], basis_version=new),
            make_update("u", 3.0, 3.0, [5.0, 5.0], basis_version=new, encoder="recency:30d"),
        ],
        stored_at=200.0,
    )
    # An older update of the old version is still judged against the old version only.
    [result] = store.write([make_update("u", 0.5, 0.5, [9.0, 9.0], basis_version=old)])
    assert result.outcome is WriteOutcome.STALE
    entries = store.get_many(
        [
            StoreKey(old, "mean", "u"),
            StoreKey(new, "mean", "u"),
            StoreKey(new, "recency:30d", "u"),
            StoreKey(new, "recency", "30d:u"),
        ]
    )
    assert [None if e is None else e.update.as_of for e in entries] == [1.0, 2.0, 3.0, None]
    pairs = {(p.basis_version, p.encoder): p.last_written_at for p in store.versions()}
    assert pairs[(old, "mean")] == 1e9  # the stale write still marks the pair as written
    assert pairs[(new, "mean")] == 200.0 and pairs[(new, "recency:30d")] == 200.0


def test_large_batches_and_exact_float32(store: SyncStore) -> None:
    basis = unique("b")
    rng = np.random.default_rng(3)
    n = 3 * CHUNK + 17  # several Redis script chunks in one pipeline
    vectors = rng.standard_normal((n, 384)).astype(np.float32)
    vectors[0, :3] = [np.float32(1e-45), np.float32(-0.0), np.float32(3.4e38)]
    updates = [
        make_update(f"user-{i}", 1.0, 1.0, vectors[i], basis_version=basis, k=64) for i in range(n)
    ]
    results = store.write(updates)
    assert [r.outcome for r in results] == [WriteOutcome.WRITTEN] * n
    keys = [StoreKey(basis, "mean", f"user-{i}") for i in range(n)] + [
        StoreKey(basis, "mean", "nobody")
    ]
    found = store.get_many(keys)
    assert found[-1] is None
    for update, entry in zip(updates, found[:-1], strict=True):
        assert entry is not None and same_update(entry.update, update)


@pytest.mark.parametrize("backend", ["redis", "redis-cluster"])
def test_redis_compares_and_writes_atomically_under_concurrent_writers(
    backend: str, redis_server: RedisServer, request: pytest.FixtureRequest
) -> None:
    """Two refreshers racing over the same users in opposite orders: a read-then-write
    implementation lets an older update overwrite a newer one; the script must not."""
    where: StoreLocation = RedisLocation(redis_server.host, redis_server.port, 0)
    if backend == "redis-cluster":
        where = parse_store_url(request.getfixturevalue("redis_cluster").url)
    basis = unique("b")
    users = [f"u{i}" for i in range(200)]
    rounds = [
        [make_update(u, float(t), 0.0, [float(t)], basis_version=basis) for u in users]
        for t in range(30)
    ]

    async def race() -> list[StoredLTE | None]:
        a, b = open_store(where, writer=True), open_store(where, writer=True)
        try:
            await asyncio.gather(
                *(a.write_batch(UpdateColumns.of(batch), stored_at=1.0) for batch in rounds),
                *(
                    b.write_batch(UpdateColumns.of(batch), stored_at=2.0)
                    for batch in reversed(rounds)
                ),
            )
            return await a.get_many([StoreKey(basis, "mean", u) for u in users])
        finally:
            await a.close()
            await b.close()

    found = asyncio.run(race())
    assert all(e is not None and e.update.as_of == 29.0 for e in found)


def test_redis_overwrites_a_value_that_is_not_an_entry(redis_server: RedisServer) -> None:
    basis = unique("b")
    raw = redis.Redis(host=redis_server.host, port=redis_server.port)
    raw.set(f"lte:{basis}:mean:u".encode(), b"junk")
    raw.close()
    with sync_store(RedisLocation(redis_server.host, redis_server.port, 0)) as store:
        [result] = store.write([make_update("u", 1.0, 1.0, [1.0], basis_version=basis)])
        assert result.outcome is WriteOutcome.WRITTEN and result.previous is None
        entry = store.get(StoreKey(basis, "mean", "u"))
        assert entry is not None and entry.update.as_of == 1.0


def test_rocksdb_has_one_writer_and_followers_see_its_writes(tmp_path: Path) -> None:
    where = RocksDBLocation(tmp_path / "store")
    with pytest.raises(StoreOpenError, match="not a RocksDB store yet"):
        open_store(where, writer=False)
    with sync_store(where) as writer:
        with pytest.raises(StoreOpenError, match="another refresher"):
            open_store(where, writer=True)
        first = make_update("u", 1.0, 1.0, [1.0], basis_version="b")
        second = make_update("v", 1.0, 1.0, [2.0], basis_version="b")
        writer.write([first])
        with sync_store(where, writer=False) as follower:
            seen = follower.get(StoreKey("b", "mean", "u"))
            assert seen is not None and same_update(seen.update, first)
            writer.write([second])
            entry = wait_until(
                lambda: follower.get(StoreKey("b", "mean", "v")),
                timeout=5,
                what="the follower to catch up with the writer",
            )
            assert entry is not None and same_update(entry.update, second)
    # Reopened from disk, everything is there.
    with sync_store(where) as reopened:
        found = reopened.get_many([StoreKey("b", "mean", u) for u in "uv"])
        for entry, update in zip(found, (first, second), strict=True):
            assert entry is not None and same_update(entry.update, update)


def test_a_higher_version_wins_whatever_the_clocks_say(store: SyncStore) -> None:
    """The restart-behind-a-backlog case: the sweep's update carries a later ``as_of`` and
    ``due_at`` than the event update computed after it, but a lower version."""
    basis = unique("b")
    sweep = make_update("u", 500.0, 500.0, [1.0, 0.0], basis_version=basis, version=(7, 40))
    event = make_update("u", 400.0, 100.0, [0.0, 1.0], basis_version=basis, version=(8, 40))
    assert [r.outcome for r in store.write([sweep])] == [WriteOutcome.WRITTEN]
    assert [r.outcome for r in store.write([event])] == [WriteOutcome.WRITTEN]
    assert [r.outcome for r in store.write([sweep])] == [WriteOutcome.STALE]
    entry = store.get(StoreKey(basis, "mean", "u"))
    assert entry is not None and entry.update.version == (8, 40)


def test_entries_written_by_the_old_order_keep_working(store: SyncStore) -> None:
    """Migration: an entry without a version (format 1) is read back as it was, is
    replaced by any versioned update, and a late unversioned record cannot undo that."""
    basis = unique("b")
    key = StoreKey(basis, "mean", "u")
    old = make_update("u", 900.0, 900.0, [1.0, 2.0], basis_version=basis)
    store.write([old])
    entry = store.get(key)
    assert entry is not None and same_update(entry.update, old) and entry.update.version is None
    new = make_update("u", 100.0, 100.0, [3.0, 4.0], basis_version=basis, version=(0, 1))
    [written] = store.write([new])
    assert written.outcome is WriteOutcome.WRITTEN and written.previous is not None
    assert same_update(written.previous.update, old)
    [late] = store.write([make_update("u", 1e9, 1e9, [5.0, 6.0], basis_version=basis)])
    assert late.outcome is WriteOutcome.STALE
    entry = store.get(key)
    assert entry is not None and same_update(entry.update, new)


def test_entries_stored_once_and_twice_compare_by_version(store: SyncStore) -> None:
    """The identity basis's entries (format 3: coefficients stored once, as the vector) and
    a K < d basis's (format 2) share the order: the version, whatever the layout; the
    replaced entry comes back whole either way."""
    basis = unique("b")
    key = StoreKey(basis, "mean", "u")

    def update(version: tuple[int, int], k: int | None, value: float) -> LTEUpdate:
        vector = [value, value + 1.0, value + 2.0]
        return make_update("u", 1.0, 1.0, vector, basis_version=basis, k=k, version=version)

    once, twice = update((2, 0), None, 1.0), update((1, 0), 1, 5.0)
    assert [r.outcome for r in store.write([once])] == [WriteOutcome.WRITTEN]
    assert [r.outcome for r in store.write([twice])] == [WriteOutcome.STALE]
    newer = update((3, 0), 2, 7.0)
    [written] = store.write([newer])
    assert written.outcome is WriteOutcome.WRITTEN and written.previous is not None
    assert same_update(written.previous.update, once)
    assert [r.outcome for r in store.write([update((2, 9), None, 9.0)])] == [WriteOutcome.STALE]
    [again] = store.write([update((4, 0), None, 3.0)])
    assert again.previous is not None and same_update(again.previous.update, newer)
    entry = store.get(key)
    assert entry is not None and entry.update.version == (4, 0)
    assert entry.update.coefficients is not None and entry.update.vector is not None
    assert entry.update.coefficients.tolist() == entry.update.vector.tolist() == [3.0, 4.0, 5.0]
