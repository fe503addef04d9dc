"""Real processes for integration tests: the embedded broker, ``lte`` subprocesses, Kafka
helpers, and waiting on conditions with deadlines (never on sleeps)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from lte_core.update_avro import decode_mixed
from lte_runtime.kafka.batch_sender import BatchSender, OutRecord, Record
from lte_runtime.ports import free_port

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_until(
    condition: Callable[[], T], *, timeout: float, what: str, interval: float = 0.1
) -> T:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    last: T = condition()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)
        last = condition()
    return last


def metrics_text(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text: str = resp.read().decode()
            return text
    except OSError:
        return ""


def metric(port: int, name: str, labels: dict[str, str] | None = None) -> float | None:
    """Sum of the samples of ``name`` matching ``labels`` (None if absent)."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    total = None
    for family in text_string_to_metric_families(metrics_text(port)):
        for sample in family.samples:
            if sample.name != name:
                continue
            if labels and any(sample.labels.get(k) != v for k, v in labels.items()):
                continue
            total = (total or 0.0) + sample.value
    return total


def http_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


class LteProcess:
    """An ``lte <command>`` subprocess with its own metrics port and log file."""

    def __init__(
        self,
        args: list[str],
        log_dir: Path,
        name: str,
        env: dict[str, str] | None = None,
        port_flag: str = "--metrics-port",
        *,
        program: tuple[str, ...] = ("lte_cli",),
    ) -> None:
        self.port = free_port()
        self.args = [*args, port_flag, str(self.port)]
        self.program = program
        self.log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self._env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> LteProcess:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", *self.program, *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self._env,
            cwd=ROOT,
        )
        log.close()
        return self

    def wait_ready(self, timeout: float = 60.0) -> LteProcess:
        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"process exited with {self.process.returncode}:\n{self.log()}"
                )
            return http_status(self.port, "/readyz") == 200

        wait_until(ready, timeout=timeout, what=f"{self.args[0]} to be ready")
        return self

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return metric(self.port, name, labels) or 0.0

    def wait_exit(self, timeout: float = 60.0) -> int:
        """The exit status, once the process has ended on its own."""
        assert self.process is not None
        try:
            return int(self.process.wait(timeout))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout}s:\n{self.log()}") from None

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self, timeout: float = 30.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(
                    f"did not stop on SIGTERM within {timeout}s:\n{self.log()}"
                ) from None
        return int(self.process.returncode)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def worker_args(
    bootstrap: str,
    basis_dir: Path,
    *,
    window: str,
    lag: str,
    bucket: str,
    now: float,
    state_dir: Path,
    topics: dict[str, str],
    group: str,
    sweep_interval: float,
) -> list[str]:
    """``lte worker`` arguments for a test: frozen clock, its own topics (keys
    ``interactions``, ``updates``, ``dlq``, ``changelog``) and group, a short session
    timeout and a far future skew (test data spans months)."""
    return [
        "worker",
        "--broker",
        bootstrap,
        "--basis",
        str(basis_dir),
        "--window",
        window,
        "--lag",
        lag,
        "--bucket",
        bucket,
        "--now",
        repr(now),
        "--state-dir",
        str(state_dir),
        "--input-topic",
        topics["interactions"],
        "--updates-topic",
        topics["updates"],
        "--dlq-topic",
        topics["dlq"],
        "--changelog-topic",
        topics["changelog"],
        "--group-id",
        group,
        "--max-future-skew",
        "400d",
        "--session-timeout-ms",
        "6000",
        "--sweep-interval",
        repr(sweep_interval),
    ]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _produce(bootstrap: str, topic: str, records: list[Record]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=1 << 20, acks="all")
    await producer.start()
    try:
        await BatchSender(producer).send(topic, records)
    finally:
        await producer.stop()


def produce(bootstrap: str, topic: str, records: Iterable[Record]) -> None:
    run(_produce(bootstrap, topic, list(records)))


def event_record(user: str, item: str, ts: float, **extra: object) -> OutRecord:
    return OutRecord(
        user.encode(), orjson.dumps({"user_id": user, "item_id": item, "ts": ts, **extra})
    )


async def _read_all(bootstrap: str, topic: str, idle_ms: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=16 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    out: list[Any] = []
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=idle_ms, max_records=50_000)
            if not batch:
                caught_up = True
                for tp in consumer.assignment():
                    hw = consumer.highwater(tp)
                    if hw is None or await consumer.position(tp) < hw:
                        caught_up = False
                if caught_up:
                    return out
                continue
            for records in batch.values():
                out.extend(records)
    finally:
        await consumer.stop()


def read_topic(bootstrap: str, topic: str, idle_ms: int = 500) -> list[Any]:
    """Every record currently in ``topic`` (reads until each partition's high-water mark)."""
    return list(run(_read_all(bootstrap, topic, idle_ms)))


def partition_ends(held: Iterable[Any]) -> dict[int, int]:
    """Each partition's end offset (last offset + 1) among the consumed records ``held``."""
    ends: dict[int, int] = {}
    for record in held:
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    return ends


async def _committed(
    bootstrap: str, group: str, topic: str, partitions: Iterable[int] | None
) -> dict[int, int]:
    # Tansu's OffsetFetch answer breaks aiokafka's admin client; a consumer of the group that
    # never subscribes (so never joins) reads committed offsets instead.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        if partitions is None:
            parts = consumer.partitions_for_topic(topic) or set()
            if not parts:
                await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(topic) or set()
            partitions = parts
        out = {}
        for p in partitions:
            offset = await consumer.committed(TopicPartition(topic, p))
            out[p] = -1 if offset is None else offset
        return out
    finally:
        await consumer.stop()


def committed_offsets(
    bootstrap: str, group: str, topic: str, partitions: Iterable[int] | None = None
) -> dict[int, int]:
    """The group's committed offset per partition of ``topic`` (-1 where none); the
    partitions are the topic's own unless given."""
    return dict(run(_committed(bootstrap, group, topic, partitions)))


def all_committed(committed: dict[int, int], ends: dict[int, int]) -> bool:
    """Whether ``committed`` reaches every partition's end offset in ``ends``."""
    return all(committed.get(p, -1) >= end for p, end in ends.items())


def update_doc(value: bytes | None) -> dict[str, Any]:
    """An ``lte-updates`` value, binary (Avro) or JSON, as the JSON document it states:
    vectors as lists of floats, the version as ``[last_offset, end_bucket]``."""
    decoded = decode_mixed([value or b""])[0]
    if isinstance(decoded, Exception):
        raise decoded
    doc = decoded.to_dict()
    for name in ("vector", "coefficients"):
        if doc[name] is not None:
            doc[name] = doc[name].tolist()
    return doc


def latest_updates(bootstrap: str, topic: str = "lte-updates") -> dict[str, dict[str, Any]]:
    """The newest update per user by its version (the worker's records all carry one), the
    later record on a tie, as the online store keeps it."""
    latest: dict[str, dict[str, Any]] = {}
    for record in read_topic(bootstrap, topic):
        doc = update_doc(record.value)
        have = latest.get(doc["user_id"])
        if have is None or doc["version"] >= have["version"]:
            latest[doc["user_id"]] = doc
    return latest
