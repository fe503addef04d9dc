"""Exactness over the whole admitted weight range ``[1e-6, 1e6]`` (DESIGN 3.2), with event
and clock times exactly on bucket edges and one ulp either side.

The engine and the one-user reference are both compared with the brute-force oracle
(:mod:`tests.oracle`: exact rational bucket membership, means from scratch), event by
event: outcome codes (so an event at the first instant of the window that is dropped as
``late`` fails), counts, and the mean to 1e-8 — a plain float64 running sum misses that by
≈1e-4 once a 1e6 event leaves a 1e-6 one behind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lte_core import compensated
from lte_core.compensated import dd_add
from lte_core.engine import LATE, EventColumns, WindowEngine
from lte_core.memory_store import MemoryWindowStore
from lte_core.state import LaggedWindow
from lte_core.window import WindowSpec
from tests import oracle, reference_sums
from tests.oracle import Ev

N_ITEMS = 6
W_MIN, W_MAX = 1e-6, 1e6
MEAN_ATOL = 1e-8


def f32(x: float) -> float:
    """The weight the state stores (float32), so the oracle sums the same numbers."""
    return float(np.float32(x))


#: a weight drawn log-uniformly over the admitted range, and both ends exactly
weights = st.one_of(
    st.floats(math.log10(W_MIN), math.log10(W_MAX)).map(lambda e: f32(10.0**e)),
    st.sampled_from([W_MIN, W_MAX]).map(f32),
).filter(lambda w: W_MIN * 0.999 <= w <= W_MAX * 1.001)

#: -1 / 0 / +1: one ulp below, exactly on, one ulp above a bucket edge
ulps = st.sampled_from([-1, 0, 1])


def nudge(t: float, ulp: int) -> float:
    if ulp < 0:
        return math.nextafter(t, -math.inf)
    if ulp > 0:
        return math.nextafter(t, math.inf)
    return t


@dataclass(frozen=True)
class Step:
    clock_edge: int  # window-end buckets to move the clock by (0: stay)
    clock_ulp: int
    events: tuple[tuple[int, int, int, int, float], ...]  # user, item, edge, ulp, weight


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[WindowSpec, int, np.ndarray, list[Step]]:
    bucket = draw(st.sampled_from([3, 60, 86400]))
    nb = draw(st.integers(1, 5))
    spec = WindowSpec(window=nb * bucket, lag=draw(st.integers(0, 2)) * bucket, bucket=bucket)
    users = draw(st.integers(1, 3))
    d = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    vectors = np.random.default_rng(seed).standard_normal((N_ITEMS, d)).astype(np.float32)
    # an edge relative to the current window: below start, start, inside, end, pending
    edges = st.sampled_from([-1, 0, 1, nb - 1, nb, nb + 1])
    steps = draw(
        st.lists(
            st.builds(
                Step,
                clock_edge=st.sampled_from([0, 0, 1, 2, nb, nb + 1, 3 * nb]),
                clock_ulp=ulps,
                events=st.lists(
                    st.tuples(
                        st.integers(0, users - 1), st.integers(0, N_ITEMS - 1), edges, ulps, weights
                    ),
                    max_size=6,
                ).map(tuple),
            ),
            min_size=1,
            max_size=10,
        )
    )
    return spec, users, vectors, steps


def _check_mean(got_sums: np.ndarray, got_w: float, inside: list[Ev], vectors: np.ndarray) -> None:
    if not inside:
        assert got_w == 0.0 and not got_sums.any()
        return
    want = oracle.weighted_mean(inside, vectors)
    np.testing.assert_allclose(got_sums / got_w, want, rtol=0, atol=MEAN_ATOL)


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_engine_and_reference_are_exact_over_the_whole_range_and_on_bucket_edges(
    scenario: tuple[WindowSpec, int, np.ndarray, list[Step]],
) -> None:
    spec, n_users, vectors, steps = scenario
    g = spec.bucket
    ospec = oracle.Spec(window=spec.window, lag=spec.lag, bucket=g)
    d = vectors.shape[1]
    keys = [f"u{u}".encode() for u in range(n_users)]
    engine = WindowEngine(spec, vectors)
    store = MemoryWindowStore()
    refs = [LaggedWindow(spec, d) for _ in range(n_users)]
    kept: list[list[Ev]] = [[] for _ in range(n_users)]  # every event not refused as late
    end = spec.end_bucket(1_700_000_000.0)
    clock, offset = float(end * g + spec.lag), 0
    for step in steps:
        end = spec.end_bucket(clock) + step.clock_edge
        clock = max(clock, nudge(float(end * g + spec.lag), step.clock_ulp))
        start, _ = oracle.bounds(ospec, clock)
        per_user: list[list[Ev]] = [[] for _ in range(n_users)]
        for u, item, edge, ulp, w in step.events:
            per_user[u].append(Ev(item, nudge(float((start + edge) * g), ulp), w, offset))
            offset += 1
        seg = np.zeros(n_users + 1, dtype=np.int64)
        seg[1:] = np.cumsum([len(e) for e in per_user])
        flat = [e for evs in per_user for e in evs]
        cols = EventColumns(
            seg=seg,
            items=np.array([e.item for e in flat], dtype=np.uint32),
            ts=np.array([e.ts for e in flat], dtype=np.float64),
            weights=np.array([e.weight for e in flat], dtype=np.float32),
            offsets=np.array([e.offset for e in flat], dtype=np.int64),
        )
        result = engine.process(store, keys, cols, clock)
        store.commit(keys, result)
        want_late = [oracle.is_late(ospec, clock, e) for e in flat]
        assert (result.outcome == LATE).tolist() == want_late
        for u in range(n_users):
            evs = per_user[u]
            out = refs[u].apply(
                [e.item for e in evs],
                [e.ts for e in evs],
                [e.weight for e in evs],
                vectors,
                clock,
                offsets=[e.offset for e in evs],
            )
            assert out.late == sum(oracle.is_late(ospec, clock, e) for e in evs)
            kept[u].extend(e for e in evs if not oracle.is_late(ospec, clock, e))
            inside = oracle.in_window(ospec, clock, kept[u])
            row = result.summary.rows(np.array([u]))
            assert int(row.counts[0]) == len(inside) == refs[u].count
            _check_mean(row.sums[0], float(row.weight_sums[0]), inside, vectors)
            _check_mean(refs[u].sum, refs[u].weight_sum, inside, vectors)
            if result.heads[u] is None:
                refs[u] = LaggedWindow(spec, d)  # the engine dropped an empty state; so do we
                kept[u] = []


def test_a_1e6_event_leaving_a_1e_6_event_behind_leaves_its_mean_exact() -> None:
    """The issue's case: a plain float64 running sum is off by ≈1e-4 here."""
    spec = WindowSpec(window=2 * 60, lag=0, bucket=60)
    vectors = np.array([[0.1, -0.3], [0.7, 0.2]], dtype=np.float32)
    engine, store = WindowEngine(spec, vectors), MemoryWindowStore()
    ref = LaggedWindow(spec, 2)
    t0 = 1_700_000_040.0  # bucket edge: 28333334 * 60
    cols = EventColumns(
        seg=np.array([0, 2]),
        items=np.array([0, 1], dtype=np.uint32),
        ts=np.array([t0 - 60.0, t0]),
        weights=np.array([W_MAX, W_MIN], dtype=np.float32),
        offsets=np.array([0, 1]),
    )
    now = t0 + 60.0  # both in the window
    store.commit([b"u"], engine.process(store, [b"u"], cols, now))
    ref.apply([0, 1], cols.ts, cols.weights, vectors, now, offsets=[0, 1])
    later = now + 60.0  # the 1e6 event leaves
    result = engine.process(store, [b"u"], EventColumns.empty(1), later)
    ref.advance(later, vectors)
    want = vectors[1].astype(np.float64)
    assert int(result.summary.counts[0]) == 1 == ref.count
    for sums, w in (
        (result.summary.sums[0], result.summary.weight_sums[0]),
        (ref.sum, ref.weight_sum),
    ):
        np.testing.assert_allclose(sums / w, want, rtol=0, atol=1e-12)


def tree_sum(rows: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """One segment's pairwise double-double tree, row by row: neighbours (0, 1), (2, 3), ...
    added, a lone last row carried up (what ``segment_sums`` promises, without the compiled
    loop's stack or the numpy reference's padded layout)."""
    while len(rows) > 1:
        paired = [dd_add(*rows[i], *rows[i + 1]) for i in range(0, len(rows) - 1, 2)]
        rows = paired + ([rows[-1]] if len(rows) % 2 else [])
    return rows[0]


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 70), min_size=1, max_size=12),
    columns=st.integers(1, 5),
    block=st.sampled_from([1, 8, 64, 1 << 18]),
    seed=st.integers(0, 2**32 - 1),
)
def test_segment_sums_are_the_pairwise_tree_of_each_segment_bit_for_bit(
    lengths: list[int], columns: int, block: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    # products of float32 weights over the whole range and float32 vectors, signed, with
    # exact cancellations (a term and its negation in one segment)
    w = np.array([f32(10.0**e) for e in rng.uniform(-6, 6, n)]) * rng.choice([-1.0, 1.0], n)
    terms = w[:, None] * rng.standard_normal((n, columns)).astype(np.float32)
    terms[1::3] = -terms[0:-1:3][: len(terms[1::3])]
    starts = np.r_[0, np.cumsum(lengths)[:-1]].astype(np.int64)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reference_sums, "BLOCK_ELEMENTS", block)  # blocks of one segment, too
        reference = reference_sums.segment_sums(terms, starts)
    compiled = compensated.segment_sums(terms, starts)
    for j, (first, length) in enumerate(zip(starts.tolist(), lengths, strict=True)):
        rows = [(terms[i], np.zeros(columns)) for i in range(first, first + length)]
        want_hi, want_lo = tree_sum(rows)
        for hi, lo in (reference, compiled):
            np.testing.assert_array_equal(hi[j], want_hi)
            np.testing.assert_array_equal(lo[j], want_lo)


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 40), min_size=1, max_size=8),
    d=st.integers(1, 4),
    block=st.sampled_from([1, 16, 1 << 18]),
    seed=st.integers(0, 2**32 - 1),
)
def test_reference_weighted_segment_sums_equal_the_sums_of_the_materialised_terms(
    lengths: list[int], d: int, block: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    table = rng.standard_normal((5, d)).astype(np.float32)
    rows = rng.integers(0, 5, n).astype(np.int64)
    w = np.array([f32(10.0**e) for e in rng.uniform(-6, 6, n)]) * rng.choice([-1.0, 1.0], n)
    terms = np.concatenate([w[:, None] * table[rows], w[:, None]], axis=1)
    starts = np.r_[0, np.cumsum(lengths)[:-1]].astype(np.int64)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reference_sums, "BLOCK_ELEMENTS", block)
        got = reference_sums.weighted_segment_sums(w, table, rows, starts)
        want = reference_sums.segment_sums(terms, starts)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
