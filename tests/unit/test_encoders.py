from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lte_core.basis import BasisArtifact
from lte_core.encoders import EncoderSpec, MeanEncoder, RecencyEncoder, build_encoder
from lte_core.errors import ConfigError, EncoderError
from lte_core.state import LaggedWindow
from lte_core.summary import WindowSummary
from lte_core.window import WindowSpec

SPEC = WindowSpec(window=20 * 3600, lag=0, bucket=3600)
NOW = 1_000_000 * 3600.0


Raw = tuple[np.ndarray, np.ndarray, np.ndarray]


def _windows(
    seed: int, users: int, d: int = 6
) -> tuple[BasisArtifact, list[LaggedWindow], list[Raw]]:
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((30, d)).astype(np.float32)
    art = BasisArtifact.build([str(i) for i in range(30)], vecs)
    windows: list[LaggedWindow] = []
    raw: list[Raw] = []
    for _ in range(users):
        n = int(rng.integers(1, 15))
        items = rng.integers(0, 30, n)
        ts = NOW - rng.uniform(3600, 19 * 3600, n)
        w = rng.uniform(0.2, 3.0, n).astype(np.float32)
        state = LaggedWindow(SPEC, d)
        state.apply(items, ts, w, vecs, NOW)
        windows.append(state)
        raw.append((items, ts, w))
    return art, windows, raw


@given(st.integers(0, 10_000), st.integers(1, 6))
def test_mean_encoder_is_the_projected_weighted_mean(seed: int, k: int) -> None:
    art, windows, raw = _windows(seed, 4)
    pca = BasisArtifact.build(art.item_ids, art.item_vectors, k=k)
    b = pca.basis.astype(np.float64)
    out = MeanEncoder(pca).encode(WindowSummary.concat([w.summary() for w in windows]))
    for i, (items, _, w) in enumerate(raw):
        mean = (w.astype(np.float64)[:, None] * art.item_vectors[items]).sum(0) / w.sum()
        np.testing.assert_allclose(out.coefficients[i], b @ mean, atol=1e-6)
        np.testing.assert_allclose(out.vectors[i], b.T @ (b @ mean), atol=1e-6)
        # The LTE lies in the basis span: projecting again changes nothing.
        np.testing.assert_allclose(b.T @ (b @ out.vectors[i]), out.vectors[i], atol=1e-6)


def test_identity_basis_vector_is_exactly_the_mean() -> None:
    art, windows, raw = _windows(1, 3)
    out = MeanEncoder(art).encode(WindowSummary.concat([w.summary() for w in windows]))
    for i, (items, _, w) in enumerate(raw):
        mean = (w.astype(np.float64)[:, None] * art.item_vectors[items]).sum(0) / w.sum()
        np.testing.assert_allclose(out.vectors[i], mean, atol=1e-9)


@given(st.integers(0, 10_000), st.sampled_from([3600, 6 * 3600, 86400]))
def test_recency_encoder_matches_bucket_decay(seed: int, half_life: int) -> None:
    art, windows, raw = _windows(seed, 3)
    summary = WindowSummary.concat([w.summary(art.item_vectors, half_life) for w in windows])
    out = RecencyEncoder(art, half_life).encode(summary)
    for i, (items, ts, w) in enumerate(raw):
        buckets = np.floor(ts / SPEC.bucket)
        decay = 0.5 ** ((buckets.max() - buckets) * SPEC.bucket / half_life)
        wts = w.astype(np.float64) * decay
        expected = (wts[:, None] * art.item_vectors[items]).sum(0) / wts.sum()
        np.testing.assert_allclose(out.vectors[i], expected, atol=1e-6)


def test_recency_with_huge_half_life_is_the_mean() -> None:
    art, windows, _ = _windows(3, 5)
    summary = WindowSummary.concat([w.summary(art.item_vectors, 10**12) for w in windows])
    slow = RecencyEncoder(art, 10**12).encode(summary)
    mean = MeanEncoder(art).encode(WindowSummary.concat([w.summary() for w in windows]))
    np.testing.assert_allclose(slow.vectors, mean.vectors, atol=1e-6)


def test_empty_window_has_no_lte() -> None:
    art, _, _ = _windows(0, 1)
    with pytest.raises(ValueError, match="empty"):
        MeanEncoder(art).encode(LaggedWindow(SPEC, art.d).summary())


def test_encoder_spec_parsing() -> None:
    assert EncoderSpec.parse("mean").kind == "mean"
    assert EncoderSpec.parse("recency:14d").half_life == 14 * 86400
    assert EncoderSpec.parse("ae:/tmp/x").path == "/tmp/x"
    for bad in ("", "median", "recency", "recency:soon", "mean:1"):
        with pytest.raises(ConfigError, match="--encoder"):
            EncoderSpec.parse(bad)
    art, windows, _ = _windows(0, 1)
    assert build_encoder(EncoderSpec.parse("recency:2h"), art).name == "recency:2h"
    with pytest.raises(EncoderError, match="half_life"):
        RecencyEncoder(art, 3600).encode(windows[0].summary())
