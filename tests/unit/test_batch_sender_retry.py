"""``BatchSender`` retries what the broker says is retriable, and only that."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, RecordTooLargeError

from lte_runtime.kafka import batch_sender
from lte_runtime.kafka.batch_sender import BatchSender, OutRecord


class _Batch:
    def __init__(self) -> None:
        self.records: list[bytes | None] = []

    def append(self, *, key: bytes | None, value: bytes | None, **_: Any) -> object:
        self.records.append(value)
        return object()


class _Meta:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class FlakyProducer:
    """Fails the first ``failures`` sends with ``error``; then writes at increasing offsets."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.sends = 0
        self.written: list[bytes | None] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> Any:
        self.sends += 1
        future: asyncio.Future[_Meta] = asyncio.get_running_loop().create_future()
        if self.sends <= self.failures:
            future.set_exception(self.error)
        else:
            future.set_result(_Meta(len(self.written)))
            self.written.extend(batch.records)
        return future


RECORDS = [OutRecord(b"u1", b"a"), OutRecord(b"u2", b"b")]


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_sender, "FIRST_BACKOFF_S", 0.0)


def test_a_retriable_error_is_retried_until_the_batch_is_written() -> None:
    producer = FlakyProducer(failures=2, error=KafkaTimeoutError())
    last = asyncio.run(BatchSender(producer).send("t", RECORDS))
    assert producer.sends == 3
    assert producer.written == [b"a", b"b"]
    assert last == {0: 1}


def test_a_retriable_error_that_persists_is_raised_after_the_last_attempt() -> None:
    producer = FlakyProducer(failures=100, error=KafkaTimeoutError())
    with pytest.raises(KafkaTimeoutError):
        asyncio.run(BatchSender(producer).send("t", RECORDS))
    assert producer.sends == batch_sender.SEND_ATTEMPTS


def test_a_non_retriable_error_is_raised_at_once() -> None:
    producer = FlakyProducer(failures=1, error=RecordTooLargeError())
    with pytest.raises(RecordTooLargeError):
        asyncio.run(BatchSender(producer).send("t", RECORDS))
    assert producer.sends == 1
