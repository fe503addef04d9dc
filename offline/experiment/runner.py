"""One run = one variant x one seed x one protocol: build its inputs (LTEs through
:mod:`offline.experiment.lte_features`), train with early stopping on validation NDCG@10,
score the test cases by full ranking, and measure attention and inference time.

Training follows pmixer/SASRec.pytorch's loop (Adam, shuffled batches of sequences, loss at
every position) with the full softmax over the catalogue instead of one sampled negative.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from lte_core.basis import BasisArtifact
from lte_core.encoders import EncoderSpec
from lte_core.errors import ConfigError
from offline.ae_training import deterministic_torch
from offline.evaluation import ranking_metrics
from offline.experiment.lte_features import LTERequest, lte_features, positional_log
from offline.experiment.model import ModelConfig, SequenceModel
from offline.experiment.sequences import (
    Cases,
    Histories,
    Split,
    cases_of,
    padded_inputs,
    seen_before,
    training_chunks,
)
from offline.experiment.variants import AE, RECENCY, Variant
from offline.training_examples import Ragged

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
TEST_KS = (10, 100, 500)
_MIN_GAIN = 1e-5


@dataclass(frozen=True, slots=True)
class ExperimentSettings:
    max_len: int = 20
    window_items: int = 200
    lag_items: int = 0
    recency_half_life: int = 20
    max_epochs: int = 100
    patience: int = 5
    batch_size: int = 128
    learning_rate: float = 1e-3
    threads: int = 2
    eval_batch: int = 256
    timing_repeats: int = 3

    def __post_init__(self) -> None:
        for flag, value in {
            "--max-len": self.max_len,
            "--window-items": self.window_items,
            "--epochs": self.max_epochs,
            "--patience": self.patience,
            "--batch-size": self.batch_size,
            "--threads": self.threads,
            "--recency-half-life": self.recency_half_life,
        }.items():
            if value < 1:
                raise ConfigError(f"{flag}: must be at least 1, got {value}")
        if self.lag_items < 0:
            raise ConfigError(f"--lag-items: must not be negative, got {self.lag_items}")


@dataclass(frozen=True, slots=True)
class Inputs:
    items: I64
    lte: F32 | None = None
    has_lte: npt.NDArray[np.bool_] | None = None
    targets: I64 | None = None

    def __len__(self) -> int:
        return len(self.items)

    def tensors(
        self, idx: I64
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Rows ``idx``, with the columns that are padding in every one of them cut off
        (inputs are left-padded: the model reads a shorter batch at the same positions)."""
        rows = self.items[idx]
        real = int((rows > 0).sum(axis=1).max(initial=0))
        cut = self.items.shape[1] - max(real, 1)
        items = torch.from_numpy(np.ascontiguousarray(rows[:, cut:]))
        lte = None if self.lte is None else torch.from_numpy(self.lte[idx])
        has = None if self.has_lte is None else torch.from_numpy(self.has_lte[idx])
        targets = (
            None
            if self.targets is None
            else torch.from_numpy(np.ascontiguousarray(self.targets[idx][:, cut:]))
        )
        return items, lte, has, targets

    def lengths(self) -> I64:
        """Real (non-padding) items per row."""
        return np.asarray((self.items > 0).sum(axis=1), dtype=np.int64)


@dataclass(frozen=True, slots=True)
class EvalSet:
    inputs: Inputs
    targets: Ragged
    seen: Ragged
    user: I64


@dataclass(frozen=True, slots=True)
class VariantData:
    train: Inputs
    validation: EvalSet
    test: EvalSet
    lte_dim: int


class LTESource:
    """Point-in-time LTEs for one split, computed once per (encoder, lagged) and shared by
    the variants and seeds that read them."""

    def __init__(
        self,
        histories: Histories,
        basis: BasisArtifact,
        settings: ExperimentSettings,
        ae: EncoderSpec | None = None,
    ) -> None:
        self.histories = histories
        self.basis = basis
        self.settings = settings
        self.ae = ae
        self.log = positional_log(
            histories.user_ids[histories.owners()], histories.item_ids, histories.positions()
        )
        self._cache: dict[tuple[str, bool, str], tuple[F32, npt.NDArray[np.bool_]]] = {}

    def encoder(self, variant: Variant) -> EncoderSpec:
        if variant.encoder == RECENCY:
            return EncoderSpec("recency", half_life=self.settings.recency_half_life)
        if variant.encoder == AE:
            if self.ae is None:
                raise ConfigError(f"{variant.name}: needs an autoencoder (--ae DIR)")
            return self.ae
        return EncoderSpec("mean")

    def features(
        self, variant: Variant, key: str, user: I64, clock: I64, first_input: I64
    ) -> tuple[F32, npt.NDArray[np.bool_]]:
        """Coefficients (0 where the window is empty) and has-LTE flags."""
        spec = self.encoder(variant)
        cache_key = (f"{spec.kind}:{spec.half_life}:{spec.path}", variant.lagged, key)
        if cache_key not in self._cache:
            request = LTERequest(self.settings.window_items, self.settings.lag_items, spec)
            snap = lte_features(
                self.log,
                self.histories.user_ids[user],
                clock,
                first_input,
                request=request,
                basis=self.basis,
                allow_leak=not variant.lagged,
            )
            has = snap.n_events > 0
            coefficients = np.where(has[:, None], snap.coefficients, 0.0).astype(np.float32)
            self._cache[cache_key] = (coefficients, has)
        return self._cache[cache_key]


def input_length(variant: Variant, settings: ExperimentSettings) -> int:
    return variant.long_factor * settings.max_len


def prepare(histories: Histories, split: Split, variant: Variant, source: LTESource) -> VariantData:
    """The training sequences and evaluation cases of ``variant`` under ``split``."""
    s = source.settings
    length = input_length(variant, s)
    chunks = training_chunks(histories, split, length)
    if len(chunks) == 0:
        raise ConfigError("no training sequences: every user has fewer than 2 training items")
    train_items = padded_inputs(histories, chunks.user, chunks.start, chunks.end, length)
    train_targets = padded_inputs(histories, chunks.user, chunks.start + 1, chunks.end + 1, length)
    sets: dict[str, EvalSet] = {}
    lte_dim = source.basis.k if variant.uses_lte else 0
    train = Inputs(train_items, targets=train_targets)
    if variant.uses_lte:
        first = chunks.start
        clock = first if variant.lagged else chunks.end
        lte, has = source.features(variant, f"train/{split.protocol}", chunks.user, clock, first)
        train = Inputs(train_items, lte, has, train_targets)
    for name, at in (("validation", split.val_at), ("test", split.test_at)):
        cases = cases_of(at)
        if len(cases) == 0:
            raise ConfigError(f"no {name} cases under the {split.protocol} protocol")
        sets[name] = _eval_set(
            histories, cases, variant, source, length=length, key=f"{name}/{split.protocol}"
        )
    return VariantData(train, sets["validation"], sets["test"], lte_dim)


def _eval_set(
    histories: Histories,
    cases: Cases,
    variant: Variant,
    source: LTESource,
    *,
    length: int,
    key: str,
) -> EvalSet:
    items = padded_inputs(histories, cases.user, np.zeros_like(cases.at), cases.at, length)
    targets, seen = seen_before(histories, cases)
    inputs = Inputs(items)
    if variant.uses_lte:
        first = np.maximum(cases.at - source.settings.max_len, 0)
        clock = first if variant.lagged else cases.at
        lte, has = source.features(variant, key, cases.user, clock, first)
        inputs = Inputs(items, lte, has)
    return EvalSet(inputs, targets, seen, cases.user)


# -- training -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunProgress:
    epoch: int
    step: int
    steps: int
    loss: float
    validation_ndcg: float | None = None


ProgressCallback = Callable[[RunProgress], None]


@dataclass(frozen=True, slots=True)
class Diagnostics:
    attention_ratio: float
    prefix_attention: float
    tokens_attended: float
    tokens_processed: float


@dataclass(frozen=True, slots=True)
class RunResult:
    variant: str
    seed: int
    protocol: str
    metrics: dict[str, float]
    per_case: dict[str, F64]
    users: I64
    diagnostics: Diagnostics
    inference_ms_per_1000_users: float
    epochs: int
    best_epoch: int
    validation_ndcg: float
    train_seconds: float
    #: CPU time of this process while training (all threads): the machine is shared, so
    #: wall time alone says little about what a full run costs
    train_cpu_seconds: float

    def row(self) -> dict[str, float | int | str]:
        d = self.diagnostics
        return {
            "variant": self.variant,
            "seed": self.seed,
            "protocol": self.protocol,
            **self.metrics,
            "attention_ratio": d.attention_ratio,
            "prefix_attention": d.prefix_attention,
            "tokens_attended": d.tokens_attended,
            "tokens_processed": d.tokens_processed,
            "inference_ms_per_1000_users": self.inference_ms_per_1000_users,
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "validation_ndcg@10": self.validation_ndcg,
            "train_seconds": self.train_seconds,
            "train_cpu_seconds": self.train_cpu_seconds,
            "test_cases": len(self.users),
        }


def build_model(
    variant: Variant, data: VariantData, n_items: int, s: ExperimentSettings
) -> SequenceModel:
    return SequenceModel(
        ModelConfig(
            n_items=n_items,
            length=input_length(variant, s),
            recent=s.max_len,
            lte_dim=data.lte_dim,
            integration=variant.integration,
            persrec_tokens=variant.persrec_tokens,
            dare=variant.dare,
        )
    )


def run_variant(
    variant: Variant,
    data: VariantData,
    n_items: int,
    settings: ExperimentSettings,
    *,
    seed: int,
    protocol: str,
    progress: ProgressCallback | None = None,
) -> RunResult:
    with deterministic_torch(seed, settings.threads):
        started, cpu = time.perf_counter(), time.process_time()
        model = build_model(variant, data, n_items, settings)
        epochs, best_epoch, best = _fit(model, data, settings, seed, progress)
        train_seconds = time.perf_counter() - started
        train_cpu_seconds = time.process_time() - cpu
        model.eval()
        per_case = evaluate(model, data.test, settings.eval_batch, TEST_KS)
        diagnostics = attention_diagnostics(model, data.test.inputs, settings.eval_batch)
        timing = inference_ms_per_1000(model, data.test.inputs, settings)
    keep = ("ndcg@10", "ndcg@100", "ndcg@500", "recall@10", "recall@100")
    return RunResult(
        variant=variant.name,
        seed=seed,
        protocol=protocol,
        metrics={k: float(per_case[k].mean()) for k in keep},
        per_case={k: per_case[k] for k in keep},
        users=data.test.user,
        diagnostics=diagnostics,
        inference_ms_per_1000_users=timing,
        epochs=epochs,
        best_epoch=best_epoch,
        validation_ndcg=best,
        train_seconds=train_seconds,
        train_cpu_seconds=train_cpu_seconds,
    )


def _fit(
    model: SequenceModel,
    data: VariantData,
    s: ExperimentSettings,
    seed: int,
    progress: ProgressCallback | None,
) -> tuple[int, int, float]:
    rng = np.random.default_rng(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=s.learning_rate, betas=(0.9, 0.98))
    n = len(data.train)
    steps = math.ceil(n / s.batch_size)
    best, best_epoch, stale, epoch = -1.0, 0, 0, 0
    best_state = _state(model)
    lengths = data.train.lengths()
    for epoch in range(1, s.max_epochs + 1):
        model.train()
        order = rng.permutation(n).astype(np.int64)
        loss_value = 0.0
        for step in range(steps):
            batch = order[step * s.batch_size : (step + 1) * s.batch_size]
            optimiser.zero_grad(set_to_none=True)
            loss_value = accumulate_gradients(
                model, data.train, micro_batches(lengths[batch], batch)
            )
            optimiser.step()
            if progress is not None:
                progress(RunProgress(epoch, step + 1, steps, loss_value))
        model.eval()
        val = float(evaluate(model, data.validation, s.eval_batch, (10,))["ndcg@10"].mean())
        if progress is not None:
            progress(RunProgress(epoch, steps, steps, loss_value, val))
        if val > best + _MIN_GAIN:
            best, best_epoch, stale, best_state = val, epoch, 0, _state(model)
        else:
            stale += 1
            if stale >= s.patience:
                break
    model.load_state_dict(best_state)
    return epoch, best_epoch, best


#: what one more forward/backward call costs, in padded item positions (measured order of
#: magnitude on this machine: a call's fixed cost is that of ~300 more positions)
_CALL_COST_POSITIONS = 300


def micro_batches(lengths: I64, batch: I64, call_cost: int = _CALL_COST_POSITIONS) -> list[I64]:
    """``batch`` split into groups of similar length, so that little of each group is
    padding: the rows sorted by length and cut into 1, 2, 4 or 8 equal groups, whichever
    pads least (a group costs its rows x its longest row, plus a fixed cost per call).
    The batch stays the one the shuffle drew: only how it is computed changes."""
    order = np.argsort(-lengths, kind="stable")
    sorted_lengths = lengths[order]
    best: list[I64] = [batch]
    best_cost = len(batch) * int(sorted_lengths[0]) + call_cost if len(batch) else 0
    for parts in (2, 4, 8):
        if parts > len(batch):
            break
        groups = np.array_split(np.arange(len(batch)), parts)
        cost = sum(len(g) * int(sorted_lengths[g[0]]) + call_cost for g in groups)
        if cost < best_cost:
            best, best_cost = [batch[order[g]] for g in groups], cost
    return best


def accumulate_gradients(model: SequenceModel, train: Inputs, groups: list[I64]) -> float:
    """Mean cross-entropy over every target of the groups together, its gradient
    accumulated group by group: the gradient of the whole batch's mean loss, without
    padding every group to the batch's longest row."""
    total = (
        sum(int((train.targets[g] > 0).sum()) for g in groups) if train.targets is not None else 0
    )
    if total == 0:
        raise ValueError("a training batch without targets")
    value = 0.0
    for g in groups:
        items, lte, has, targets = train.tensors(g)
        assert targets is not None
        loss = model.loss(items, targets, lte, has, reduction="sum") / total
        loss.backward()  # type: ignore[no-untyped-call]
        value += float(loss.item())
    return value


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def score(model: SequenceModel, inputs: Inputs, batch: int) -> F64:
    """Scores of every catalogue item at the last input position, one row per case."""
    out = []
    for lo in range(0, len(inputs), batch):
        idx = np.arange(lo, min(lo + batch, len(inputs)), dtype=np.int64)
        items, lte, has, _ = inputs.tensors(idx)
        hidden = model.encode(items, lte, has).hidden[:, -1]
        out.append(model.scores(hidden).numpy().astype(np.float64))
    return np.concatenate(out)


def evaluate(
    model: SequenceModel, cases: EvalSet, batch: int, ks: tuple[int, ...]
) -> dict[str, F64]:
    """Per-case Recall@K and NDCG@K by full ranking, seen items masked."""
    return ranking_metrics(score(model, cases.inputs, batch), cases.targets, cases.seen, ks)


@torch.no_grad()
def attention_diagnostics(model: SequenceModel, inputs: Inputs, batch: int) -> Diagnostics:
    """Last block, final query, averaged over heads: the weight on the last item ÷ the mean
    weight on the other item positions it can see, and the mass on the prefix (or PerSRec
    tokens); plus how many tokens the prediction attends to and how many are processed."""
    ratios, masses, attended, processed = [], [], [], []
    for lo in range(0, len(inputs), batch):
        idx = np.arange(lo, min(lo + batch, len(inputs)), dtype=np.int64)
        items, lte, has, _ = inputs.tensors(idx)
        enc = model.encode(items, lte, has, need_weights=True)
        assert enc.weights is not None
        w = enc.weights[:, :, -1, :].mean(dim=1)
        visible = enc.allowed[:, -1, :]
        last = int(enc.item_index[-1])
        others = enc.item_index[:-1]
        seen_others = visible[:, others]
        other_mean = (w[:, others] * seen_others).sum(1) / seen_others.sum(1).clamp(min=1)
        ok = seen_others.any(dim=1)
        ratios.append((w[:, last] / other_mean)[ok].numpy())
        masses.append(w[:, enc.extra_index].sum(1).numpy())
        attended.append(visible.sum(1).numpy())
        processed.append(((items > 0).sum(1) + len(enc.extra_index)).numpy())
    return Diagnostics(
        attention_ratio=float(np.concatenate(ratios).mean()),
        prefix_attention=float(np.concatenate(masses).mean()),
        tokens_attended=float(np.concatenate(attended).mean()),
        tokens_processed=float(np.concatenate(processed).mean()),
    )


def inference_ms_per_1000(model: SequenceModel, inputs: Inputs, s: ExperimentSettings) -> float:
    """Median over repeats of the wall time to score every test case (forward pass and full
    catalogue scores, batch ``eval_batch``), per 1,000 users."""
    times = []
    for _ in range(s.timing_repeats):
        started = time.perf_counter()
        score(model, inputs, s.eval_batch)
        times.append(time.perf_counter() - started)
    return float(np.median(times) / len(inputs) * 1000 * 1000)
