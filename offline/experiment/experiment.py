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

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from queue import Queue

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
    RunProgress,
    RunResult,
    VariantData,
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
    #: runs in parallel, each in its own process with ``settings.threads`` torch threads
    jobs: int = 1


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


#: Called in the calling process with each finished run, in the order runs finish.
ResultListener = Callable[[RunResult], None]


@dataclass(frozen=True, slots=True)
class _Task:
    number: int
    protocol: str
    variant: Variant
    seed: int
    data: VariantData
    n_items: int
    settings: ExperimentSettings


def run_experiment(
    log: InteractionLog,
    basis: BasisArtifact,
    plan: ExperimentPlan,
    workdir: Path,
    listener: RunListener | None = None,
    *,
    on_result: ResultListener | None = None,
) -> ExperimentResult:
    """Every variant x seed x protocol. Runs are ordered seed by seed (all variants of seed
    0 first), so a run stopped early still holds whole rows of the table; with
    ``plan.jobs > 1`` they run in that many worker processes, the longest inputs first
    within a seed. Each run is deterministic for its seed whatever the scheduling."""
    histories = Histories.from_log(log, basis)
    if plan.max_users is not None:
        histories = histories.take_users(np.arange(min(plan.max_users, len(histories))))
    notes = [
        f"{len(histories)} users, {len(histories.token)} events, {basis.n_items} items; "
        f"basis {basis.basis_version} (K={basis.k})",
        f"LTE window {plan.settings.window_items} items, lag {plan.settings.lag_items} items "
        f"after the input start, max-len {plan.settings.max_len}",
    ]
    tasks: list[_Task] = []
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
        data = {v.name: prepare(histories, split, v, source) for v in plan.variants}
        variants = (
            sorted(plan.variants, key=lambda v: -v.long_factor) if plan.jobs > 1 else plan.variants
        )
        for seed in plan.seeds:
            for variant in variants:
                tasks.append(
                    _Task(
                        len(tasks) + 1,
                        protocol,
                        variant,
                        seed,
                        data[variant.name],
                        basis.n_items,
                        plan.settings,
                    )
                )
    results: dict[int, RunResult] = {}
    if plan.jobs == 1:
        for task in tasks:
            progress = _announce(listener, task, len(tasks))
            results[task.number] = _run(task, progress)
            if on_result is not None:
                on_result(results[task.number])
    else:
        _run_parallel(tasks, plan.jobs, listener, on_result, results)
    rank = {v.name: i for i, v in enumerate(plan.variants)}
    by_plan = sorted(
        tasks,
        key=lambda t: (list(plan.protocols).index(t.protocol), rank[t.variant.name], t.seed),
    )
    ordered = [results[t.number] for t in by_plan]
    return ExperimentResult(ordered, summarise(ordered, plan.bootstrap), notes)


def _announce(listener: RunListener | None, task: _Task, total: int) -> ProgressCallback | None:
    if listener is None:
        return None
    return listener(task.protocol, task.variant.name, task.seed, task.number, total)


def _run(task: _Task, progress: ProgressCallback | None) -> RunResult:
    return run_variant(
        task.variant,
        task.data,
        task.n_items,
        task.settings,
        seed=task.seed,
        protocol=task.protocol,
        progress=progress,
    )


def _run_in_worker(task: _Task, reports: Queue[tuple[int, RunProgress]] | None) -> RunResult:
    progress = None if reports is None else partial(_forward, reports, task.number)
    return _run(task, progress)


def _forward(reports: Queue[tuple[int, RunProgress]], number: int, report: RunProgress) -> None:
    reports.put((number, report))


def _run_parallel(
    tasks: list[_Task],
    jobs: int,
    listener: RunListener | None,
    on_result: ResultListener | None,
    results: dict[int, RunResult],
) -> None:
    """Worker processes are spawned (not forked: torch's thread pools do not survive a
    fork); progress reports come back through a queue and are shown here."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(jobs, mp_context=context) as pool:
        reports: Queue[tuple[int, RunProgress]] | None = (
            manager.Queue() if listener is not None else None
        )
        callbacks: dict[int, ProgressCallback | None] = {}
        pending = {}
        for task in tasks:
            pending[pool.submit(_run_in_worker, task, reports)] = task
        announced: set[int] = set()
        while pending:
            done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            while reports is not None and not reports.empty():
                number, report = reports.get()
                if number not in announced:
                    announced.add(number)
                    callbacks[number] = _announce(listener, tasks[number - 1], len(tasks))
                callback = callbacks.get(number)
                if callback is not None:
                    callback(report)
            for future in done:
                task = pending.pop(future)
                results[task.number] = future.result()
                if on_result is not None:
                    on_result(results[task.number])


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
