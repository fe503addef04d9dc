"""Errors of the streaming layer."""

from __future__ import annotations

from lte_core.errors import LTEError


class StreamsError(LTEError):
    """Root of errors raised by the worker and the broker tooling."""


class StateStoreError(StreamsError):
    """The RocksDB state cannot be opened or does not fit this worker's configuration."""
