"""``lte train-encoder`` — fit the asymmetric-autoencoder encoder on an interaction log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lte_cli.exit_status import reports_errors
from lte_cli.instants import INSTANT
from lte_cli.offline_options import load_inputs, log_options
from lte_cli.options import DURATION
from lte_cli.torch_extra import require_torch
from lte_core.window import WindowSpec
from offline.training_examples import ExampleSpec


@click.command("train-encoder")
@log_options
@click.option(
    "--lag",
    envvar="LTE_LAG",
    type=DURATION,
    default="28d",
    show_default=True,
    show_envvar=True,
    help="Lag L of the windows the encoder will be fed (the worker's --lag).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory to write the encoder artifact to; {version} is replaced by the "
    "encoder_version (e.g. artifacts/encoders/{version}).",
)
@click.option(
    "--until",
    type=INSTANT,
    default=None,
    help="Use only events before this time (Unix seconds or a UTC date). Default: all.",
)
@click.option(
    "--stride",
    envvar="LTE_TRAIN_STRIDE",
    type=DURATION,
    default="1d",
    show_default=True,
    show_envvar=True,
    help="Spacing of the clocks T at which examples are taken.",
)
@click.option(
    "--val-span",
    envvar="LTE_TRAIN_VAL_SPAN",
    type=DURATION,
    default="28d",
    show_default=True,
    show_envvar=True,
    help="Validation: examples whose targets fall in this last span before --until.",
)
@click.option("--hidden", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--loss", type=click.Choice(["softmax", "bpr"]), default="softmax", show_default=True)
@click.option(
    "--temperature", type=click.FloatRange(min=0, min_open=True), default=0.05, show_default=True
)
@click.option(
    "--negatives",
    type=click.IntRange(min=1),
    default=2048,
    show_default=True,
    help="Sampled negatives per batch; >= catalog size means the exact softmax.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option(
    "--lr",
    "learning_rate",
    type=click.FloatRange(min=0, min_open=True),
    default=1e-3,
    show_default=True,
)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=1e-4, show_default=True)
@click.option("--epochs", "max_epochs", type=click.IntRange(min=1), default=30, show_default=True)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Stop after this many epochs without a better validation loss.",
)
@click.option("--seed", envvar="LTE_SEED", type=int, default=0, show_default=True, show_envvar=True)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="torch threads; results are reproducible for a fixed count.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@reports_errors
def train_encoder(**options: Any) -> None:
    """Train an encoder whose decoder is the fixed basis, on lagged windows of a log.

    Examples are (user, clock T) pairs: the input is the user's window at T exactly as the
    worker holds it, the targets are the user's new items in the horizon after the window
    end. The last --val-span before --until validates (early stopping); training examples
    read no event from that span.
    """
    require_torch("train-encoder")
    from lte_cli.training_progress import TrainingProgressBar  # noqa: PLC0415
    from offline.ae_training import (  # noqa: PLC0415 - torch only when training
        DataSplitSettings,
        TrainingSettings,
        train_from_log,
    )

    basis, log = load_inputs(options["basis_dir"], options["log_path"], options["log_format"])
    spec = ExampleSpec(
        WindowSpec(options["window"], options["lag"], options["bucket"]), options["horizon"]
    )
    settings = TrainingSettings(
        hidden=options["hidden"],
        loss=options["loss"],
        temperature=options["temperature"],
        negatives=options["negatives"],
        batch_size=options["batch_size"],
        learning_rate=options["learning_rate"],
        weight_decay=options["weight_decay"],
        max_epochs=options["max_epochs"],
        patience=options["patience"],
        seed=options["seed"],
        threads=options["threads"],
    )
    split = DataSplitSettings(options["stride"], options["val_span"], options["until"])
    click.echo(f"training on {len(log)} events, basis {basis.basis_version}, {spec.describe()}")
    with TrainingProgressBar(settings.max_epochs, disabled=options["quiet"]) as bar:
        trained = train_from_log(
            log,
            basis,
            spec,
            split,
            settings,
            source=options["log_path"].name,
            progress=bar.update,
        )
    m = trained.artifact.config["metrics"]
    out = Path(str(options["out"]).replace("{version}", trained.artifact.encoder_version))
    trained.artifact.save(out)
    click.echo(
        f"{trained.train_examples} training / {trained.validation_examples} validation "
        f"examples; best epoch {m['best_epoch']} of {m['epochs_run']}"
    )
    click.echo(
        f"validation loss {m['validation_loss_mean_encoder']:.4f} (mean encoder) -> "
        f"{m['validation_loss']:.4f}; NDCG@10 {m['validation_ndcg@10_mean_encoder']:.4f} -> "
        f"{m['validation_ndcg@10']:.4f}"
    )
    click.echo(f"encoder {trained.artifact.name} -> {out}")
