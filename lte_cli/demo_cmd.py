"""``lte demo`` — the whole pipeline on the embedded stack, with a summary and a report.

Starts the embedded broker, the worker, the refresher and the read API as real processes;
replays MovieLens 100K when it is available (otherwise a synthetic stream with the same
structure), shows progress, prints what happened and what three users' long-term
embeddings look like, and writes a PNG report. Ctrl-C stops every process cleanly; every run
gets its own directory, so a second run needs no cleanup.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np
import numpy.typing as npt
import orjson

from lte_cli.exit_status import reports_errors
from lte_runtime.metrics_scrape import Samples

if TYPE_CHECKING:
    from lte_core.datasets import InteractionLog

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ml-100k"


@dataclass(frozen=True)
class DemoData:
    """What the demo replays and how it reads the results."""

    name: str
    records: list[tuple[bytes | None, bytes]]
    users: list[str]
    item_ids: list[str]
    vectors: npt.NDArray[np.float32]
    titles: dict[str, str]
    now: float
    window: str
    lag: str
    history: dict[str, list[str]]  # user -> items in time order
    last_seen: dict[str, float]  # user -> time of the last event


def _bad_records(n: int, rng: np.random.Generator) -> list[tuple[bytes | None, bytes]]:
    """A few broken records so the dead-letter path shows up in the summary."""
    kinds = [
        (b"u-bad", b"{not json"),
        (b"u-bad", b'{"user_id":"u-bad","item_id":"no-such-item","ts":1}'),
        (b"someone", b'{"user_id":"u-bad","item_id":"1","ts":1}'),
        (b"u-bad", b'{"user_id":"u-bad","ts":1}'),
    ]
    return [kinds[int(i)] for i in rng.integers(0, len(kinds), n)]


def _records_and_history(
    logs: Iterable[InteractionLog],
) -> tuple[list[tuple[bytes | None, bytes]], dict[str, list[str]], dict[str, float]]:
    """The Kafka records to replay, each user's items and last event time, in replay order:
    one pass over the events, the same for both data sources."""
    records: list[tuple[bytes | None, bytes]] = []
    history: dict[str, list[str]] = {}
    last_seen: dict[str, float] = {}
    for log in logs:
        for u, i, t in zip(
            log.user_ids.tolist(), log.item_ids.tolist(), log.ts.tolist(), strict=True
        ):
            records.append((u.encode(), orjson.dumps({"user_id": u, "item_id": i, "ts": t})))
            history.setdefault(u, []).append(i)
            last_seen[u] = t
    return records, history, last_seen


def movielens_data(directory: Path, events: int | None) -> DemoData:
    from lte_core.datasets import load_movielens  # noqa: PLC0415

    ml = load_movielens(directory)
    log = ml.log.sorted_by_time()
    if events is not None:
        log = type(log)(
            log.user_ids[:events], log.item_ids[:events], log.ts[:events], log.weights[:events]
        )
    records, history, last_seen = _records_and_history([log])
    return DemoData(
        name=f"MovieLens 100K ({directory})",
        records=records,
        users=sorted(history, key=int),
        item_ids=ml.item_ids,
        vectors=ml.vectors,
        titles=ml.titles,
        now=float(log.ts.max()) + 1.0,
        window="90d",
        lag="14d",
        history=history,
        last_seen=last_seen,
    )


def synthetic_data(events: int, users: int) -> DemoData:
    from lte_core.synthetic import SyntheticSpec, SyntheticStream  # noqa: PLC0415

    spec = SyntheticSpec(users=users, events=events, days=120.0, start=1_700_000_000.0)
    stream = SyntheticStream(spec)
    records, history, last_seen = _records_and_history(stream.chunks())
    cat = stream.catalog
    return DemoData(
        name=f"synthetic ({events:,} events, {users:,} users, {len(cat.item_ids):,} items)",
        records=records,
        users=sorted(history),
        item_ids=cat.item_ids,
        vectors=cat.vectors,
        titles=cat.titles,
        now=spec.start + spec.days * 86400 + 1.0,
        window="60d",
        lag="7d",
        history=history,
        last_seen=last_seen,
    )


async def _replay(
    bootstrap: str,
    records: list[tuple[bytes | None, bytes]],
    rate: float,
    advance: Any,
    stop: asyncio.Event,
) -> None:
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415

    from lte_runtime.kafka.batch_sender import BatchSender  # noqa: PLC0415
    from streams.replay import replay  # noqa: PLC0415

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_batch_size=1 << 20, linger_ms=0
    )
    await producer.start()
    try:
        chunks = [records[i : i + 20_000] for i in range(0, len(records), 20_000)]
        await replay(
            BatchSender(producer), "interactions", chunks, rate=rate, progress=advance, stop=stop
        )
    finally:
        await producer.stop()


def _get(url: str) -> dict[str, Any] | None:
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - local API
            doc: dict[str, Any] = orjson.loads(resp.read())
            return doc
    except (OSError, urllib.error.URLError):
        return None


def _nearest(data: DemoData, vector: npt.NDArray[np.float64], k: int = 5) -> list[str]:
    v = vector / (np.linalg.norm(vector) or 1.0)
    scores = data.vectors @ v.astype(np.float32)
    return [
        data.titles.get(data.item_ids[i], data.item_ids[i])
        for i in np.argsort(-scores)[:k].tolist()
    ]


@click.command()
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar="LTE_ML100K",
    show_envvar=True,
    help="MovieLens 100K directory (default ../shared/data/ml-100k when present).",
)
@click.option(
    "--synthetic", is_flag=True, help="Use the synthetic stream even if MovieLens is available."
)
@click.option(
    "--events",
    type=click.IntRange(min=1),
    default=None,
    help="Events to replay (default: all of MovieLens, 300,000 synthetic).",
)
@click.option(
    "--users",
    type=click.IntRange(min=1),
    default=20_000,
    show_default=True,
    help="Users of the synthetic stream.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Events per second to replay at; 0 = as fast as possible.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("var/demo"),
    show_default=True,
    help="Each run writes to a new directory under this one.",
)
@reports_errors
def demo(
    data: Path | None, synthetic: bool, events: int | None, users: int, rate: float, out: Path
) -> None:
    """Run the whole pipeline on the embedded stack and report what it did."""
    from rich.console import Console  # noqa: PLC0415

    from lte_cli.demo_report import write_report  # noqa: PLC0415
    from lte_core.basis import BasisArtifact  # noqa: PLC0415
    from lte_runtime.local_stack import LocalStack, StackConfig  # noqa: PLC0415
    from lte_runtime.metrics_scrape import buckets  # noqa: PLC0415

    console = Console(stderr=True)
    run_dir = out / f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{os.getpid()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    directory = data or DEFAULT_DATA
    use_ml = not synthetic and (directory / "u.data").is_file()
    with console.status("preparing data"):
        dataset = (
            movielens_data(directory, events)
            if use_ml
            else synthetic_data(events or 300_000, users)
        )
        basis = BasisArtifact.build(
            dataset.item_ids,
            dataset.vectors,
            content_model="all-MiniLM-L6-v2" if use_ml else "synthetic",
        )
        basis_dir = basis.save(run_dir / "basis")
        rng = np.random.default_rng(1)
        records = dataset.records + _bad_records(max(1, len(dataset.records) // 2000), rng)
    console.print(
        f"[bold]data[/]: {dataset.name}; {len(records):,} records "
        f"(incl. {len(records) - len(dataset.records)} malformed ones), basis "
        f"{basis.basis_version} d={basis.d}"
    )
    console.print(
        f"[bold]window[/]: {dataset.window}, lag {dataset.lag}, bucket 1d; clock "
        f"frozen at {datetime.fromtimestamp(dataset.now, UTC):%Y-%m-%d %H:%M} UTC; "
        f"run directory {run_dir}"
    )
    stack = LocalStack(
        StackConfig(
            run_dir=run_dir,
            basis_dir=basis_dir,
            window=dataset.window,
            lag=dataset.lag,
            bucket="1d",
            now=dataset.now,
            store_url=f"rocksdb://{(run_dir / 'store').resolve()}",
            max_future_skew="1d",
            refresher_args=("--drift-reference-size", "200"),
        )
    )
    try:
        with console.status("starting broker, worker, refresher and read API"):
            stack.start()
        console.print(
            f"[bold]stack[/]: broker {stack.bootstrap}, worker metrics "
            f":{stack.worker_port}, read API and refresher metrics {stack.api_url}"
        )
        samples = _run_pipeline(console, stack, records, rate)
        w, r = stack.worker_metrics(), stack.refresher_metrics()
        _summarise(console, dataset, stack, w, r, samples)
        report = write_report(
            run_dir / "report.png",
            samples,
            buckets(r, "lte_staleness_seconds"),
            buckets(r, "lte_drift"),
        )
        console.print(f"[bold]report[/]: {report.resolve()}")
    except KeyboardInterrupt:
        console.print("interrupted; stopping every process")
    finally:
        with console.status("stopping"):
            stack.stop()


def _run_pipeline(
    console: Any, stack: Any, records: list[tuple[bytes | None, bytes]], rate: float
) -> list[tuple[float, float, float]]:
    """Replay while showing produced / applied / stored; return (t, applied, stored) samples
    until everything produced was applied and every emitted update stored."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    from lte_runtime.metrics_scrape import total  # noqa: PLC0415

    samples: list[tuple[float, float, float]] = []
    started = time.monotonic()
    with Progress(
        TextColumn("{task.description:>10}"),
        BarColumn(),
        TextColumn("{task.completed:>10,.0f} / {task.total:,.0f}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        produced = progress.add_task("produced", total=len(records))
        applied = progress.add_task("applied", total=len(records))
        stored = progress.add_task("stored", total=1)

        async def run() -> None:
            stop = asyncio.Event()
            sender = asyncio.create_task(
                _replay(
                    stack.bootstrap, records, rate, lambda n: progress.advance(produced, n), stop
                )
            )
            done_since: float | None = None
            while True:
                w = await asyncio.to_thread(stack.worker_metrics)
                r = await asyncio.to_thread(stack.refresher_metrics)
                n_applied = total(w, "lte_events_total")
                emitted = total(w, "lte_updates_emitted_total")
                written = total(r, "lte_store_writes_total")
                samples.append((time.monotonic() - started, n_applied, written))
                progress.update(applied, completed=n_applied)
                progress.update(stored, completed=written, total=max(emitted, 1))
                if sender.done() and n_applied >= len(records) and written >= emitted:
                    done_since = done_since or time.monotonic()
                    if time.monotonic() - done_since > 1.0:
                        break
                for child in (stack.worker, stack.refresher):
                    if child is not None and not child.alive:
                        raise click.ClickException(f"{child.name} died:\n{child.tail()}")
                await asyncio.sleep(0.1)  # progress refresh period, not synchronisation
            await sender

        asyncio.run(run())
    return samples


def _summarise(
    console: Any,
    dataset: DemoData,
    stack: Any,
    w: Samples,
    r: Samples,
    samples: list[tuple[float, float, float]],
) -> None:
    from rich.table import Table  # noqa: PLC0415

    from lte_runtime.metrics_scrape import buckets, quantile, total  # noqa: PLC0415

    applied_times = [t for t, a, _ in samples if a > 0]
    n = total(w, "lte_events_total")
    busy = applied_times[-1] - applied_times[0] if len(applied_times) > 1 else 0.0
    staleness = buckets(r, "lte_staleness_seconds")
    drift = buckets(r, "lte_drift")
    table = Table(title="summary", show_header=False)
    rate = f" in {busy:.1f}s ≈ {n / busy:,.0f} events/s" if busy > 0 else ""
    table.add_row("events processed", f"{n:,.0f}{rate}")
    table.add_row(
        "outcomes",
        ", ".join(
            f"{o} {total(w, 'lte_events_total', outcome=o):,.0f}"
            for o in ("applied", "late", "duplicate", "invalid", "unknown_item")
        ),
    )
    table.add_row("dead letters", f"{total(w, 'lte_dead_letters_total'):,.0f}")
    table.add_row("users with window state", f"{total(w, 'lte_state_users'):,.0f}")
    table.add_row(
        "LTE updates emitted / stored (older ones skipped)",
        f"{total(w, 'lte_updates_emitted_total'):,.0f} / "
        f"{total(r, 'lte_store_writes_total', outcome='written'):,.0f}",
    )
    table.add_row(
        "staleness p50 / p99",
        f"{quantile(staleness, 0.5) * 1000:,.0f} ms / "
        f"{quantile(staleness, 0.99) * 1000:,.0f} ms (store write - due)",
    )
    table.add_row(
        "drift p50 / p99",
        f"{quantile(drift, 0.5):.4f} / {quantile(drift, 0.99):.4f} (1 - cos(previous, new))",
    )
    table.add_row("population drift", f"{total(r, 'lte_population_drift'):.4f}")
    console.print(table)
    # Users active until the end, from the most to the least active: LTEs worth showing.
    recent = sorted(
        (u for u, t in dataset.last_seen.items() if t > dataset.now - 30 * 86400),
        key=lambda u: -len(dataset.history[u]),
    )
    candidates = (
        [recent[int(q * (len(recent) - 1))] for q in (0.0, 0.25, 0.5, 0.75)] if recent else []
    )
    shown = 0
    for user in candidates:
        doc = _get(f"{stack.api_url}/v1/lte/{user}")
        if not doc or doc.get("vector") is None:
            continue
        vector = np.asarray(doc["vector"], dtype=np.float64)
        recent = [dataset.titles.get(i, i) for i in dataset.history[user][-3:]]
        start = datetime.fromtimestamp(doc["window_start"], UTC)
        end = datetime.fromtimestamp(doc["window_end"], UTC)
        console.print(
            f"\n[bold]user {user}[/] — {doc['n_events']} events in the window "
            f"[{start:%Y-%m-%d} .. {end:%Y-%m-%d}), encoder {doc['encoder']}"
        )
        console.print("  nearest items to the LTE:  " + "; ".join(_nearest(dataset, vector)))
        console.print("  latest (short-term) items: " + "; ".join(recent))
        shown += 1
        if shown == 3:
            break
