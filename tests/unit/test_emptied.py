"""The sweep's emptied-window path (:mod:`lte_core.emptied`) against the engine: for every
user it claims, the same mutations, changelog records and update as
:meth:`lte_core.engine.WindowEngine.process`, on a real RocksDB store whose heads come in
both formats, with and without decayed sums, with stray records and with heads the store
disagrees with."""

from __future__ import annotations

import tempfile
from typing import cast
from unittest import mock

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lte_core.basis import BasisArtifact
from lte_core.emptied import emptied_result, emptying
from lte_core.encoders import EncoderSpec, build_encoder
from lte_core.engine import FROM_START, EventColumns, RangeRequests, RangeResult, WindowEngine
from lte_core.window import WindowSpec
from streams.clock import Clock
from streams.updates import UpdateBuilder
from streams.window_store import HEAD, WindowStore, event_prefix

USERS = [b"u%d" % i for i in range(40)]
SPEC = WindowSpec(window=3 * 10, lag=10, bucket=10)
T0 = 1000.0
_BIAS = 1 << 63

events_st = st.lists(
    st.tuples(
        st.integers(0, len(USERS) - 1),  # user
        st.integers(0, 9),  # item
        st.integers(-4, 3),  # bucket relative to t0 (positive: pending)
        st.sampled_from([1.0, 0.1, 3.7]),  # weight (0.1: low parts, format-2 heads)
    ),
    min_size=1,
    max_size=80,
)


@settings(max_examples=40, deadline=None)
@given(
    events_st,
    st.integers(1, 12),
    st.booleans(),
    st.lists(st.integers(0, len(USERS) - 1), max_size=4),
    st.lists(st.integers(0, len(USERS) - 1), max_size=4),
)
def test_claimed_users_get_exactly_what_the_engine_gives(
    events: list[tuple[int, int, int, float]],
    steps: int,
    decayed: bool,
    strays: list[int],
    lost: list[int],
) -> None:
    vectors = np.random.default_rng(0).standard_normal((10, 3)).astype(np.float32)
    engine = WindowEngine(SPEC, vectors, half_life=25.0 if decayed else None)
    basis = BasisArtifact.build([f"i{j}" for j in range(10)], vectors)
    encoder = build_encoder(EncoderSpec.parse("recency:25s" if decayed else "mean"), basis)
    with tempfile.TemporaryDirectory() as tmp:
        store = WindowStore(tmp)
        try:
            users = _apply(store, engine, events)
            _damage(store, users, strays, lost)
            now = T0 + 10.0 * steps
            heads = store.read_heads(users)
            picked = emptying(SPEC, heads, now, d=engine.d, decayed=decayed)
            gone = [users[i] for i in picked.rows.tolist()]
            found = store.read_ranges(gone, picked.requests())
            assert len(set(picked.start.tolist())) <= 1
            if gone:
                _same_ranges(store.read_below(gone, int(picked.start[0])), found)
            # the sweep's reader of ranges that all end at one bucket, for every user
            below = SPEC.end_bucket(now) - SPEC.n_buckets
            _same_ranges(
                store.read_below(users, below),
                store.read_ranges(
                    users,
                    RangeRequests(
                        user=np.arange(len(users), dtype=np.int64),
                        lo=np.full(len(users), FROM_START, dtype=np.int64),
                        hi=np.full(len(users), below, dtype=np.int64),
                    ),
                ),
            )
            claimed, result = emptied_result(SPEC, picked, found, d=engine.d, decayed=decayed)
            mine = [u for u, c in zip(gone, claimed.tolist(), strict=True) if c]
            # users the store disagrees with are left to the engine
            assert not set(mine) & {USERS[i] for i in lost}
            if not mine:
                return
            ref = engine.process(store, mine, EventColumns.empty(len(mine)), now)
            assert ref.heads == result.heads == [None] * len(mine)
            for name in ("user", "bucket", "offset", "item", "weight"):
                np.testing.assert_array_equal(
                    getattr(result.delete, name), getattr(ref.delete, name)
                )
            assert len(result.put) == len(ref.put) == 0
            for name in ("changed", "end", "next_change", "prev_next_change", "last_offset"):
                np.testing.assert_array_equal(getattr(result, name), getattr(ref, name))
            assert (result.users_delta, result.stored_delta) == (
                ref.users_delta,
                ref.stored_delta,
            )
            np.testing.assert_array_equal(result.summary.counts, ref.summary.counts)
            np.testing.assert_array_equal(result.summary.weight_sums, ref.summary.weight_sums)
            mine_write, ref_write = store.begin(), store.begin()
            mine_write.engine_result(mine, result, due_cleared=True)
            ref_write.engine_result(mine, ref, due_cleared=True)
            assert mine_write.changelog == ref_write.changelog
            with mock.patch("streams.updates.time.time", return_value=T0 + 1e6):
                for update_format in ("avro", "json"):
                    builder = UpdateBuilder(
                        SPEC, encoder, "b1", Clock(frozen_at=now), update_format
                    )
                    built, expected = (builder.build(mine, r, now) for r in (result, ref))
                    assert built.records == expected.records
                    np.testing.assert_array_equal(built.due_at, expected.due_at)
        finally:
            store.close()


def _same_ranges(got: RangeResult, want: RangeResult) -> None:
    for name in ("request", "bucket", "offset", "item", "weight", "next_bucket"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
        assert getattr(got, name).dtype == getattr(want, name).dtype


def _apply(
    store: WindowStore, engine: WindowEngine, events: list[tuple[int, int, int, float]]
) -> list[bytes]:
    """Apply the events at ``T0`` (in-window and pending ones); return the users."""
    by_user: dict[int, list[tuple[int, int, float, int]]] = {}
    for offset, (u, item, bucket, weight) in enumerate(events):
        by_user.setdefault(u, []).append((item, bucket, weight, offset))
    users = [USERS[u] for u in by_user]
    rows = list(by_user.values())
    cols = EventColumns(
        seg=np.cumsum([0] + [len(r) for r in rows]).astype(np.int64),
        items=np.array([e[0] for r in rows for e in r], dtype=np.uint32),
        ts=np.array([T0 + 10 * e[1] + 5 for r in rows for e in r], dtype=np.float64),
        weights=np.array([e[2] for r in rows for e in r], dtype=np.float32),
        offsets=np.array([e[3] for r in rows for e in r], dtype=np.int64),
    )
    write = store.begin()
    write.engine_result(users, engine.process(store, users, cols, T0))
    write.commit()
    return users


def _damage(store: WindowStore, users: list[bytes], strays: list[int], lost: list[int]) -> None:
    """Stray records far below every window (an interrupted restore leaves such), and, for
    the ``lost`` users, one stored event deleted behind the head's back."""
    write = store.begin()
    for u in strays:
        key = event_prefix(USERS[u]) + (_BIAS - 1000).to_bytes(8, "big") + (7).to_bytes(8, "big")
        write.put_raw(key, np.array([(1, 1.0)], dtype=[("i", "<u4"), ("w", "<f4")]).tobytes())
    write.commit()
    write = store.begin()
    for u in lost:
        if store.get_raw(HEAD + USERS[u]) is None:
            continue
        prefix = event_prefix(USERS[u])
        for stored in store._db.keys(from_key=prefix):
            key = cast(bytes, stored)
            if not key.startswith(prefix):
                break
            if int.from_bytes(key[len(prefix) : len(prefix) + 8], "big") - _BIAS > -100:
                write.put_raw(key, None)
                break
    write.commit()
