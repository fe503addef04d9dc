"""Faults against the whole pipeline; each scenario ends with the online store equal to
the from-scratch oracle for every user produced, and prints how many users it checked."""

from __future__ import annotations

import math
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lte_core.basis import BasisArtifact
from lte_runtime.embedded_broker import EmbeddedBroker
from lte_runtime.redis_server import RedisServer
from tests.chaos.pipeline import (
    DAY,
    LAG_DAYS,
    T0,
    W_MAX,
    W_MIN,
    WINDOW_DAYS,
    Pipeline,
    make_basis,
    random_events,
)
from tests.integration.harness import LteProcess, wait_until

T1 = T0 + 0.5
USERS = 120


@pytest.fixture(scope="session")
def chaos_basis(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BasisArtifact]:
    directory = tmp_path_factory.mktemp("chaos-basis") / "basis"
    return directory, make_basis(directory)


@pytest.fixture
def pipeline(
    chaos_broker: EmbeddedBroker, chaos_basis: tuple[Path, BasisArtifact], tmp_path: Path
) -> Iterator[Pipeline]:
    redis = RedisServer(tmp_path / "redis").start()
    p = Pipeline(chaos_broker, tmp_path, chaos_basis[0], chaos_basis[1], redis)
    try:
        yield p
    finally:
        p.stop_all()
        if redis.pid is not None:
            os.kill(redis.pid, signal.SIGCONT)
        redis.kill()


def _load(p: Pipeline, seed: str, count: int = 3000) -> None:
    p.produce(random_events(random.Random(seed), users=USERS, count=count, lo=T0 - 25 * DAY, hi=T0))


def test_restart_with_a_later_clock_behind_a_backlog_keeps_the_newer_lte(
    pipeline: Pipeline,
) -> None:
    """The sweep of the restarted worker updates users before their waiting events do; the
    event updates are newer (higher version) though produced earlier and due earlier."""
    p = pipeline
    _load(p, "first", 1500)
    p.refresher()
    worker = p.worker(T1)
    assert not p.converge(T1).wrong
    assert worker.stop() == 0
    # a backlog that arrives while the worker is down, all inside the later window
    p.produce(
        random_events(
            random.Random("backlog"), users=USERS, count=3000, lo=T0 - DAY, hi=T0 + 3 * DAY
        )
    )
    t2 = T1 + 6 * DAY
    worker = p.worker(t2, "--batch-max-records", "40")
    verdict = p.converge(t2)
    assert verdict.checked == USERS and not verdict.wrong
    assert worker.metric("lte_updates_emitted_total", {"trigger": "clock"}) > 0


def _writing(p: Pipeline, seed: str) -> LteProcess:
    """Load, a refresher in small batches and a worker, until 200 updates were written."""
    _load(p, seed)
    refresher = p.refresher("--batch-max-records", "20")
    p.worker(T1, "--batch-max-records", "100")
    wait_until(lambda: refresher.metric("lte_store_writes_total") >= 200, timeout=60, what="writes")
    return refresher


def test_redis_killed_mid_stream(pipeline: Pipeline) -> None:
    p = pipeline
    refresher = _writing(p, "kill-redis")
    p.redis.kill()
    wait_until(lambda: refresher.metric("lte_store_up") == 0, timeout=20, what="the outage seen")
    p.redis.start()
    verdict = p.converge(T1)
    assert verdict.checked == USERS and not verdict.wrong


def test_redis_hung_then_continued(pipeline: Pipeline) -> None:
    p = pipeline
    refresher = _writing(p, "hang-redis")
    assert p.redis.pid is not None
    os.kill(p.redis.pid, signal.SIGSTOP)
    try:
        wait_until(
            lambda: refresher.metric("lte_store_writes_total", {"outcome": "error"}) > 0,
            timeout=20,
            what="the refresher to notice the hung Redis",
        )
    finally:
        os.kill(p.redis.pid, signal.SIGCONT)
    verdict = p.converge(T1)
    assert verdict.checked == USERS and not verdict.wrong


def test_refresher_kill_9_during_load(pipeline: Pipeline) -> None:
    p = pipeline
    refresher = _writing(p, "kill-refresher")
    refresher.kill()
    p.refresher()
    verdict = p.converge(T1)
    assert verdict.checked == USERS and not verdict.wrong


def test_worker_kill_9_during_load(pipeline: Pipeline) -> None:
    p = pipeline
    _load(p, "kill-worker", 4000)
    p.refresher()
    worker = p.worker(T1, "--batch-max-records", "50")
    wait_until(
        lambda: worker.metric("lte_worker_batch_events_sum") >= 800, timeout=60, what="progress"
    )
    worker.kill()
    assert not p.worker_done(), "the worker finished before the kill"
    p.worker(T1)
    verdict = p.converge(T1)
    assert verdict.checked == USERS and not verdict.wrong


def test_weights_at_both_ends_of_the_range_end_to_end(pipeline: Pipeline) -> None:
    """Per user a 1e6 event that leaves at the later clock and a 1e-6 event that stays,
    with times exactly on, and one ulp around, the later window's first instant."""
    p = pipeline
    edge = T0 - 19 * DAY  # the first instant of the window at t2 below
    events = []
    for u in range(60):
        big, small = (W_MAX, W_MIN) if u % 2 else (W_MIN, W_MAX)
        events += [
            (f"e{u}", f"i{u % 64}", T0 - 19.5 * DAY, big),  # leaves at t2
            (f"e{u}", f"i{(u + 7) % 64}", T0 - 5 * DAY, small),  # stays
            (f"e{u}", f"i{(u + 3) % 64}", math.nextafter(edge, -math.inf), small),  # leaves
            (f"e{u}", f"i{(u + 5) % 64}", edge if u % 3 else math.nextafter(edge, math.inf), big),
        ]
    p.produce(events)
    p.refresher()
    worker = p.worker(T1)
    assert not p.converge(T1).wrong
    assert worker.stop() == 0
    t2 = T1 + 3 * DAY
    p.worker(t2)
    verdict = p.converge(t2)
    assert verdict.checked == 60 and not verdict.wrong


def _claims(worker: LteProcess) -> int:
    return worker.log_path.read_text(errors="replace").count("claimed changelog epoch")


def test_zombie_worker_is_fenced_and_the_changelog_stays_clean(pipeline: Pipeline) -> None:
    """Worker A is frozen (SIGSTOP) mid-stream past the session timeout; B takes over A's
    partitions and fences them; A wakes (SIGCONT) and must not poison the changelog. After
    more events the store equals the oracle, and so does a fresh worker that restores every
    partition from the changelog onto an empty state directory."""
    p = pipeline
    _load(p, "zombie", 4000)
    p.refresher()
    a = p.worker(T1, "--batch-max-records", "40", state="a")
    wait_until(lambda: a.metric("lte_worker_assigned_partitions") == 4, timeout=60, what="A up")
    b = p.worker(T1, "--batch-max-records", "40", state="b")
    wait_until(
        lambda: (
            b.metric("lte_worker_assigned_partitions") > 0
            and a.metric("lte_worker_batch_events_sum") >= 400
        ),
        timeout=90,
        what="both workers processing",
    )
    # a burst, and A frozen in the middle of it
    before = a.metric("lte_worker_batch_events_sum")
    p.produce(
        random_events(random.Random("zombie-1"), users=USERS, count=3000, lo=T0 - 9 * DAY, hi=T0)
    )
    wait_until(
        lambda: a.metric("lte_worker_batch_events_sum") >= before + 200,
        timeout=60,
        what="A inside the burst",
    )
    assert a.process is not None
    os.kill(a.process.pid, signal.SIGSTOP)
    try:
        wait_until(
            lambda: b.metric("lte_worker_assigned_partitions") == 4,
            timeout=60,
            what="B to take over A's partitions",
        )
        p.produce(
            random_events(random.Random("zombie-2"), users=USERS, count=600, lo=T0 - 5 * DAY, hi=T0)
        )
        wait_until(
            lambda: b.metric("lte_worker_fence_epoch", {"partition": "0"}) > 0,
            timeout=30,
            what="B fenced",
        )
    finally:
        os.kill(a.process.pid, signal.SIGCONT)
    # A stops before its next write once it sees B's newer epoch (exit 1), or rejoins
    # the group if it had nothing to write; like a supervisor, restart it when it exited
    wait_until(
        lambda: (
            a.process is not None
            and (a.process.poll() is not None or a.metric("lte_worker_assigned_partitions") > 0)
        ),
        timeout=60,
        what="A to exit or rejoin",
    )
    if a.process.poll() is not None:
        print(f"[chaos] zombie exited {a.process.returncode}: {a.log().strip().splitlines()[-1]}")
        a = p.worker(T1, "--batch-max-records", "40", state="a")
    p.produce(
        random_events(random.Random("zombie-3"), users=USERS, count=600, lo=T0 - 5 * DAY, hi=T0)
    )
    verdict = p.converge(T1)
    assert verdict.checked == USERS and not verdict.wrong
    for worker in (a, b):
        worker.stop()
    # a fresh worker restores the changelog onto an empty disk; one new event per user makes
    # it emit every user from the restored state
    fresh = p.worker(T1, state="fresh")
    p.produce([(f"u{u}", f"i{u % 64}", T0 - 3 * DAY, 1.0) for u in range(USERS)])
    verdict = p.converge(T1)
    skipped = fresh.metric("lte_changelog_skipped_records_total")
    print(f"[chaos] fresh restore skipped {skipped:.0f} zombie records")
    assert verdict.checked == USERS and not verdict.wrong


def test_broker_paused_with_a_live_clock_windows_still_slide(
    chaos_basis: tuple[Path, BasisArtifact], tmp_path: Path
) -> None:
    """The broker is frozen (SIGSTOP) for 30 s while the worker's clock runs half a day per
    second; afterwards every window must still slide to its end. The product's promise: the
    sweeper retries transient broker errors (counted) and goes on; anything else stops the
    worker with exit 1, and a supervisor (here: the test) restarts it on the same state."""
    log = tmp_path / "tansu.log"
    with EmbeddedBroker(log_path=log) as broker:
        redis = RedisServer(tmp_path / "redis").start()
        p = Pipeline(broker, tmp_path, chaos_basis[0], chaos_basis[1], redis)
        try:
            _load(p, "pause", 2000)
            p.refresher()
            speed = DAY / 2
            anchor = time.time() + 5
            worker = p.worker(T1, speed=speed, anchor=anchor)
            wait_until(
                lambda: worker.metric("lte_sweep_users_total") > 0,
                timeout=60,
                what="the sweep to slide windows",
            )
            pid = broker.pid
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)
            try:
                time.sleep(30)  # the fault itself lasts 30 s; nothing waits on it
            finally:
                os.kill(pid, signal.SIGCONT)
            restarts = 0
            # every event has left every window once the clock passes T0 + 23 d
            end = T0 + (WINDOW_DAYS + LAG_DAYS + 1) * DAY
            deadline = anchor + (end - T1) / speed + 60
            while time.time() < deadline:
                assert worker.process is not None
                if worker.process.poll() is not None:
                    restarts += 1
                    print(f"[chaos] worker exited {worker.process.returncode}, restarted")
                    worker = p.worker(T1, speed=speed, anchor=anchor)
                if worker.metric("lte_worker_clock_seconds") > end and not p.check(end).wrong:
                    break
                time.sleep(0.5)
            verdict = p.check(end)
            retries = worker.metric("lte_worker_task_retries_total", {"task": "sweeper"})
            print(f"[chaos pause] {verdict}; sweeper retries {retries:.0f}, restarts {restarts}")
            assert verdict.checked == USERS and not verdict.wrong
        finally:
            p.stop_all()
            redis.kill()
