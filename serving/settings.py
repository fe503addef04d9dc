"""Settings of ``lte refresher`` and ``lte serve``: one frozen object per process, built from
flags and ``LTE_*`` variables at the entry point and passed down."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lte_core.errors import ConfigError
from lte_runtime.kafka.settings import KafkaSettings
from serving.store_url import StoreLocation

MAX_USER_ID_CHARS = 256


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """The read API. ``basis_version``/``encoder`` are the defaults of requests that do not
    name them (``None``: the most recently written pair). ``token``, when set, is required
    as ``Authorization: Bearer <token>`` on every ``/v1/`` route."""

    host: str = "127.0.0.1"
    port: int = 8080
    basis_version: str | None = None
    encoder: str | None = None
    max_batch: int = 1000
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ConfigError("--max-batch: must be at least 1")
        for flag, value in (("--basis-version", self.basis_version), ("--encoder", self.encoder)):
            if value is not None and not 1 <= len(value) <= MAX_USER_ID_CHARS:
                raise ConfigError(f"{flag}: expected 1-{MAX_USER_ID_CHARS} characters")
        if self.token is not None and not self.token.strip():
            raise ConfigError("LTE_API_TOKEN: must not be blank (leave it unset for no auth)")


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
