"""How the experiment computes a training step faster without changing it: left padding cut
per batch, length-sorted micro-batches with accumulated gradients, and torch's fused
attention. Each is checked against the plain computation on the fully padded batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from offline.experiment.model import ModelConfig, SequenceModel
from offline.experiment.runner import Inputs, accumulate_gradients, micro_batches

N_ITEMS, LENGTH, RECENT, K = 40, 24, 6, 5

CONFIGS: dict[str, dict[str, int | str | bool]] = {
    "none": {},
    "prefix": {"lte_dim": K, "integration": "prefix"},
    "persrec": {"persrec_tokens": 4},
    "dare_prefix": {"lte_dim": K, "integration": "prefix", "dare": True},
}


def _batch(lengths: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded inputs and next-item targets with the given real lengths."""
    rng = np.random.default_rng(seed)
    items = np.zeros((len(lengths), LENGTH), dtype=np.int64)
    targets = np.zeros_like(items)
    for row, n in enumerate(lengths):
        run = rng.integers(1, N_ITEMS + 1, size=n + 1)
        items[row, LENGTH - n :] = run[:-1]
        targets[row, LENGTH - n :] = run[1:]
    return items, targets


def _model(kind: str) -> SequenceModel:
    torch.manual_seed(3)
    cfg = ModelConfig(N_ITEMS, LENGTH, RECENT, dropout=0.0, **CONFIGS[kind])  # type: ignore[arg-type]
    return SequenceModel(cfg).eval()


def _grads(model: SequenceModel) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_micro_batches_give_the_padded_batch_loss_and_gradient(kind: str) -> None:
    lengths = [24, 23, 3, 1, 2, 17, 5, 4, 2, 9, 1, 6]
    items, targets = _batch(lengths)
    rng = np.random.default_rng(1)
    lte = rng.normal(size=(len(lengths), K)).astype(np.float32)
    has = np.array([i % 4 != 0 for i in range(len(lengths))])
    uses_lte = "lte_dim" in CONFIGS[kind]
    train = Inputs(items, lte, has, targets) if uses_lte else Inputs(items, targets=targets)

    model = _model(kind)
    # oracle: one call on the whole batch padded to the full length, mean over targets
    full = model.loss(
        torch.from_numpy(items),
        torch.from_numpy(targets),
        torch.from_numpy(lte) if uses_lte else None,
        torch.from_numpy(has) if uses_lte else None,
    )
    full.backward()  # type: ignore[no-untyped-call]
    expected = _grads(model)
    model.zero_grad(set_to_none=True)

    batch = np.arange(len(lengths), dtype=np.int64)
    groups = micro_batches(train.lengths()[batch], batch, call_cost=0)
    assert len(groups) > 1  # the mix of lengths is worth splitting
    value = accumulate_gradients(model, train, groups)
    got = _grads(model)

    assert value == pytest.approx(float(full.detach()), rel=1e-5)
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_cutting_left_padding_keeps_every_real_position(kind: str) -> None:
    """A batch whose rows are all short reads at the same positions as the padded one."""
    items, _ = _batch([2, 5, 4], seed=4)
    lte = torch.randn(3, K) if "lte_dim" in CONFIGS[kind] else None
    has = torch.tensor([True, False, True]) if lte is not None else None
    model = _model(kind)
    with torch.no_grad():
        padded = model.encode(torch.from_numpy(items), lte, has).hidden
        short = model.encode(torch.from_numpy(items[:, -5:]), lte, has).hidden
    torch.testing.assert_close(short, padded[:, -5:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_fused_attention_equals_the_explicit_softmax(kind: str) -> None:
    items, _ = _batch([24, 7, 1, 13], seed=5)
    lte = torch.randn(4, K) if "lte_dim" in CONFIGS[kind] else None
    has = torch.ones(4, dtype=torch.bool) if lte is not None else None
    torch.manual_seed(3)
    cfg = ModelConfig(N_ITEMS, LENGTH, RECENT, dropout=0.0, blocks=1, **CONFIGS[kind])  # type: ignore[arg-type]
    model = SequenceModel(cfg).eval()
    with torch.no_grad():
        fused = model.encode(torch.from_numpy(items), lte, has)
        explicit = model.encode(torch.from_numpy(items), lte, has, need_weights=True)
    assert fused.weights is None and explicit.weights is not None
    torch.testing.assert_close(fused.hidden, explicit.hidden, rtol=1e-5, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 200), min_size=1, max_size=130))
def test_micro_batches_partition_the_batch(lengths: list[int]) -> None:
    batch = np.random.default_rng(len(lengths)).permutation(1000)[: len(lengths)]
    groups = micro_batches(np.asarray(lengths, dtype=np.int64), batch.astype(np.int64))
    assert sorted(np.concatenate(groups).tolist()) == sorted(batch.tolist())
    assert all(len(g) for g in groups)
    padded = len(lengths) * max(lengths)
    split = sum(
        len(g) * max(lengths[int(np.flatnonzero(batch == i)[0])] for i in g) for g in groups
    )
    assert split <= padded
