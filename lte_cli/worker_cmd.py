"""``lte worker`` — the streaming updater."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from lte_cli.exit_status import reports_errors
from lte_cli.options import (
    DURATION,
    basis_option,
    bucket_option,
    encoder_option,
    kafka_options,
    kafka_settings,
    lag_option,
    log_level_option,
    metrics_host_option,
    partitions_option,
    session_timeout_option,
    type_weights_option,
    updates_topic_option,
    window_option,
)
from lte_core.encoders import EncoderSpec
from lte_core.errors import ConfigError
from lte_core.events import EventRules
from lte_core.window import WindowSpec

if TYPE_CHECKING:
    from streams.clock import SimulatedTime
    from streams.settings import WorkerSettings


def parse_type_weights(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if not sep or not name.strip() or not (math.isfinite(weight) and weight > 0):
            raise ConfigError(
                f"--type-weights: expected type=weight pairs with finite weights > 0, e.g. "
                f"view=1,cart=3,order=5; got {part!r}"
            )
        weights[name.strip()] = weight
    return weights


def simulated_time(options: dict[str, Any]) -> SimulatedTime | None:
    """The ``--clock-*`` flags as a :class:`SimulatedTime`, or None for the wall clock."""
    from streams.clock import SimulatedTime  # noqa: PLC0415

    start = options["clock_start"]
    if start is None:
        for flag in ("speed", "anchor", "end"):
            if options[f"clock_{flag}"] is not None:
                raise ConfigError(f"--clock-{flag}: needs --clock-start")
        return None
    speed = options["clock_speed"]
    anchor = options["clock_anchor"]
    return SimulatedTime(
        start=start,
        speed=1.0 if speed is None else speed,
        anchor=time.time() if anchor is None else anchor,
        end=options["clock_end"],
    )


@click.command()
@kafka_options
@basis_option
@window_option
@lag_option
@bucket_option
@encoder_option
@click.option(
    "--now",
    envvar="LTE_NOW",
    type=float,
    default=None,
    show_envvar=True,
    help="Freeze the clock at this Unix time (replays, backfills). Default: wall time.",
)
@click.option(
    "--clock-start",
    envvar="LTE_CLOCK_START",
    type=float,
    default=None,
    show_envvar=True,
    help="Simulated clock: the Unix time it shows at wall instant --clock-anchor; from then "
    "it runs at --clock-speed. Excludes --now.",
)
@click.option(
    "--clock-speed",
    envvar="LTE_CLOCK_SPEED",
    type=float,
    default=None,
    show_envvar=True,
    help="Simulated seconds per real second (default 1). Needs --clock-start.",
)
@click.option(
    "--clock-anchor",
    envvar="LTE_CLOCK_ANCHOR",
    type=float,
    default=None,
    show_envvar=True,
    help="Wall-clock Unix time at which the simulated clock shows --clock-start (default: "
    "when the process starts; give every process the same one). Before it the clock holds.",
)
@click.option(
    "--clock-end",
    envvar="LTE_CLOCK_END",
    type=float,
    default=None,
    show_envvar=True,
    help="Simulated Unix time at which the simulated clock stops (the end of a replay).",
)
@click.option(
    "--state-dir",
    envvar="LTE_STATE_DIR",
    default="var/state",
    show_default=True,
    show_envvar=True,
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option(
    "--input-topic",
    envvar="LTE_INPUT_TOPIC",
    default="interactions",
    show_default=True,
    show_envvar=True,
)
@updates_topic_option
@click.option(
    "--update-format",
    envvar="LTE_UPDATE_FORMAT",
    type=click.Choice(["avro", "json"]),
    default="avro",
    show_default=True,
    show_envvar=True,
    help="Records on the updates topic: Avro single-object (binary float32 vectors, "
    "docs/contracts.md) or JSON. The refresher reads both.",
)
@click.option(
    "--dlq-topic",
    envvar="LTE_DLQ_TOPIC",
    default="interactions-dlq",
    show_default=True,
    show_envvar=True,
)
@click.option(
    "--changelog-topic",
    envvar="LTE_CHANGELOG_TOPIC",
    default=None,
    show_envvar=True,
    help="Default: <group-id>-state-changelog.",
)
@click.option(
    "--no-changelog",
    is_flag=True,
    envvar="LTE_NO_CHANGELOG",
    help="Keep state only on local disk (no recovery on another worker).",
)
@click.option(
    "--group-id", envvar="LTE_GROUP_ID", default="lte-worker", show_default=True, show_envvar=True
)
@partitions_option
@click.option(
    "--max-future-skew",
    envvar="LTE_MAX_FUTURE_SKEW",
    type=DURATION,
    default="1h",
    show_default=True,
    show_envvar=True,
    help="Events later than clock + skew are dead-lettered (future_ts).",
)
@click.option(
    "--max-record-bytes",
    envvar="LTE_MAX_RECORD_BYTES",
    type=click.IntRange(min=64),
    default=4096,
    show_default=True,
    show_envvar=True,
)
@type_weights_option
@click.option(
    "--batch-max-records",
    envvar="LTE_BATCH_MAX_RECORDS",
    default=20000,
    type=click.IntRange(min=1),
    show_default=True,
    show_envvar=True,
)
@click.option(
    "--batch-timeout-ms",
    envvar="LTE_BATCH_TIMEOUT_MS",
    default=50,
    type=click.IntRange(min=0),
    show_default=True,
    show_envvar=True,
)
@click.option(
    "--sweep-interval",
    envvar="LTE_SWEEP_INTERVAL",
    type=float,
    default=1.0,
    show_default=True,
    show_envvar=True,
    help="Seconds between due-time sweeps.",
)
@click.option(
    "--sweep-batch",
    envvar="LTE_SWEEP_BATCH",
    type=click.IntRange(min=1),
    default=20000,
    show_default=True,
    show_envvar=True,
)
@metrics_host_option
@click.option(
    "--metrics-port",
    envvar="LTE_METRICS_PORT",
    type=click.IntRange(0, 65535),
    default=9400,
    show_default=True,
    show_envvar=True,
)
@session_timeout_option
@log_level_option
@reports_errors
def worker(**options: Any) -> None:
    """Consume interactions, keep every user's lagged window, emit LTE updates.

    Runs the Faust app streams.app, as `faust -A streams.app worker` does with the same
    settings in LTE_* variables."""
    from streams.app import run_worker  # noqa: PLC0415

    run_worker(settings_from_options(options))


def settings_from_options(options: dict[str, Any]) -> WorkerSettings:
    """The worker's settings from this command's parsed flags (or their ``LTE_*``
    defaults)."""
    from streams.settings import Topics, WorkerSettings  # noqa: PLC0415

    kafka = kafka_settings(options, client_id="lte-worker")
    group = options["group_id"]
    return WorkerSettings(
        kafka=kafka,
        basis_dir=options["basis_dir"],
        window=WindowSpec(options["window"], options["lag"], options["bucket"]),
        encoder=EncoderSpec.parse(options["encoder"]),
        state_dir=options["state_dir"],
        topics=Topics(
            interactions=options["input_topic"],
            updates=options["updates_topic"],
            dead_letters=options["dlq_topic"],
            changelog=options["changelog_topic"] or f"{group}-state-changelog",
        ),
        group_id=group,
        partitions=options["partitions"],
        now=options["now"],
        simulated=simulated_time(options),
        rules=EventRules(
            max_future_skew=float(options["max_future_skew"]),
            max_record_bytes=options["max_record_bytes"],
            type_weights=parse_type_weights(options["type_weights"]),
        ),
        batch_max_records=options["batch_max_records"],
        batch_timeout_ms=options["batch_timeout_ms"],
        sweep_interval=options["sweep_interval"],
        sweep_batch=options["sweep_batch"],
        changelog=not options["no_changelog"],
        metrics_host=options["metrics_host"],
        metrics_port=options["metrics_port"],
        session_timeout_ms=options["session_timeout_ms"],
        log_level=options["log_level"],
        update_format=options["update_format"],
    )


def settings_from_environment() -> WorkerSettings:
    """The settings ``lte worker`` would use with no flags: every value from its ``LTE_*``
    variable or its default. This is how ``faust -A streams.app worker`` is configured."""
    context = worker.make_context("lte worker", [])
    return settings_from_options(dict(context.params))
