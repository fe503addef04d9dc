"""Dead letters: invalid input records, forwarded with their original bytes and a reason."""

from __future__ import annotations

from dataclasses import dataclass

from lte_core.events import Rejection


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record for topic ``interactions-dlq``: the original key and value, untouched, and
    headers saying why and where it came from, so it can be fixed and replayed."""

    key: bytes | None
    value: bytes | None
    reason: str
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    source_timestamp_ms: int

    @classmethod
    def of(
        cls,
        rejection: Rejection,
        *,
        key: bytes | None,
        value: bytes | None,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int,
    ) -> DeadLetter:
        return cls(
            key, value, rejection.reason, rejection.detail, topic, partition, offset, timestamp_ms
        )

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            ("lte.reason", self.reason.encode()),
            ("lte.detail", self.detail.encode()[:1024]),
            ("lte.source.topic", self.source_topic.encode()),
            ("lte.source.partition", str(self.source_partition).encode()),
            ("lte.source.offset", str(self.source_offset).encode()),
            ("lte.source.timestamp_ms", str(self.source_timestamp_ms).encode()),
        ]
