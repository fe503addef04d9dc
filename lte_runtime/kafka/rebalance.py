"""aiokafka's class-based rebalance callbacks as two plain callables."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiokafka import ConsumerRebalanceListener, TopicPartition

PartitionsCallback = Callable[[set[TopicPartition]], Awaitable[None]]


class RebalanceCallbacks(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, *, assigned: PartitionsCallback, revoked: PartitionsCallback) -> None:
        self._assigned = assigned
        self._revoked = revoked

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._assigned(set(assigned))
