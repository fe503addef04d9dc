"""``lte serve`` — the read API — and the flags it shares with ``lte refresher --serve``."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from lte_cli.exit_status import reports_errors
from lte_cli.options import log_level_option, run_until_signalled

if TYPE_CHECKING:
    from serving.settings import ApiSettings

F = TypeVar("F", bound=Callable[..., Any])

store_option = click.option(
    "--store",
    envvar="LTE_STORE",
    default="rocksdb://var/online-store",
    show_default=True,
    show_envvar=True,
    help="redis://[user:password@]host:port/db, redis+cluster://host:port,host:port,… , "
    "feast://REPO (the [feast] extra) or rocksdb:///path. Prefer the variable "
    "when the URL holds a password (flags show in process listings).",
)


def api_options(func: F) -> F:
    """Where the API listens and what it reads by default; the token comes only from
    ``LTE_API_TOKEN`` (a flag would leak it into process listings)."""
    decorators = [
        click.option(
            "--host",
            envvar="LTE_API_HOST",
            default="127.0.0.1",
            show_default=True,
            show_envvar=True,
            help="Interface to listen on (0.0.0.0 in a container).",
        ),
        click.option(
            "--port",
            envvar="LTE_API_PORT",
            type=click.IntRange(0, 65535),
            default=8080,
            show_default=True,
            show_envvar=True,
            help="Read API port; /metrics, /healthz and /readyz are served here too.",
        ),
        click.option(
            "--basis-version",
            envvar="LTE_API_BASIS_VERSION",
            default=None,
            show_envvar=True,
            help="Default basis_version of requests. Default: the most recently written.",
        ),
        click.option(
            "--encoder",
            envvar="LTE_API_ENCODER",
            default=None,
            show_envvar=True,
            help="Default encoder of requests. Default: the most recently written.",
        ),
        click.option(
            "--max-batch",
            envvar="LTE_API_MAX_BATCH",
            type=click.IntRange(min=1),
            default=1000,
            show_default=True,
            show_envvar=True,
            help="Most user ids in one batchGet.",
        ),
        *(
            click.option(
                f"--{name}-timeout",
                envvar=f"LTE_API_{name.upper()}_TIMEOUT",
                type=float,
                default=default,
                show_default=True,
                show_envvar=True,
                help=text,
            )
            for name, default, text in (
                ("read", 1.0, "Seconds a request waits for the store before answering 503."),
                (
                    "header",
                    10.0,
                    "Seconds a connection may take to send a request head (and idle).",
                ),
                ("body", 10.0, "Seconds a client may take to send a request body before a 408."),
            )
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def api_settings(options: dict[str, Any]) -> ApiSettings:
    from serving.settings import ApiSettings  # noqa: PLC0415 - keeps `lte --help` fast

    return ApiSettings(
        host=options["host"],
        port=options["port"],
        basis_version=options["basis_version"],
        encoder=options["encoder"],
        max_batch=options["max_batch"],
        read_timeout=options["read_timeout"],
        header_timeout=options["header_timeout"],
        body_timeout=options["body_timeout"],
        # Empty counts as unset: compose files pass ${LTE_API_TOKEN:-} through.
        token=os.environ.get("LTE_API_TOKEN", "").strip() or None,
    )


@click.command()
@store_option
@api_options
@log_level_option
@reports_errors
def serve(**options: Any) -> None:
    """Serve LTEs from the online store over HTTP (GET /v1/lte/{user_id}).

    Set LTE_API_TOKEN to require 'Authorization: Bearer <token>' on /v1/ routes.
    """
    from lte_runtime.logs import configure  # noqa: PLC0415
    from serving.serve import serve as run_api  # noqa: PLC0415
    from serving.settings import ServeSettings  # noqa: PLC0415
    from serving.store_url import parse_store_url  # noqa: PLC0415

    settings = ServeSettings(
        store=parse_store_url(options["store"]),
        api=api_settings(options),
        log_level=options["log_level"],
    )
    configure(settings.log_level, "lte-serve")
    run_until_signalled(lambda stop: run_api(settings, stop))
