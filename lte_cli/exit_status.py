"""Exit statuses of ``lte`` commands: every deliberate error (:class:`LTEError`) becomes one
line on stderr and status 1; flag syntax errors stay click's usage errors (status 2).

Kept apart from :mod:`lte_cli.main`, which imports every command when it is imported: a
command importing this from ``main`` could not itself be imported first.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

import click

from lte_core.errors import LTEError

P = ParamSpec("P")
R = TypeVar("R")


def reports_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn an :class:`LTEError` into ``lte: error: …`` and exit 1, without a traceback."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except LTEError as exc:
            click.echo(f"lte: error: {exc}", err=True)
            sys.exit(1)

    return wrapper
