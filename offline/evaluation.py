"""Offline evaluation of encoders as next-item retrievers, on a time split.

At every evaluation clock ``T`` after the split, each user with a non-empty window and at
least one new item in ``[T, T + H)`` is one case. A method scores every item; the items the
user had interacted with before ``T`` are removed from the candidates; Recall@K and NDCG@K
are computed against the new items. Content methods score by the dot product of the item
content vector with the LTE (what a recommender would do with the LTE alone); the
``popularity`` baseline scores by the number of interactions before ``T`` (no LTE).

All methods and lags are scored on the *same* cases: those whose window is non-empty under
every lag evaluated, so differences are paired. The relative NDCG
difference to ``mean`` comes with a 95% bootstrap interval that resamples users (a user's
cases at several clocks are not independent).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from lte_core.basis import BasisArtifact
from lte_core.duration import format_duration
from lte_core.encoders import EncoderSpec, build_encoder
from lte_core.errors import ConfigError
from lte_core.window import WindowSpec
from offline.training_examples import (
    TARGETS_AFTER_CLOCK,
    Examples,
    ExampleSpec,
    IndexedLog,
    Ragged,
    build_examples,
    clock_grid,
)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
POPULARITY = "popularity"
_CELLS_PER_CHUNK = 1 << 22


def ranking_metrics(
    scores: F64, targets: Ragged, seen: Ragged, ks: Sequence[int]
) -> dict[str, F64]:
    """Per case ``recall@k`` (hits / new items) and ``ndcg@k`` (binary gains, ideal DCG of
    ``min(|targets|, k)`` hits). Seen items are never ranked; ties go to the lower item row."""
    m, n = scores.shape
    kmax = max(ks)
    discount = 1.0 / np.log2(np.arange(2, kmax + 2))
    ideal = np.cumsum(discount)
    n_targets = targets.lengths()
    if (n_targets == 0).any():
        raise ValueError("every case needs at least one target item")
    out = {f"{name}@{k}": np.zeros(m) for k in ks for name in ("recall", "ndcg")}
    rows = max(1, _CELLS_PER_CHUNK // max(n, 1))
    for lo in range(0, m, rows):
        hi = min(lo + rows, m)
        idx = np.arange(lo, hi, dtype=np.int64)
        block = np.array(scores[lo:hi], dtype=np.float64)
        seen_part, target_part = seen.take(idx), targets.take(idx)
        block[seen_part.owners(), seen_part.values] = -np.inf
        top = np.argsort(-block, axis=1, kind="stable")[:, :kmax]
        relevant = np.zeros(block.shape, dtype=bool)
        relevant[target_part.owners(), target_part.values] = True
        hits = np.zeros((hi - lo, kmax))
        hits[:, : top.shape[1]] = np.take_along_axis(relevant, top, axis=1)
        for k in ks:
            found = hits[:, :k]
            out[f"recall@{k}"][lo:hi] = found.sum(axis=1) / n_targets[lo:hi]
            best = ideal[np.minimum(n_targets[lo:hi], k) - 1]
            out[f"ndcg@{k}"][lo:hi] = (found * discount[:k]).sum(axis=1) / best
    return out


def popularity_scores(log: IndexedLog, clocks: F64) -> F64:
    """Row ``i``: how often each item was interacted with before ``clocks[i]``."""
    order = np.argsort(log.ts, kind="stable")
    ts, items = log.ts[order], log.item[order]
    distinct, inverse = np.unique(clocks, return_inverse=True)
    per_clock = np.stack(
        [
            np.bincount(items[: np.searchsorted(ts, t, side="left")], minlength=log.n_items)
            for t in distinct.tolist()
        ]
    ).astype(np.float64)
    return per_clock[inverse]


@dataclass(frozen=True, slots=True)
class EvaluationSetup:
    window: int
    bucket: int
    lags: tuple[int, ...]
    horizon: int
    split_at: float
    every: int
    ks: tuple[int, ...] = (10, 20)
    bootstrap: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.lags:
            raise ConfigError("--lag: give at least one lag")
        if not self.ks or min(self.ks) < 1:
            raise ConfigError("--top-k: every K must be at least 1")

    @property
    def reference_metric(self) -> str:
        return f"ndcg@{min(self.ks)}"


@dataclass(frozen=True, slots=True)
class Comparison:
    """Relative difference of the reference metric to another method on the same cases,
    with a 95% user-bootstrap interval."""

    relative: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.relative:+.1%} [{self.low:+.1%}, {self.high:+.1%}]"


@dataclass(frozen=True, slots=True)
class EvaluationRow:
    method: str
    lag: int | None
    metrics: dict[str, float]
    #: Against ``mean`` at the same lag and against ``popularity``, for content methods.
    vs_mean: Comparison | None = None
    vs_popularity: Comparison | None = None


@dataclass(frozen=True, slots=True)
class EvaluationReport:
    setup: EvaluationSetup
    rows: list[EvaluationRow]
    cases: int
    users: int
    clocks: list[float]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        s = self.setup
        return {
            "setup": {
                "window": s.window,
                "bucket": s.bucket,
                "lags": list(s.lags),
                "horizon": s.horizon,
                "split_at": s.split_at,
                "every": s.every,
                "ks": list(s.ks),
                "bootstrap": s.bootstrap,
                "seed": s.seed,
            },
            "cases": self.cases,
            "users": self.users,
            "clocks": self.clocks,
            "notes": self.notes,
            "rows": [
                {
                    "method": r.method,
                    "lag": r.lag,
                    **r.metrics,
                    "vs_mean": _comparison_json(r.vs_mean),
                    "vs_popularity": _comparison_json(r.vs_popularity),
                }
                for r in self.rows
            ],
        }

    def table(self) -> str:
        s = self.setup
        names = [f"{m}@{k}" for m in ("recall", "ndcg") for k in s.ks]
        header = [
            "method",
            "lag",
            *names,
            f"{s.reference_metric} vs mean (95% CI)",
            f"{s.reference_metric} vs popularity (95% CI)",
        ]
        lines = []
        for r in self.rows:
            lag = "-" if r.lag is None else format_duration(r.lag)
            lines.append(
                [
                    r.method,
                    lag,
                    *(f"{r.metrics[n]:.4f}" for n in names),
                    str(r.vs_mean or ""),
                    str(r.vs_popularity or ""),
                ]
            )
        widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
        out = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
        out.append("-|-".join("-" * w for w in widths))
        out.extend(
            " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines
        )
        return "\n".join(out)


def _codes(examples: Examples, n_users: int) -> I64:
    """One integer per (clock, user) case; clocks are whole seconds on bucket edges."""
    return examples.clock.astype(np.int64) * n_users + examples.user


def _common(per_lag: dict[int, Examples], n_users: int) -> dict[int, Examples]:
    """The cases present under every lag, in the same order for each."""
    codes = {lag: _codes(ex, n_users) for lag, ex in per_lag.items()}
    shared = None
    for c in codes.values():
        shared = c if shared is None else np.intersect1d(shared, c)
    assert shared is not None
    return {
        lag: ex.take(np.flatnonzero(np.isin(codes[lag], shared))) for lag, ex in per_lag.items()
    }


def _comparison_json(c: Comparison | None) -> dict[str, float] | None:
    return None if c is None else {"relative": c.relative, "low": c.low, "high": c.high}


def user_bootstrap(users: I64, method: F64, reference: F64, rounds: int, seed: int) -> Comparison:
    """``Σ method / Σ reference - 1`` and its 95% interval, resampling users with
    replacement (all of a user's cases go together)."""
    distinct, inverse = np.unique(users, return_inverse=True)
    per_user_m = np.bincount(inverse, weights=method, minlength=len(distinct))
    per_user_r = np.bincount(inverse, weights=reference, minlength=len(distinct))
    point = float(per_user_m.sum() / per_user_r.sum() - 1.0)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(distinct), (rounds, len(distinct)))
    weights = np.stack([np.bincount(d, minlength=len(distinct)) for d in draws]).astype(float)
    ratios = (weights @ per_user_m) / np.maximum(weights @ per_user_r, 1e-300) - 1.0
    lo, hi = np.quantile(ratios, [0.025, 0.975])
    return Comparison(point, float(lo), float(hi))


def evaluate(
    log: IndexedLog,
    basis: BasisArtifact,
    setup: EvaluationSetup,
    encoders: Sequence[EncoderSpec],
) -> EvaluationReport:
    """Score popularity and every encoder under every lag on the common cases."""
    built = {spec: build_encoder(spec, basis) for spec in encoders}
    notes = _check_no_leak(built.values(), setup.split_at)
    clocks = clock_grid(setup.split_at, log.last_ts - setup.horizon, setup.every, setup.bucket)
    if len(clocks) == 0:
        raise ConfigError(
            "--split-at: no evaluation clock fits between the split and the end of the log "
            f"minus the horizon ({format_duration(setup.horizon)})"
        )
    specs = {
        lag: ExampleSpec(
            WindowSpec(setup.window, lag, setup.bucket), setup.horizon, TARGETS_AFTER_CLOCK
        )
        for lag in setup.lags
    }
    n_users = len(log.user_ids)
    base = _common(
        {lag: build_examples(log, basis.item_vectors, sp, clocks) for lag, sp in specs.items()},
        n_users,
    )
    first = base[setup.lags[0]]
    if len(first) == 0:
        raise ConfigError(
            "no evaluation cases: no user has a window and new items after --split-at"
        )
    items = basis.item_vectors.astype(np.float64)
    ref = setup.reference_metric
    popular = ranking_metrics(
        popularity_scores(log, first.clock), first.targets, first.seen, setup.ks
    )
    rows = [EvaluationRow(POPULARITY, None, _means(popular))]
    for lag, sp in specs.items():
        cases = base[lag]
        keep = _codes(cases, n_users)
        per_case: dict[str, dict[str, F64]] = {}
        for spec, encoder in built.items():
            summary = cases.summary
            if spec.kind == "recency":
                decayed = build_examples(
                    log, basis.item_vectors, sp, clocks, half_life=spec.half_life
                )
                rows_kept = np.flatnonzero(np.isin(_codes(decayed, n_users), keep))
                summary = decayed.take(rows_kept).summary
            vectors = encoder.encode(summary).vectors
            per_case[encoder.name] = ranking_metrics(
                vectors @ items.T, cases.targets, cases.seen, setup.ks
            )
        mean = per_case.get("mean")
        for name, metrics in per_case.items():
            rows.append(
                EvaluationRow(
                    name,
                    lag,
                    _means(metrics),
                    vs_mean=None
                    if mean is None or name == "mean"
                    else user_bootstrap(
                        cases.user, metrics[ref], mean[ref], setup.bootstrap, setup.seed
                    ),
                    vs_popularity=user_bootstrap(
                        cases.user, metrics[ref], popular[ref], setup.bootstrap, setup.seed
                    ),
                )
            )
    return EvaluationReport(
        setup=setup,
        rows=rows,
        cases=len(first),
        users=len(np.unique(first.user)),
        clocks=np.unique(first.clock).tolist(),
        notes=notes,
    )


def _means(metrics: dict[str, F64]) -> dict[str, float]:
    return {name: float(values.mean()) for name, values in metrics.items()}


def _check_no_leak(encoders: Any, split_at: float) -> list[str]:
    """An encoder trained on events after the split would be graded on what it memorised."""
    from lte_core.autoencoder import AutoencoderEncoder  # noqa: PLC0415 - safetensors

    notes = []
    for encoder in encoders:
        if not isinstance(encoder, AutoencoderEncoder):
            continue
        until = encoder.artifact.config.get("data", {}).get("until")
        if until is None or float(until) > split_at:
            raise ConfigError(
                f"{encoder.name} was trained on events up to {until}, after --split-at "
                f"{split_at}: its scores would leak the test period; train it with "
                f"`lte train-encoder --until {split_at:.0f}`"
            )
        lag = encoder.artifact.config.get("window", {}).get("lag")
        notes.append(f"{encoder.name}: trained on events before {until}, lag {lag}s")
    return notes
