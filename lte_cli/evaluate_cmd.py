"""``lte evaluate`` — next-item retrieval quality of LTE encoders on a time split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from lte_cli.exit_status import reports_errors
from lte_cli.instants import INSTANT
from lte_cli.offline_options import load_inputs, log_options
from lte_cli.options import DURATION
from lte_core.encoders import EncoderSpec
from offline.evaluation import EvaluationSetup, evaluate

DEFAULT_ENCODERS = ("mean", "recency:7d", "recency:30d", "recency:90d")


@click.command("evaluate")
@log_options
@click.option(
    "--split-at",
    type=INSTANT,
    required=True,
    help="Evaluation clocks start here (Unix seconds or a UTC date, e.g. 1998-03-01).",
)
@click.option(
    "--lag",
    "lags",
    type=DURATION,
    multiple=True,
    default=("0s", "28d"),
    show_default=True,
    help="Lags to evaluate (repeat the flag); 0s is the LTE without lag.",
)
@click.option(
    "--encoder",
    "encoders",
    multiple=True,
    default=DEFAULT_ENCODERS,
    show_default=True,
    help="mean | recency:<half-life> | ae:<artifact dir> (repeat the flag).",
)
@click.option(
    "--every",
    type=DURATION,
    default="7d",
    show_default=True,
    help="Spacing of the evaluation clocks after --split-at.",
)
@click.option(
    "--top-k", "ks", type=click.IntRange(min=1), multiple=True, default=(10, 20), show_default=True
)
@click.option(
    "--bootstrap",
    type=click.IntRange(min=10),
    default=1000,
    show_default=True,
    help="Resamples of users for the confidence intervals.",
)
@click.option("--seed", envvar="LTE_SEED", type=int, default=0, show_default=True, show_envvar=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("var/evaluation"),
    show_default=True,
    help="Directory for evaluation.json and evaluation.png.",
)
@reports_errors
def evaluate_cmd(**options: Any) -> None:
    """Recall@K and NDCG@K of dot-product retrieval with each encoder's LTE, and popularity.

    At every clock T from --split-at (every --every, while T + horizon fits in the log), each
    user with a non-empty window under every lag and new items in [T, T + horizon) is a
    case; items seen before T are not candidates. An ae encoder must have been trained on
    events before --split-at.
    """
    from lte_cli.evaluation_plot import save_plot  # noqa: PLC0415 - matplotlib

    basis, log = load_inputs(options["basis_dir"], options["log_path"], options["log_format"])
    setup = EvaluationSetup(
        window=options["window"],
        bucket=options["bucket"],
        lags=tuple(dict.fromkeys(options["lags"])),
        horizon=options["horizon"],
        split_at=options["split_at"],
        every=options["every"],
        ks=tuple(sorted(set(options["ks"]))),
        bootstrap=options["bootstrap"],
        seed=options["seed"],
    )
    specs = [EncoderSpec.parse(text) for text in dict.fromkeys(options["encoders"])]
    report = evaluate(log, basis, setup, specs)
    click.echo(
        f"{report.cases} cases ({report.users} users) at {len(report.clocks)} clocks, "
        f"basis {basis.basis_version}"
    )
    click.echo(report.table())
    for note in report.notes:
        click.echo(f"note: {note}")
    out: Path = options["out"]
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "evaluation.json"
    doc = {
        **report.to_json(),
        "basis_version": basis.basis_version,
        "log": str(options["log_path"]),
    }
    json_path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    png_path = save_plot(report, out / "evaluation.png")
    click.echo(f"saved {json_path}")
    click.echo(f"saved {png_path}")
