"""Durations written the way operators write them: ``90s``, ``15m``, ``1h``, ``28d``, ``52w``."""

from __future__ import annotations

import re

from lte_core.errors import ConfigError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PATTERN = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")


def parse_duration(text: str | int, *, field: str = "duration") -> int:
    """Return ``text`` as whole seconds.

    Whole seconds are enough for windows, lags and buckets, and integers keep the
    bucket arithmetic exact. A bare number means seconds.
    """
    if isinstance(text, bool):
        raise ConfigError(f"{field}: expected a duration such as 90s, 1h, 28d; got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ConfigError(f"{field}: must not be negative, got {text}")
        return text
    match = _PATTERN.match(text)
    if match is None:
        raise ConfigError(
            f"{field}: expected a whole number with a unit s, m, h, d or w "
            f"(e.g. 90s, 1h, 28d, 365d); got {text!r}"
        )
    return int(match.group(1)) * _UNITS[match.group(2) or "s"]


def format_duration(seconds: int) -> str:
    """The shortest exact spelling of ``seconds`` in the largest whole unit."""
    for unit in ("w", "d", "h", "m"):
        size = _UNITS[unit]
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
