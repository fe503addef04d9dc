"""``lte experiment`` — does the LTE help a sequential recommender, on your own log?"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from lte_cli.exit_status import reports_errors
from lte_cli.offline_options import log_format_option, log_path_option
from lte_cli.options import basis_option
from lte_cli.torch_extra import require_torch
from lte_core.basis import BasisArtifact
from lte_core.encoders import EncoderSpec
from offline.datasets import read_interaction_log

#: --quick: one seed, a few epochs, the first users only; the whole table in < 2 minutes.
QUICK_USERS = 150
QUICK_EPOCHS = 2


@click.command("experiment")
@basis_option
@log_path_option
@log_format_option
@click.option(
    "--variants",
    default=",".join(
        [
            "none",
            "none_long",
            "prefix_lagged",
            "prefix_unlagged",
            "late_fusion",
            "feature_injection",
            "prefix_recency",
            "prefix_ae",
            "persrec",
            "dare",
            "dare_prefix",
        ]
    ),
    show_default=True,
    help="Comma-separated variants to compare.",
)
@click.option(
    "--protocol",
    "protocols",
    type=click.Choice(["leave-one-out", "temporal"]),
    multiple=True,
    default=("leave-one-out", "temporal"),
    show_default=True,
    help="Evaluation protocol (repeat the flag).",
)
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=100, show_default=True, help="Maximum epochs."
)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Stop after this many epochs without a better validation NDCG@10.",
)
@click.option("--max-len", type=click.IntRange(min=1), default=20, show_default=True)
@click.option(
    "--window-items",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="LTE window W, in items.",
)
@click.option(
    "--lag-items",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Extra lag L, in items, before the input sequence's first item.",
)
@click.option(
    "--recency-half-life",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Half-life of prefix_recency's encoder, in items.",
)
@click.option(
    "--ae",
    "ae_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Encoder artifact for prefix_ae (default: train one on the training items).",
)
@click.option(
    "--max-users", type=click.IntRange(min=1), default=None, help="Use the first N users."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option(
    "--lr",
    "learning_rate",
    type=click.FloatRange(min=0, min_open=True),
    default=1e-3,
    show_default=True,
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="torch threads; results are reproducible for a fixed count.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Runs in parallel, each in its own process with --threads torch threads "
    "(on 2 cores, --jobs 2 --threads 1 beats --jobs 1 --threads 2).",
)
@click.option("--bootstrap", type=click.IntRange(min=10), default=1000, show_default=True)
@click.option(
    "--quick",
    is_flag=True,
    help=f"One seed, at most {QUICK_EPOCHS} epochs, the first {QUICK_USERS} users, "
    "leave-one-out only: a smoke run of the whole table.",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for results.json, results.md and results.png.",
)
@reports_errors
def experiment(**options: Any) -> None:
    """Train a SASRec-style model once per variant x seed x protocol and compare them.

    LTEs are point-in-time snapshots on the log re-timed by item position (window and lag
    in items), computed by the stream's engine and encoders; lagged LTEs end where the input
    sequence begins (checked). Metrics: full ranking over the catalogue, seen items masked.
    """
    require_torch("experiment")
    from lte_cli.experiment_plot import save_plot  # noqa: PLC0415 - matplotlib
    from lte_cli.run_progress import RunProgressBars  # noqa: PLC0415
    from offline.experiment.experiment import ExperimentPlan, run_experiment  # noqa: PLC0415
    from offline.experiment.report import Summary, markdown, summarise, to_json  # noqa: PLC0415
    from offline.experiment.runner import ExperimentSettings, RunResult  # noqa: PLC0415
    from offline.experiment.variants import parse_variants  # noqa: PLC0415

    quick = options["quick"]
    settings = ExperimentSettings(
        max_len=options["max_len"],
        window_items=options["window_items"],
        lag_items=options["lag_items"],
        recency_half_life=options["recency_half_life"],
        max_epochs=min(options["epochs"], QUICK_EPOCHS) if quick else options["epochs"],
        patience=options["patience"],
        batch_size=options["batch_size"],
        learning_rate=options["learning_rate"],
        threads=options["threads"],
    )
    plan = ExperimentPlan(
        variants=parse_variants(options["variants"]),
        seeds=range(1 if quick else options["seeds"]),
        protocols=("leave-one-out",) if quick else tuple(dict.fromkeys(options["protocols"])),
        settings=settings,
        max_users=QUICK_USERS if quick and options["max_users"] is None else options["max_users"],
        bootstrap=200 if quick else options["bootstrap"],
        ae=EncoderSpec("ae", path=str(options["ae_dir"])) if options["ae_dir"] else None,
        ae_epochs=2 if quick else 10,
        jobs=options["jobs"],
    )
    basis = BasisArtifact.load(options["basis_dir"])
    log = read_interaction_log(options["log_path"], options["log_format"])
    out: Path = options["out"]
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    finished: list[RunResult] = []
    total = len(plan.protocols) * len(plan.variants) * len(plan.seeds)

    def write(results: list[RunResult], summaries: list[Summary], notes: list[str]) -> str:
        wall = time.perf_counter() - started
        notes = [
            *notes,
            f"wall time {wall:.0f}s (threads {settings.threads} x jobs {plan.jobs})",
        ]
        doc = {
            **to_json(results, summaries),
            "settings": {
                "max_len": settings.max_len,
                "window_items": settings.window_items,
                "lag_items": settings.lag_items,
                "recency_half_life": settings.recency_half_life,
                "max_epochs": settings.max_epochs,
                "patience": settings.patience,
                "batch_size": settings.batch_size,
                "learning_rate": settings.learning_rate,
                "threads": settings.threads,
                "jobs": plan.jobs,
                "quick": quick,
                "max_users": plan.max_users,
            },
            "basis_version": basis.basis_version,
            "log": str(options["log_path"]),
            "wall_seconds": wall,
            "notes": notes,
        }
        (out / "results.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        table = markdown(summaries, notes)
        (out / "results.md").write_text("# lte experiment\n\n" + table, encoding="utf-8")
        return table

    def keep(result: RunResult) -> None:
        """Results so far, rewritten after every run: a long run stopped early still
        leaves its finished rows (marked partial)."""
        finished.append(result)
        if len(finished) < total:
            rank = {v.name: i for i, v in enumerate(plan.variants)}
            done = sorted(finished, key=lambda r: (r.protocol, rank[r.variant], r.seed))
            note = f"PARTIAL: {len(finished)} of {total} runs finished"
            write(done, summarise(done, plan.bootstrap), [note])

    with RunProgressBars(disabled=options["quiet"]) as bars:
        result = run_experiment(log, basis, plan, out, bars.listener, on_result=keep)
    table = write(result.results, result.summaries, result.notes)
    png = save_plot(result.summaries, out / "results.png")
    click.echo(table)
    click.echo(f"saved {out / 'results.json'}, {out / 'results.md'}, {png}")
