"""Consumers and producers built the same way by every process that runs a batch path."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from lte_runtime.kafka.settings import KafkaSettings

#: Large fetches: the batch paths take thousands of records per partition per call.
MAX_PARTITION_FETCH_BYTES = 16 << 20
FETCH_MAX_BYTES = 64 << 20


def group_consumer(
    kafka: KafkaSettings, group_id: str, *, session_timeout_ms: int, max_poll_interval_ms: int
) -> AIOKafkaConsumer:
    """A consumer-group member that commits explicitly and starts at the earliest offset."""
    return AIOKafkaConsumer(
        **kafka.consumer_kwargs(),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES,
        fetch_max_bytes=FETCH_MAX_BYTES,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=max(1000, session_timeout_ms // 5),
        max_poll_interval_ms=max_poll_interval_ms,
    )


def reader_consumer(kafka: KafkaSettings) -> AIOKafkaConsumer:
    """A consumer outside any group (changelog restore): assigned partitions by hand."""
    return AIOKafkaConsumer(
        **kafka.consumer_kwargs(),
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES,
        fetch_max_bytes=FETCH_MAX_BYTES,
    )


def batch_producer(kafka: KafkaSettings) -> AIOKafkaProducer:
    """A producer for :class:`~lte_runtime.kafka.batch_sender.BatchSender`: every record
    acknowledged by all replicas, no idempotence (the embedded broker has no
    InitProducerId), batches up to 1 MiB sent at once."""
    return AIOKafkaProducer(
        **kafka.client_kwargs(),
        acks="all",
        linger_ms=0,
        max_batch_size=1 << 20,
        max_request_size=8 << 20,
        enable_idempotence=False,
    )
