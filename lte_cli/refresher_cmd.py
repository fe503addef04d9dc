"""``lte refresher`` — ``lte-updates`` into the online store (optionally serving it too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lte_cli.exit_status import reports_errors
from lte_cli.options import (
    kafka_options,
    kafka_settings,
    log_level_option,
    metrics_host_option,
    partitions_option,
    run_until_signalled,
    session_timeout_option,
    updates_topic_option,
)
from lte_cli.serve_cmd import api_options, api_settings, store_option


@click.command()
@kafka_options
@store_option
@updates_topic_option
@click.option(
    "--dlq-topic",
    envvar="LTE_REFRESHER_DLQ_TOPIC",
    default="lte-updates-dlq",
    show_default=True,
    show_envvar=True,
    help="Where updates that break the contract go, with the reason in headers.",
)
@click.option(
    "--group-id",
    envvar="LTE_REFRESHER_GROUP_ID",
    default="lte-refresher",
    show_default=True,
    show_envvar=True,
)
@partitions_option
@click.option(
    "--batch-max-records",
    envvar="LTE_REFRESHER_BATCH_MAX_RECORDS",
    type=click.IntRange(min=1),
    default=5000,
    show_default=True,
    show_envvar=True,
)
@click.option(
    "--batch-timeout-ms",
    envvar="LTE_REFRESHER_BATCH_TIMEOUT_MS",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    show_envvar=True,
)
@click.option(
    "--retry-max-seconds",
    envvar="LTE_STORE_RETRY_MAX_SECONDS",
    type=click.FloatRange(min=0.01),
    default=5.0,
    show_default=True,
    show_envvar=True,
    help="Cap of the exponential backoff while the store is down.",
)
@click.option(
    "--drift-reference",
    envvar="LTE_DRIFT_REFERENCE",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    show_envvar=True,
    help="A .npy vector: the reference mean of lte_population_drift. Default: the mean of "
    "the first --drift-reference-size vectors written.",
)
@click.option(
    "--drift-reference-size",
    envvar="LTE_DRIFT_REFERENCE_SIZE",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    show_envvar=True,
)
@click.option(
    "--serve",
    is_flag=True,
    envvar="LTE_REFRESHER_SERVE",
    show_envvar=True,
    help="Also serve the read API (and the status routes) on --port, in this process.",
)
@api_options
@metrics_host_option
@click.option(
    "--metrics-port",
    envvar="LTE_REFRESHER_METRICS_PORT",
    type=click.IntRange(0, 65535),
    default=9401,
    show_default=True,
    show_envvar=True,
    help="Status routes without --serve (with --serve they are on --port).",
)
@session_timeout_option
@log_level_option
@reports_errors
def refresher(**options: Any) -> None:
    """Write LTE updates into the online store, newest wins; optionally serve them."""
    from lte_runtime.logs import configure  # noqa: PLC0415
    from serving.refresher import Refresher  # noqa: PLC0415
    from serving.settings import RefresherSettings  # noqa: PLC0415
    from serving.store_url import parse_store_url  # noqa: PLC0415

    settings = RefresherSettings(
        kafka=kafka_settings(options, client_id="lte-refresher"),
        store=parse_store_url(options["store"]),
        topic=options["updates_topic"],
        dlq_topic=options["dlq_topic"],
        group_id=options["group_id"],
        partitions=options["partitions"],
        batch_max_records=options["batch_max_records"],
        batch_timeout_ms=options["batch_timeout_ms"],
        session_timeout_ms=options["session_timeout_ms"],
        retry_max_seconds=options["retry_max_seconds"],
        drift_reference=options["drift_reference"],
        drift_reference_size=options["drift_reference_size"],
        metrics_host=options["metrics_host"],
        metrics_port=options["metrics_port"],
        api=api_settings(options) if options["serve"] else None,
        log_level=options["log_level"],
    )
    configure(settings.log_level, "lte-refresher")
    run_until_signalled(Refresher(settings).run)
