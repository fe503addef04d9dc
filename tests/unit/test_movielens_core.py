"""The whole ML-100K log through the window state, checked for all 943 users."""

from __future__ import annotations

from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lte_core.encoders import MeanEncoder
from lte_core.state import LaggedWindow
from lte_core.window import WindowSpec
from offline.datasets import load_movielens

DAY = 86400


@pytest.mark.dataset
def test_every_user_matches_the_oracle_at_several_clock_points(ml100k: Path) -> None:
    ml = load_movielens(ml100k)
    art = ml.basis()
    vectors = art.item_vectors
    log = ml.log.sorted_by_time()
    n = len(log)
    assert n == 100_000
    # Realistic disorder: events arrive shuffled within blocks of 500 (minutes to hours).
    rng = np.random.default_rng(7)
    order = np.concatenate(
        [rng.permutation(np.arange(i, min(i + 500, n))) for i in range(0, n, 500)]
    )
    # ...and 2% are delivered very late (at the end of the stream): many of those are late.
    delayed = rng.choice(n, size=2_000, replace=False)
    order = np.concatenate([np.delete(order, delayed), order[delayed]])
    users, items = log.user_ids[order], art.rows_of(log.item_ids[order])
    ts = log.ts[order]
    assert (items >= 0).all()
    spec = WindowSpec(window=60 * DAY, lag=14 * DAY, bucket=DAY)
    exact_bucket = np.array([int(Fraction(t) // DAY) for t in ts])

    states: dict[str, LaggedWindow] = {}
    accepted: dict[str, list[int]] = defaultdict(list)
    clock = -np.inf
    late_seen = 0

    def oracle_check(now: float) -> None:
        end = int((Fraction(now) - spec.lag) // DAY)
        start = end - spec.n_buckets
        encoder = MeanEncoder(art)
        checked = 0
        for user, state in states.items():
            idx = np.asarray(accepted[user], dtype=np.int64)
            inside = idx[(exact_bucket[idx] >= start) & (exact_bucket[idx] < end)]
            state.advance(now, vectors)
            assert state.count == len(inside), user
            if len(inside):
                mean = vectors[items[inside]].astype(np.float64).mean(axis=0)
                got = encoder.encode(state.summary()).vectors[0]
                assert np.abs(got - mean).max() <= 1e-5, user
            checked += 1
        assert checked == len(states)

    checkpoints = {20_000, 50_000, 80_000}
    for lo in range(0, n, 5_000):
        sl = slice(lo, lo + 5_000)
        clock = max(clock, float(ts[sl].max()))
        end = int((Fraction(clock) - spec.lag) // DAY)
        by_user: dict[str, list[int]] = defaultdict(list)
        for i in range(lo, min(lo + 5_000, n)):
            by_user[users[i]].append(i)
        for user, rows in by_user.items():
            idx = np.asarray(rows)
            state = states.setdefault(user, LaggedWindow(spec, art.d))
            outcome = state.apply(
                items[idx], ts[idx], np.ones(len(idx)), vectors, clock, offsets=idx
            )
            on_time = idx[exact_bucket[idx] >= end - spec.n_buckets]
            assert outcome.late == len(idx) - len(on_time)
            late_seen += outcome.late
            accepted[user].extend(on_time.tolist())
            if lo == 40_000:  # a redelivery of the same batch is a no-op
                again = state.apply(
                    items[idx], ts[idx], np.ones(len(idx)), vectors, clock, offsets=idx
                )
                assert again.duplicate == len(idx)
        if lo + 5_000 in checkpoints:
            oracle_check(clock)
    assert len(states) == 943
    # Bytes round trip, then silent time: windows slide and finally empty.
    states = {u: LaggedWindow.from_bytes(s.to_bytes(), spec, art.d) for u, s in states.items()}
    for later in (clock + 20 * DAY, clock + 50 * DAY, clock + 80 * DAY):
        oracle_check(later)
    assert all(s.is_empty for s in states.values())
    assert late_seen > 0  # the disorder produced late events, and they were judged exactly
