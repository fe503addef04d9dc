"""``lte worker --encoder ae:<dir>`` on the real broker: every emitted LTE equals offline
inference of the AE on the same windows, rebuilt independently with the one-user state."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lte_core.autoencoder import AutoencoderArtifact, AutoencoderEncoder, AutoencoderWeights
from lte_core.basis import BasisArtifact
from lte_core.encoders import MeanEncoder
from lte_core.state import LaggedWindow
from lte_runtime.embedded_broker import EmbeddedBroker
from offline.datasets import InteractionLog, MovieLens
from tests.integration.harness import LteProcess, unique, wait_until
from tests.integration.test_worker import DAY, SPEC, Setup

pytestmark = pytest.mark.dataset


@pytest.fixture(scope="module")
def pca_basis(movielens: MovieLens, tmp_path_factory: pytest.TempPathFactory) -> BasisArtifact:
    """K < d, so coefficients and the span property say something."""
    directory = movielens.basis(k=48).save(tmp_path_factory.mktemp("pca") / "basis")
    return BasisArtifact.load(directory)


@pytest.fixture(scope="module")
def encoder_dir(pca_basis: BasisArtifact, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random but non-trivial weights: the point is the serving path, not the quality."""
    rng = np.random.default_rng(11)
    d, k, hidden = pca_basis.d, pca_basis.k, 32
    weights = AutoencoderWeights(
        hidden_weight=rng.normal(0, 0.3, (hidden, d + 1)).astype(np.float32),
        hidden_bias=rng.normal(0, 0.3, hidden).astype(np.float32),
        out_weight=rng.normal(0, 0.3, (k, hidden)).astype(np.float32),
        out_bias=rng.normal(0, 0.1, k).astype(np.float32),
    )
    artifact = AutoencoderArtifact.create(weights, {"basis_version": pca_basis.basis_version})
    return artifact.save(tmp_path_factory.mktemp("ae") / "encoder")


@pytest.fixture
def setup(
    broker: EmbeddedBroker, pca_basis: BasisArtifact, tmp_path: Path
) -> Iterator[tuple[Setup, list[LteProcess]]]:
    basis_dir = tmp_path / "basis"
    pca_basis.save(basis_dir)
    started: list[LteProcess] = []
    yield Setup(broker, basis_dir, tmp_path, unique("ae")), started
    for process in started:
        process.kill()


def offline_windows(
    log: InteractionLog, basis: BasisArtifact, clock: float
) -> dict[str, LaggedWindow]:
    """Each user's window at ``clock``, from the one-user reference state."""
    rows = basis.rows_of(log.item_ids.tolist())
    out = {}
    for user in np.unique(log.user_ids).tolist():
        mine = log.user_ids == user
        state = LaggedWindow(SPEC, basis.d)
        state.apply(rows[mine], log.ts[mine], log.weights[mine], basis.item_vectors, clock)
        out[user] = state
    return out


def assert_matches_offline(
    latest: dict[str, dict[str, Any]],
    windows: dict[str, LaggedWindow],
    encoder: AutoencoderEncoder,
    basis: BasisArtifact,
    clock: float,
) -> int:
    filled = [u for u, w in windows.items() if w.count > 0]
    assert filled, "no window holds events at this clock"
    expected = encoder.encode(_summaries(windows, filled))
    mean = MeanEncoder(basis).encode(_summaries(windows, filled))
    assert np.abs(expected.vectors - mean.vectors).max() > 0.05, "AE indistinguishable from mean"
    for i, user in enumerate(filled):
        doc = latest[user]
        assert doc["as_of"] == clock
        assert doc["encoder"] == encoder.name
        assert doc["basis_version"] == basis.basis_version
        assert doc["n_events"] == windows[user].count
        np.testing.assert_allclose(doc["coefficients"], expected.coefficients[i], atol=2e-5)
        np.testing.assert_allclose(doc["vector"], expected.vectors[i], atol=2e-5)
    for user, doc in latest.items():
        if windows[user].count == 0:
            assert doc["n_events"] == 0 and doc["vector"] is None
    return len(filled)


def _summaries(windows: dict[str, LaggedWindow], users: list[str]) -> Any:
    from lte_core.summary import WindowSummary  # noqa: PLC0415

    return WindowSummary.concat([windows[u].summary() for u in users])


def test_ae_worker_emits_offline_inference_on_the_same_windows(
    setup: tuple[Setup, list[LteProcess]],
    movielens: MovieLens,
    pca_basis: BasisArtifact,
    encoder_dir: Path,
) -> None:
    s, started = setup
    encoder = AutoencoderEncoder.load(encoder_dir, pca_basis)
    full = movielens.log.sorted_by_time()
    n = 25_000
    log = InteractionLog(full.user_ids[:n], full.item_ids[:n], full.ts[:n], full.weights[:n])
    t1 = float(log.ts.max()) + 15 * DAY + 0.5
    s.produce_log(log)
    flags = ("--encoder", f"ae:{encoder_dir}")
    worker = s.worker(t1, extra=flags)
    started.append(worker)
    worker.wait_ready()
    s.wait_all_committed()
    assert worker.stop() == 0
    checked = assert_matches_offline(
        s.latest(), offline_windows(log, pca_basis, t1), encoder, pca_basis, t1
    )
    assert checked > 100

    # Only the clock moves: the sweeper re-encodes every window that slid, with the AE too.
    t2 = t1 + 40 * DAY
    before = offline_windows(log, pca_basis, t1)
    after = offline_windows(log, pca_basis, t2)
    moved = {u for u in after if after[u].count != before[u].count}
    assert len(moved) > 50
    worker = s.worker(t2, extra=flags)
    started.append(worker)
    worker.wait_ready()
    wait_until(
        lambda: s.all_as_of(moved, t2), timeout=60, what="AE updates for every window that slid"
    )
    current: dict[str, dict[str, Any]] = {u: d for u, d in s.latest().items() if d["as_of"] == t2}
    assert moved <= set(current)
    for user, doc in current.items():
        assert doc["encoder"] == encoder.name
        assert doc["n_events"] == after[user].count
        if after[user].count == 0:
            assert doc["vector"] is None
            continue
        want = encoder.encode(after[user].summary())
        np.testing.assert_allclose(doc["vector"], want.vectors[0], atol=2e-5)
        np.testing.assert_allclose(doc["coefficients"], want.coefficients[0], atol=2e-5)
