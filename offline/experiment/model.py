"""A small SASRec-style causal transformer and the ways an LTE (or a long history) enters it.

The backbone follows pmixer/SASRec.pytorch (``python/model.py``, ``norm_first``): item
embeddings scaled by sqrt(d) plus learned positions, pre-LayerNorm blocks of multi-head
self-attention and a point-wise feed-forward net, a last LayerNorm, and scores as the dot
product with the (tied) item table. Attention is written out instead of using
``nn.MultiheadAttention`` so that the masks below are explicit; training and scoring run it
through torch's fused ``scaled_dot_product_attention`` with the same boolean mask, and only
the attention diagnostic (``need_weights``) computes the softmax weights by hand.

How the LTE enters (``integration``):

* ``prefix``: a learned projection of the K coefficients is one extra token before the
  items; every position may attend to it (the LTE paper's prefix token);
* ``late_fusion``: the projection is added to the final hidden states, outside attention;
* ``feature_injection``: the projection is added to every input item embedding.

A request with an empty window (no LTE, ``has_lte`` false) gets a learned "no LTE" vector.

PerSRec (facebookresearch/PerSRec, ``PersonalizedHSTU``): ``k`` learnable tokens, shared by
all users, are inserted after the long segment and before the recent items; the mask stops
recent positions from attending to the long segment (``get_attention_mask`` with
``item_segments``), so the long history reaches them only through the tokens; the loss is
on every item position (``loss_on_all_items``). Here the backbone stays SASRec's softmax
attention rather than HSTU's pointwise units, so the comparison is about the mechanism.

DARE (thuml/DARE, ``model/din_pytorch.py``): separate item tables for attention and for
representation. Queries and keys of every block are computed from a narrower attention
embedding stream; values, the residual stream and the output scores use the
representation table, so the two tables receive separate gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

INTEGRATIONS = ("none", "prefix", "late_fusion", "feature_injection")


@dataclass(frozen=True, slots=True)
class ModelConfig:
    n_items: int
    #: item positions in the input
    length: int
    #: PerSRec: the last ``recent`` positions are the recent segment
    recent: int
    #: K, the number of LTE coefficients (0 without an LTE)
    lte_dim: int = 0
    integration: str = "none"
    persrec_tokens: int = 0
    dare: bool = False
    d: int = 64
    heads: int = 2
    blocks: int = 2
    dropout: float = 0.2
    #: width of DARE's attention table
    attention_d: int = 32

    def __post_init__(self) -> None:
        if self.integration not in INTEGRATIONS:
            raise ValueError(f"integration: expected one of {INTEGRATIONS}")
        if (self.integration != "none") != (self.lte_dim > 0):
            raise ValueError("an LTE integration needs lte_dim > 0, and only it")
        if self.persrec_tokens and (self.dare or self.integration != "none"):
            raise ValueError("PerSRec tokens are compared alone, without LTE or DARE")
        if self.d % self.heads:
            raise ValueError("d must be a multiple of heads")


@dataclass(frozen=True, slots=True)
class Encoded:
    """Hidden states at the item positions, and what the diagnostic needs."""

    hidden: torch.Tensor  # (B, length, d)
    #: last block's attention, (B, heads, T, T) over the whole token sequence, if asked
    weights: torch.Tensor | None
    allowed: torch.Tensor  # (B, T, T)
    item_index: torch.Tensor  # (length,) token index of each item column
    extra_index: torch.Tensor  # token indices of the prefix / PerSRec tokens


class SelfAttention(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float, qk_in: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(qk_in, d)
        self.key = nn.Linear(qk_in, d)
        self.value = nn.Linear(d, d)
        self.out = nn.Linear(d, d)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, qk: torch.Tensor, allowed: torch.Tensor, *, need_weights: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``need_weights``: the explicit softmax, for the attention diagnostic; otherwise
        torch's fused ``scaled_dot_product_attention`` (same maths, dropout on the weights
        included), which never materialises the (T, T) weights for the backward pass."""
        b, t, d = x.shape
        h = self.heads

        def split(z: torch.Tensor) -> torch.Tensor:
            return z.view(b, t, h, d // h).transpose(1, 2)

        q, k, v = split(self.query(qk)), split(self.key(qk)), split(self.value(x))
        weights = None
        if need_weights:
            scores = q @ k.transpose(-1, -2) / math.sqrt(d // h)
            scores = scores.masked_fill(~allowed[:, None], float("-inf"))
            weights = torch.softmax(scores, dim=-1)
            attended = self.dropout(weights) @ v
        else:
            attended = nn.functional.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=allowed[:, None],
                dropout_p=self.dropout.p if self.training else 0.0,
            )
        mixed = attended.transpose(1, 2).reshape(b, t, d)
        out: torch.Tensor = self.out(mixed)
        return out, weights


class Block(nn.Module):
    """Pre-LN: ``x + attn(LN(x))`` then ``x + ffn(LN(x))``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        qk_in = cfg.attention_d if cfg.dare else cfg.d
        self.attention_norm = nn.LayerNorm(cfg.d, eps=1e-8)
        self.qk_norm = nn.LayerNorm(qk_in, eps=1e-8) if cfg.dare else None
        self.attention = SelfAttention(cfg.d, cfg.heads, cfg.dropout, qk_in)
        self.forward_norm = nn.LayerNorm(cfg.d, eps=1e-8)
        self.feed_forward = nn.Sequential(
            nn.Linear(cfg.d, cfg.d),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.d, cfg.d),
            nn.Dropout(cfg.dropout),
        )
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        attention_stream: torch.Tensor | None,
        allowed: torch.Tensor,
        *,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        a = self.attention_norm(x)
        qk = (
            a
            if self.qk_norm is None or attention_stream is None
            else self.qk_norm(attention_stream)
        )
        mixed, weights = self.attention(a, qk, allowed, need_weights=need_weights)
        x = x + self.dropout(mixed)
        x = x + self.feed_forward(self.forward_norm(x))
        return x, weights


class LTEProjection(nn.Module):
    """K coefficients -> a d-vector; a learned vector where the window was empty.

    The coefficients are layer-normalised first: a window mean of unit content vectors is
    short (its norm shrinks as tastes spread), and unscaled it would enter an order of
    magnitude weaker than the sqrt(d)-scaled item embeddings."""

    def __init__(self, k: int, d: int) -> None:
        super().__init__()
        self.linear = nn.Sequential(nn.LayerNorm(k), nn.Linear(k, d))
        self.empty = nn.Parameter(torch.zeros(d))
        nn.init.normal_(self.empty, std=0.02)

    def forward(self, lte: torch.Tensor, has_lte: torch.Tensor) -> torch.Tensor:
        projected: torch.Tensor = self.linear(lte)
        return torch.where(has_lte[:, None], projected, self.empty.expand_as(projected))


class SequenceModel(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d
        self.item = nn.Embedding(cfg.n_items + 1, d, padding_idx=0)
        self.position = nn.Embedding(cfg.length, d)
        self.embedding_dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.blocks)])
        self.last_norm = nn.LayerNorm(d, eps=1e-8)
        self.lte = LTEProjection(cfg.lte_dim, d) if cfg.lte_dim else None
        self.prefix_position = nn.Parameter(torch.zeros(d)) if cfg.integration == "prefix" else None
        self.tokens = (
            nn.Parameter(torch.randn(cfg.persrec_tokens, d) * 0.02) if cfg.persrec_tokens else None
        )
        if cfg.dare:
            self.attention_item = nn.Embedding(cfg.n_items + 1, cfg.attention_d, padding_idx=0)
            self.attention_position = nn.Embedding(cfg.length, cfg.attention_d)
            self.attention_lte = (
                LTEProjection(cfg.lte_dim, cfg.attention_d) if cfg.integration == "prefix" else None
            )
        nn.init.normal_(self.item.weight, std=0.02)
        with torch.no_grad():
            self.item.weight[0].zero_()

    # -- the token sequence --------------------------------------------------------------
    def _layout(self, n: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """Token index of each of the ``n`` item columns, of the extra tokens, the sequence
        length and the long segment's width (PerSRec).

        Inputs are left-padded to ``cfg.length``; a batch may arrive with its all-padding
        left columns cut off (``n < cfg.length``): the columns kept are the *last* ``n`` of
        the full layout, so the recent segment is still the last ``recent`` columns."""
        cfg = self.cfg
        prefix = 1 if cfg.integration == "prefix" else 0
        k = cfg.persrec_tokens
        long = max(n - cfg.recent, 0) if k else n
        cols = torch.arange(n)
        item_index = cols + prefix + torch.where(cols >= long, k, 0)
        extra = list(range(prefix)) + [prefix + long + j for j in range(k)]
        return item_index, torch.tensor(extra, dtype=torch.long), n + prefix + k, long

    def _mask(self, valid: torch.Tensor, item_index: torch.Tensor, long: int) -> torch.Tensor:
        """Causal, no padded keys, every token sees itself; PerSRec: recent items do not see
        the long segment."""
        cfg = self.cfg
        t = valid.shape[1]
        causal = torch.tril(torch.ones(t, t, dtype=torch.bool))
        allowed = causal[None] & valid[:, None, :]
        if cfg.persrec_tokens:
            recent_tokens = item_index[long:]
            long_tokens = item_index[:long]
            block = torch.zeros(t, t, dtype=torch.bool)
            block[recent_tokens[:, None], long_tokens[None, :]] = True
            allowed = allowed & ~block[None]
        return allowed | torch.eye(t, dtype=torch.bool)[None]

    def encode(
        self,
        items: torch.Tensor,
        lte: torch.Tensor | None = None,
        has_lte: torch.Tensor | None = None,
        *,
        need_weights: bool = False,
    ) -> Encoded:
        cfg = self.cfg
        b, n = items.shape
        if n > cfg.length:
            raise ValueError(f"{n} item columns, the model was built for {cfg.length}")
        item_index, extra_index, t, long = self._layout(n)
        valid_items = items > 0
        columns = torch.arange(cfg.length - n, cfg.length)
        x = self.item(items) * math.sqrt(cfg.d) + self.position(columns)[None]
        lte_vec = None
        if self.lte is not None:
            assert lte is not None and has_lte is not None
            lte_vec = self.lte(lte, has_lte)
        if cfg.integration == "feature_injection":
            assert lte_vec is not None
            x = x + lte_vec[:, None, :]
        x = x * valid_items[..., None]
        tokens = x.new_zeros(b, t, cfg.d)
        tokens[:, item_index] = x
        valid = torch.ones(b, t, dtype=torch.bool)
        valid[:, item_index] = valid_items
        if cfg.integration == "prefix":
            assert lte_vec is not None and self.prefix_position is not None
            tokens[:, 0] = lte_vec + self.prefix_position
        if self.tokens is not None:
            tokens[:, extra_index] = self.tokens[None].expand(b, -1, -1)
        stream = None
        if cfg.dare:
            a = self.attention_item(items) + self.attention_position(columns)[None]
            stream = a.new_zeros(b, t, cfg.attention_d)
            stream[:, item_index] = a * valid_items[..., None]
            if self.attention_lte is not None:
                assert lte is not None and has_lte is not None
                stream[:, 0] = self.attention_lte(lte, has_lte)
        allowed = self._mask(valid, item_index, long)
        h = self.embedding_dropout(tokens)
        weights = None
        for i, block in enumerate(self.blocks):
            last = i == len(self.blocks) - 1
            h, weights = block(h, stream, allowed, need_weights=need_weights and last)
        hidden = self.last_norm(h)[:, item_index]
        if cfg.integration == "late_fusion":
            assert lte_vec is not None
            hidden = hidden + lte_vec[:, None, :]
        return Encoded(hidden, weights, allowed, item_index, extra_index)

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every catalogue item (basis row order) for each hidden state."""
        return hidden @ self.item.weight[1:].T

    def loss(
        self,
        items: torch.Tensor,
        targets: torch.Tensor,
        lte: torch.Tensor | None = None,
        has_lte: torch.Tensor | None = None,
        reduction: str = "mean",
    ) -> torch.Tensor:
        """Full-softmax cross-entropy over the catalogue at every position with a target
        (the mean; ``reduction="sum"`` for the sum, to accumulate over micro-batches)."""
        hidden = self.encode(items, lte, has_lte).hidden
        mask = targets > 0
        logits = self.scores(hidden[mask])
        return nn.functional.cross_entropy(logits, targets[mask] - 1, reduction=reduction)
