"""Errors of the serving layer: the online store, the refresher and the read API.

Each names what went wrong and what to do, so the refresher's log line and the CLI's one-line
error are enough to act on.
"""

from __future__ import annotations

from lte_core.errors import ConfigError, LTEError


class ServingError(LTEError):
    """Root of errors raised by the online store, the refresher and the read API."""


class StoreURLError(ServingError, ConfigError):
    """``--store`` / ``LTE_STORE`` is not a URL this project can open."""


class StoreUnavailableError(ServingError):
    """The store did not answer or refused a command. Transient by assumption: the
    refresher retries the same batch with backoff and reports not-ready until it succeeds;
    the read API answers 503."""


class StoreOpenError(ServingError):
    """The store cannot be opened at all (a RocksDB directory locked by another process,
    a path that is not a directory, ...)."""


class StoreDataError(ServingError):
    """Bytes found in the store are not an entry of the format this version writes: another
    program wrote under the ``lte:`` prefix, or the data is corrupt."""
