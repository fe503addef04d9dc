"""``lte broker`` — run the embedded Kafka-protocol broker in the foreground."""

from __future__ import annotations

import signal
import threading

import click

from lte_cli.exit_status import reports_errors


@click.command()
@click.option(
    "--port",
    envvar="LTE_BROKER_PORT",
    type=click.IntRange(0, 65535),
    default=9092,
    show_default=True,
    show_envvar=True,
    help="0 picks a free port.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@reports_errors
def broker(port: int, host: str) -> None:
    """Run the embedded broker (Tansu, memory-only) until Ctrl-C."""
    from lte_runtime.embedded_broker import EmbeddedBroker  # noqa: PLC0415

    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    with EmbeddedBroker(port=port or None, host=host) as running:
        click.echo(
            f"embedded broker on {running.bootstrap} (log: {running.log_path}); Ctrl-C to stop",
            err=True,
        )
        done.wait()
