"""Per-update and population drift (serving/drift.py) against from-scratch oracles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from lte_core.errors import ConfigError
from lte_core.update import LTEUpdate
from serving.drift import PopulationDrift, cosine_distance, cosine_distances, load_reference
from serving.metrics import RefresherMetrics
from serving.online_store import StoredLTE

START = 1000.0


def test_cosine_distance() -> None:
    a = np.array([1.0, 0.0], np.float32)
    assert cosine_distance(a, a) == 0.0
    assert cosine_distance(a, -a) == 2.0
    assert cosine_distance(a, np.array([0.0, 3.0], np.float32)) == pytest.approx(1.0)
    assert cosine_distance(a, np.zeros(2, np.float32)) is None
    assert cosine_distance(a, np.ones(3, np.float32)) is None


@given(
    st.lists(
        st.tuples(st.integers(1, 4), st.integers(0, 2**32 - 1), st.booleans()),
        max_size=20,
    )
)
def test_cosine_distances_of_a_batch_are_those_of_each_pair(
    specs: list[tuple[int, int, bool]],
) -> None:
    pairs = []
    for d, seed, zero in specs:
        rng = np.random.default_rng(seed)
        a = rng.standard_normal(d).astype(np.float32)
        b = np.zeros(d, np.float32) if zero else rng.standard_normal(d).astype(np.float32)
        pairs.append((a, b if seed % 5 else rng.standard_normal(d + 1).astype(np.float32)))
    one_by_one = [c for a, b in pairs if (c := cosine_distance(a, b)) is not None]
    assert sorted(cosine_distances(pairs)) == pytest.approx(sorted(one_by_one), abs=1e-12)


def _update(user: str, vector: list[float] | None) -> LTEUpdate:
    vec = None if vector is None else np.array(vector, np.float32)
    return LTEUpdate(
        user, "b", "e", 1.0, 0.0, 1.0, 0 if vec is None else 1, 1.0, vec, vec, 1.0, 1.0
    )


vectors = st.lists(st.integers(-3, 3).map(float), min_size=3, max_size=3)
writes = st.lists(
    st.tuples(st.sampled_from("abcdef"), st.none() | vectors), min_size=1, max_size=60
)


@given(
    before=st.dictionaries(st.sampled_from("abcdef"), vectors),
    stream=writes,
    restart_at=st.integers(0, 60),
    reference_size=st.integers(1, 5),
)
def test_population_drift_matches_a_from_scratch_mean(
    before: dict[str, list[float]],
    stream: list[tuple[str, list[float] | None]],
    restart_at: int,
    reference_size: int,
) -> None:
    registry = CollectorRegistry()
    drift = PopulationDrift(
        RefresherMetrics.create(registry),
        pinned=None,
        reference_size=reference_size,
        started_at=START,
    )
    # Entries written before this refresher started are not its population.
    stored = {u: StoredLTE(_update(u, v), START - 50) for u, v in before.items()}
    since = START
    reference: list[np.ndarray] = []
    for step, (user, vector) in enumerate(stream):
        now = START + 1 + step
        if step == restart_at:
            since = now - 0.5
            drift.restart(since)
        update = _update(user, vector)
        drift.observe(update, stored.get(user))
        stored[user] = StoredLTE(update, now)
        if update.vector is not None:
            reference.append(update.vector.astype(np.float64))
    drift.publish()

    population = [
        e.update.vector
        for e in stored.values()
        if e.stored_at >= since and e.update.vector is not None
    ]
    labels = {"basis_version": "b", "encoder": "e"}
    users = registry.get_sample_value("lte_population_users", labels)
    assert users == len(population)
    gauge = registry.get_sample_value("lte_population_drift", labels)
    # 1 - cos(population mean, reference mean), from scratch; no value at all while the
    # reference is incomplete, the population empty, or either mean the zero vector.
    expected = None
    if len(reference) >= reference_size and population:
        mean = np.mean(np.array(population, np.float64), axis=0)
        ref = np.mean(np.array(reference[:reference_size]), axis=0)
        norms = float(np.sqrt(mean @ mean) * np.sqrt(ref @ ref))
        if norms > 0:
            expected = min(2.0, max(0.0, 1.0 - float(mean @ ref) / norms))
    if expected is None:
        assert gauge is None
    else:
        assert gauge == pytest.approx(expected, abs=1e-9)


def test_a_pinned_reference_is_used_for_vectors_of_its_dimension(tmp_path: Path) -> None:
    path = tmp_path / "ref.npy"
    np.save(path, np.array([0.0, 1.0, 0.0]))
    registry = CollectorRegistry()
    drift = PopulationDrift(
        RefresherMetrics.create(registry),
        pinned=load_reference(path),
        reference_size=1000,
        started_at=START,
    )
    drift.observe(_update("a", [1.0, 0.0, 0.0]), None)
    drift.observe(_update("b", [1.0, 0.0, 0.0]), None)
    drift.publish()
    labels = {"basis_version": "b", "encoder": "e"}
    assert registry.get_sample_value("lte_population_drift", labels) == pytest.approx(1.0)
    assert registry.get_sample_value("lte_population_users", labels) == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (np.array([[1.0, 2.0]]), "1-D"),
        (np.array([np.nan, 1.0]), "finite"),
        (np.zeros(3), "not all zero"),
        (np.array(["a", "b"]), "numeric"),
        (np.array([{"x": 1}], dtype=object), "cannot read"),
    ],
)
def test_bad_reference_files_are_refused(tmp_path: Path, content: np.ndarray, message: str) -> None:
    path = tmp_path / "ref.npy"
    np.save(path, content, allow_pickle=True)
    with pytest.raises(ConfigError, match="--drift-reference") as caught:
        load_reference(path)
    assert message in str(caught.value)
