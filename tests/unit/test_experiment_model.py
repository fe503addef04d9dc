"""The sequence model's mechanisms: PerSRec's mask, DARE's two tables, and the LTE entering
the model through each integration."""

from __future__ import annotations

import pytest
import torch

from offline.experiment.model import ModelConfig, SequenceModel

N_ITEMS, LENGTH, RECENT = 30, 12, 4


def _items(batch: int = 3, seed: int = 0, pad: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, N_ITEMS + 1, (batch, LENGTH), generator=g)
    items[0, :pad] = 0
    return items


def _persrec(blocks: int) -> SequenceModel:
    torch.manual_seed(0)
    model = SequenceModel(
        ModelConfig(N_ITEMS, LENGTH, RECENT, persrec_tokens=4, blocks=blocks, dropout=0.0)
    )
    return model.eval()


def test_persrec_recent_positions_give_zero_attention_to_the_long_segment() -> None:
    model = _persrec(blocks=2)
    enc = model.encode(_items(), need_weights=True)
    assert enc.weights is not None
    long_tokens = enc.item_index[: LENGTH - RECENT]
    recent_tokens = enc.item_index[LENGTH - RECENT :]
    on_long = enc.weights[:, :, recent_tokens][..., long_tokens]
    assert torch.count_nonzero(on_long) == 0
    on_tokens = enc.weights[:, :, recent_tokens][..., enc.extra_index]
    assert (on_tokens.sum(-1) > 0).all()
    assert len(enc.extra_index) == 4
    # the tokens themselves read the long segment
    assert (enc.weights[:, :, enc.extra_index][..., long_tokens[2:]].sum(-1) > 0).all()


def test_persrec_long_segment_reaches_recent_items_only_through_the_tokens() -> None:
    """One block: the tokens' values are still their own embeddings, so recent outputs
    cannot depend on the long segment at all. Two blocks: they do, via the tokens."""
    items = _items(pad=0)
    changed = items.clone()
    changed[:, : LENGTH - RECENT] = (changed[:, : LENGTH - RECENT] % N_ITEMS) + 1
    with torch.no_grad():
        one = _persrec(blocks=1)
        a, b = one.encode(items).hidden, one.encode(changed).hidden
        assert torch.equal(a[:, LENGTH - RECENT :], b[:, LENGTH - RECENT :])
        assert not torch.allclose(a[:, : LENGTH - RECENT], b[:, : LENGTH - RECENT])
        two = _persrec(blocks=2)
        a, b = two.encode(items).hidden, two.encode(changed).hidden
        assert not torch.allclose(a[:, LENGTH - RECENT :], b[:, LENGTH - RECENT :])


def test_dare_tables_are_separate_parameters_with_separate_gradients() -> None:
    torch.manual_seed(0)
    model = SequenceModel(ModelConfig(N_ITEMS, LENGTH, RECENT, dare=True, dropout=0.0))
    attention, representation = model.attention_item.weight, model.item.weight
    assert attention.data_ptr() != representation.data_ptr()
    assert attention.shape[1] < representation.shape[1]
    names = {id(p) for p in model.parameters()}
    assert id(attention) in names and id(representation) in names
    items = torch.tensor([[0, 0, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21]])
    targets = torch.tensor([[0, 0, 5, 7, 9, 11, 13, 15, 17, 19, 21, 2]])
    model.loss(items, targets).backward()  # type: ignore[no-untyped-call]
    assert attention.grad is not None and representation.grad is not None
    att_rows = attention.grad.abs().sum(1) > 0
    rep_rows = representation.grad.abs().sum(1) > 0
    used = torch.zeros(N_ITEMS + 1, dtype=torch.bool)
    used[items[items > 0]] = True
    # the attention table learns only from the items it attends with
    assert torch.equal(att_rows, used)
    # the representation table also scores the whole catalogue (full softmax)
    assert rep_rows[1:].all()
    assert not rep_rows[0]


def test_without_dare_one_table_serves_attention_and_scores() -> None:
    model = SequenceModel(ModelConfig(N_ITEMS, LENGTH, RECENT))
    assert not hasattr(model, "attention_item")


@pytest.mark.parametrize("integration", ["prefix", "late_fusion", "feature_injection"])
def test_every_integration_reads_the_lte(integration: str) -> None:
    torch.manual_seed(0)
    model = SequenceModel(
        ModelConfig(N_ITEMS, LENGTH, RECENT, lte_dim=6, integration=integration, dropout=0.0)
    ).eval()
    items = _items()
    lte = torch.randn(3, 6)
    has = torch.tensor([True, True, False])
    with torch.no_grad():
        a = model.encode(items, lte, has).hidden[:, -1]
        b = model.encode(items, lte * -1.0 + 0.5, has).hidden[:, -1]
    assert not torch.allclose(a[:2], b[:2])
    # an empty window uses the learned "no LTE" vector, whatever the coefficients say
    assert torch.allclose(a[2], b[2])
