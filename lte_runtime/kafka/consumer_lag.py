"""The ``lte_consumer_lag`` gauge, kept the same way by every consumer-group member (the
worker and the refresher), so dashboards read one definition of lag."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Gauge


async def observe_consumer_lag(consumer: AIOKafkaConsumer, gauge: Gauge, component: str) -> None:
    """Records behind the high-water mark, per owned partition. A partition not fetched
    from yet has no known high-water mark and keeps its previous value."""
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        if highwater is None:
            continue
        position = await consumer.position(tp)
        gauge.labels(component, str(tp.partition)).set(max(0, highwater - position))


def forget_consumer_lag(gauge: Gauge, component: str, revoked: Iterable[TopicPartition]) -> None:
    """Drop the series of partitions this member no longer owns (another reports them)."""
    for tp in revoked:
        with contextlib.suppress(KeyError):
            gauge.remove(component, str(tp.partition))
