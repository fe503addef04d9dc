"""Brute-force expectations for whole data sets, and the comparison with emitted updates."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from lte_core.basis import BasisArtifact
from lte_core.window import WindowSpec
from offline.datasets import InteractionLog


def window_means(
    log: InteractionLog, basis: BasisArtifact, spec: WindowSpec, clock: float
) -> dict[str, tuple[int, npt.NDArray[np.float64]]]:
    """Per user: events in the window at ``clock`` and their weighted mean, from scratch."""
    end = int((Fraction(clock) - spec.lag) // spec.bucket)
    start = end - spec.window // spec.bucket
    buckets = np.array([int(Fraction(t) // spec.bucket) for t in log.ts.tolist()])
    inside = (buckets >= start) & (buckets < end)
    rows = basis.rows_of(log.item_ids[inside])
    users = log.user_ids[inside]
    weights = log.weights[inside]
    out: dict[str, tuple[int, npt.NDArray[np.float64]]] = {}
    order = np.argsort(users, kind="stable")
    users, rows, weights = users[order], rows[order], weights[order]
    cuts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    for lo, hi in zip(cuts.tolist(), [*cuts[1:].tolist(), len(users)], strict=True):
        w = weights[lo:hi]
        vecs = basis.item_vectors[rows[lo:hi]].astype(np.float64)
        out[str(users[lo])] = (hi - lo, (w[:, None] * vecs).sum(0) / w.sum())
    return out


def assert_updates_match(
    latest: dict[str, dict[str, Any]],
    expected: dict[str, tuple[int, npt.NDArray[np.float64]]],
    *,
    as_of: float | None = None,
) -> None:
    """Every user with events in the window has a latest update with the exact count and a
    vector within 1e-5 of the oracle; every other user that has an update has an empty one."""
    missing = sorted(set(expected) - set(latest))
    assert not missing, f"{len(missing)} users have no update, e.g. {missing[:5]}"
    worst = 0.0
    for user, (n, mean) in expected.items():
        doc = latest[user]
        assert doc["n_events"] == n, f"user {user}: n_events {doc['n_events']} != {n}"
        got = np.asarray(doc["vector"], dtype=np.float64)
        worst = max(worst, float(np.abs(got - mean).max()))
        if as_of is not None:
            assert doc["as_of"] == as_of
    assert worst <= 1e-5, f"max abs difference {worst:.3g} > 1e-5"
    for user, doc in latest.items():
        if user not in expected:
            assert doc["n_events"] == 0 and doc["vector"] is None, (
                f"user {user} should have an empty window, has n_events={doc['n_events']}"
            )


def changed_users(
    before: dict[str, tuple[int, npt.NDArray[np.float64]]],
    after: dict[str, tuple[int, npt.NDArray[np.float64]]],
) -> set[str]:
    """Users whose window contents differ between two oracle snapshots (they must get an
    update when the clock moves from one to the other; the others must not need one)."""
    out = set()
    for user in set(before) | set(after):
        a, b = before.get(user), after.get(user)
        if a is None or b is None or a[0] != b[0] or not np.allclose(a[1], b[1], atol=1e-9):
            out.add(user)
    return out
