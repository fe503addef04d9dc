"""Settings of ``lte refresher`` and ``lte serve``: one frozen object per process, built from
flags and ``LTE_*`` variables at the entry point and passed down."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from lte_core.errors import ConfigError
from lte_runtime.kafka.settings import KafkaSettings
from serving.store_url import StoreLocation

MAX_USER_ID_CHARS = 256
MAX_TIMEOUT_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """The read API. ``basis_version``/``encoder`` are the defaults of requests that do not
    name them (``None``: the most recently written pair). ``token``, when set, is required
    as ``Authorization: Bearer <token>`` on every ``/v1/`` route; without one the API only
    listens on a loopback interface (fail closed: no open API on a network).

    ``read_timeout`` bounds every store call of a request (a hung store answers 503 within
    it, and readiness follows); ``header_timeout`` closes a connection that has not sent a
    complete request head within it (also the idle keep-alive limit); ``body_timeout``
    answers 408 to a client that does not send its body within it."""

    host: str = "127.0.0.1"
    port: int = 8080
    basis_version: str | None = None
    encoder: str | None = None
    max_batch: int = 1000
    token: str | None = field(default=None, repr=False)
    read_timeout: float = 1.0
    header_timeout: float = 10.0
    body_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ConfigError("--max-batch: must be at least 1")
        for flag, seconds in (
            ("--read-timeout", self.read_timeout),
            ("--header-timeout", self.header_timeout),
            ("--body-timeout", self.body_timeout),
        ):
            if not 0 < seconds <= MAX_TIMEOUT_SECONDS:
                raise ConfigError(f"{flag}: expected seconds in (0, {MAX_TIMEOUT_SECONDS:g}]")
        for flag, value in (("--basis-version", self.basis_version), ("--encoder", self.encoder)):
            if value is not None and not 1 <= len(value) <= MAX_USER_ID_CHARS:
                raise ConfigError(f"{flag}: expected 1-{MAX_USER_ID_CHARS} characters")
        if self.token is not None and not self.token.strip():
            raise ConfigError("LTE_API_TOKEN: must not be blank (leave it unset for no auth)")
        if self.token is None and not is_loopback(self.host):
            raise ConfigError(
                f"LTE_API_TOKEN: required to listen on --host {self.host} (not a loopback "
                "interface); set a secret token, or listen on 127.0.0.1"
            )


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (an API without a token may listen there)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass(frozen=True, slots=True)
class RefresherSettings:
    kafka: KafkaSettings
    store: StoreLocation
    topic: str = "lte-updates"
    dlq_topic: str = "lte-updates-dlq"
    group_id: str = "lte-refresher"
    partitions: int = 4
    batch_max_records: int = 5000
    batch_timeout_ms: int = 50
    session_timeout_ms: int = 10_000
    retry_max_seconds: float = 5.0
    drift_reference: Path | None = None
    drift_reference_size: int = 10_000
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9401
    api: ApiSettings | None = None
    log_level: str = "info"

    def __post_init__(self) -> None:
        if self.batch_max_records < 1:
            raise ConfigError("--batch-max-records: must be at least 1")
        if self.partitions < 1:
            raise ConfigError("--partitions: must be at least 1")
        if not self.retry_max_seconds > 0:
            raise ConfigError("--retry-max-seconds: must be positive")
        if self.drift_reference_size < 1:
            raise ConfigError("--drift-reference-size: must be at least 1")
        if self.topic == self.dlq_topic:
            raise ConfigError("--dlq-topic: must differ from --updates-topic")


@dataclass(frozen=True, slots=True)
class ServeSettings:
    store: StoreLocation
    api: ApiSettings
    log_level: str = "info"
