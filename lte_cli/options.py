"""Flags shared by several commands. Every flag has an ``LTE_*`` environment default."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from lte_core.duration import parse_duration
from lte_runtime.kafka.settings import SASL_MECHANISMS, SECURITY_PROTOCOLS, KafkaSettings
from lte_runtime.logs import LEVELS

F = TypeVar("F", bound=Callable[..., Any])


def kafka_options(func: F) -> F:
    """``--broker`` and the TLS/SASL settings; the SASL password is read from
    ``LTE_KAFKA_SASL_PASSWORD`` (a flag would leak it into process listings)."""
    decorators = [
        click.option(
            "--broker",
            envvar="LTE_BROKER",
            default="127.0.0.1:9092",
            show_default=True,
            show_envvar=True,
            help="Kafka bootstrap host:port.",
        ),
        click.option(
            "--kafka-security-protocol",
            envvar="LTE_KAFKA_SECURITY_PROTOCOL",
            type=click.Choice(SECURITY_PROTOCOLS),
            default="PLAINTEXT",
            show_default=True,
            show_envvar=True,
        ),
        click.option(
            "--kafka-sasl-mechanism",
            envvar="LTE_KAFKA_SASL_MECHANISM",
            type=click.Choice(SASL_MECHANISMS),
            default=None,
            show_envvar=True,
        ),
        click.option(
            "--kafka-sasl-username",
            envvar="LTE_KAFKA_SASL_USERNAME",
            default=None,
            show_envvar=True,
        ),
        click.option(
            "--kafka-ssl-cafile",
            envvar="LTE_KAFKA_SSL_CAFILE",
            default=None,
            type=click.Path(exists=True, dir_okay=False),
            show_envvar=True,
        ),
        click.option(
            "--kafka-ssl-certfile",
            envvar="LTE_KAFKA_SSL_CERTFILE",
            default=None,
            type=click.Path(exists=True, dir_okay=False),
            show_envvar=True,
        ),
        click.option(
            "--kafka-ssl-keyfile",
            envvar="LTE_KAFKA_SSL_KEYFILE",
            default=None,
            type=click.Path(exists=True, dir_okay=False),
            show_envvar=True,
        ),
        click.option(
            "--kafka-fetch-max-wait-ms",
            envvar="LTE_KAFKA_FETCH_MAX_WAIT_MS",
            type=int,
            default=50,
            show_default=True,
            show_envvar=True,
            help="Longest a consumer fetch waits for data; bounds hop latency on brokers "
            "that do not wake waiting fetches (the embedded one).",
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def kafka_settings(options: dict[str, Any], client_id: str) -> KafkaSettings:
    import os  # noqa: PLC0415

    return KafkaSettings(
        bootstrap=options.pop("broker"),
        security_protocol=options.pop("kafka_security_protocol"),
        sasl_mechanism=options.pop("kafka_sasl_mechanism"),
        sasl_username=options.pop("kafka_sasl_username"),
        sasl_password=os.environ.get("LTE_KAFKA_SASL_PASSWORD"),
        ssl_cafile=options.pop("kafka_ssl_cafile"),
        ssl_certfile=options.pop("kafka_ssl_certfile"),
        ssl_keyfile=options.pop("kafka_ssl_keyfile"),
        client_id=client_id,
        fetch_max_wait_ms=options.pop("kafka_fetch_max_wait_ms"),
    )


log_level_option = click.option(
    "--log-level",
    envvar="LTE_LOG_LEVEL",
    type=click.Choice(LEVELS),
    default="info",
    show_default=True,
    show_envvar=True,
)


class Duration(click.ParamType):
    """``90s``, ``1h``, ``28d`` … as whole seconds; the error names the flag."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_duration(str(value), field=f"--{param.name}" if param else "duration")
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Duration()

# Flags several commands declare alike. One definition each, so a default or a variable
# cannot drift between the worker and the offline commands (an encoder must be trained on
# the windows the worker will feed it), or between the worker and the refresher.

basis_option = click.option(
    "--basis",
    "basis_dir",
    envvar="LTE_BASIS",
    required=True,
    show_envvar=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Basis artifact directory (lte basis build).",
)

window_option = click.option(
    "--window",
    envvar="LTE_WINDOW",
    type=DURATION,
    default="365d",
    show_default=True,
    show_envvar=True,
    help="Window length W.",
)

lag_option = click.option(
    "--lag",
    envvar="LTE_LAG",
    type=DURATION,
    default="28d",
    show_default=True,
    show_envvar=True,
    help="Lag L: the window ends L before the clock.",
)

bucket_option = click.option(
    "--bucket",
    envvar="LTE_BUCKET",
    type=DURATION,
    default="1d",
    show_default=True,
    show_envvar=True,
    help="Bucket G: the window moves in steps of G.",
)

encoder_option = click.option(
    "--encoder",
    envvar="LTE_ENCODER",
    default="mean",
    show_default=True,
    show_envvar=True,
    help="mean | recency:<half-life> | ae:<artifact dir>.",
)

type_weights_option = click.option(
    "--type-weights",
    envvar="LTE_TYPE_WEIGHTS",
    default=None,
    show_envvar=True,
    help="Per-type weight multipliers, e.g. view=1,cart=3,order=5 (others rejected).",
)

updates_topic_option = click.option(
    "--updates-topic",
    envvar="LTE_UPDATES_TOPIC",
    default="lte-updates",
    show_default=True,
    show_envvar=True,
)

partitions_option = click.option(
    "--partitions",
    envvar="LTE_PARTITIONS",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    show_envvar=True,
    help="Partitions for topics it creates.",
)

metrics_host_option = click.option(
    "--metrics-host",
    envvar="LTE_METRICS_HOST",
    default="127.0.0.1",
    show_default=True,
    show_envvar=True,
)

session_timeout_option = click.option(
    "--session-timeout-ms",
    envvar="LTE_SESSION_TIMEOUT_MS",
    default=10000,
    type=click.IntRange(min=1000),
    show_default=True,
    show_envvar=True,
)


def run_until_signalled(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    """Run ``main(stop)``; SIGINT/SIGTERM set ``stop`` so the process shuts down cleanly."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())
