"""A point in time on the command line: Unix seconds or a UTC date/time (``1998-03-01``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click


class Instant(click.ParamType):
    """``888710400``, ``1998-03-01`` or ``1998-03-01T12:00:00`` (UTC) as Unix seconds."""

    name = "time"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        text = str(value).strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            self.fail(
                f"expected Unix seconds or a UTC date such as 1998-03-01; got {text!r}",
                param,
                ctx,
            )
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()


INSTANT = Instant()
