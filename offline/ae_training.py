"""Training the asymmetric autoencoder with torch (CPU); the only module that imports torch.

The model is :mod:`lte_core.autoencoder`'s encoder with the basis as a frozen decoder
(``requires_grad=False``, never handed to the optimiser), so every LTE it can produce lies in
the basis span. It starts as the ``mean`` encoder (zero output layer) and is fitted with a
sampled softmax (or BPR) of the user's next items against all item content vectors:
``score(item) = item_vector · decoder(encoder(window)) / temperature``. Items the user had
already seen are masked out of the negatives, the way rankings leave them out.

Runs are deterministic for a seed: torch's RNG is forked and seeded, numpy draws come from
one ``Generator``, deterministic algorithms are switched on and the thread count is fixed
(one by default), so the same inputs give bit-identical weights and the same
``encoder_version``.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from lte_core.autoencoder import AutoencoderArtifact, AutoencoderEncoder, AutoencoderWeights
from lte_core.basis import BasisArtifact
from lte_core.errors import ConfigError
from offline.evaluation import ranking_metrics
from offline.training_examples import (
    Examples,
    ExampleSpec,
    IndexedLog,
    Ragged,
    build_examples,
    time_split,
)

LOSSES = ("softmax", "bpr")
_MASKED = -1e9
_MIN_IMPROVEMENT = 1e-4


@dataclass(frozen=True, slots=True)
class TrainingSettings:
    hidden: int = 256
    loss: str = "softmax"
    temperature: float = 0.05
    #: Negatives per batch; at least the catalog size means the exact softmax over all items.
    negatives: int = 2048
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    max_epochs: int = 30
    patience: int = 3
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"--loss: expected one of {', '.join(LOSSES)}, got {self.loss!r}")
        positive = {
            "--hidden": self.hidden,
            "--temperature": self.temperature,
            "--negatives": self.negatives,
            "--batch-size": self.batch_size,
            "--lr": self.learning_rate,
            "--epochs": self.max_epochs,
            "--patience": self.patience,
            "--threads": self.threads,
        }
        for flag, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{flag}: must be positive, got {value}")
        if self.weight_decay < 0:
            raise ConfigError(f"--weight-decay: must not be negative, got {self.weight_decay}")


@dataclass(frozen=True, slots=True)
class EpochReport:
    epoch: int
    train_loss: float
    validation_loss: float
    improved: bool


@dataclass(frozen=True, slots=True)
class TrainingProgress:
    """Sent after every optimiser step; ``epoch_report`` after the last step of an epoch."""

    epoch: int
    step: int
    steps_per_epoch: int
    loss: float
    epoch_report: EpochReport | None = None


ProgressCallback = Callable[[TrainingProgress], None]


@dataclass(frozen=True, slots=True)
class TrainingResult:
    weights: AutoencoderWeights
    history: tuple[EpochReport, ...]
    best_epoch: int
    #: Validation loss of the untrained model, which is the ``mean`` encoder.
    initial_validation_loss: float
    best_validation_loss: float
    stopped_early: bool


class AsymmetricAutoencoder(nn.Module):
    """``c = B·x + W2·relu(W1·[x, log1p n] + b1) + b2``, ``v = Bᵀ·c``, ``B`` frozen."""

    def __init__(self, basis: torch.Tensor, hidden: int) -> None:
        super().__init__()
        k, d = basis.shape
        self.hidden = nn.Linear(d + 1, hidden)
        self.out = nn.Linear(hidden, k)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.decoder = nn.Parameter(basis.clone(), requires_grad=False)

    def coefficients(self, mean: torch.Tensor, log_count: torch.Tensor) -> torch.Tensor:
        features = torch.cat([mean, log_count[:, None]], dim=1)
        residual: torch.Tensor = self.out(torch.relu(self.hidden(features)))
        return mean @ self.decoder.T + residual

    def forward(self, mean: torch.Tensor, log_count: torch.Tensor) -> torch.Tensor:
        return self.coefficients(mean, log_count) @ self.decoder

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def weights(self) -> AutoencoderWeights:
        def array(t: torch.Tensor) -> npt.NDArray[np.float32]:
            return t.detach().cpu().numpy().astype(np.float32, copy=True)

        return AutoencoderWeights(
            hidden_weight=array(self.hidden.weight),
            hidden_bias=array(self.hidden.bias),
            out_weight=array(self.out.weight),
            out_bias=array(self.out.bias),
        )


@dataclass(frozen=True, slots=True)
class _Batch:
    mean: torch.Tensor
    log_count: torch.Tensor
    pos_owner: torch.Tensor
    pos_item: torch.Tensor
    pos_weight: torch.Tensor
    masked_owner: npt.NDArray[np.int64]
    masked_item: npt.NDArray[np.int64]


def _inputs(examples: Examples) -> tuple[torch.Tensor, torch.Tensor]:
    s = examples.summary
    mean = torch.from_numpy((s.sums / s.weight_sums[:, None]).astype(np.float32))
    log_count = torch.from_numpy(np.log1p(s.counts.astype(np.float32)))
    return mean, log_count


def _batch(
    examples: Examples, idx: npt.NDArray[np.int64], inputs: tuple[torch.Tensor, torch.Tensor]
) -> _Batch:
    targets: Ragged = examples.targets.take(idx)
    seen: Ragged = examples.seen.take(idx)
    owners = targets.owners()
    weight = 1.0 / targets.lengths().astype(np.float32)
    index = torch.from_numpy(idx)
    return _Batch(
        mean=inputs[0][index],
        log_count=inputs[1][index],
        pos_owner=torch.from_numpy(owners),
        pos_item=torch.from_numpy(targets.values),
        pos_weight=torch.from_numpy(weight[owners]),
        masked_owner=np.concatenate([owners, seen.owners()]),
        masked_item=np.concatenate([targets.values, seen.values]),
    )


class _Objective:
    """The loss of a batch against a candidate set of items (all items, or a sample)."""

    def __init__(self, item_vectors: torch.Tensor, settings: TrainingSettings) -> None:
        self.items = item_vectors
        self.n = int(item_vectors.shape[0])
        self.settings = settings
        self.sampled = settings.negatives < self.n

    def candidates(self, rng: np.random.Generator) -> npt.NDArray[np.int64]:
        if not self.sampled:
            return np.arange(self.n, dtype=np.int64)
        return np.sort(rng.choice(self.n, self.settings.negatives, replace=False)).astype(np.int64)

    def __call__(
        self, vectors: torch.Tensor, batch: _Batch, candidates: npt.NDArray[np.int64]
    ) -> torch.Tensor:
        tau = self.settings.temperature
        column = np.full(self.n, -1, dtype=np.int64)
        column[candidates] = np.arange(len(candidates))
        cols = column[batch.masked_item]
        hit = cols >= 0
        mask = torch.zeros((len(vectors), len(candidates)), dtype=torch.bool)
        mask[torch.from_numpy(batch.masked_owner[hit]), torch.from_numpy(cols[hit])] = True
        negative = vectors @ self.items[torch.from_numpy(candidates)].T / tau
        positive = (vectors[batch.pos_owner] * self.items[batch.pos_item]).sum(dim=1) / tau
        if self.settings.loss == "softmax":
            if self.sampled:
                negative = negative + math.log(self.n / len(candidates))
            negative = negative.masked_fill(mask, _MASKED)
            per_positive = (
                torch.logaddexp(positive, torch.logsumexp(negative, dim=1)[batch.pos_owner])
                - positive
            )
        else:
            valid = (~mask).to(vectors.dtype)[batch.pos_owner]
            margins = nn.functional.softplus(negative[batch.pos_owner] - positive[:, None])
            per_positive = (margins * valid).sum(dim=1) / valid.sum(dim=1).clamp(min=1.0)
        return (per_positive * batch.pos_weight).sum() / len(vectors)


@contextmanager
def deterministic_torch(seed: int, threads: int) -> Iterator[None]:
    """Seeded torch RNG (forked, so the caller's stream is untouched), deterministic
    algorithms and a fixed thread count: same inputs, bit-identical weights."""
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous_deterministic)
            torch.set_num_threads(previous_threads)


def _validation_loss(
    model: AsymmetricAutoencoder,
    objective: _Objective,
    examples: Examples,
    inputs: tuple[torch.Tensor, torch.Tensor],
    settings: TrainingSettings,
) -> float:
    """Mean per-example loss; sampled candidates come from a fixed seed so epochs compare."""
    rng = np.random.default_rng(settings.seed + 1)
    total = 0.0
    with torch.no_grad():
        for lo in range(0, len(examples), settings.batch_size):
            idx = np.arange(lo, min(lo + settings.batch_size, len(examples)), dtype=np.int64)
            batch = _batch(examples, idx, inputs)
            vectors = model(batch.mean, batch.log_count)
            total += float(objective(vectors, batch, objective.candidates(rng))) * len(idx)
    return total / len(examples)


def train_encoder(
    train: Examples,
    validation: Examples,
    basis: BasisArtifact,
    settings: TrainingSettings,
    progress: ProgressCallback | None = None,
) -> TrainingResult:
    """A fresh model on ``basis``, fitted by :func:`fit_model` under the seed's control."""
    with deterministic_torch(settings.seed, settings.threads):
        model = AsymmetricAutoencoder(torch.from_numpy(basis.basis.copy()), settings.hidden)
        return fit_model(model, train, validation, basis, settings, progress=progress)


def fit_model(
    model: AsymmetricAutoencoder,
    train: Examples,
    validation: Examples,
    basis: BasisArtifact,
    settings: TrainingSettings,
    *,
    progress: ProgressCallback | None = None,
) -> TrainingResult:
    """Train ``model``'s encoder in place; stop when the validation loss has not improved
    for ``patience`` epochs and leave the model at its best epoch. The decoder is not handed
    to the optimiser. Batch order and negatives follow ``settings.seed``."""
    with deterministic_torch(settings.seed, settings.threads):
        return _fit(model, train, validation, basis, settings, progress=progress)


def _fit(
    model: AsymmetricAutoencoder,
    train: Examples,
    validation: Examples,
    basis: BasisArtifact,
    settings: TrainingSettings,
    *,
    progress: ProgressCallback | None,
) -> TrainingResult:
    if len(train) == 0 or len(validation) == 0:
        raise ConfigError(
            f"no {'training' if len(train) == 0 else 'validation'} examples: no user has both "
            "a non-empty window and items in the horizon; use a longer log or other window "
            "settings"
        )
    rng = np.random.default_rng(settings.seed)
    objective = _Objective(torch.from_numpy(basis.item_vectors.copy()), settings)
    optimiser = torch.optim.AdamW(
        model.trainable(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    train_inputs, val_inputs = _inputs(train), _inputs(validation)
    model.eval()
    initial = _validation_loss(model, objective, validation, val_inputs, settings)
    best_loss, best_epoch, best_state = initial, 0, _snapshot(model)
    history: list[EpochReport] = []
    steps = math.ceil(len(train) / settings.batch_size)
    stale = 0
    for epoch in range(1, settings.max_epochs + 1):
        model.train()
        order = rng.permutation(len(train)).astype(np.int64)
        running = 0.0
        last = 0.0
        for step in range(steps):
            idx = order[step * settings.batch_size : (step + 1) * settings.batch_size]
            batch = _batch(train, idx, train_inputs)
            loss = objective(model(batch.mean, batch.log_count), batch, objective.candidates(rng))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            last = loss.item()
            running += last * len(idx)
            if progress is not None and step + 1 < steps:
                progress(TrainingProgress(epoch, step + 1, steps, last))
        model.eval()
        val_loss = _validation_loss(model, objective, validation, val_inputs, settings)
        improved = val_loss < best_loss - _MIN_IMPROVEMENT * abs(best_loss)
        if improved:
            best_loss, best_epoch, best_state, stale = val_loss, epoch, _snapshot(model), 0
        else:
            stale += 1
        report = EpochReport(epoch, running / len(train), val_loss, improved)
        history.append(report)
        if progress is not None:
            progress(TrainingProgress(epoch, steps, steps, last, report))
        if stale >= settings.patience:
            break
    model.load_state_dict(best_state)
    return TrainingResult(
        weights=model.weights(),
        history=tuple(history),
        best_epoch=best_epoch,
        initial_validation_loss=initial,
        best_validation_loss=best_loss,
        stopped_early=stale >= settings.patience,
    )


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


@dataclass(frozen=True, slots=True)
class DataSplitSettings:
    """How training examples are drawn from a log (see :func:`time_split`)."""

    stride: int
    validation_span: int
    until: float | None = None


@dataclass(frozen=True, slots=True)
class TrainedEncoder:
    artifact: AutoencoderArtifact
    result: TrainingResult
    train_examples: int
    validation_examples: int


def library_versions() -> dict[str, str]:
    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "unknown"

    return {
        "lte-stream": version("lte-stream"),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "safetensors": version("safetensors"),
        "python": platform.python_version(),
    }


def train_from_log(
    log: IndexedLog,
    basis: BasisArtifact,
    spec: ExampleSpec,
    split: DataSplitSettings,
    settings: TrainingSettings,
    *,
    source: str = "",
    progress: ProgressCallback | None = None,
) -> TrainedEncoder:
    """Examples from ``log`` (only events before ``split.until``), a time-based validation
    split, training, and the stamped artifact with everything needed to reproduce it."""
    if len(log) == 0:
        raise ConfigError("the interaction log has no events with items known to the basis")
    until = split.until if split.until is not None else float(np.nextafter(log.last_ts, math.inf))
    known = log.before(until)
    if len(known) == 0:
        raise ConfigError("--until: no events before it")
    clocks = time_split(
        spec,
        known.first_ts,
        until,
        stride=split.stride,
        validation_span=split.validation_span,
    )
    train = build_examples(known, basis.item_vectors, spec, clocks.train)
    validation = build_examples(known, basis.item_vectors, spec, clocks.validation)
    result = train_encoder(train, validation, basis, settings, progress)
    scores = _validation_ndcg(result.weights, basis, validation)
    config: dict[str, Any] = {
        "basis_version": basis.basis_version,
        "basis_kind": basis.kind,
        "window": {
            "window": spec.window.window,
            "lag": spec.window.lag,
            "bucket": spec.window.bucket,
            "horizon": spec.horizon,
            "targets_after": spec.targets_after,
        },
        "training": {
            **asdict(settings),
            "stride": split.stride,
            "validation_span": split.validation_span,
        },
        "data": {
            "source": source,
            "until": until,
            "events": len(known),
            "unknown_item_events": log.unknown_items,
            "users": len(np.unique(known.user)),
            "train_examples": len(train),
            "validation_examples": len(validation),
            "train_clocks": [float(clocks.train[0]), float(clocks.train[-1])],
            "validation_from": clocks.validation_from,
        },
        "metrics": {
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "stopped_early": result.stopped_early,
            "validation_loss_mean_encoder": result.initial_validation_loss,
            "validation_loss": result.best_validation_loss,
            "validation_ndcg@10_mean_encoder": scores[0],
            "validation_ndcg@10": scores[1],
            "history": [asdict(r) for r in result.history],
        },
        "created_with": library_versions(),
    }
    artifact = AutoencoderArtifact.create(result.weights, config)
    return TrainedEncoder(artifact, result, len(train), len(validation))


def _validation_ndcg(
    weights: AutoencoderWeights, basis: BasisArtifact, validation: Examples
) -> tuple[float, float]:
    """NDCG@10 on the validation examples of the untrained (= mean) and the trained encoder."""
    untrained = replace(
        weights,
        out_weight=np.zeros_like(weights.out_weight),
        out_bias=np.zeros_like(weights.out_bias),
    )
    out = []
    for w in (untrained, weights):
        probe = AutoencoderArtifact.create(w, {"basis_version": basis.basis_version})
        vectors = AutoencoderEncoder(probe, basis).encode(validation.summary).vectors
        scores = vectors @ basis.item_vectors.T.astype(np.float64)
        out.append(ranking_metrics(scores, validation.targets, validation.seen, (10,))["ndcg@10"])
    return float(out[0].mean()), float(out[1].mean())
