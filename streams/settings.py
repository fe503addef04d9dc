"""The worker's settings: one frozen object, built from flags and ``LTE_*`` variables at the
entry point and passed down."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import orjson

from lte_core.encoders import EncoderSpec
from lte_core.errors import ConfigError
from lte_core.events import EventRules
from lte_core.window import WindowSpec
from lte_runtime.kafka.settings import KafkaSettings
from streams.clock import SimulatedTime


@dataclass(frozen=True, slots=True)
class Topics:
    interactions: str = "interactions"
    updates: str = "lte-updates"
    dead_letters: str = "interactions-dlq"
    changelog: str = "lte-worker-state-changelog"


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    kafka: KafkaSettings
    basis_dir: Path
    window: WindowSpec
    encoder: EncoderSpec
    state_dir: Path
    topics: Topics = field(default_factory=Topics)
    group_id: str = "lte-worker"
    partitions: int = 4
    now: float | None = None
    simulated: SimulatedTime | None = None
    rules: EventRules = field(default_factory=EventRules)
    batch_max_records: int = 20_000
    batch_timeout_ms: int = 100
    sweep_interval: float = 1.0
    sweep_batch: int = 20_000
    changelog: bool = True
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9400
    session_timeout_ms: int = 10_000
    log_level: str = "info"
    #: ``avro`` (binary, docs/contracts.md §4b) or ``json`` records on ``lte-updates``
    update_format: str = "avro"

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ConfigError("--partitions: must be at least 1")
        if self.batch_max_records < 1:
            raise ConfigError("--batch-max-records: must be at least 1")
        if self.now is not None and self.simulated is not None:
            raise ConfigError("--now: cannot be combined with --clock-start (choose one clock)")
        if self.update_format not in ("avro", "json"):
            raise ConfigError("--update-format: must be avro or json")
        if self.sweep_interval <= 0:
            raise ConfigError("--sweep-interval: must be positive")
        if self.encoder.kind == "recency" and self.encoder.half_life <= 0:
            raise ConfigError("--encoder: recency half-life must be positive")
        span = self.window.window + self.window.lag + self.rules.max_future_skew
        if span / self.window.bucket > 2**30:
            raise ConfigError(
                "--max-future-skew/--window/--lag: too many buckets of "
                f"{self.window.bucket}s to represent; use a coarser --bucket"
            )

    @property
    def half_life(self) -> float | None:
        return float(self.encoder.half_life) if self.encoder.kind == "recency" else None

    def state_config(self, basis_version: str, d: int, input_partitions: int) -> bytes:
        """What the stored state depends on; a store or changelog written under another
        configuration is refused rather than silently mixed."""
        return orjson.dumps(
            {
                "basis_version": basis_version,
                "d": d,
                "window": self.window.window,
                "lag": self.window.lag,
                "bucket": self.window.bucket,
                "half_life": self.half_life,
                "input_topic": self.topics.interactions,
                "input_partitions": input_partitions,
            },
            option=orjson.OPT_SORT_KEYS,
        )
