"""The columnar engine (with the in-memory store) against the one-user reference, which is
itself checked against the brute-force oracle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lte_core.engine import (
    APPLIED,
    DUPLICATE,
    LATE,
    NEVER,
    PENDING,
    EventColumns,
    WindowEngine,
)
from lte_core.errors import StateCodecError
from lte_core.head import NO_BUCKET, parse_heads
from lte_core.memory_store import MemoryWindowStore
from lte_core.state import LaggedWindow
from lte_core.window import WindowSpec

N_ITEMS = 9


@dataclass(frozen=True)
class Batch:
    move: float
    events: tuple[tuple[int, int, float, float], ...]  # user, item, ts offset, weight
    redeliver: int
    sweep_all: bool


Run = tuple[WindowSpec, int, npt.NDArray[np.float32], float | None, list[Batch]]


@st.composite
def runs(draw: st.DrawFn) -> Run:
    bucket = draw(st.sampled_from([1, 3, 60]))
    spec = WindowSpec(
        window=draw(st.integers(1, 8)) * bucket, lag=draw(st.integers(0, 3 * bucket)), bucket=bucket
    )
    users = draw(st.integers(1, 5))
    d = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    vectors = np.random.default_rng(seed).standard_normal((N_ITEMS, d)).astype(np.float32)
    half_life = draw(
        st.one_of(st.none(), st.sampled_from([0.5, 1.0, 7.0]).map(lambda h: h * bucket))
    )
    span = spec.window + spec.lag + 2 * bucket
    batches = draw(
        st.lists(
            st.builds(
                Batch,
                move=st.one_of(
                    st.just(0.0),
                    st.floats(0, 2 * bucket),
                    st.floats(span, 2 * span),
                    st.integers(0, 3).map(lambda k: float(k * bucket)),
                ),
                events=st.lists(
                    st.tuples(
                        st.integers(0, users - 1),
                        st.integers(0, N_ITEMS - 1),
                        st.floats(-span, 2 * bucket + spec.lag),
                        st.sampled_from([1.0, 0.25, 4.0]),
                    ),
                    max_size=10,
                ).map(tuple),
                redeliver=st.integers(0, 4),
                sweep_all=st.booleans(),
            ),
            min_size=1,
            max_size=8,
        )
    )
    return spec, users, vectors, half_life, batches


@settings(max_examples=300)
@given(runs())
def test_engine_equals_reference(run: Run) -> None:
    spec, n_users, vectors, half_life, batches = run
    d = vectors.shape[1]
    keys = [f"user-{u}".encode() for u in range(n_users)]
    engine = WindowEngine(spec, vectors, half_life=half_life)
    store = MemoryWindowStore()
    refs = [LaggedWindow(spec, d) for _ in range(n_users)]
    sent: list[list[tuple[int, float, float, int]]] = [[] for _ in range(n_users)]
    clock, offset = 10_000.0, 0
    for batch in batches:
        clock += batch.move  # callers never move the clock backwards
        per_user: list[list[tuple[int, float, float, int]]] = [[] for _ in range(n_users)]
        if batch.redeliver:
            for u in range(n_users):
                per_user[u].extend(sent[u][-batch.redeliver :])
        for u, item, rel, w in batch.events:
            per_user[u].append((item, clock + rel, w, offset))
            offset += 1
        # The worker calls the engine for touched users, and the sweeper for due ones:
        # either way a subset of users; sometimes all of them.
        batch_users = [u for u in range(n_users) if per_user[u] or batch.sweep_all]
        if not batch_users:
            continue
        seg = np.zeros(len(batch_users) + 1, dtype=np.int64)
        seg[1:] = np.cumsum([len(per_user[u]) for u in batch_users])
        flat = [e for u in batch_users for e in per_user[u]]
        cols = EventColumns(
            seg=seg,
            items=np.array([e[0] for e in flat], dtype=np.uint32),
            ts=np.array([e[1] for e in flat], dtype=np.float64),
            weights=np.array([e[2] for e in flat], dtype=np.float32),
            offsets=np.array([e[3] for e in flat], dtype=np.int64),
        )
        before = {u: refs[u].next_change() for u in batch_users}
        summary_before = {u: refs[u].summary() for u in batch_users}
        batch_keys = [keys[u] for u in batch_users]
        heads_before, stored_before = len(store.heads), sum(map(len, store.events.values()))
        result = engine.process(store, batch_keys, cols, clock, partition=2)
        store.commit(batch_keys, result)
        assert len(store.heads) - heads_before == result.users_delta
        assert sum(map(len, store.events.values())) - stored_before == result.stored_delta
        for i, u in enumerate(batch_users):
            evs = per_user[u]
            ref = refs[u]
            out = ref.apply(
                [e[0] for e in evs],
                [e[1] for e in evs],
                [e[2] for e in evs],
                vectors,
                clock,
                offsets=[e[3] for e in evs],
                partition=2,
            )
            codes = result.outcome[seg[i] : seg[i + 1]]
            assert out.applied == int(((codes == APPLIED) | (codes == PENDING)).sum())
            assert out.late + out.duplicate == int(((codes == LATE) | (codes == DUPLICATE)).sum())
            assert result.prev_next_change[i] == (NEVER if before[u] is None else before[u])
            want_next = ref.next_change()
            assert result.next_change[i] == (NEVER if want_next is None else want_next)
            got = result.summary.rows(np.array([i]))
            want = ref.summary(vectors, half_life)
            assert got.counts[0] == ref.count
            np.testing.assert_allclose(got.sums, want.sums, atol=1e-9)
            assert got.weight_sums[0] == pytest.approx(want.weight_sums[0], abs=1e-9)
            if ref.count == 0:
                assert not got.sums.any() and got.weight_sums[0] == 0.0
            elif half_life is not None:
                assert got.decayed_sums is not None and got.decayed_weights is not None
                assert want.decayed_sums is not None and want.decayed_weights is not None
                np.testing.assert_allclose(
                    got.decayed_sums[0] / got.decayed_weights[0],
                    want.decayed_sums[0] / want.decayed_weights[0],
                    atol=1e-7,
                )
            moved = ref.count != summary_before[u].counts[0] or not np.allclose(
                ref.sum, summary_before[u].sums[0]
            )
            if moved:
                assert result.changed[i]
            assert store.stored_events(keys[u]) == ref.n_stored
            if result.heads[i] is None:
                assert ref.is_empty
                refs[u] = LaggedWindow(spec, d)  # the engine dropped it; so does the model
            else:
                head = parse_heads([result.heads[i]], d, half_life is not None)
                assert head.n[0] == ref.n_stored and head.count[0] == ref.count
                assert head.last_offset[0] == ref.last_offset
                assert head.oldest[0] == ref.oldest_bucket
                pending = ref.first_pending_bucket
                assert head.pending_min[0] == (NO_BUCKET if pending is None else pending)
            sent[u].extend(e for e in evs if e not in sent[u])


def test_a_clock_move_that_changes_nothing_reads_nothing() -> None:
    spec = WindowSpec(window=10 * 60, lag=60, bucket=60)
    vectors = np.eye(2, dtype=np.float32)
    store = MemoryWindowStore()
    engine = WindowEngine(spec, vectors)
    cols = EventColumns(
        seg=np.array([0, 1]),
        items=np.array([0], dtype=np.uint32),
        ts=np.array([1000.0]),
        weights=np.ones(1, dtype=np.float32),
        offsets=np.array([0]),
    )
    store.commit([b"u"], engine.process(store, [b"u"], cols, now=1000.0))

    class Counting(MemoryWindowStore):
        ranges = 0

        def read_ranges(self, users, requests):  # type: ignore[no-untyped-def]
            Counting.ranges += len(requests)
            return super().read_ranges(users, requests)

    counting = Counting()
    counting.heads, counting.events = store.heads, store.events
    result = engine.process(counting, [b"u"], EventColumns.empty(1), now=1010.0)
    assert Counting.ranges == 0 and not result.changed[0]
    result = engine.process(counting, [b"u"], EventColumns.empty(1), now=1000.0 + 120)
    assert Counting.ranges == 1 and result.changed[0]  # the event entered after the lag


def test_changed_flags_exactly_the_users_whose_window_moved() -> None:
    spec = WindowSpec(window=10, lag=0, bucket=1)
    vectors = np.eye(3, dtype=np.float32)
    store = MemoryWindowStore()
    cols = EventColumns(
        seg=np.array([0, 1, 2, 2]),
        items=np.array([0, 1], dtype=np.uint32),
        ts=np.array([99.5, 150.0]),
        weights=np.ones(2, dtype=np.float32),
        offsets=np.array([5, 6]),
    )
    result = WindowEngine(spec, vectors).process(store, [b"a", b"b", b"c"], cols, now=100.0)
    # a: in window; b: pending (future) -> no change yet; c: nothing at all
    assert result.changed.tolist() == [True, False, False]
    assert result.outcome.tolist() == [APPLIED, PENDING]
    assert result.heads[2] is None and result.heads[1] is not None
    assert result.next_change.tolist() == [110, 151, NEVER]


def test_heads_of_another_basis_are_refused() -> None:
    spec = WindowSpec(window=10, lag=0, bucket=1)
    store = MemoryWindowStore()
    store.heads[b"u"] = LaggedWindow(spec, 3).to_bytes()
    with pytest.raises(StateCodecError, match="fresh --state-dir"):
        WindowEngine(spec, np.eye(2, dtype=np.float32)).process(
            store, [b"u"], EventColumns.empty(1), 1.0
        )


def test_stray_records_below_the_window_are_deleted_without_touching_the_sums() -> None:
    """An interrupted changelog restore can leave event records the head does not count;
    they are always older than the window (see the worker docs) and are swept away."""
    spec = WindowSpec(window=10, lag=0, bucket=1)
    vectors = np.eye(2, dtype=np.float32)
    store = MemoryWindowStore()
    engine = WindowEngine(spec, vectors)
    cols = EventColumns(
        seg=np.array([0, 2]),
        items=np.array([0, 1], dtype=np.uint32),
        ts=np.array([91.0, 95.0]),
        weights=np.ones(2, dtype=np.float32),
        offsets=np.array([6, 7]),
    )
    store.commit([b"u"], engine.process(store, [b"u"], cols, now=100.0))
    store.events[b"u"].insert(0, (80, 3, 0, 1.0))  # stray: bucket 80 < window start 90
    result = engine.process(store, [b"u"], EventColumns.empty(1), now=103.0)  # 91 leaves
    store.commit([b"u"], result)
    assert store.events[b"u"] == [(95, 7, 1, 1.0)]
    head = parse_heads([result.heads[0]], 2, decayed=False)
    assert head.n[0] == 1 and head.count[0] == 1
    np.testing.assert_array_equal(result.summary.sums[0], [0.0, 1.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_warm_up_compiles_exactly_what_a_batch_then_runs(dtype: type[np.generic]) -> None:
    """The worker warms the engine before it reports ready: the first batch after that must
    find its kernel variant already loaded (no compile in the batch)."""
    from lte_core import compensated_kernels  # noqa: PLC0415 - numba, loaded on first use

    spec = WindowSpec(window=10, lag=0, bucket=1)
    vectors = np.eye(3, dtype=dtype)
    vectors.flags.writeable = False  # as loaded from a basis file
    engine = WindowEngine(spec, vectors)
    engine.warm_up()
    kernel: Any = compensated_kernels.add_weighted_tree_sums  # a numba dispatcher
    warmed = list(kernel.signatures)
    cols = EventColumns(
        seg=np.array([0, 2]),
        items=np.array([0, 2], dtype=np.uint32),
        ts=np.array([99.5, 99.0]),
        weights=np.ones(2, dtype=np.float32),
        offsets=np.array([5, 6]),
    )
    result = engine.process(MemoryWindowStore(), [b"a"], cols, now=100.0)
    assert result.changed.tolist() == [True]
    assert list(kernel.signatures) == warmed
