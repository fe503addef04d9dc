"""``lte snapshot`` equals what the real stream emitted and served (DESIGN 3.5b).

One JSON-lines log (ML-100K users, with weights, event types and a few items the basis does
not know) is both produced to the embedded broker and handed to ``lte snapshot``. Four
``lte worker`` groups read it at frozen clocks T1 < T2 < T3 (``--now``, restarted in
between, so the sweeper slides and empties windows of silent users):

* identity basis (v1): ``mean`` and ``recency:20d``;
* a K=48 principal basis (v2): ``mean`` and ``ae:<dir>``;

all into one ``lte-updates`` topic, which one ``lte refresher --serve`` writes into one
RocksDB store. After every clock, for every user of the log and every group, the stream's
LTE (the last update at or before T, and what the read API serves for that basis version and
encoder) must equal ``lte snapshot`` at ``(user, T)`` within 1e-5 -- including users whose
window is empty or emptied, and a user the log does not know.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest

from lte_core.autoencoder import AutoencoderArtifact
from lte_core.basis import BasisArtifact
from lte_core.encoders import RecencyEncoder
from lte_runtime.embedded_broker import EmbeddedBroker
from lte_runtime.kafka.batch_sender import OutRecord
from offline.datasets import InteractionLog, MovieLens
from tests.integration.harness import (
    ROOT,
    LteProcess,
    all_committed,
    committed_offsets,
    partition_ends,
    produce,
    read_topic,
    unique,
    update_doc,
    wait_until,
)
from tests.integration.oracle_check import changed_users, window_means
from tests.integration.test_worker import DAY, SPEC
from tests.integration.test_worker_autoencoder import encoder_dir, pca_basis  # noqa: F401

pytestmark = pytest.mark.dataset

WINDOW_FLAGS = ("--window", "60d", "--lag", "14d", "--bucket", "1d")
TYPE_WEIGHTS = "view=1,cart=3"
USERS = 90


@dataclass(frozen=True)
class Group:
    """One worker group: a basis and an encoder flag."""

    name: str
    basis_dir: Path
    basis_version: str
    encoder_flag: str
    encoder_name: str


@dataclass
class Scenario:
    log_path: Path
    users: list[str]
    clocks: list[float]
    groups: dict[str, Group]
    #: per group, per clock: user -> the last update at or before that clock
    emitted: dict[str, list[dict[str, dict[str, Any]]]] = field(default_factory=dict)
    #: per group, per clock: user -> what the read API served (None: 404)
    served: dict[str, list[dict[str, dict[str, Any] | None]]] = field(default_factory=dict)
    snapshots: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    dead_unknown_items: int = 0


def _log_lines(log: InteractionLog, rng: np.random.Generator) -> list[bytes]:
    lines = []
    for u, i, t in zip(log.user_ids.tolist(), log.item_ids.tolist(), log.ts.tolist(), strict=True):
        doc: dict[str, Any] = {"user_id": u, "item_id": i, "ts": t}
        if rng.random() < 0.3:
            doc["weight"] = float(rng.choice([0.5, 2.0]))
        doc["type"] = "cart" if rng.random() < 0.2 else "view"
        lines.append(orjson.dumps(doc))
    return lines


def _worker(
    broker: EmbeddedBroker, tmp: Path, topics: dict[str, str], group: Group, now: float
) -> LteProcess:
    return LteProcess(
        [
            "worker",
            *("--broker", broker.bootstrap, "--basis", str(group.basis_dir)),
            *WINDOW_FLAGS,
            *("--encoder", group.encoder_flag, "--type-weights", TYPE_WEIGHTS),
            *("--now", repr(now), "--state-dir", str(tmp / f"state-{group.name}")),
            *("--input-topic", topics["interactions"], "--updates-topic", topics["updates"]),
            *("--dlq-topic", topics["dlq"], "--group-id", f"{topics['group']}-{group.name}"),
            *("--changelog-topic", f"{topics['group']}-{group.name}-changelog"),
            *("--max-future-skew", "400d", "--session-timeout-ms", "6000"),
            *("--sweep-interval", "0.2"),
        ],
        tmp,
        f"worker-{group.name}",
    ).start()


def _stream_state(records: list[Any], group: Group, clock: float) -> dict[str, dict[str, Any]]:
    """Per user, the group's last update (in partition order) at or before ``clock``."""
    out: dict[str, dict[str, Any]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        doc = update_doc(record.value)
        if (
            doc["basis_version"] == group.basis_version
            and doc["encoder"] == group.encoder_name
            and doc["as_of"] <= clock
        ):
            out[doc["user_id"]] = doc
    return out


def _served(port: int, users: list[str], group: Group) -> dict[str, dict[str, Any] | None]:
    async def fetch() -> dict[str, dict[str, Any] | None]:
        body = {
            "user_ids": users,
            "basis_version": group.basis_version,
            "encoder": group.encoder_name,
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{port}/v1/lte:batchGet", data=orjson.dumps(body)
            ) as resp,
        ):
            assert resp.status == 200, await resp.text()
            results = orjson.loads(await resp.read())["results"]
        return dict(zip(users, results, strict=True))

    return asyncio.run(fetch())


def _snapshot(scenario: Scenario, group: Group, tmp: Path, suffix: str) -> list[dict[str, Any]]:
    pairs = tmp / f"pairs-{group.name}.csv"
    rows = [
        f"{user},{clock!r},{k}"
        for k, clock in enumerate(scenario.clocks)
        for user in [*scenario.users, "nobody"]
    ]
    pairs.write_text("\n".join(["user_id,ts,round", *rows]) + "\n", encoding="utf-8")
    out = tmp / f"snapshot-{group.name}{suffix}"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "lte_cli", "snapshot"),
            *("--log", str(scenario.log_path), "--at", str(pairs)),
            *("--basis", str(group.basis_dir), *WINDOW_FLAGS),
            *("--encoder", group.encoder_flag, "--type-weights", TYPE_WEIGHTS),
            *("--out", str(out)),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"skipped {scenario.dead_unknown_items} events" in done.stderr, done.stderr
    if suffix == ".jsonl":
        return [orjson.loads(line) for line in out.read_bytes().splitlines()]
    table = pq.read_table(out)
    assert table.schema.metadata[b"lte.basis_version"] == group.basis_version.encode()
    return table.to_pylist()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def scenario(  # noqa: PLR0917 - fixtures arrive as parameters
    broker: EmbeddedBroker,
    movielens: MovieLens,
    ml_basis_dir: Path,
    ml_basis: BasisArtifact,
    pca_basis: BasisArtifact,  # noqa: F811
    encoder_dir: Path,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Scenario]:
    tmp = tmp_path_factory.mktemp("snapshot-stream")
    rng = np.random.default_rng(12)
    full = movielens.log.sorted_by_time()
    chosen = set(rng.choice(np.unique(full.user_ids), USERS, replace=False).tolist())
    mine = np.isin(full.user_ids, list(chosen))
    log = InteractionLog(
        full.user_ids[mine], full.item_ids[mine], full.ts[mine], full.weights[mine]
    )
    lines = _log_lines(log, rng)
    strangers = [
        orjson.dumps({"user_id": u, "item_id": "not-in-any-basis", "ts": float(log.ts[k])})
        for k, u in enumerate(log.user_ids[:5].tolist())
    ]
    lines[10:10] = strangers
    log_path = tmp / "events.jsonl"
    log_path.write_bytes(b"\n".join(lines) + b"\n")
    pca_dir = pca_basis.save(tmp / "pca-basis")
    ae = AutoencoderArtifact.load(encoder_dir)
    recency = RecencyEncoder(ml_basis, 20 * DAY).name
    groups = {
        g.name: g
        for g in (
            Group("mean", ml_basis_dir, ml_basis.basis_version, "mean", "mean"),
            Group("recency", ml_basis_dir, ml_basis.basis_version, "recency:20d", recency),
            Group("ae", pca_dir, pca_basis.basis_version, f"ae:{encoder_dir}", ae.name),
            Group("pca-mean", pca_dir, pca_basis.basis_version, "mean", "mean"),
        )
    }
    t1 = float(np.quantile(log.ts, 0.5)) + 0.5
    clocks = [t1, t1 + 35 * DAY, float(log.ts.max()) + 50 * DAY]
    s = Scenario(log_path, sorted(chosen), clocks, groups, dead_unknown_items=len(strangers))
    name = unique("snap")
    topics = {
        "interactions": f"interactions-{name}",
        "updates": f"lte-updates-{name}",
        "dlq": f"dlq-{name}",
        "group": f"g-{name}",
    }
    produce(
        broker.bootstrap,
        topics["interactions"],
        (OutRecord(orjson.loads(line)["user_id"].encode(), line) for line in lines),
    )
    input_end = partition_ends(read_topic(broker.bootstrap, topics["interactions"]))
    started: list[LteProcess] = []
    refresher = LteProcess(
        [
            "refresher",
            *("--broker", broker.bootstrap, "--store", f"rocksdb://{tmp / 'store'}"),
            *("--updates-topic", topics["updates"], "--dlq-topic", f"{topics['dlq']}-updates"),
            *("--group-id", f"{topics['group']}-refresher", "--session-timeout-ms", "6000"),
            "--serve",
        ],
        tmp,
        "refresher",
        port_flag="--port",
    )
    try:
        previous: dict[str, tuple[int, np.ndarray]] | None = None
        for k, clock in enumerate(clocks):
            workers = [_worker(broker, tmp, topics, g, clock) for g in groups.values()]
            started.extend(workers)
            for w in workers:
                w.wait_ready(timeout=120)
            if k == 0:
                for g in groups.values():
                    wait_until(
                        lambda g=g: all_committed(  # type: ignore[misc]
                            committed_offsets(
                                broker.bootstrap,
                                f"{topics['group']}-{g.name}",
                                topics["interactions"],
                            ),
                            input_end,
                        ),
                        timeout=120,
                        what=f"group {g.name} to commit every input record",
                    )
                refresher.start()
                started.append(refresher)
                refresher.wait_ready(timeout=120)
            oracle = window_means(log, ml_basis, SPEC, clock)
            moved = set(oracle) if previous is None else changed_users(previous, oracle)
            previous = oracle

            def caught_up(moved: set[str] = moved, clock: float = clock) -> bool:
                records = read_topic(broker.bootstrap, topics["updates"])
                return all(
                    all(
                        _stream_state(records, g, clock).get(u, {}).get("as_of") == clock
                        for u in moved
                    )
                    for g in groups.values()
                )

            wait_until(caught_up, timeout=120, what=f"every group's updates at clock {k + 1}")
            for w in workers:
                assert w.stop() == 0, w.log()
            records = read_topic(broker.bootstrap, topics["updates"])
            ends = partition_ends(records)
            wait_until(
                lambda ends=ends: all_committed(  # type: ignore[misc]
                    committed_offsets(
                        broker.bootstrap, f"{topics['group']}-refresher", topics["updates"]
                    ),
                    ends,
                ),
                timeout=60,
                what="the refresher to store every update",
            )
            for g in groups.values():
                s.emitted.setdefault(g.name, []).append(_stream_state(records, g, clock))
                s.served.setdefault(g.name, []).append(_served(refresher.port, s.users, g))
        for g in groups.values():
            s.snapshots[g.name] = _snapshot(s, g, tmp, ".jsonl" if g.name == "ae" else ".parquet")
        yield s
    finally:
        for process in started:
            process.kill()


def _rows_at(scenario: Scenario, group: str, k: int) -> dict[str, dict[str, Any]]:
    rows = [r for r in scenario.snapshots[group] if int(r["round"]) == k]
    assert [r["as_of"] for r in rows] == [scenario.clocks[k]] * (len(scenario.users) + 1)
    return {r["user_id"]: r for r in rows}


def _assert_same(snap: dict[str, Any], doc: dict[str, Any], clock: float, what: str) -> float:
    """One stream LTE against the snapshot row; returns the largest vector difference."""
    assert snap["n_events"] == doc["n_events"], f"{what}: n_events"
    assert snap["weight_sum"] == pytest.approx(doc["weight_sum"], rel=1e-9, abs=1e-9), what
    if doc["as_of"] == clock:
        assert (snap["window_start"], snap["window_end"]) == (
            doc["window_start"],
            doc["window_end"],
        ), what
    if doc["vector"] is None:
        assert snap["vector"] is None and snap["coefficients"] is None, what
        return 0.0
    worst = 0.0
    for name in ("vector", "coefficients"):
        diff = np.abs(np.asarray(snap[name]) - np.asarray(doc[name], dtype=np.float64)).max()
        worst = max(worst, float(diff))
    assert worst <= 1e-5, f"{what}: max abs difference {worst:.3g}"
    return worst


@pytest.mark.parametrize("group", ["mean", "recency", "ae"])
def test_snapshot_equals_every_lte_the_stream_emitted(scenario: Scenario, group: str) -> None:
    checked = emptied = filled = 0
    had_events: set[str] = set()
    for k, clock in enumerate(scenario.clocks):
        rows = _rows_at(scenario, group, k)
        emitted = scenario.emitted[group][k]
        assert rows["nobody"]["n_events"] == 0 and rows["nobody"]["vector"] is None
        for user in scenario.users:
            snap = rows[user]
            doc = emitted.get(user)
            if doc is None:  # the stream never had an event of this user in the window
                assert snap["n_events"] == 0 and snap["vector"] is None, user
            else:
                _assert_same(snap, doc, clock, f"{group} user {user} at clock {k + 1}")
            checked += 1
            filled += snap["n_events"] > 0
            if snap["n_events"] > 0:
                had_events.add(user)
            elif user in had_events:
                emptied += 1
    # every user at every clock, and the cases that matter all occur
    assert checked == 3 * USERS
    assert filled > USERS and emptied > 5, (filled, emptied)


def test_two_basis_versions_are_served_side_by_side_and_match_their_snapshots(
    scenario: Scenario,
) -> None:
    v1, v2 = scenario.groups["mean"], scenario.groups["pca-mean"]
    assert v1.basis_version != v2.basis_version
    checked = differ = 0
    for k, clock in enumerate(scenario.clocks):
        for group in (v1, v2):
            rows = _rows_at(scenario, group.name, k)
            served = scenario.served[group.name][k]
            for user in scenario.users:
                doc = served[user]
                if doc is None:
                    assert rows[user]["n_events"] == 0, user
                else:
                    assert doc["basis_version"] == group.basis_version
                    _assert_same(rows[user], doc, clock, f"{group.name} served {user} at {k + 1}")
                checked += 1
        a, b = _rows_at(scenario, v1.name, k), _rows_at(scenario, v2.name, k)
        for user in scenario.users:
            if a[user]["vector"] is not None:
                assert len(a[user]["coefficients"]) == len(a[user]["vector"])
                assert len(b[user]["coefficients"]) == 48
                differ += np.abs(np.asarray(a[user]["vector"]) - b[user]["vector"]).max() > 1e-3
    assert checked == 2 * 3 * USERS
    assert differ > USERS // 2  # the two versions serve different LTEs, each its own
