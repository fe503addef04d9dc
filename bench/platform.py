"""What going through Feast costs, beside the product's own store and API, in one run.

Writes (updates/s, batches of ``--batch`` updates of d = ``--d``, one per user):

* ``product store``: :class:`~serving.redis_store.RedisStore.write_batch` (the refresher's
  write: one pipelined round trip of the monotonic script);
* ``product store, Redis Cluster``: the same on a local 3-node cluster (script per slot);
* ``Feast sink``: :class:`~serving.feast_store.FeastStore.write_batch` — the ledger script,
  Feast's ``push_async`` to its Redis online store, and the ledger read-back;
* ``Feast push alone``: ``FeatureStore.push_async`` of the same frames, without the ledger.

Reads (latency per call, sequential, one client, ``--reads`` calls after a warm-up):

* ``API GET`` / ``API batchGet(100)``: :class:`serving.client.LTEClient` against ``lte serve``
  (its own process) over the product store;
* ``Feast get_online_features`` for 1 and for 100 users, in this process, from the same Redis.

Everything shares one Redis (``appendfsync everysec``: the figures compare software paths,
not the disk) and the machine's two cores with the load generator. Each figure is the
median of ``--repeats`` runs; every repeat writes newer LTEs (a later ``as_of``), after one
warm-up write per client. Run it
under ``nice -n 10`` on a shared machine. Results: ``bench/results/platform.json``.

    nice -n 10 python -m bench.platform            # a few minutes
    nice -n 10 python -m bench.platform --quick    # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import machine_info, save_results, table
from bench.serving import median_dict
from lte_core.update import LTEUpdate
from lte_core.update_columns import UpdateColumns
from lte_runtime.ports import free_port
from lte_runtime.redis_cluster import LocalRedisCluster
from lte_runtime.redis_server import RedisServer
from serving.client import LTEClient
from serving.feast_repo import ViewNames, apply_repo, write_repo
from serving.store_url import FeastLocation, StoreLocation, open_store, parse_store_url

ROOT = Path(__file__).resolve().parent.parent
BASIS = "benchplatform"
ENCODER = "mean"
OWN = "product store (Redis)"


def make_updates(users: int, d: int, as_of: float, seed: int) -> list[LTEUpdate]:
    vectors = np.random.default_rng(seed).standard_normal((users, d)).astype(np.float32)
    return [
        LTEUpdate(
            user_id=f"user-{i}",
            basis_version=BASIS,
            encoder=ENCODER,
            as_of=as_of,
            window_start=as_of - 365 * 86400,
            window_end=as_of - 28 * 86400,
            n_events=10,
            weight_sum=10.0,
            coefficients=vectors[i],
            vector=vectors[i],
            due_at=as_of,
            produced_at=as_of,
        )
        for i in range(users)
    ]


def warm_up(updates: list[LTEUpdate]) -> list[LTEUpdate]:
    """One update of another user: the first write of a client opens its connections and
    (Feast) reads its registry, which is not what a steady stream pays."""
    return [dataclasses.replace(updates[0], user_id="warm-up")]


async def write_rate(where: StoreLocation, updates: list[LTEUpdate], batch: int) -> float:
    store = open_store(where, writer=True)
    try:
        await store.write_batch(UpdateColumns.of(warm_up(updates)), stored_at=time.time())
        batches = [
            UpdateColumns.of(updates[start : start + batch])
            for start in range(0, len(updates), batch)
        ]
        started = time.perf_counter()
        for columns in batches:
            await store.write_batch(columns, stored_at=time.time())
        return len(updates) / (time.perf_counter() - started)
    finally:
        await store.close()


async def feast_push_rate(repo: Path, updates: list[LTEUpdate], batch: int) -> float:
    from feast import FeatureStore  # noqa: PLC0415
    from feast.data_source import PushMode  # noqa: PLC0415

    from serving.feast_store import push_frame  # noqa: PLC0415

    feast = FeatureStore(repo_path=str(repo))
    source = ViewNames.of(BASIS, ENCODER).push_source
    frames = [
        push_frame(UpdateColumns.of(updates[s : s + batch])) for s in range(0, len(updates), batch)
    ]
    await feast.push_async(
        source, push_frame(UpdateColumns.of(warm_up(updates))), to=PushMode.ONLINE
    )
    started = time.perf_counter()
    for frame in frames:
        await feast.push_async(source, frame, to=PushMode.ONLINE)
    return len(updates) / (time.perf_counter() - started)


def latencies(call: Callable[[int], object], reads: int) -> dict[str, float]:
    for i in range(min(20, reads)):
        call(i)
    times = []
    for i in range(reads):
        started = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - started)
    ms = np.asarray(times) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def start_api(store_url: str, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "lte_cli", "serve", "--store", store_url, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    client = LTEClient(f"http://127.0.0.1:{port}", retries=0, timeout=1.0)
    deadline = time.monotonic() + 60
    while True:
        try:
            client.get("user-0")
            break
        except Exception:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"lte serve did not come up; see {log}") from None
            time.sleep(0.1)
    client.close()
    return process, port


def main() -> None:
    parser = argparse.ArgumentParser(description="Feast's cost beside the product's own paths.")
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--reads", type=int, default=500)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "platform.json")
    args = parser.parse_args()
    users = 2_000 if args.quick else args.users
    reads = 100 if args.quick else args.reads
    repeats = args.repeats
    work = Path(tempfile.mkdtemp(prefix="bench-platform-"))
    from feast import FeatureStore  # noqa: PLC0415 - the [feast] extra

    with (
        RedisServer(work / "redis", appendfsync="everysec") as server,
        LocalRedisCluster(work / "cluster") as cluster,
    ):
        repo = work / "repo"
        names, _ = write_repo(
            repo, basis_version=BASIS, encoder=ENCODER, d=args.d, k=args.d,
            redis_url=server.url, offline_source=None,
        )  # fmt: skip
        apply_repo(repo)
        writes: dict[str, list[dict[str, float]]] = {}
        targets: dict[str, Callable[[list[LTEUpdate]], Any]] = {
            OWN: lambda u: write_rate(parse_store_url(server.url), u, args.batch),
            "product store (Redis Cluster, 3 nodes)": lambda u: write_rate(
                parse_store_url(cluster.url), u, args.batch
            ),
            "Feast sink (ledger + push + read-back)": lambda u: write_rate(
                FeastLocation(repo), u, args.batch
            ),
            "Feast push alone": lambda u: feast_push_rate(repo, u, args.batch),
        }
        for repeat in range(repeats):
            updates = make_updates(users, args.d, 1.7e9 + repeat, seed=repeat)
            for name, target in targets.items():
                rate = asyncio.run(target(updates))
                writes.setdefault(name, []).append({"updates_s": rate})
                print(f"repeat {repeat}: {name}: {rate:,.0f} updates/s", flush=True)

        api, port = start_api(server.url, work / "serve.log")
        feast = FeatureStore(repo_path=str(repo))
        ids = [f"user-{i}" for i in range(users)]
        features = [f"{names.view}:vector", f"{names.view}:n_events", f"{names.view}:window_end"]
        reads_by: dict[str, list[dict[str, float]]] = {}
        try:
            with LTEClient(f"http://127.0.0.1:{port}") as client:
                calls: dict[str, Callable[[int], object]] = {
                    "API GET (LTEClient.get)": lambda i: client.get(ids[(i * 7919) % users]),
                    "API batchGet 100 (LTEClient.get_many)": lambda i: client.get_many(
                        [ids[(i * 100 + j) % users] for j in range(100)]
                    ),
                    "Feast get_online_features, 1 user": lambda i: feast.get_online_features(
                        features=features, entity_rows=[{"user_id": ids[(i * 7919) % users]}]
                    ).to_dict(),
                    "Feast get_online_features, 100 users": lambda i: feast.get_online_features(
                        features=features,
                        entity_rows=[{"user_id": ids[(i * 100 + j) % users]} for j in range(100)],
                    ).to_dict(),
                }
                for repeat in range(repeats):
                    for name, call in calls.items():
                        result = latencies(call, reads)
                        reads_by.setdefault(name, []).append(result)
                        print(f"repeat {repeat}: {name}: {result}", flush=True)
        finally:
            api.kill()
            api.wait()

    import feast as feast_module  # noqa: PLC0415

    own = [r["updates_s"] for r in writes[OWN]]
    write_rows = [
        {
            "path": k,
            **{k: round(x, 3) for k, x in median_dict(list(v)).items()},
            # The machine is shared: a ratio within one repeat is steadier than either rate.
            "x_product_store": round(
                statistics.median(r["updates_s"] / o for r, o in zip(v, own, strict=True)), 3
            ),
            "runs": [round(r["updates_s"]) for r in v],
        }
        for k, v in writes.items()
    ]
    read_rows = [
        {"path": k, **{m: round(x, 3) for m, x in median_dict(v).items()}}
        for k, v in reads_by.items()
    ]
    print()
    print(table([{**r, "updates_s": f"{r['updates_s']:,.0f}"} for r in write_rows]))
    print()
    print(table(read_rows))
    save_results(
        args.out,
        {
            "quick": args.quick,
            "machine": machine_info(),
            "feast_version": feast_module.__version__,
            "users": users,
            "d": args.d,
            "batch": args.batch,
            "reads": reads,
            "repeats": repeats,
            "writes": write_rows,
            "reads_latency": read_rows,
        },
    )


if __name__ == "__main__":
    main()
