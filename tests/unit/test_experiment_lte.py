"""The experiment's LTEs: the point-in-time path against a brute-force oracle, the item-count
re-timing, and the leakage guard (DESIGN 3.5b) on generated histories."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lte_core.basis import BasisArtifact
from lte_core.encoders import EncoderSpec
from lte_core.window import WindowSpec
from offline.datasets import InteractionLog
from offline.experiment.lte_features import LeakageError, LTERequest, lte_features
from offline.experiment.runner import ExperimentSettings, LTESource, prepare
from offline.experiment.sequences import Histories, leave_one_out, training_chunks
from offline.experiment.variants import VARIANTS
from offline.snapshot import point_in_time
from tests.oracle import Ev, Spec, in_window, weighted_sum


def _basis(n_items: int, d: int = 4, seed: int = 0) -> BasisArtifact:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n_items, d)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return BasisArtifact.build([f"i{i}" for i in range(n_items)], v)


def _log(lengths: list[int], n_items: int, seed: int, *, tied: bool) -> InteractionLog:
    """Users interleaved in file order; with ``tied`` many events share a timestamp."""
    rng = np.random.default_rng(seed)
    users, items, ts = [], [], []
    for u, n in enumerate(lengths):
        t = 1000.0
        for _ in range(n):
            t += 0.0 if tied and rng.random() < 0.5 else float(rng.integers(1, 4))
            users.append(f"u{u}")
            items.append(f"i{rng.integers(0, n_items)}")
            ts.append(t)
    order = rng.permutation(len(ts))
    return InteractionLog(
        user_ids=np.asarray(users)[order],
        item_ids=np.asarray(items)[order],
        ts=np.asarray(ts, dtype=np.float64)[order],
        weights=np.ones(len(ts)),
    )


@settings(max_examples=40)
@given(
    seed=st.integers(0, 10_000),
    window=st.integers(1, 6),
    lag=st.integers(0, 5),
    bucket=st.sampled_from([1, 2, 3]),
    queries=st.lists(st.tuples(st.integers(0, 3), st.floats(990, 1100)), min_size=1, max_size=12),
)
def test_point_in_time_equals_the_brute_force_window_mean(
    seed: int, window: int, lag: int, bucket: int, queries: list[tuple[int, float]]
) -> None:
    basis = _basis(6, seed=seed)
    log = _log([5, 9, 0, 14], 6, seed, tied=True)
    spec = WindowSpec(window * bucket, lag, bucket)
    users = [f"u{u}" for u, _ in queries]
    clocks = [t for _, t in queries]
    snap = point_in_time(
        log,
        np.array(users, dtype=np.str_),
        np.array(clocks, dtype=np.float64),
        basis=basis,
        window=spec,
        encoder=EncoderSpec("mean"),
    )
    oracle_spec = Spec(spec.window, spec.lag, spec.bucket)
    for i, (user, clock) in enumerate(zip(users, clocks, strict=True)):
        mine = log.user_ids == user
        events = [
            Ev(int(item[1:]), float(t), 1.0)
            for item, t in zip(log.item_ids[mine], log.ts[mine], strict=True)
        ]
        inside = in_window(oracle_spec, clock, events)
        assert snap.n_events[i] == len(inside)
        if inside:
            total, weight = weighted_sum(inside, basis.item_vectors)
            np.testing.assert_allclose(snap.vectors[i], total / weight, atol=1e-5)
        else:
            assert np.isnan(snap.vectors[i]).all()


def test_experiment_ltes_are_the_item_windows_before_the_input() -> None:
    """Every LTE the model reads (training chunks, validation and test cases) equals the
    mean of the item vectors at positions ``[start - L - W, start - L)`` of the user's
    history ordered by (time, file order): recomputed here from the raw log."""
    basis = _basis(12, seed=3)
    log = _log([30, 3, 45, 12], 12, seed=5, tied=True)
    s = ExperimentSettings(max_len=4, window_items=7, lag_items=2)
    histories = Histories.from_log(log, basis)
    split = leave_one_out(histories)
    data = prepare(histories, split, VARIANTS["prefix_lagged"], LTESource(histories, basis, s))
    vectors = basis.item_vectors.astype(np.float64)

    def ordered(user: str) -> list[int]:
        rows = [i for i in range(len(log)) if log.user_ids[i] == user]
        rows.sort(key=lambda i: (log.ts[i], i))
        return [int(log.item_ids[i][1:]) for i in rows]

    def expect(user: str, first: int) -> np.ndarray | None:
        items = ordered(user)[max(0, first - 2 - 7) : max(0, first - 2)]
        return vectors[items].mean(axis=0) if items else None

    chunks = training_chunks(histories, split, s.max_len)
    checked = 0
    for j in range(len(chunks)):
        want = expect(str(histories.user_ids[chunks.user[j]]), int(chunks.start[j]))
        assert data.train.has_lte is not None and data.train.lte is not None
        assert data.train.has_lte[j] == (want is not None)
        if want is not None:
            np.testing.assert_allclose(data.train.lte[j], want, atol=1e-5)
            checked += 1
    for cases, at in ((data.validation, split.val_at), (data.test, split.test_at)):
        for j, u in enumerate(cases.user.tolist()):
            want = expect(str(histories.user_ids[u]), max(0, int(at[u]) - s.max_len))
            assert cases.inputs.lte is not None
            if want is not None:
                np.testing.assert_allclose(cases.inputs.lte[j], want, atol=1e-5)
                checked += 1
    assert checked > 20


@settings(max_examples=40)
@given(
    lengths=st.lists(st.integers(0, 40), min_size=1, max_size=6),
    max_len=st.integers(1, 8),
    window=st.integers(1, 30),
    lag=st.integers(0, 4),
    seed=st.integers(0, 10_000),
)
def test_leakage_guard_on_generated_histories(
    lengths: list[int], max_len: int, window: int, lag: int, seed: int
) -> None:
    """Lagged LTEs (taken at the first input position) end at or before it, and pass the
    guard; LTEs taken at the prediction position are refused exactly when their window
    reaches into the input."""
    basis = _basis(5, seed=seed)
    histories = Histories.from_log(_log(lengths, 5, seed, tied=True), basis)
    split = leave_one_out(histories)
    chunks = training_chunks(histories, split, max_len)
    if len(chunks) == 0:
        return
    s = ExperimentSettings(max_len=max_len, window_items=window, lag_items=lag)
    source = LTESource(histories, basis, s)
    request = LTERequest(window, lag, EncoderSpec("mean"))
    users = histories.user_ids[chunks.user]
    lagged = lte_features(
        source.log, users, chunks.start, chunks.start, request=request, basis=basis
    )
    assert (lagged.window_end <= chunks.start).all()
    assert (lagged.window_end == chunks.start - lag).all()
    leaks = bool((chunks.end - lag > chunks.start).any())
    if leaks:
        with pytest.raises(LeakageError):
            lte_features(source.log, users, chunks.end, chunks.start, request=request, basis=basis)
    else:
        lte_features(source.log, users, chunks.end, chunks.start, request=request, basis=basis)
    shown = lte_features(
        source.log, users, chunks.end, chunks.start, request=request, basis=basis, allow_leak=True
    )
    assert (shown.window_end == chunks.end - lag).all()
