"""``lte demo`` — the whole pipeline on the embedded stack, replayed in compressed time.

Starts the embedded broker, the worker, the refresher and the read API as real processes and
replays MovieLens 100K (otherwise a synthetic stream with the same structure) on a
**simulated clock**: it runs at ``--speed`` (default: the whole log in about a minute), every
event is produced when the clock reaches its timestamp, and the worker runs on the same
clock (``--clock-start``/``--clock-speed``/``--clock-anchor``/``--clock-end``), so windows
lag and slide as in production — also for users who fall silent — and due times and
staleness mean what they mean live. ``--backlog`` is the other mode: the clock frozen at the
end of the log and the whole log pushed at once (a backfill).

While it runs it shows the simulated date, events/s, updates/s, staleness so far and users
with state; the worker's and refresher's ``/metrics`` stay scrape-able (URLs printed). Then
it prints a summary, a few users' LTEs in words, checks every stored LTE against a
from-scratch recomputation, and writes a PNG report (:mod:`lte_cli.demo_report`). Ctrl-C
stops every process; every run gets its own directory, so a second run needs no cleanup.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np

from lte_cli.exit_status import reports_errors
from lte_cli.options import DURATION
from lte_core.duration import format_duration

if TYPE_CHECKING:
    from lte_cli.demo_data import DemoData, Record
    from lte_cli.demo_report import Sample
    from lte_cli.demo_watch import Follower
    from lte_runtime.local_stack import LocalStack
    from streams.clock import Clock

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ml-100k"
#: how long the replay lasts in real time by default (sets the speed)
DEFAULT_REPLAY_SECONDS = 60.0
#: the simulated clock starts ticking this long after the processes are launched (they
#: take ~6 s to join their groups here); it holds at the log's first event until then
STARTUP_SECONDS = 8.0
WATCH_PERIOD = 0.25
SWEEP_INTERVAL = "0.02"


@dataclass(frozen=True, slots=True)
class Plan:
    """How this run replays: the clock the demo and the worker share, and its flags."""

    clock: Clock
    worker_args: tuple[str, ...]
    now: float | None
    speed: float | None

    @property
    def simulated(self) -> bool:
        return self.speed is not None


def plan_clock(data: DemoData, speed: float | None, backlog: bool) -> Plan:
    from streams.clock import Clock, SimulatedTime  # noqa: PLC0415

    if backlog:
        return Plan(Clock.create(data.end), (), data.end, None)
    speed = speed or (data.end - data.start) / DEFAULT_REPLAY_SECONDS
    sim = SimulatedTime(
        start=data.start, speed=speed, anchor=time.time() + STARTUP_SECONDS, end=data.end
    )
    args = (
        *("--clock-start", repr(sim.start), "--clock-speed", repr(sim.speed)),
        *("--clock-anchor", repr(sim.anchor), "--clock-end", repr(sim.end)),
        *("--sweep-interval", SWEEP_INTERVAL),
    )
    return Plan(Clock.create(None, sim), args, None, speed)


def follow_whom(data: DemoData) -> str:
    """The user active on the most distinct days: their window moves all along."""
    days = np.floor(data.ts / 86400.0).astype(np.int64)
    pairs = np.unique(np.stack([np.unique(data.user_ids, return_inverse=True)[1], days]), axis=1)
    counts = np.bincount(pairs[0])
    users = np.unique(data.user_ids)
    return str(users[int(np.argmax(counts))])


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
    help="Events to replay (default: all of MovieLens, 100,000 synthetic).",
)
@click.option(
    "--users",
    type=click.IntRange(min=1),
    default=2_000,
    show_default=True,
    help="Users of the synthetic stream.",
)
@click.option(
    "--days",
    type=click.FloatRange(min=1),
    default=214.0,
    show_default=True,
    help="Span of the synthetic stream (MovieLens 100K spans 214 days).",
)
@click.option("--window", type=DURATION, default="90d", show_default=True, help="Window W.")
@click.option("--lag", type=DURATION, default="14d", show_default=True, help="Lag L.")
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Simulated seconds per real second (default: the whole log in about "
    f"{DEFAULT_REPLAY_SECONDS:.0f} s, ~310,000 for MovieLens).",
)
@click.option(
    "--backlog",
    is_flag=True,
    help="Freeze the clock at the end of the log and push the whole log at once (a backfill) "
    "instead of replaying it in compressed time.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="With --backlog: events per second to push at; 0 = as fast as possible.",
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
    data: Path | None,
    synthetic: bool,
    events: int | None,
    users: int,
    days: float,
    window: int,
    lag: int,
    speed: float | None,
    backlog: bool,
    rate: float,
    out: Path,
) -> None:
    """Replay a log through the whole pipeline on the embedded stack, in compressed time."""
    from rich.console import Console  # noqa: PLC0415

    from lte_cli.demo_data import movielens_data, synthetic_data, with_bad_records  # noqa: PLC0415
    from lte_cli.demo_report import write_report  # noqa: PLC0415
    from lte_cli.demo_summary import Results, report_data, summarise  # noqa: PLC0415
    from lte_cli.demo_watch import Follower  # noqa: PLC0415
    from lte_core.basis import BasisArtifact  # noqa: PLC0415
    from lte_runtime.local_stack import LocalStack, StackConfig  # noqa: PLC0415

    if rate and not backlog:
        raise click.UsageError("--rate: only with --backlog (a replay is paced by its clock)")
    if speed is not None and backlog:
        raise click.UsageError("--speed: not with --backlog (its clock is frozen)")
    console = Console(stderr=True)
    run_dir = out / f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{os.getpid()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    directory = data or DEFAULT_DATA
    use_ml = not synthetic and (directory / "u.data").is_file()
    w, g = format_duration(window), format_duration(lag)
    with console.status("preparing data"):
        dataset = (
            movielens_data(directory, events, w, g)
            if use_ml
            else synthetic_data(events or 100_000, users, days, w, g)
        )
        basis = BasisArtifact.build(
            dataset.catalog,
            dataset.vectors,
            content_model="all-MiniLM-L6-v2" if use_ml else "synthetic",
        )
        basis_dir = basis.save(run_dir / "basis")
        records, ts = with_bad_records(
            dataset.records(), dataset.ts, max(1, len(dataset.ts) // 2000)
        )
    plan = plan_clock(dataset, speed, backlog)
    _describe(console, dataset, plan, f"{basis.basis_version} d={basis.d}", len(records))
    console.print(f"[bold]run directory[/]: {run_dir}")
    stack = LocalStack(
        StackConfig(
            run_dir=run_dir,
            basis_dir=basis_dir,
            window=w,
            lag=g,
            bucket="1d",
            now=plan.now,
            store_url=f"rocksdb://{(run_dir / 'store').resolve()}",
            max_future_skew="1d",
            worker_args=plan.worker_args,
            refresher_args=("--drift-reference-size", "200"),
        )
    )
    try:
        with console.status("starting broker, worker, refresher and read API"):
            stack.start()
        console.print(
            f"[bold]stack[/]: broker {stack.bootstrap}; Prometheus metrics (scrape them while "
            f"it runs): worker http://127.0.0.1:{stack.worker_port}/metrics, refresher "
            f"{stack.api_url}/metrics; read API {stack.api_url}/v1/lte/{{user_id}}"
        )
        follower = Follower(stack.api_url, follow_whom(dataset))
        samples = _run(console, stack, plan, records, ts, rate, follower)
        with console.status("reading every stored LTE back and checking it"):
            results = Results.collect(dataset, stack, plan.simulated, samples, follower)
        console.print()
        summarise(console, results)
        report = write_report(run_dir, report_data(results))
        console.print(f"[bold]report[/]: {report.resolve()} (its data: report.json)")
    except KeyboardInterrupt:
        console.print("interrupted; stopping every process")
    finally:
        with console.status("stopping"):
            stack.stop()


def _describe(console: Any, dataset: DemoData, plan: Plan, basis: str, n_records: int) -> None:
    from lte_cli.demo_watch import date  # noqa: PLC0415

    spec = dataset.spec
    w, g = format_duration(spec.window), format_duration(spec.lag)
    span_days = (dataset.end - dataset.start) / 86400
    console.print(
        f"[bold]data[/]: {dataset.name}; {n_records:,} records (incl. "
        f"{n_records - len(dataset.ts)} malformed ones) from {date(dataset.start)} to "
        f"{date(dataset.end)} UTC ({span_days:.0f} days); basis {basis}"
    )
    console.print(
        f"[bold]window[/]: the LTE at clock T averages the events of "
        f"[T - {g} - {w}, T - {g}) (window {w}, lag {g}, bucket 1d)"
    )
    if plan.speed is not None:
        console.print(
            f"[bold]clock[/]: simulated, {plan.speed:,.0f}x real time (one simulated day per "
            f"{86400 / plan.speed:.2f} s; the log in {span_days * 86400 / plan.speed:.0f} s); "
            "events are produced when the clock reaches their time, and the worker's windows "
            "slide on the same clock"
        )
    else:
        console.print(
            f"[bold]clock[/]: frozen at {date(dataset.end)} UTC (--backlog): the whole log "
            "arrives at once and everything is due at once"
        )


class _Display:
    """The live progress: the simulated date on a bar over the log's span (the records
    judged with --backlog), and a status line under it."""

    def __init__(self, console: Any, plan: Plan, first: float, last: float, n: int) -> None:
        from rich.console import Group  # noqa: PLC0415
        from rich.live import Live  # noqa: PLC0415
        from rich.progress import (  # noqa: PLC0415
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.text import Text  # noqa: PLC0415

        self._plan, self._first, self._last, self._n = plan, first, last, n
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=40), TimeElapsedColumn()
        )
        self._task = self._progress.add_task("", total=1.0)
        self._status = Text("")
        self.live = Live(Group(self._progress, self._status), console=console)

    def show(self, samples: list[Sample]) -> None:
        from lte_cli.demo_watch import date, status_line  # noqa: PLC0415

        last = samples[-1]
        if self._plan.simulated:
            started = last.clock > self._first
            shown = f"simulated {date(last.clock)}" if started else "clock starts soon"
            fraction = (last.clock - self._first) / (self._last - self._first)
        else:
            shown = f"judged {last.records:,.0f} / {self._n:,}"
            fraction = last.records / self._n
        self._progress.update(self._task, description=shown, completed=fraction)
        self._status.plain = "  " + status_line(samples)


def _run(
    console: Any,
    stack: LocalStack,
    plan: Plan,
    records: list[Record],
    ts: Any,
    rate: float,
    follower: Follower,
) -> list[Sample]:
    """Replay while showing progress; return the samples taken until every record was
    judged, every emitted update stored, and the clock reached the end of the log, for a
    second (several sweeps) in a row."""
    from lte_cli.demo_watch import sample  # noqa: PLC0415
    from lte_runtime.metrics_scrape import total  # noqa: PLC0415

    last = float(ts[-1]) + 1.0
    display = _Display(console, plan, float(ts[0]), last, len(records))
    samples: list[Sample] = []

    async def run() -> None:
        stop = asyncio.Event()
        sender = asyncio.create_task(_produce(stack.bootstrap, plan, records, ts, rate, stop))
        started = time.time()
        done_since: float | None = None
        try:
            while done_since is None or time.monotonic() - done_since < 1.0:
                w = await asyncio.to_thread(stack.worker_metrics)
                r = await asyncio.to_thread(stack.refresher_metrics)
                await asyncio.to_thread(follower.poll)
                samples.append(sample(time.time() - started, plan.clock.now(), w, r))
                display.show(samples)
                finished = (
                    sender.done()
                    and samples[-1].records >= len(records)
                    and total(r, "lte_store_writes_total") >= total(w, "lte_updates_emitted_total")
                    and samples[-1].clock >= last
                )
                done_since = (done_since or time.monotonic()) if finished else None
                for child in (stack.worker, stack.refresher):
                    if child is not None and not child.alive:
                        raise click.ClickException(f"{child.name} died:\n{child.tail()}")
                if sender.done() and sender.exception() is not None:
                    await sender
                await asyncio.sleep(WATCH_PERIOD)  # the refresh period, not synchronisation
        finally:
            stop.set()
        await sender

    with display.live:
        asyncio.run(run())
    return samples


async def _produce(
    bootstrap: str, plan: Plan, records: list[Record], ts: Any, rate: float, stop: asyncio.Event
) -> None:
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415

    from lte_runtime.kafka.batch_sender import BatchSender  # noqa: PLC0415
    from streams.replay import replay, replay_on_clock  # noqa: PLC0415

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_batch_size=1 << 20, linger_ms=0
    )
    await producer.start()
    try:
        sender = BatchSender(producer)
        if plan.simulated:
            await replay_on_clock(
                sender, "interactions", records, ts.tolist(), plan.clock, stop=stop
            )
        else:
            chunks = [records[i : i + 20_000] for i in range(0, len(records), 20_000)]
            await replay(sender, "interactions", chunks, rate=rate, stop=stop)
    finally:
        await producer.stop()
