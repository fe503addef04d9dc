"""Errors of the process plumbing."""

from __future__ import annotations

from lte_core.errors import LTEError


class BrokerError(LTEError):
    """The embedded broker cannot be started, or a Kafka broker cannot be reached."""
