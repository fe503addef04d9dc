"""Creating the topics a process needs before it joins its group."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from lte_runtime.kafka.settings import KafkaSettings


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic to create if missing. ``partitions=None`` copies the partition count of the
    topic named by ``co_partitioned_with`` (a changelog follows its input topic)."""

    name: str
    partitions: int | None
    config: Mapping[str, str] = field(default_factory=dict)
    co_partitioned_with: str | None = None


async def ensure_topics(kafka: KafkaSettings, specs: Sequence[TopicSpec]) -> dict[str, int]:
    """Create the missing topics in order; return every named topic's partition count."""
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        counts: dict[str, int] = {}
        for spec in specs:
            if spec.name not in existing:
                partitions = spec.partitions
                if partitions is None:
                    partitions = counts[spec.co_partitioned_with or ""]
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(
                        [NewTopic(spec.name, partitions, 1, topic_configs=dict(spec.config))]
                    )
            described = await admin.describe_topics([spec.name])
            counts[spec.name] = len(described[0]["partitions"])
        return counts
    finally:
        await admin.close()
