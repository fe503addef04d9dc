"""Whole experiment runs, small: the planted-taste log where the lagged LTE must win, and a
``lte experiment --quick`` smoke run through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
from click.testing import CliRunner

from lte_cli.main import cli
from offline.evaluation import user_bootstrap
from offline.experiment.experiment import ExperimentPlan, run_experiment
from offline.experiment.planted import write_planted_taste
from offline.experiment.runner import (
    ExperimentSettings,
    LTESource,
    RunResult,
    prepare,
    run_variant,
)
from offline.experiment.sequences import Histories, leave_one_out
from offline.experiment.variants import VARIANTS
from offline.synthetic import PlantedTasteSpec, planted_taste


def test_planted_taste_prefix_lagged_beats_none() -> None:
    """After every burst the user returns to a taste the recent items do not show; only the
    lagged LTE carries it. Fails if the LTE is not wired into the model."""
    log, catalog = planted_taste(PlantedTasteSpec(users=160, seed=1))
    basis = catalog.basis()
    histories = Histories.from_log(log, basis)
    split = leave_one_out(histories)
    s = ExperimentSettings(
        max_len=5, window_items=60, max_epochs=5, patience=5, batch_size=32, threads=1
    )
    source = LTESource(histories, basis, s)
    results = {}
    for name in ("none", "prefix_lagged"):
        data = prepare(histories, split, VARIANTS[name], source)
        results[name] = run_variant(
            VARIANTS[name], data, basis.n_items, s, seed=0, protocol="leave-one-out"
        )
    none, lagged = results["none"], results["prefix_lagged"]
    assert lagged.metrics["ndcg@10"] > none.metrics["ndcg@10"] + 0.03
    assert lagged.metrics["recall@10"] > none.metrics["recall@10"] + 0.08
    gain = user_bootstrap(
        lagged.users, lagged.per_case["ndcg@10"], none.per_case["ndcg@10"], 500, 0
    )
    assert gain.low > 0
    assert lagged.diagnostics.prefix_attention > 0
    assert lagged.diagnostics.tokens_attended == none.diagnostics.tokens_attended + 1


def test_quick_experiment_through_the_cli(tmp_path: Path) -> None:
    log_path = write_planted_taste(tmp_path, PlantedTasteSpec(users=40, history=30, seed=2))
    basis_dir = tmp_path / "basis"
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        [
            "experiment",
            "--log", str(log_path),
            "--basis", str(basis_dir),
            "--quick",
            "--max-len", "5",
            "--window-items", "20",
            "--threads", "1",
            "--quiet",
            "--out", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "results.json").read_text())
    variants = {r["variant"] for r in doc["rows"]}
    assert variants == set(VARIANTS)
    for row in doc["rows"]:
        for key in ("ndcg@10", "ndcg@100", "ndcg@500", "recall@10", "recall@100"):
            assert 0.0 <= row[key] <= 1.0
        assert np.isfinite(row["attention_ratio"])
        assert row["inference_ms_per_1000_users"] > 0
    by_variant = {r["variant"]: r for r in doc["rows"]}
    assert by_variant["none_long"]["tokens_attended"] > by_variant["none"]["tokens_attended"]
    assert by_variant["persrec"]["tokens_attended"] <= 5 + 4
    assert "prefix_lagged" in (out / "results.md").read_text()
    assert (out / "results.png").stat().st_size > 0


def test_unknown_variant_is_a_one_line_error(tmp_path: Path) -> None:
    _, catalog = planted_taste(PlantedTasteSpec(users=5, history=10))
    basis_dir = catalog.basis().save(tmp_path / "basis")
    log_path = tmp_path / "log.jsonl"
    log_path.write_bytes(orjson.dumps({"user_id": "u0", "item_id": "i1", "ts": 1.0}))
    result = CliRunner().invoke(
        cli,
        ["experiment", "--log", str(log_path), "--basis", str(basis_dir),
         "--variants", "none,bogus", "--out", str(tmp_path / "o")],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "--variants: unknown bogus" in result.output


def test_parallel_runs_give_the_results_of_sequential_ones(tmp_path: Path) -> None:
    """--jobs runs each variant x seed in a worker process: same numbers, same order, and
    every finished run reported once."""
    log, catalog = planted_taste(PlantedTasteSpec(users=30, history=24, seed=3))
    basis = catalog.basis()
    s = ExperimentSettings(max_len=5, window_items=20, max_epochs=1, batch_size=16, threads=1)
    variants = [VARIANTS["none_long"], VARIANTS["prefix_lagged"]]
    rows = {}
    for jobs in (1, 2):
        plan = ExperimentPlan(variants, seeds=[0, 1], settings=s, bootstrap=10, jobs=jobs)
        finished: list[RunResult] = []
        result = run_experiment(log, basis, plan, tmp_path, on_result=finished.append)
        rows[jobs] = [(r.variant, r.seed, r.metrics, r.validation_ndcg) for r in result.results]
        assert sorted((r.variant, r.seed) for r in finished) == sorted(
            (v.name, seed) for v in variants for seed in (0, 1)
        )
    assert rows[1] == rows[2]
    assert [(v, seed) for v, seed, _, _ in rows[2]] == [
        (v.name, seed) for v in variants for seed in (0, 1)
    ]
