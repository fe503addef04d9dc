"""``lte experiment`` end to end: histories, protocols, the autoencoder for ``prefix_ae``,
every variant x seed x protocol, and the summary.

``prefix_ae`` reads an encoder artifact: the one given (``ae``), or one trained here by
:func:`offline.ae_training.train_encoder` on the *training* part of the split only, with the
same positional windows the experiment feeds it (window ``window_items``, lag
``lag_items``, bucket 1 item; targets: the next ``max_len`` items after the window end),
validated on a held-out tenth of the users. It is saved as a normal artifact and loaded
through ``build_encoder``, as the worker would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lte_core.autoencoder import AutoencoderArtifact
from lte_core.basis import BasisArtifact
from lte_core.encoders import EncoderSpec
from lte_core.errors import ConfigError
from lte_core.window import WindowSpec
from offline.ae_training import TrainingSettings, train_encoder
from offline.datasets import InteractionLog
from offline.experiment.lte_features import positional_log
from offline.experiment.report import Summary, summarise
from offline.experiment.runner import (
    ExperimentSettings,
    LTESource,
    ProgressCallback,
    RunResult,
    prepare,
    run_variant,
)
from offline.experiment.sequences import (
    LEAVE_ONE_OUT,
    TEMPORAL,
    Histories,
    Split,
    leave_one_out,
    temporal_cuts,
    temporal_split,
)
from offline.experiment.variants import AE, Variant
from offline.training_examples import ExampleSpec, IndexedLog, build_examples


@dataclass(frozen=True, slots=True)
class ExperimentPlan:
    variants: Sequence[Variant]
    seeds: Sequence[int]
    protocols: Sequence[str] = (LEAVE_ONE_OUT,)
    settings: ExperimentSettings = field(default_factory=ExperimentSettings)
    #: at most this many users (the first ones in id order); ``None``: all
    max_users: int | None = None
    bootstrap: int = 1000
    ae: EncoderSpec | None = None
    ae_epochs: int = 10


@dataclass(frozen=True, slots=True)
class ExperimentResult:
    results: list[RunResult]
    summaries: list[Summary]
    notes: list[str]


#: Called before each run with (protocol, variant, seed, run number, runs); returns the
#: run's progress callback.
RunListener = Callable[[str, str, int, int, int], ProgressCallback | None]


def make_split(histories: Histories, protocol: str) -> Split:
    if protocol == LEAVE_ONE_OUT:
        return leave_one_out(histories)
    if protocol == TEMPORAL:
        return temporal_split(histories, *temporal_cuts(histories))
    raise ConfigError(f"--protocol: expected {LEAVE_ONE_OUT} or {TEMPORAL}, got {protocol!r}")


def run_experiment(
    log: InteractionLog,
    basis: BasisArtifact,
    plan: ExperimentPlan,
    workdir: Path,
    listener: RunListener | None = None,
) -> ExperimentResult:
    histories = Histories.from_log(log, basis)
    if plan.max_users is not None:
        histories = histories.take_users(np.arange(min(plan.max_users, len(histories))))
    notes = [
        f"{len(histories)} users, {len(histories.token)} events, {basis.n_items} items; "
        f"basis {basis.basis_version} (K={basis.k})",
        f"LTE window {plan.settings.window_items} items, lag {plan.settings.lag_items} items "
        f"after the input start, max-len {plan.settings.max_len}",
    ]
    results: list[RunResult] = []
    total = len(plan.protocols) * len(plan.variants) * len(plan.seeds)
    number = 0
    for protocol in plan.protocols:
        split = make_split(histories, protocol)
        ae = plan.ae
        if ae is None and any(v.encoder == AE for v in plan.variants):
            ae = train_positional_encoder(
                histories,
                split,
                basis,
                plan.settings,
                workdir / f"encoder-{protocol}",
                epochs=plan.ae_epochs,
            )
            notes.append(f"{protocol}: prefix_ae reads {ae.path} (trained on training items)")
        source = LTESource(histories, basis, plan.settings, ae)
        for variant in plan.variants:
            data = prepare(histories, split, variant, source)
            for seed in plan.seeds:
                number += 1
                progress = (
                    listener(protocol, variant.name, seed, number, total) if listener else None
                )
                results.append(
                    run_variant(
                        variant,
                        data,
                        basis.n_items,
                        plan.settings,
                        seed=seed,
                        protocol=protocol,
                        progress=progress,
                    )
                )
    return ExperimentResult(results, summarise(results, plan.bootstrap), notes)


def train_positional_encoder(
    histories: Histories,
    split: Split,
    basis: BasisArtifact,
    settings: ExperimentSettings,
    out: Path,
    *,
    epochs: int = 10,
    seed: int = 0,
) -> EncoderSpec:
    """The fixed-decoder autoencoder fitted on training items only (see the module doc)."""
    positions = histories.positions()
    owners = histories.owners()
    keep = positions < split.train_end[owners]
    log = positional_log(
        histories.user_ids[owners][keep], histories.item_ids[keep], positions[keep]
    )
    indexed = IndexedLog.from_log(log, basis)
    spec = ExampleSpec(WindowSpec(settings.window_items, settings.lag_items, 1), settings.max_len)
    clocks = np.arange(1, int(positions.max()) + 1, settings.max_len, dtype=np.float64)
    examples = build_examples(indexed, basis.item_vectors, spec, clocks)
    held_out = (examples.user % 10) == 0
    train = examples.take(np.flatnonzero(~held_out).astype(np.int64))
    validation = examples.take(np.flatnonzero(held_out).astype(np.int64))
    result = train_encoder(
        train,
        validation,
        basis,
        TrainingSettings(
            negatives=basis.n_items,
            max_epochs=epochs,
            seed=seed,
            threads=settings.threads,
        ),
    )
    artifact = AutoencoderArtifact.create(
        result.weights,
        {
            "basis_version": basis.basis_version,
            "window": {
                "window": settings.window_items,
                "lag": settings.lag_items,
                "bucket": 1,
                "horizon": settings.max_len,
                "unit": "items",
            },
            "data": {"source": "lte experiment", "protocol": split.protocol},
        },
    )
    path = artifact.save(out)
    return EncoderSpec("ae", path=str(path))
