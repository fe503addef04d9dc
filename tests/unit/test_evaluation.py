"""Ranking metrics, baselines and the evaluation protocol against hand computations."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lte_core.autoencoder import AutoencoderArtifact, AutoencoderWeights
from lte_core.encoders import EncoderSpec, MeanEncoder
from lte_core.errors import ConfigError
from lte_core.window import WindowSpec
from offline.evaluation import (
    EvaluationSetup,
    evaluate,
    popularity_scores,
    ranking_metrics,
    user_bootstrap,
)
from offline.training_examples import (
    TARGETS_AFTER_CLOCK,
    ExampleSpec,
    IndexedLog,
    Ragged,
    build_examples,
)
from tests.unit.interaction_logs import DAY, T0, catalog, random_log


def _ragged(rows: list[list[int]]) -> Ragged:
    seg = np.cumsum([0, *map(len, rows)]).astype(np.int64)
    return Ragged(seg, np.asarray([v for r in rows for v in r], dtype=np.int64))


def test_metrics_by_hand() -> None:
    # Item order by score: 4, 3, 2, 1, 0. Item 3 is seen, so the ranking is 4, 2, 1, 0.
    scores = np.array([[0.0, 1.0, 2.0, 3.0, 4.0]])
    out = ranking_metrics(scores, _ragged([[1, 0]]), _ragged([[3]]), (1, 3))
    assert out["recall@1"][0] == 0.0
    assert out["recall@3"][0] == 0.5  # item 1 at rank 3
    assert out["ndcg@1"][0] == 0.0
    expected = (1 / math.log2(4)) / (1 / math.log2(2) + 1 / math.log2(3))
    assert out["ndcg@3"][0] == pytest.approx(expected)


def test_ties_go_to_the_lower_item() -> None:
    out = ranking_metrics(np.zeros((1, 4)), _ragged([[0]]), _ragged([[]]), (1,))
    assert out["ndcg@1"][0] == 1.0


@settings(max_examples=50)
@given(st.integers(0, 10_000), st.integers(1, 6), st.integers(5, 30))
def test_a_perfect_ranking_scores_one_and_every_metric_is_a_fraction(
    seed: int, m: int, n: int
) -> None:
    rng = np.random.default_rng(seed)
    targets, seen = [], []
    for _ in range(m):
        perm = rng.permutation(n)
        t = int(rng.integers(1, n // 2 + 1))
        s = int(rng.integers(0, n // 2))
        targets.append(perm[:t].tolist())
        seen.append(perm[t : t + s].tolist())
    perfect = np.zeros((m, n))
    for i, row in enumerate(targets):
        perfect[i, row] = 1.0 + rng.random(len(row))
    ks = (1, 5, 10)
    best = ranking_metrics(perfect, _ragged(targets), _ragged(seen), ks)
    noisy = ranking_metrics(rng.random((m, n)), _ragged(targets), _ragged(seen), ks)
    for i, row in enumerate(targets):
        for k in ks:
            assert best[f"ndcg@{k}"][i] == pytest.approx(1.0)
            assert best[f"recall@{k}"][i] == pytest.approx(min(k, len(row)) / len(row))
            assert 0.0 <= noisy[f"ndcg@{k}"][i] <= 1.0 + 1e-12
            assert 0.0 <= noisy[f"recall@{k}"][i] <= 1.0


def test_popularity_counts_only_the_past() -> None:
    basis = catalog(0, n_items=10)
    log = IndexedLog.from_log(random_log(0, basis, users=10, days=30), basis)
    clocks = np.array([T0 + 10 * DAY, T0 + 20 * DAY, T0 + 10 * DAY])
    got = popularity_scores(log, clocks)
    for row, clock in zip(got, clocks.tolist(), strict=True):
        expected = [np.count_nonzero((log.item == i) & (log.ts < clock)) for i in range(10)]
        assert row.tolist() == expected


def test_user_bootstrap_point_and_interval() -> None:
    users = np.array([0, 0, 1, 2, 2, 2])
    method = np.array([1.0, 0.5, 0.2, 0.0, 0.4, 0.9])
    reference = np.array([0.5, 0.5, 0.4, 0.1, 0.1, 0.4])
    c = user_bootstrap(users, method, reference, rounds=200, seed=0)
    assert c.relative == pytest.approx(method.sum() / reference.sum() - 1)
    assert c.low <= c.relative <= c.high


def _setup(split_at: float, lags: tuple[int, ...] = (0, 7 * DAY)) -> EvaluationSetup:
    return EvaluationSetup(
        window=60 * DAY,
        bucket=DAY,
        lags=lags,
        horizon=14 * DAY,
        split_at=split_at,
        every=3 * DAY,
        ks=(5, 10),
        bootstrap=50,
    )


def test_evaluate_scores_every_method_on_the_same_cases_by_hand() -> None:
    basis = catalog(2, n_items=30)
    log = IndexedLog.from_log(random_log(3, basis, users=60, days=150), basis)
    setup = _setup(T0 + 90 * DAY)
    specs = [EncoderSpec.parse("mean"), EncoderSpec.parse("recency:7d")]
    report = evaluate(log, basis, setup, specs)
    names = [(r.method, r.lag) for r in report.rows]
    assert names == [
        ("popularity", None),
        ("mean", 0),
        ("recency:1w", 0),
        ("mean", 7 * DAY),
        ("recency:1w", 7 * DAY),
    ]
    # Recompute the lagged mean row by hand: the cases are those with a window under both
    # lags, at bucket edges from split_at every 3d, with new items in the following 14 days.
    first = np.ceil((T0 + 90 * DAY) / DAY) * DAY
    clocks = np.arange(first, log.last_ts - 14 * DAY + 1, 3 * DAY)
    unlagged = build_examples(
        log,
        basis.item_vectors,
        ExampleSpec(WindowSpec(60 * DAY, 0, DAY), 14 * DAY, TARGETS_AFTER_CLOCK),
        clocks,
    )
    spec = ExampleSpec(WindowSpec(60 * DAY, 7 * DAY, DAY), 14 * DAY, TARGETS_AFTER_CLOCK)
    lagged = build_examples(log, basis.item_vectors, spec, clocks)
    both = set(unlagged.pairs()) & set(lagged.pairs())
    assert len(both) < len(lagged)  # some lagged windows are empty without the lag
    cases = lagged.take(np.array([i for i, key in enumerate(lagged.pairs()) if key in both]))
    assert report.cases == len(cases) > 20
    vectors = MeanEncoder(basis).encode(cases.summary).vectors
    ndcg = []
    for i in range(len(cases)):
        scores = basis.item_vectors.astype(np.float64) @ vectors[i]
        scores[cases.seen.row(i)] = -np.inf
        top = np.argsort(-scores, kind="stable")[:5]
        hits = np.isin(top, cases.targets.row(i))
        dcg = (hits / np.log2(np.arange(2, 7))).sum()
        ideal = (1 / np.log2(np.arange(2, 2 + min(5, len(cases.targets.row(i)))))).sum()
        ndcg.append(dcg / ideal)
    mean_row = report.rows[3]
    assert mean_row.metrics["ndcg@5"] == pytest.approx(float(np.mean(ndcg)))
    recency = report.rows[4]
    assert recency.vs_mean is not None and recency.vs_popularity is not None
    ratio = recency.metrics["ndcg@5"] / mean_row.metrics["ndcg@5"] - 1
    assert recency.vs_mean.relative == pytest.approx(ratio)
    doc = report.to_json()
    assert doc["cases"] == report.cases and len(doc["rows"]) == 5
    assert "ndcg@5 vs mean" in report.table()


def test_an_encoder_trained_after_the_split_is_refused(tmp_path: Path) -> None:
    basis = catalog(2, n_items=30)
    log = IndexedLog.from_log(random_log(3, basis, users=30, days=150), basis)
    split = T0 + 90 * DAY
    weights = AutoencoderWeights.mean_equivalent(basis.d, basis.k, hidden=4)
    for until, ok in ((split, True), (split + 1, False)):
        config = {"basis_version": basis.basis_version, "data": {"until": until}}
        directory = AutoencoderArtifact.create(weights, config).save(tmp_path / str(until))
        spec = EncoderSpec.parse(f"ae:{directory}")
        if ok:
            report = evaluate(log, basis, _setup(split, (0,)), [EncoderSpec("mean"), spec])
            # A zero output layer is the mean encoder: identical scores.
            assert report.rows[2].metrics == report.rows[1].metrics
        else:
            with pytest.raises(ConfigError, match="leak"):
                evaluate(log, basis, _setup(split, (0,)), [spec])
