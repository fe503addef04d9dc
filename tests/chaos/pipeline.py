"""One pipeline under test, and the oracle it must end equal to.

The oracle is independent of the product: bucket membership by exact rational arithmetic,
the mean of each user's window summed from scratch in float64 from the events as produced.
The store is read back through the store's own reader (what the read API serves)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import numpy.typing as npt

from lte_core.basis import BasisArtifact
from lte_runtime.embedded_broker import EmbeddedBroker
from lte_runtime.redis_server import RedisServer
from serving.online_store import StoreKey
from serving.store_url import parse_store_url
from tests.integration.harness import (
    LteProcess,
    all_committed,
    committed_offsets,
    event_record,
    partition_ends,
    produce,
    read_topic,
    unique,
    wait_until,
    worker_args,
)
from tests.integration.store_backends import sync_store

DAY = 86400
WINDOW_DAYS, LAG_DAYS = 20, 2
T0 = 1_700_006_400.0  # a day edge (19676 · 86400)
N_ITEMS, D = 64, 8
#: the admitted weight range (docs/contracts.md)
W_MIN, W_MAX = 1e-6, 1e6

Event = tuple[str, str, float, float]  # user, item, ts, weight


@dataclass(frozen=True)
class Verdict:
    checked: int
    wrong: list[str]

    def __str__(self) -> str:
        return f"users checked: {self.checked}, users wrong: {len(self.wrong)} {self.wrong[:5]}"


def make_basis(directory: Path) -> BasisArtifact:
    rng = np.random.default_rng(17)
    vectors = rng.standard_normal((N_ITEMS, D)).astype(np.float32)
    basis = BasisArtifact.build([f"i{i}" for i in range(N_ITEMS)], vectors)
    basis.save(directory)
    return basis


def random_events(
    rng: random.Random, *, users: int, count: int, lo: float, hi: float, prefix: str = "u"
) -> list[Event]:
    """Events with ts in ``[lo, hi)``, weights log-uniform over the whole admitted range."""
    return [
        (
            f"{prefix}{rng.randrange(users)}",
            f"i{rng.randrange(N_ITEMS)}",
            rng.uniform(lo, hi),
            10 ** rng.uniform(-6, 6),
        )
        for _ in range(count)
    ]


def oracle(
    events: list[Event], basis: BasisArtifact, clock: float
) -> dict[str, tuple[int, npt.NDArray[np.float64]]]:
    """Per user with events in the window at ``clock``: (count, weighted mean)."""
    end = int((Fraction(clock) - LAG_DAYS * DAY) // DAY)
    start = end - WINDOW_DAYS
    sums: dict[str, tuple[int, npt.NDArray[np.float64], float]] = {}
    index = {item: row for row, item in enumerate(basis.item_ids)}
    for user, item, ts, weight in events:
        if not start <= int(Fraction(ts) // DAY) < end:
            continue
        n, total, w = sums.get(user, (0, np.zeros(D), 0.0))
        vector = basis.item_vectors[index[item]].astype(np.float64)
        sums[user] = (n + 1, total + weight * vector, w + weight)
    return {user: (n, total / w) for user, (n, total, w) in sums.items()}


@dataclass
class Pipeline:
    broker: EmbeddedBroker
    tmp: Path
    basis_dir: Path
    basis: BasisArtifact
    redis: RedisServer
    name: str = field(default_factory=lambda: unique("chaos"))
    started: list[LteProcess] = field(default_factory=list)
    produced: list[Event] = field(default_factory=list)

    @property
    def topics(self) -> dict[str, str]:
        return {
            "interactions": f"interactions-{self.name}",
            "updates": f"lte-updates-{self.name}",
            "dlq": f"dlq-{self.name}",
            "updates_dlq": f"updates-dlq-{self.name}",
            "changelog": f"changelog-{self.name}",
        }

    def worker(
        self,
        now: float,
        *extra: str,
        state: str = "state",
        speed: float | None = None,
        anchor: float | None = None,
    ) -> LteProcess:
        """``lte worker`` with a frozen clock at ``now``, or a live one that shows ``now`` at
        wall time ``anchor`` and runs ``speed`` times faster than the wall clock."""
        args = worker_args(
            self.broker.bootstrap,
            self.basis_dir,
            window=f"{WINDOW_DAYS}d",
            lag=f"{LAG_DAYS}d",
            bucket="1d",
            now=now,
            state_dir=self.tmp / state,
            topics=self.topics,
            group=f"w-{self.name}",
            sweep_interval=0.1,
        )
        if speed is not None:
            at = args.index("--now")
            live = ["--clock-start", repr(now), "--clock-speed", repr(speed)]
            args[at : at + 2] = [*live, "--clock-anchor", repr(anchor)]
        process = LteProcess([*args, *extra], self.tmp, "worker")
        self.started.append(process)
        return process.start()

    def refresher(self, *extra: str) -> LteProcess:
        process = LteProcess(
            [
                "refresher",
                "--broker",
                self.broker.bootstrap,
                "--store",
                f"{self.redis.url}?socket_timeout=1",
                "--updates-topic",
                self.topics["updates"],
                "--dlq-topic",
                self.topics["updates_dlq"],
                "--group-id",
                f"r-{self.name}",
                "--session-timeout-ms",
                "6000",
                "--retry-max-seconds",
                "0.5",
                *extra,
            ],
            self.tmp,
            "refresher",
        )
        self.started.append(process)
        return process.start()

    def produce(self, events: list[Event]) -> None:
        produce(
            self.broker.bootstrap,
            self.topics["interactions"],
            (event_record(u, i, ts, weight=w) for u, i, ts, w in events),
        )
        self.produced.extend(events)

    def worker_done(self) -> bool:
        ends = partition_ends(read_topic(self.broker.bootstrap, self.topics["interactions"]))
        got = committed_offsets(
            self.broker.bootstrap, f"w-{self.name}", self.topics["interactions"]
        )
        return all_committed(got, ends)

    def check(self, clock: float) -> Verdict:
        """Compare every user ever produced with the oracle at ``clock``."""
        want = oracle(self.produced, self.basis, clock)
        users = sorted({e[0] for e in self.produced})
        keys = [StoreKey(self.basis.basis_version, "mean", u) for u in users]
        with sync_store(parse_store_url(self.redis.url), writer=False) as store:
            found = store.get_many(keys)
        wrong = []
        for user, entry in zip(users, found, strict=True):
            n, mean = want.get(user, (0, None))
            if entry is None:
                if n:
                    wrong.append(f"{user}: no entry, oracle n={n}")
            elif entry.update.n_events != n:
                wrong.append(
                    f"{user}: n={entry.update.n_events} {entry.update.version}, oracle {n}"
                )
            elif mean is not None and entry.update.vector is not None:
                diff = float(np.abs(entry.update.vector.astype(np.float64) - mean).max())
                if diff > 1e-5:
                    wrong.append(f"{user}: off by {diff:.2g}")
        return Verdict(len(users), wrong)

    def converge(self, clock: float, timeout: float = 60.0) -> Verdict:
        """Wait until the worker has committed every input record and the store equals the
        oracle (a condition with a deadline); the verdict, printed either way."""
        wait_until(self.worker_done, timeout=timeout, what="the worker to commit every record")
        last: list[Verdict] = []

        def equal() -> bool:
            last.append(self.check(clock))
            return not last[-1].wrong

        try:
            wait_until(equal, timeout=timeout, what="the store to equal the oracle", interval=0.5)
        finally:
            print(f"[chaos {self.name}] {last[-1] if last else 'never checked'}")
        return last[-1]

    def stop_all(self) -> None:
        for process in self.started:
            process.kill()
