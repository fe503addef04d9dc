"""The AE artifact and its numpy inference (no torch here)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file

from lte_core.autoencoder import AutoencoderArtifact, AutoencoderEncoder, AutoencoderWeights
from lte_core.basis import BasisArtifact
from lte_core.encoders import EncoderSpec, MeanEncoder, build_encoder
from lte_core.errors import EncoderArtifactError, EncoderBasisMismatchError
from lte_core.summary import WindowSummary
from tests.unit.interaction_logs import catalog


def _weights(seed: int, d: int, k: int, hidden: int = 16, scale: float = 0.5) -> AutoencoderWeights:
    rng = np.random.default_rng(seed)
    return AutoencoderWeights(
        hidden_weight=rng.normal(0, scale, (hidden, d + 1)).astype(np.float32),
        hidden_bias=rng.normal(0, scale, hidden).astype(np.float32),
        out_weight=rng.normal(0, scale, (k, hidden)).astype(np.float32),
        out_bias=rng.normal(0, scale, k).astype(np.float32),
    )


def _artifact(basis: BasisArtifact, seed: int = 0) -> AutoencoderArtifact:
    return AutoencoderArtifact.create(
        _weights(seed, basis.d, basis.k),
        {"basis_version": basis.basis_version, "data": {"until": 123.0}},
    )


def _windows(seed: int, basis: BasisArtifact, m: int) -> WindowSummary:
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 30, m)
    weights = rng.uniform(0.5, 3.0, m) * counts
    means = basis.item_vectors[rng.integers(0, basis.n_items, m)].astype(np.float64)
    return WindowSummary(
        sums=means * weights[:, None], weight_sums=weights, counts=counts.astype(np.int64)
    )


def _plain_inference(
    w: AutoencoderWeights, b: np.ndarray, windows: WindowSummary
) -> tuple[np.ndarray, np.ndarray]:
    """The documented formula, written out independently of the encoder class."""
    x = windows.sums / windows.weight_sums[:, None]
    features = np.concatenate([x, np.log1p(windows.counts)[:, None]], axis=1)
    h = np.maximum(features @ w.hidden_weight.T.astype(np.float64) + w.hidden_bias, 0.0)
    c = x @ b.T + h @ w.out_weight.T.astype(np.float64) + w.out_bias
    return c, c @ b


@pytest.mark.parametrize("k", [None, 3])
def test_inference_is_the_documented_formula_and_stays_in_the_basis_span(k: int | None) -> None:
    basis = catalog(0, k=k)
    encoder = AutoencoderEncoder(_artifact(basis), basis)
    windows = _windows(1, basis, 50)
    out = encoder.encode(windows)
    b = basis.basis.astype(np.float64)
    coefficients, vectors = _plain_inference(encoder.artifact.weights, b, windows)
    np.testing.assert_allclose(out.coefficients, coefficients, atol=1e-5)
    np.testing.assert_allclose(out.vectors, vectors, atol=1e-5)
    # In the span: projecting onto the basis again changes nothing (K < d is the real test);
    # the float32 basis is orthonormal to ~1e-7, a vector off the span would miss by O(1).
    residual = out.vectors - (out.vectors @ b.T) @ b
    assert np.abs(residual).max() < 1e-6 * max(1.0, np.abs(out.vectors).max())
    if basis.k < basis.d:
        stray = windows.sums / windows.weight_sums[:, None]
        assert np.abs(stray - (stray @ b.T) @ b).max() > 0.05
    np.testing.assert_allclose(out.vectors, out.coefficients @ b, atol=1e-12)
    mean = MeanEncoder(basis).encode(windows)
    assert np.abs(out.vectors - mean.vectors).max() > 0.1  # the MLP really changes the LTE


@pytest.mark.parametrize("k", [None, 4])
def test_a_zero_output_layer_is_exactly_the_mean_encoder(k: int | None) -> None:
    basis = catalog(2, k=k)
    weights = AutoencoderWeights.mean_equivalent(basis.d, basis.k, hidden=8, seed=3)
    artifact = AutoencoderArtifact.create(weights, {"basis_version": basis.basis_version})
    windows = _windows(4, basis, 20)
    got = AutoencoderEncoder(artifact, basis).encode(windows)
    want = MeanEncoder(basis).encode(windows)
    assert np.array_equal(got.vectors, want.vectors)
    assert np.array_equal(got.coefficients, want.coefficients)


@settings(max_examples=30)
@given(st.integers(0, 10_000), st.integers(1, 40))
def test_batched_inference_equals_one_window_at_a_time(seed: int, m: int) -> None:
    basis = catalog(5, k=5)
    encoder = AutoencoderEncoder(_artifact(basis, seed), basis)
    windows = _windows(seed, basis, m)
    batch = encoder.encode(windows).vectors
    for i in range(m):
        single = encoder.encode(windows.rows(np.array([i]))).vectors[0]
        # float32 outputs: batched and single matmuls may round a few ulps apart
        np.testing.assert_allclose(batch[i], single, rtol=1e-6, atol=1e-6)


def test_round_trip_keeps_weights_config_version_and_outputs(tmp_path: Path) -> None:
    basis = catalog(0, k=6)
    artifact = _artifact(basis)
    artifact.save(tmp_path / "ae")
    loaded = AutoencoderArtifact.load(tmp_path / "ae")
    assert loaded.encoder_version == artifact.encoder_version
    assert loaded.config == artifact.config
    for name, tensor in artifact.weights.tensors().items():
        assert np.array_equal(loaded.weights.tensors()[name], tensor), name
    windows = _windows(7, basis, 10)
    encoder = build_encoder(EncoderSpec.parse(f"ae:{tmp_path / 'ae'}"), basis)
    assert encoder.name == f"ae:{artifact.encoder_version}"
    np.testing.assert_array_equal(
        encoder.encode(windows).vectors, AutoencoderEncoder(artifact, basis).encode(windows).vectors
    )


def test_the_version_is_a_content_hash() -> None:
    basis = catalog(0)
    a = _artifact(basis, seed=1)
    assert a.encoder_version == _artifact(basis, seed=1).encoder_version  # not time-dependent
    assert a.encoder_version != _artifact(basis, seed=2).encoder_version
    nudged = replace(a.weights, out_bias=a.weights.out_bias + np.float32(1e-6))
    config = {"basis_version": basis.basis_version, "data": {"until": 123.0}}
    assert AutoencoderArtifact.create(nudged, config).encoder_version != a.encoder_version
    other_config = {"basis_version": basis.basis_version, "data": {"until": 124.0}}
    assert AutoencoderArtifact.create(a.weights, other_config).encoder_version != a.encoder_version


def test_loading_refuses_another_basis_with_a_remedy(tmp_path: Path) -> None:
    trained_on, other = catalog(0), catalog(1)
    _artifact(trained_on).save(tmp_path / "ae")
    with pytest.raises(EncoderBasisMismatchError) as err:
        build_encoder(EncoderSpec.parse(f"ae:{tmp_path / 'ae'}"), other)
    message = str(err.value)
    assert trained_on.basis_version in message and other.basis_version in message
    assert "lte train-encoder" in message
    # Same content model and items but a PCA basis: also another space.
    pca = BasisArtifact.build(trained_on.item_ids, trained_on.item_vectors, k=4)
    with pytest.raises(EncoderBasisMismatchError):
        AutoencoderEncoder.load(tmp_path / "ae", pca)


def test_loading_refuses_edited_files(tmp_path: Path) -> None:
    basis = catalog(0)
    directory = _artifact(basis).save(tmp_path / "ae")
    config_path = directory / "config.json"
    original = config_path.read_text()
    config = json.loads(original)
    config["basis_version"] = "0" * 16
    config_path.write_text(json.dumps(config))
    with pytest.raises(EncoderArtifactError, match="modified"):
        AutoencoderArtifact.load(directory)
    config_path.write_text(original)
    tensors = load_file(str(directory / "encoder.safetensors"))
    tensors["out.bias"] = tensors["out.bias"] + np.float32(0.01)
    save_file(tensors, str(directory / "encoder.safetensors"))
    with pytest.raises(EncoderArtifactError, match="modified"):
        AutoencoderArtifact.load(directory)
    with pytest.raises(EncoderArtifactError, match="not an encoder artifact"):
        AutoencoderArtifact.load(tmp_path)


def test_empty_windows_have_no_lte() -> None:
    basis = catalog(0)
    windows = WindowSummary(np.zeros((1, basis.d)), np.zeros(1), np.zeros(1, dtype=np.int64))
    with pytest.raises(ValueError, match="empty"):
        AutoencoderEncoder(_artifact(basis), basis).encode(windows)
