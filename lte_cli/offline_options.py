"""Flags shared by the offline commands (``train-encoder``, ``evaluate``): the basis, the
interaction log and the window shape, with the same ``LTE_*`` defaults as the worker so an
encoder is trained and judged on the windows the stream will feed it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from lte_cli.options import DURATION, basis_option, window_option
from lte_core.basis import BasisArtifact
from offline.datasets import LOG_FORMATS, read_interaction_log
from offline.training_examples import IndexedLog

F = TypeVar("F", bound=Callable[..., Any])


log_path_option = click.option(
    "--log",
    "log_path",
    envvar="LTE_TRAIN_LOG",
    required=True,
    show_envvar=True,
    type=click.Path(exists=True, path_type=Path),
    help="Interaction log: MovieLens u.data (or its directory) or JSON lines.",
)
log_format_option = click.option(
    "--log-format",
    envvar="LTE_TRAIN_LOG_FORMAT",
    type=click.Choice(LOG_FORMATS),
    default="auto",
    show_default=True,
    show_envvar=True,
    help="auto: .data or a directory = MovieLens, .jsonl/.json/.ndjson = JSON lines.",
)


def log_options(func: F) -> F:
    decorators = [
        basis_option,
        log_path_option,
        log_format_option,
        window_option,
        click.option(
            "--bucket",
            envvar="LTE_BUCKET",
            type=DURATION,
            default="1d",
            show_default=True,
            show_envvar=True,
            help="Bucket G.",
        ),
        click.option(
            "--horizon",
            envvar="LTE_HORIZON",
            type=DURATION,
            default="14d",
            show_default=True,
            show_envvar=True,
            help="Targets: the items of the following horizon H.",
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def load_inputs(
    basis_dir: Path, log_path: Path, log_format: str
) -> tuple[BasisArtifact, IndexedLog]:
    basis = BasisArtifact.load(basis_dir)
    log = IndexedLog.from_log(read_interaction_log(log_path, log_format), basis)
    if log.unknown_items:
        click.echo(
            f"ignored {log.unknown_items} events whose item is not in basis {basis.basis_version}",
            err=True,
        )
    return basis, log
