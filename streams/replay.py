"""``lte replay``: produce interaction events from a file or the generator to any broker.

Sources: MovieLens ``u.data``, JSON lines (one interaction object per line, sent as is —
broken lines included, so a replay also exercises the dead-letter path), CSV with a header
(``user_id,item_id,ts[,weight][,type]``), or :mod:`offline.synthetic`. Records are keyed by
``user_id`` (the contract), produced with the batch API, optionally at a fixed rate, or each
when a (simulated) clock reaches its timestamp (:func:`replay_on_clock`).
"""

from __future__ import annotations

import asyncio
import bisect
import csv
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import orjson

from lte_core.errors import LTEError
from lte_runtime.kafka.batch_sender import BatchSender, OutRecord, Record
from offline.datasets import InteractionLog, read_movielens_ratings
from streams.clock import Clock

Chunk = list[Record]


class ReplayError(LTEError):
    """A replay source cannot be read."""


def log_records(log: InteractionLog, *, shift: float = 0.0) -> Chunk:
    ts = (log.ts + shift).tolist()
    return [
        OutRecord(u.encode(), orjson.dumps({"user_id": u, "item_id": i, "ts": t}))
        if w == 1.0
        else OutRecord(u.encode(), orjson.dumps({"user_id": u, "item_id": i, "ts": t, "weight": w}))
        for u, i, t, w in zip(
            log.user_ids.tolist(), log.item_ids.tolist(), ts, log.weights.tolist(), strict=True
        )
    ]


def movielens_chunks(path: Path, *, shift: float = 0.0, size: int = 20_000) -> Iterator[Chunk]:
    """``u.data`` in time order."""
    log = read_movielens_ratings(path).sorted_by_time()
    for lo in range(0, len(log), size):
        sl = slice(lo, lo + size)
        yield log_records(
            InteractionLog(log.user_ids[sl], log.item_ids[sl], log.ts[sl], log.weights[sl]),
            shift=shift,
        )


def jsonl_chunks(path: Path, *, size: int = 20_000) -> Iterator[Chunk]:
    chunk: Chunk = []
    try:
        with path.open("rb") as lines:
            for line in lines:
                value = line.rstrip(b"\r\n")
                if not value:
                    continue
                key: bytes | None = None
                try:
                    doc = orjson.loads(value)
                    if isinstance(doc, dict) and isinstance(doc.get("user_id"), str):
                        key = doc["user_id"].encode()
                except orjson.JSONDecodeError:
                    pass
                chunk.append(OutRecord(key, value))
                if len(chunk) >= size:
                    yield chunk
                    chunk = []
    except OSError as exc:
        raise ReplayError(f"--jsonl {path}: {exc}") from exc
    if chunk:
        yield chunk


def csv_chunks(path: Path, *, size: int = 20_000) -> Iterator[Chunk]:
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise ReplayError(f"--csv {path}: {exc}") from exc
    with handle:
        reader = csv.DictReader(handle)
        missing = {"user_id", "item_id", "ts"} - set(reader.fieldnames or [])
        if missing:
            raise ReplayError(f"--csv {path}: header lacks {', '.join(sorted(missing))}")
        chunk: Chunk = []
        for line_no, row in enumerate(reader, start=2):
            doc: dict[str, object] = {"user_id": row["user_id"], "item_id": row["item_id"]}
            try:
                doc["ts"] = float(row["ts"])
                if row.get("weight"):
                    doc["weight"] = float(row["weight"])
            except ValueError as exc:
                raise ReplayError(f"--csv {path}:{line_no}: {exc}") from exc
            if row.get("type"):
                doc["type"] = row["type"]
            chunk.append(OutRecord(row["user_id"].encode(), orjson.dumps(doc)))
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


async def replay(
    sender: BatchSender,
    topic: str,
    chunks: Iterable[Sequence[Record]],
    *,
    rate: float = 0.0,
    progress: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Produce every chunk; with ``rate`` > 0, no faster than ``rate`` events/s on average
    (sent in slices of ~100 ms worth, so consumers see a steady stream)."""
    sent = 0
    started = time.monotonic()
    for chunk in chunks:
        step = len(chunk) if rate <= 0 else max(1, int(rate / 10))
        for lo in range(0, len(chunk), step):
            if stop is not None and stop.is_set():
                return sent
            part = chunk[lo : lo + step]
            await sender.send(topic, part)
            sent += len(part)
            if progress is not None:
                progress(len(part))
            if rate > 0:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)  # rate limiting, not synchronisation
    return sent


async def replay_on_clock(
    sender: BatchSender,
    topic: str,
    records: Sequence[Record],
    ts: Sequence[float],
    clock: Clock,
    *,
    tick: float = 0.02,
    max_batch: int = 20_000,
    progress: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Produce each record once ``clock`` reaches its time ``ts`` (non-decreasing): a replay
    in (simulated) real time. Checks the clock every ``tick`` real seconds, so a record goes
    out at most one tick after it became due."""
    sent = 0
    while sent < len(records):
        if stop is not None and stop.is_set():
            return sent
        due = bisect.bisect_right(ts, clock.now(), lo=sent)
        if due == sent:
            await asyncio.sleep(tick)  # pacing, not synchronisation
            continue
        for lo in range(sent, due, max_batch):
            part = records[lo : min(due, lo + max_batch)]
            await sender.send(topic, part)
            if progress is not None:
                progress(len(part))
        sent = due
    return sent
