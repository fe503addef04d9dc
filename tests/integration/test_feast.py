"""LTEs through Feast (the ``lte-stream[feast]`` extra): ``lte feast-repo`` writes and applies
a real Feast repository on the session's real Redis, ``lte refresher --store feast://REPO``
replays a topic of two basis versions into Feast's Redis online store, and Feast's own
``get_online_features`` / ``get_historical_features`` are compared with oracles computed from
the topic and from the offline parquet alone."""

from __future__ import annotations

import asyncio
import importlib.util
import random
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from lte_core.basis import BasisArtifact
from lte_core.update import LTEUpdate
from lte_core.update_columns import UpdateColumns
from lte_runtime.redis_server import RedisServer
from serving.feast_repo import ViewNames
from serving.online_store import StoreKey
from tests.conftest import IN_CI
from tests.integration.harness import ROOT
from tests.integration.store_backends import make_update, records, update_stream
from tests.integration.test_refresher import Setup, setup  # noqa: F401 - the fixture

if importlib.util.find_spec("feast") is None:
    if IN_CI:
        pytest.fail("feast is not installed: CI installs lte-stream[test,feast]")
    pytest.skip("the [feast] extra is not installed", allow_module_level=True)

D = 8
DAY = 86_400
FEATURES = ("vector", "n_events", "as_of", "window_end")


def _basis(seed: int, tmp: Path) -> tuple[BasisArtifact, Path]:
    rng = np.random.default_rng(seed)
    art = BasisArtifact.build([f"item-{i}" for i in range(20)], rng.standard_normal((20, D)))
    return art, art.save(tmp / f"basis-{seed}")


def _lte(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "lte_cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _online(repo: Path, views: Sequence[str], users: Sequence[str]) -> dict[str, list[Any]]:
    from feast import FeatureStore  # noqa: PLC0415

    store = FeatureStore(repo_path=str(repo))
    response = store.get_online_features(
        features=[f"{view}:{name}" for view in views for name in FEATURES],
        entity_rows=[{"user_id": u} for u in users],
        full_feature_names=True,
    )
    return dict(response.to_dict())


def _check_online(
    got: dict[str, list[Any]], view: str, users: Sequence[str], oracle: dict[str, LTEUpdate]
) -> list[str]:
    """Users whose online features differ from the oracle's newest LTE (float32 bit for bit;
    no entry where the oracle has none)."""
    bad = []
    for i, user in enumerate(users):
        want = oracle.get(user)
        row = {name: got[f"{view}__{name}"][i] for name in FEATURES}
        if want is None:
            if any(v is not None for v in row.values()):
                bad.append(user)
            continue
        vector_ok = (
            row["vector"] is None
            if want.vector is None
            else row["vector"] is not None
            and np.asarray(row["vector"], np.float32).tobytes() == want.vector.tobytes()
        )
        if not (
            vector_ok
            and row["n_events"] == want.n_events
            and row["as_of"] == want.as_of
            and row["window_end"] == want.window_end
        ):
            bad.append(user)
    return bad


@dataclass
class Repo:
    path: Path
    offline: Path
    bases: tuple[BasisArtifact, BasisArtifact]

    @property
    def views(self) -> list[str]:
        return [ViewNames.of(b.basis_version, "mean").view for b in self.bases]


@pytest.fixture(scope="module")
def feast_repo(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Repo:
    """Two basis versions in one repository, written by ``lte feast-repo`` (the first without
    applying, the second applies both: ``feast apply`` costs ~20 s on this machine)."""
    tmp = tmp_path_factory.mktemp("feast")
    (first, first_dir), (second, second_dir) = _basis(1, tmp), _basis(2, tmp)
    repo = tmp / "repo"
    offline = tmp / "snapshot.parquet"
    _lte(
        "feast-repo", "--basis", str(first_dir), "--out", str(repo), "--redis", redis_server.url,
        "--offline-source", str(offline), "--no-apply",
    )  # fmt: skip
    _lte(
        "feast-repo", "--basis", str(second_dir), "--out", str(repo), "--redis", redis_server.url,
    )  # fmt: skip
    return Repo(repo, offline, (first, second))


def test_replay_into_feast_matches_the_oracle_for_two_basis_versions(
    setup: Setup,  # noqa: F811 - the imported fixture
    feast_repo: Repo,
) -> None:
    rng = random.Random("feast")
    first, second = feast_repo.bases
    repo, offline, views = feast_repo.path, feast_repo.offline, feast_repo.views

    stream = [
        u
        for basis in (first, second)
        for u in update_stream(rng, users=300, count=2_400, d=D, basis_version=basis.basis_version)
    ]
    rng.shuffle(stream)
    setup.produce(records(stream))
    oracle, ends = setup.topic_state()
    process = setup.refresher(f"feast://{repo}", "--batch-max-records", "300").start()
    process.wait_ready(timeout=180)
    from tests.integration.harness import wait_until  # noqa: PLC0415

    wait_until(lambda: setup.all_committed(ends), timeout=180, what="every offset committed")
    assert process.stop() == 0

    users = sorted({k.user_id for k in oracle} | {"never-seen"})
    got = _online(repo, views, users)
    checked = 0
    for basis, view in zip((first, second), views, strict=True):
        per_user = {
            k.user_id: u for k, u in oracle.items() if k.basis_version == basis.basis_version
        }
        assert len(per_user) > 250
        assert _check_online(got, view, users, per_user) == [], f"{len(per_user)} users checked"
        checked += len(per_user)
    assert checked == len(oracle)
    # Same as_of, later due_at: Feast's own timestamp rule would have kept the older one.
    ties = sum(
        1
        for k, u in oracle.items()
        if any(
            o.as_of == u.as_of and o.due_at < u.due_at
            for o in stream
            if StoreKey.of(o) == k and o is not u
        )
    )
    assert ties > 0, "the stream must exercise same-as_of updates"

    # Offline: point-in-time joins over the snapshot parquet return its LTEs.
    _check_historical(repo, views[0], first, offline, rng)


def _snapshot_source(
    basis: BasisArtifact, offline: Path, rng: random.Random
) -> dict[tuple[str, float], dict[str, Any]]:
    """Write the view's offline source with the real ``lte snapshot`` (two instants per user,
    two days apart) and return its rows by ``(user_id, as_of)``."""
    tmp = offline.parent / "snapshot-input"
    tmp.mkdir(exist_ok=True)
    basis_dir = basis.save(tmp / "basis")
    t0 = 1_600_000_000.0
    lines = [
        orjson.dumps(
            {
                "user_id": f"hist-{rng.randrange(40)}",
                "item_id": f"item-{rng.randrange(20)}",
                "ts": t0 + rng.uniform(0, 6 * DAY),
                "weight": rng.choice([0.5, 1.0, 2.0]),
            }
        )
        for _ in range(1_500)
    ]
    log = tmp / "log.jsonl"
    log.write_bytes(b"\n".join(lines) + b"\n")
    pairs = tmp / "pairs.csv"
    instants = (t0 + 4 * DAY + 0.5, t0 + 6 * DAY + 0.5)
    pairs.write_text(
        "user_id,ts\n" + "".join(f"hist-{i},{t!r}\n" for i in range(40) for t in instants)
    )
    _lte(
        "snapshot", "--log", str(log), "--at", str(pairs), "--basis", str(basis_dir),
        "--window", "3d", "--lag", "1d", "--bucket", "1h", "--encoder", "mean",
        "--out", str(offline),
    )  # fmt: skip
    import pyarrow.parquet as pq  # noqa: PLC0415 - comes with the [feast] extra

    rows = pq.read_table(offline).to_pylist()
    assert len(rows) == 80 and all(r["basis_version"] == basis.basis_version for r in rows)
    assert sum(r["n_events"] > 0 for r in rows) > 60, "most snapshot rows must hold an LTE"
    return {(r["user_id"], r["as_of"]): r for r in rows}


def _check_historical(
    repo: Path, view: str, basis: BasisArtifact, offline: Path, rng: random.Random
) -> None:
    import pandas as pd  # noqa: PLC0415 - comes with the [feast] extra
    from feast import FeatureStore  # noqa: PLC0415

    snapshot = _snapshot_source(basis, offline, rng)
    by_user: dict[str, list[float]] = {}
    for user, as_of in sorted(snapshot):
        by_user.setdefault(user, []).append(as_of)
    # Per user an instant between the two snapshot rows (expects the first), after both (the
    # second) or before any (none).
    asked: list[tuple[str, float, dict[str, Any] | None]] = []
    for i, (user, (a, b)) in enumerate(sorted(by_user.items())):
        if i % 3 == 0:
            asked.append((user, a + 3600.0, snapshot[user, a]))
        elif i % 3 == 1:
            asked.append((user, b + 1.0, snapshot[user, b]))
        else:
            asked.append((user, a - 1.0, None))
    entity_df = pd.DataFrame(
        {
            "user_id": [u for u, _, _ in asked],
            "event_timestamp": pd.to_datetime([t for _, t, _ in asked], unit="s", utc=True),
        }
    )
    store = FeatureStore(repo_path=str(repo))
    frame = store.get_historical_features(
        entity_df=entity_df, features=[f"{view}:vector", f"{view}:as_of", f"{view}:n_events"]
    ).to_df()
    got = {row["user_id"]: row for row in frame.to_dict("records")}
    assert len(got) == len(frame)
    checked = 0
    for user, _, want in asked:
        row = got.get(user)
        if want is None:
            # Feast 0.67's file offline store drops an entity row whose every candidate is
            # newer than it (rather than returning nulls); either way, no future LTE leaks.
            assert row is None or row["as_of"] is None or np.isnan(row["as_of"]), user
            continue
        assert row is not None, user
        assert row["as_of"] == want["as_of"], user
        assert row["n_events"] == want["n_events"], user
        if want["vector"] is None:
            assert row["vector"] is None or len(row["vector"]) == 0, user
        else:
            got_vector = np.asarray(row["vector"], np.float32)
            assert got_vector.tobytes() == np.asarray(want["vector"], np.float32).tobytes(), user
        checked += 1
    assert checked >= 26, f"{checked} users checked against the snapshot"


def test_racing_writers_leave_the_newest_lte_in_feast(feast_repo: Repo) -> None:
    """Two sinks push the same users in opposite orders at once (a partition handover):
    Feast alone (skip_dedup, or its read-then-write check) could keep an older LTE; the
    ledger and the read-back must leave the newest for every user."""
    from serving.feast_store import FeastStore  # noqa: PLC0415
    from serving.store_url import FeastLocation  # noqa: PLC0415

    basis = feast_repo.bases[0].basis_version
    users = [f"race-{i}" for i in range(100)]
    rounds = [
        [
            make_update(u, 1.7e9, 1.7e9 + t, [float(t)] * D, basis_version=basis)  # same as_of
            for u in users
        ]
        for t in range(12)
    ]

    async def race() -> None:
        a = FeastStore(FeastLocation(feast_repo.path))
        b = FeastStore(FeastLocation(feast_repo.path))
        try:
            await asyncio.gather(
                *(a.write_batch(UpdateColumns.of(batch), stored_at=1.0) for batch in rounds),
                *(
                    b.write_batch(UpdateColumns.of(batch), stored_at=2.0)
                    for batch in reversed(rounds)
                ),
            )
        finally:
            await a.close()
            await b.close()

    asyncio.run(race())
    newest = {u.user_id: u for u in rounds[-1]}
    got = _online(feast_repo.path, feast_repo.views[:1], users)
    assert _check_online(got, feast_repo.views[0], users, newest) == [], f"{len(users)} users"


def test_a_pair_without_a_view_stops_the_sink_with_what_to_run(feast_repo: Repo) -> None:
    """Retrying cannot help (nothing will create the view): the error is not an outage, so
    the refresher stops with a message naming the command, instead of spinning."""
    from serving.errors import StoreUnavailableError  # noqa: PLC0415
    from serving.feast_repo import FeastRepoError  # noqa: PLC0415
    from serving.feast_store import FeastStore  # noqa: PLC0415
    from serving.store_url import FeastLocation  # noqa: PLC0415

    async def write() -> None:
        store = FeastStore(FeastLocation(feast_repo.path))
        try:
            await store.write_batch(
                UpdateColumns.of(
                    [make_update("u", 1.0, 1.0, [1.0] * D, basis_version="not-in-the-repo")]
                ),
                stored_at=1.0,
            )
        finally:
            await store.close()

    with pytest.raises(FeastRepoError, match="lte feast-repo") as caught:
        asyncio.run(write())
    assert "basis_version=not-in-the-repo" in str(caught.value)
    assert not isinstance(caught.value, StoreUnavailableError)
