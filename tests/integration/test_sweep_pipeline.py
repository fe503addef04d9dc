"""The pipelined sweep (:meth:`streams.partition.PartitionProcessor.sweep` computes each step
while the broker acknowledges the previous one's records) against one step at a time, a
brute-force recompute of every window, and a restore from the changelog it wrote."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson
from aiokafka.structs import ConsumerRecord, TopicPartition
from rocksdict import Options, Rdict

from lte_core.encoders import EncoderSpec
from lte_core.window import WindowSpec
from lte_runtime.embedded_broker import EmbeddedBroker
from lte_runtime.kafka.settings import KafkaSettings
from offline.synthetic import SyntheticSpec, SyntheticStream
from streams import fault_hook
from streams.engine_host import EngineHost
from streams.fault_hook import InjectedFaultError
from streams.settings import Topics, WorkerSettings
from streams.window_store import EVENT, HEAD, META, META_CLOCK, META_EVENTS, META_USERS
from tests.integration.harness import latest_updates, unique

DAY = 86400
T1 = 1_700_000_000.0
T2 = T1 + 20 * DAY
SPEC = WindowSpec.parse("30d", "0", "1d")
USERS = 150
STEP = 16


def _events() -> list[tuple[str, int, float]]:
    """1-4 events per user on days of the 30 before T1: a sweep at T2 empties some windows
    and leaves others partly filled."""
    rng = np.random.default_rng(7)
    return [
        (f"u{u}", int(rng.integers(0, 50)), T1 - float(rng.uniform(1, 29)) * DAY)
        for u in range(USERS)
        for _ in range(int(rng.integers(1, 5)))
    ]


def _kept(events: list[tuple[str, int, float]]) -> dict[str, int]:
    """Brute force: per user, how many of its events are still in the window at T2."""
    start = SPEC.end_bucket(T2) - SPEC.n_buckets
    kept: dict[str, int] = {}
    for user, _, ts in events:
        kept[user] = kept.get(user, 0) + (math.floor(ts / DAY) >= start)
    return kept


def _settings(
    broker: EmbeddedBroker, basis: Path, state: Path, topics: Topics, now: float
) -> WorkerSettings:
    return WorkerSettings(
        kafka=KafkaSettings(broker.bootstrap),
        basis_dir=basis,
        window=SPEC,
        encoder=EncoderSpec.parse("mean"),
        state_dir=state,
        topics=topics,
        partitions=1,
        now=now,
        sweep_batch=STEP,
    )


async def _apply(settings: WorkerSettings, events: list[tuple[str, int, float]]) -> None:
    host = EngineHost(settings)
    await host.start()
    try:
        await host.assign([TopicPartition(settings.topics.interactions, 0)])
        records = []
        for offset, (user, item, ts) in enumerate(events):
            key = user.encode()
            value = orjson.dumps({"user_id": user, "item_id": f"i{item}", "ts": ts})
            records.append(
                ConsumerRecord(
                    settings.topics.interactions,
                    0,
                    offset,
                    int(T1 * 1000),
                    0,
                    key,
                    value,
                    None,
                    len(key),
                    len(value),
                    [],
                )
            )
        await host.process(0, records)
    finally:
        await host.stop()


async def _sweep(settings: WorkerSettings, *, pipelined: bool) -> list[str]:
    """Sweep at ``settings.now``; return what happened in order: ``computed`` per step
    read and computed, ``emitted`` per step written."""
    host = EngineHost(settings)
    await host.start()
    trace: list[str] = []
    try:
        await host.assign([TopicPartition(settings.topics.interactions, 0)])
        processor = host.processors[0]
        step, emit = processor._sweep_step, processor._emit_step

        def computed(limit: int, first: bytes) -> Any:
            trace.append("computed")
            return step(limit, first)

        async def emitted(s: Any, counts: tuple[int, int]) -> None:
            await emit(s, counts)
            trace.append("emitted")

        processor._sweep_step = computed  # type: ignore[method-assign]
        processor._emit_step = emitted  # type: ignore[method-assign,assignment]
        if pipelined:
            await host.sweep()
        else:
            resume = False
            # no go_on: one step a call, each computed after the previous one is written
            while await processor.sweep(STEP, resume=resume) == STEP:
                resume = True
    finally:
        await host.stop()
    return trace


def _state(settings: WorkerSettings) -> dict[bytes, bytes]:
    """Heads, events and the due index, with the metadata that counts them."""
    path = settings.state_dir / f"{settings.topics.interactions}-0"
    db = Rdict(str(path), Options(raw_mode=True))
    try:
        kept = {META + name for name in (META_CLOCK, META_USERS, META_EVENTS)}
        items = cast(Iterator[tuple[bytes, bytes]], db.items())
        return {k: v for k, v in items if not k.startswith(META) or k in kept}
    finally:
        db.close()


def _topics() -> Topics:
    name = unique("sweep")
    return Topics(
        interactions=f"{name}-in",
        updates=f"{name}-updates",
        dead_letters=f"{name}-dlq",
        changelog=f"{name}-changelog",
    )


def test_a_pipelined_sweep_writes_what_one_step_at_a_time_writes(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    stream = SyntheticStream(SyntheticSpec(users=10, items=50, dim=8, events=1))
    basis = stream.catalog.basis().save(tmp_path / "basis")
    events = _events()
    runs = {}
    for mode in ("pipelined", "stepwise"):
        topics = _topics()
        directory = tmp_path / mode
        asyncio.run(_apply(_settings(broker, basis, directory, topics, T1), events))
        settings = _settings(broker, basis, directory, topics, T2)
        trace = asyncio.run(_sweep(settings, pipelined=mode == "pipelined"))
        runs[mode] = (settings, trace, _state(settings))
    pipelined, trace, state = runs["pipelined"]
    stepwise, stepwise_trace, stepwise_state = runs["stepwise"]

    kept = _kept(events)
    emptied = {u for u, n in kept.items() if n == 0}
    assert 20 < len(emptied) < USERS - 20  # both kinds of window, in many steps
    assert trace.count("computed") > 4
    # steps were computed while an earlier one was still being written
    assert any(trace[i : i + 2] == ["computed", "computed"] for i in range(len(trace) - 1)), trace
    assert stepwise_trace == ["computed", "emitted"] * (len(stepwise_trace) // 2) + (
        ["computed"] if len(stepwise_trace) % 2 else []
    )

    assert state == stepwise_state
    heads = {k[len(HEAD) :].decode() for k in state if k.startswith(HEAD)}
    assert heads == set(kept) - emptied
    stored = int.from_bytes(state[META + META_EVENTS], "big")
    assert stored == sum(kept.values())
    assert int.from_bytes(state[META + META_USERS], "big") == len(heads)
    updates = latest_updates(broker.bootstrap, pipelined.topics.updates)
    # the same LTEs as one step at a time (only the wall-clock fields differ)
    timeless = ("produced_at", "due_at")
    assert {
        u: {k: v for k, v in doc.items() if k not in timeless} for u, doc in updates.items()
    } == {
        u: {k: v for k, v in doc.items() if k not in timeless}
        for u, doc in latest_updates(broker.bootstrap, stepwise.topics.updates).items()
    }
    assert {u: doc["n_events"] for u, doc in updates.items()} == kept
    assert {u for u, doc in updates.items() if doc["vector"] is None} == emptied

    # a worker on a fresh disk restores the same state from the changelog
    restored = _settings(broker, basis, tmp_path / "restored", pipelined.topics, T2)
    assert asyncio.run(_sweep(restored, pipelined=True)) == ["computed"]  # nobody due
    assert _state(restored) == state


def test_a_failed_step_leaves_a_consistent_store_and_a_restart_finishes_the_sweep(
    broker: EmbeddedBroker, tmp_path: Path, monkeypatch: Any
) -> None:
    """A step that fails after its local commit, while the next one is already computed:
    the store holds the counts of what was written (not of the step computed ahead), the
    processor's own counts agree, and a restarted worker finishes the sweep exactly."""
    stream = SyntheticStream(SyntheticSpec(users=10, items=50, dim=8, events=1))
    basis = stream.catalog.basis().save(tmp_path / "basis")
    events = _events()
    topics = _topics()
    state = tmp_path / "state"
    asyncio.run(_apply(_settings(broker, basis, state, topics, T1), events))
    settings = _settings(broker, basis, state, topics, T2)
    monkeypatch.setattr(fault_hook, "_target", ("after_local_write", 3, True))
    monkeypatch.setattr(fault_hook, "_seen", 0)
    counts: dict[str, int] = {}

    async def failing() -> None:
        host = EngineHost(settings)
        await host.start()
        try:
            await host.assign([TopicPartition(topics.interactions, 0)])
            with contextlib.suppress(InjectedFaultError):
                await host.sweep()
            counts["users"], counts["events"] = host.processors[0].users, host.processors[0].events
        finally:
            await host.stop()

    asyncio.run(failing())
    assert fault_hook._seen == 3
    written = _state(settings)
    heads = sum(k.startswith(HEAD) for k in written)
    stored = sum(k.startswith(EVENT) for k in written)
    assert heads < USERS  # some steps were written, not all
    assert int.from_bytes(written[META + META_USERS], "big") == heads == counts["users"]
    assert int.from_bytes(written[META + META_EVENTS], "big") == stored == counts["events"]

    monkeypatch.setattr(fault_hook, "_target", None)
    asyncio.run(_sweep(settings, pipelined=True))
    kept = _kept(events)
    final = _state(settings)
    assert {k[len(HEAD) :].decode() for k in final if k.startswith(HEAD)} == {
        u for u, n in kept.items() if n
    }
    assert int.from_bytes(final[META + META_EVENTS], "big") == sum(kept.values())
    assert sum(k.startswith(EVENT) for k in final) == sum(kept.values())
