"""``lte worker`` on the real embedded broker, checked against the brute-force oracle."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from lte_core.basis import BasisArtifact
from lte_core.window import WindowSpec
from lte_runtime.embedded_broker import EmbeddedBroker
from offline.datasets import InteractionLog, MovieLens
from streams.fault_hook import CRASH_STATUS, STEPS
from tests.integration.harness import (
    LteProcess,
    all_committed,
    committed_offsets,
    event_record,
    latest_updates,
    partition_ends,
    produce,
    read_topic,
    unique,
    wait_until,
)
from tests.integration.oracle_check import assert_updates_match, changed_users, window_means

DAY = 86400
SPEC = WindowSpec(window=60 * DAY, lag=14 * DAY, bucket=DAY)
pytestmark = pytest.mark.dataset


@dataclass
class Setup:
    broker: EmbeddedBroker
    basis_dir: Path
    tmp: Path
    name: str
    started: list[LteProcess] = field(default_factory=list)

    @property
    def topics(self) -> dict[str, str]:
        return {
            "interactions": f"interactions-{self.name}",
            "updates": f"lte-updates-{self.name}",
            "dlq": f"dlq-{self.name}",
            "changelog": f"changelog-{self.name}",
        }

    def options(self, now: float, state: str, group: str | None) -> dict[str, str]:
        """The worker's settings, by flag name (``--input-topic`` is ``input-topic``)."""
        t = self.topics
        return {
            "broker": self.broker.bootstrap,
            "basis": str(self.basis_dir),
            "window": "60d",
            "lag": "14d",
            "bucket": "1d",
            "now": repr(now),
            "state-dir": str(self.tmp / state),
            "input-topic": t["interactions"],
            "updates-topic": t["updates"],
            "dlq-topic": t["dlq"],
            "changelog-topic": t["changelog"],
            "group-id": group or f"g-{self.name}",
            "max-future-skew": "400d",
            "session-timeout-ms": "6000",
            "sweep-interval": "0.2",
            "log-level": "info",
        }

    def worker(
        self,
        now: float,
        *,
        state: str = "state",
        extra: tuple[str, ...] = (),
        group: str | None = None,
        env: dict[str, str] | None = None,
    ) -> LteProcess:
        flags = [
            f
            for name, value in self.options(now, state, group).items()
            for f in (f"--{name}", value)
        ]
        process = LteProcess(["worker", *flags, *extra], self.tmp, "worker", env=env)
        self.started.append(process)
        return process.start()

    def faust_worker(self, now: float, *, state: str = "state") -> LteProcess:
        """The same worker through Faust's own command line, configured by ``LTE_*``."""
        env = {
            "LTE_" + name.upper().replace("-", "_"): value
            for name, value in self.options(now, state, None).items()
        }
        env["LTE_BROKER"] = f"kafka://{self.broker.bootstrap}"  # Faust's spelling
        process = LteProcess(
            ["-A", "streams.app", "worker", "-l", "info"],
            self.tmp,
            "faust-worker",
            env=env,
            port_flag="--web-port",
            program=("faust",),
        )
        self.started.append(process)
        return process.start()

    def produce_log(self, log: InteractionLog) -> None:
        produce(
            self.broker.bootstrap,
            self.topics["interactions"],
            (
                event_record(u, i, t)
                for u, i, t in zip(
                    log.user_ids.tolist(), log.item_ids.tolist(), log.ts.tolist(), strict=True
                )
            ),
        )

    def committed(self) -> dict[int, int]:
        return committed_offsets(
            self.broker.bootstrap, f"g-{self.name}", self.topics["interactions"]
        )

    def input_end(self) -> dict[int, int]:
        return partition_ends(read_topic(self.broker.bootstrap, self.topics["interactions"]))

    def wait_all_committed(self, timeout: float = 120.0) -> None:
        end = self.input_end()
        wait_until(
            lambda: self.all_committed(end),
            timeout=timeout,
            what="the group to commit every input record",
        )

    def latest(self) -> dict[str, dict[str, object]]:
        return latest_updates(self.broker.bootstrap, self.topics["updates"])

    def all_as_of(self, users: set[str], clock: float) -> bool:
        latest = self.latest()
        return all(latest.get(u, {}).get("as_of") == clock for u in users)

    def all_committed(self, end: dict[int, int]) -> bool:
        return all_committed(self.committed(), end)


@pytest.fixture
def setup(broker: EmbeddedBroker, ml_basis_dir: Path, tmp_path: Path) -> Iterator[Setup]:
    s = Setup(broker, ml_basis_dir, tmp_path, unique("w"))
    yield s
    for process in s.started:
        process.kill()


def clocks(log: InteractionLog) -> tuple[float, float]:
    t1 = float(np.quantile(log.ts, 0.6)) + 0.5
    return t1, t1 + 45 * DAY


def test_replay_matches_oracle_then_a_later_clock_slides_silent_users(
    setup: Setup, movielens: MovieLens, ml_basis: BasisArtifact
) -> None:
    log = movielens.log.sorted_by_time()
    t1, t2 = clocks(log)
    setup.produce_log(log)
    worker = setup.worker(t1)
    worker.wait_ready()
    setup.wait_all_committed()
    assert worker.metric("lte_events_total") == len(log)
    # Every applied event is written once and every user's head at least once.
    assert worker.metric("lte_state_writes_total") >= worker.metric(
        "lte_events_total", {"outcome": "applied"}
    ) + worker.metric("lte_state_users")
    assert worker.stop() == 0
    before = window_means(log, ml_basis, SPEC, t1)
    assert_updates_match(setup.latest(), before, as_of=t1)

    # Nothing new arrives; only the clock moves. Silent users' windows must slide.
    later = window_means(log, ml_basis, SPEC, t2)
    changed = changed_users(before, later)
    assert len(changed) > 100
    worker = setup.worker(t2)
    worker.wait_ready()
    wait_until(
        lambda: setup.all_as_of(changed, t2),
        timeout=60,
        what="updates for every user whose window moved",
    )
    assert worker.metric("lte_updates_emitted_total", {"trigger": "clock"}) >= len(changed)
    assert_updates_match(setup.latest(), later)


def test_kill_9_at_random_points_loses_and_duplicates_nothing(
    setup: Setup, movielens: MovieLens, ml_basis: BasisArtifact
) -> None:
    log = movielens.log.sorted_by_time()
    t1, t2 = clocks(log)
    setup.produce_log(log)
    end = setup.input_end()
    rng = random.Random(20261123)
    for kill in range(5):
        worker = setup.worker(t1, extra=("--batch-max-records", "300"))
        worker.wait_ready()
        threshold = rng.randint(500, 6_000)  # records this process has processed
        wait_until(
            lambda w=worker, k=threshold: w.metric("lte_worker_batch_events_sum") >= k,  # type: ignore[misc]
            timeout=90,
            what="progress before the kill",
        )
        worker.kill()
        assert not setup.all_committed(end), f"the replay finished before kill {kill + 1}"
    final = setup.worker(t1)
    final.wait_ready()
    setup.wait_all_committed()
    final.stop()
    before = window_means(log, ml_basis, SPEC, t1)
    assert_updates_match(setup.latest(), before)

    # Another machine: an empty state directory, restored from the changelog alone.
    moved = setup.worker(t2, state="other-machine")
    moved.wait_ready(timeout=120)
    assert moved.metric("lte_changelog_restored_records_total") > 0
    later = window_means(log, ml_basis, SPEC, t2)
    wait_until(
        lambda: setup.all_as_of(changed_users(before, later), t2),
        timeout=90,
        what="the restored worker to slide every window to the later clock",
    )
    assert_updates_match(setup.latest(), later)


def test_two_workers_split_partitions_and_survive_losing_one(
    setup: Setup, movielens: MovieLens, ml_basis: BasisArtifact
) -> None:
    log = movielens.log.sorted_by_time()
    t1, _ = clocks(log)
    half = len(log) // 2
    first_half = InteractionLog(
        log.user_ids[:half], log.item_ids[:half], log.ts[:half], log.weights[:half]
    )
    a = setup.worker(t1, state="a")
    b = setup.worker(t1, state="b")
    a.wait_ready()
    b.wait_ready()
    wait_until(
        lambda: (
            a.metric("lte_worker_assigned_partitions") > 0
            and b.metric("lte_worker_assigned_partitions") > 0
            and a.metric("lte_worker_assigned_partitions")
            + b.metric("lte_worker_assigned_partitions")
            == 4
        ),
        timeout=60,
        what="both workers to own partitions",
    )
    setup.produce_log(first_half)
    setup.wait_all_committed()
    assert a.metric("lte_events_total") > 0 and b.metric("lte_events_total") > 0
    assert a.metric("lte_events_total") + b.metric("lte_events_total") == half

    b.kill()  # a takes over b's partitions and restores them from the changelog
    wait_until(
        lambda: a.metric("lte_worker_assigned_partitions") == 4,
        timeout=60,
        what="the survivor to own every partition",
    )
    assert a.metric("lte_changelog_restored_records_total") > 0
    rest = InteractionLog(
        log.user_ids[half:], log.item_ids[half:], log.ts[half:], log.weights[half:]
    )
    setup.produce_log(rest)
    setup.wait_all_committed()
    assert_updates_match(setup.latest(), window_means(log, ml_basis, SPEC, t1))


BadCase = tuple[bytes | None, bytes | None, str]


def bad_records(rng: random.Random, past: int) -> list[BadCase]:
    """A corpus of broken records, each with the reason it must be dead-lettered with;
    ``past`` is a time well before the worker's clock."""
    cases: list[BadCase] = []
    for i in range(40):
        cases.append(
            (
                b"u1",
                bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 40))) + b"\xff{",
                "not_json",
            )
        )
        cases.append((b"u1", b'{"user_id":"u1","item_id":"1","ts":NaN}', "not_json"))
        cases.append((b"u1", b"[1,2,3]", "not_object"))
        cases.append((b"u2", b'{"user_id":"u2","ts":%d}' % i, "missing_field"))
        cases.append((b"u2", b'{"user_id":"u2","item_id":"1"}', "missing_field"))
        cases.append((b"u3", b'{"user_id":"u3","item_id":1,"ts":5}', "bad_field"))
        cases.append((b"u3", b'{"user_id":"u3","item_id":"1","ts":"yesterday"}', "bad_field"))
        cases.append((b"u3", b'{"user_id":"u3","item_id":"1","ts":1,"weight":-2}', "bad_field"))
        cases.append((b"u3", b'{"user_id":"u3","item_id":"1","ts":1e308,"weight":1}', "future_ts"))
        cases.append((b"someone-else", b'{"user_id":"u4","item_id":"1","ts":5}', "key_mismatch"))
        cases.append((None, b'{"user_id":"u4","item_id":"1","ts":5}', "key_mismatch"))
        cases.append(
            (b"u5", b'{"user_id":"u5","item_id":"' + b"9" * 5000 + b'","ts":5}', "too_large")
        )
        cases.append(
            (b"u6", b'{"user_id":"u6","item_id":"no-such-item","ts":%d}' % past, "unknown_item")
        )
        cases.append(
            (b"u7", b'{"user_id":"u7","item_id":"1","ts":%d}' % (past + 10**9), "future_ts")
        )
    rng.shuffle(cases)
    return cases


def test_bad_input_lands_in_the_dlq_with_reasons_and_good_input_is_applied(
    setup: Setup, movielens: MovieLens, ml_basis: BasisArtifact
) -> None:
    rng = random.Random(7)
    log = movielens.log.sorted_by_time()
    good = InteractionLog(
        log.user_ids[:3000], log.item_ids[:3000], log.ts[:3000], log.weights[:3000]
    )
    clock = float(good.ts.max()) + 20 * DAY  # every good event is inside the window
    bad = bad_records(rng, past=int(good.ts.min()))
    from lte_runtime.kafka.batch_sender import OutRecord  # noqa: PLC0415

    good_records = [
        event_record(u, i, t)
        for u, i, t in zip(
            good.user_ids.tolist(), good.item_ids.tolist(), good.ts.tolist(), strict=True
        )
    ]
    mixed: list[OutRecord] = good_records + [OutRecord(k, v) for k, v, _ in bad]
    rng.shuffle(mixed)
    produce(setup.broker.bootstrap, setup.topics["interactions"], mixed)
    worker = setup.worker(clock, extra=("--max-future-skew", "1d"))
    worker.wait_ready()
    setup.wait_all_committed()
    dead = read_topic(setup.broker.bootstrap, setup.topics["dlq"])
    got = sorted((r.key or b"", r.value, dict(r.headers)["lte.reason"].decode()) for r in dead)
    want = sorted((k or b"", v or b"", reason) for k, v, reason in bad)
    assert got == want
    for record in dead:
        headers = dict(record.headers)
        assert (
            headers["lte.detail"]
            and headers["lte.source.topic"] == setup.topics["interactions"].encode()
        )
    assert worker.metric("lte_events_total", {"outcome": "unknown_item"}) == 40
    assert worker.metric("lte_events_total", {"outcome": "invalid"}) == len(bad) - 40
    assert_updates_match(setup.latest(), window_means(good, ml_basis, SPEC, clock))
    assert worker.stop() == 0


def head_of(log: InteractionLog, n: int) -> InteractionLog:
    return InteractionLog(log.user_ids[:n], log.item_ids[:n], log.ts[:n], log.weights[:n])


def test_faust_cli_with_lte_variables_matches_the_oracle(
    setup: Setup, movielens: MovieLens, ml_basis: BasisArtifact
) -> None:
    """``faust -A streams.app worker``, configured only by ``LTE_*`` variables."""
    log = head_of(movielens.log.sorted_by_time(), 30_000)
    t1, _ = clocks(log)
    setup.produce_log(log)
    worker = setup.faust_worker(t1)
    worker.wait_ready()
    setup.wait_all_committed()
    assert worker.metric("lte_events_total") == len(log)
    assert worker.stop() == 0
    assert_updates_match(setup.latest(), window_means(log, ml_basis, SPEC, t1))


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_each_step_of_the_emit_order_loses_and_duplicates_nothing(
    setup: Setup, movielens: MovieLens, ml_basis: BasisArtifact, step: str
) -> None:
    log = head_of(movielens.log.sorted_by_time(), 20_000)
    t1, _ = clocks(log)
    setup.produce_log(log)
    end = setup.input_end()
    crashing = setup.worker(
        t1, extra=("--batch-max-records", "1000"), env={"LTE_TEST_CRASH_AT": f"{step}:3"}
    )
    assert crashing.wait_exit(timeout=90) == CRASH_STATUS, crashing.log()
    assert not setup.all_committed(end), "the crash came after the replay was committed"
    final = setup.worker(t1)
    final.wait_ready()
    setup.wait_all_committed()
    assert final.stop() == 0
    # n_events per user equals the oracle's: an event applied twice would show here
    assert_updates_match(setup.latest(), window_means(log, ml_basis, SPEC, t1))


def test_a_second_worker_joins_and_leaves_while_events_flow(
    setup: Setup, movielens: MovieLens, ml_basis: BasisArtifact
) -> None:
    log = movielens.log.sorted_by_time()
    t1, _ = clocks(log)
    parts = [
        InteractionLog(log.user_ids[c], log.item_ids[c], log.ts[c], log.weights[c])
        for c in np.array_split(np.arange(len(log)), 4)
    ]

    def feed(part: InteractionLog) -> threading.Thread:
        thread = threading.Thread(target=setup.produce_log, args=(part,))
        thread.start()
        return thread

    a = setup.worker(t1, state="a", extra=("--batch-max-records", "500"))
    a.wait_ready()
    setup.produce_log(parts[0])
    wait_until(lambda: a.metric("lte_events_total") > 0, timeout=60, what="a to start")
    joining = feed(parts[1])  # b joins while the second quarter arrives
    b = setup.worker(t1, state="b", extra=("--batch-max-records", "500"))
    b.wait_ready()
    joining.join()
    setup.produce_log(parts[2])  # some of it on b's partitions
    wait_until(lambda: b.metric("lte_events_total") > 0, timeout=60, what="b to take a share")
    leaving = feed(parts[3])  # b leaves while the last quarter arrives
    assert b.stop() == 0
    leaving.join()
    setup.wait_all_committed()
    wait_until(
        lambda: a.metric("lte_worker_assigned_partitions") == 4,
        timeout=60,
        what="a to own every partition again",
    )
    assert_updates_match(setup.latest(), window_means(log, ml_basis, SPEC, t1))


def test_a_partition_that_cannot_be_opened_stops_the_worker_with_one_line(
    setup: Setup, movielens: MovieLens
) -> None:
    log = head_of(movielens.log.sorted_by_time(), 2_000)
    t1, _ = clocks(log)
    setup.produce_log(log)
    first = setup.worker(t1)
    first.wait_ready()
    setup.wait_all_committed()
    assert first.stop() == 0
    # the same state directory under another window: opening a partition must fail
    mismatched = setup.worker(t1, extra=("--window", "90d"))
    assert mismatched.wait_exit(timeout=90) == 1
    output = mismatched.log_path.read_text(errors="replace")
    last = output.strip().splitlines()[-1]
    assert last.startswith("lte: error: ") and "another configuration" in last, last
    # the failure went through the app's crash path, which arms the exit timer (a stop
    # that then hung would otherwise leave a zombie process: seen in the chaos suite)
    assert "worker failed: " in output, output[-2000:]


def test_a_failing_partition_stops_the_worker_and_a_restart_recovers(
    setup: Setup, movielens: MovieLens, ml_basis: BasisArtifact
) -> None:
    """An exception in one partition's actor (not a kill): the worker cancels the others,
    closes its stores, exits 1 with one line; the same state directory then recovers."""
    log = head_of(movielens.log.sorted_by_time(), 20_000)
    t1, _ = clocks(log)
    setup.produce_log(log)
    failing = setup.worker(
        t1,
        extra=("--batch-max-records", "1000"),
        env={"LTE_TEST_CRASH_AT": "after_changelog:3:raise"},
    )
    assert failing.wait_exit(timeout=90) == 1
    last = failing.log().strip().splitlines()[-1]
    # one line, naming the failure, and an orderly stop: the crash watchdog
    # (streams.app.CRASH_STOP_GRACE_S) would add "did not stop within" to this line
    assert last == "lte: error: injected failure at after_changelog #3", last
    final = setup.worker(t1)
    final.wait_ready()
    setup.wait_all_committed()
    assert final.stop() == 0
    assert_updates_match(setup.latest(), window_means(log, ml_basis, SPEC, t1))
