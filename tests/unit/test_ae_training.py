"""Training the AE with torch on tiny logs (each run takes well under a second)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from lte_core.autoencoder import AutoencoderArtifact, AutoencoderEncoder
from lte_core.basis import BasisArtifact
from lte_core.window import WindowSpec
from offline.ae_training import (
    AsymmetricAutoencoder,
    DataSplitSettings,
    TrainingSettings,
    fit_model,
    train_encoder,
    train_from_log,
)
from offline.training_examples import Examples, ExampleSpec, IndexedLog, build_examples, time_split
from tests.unit.interaction_logs import DAY, T0, catalog, random_log

SPEC = ExampleSpec(WindowSpec(60 * DAY, 7 * DAY, DAY), 14 * DAY)
FAST = TrainingSettings(hidden=16, batch_size=64, learning_rate=1e-2, max_epochs=6, patience=6)


def _data(basis: BasisArtifact, seed: int = 0) -> tuple[Examples, Examples]:
    log = IndexedLog.from_log(random_log(seed, basis, users=80, days=150), basis)
    until = T0 + 150 * DAY
    split = time_split(SPEC, log.first_ts, until, stride=2 * DAY, validation_span=28 * DAY)
    known = log.before(until)
    return (
        build_examples(known, basis.item_vectors, SPEC, split.train),
        build_examples(known, basis.item_vectors, SPEC, split.validation),
    )


@pytest.fixture(scope="module")
def pca_basis() -> BasisArtifact:
    return catalog(3, n_items=40, d=8, k=5)


@pytest.fixture(scope="module")
def data(pca_basis: BasisArtifact) -> tuple[Examples, Examples]:
    return _data(pca_basis)


def test_training_lowers_the_loss_and_never_touches_the_decoder(
    pca_basis: BasisArtifact, data: tuple[Examples, Examples]
) -> None:
    train, validation = data
    torch.manual_seed(0)
    model = AsymmetricAutoencoder(torch.from_numpy(pca_basis.basis.copy()), FAST.hidden)
    decoder_before = model.decoder.detach().clone()
    hidden_before = model.hidden.weight.detach().clone()
    result = fit_model(model, train, validation, pca_basis, FAST)
    assert model.decoder.requires_grad is False
    assert torch.equal(model.decoder, decoder_before)
    assert torch.equal(model.decoder, torch.from_numpy(pca_basis.basis.copy()))
    assert not torch.equal(model.hidden.weight, hidden_before)
    assert result.best_validation_loss < result.initial_validation_loss
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert result.best_epoch >= 1


@pytest.mark.parametrize(
    "settings",
    [
        replace(FAST, loss="bpr"),
        replace(FAST, negatives=12),  # sampled softmax: fewer negatives than items
    ],
    ids=["bpr", "sampled"],
)
def test_other_objectives_also_learn(
    pca_basis: BasisArtifact, data: tuple[Examples, Examples], settings: TrainingSettings
) -> None:
    result = train_encoder(*data, pca_basis, settings)
    assert result.best_validation_loss < result.initial_validation_loss


def test_same_seed_same_weights_other_seed_other_weights(
    pca_basis: BasisArtifact, data: tuple[Examples, Examples]
) -> None:
    settings = replace(FAST, max_epochs=2)
    a = train_encoder(*data, pca_basis, settings).weights
    b = train_encoder(*data, pca_basis, settings).weights
    c = train_encoder(*data, pca_basis, replace(settings, seed=1)).weights
    for name, tensor in a.tensors().items():
        assert np.array_equal(tensor, b.tensors()[name]), name
    assert not np.array_equal(a.hidden_weight, c.hidden_weight)


def test_numpy_serving_equals_the_torch_model_and_stays_in_the_span(
    pca_basis: BasisArtifact, data: tuple[Examples, Examples]
) -> None:
    train, validation = data
    torch.manual_seed(0)
    model = AsymmetricAutoencoder(torch.from_numpy(pca_basis.basis.copy()), FAST.hidden)
    fit_model(model, train, validation, pca_basis, FAST)
    s = validation.summary
    mean = s.sums / s.weight_sums[:, None]
    with torch.no_grad():
        x = torch.from_numpy(mean.astype(np.float32))
        n = torch.from_numpy(np.log1p(s.counts.astype(np.float32)))
        want_c = model.coefficients(x, n).numpy()
        want_v = model(x, n).numpy()
    artifact = AutoencoderArtifact.create(
        model.weights(), {"basis_version": pca_basis.basis_version}
    )
    got = AutoencoderEncoder(artifact, pca_basis).encode(s)
    np.testing.assert_allclose(got.coefficients, want_c, atol=1e-5)
    np.testing.assert_allclose(got.vectors, want_v, atol=1e-5)
    b = pca_basis.basis.astype(np.float64)
    assert np.abs(got.vectors - (got.vectors @ b.T) @ b).max() < 1e-6
    assert np.abs(got.coefficients - (mean @ b.T)).max() > 1e-2  # it moved off the mean


def test_train_from_log_stamps_a_reproducible_artifact(tmp_path: Path) -> None:
    basis = catalog(4, n_items=30, d=6)
    log = IndexedLog.from_log(random_log(1, basis, users=50, days=120), basis)
    until = T0 + 100 * DAY
    split = DataSplitSettings(stride=2 * DAY, validation_span=21 * DAY, until=until)
    settings = replace(FAST, max_epochs=2)
    first = train_from_log(log, basis, SPEC, split, settings, source="x.jsonl")
    again = train_from_log(log, basis, SPEC, split, settings, source="x.jsonl")
    assert first.artifact.encoder_version == again.artifact.encoder_version
    config = first.artifact.config
    assert config["basis_version"] == basis.basis_version
    assert config["window"] == {
        "window": 60 * DAY,
        "lag": 7 * DAY,
        "bucket": DAY,
        "horizon": 14 * DAY,
        "targets_after": "window_end",
    }
    assert config["data"]["until"] == until
    assert config["data"]["train_examples"] == first.train_examples > 0
    assert config["training"]["seed"] == 0
    assert set(config["created_with"]) >= {"torch", "numpy", "lte-stream"}
    assert len(config["metrics"]["history"]) == config["metrics"]["epochs_run"]
    first.artifact.save(tmp_path / "ae")
    loaded = AutoencoderArtifact.load(tmp_path / "ae")
    assert loaded.encoder_version == first.artifact.encoder_version
