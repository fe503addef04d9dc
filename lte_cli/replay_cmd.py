"""``lte replay`` — produce interaction events to a broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lte_cli.exit_status import reports_errors
from lte_cli.options import kafka_options, kafka_settings, run_until_signalled


@click.command()
@kafka_options
@click.option(
    "--topic", envvar="LTE_INPUT_TOPIC", default="interactions", show_default=True, show_envvar=True
)
@click.option(
    "--movielens",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A MovieLens u.data file (replayed in time order).",
)
@click.option(
    "--jsonl",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON lines, one interaction object per line (sent as is).",
)
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV with header user_id,item_id,ts[,weight][,type].",
)
@click.option("--synthetic", is_flag=True, help="Generate a synthetic stream.")
@click.option(
    "--users",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="--synthetic: users.",
)
@click.option(
    "--items",
    type=click.IntRange(min=16),
    default=5_000,
    show_default=True,
    help="--synthetic: catalog size.",
)
@click.option(
    "--dim",
    type=click.IntRange(min=2),
    default=64,
    show_default=True,
    help="--synthetic: vector dimension (the basis must match).",
)
@click.option(
    "--events",
    type=click.IntRange(min=1),
    default=1_000_000,
    show_default=True,
    help="--synthetic: events.",
)
@click.option(
    "--days",
    type=click.FloatRange(min=0.001),
    default=120.0,
    show_default=True,
    help="--synthetic: time span.",
)
@click.option(
    "--start",
    type=float,
    default=None,
    help="--synthetic: first event time (default: so the stream ends now).",
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--basis-out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="--synthetic: also write the catalog's basis artifact here.",
)
@click.option(
    "--basis-only",
    is_flag=True,
    help="--synthetic: write the basis (--basis-out) and exit without producing.",
)
@click.option(
    "--shift", type=float, default=0.0, help="Add this many seconds to every ts (--movielens)."
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Events per second; 0 = as fast as possible.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@reports_errors
def replay(**options: Any) -> None:
    """Produce interaction events from a file or the synthetic generator."""
    import time  # noqa: PLC0415

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    from lte_core.errors import ConfigError  # noqa: PLC0415
    from lte_runtime.kafka.batch_sender import BatchSender  # noqa: PLC0415
    from offline.synthetic import SyntheticSpec, SyntheticStream  # noqa: PLC0415
    from streams import replay as rp  # noqa: PLC0415

    kafka = kafka_settings(options, client_id="lte-replay")
    sources = [
        options["movielens"],
        options["jsonl"],
        options["csv_path"],
        options["synthetic"] or None,
    ]
    if sum(s is not None for s in sources) != 1:
        raise ConfigError("give exactly one of --movielens, --jsonl, --csv, --synthetic")
    total: int | None = None
    if options["movielens"]:
        chunks = rp.movielens_chunks(options["movielens"], shift=options["shift"])
    elif options["jsonl"]:
        chunks = rp.jsonl_chunks(options["jsonl"])
    elif options["csv_path"]:
        chunks = rp.csv_chunks(options["csv_path"])
    else:
        days = options["days"]
        start = options["start"] if options["start"] is not None else time.time() - days * 86400
        spec = SyntheticSpec(
            users=options["users"],
            items=options["items"],
            dim=options["dim"],
            events=options["events"],
            days=days,
            start=start,
            seed=options["seed"],
        )
        stream = SyntheticStream(spec)
        if options["basis_out"]:
            artifact = stream.catalog.basis()
            artifact.save(options["basis_out"])
            click.echo(f"basis {artifact.basis_version} -> {options['basis_out']}", err=True)
        if options["basis_only"]:
            if not options["basis_out"]:
                raise ConfigError("--basis-only needs --basis-out DIR")
            return
        chunks = (rp.log_records(c) for c in stream.chunks())
        total = spec.events

    async def main(stop: Any) -> None:
        from aiokafka import AIOKafkaProducer  # noqa: PLC0415

        producer = AIOKafkaProducer(
            **kafka.client_kwargs(), acks="all", max_batch_size=1 << 20, linger_ms=0
        )
        await producer.start()
        try:
            with Progress(
                TextColumn("[bold]replay"),
                BarColumn(),
                TextColumn("{task.completed:,.0f} events"),
                TimeElapsedColumn(),
                disable=options["quiet"],
            ) as progress:
                task = progress.add_task("events", total=total)
                sent = await rp.replay(
                    BatchSender(producer),
                    options["topic"],
                    chunks,
                    rate=options["rate"],
                    progress=lambda n: progress.advance(task, n),
                    stop=stop,
                )
        finally:
            await producer.stop()
        click.echo(
            f"replayed {sent:,} events to {options['topic']} on {kafka.describe()}", err=True
        )

    run_until_signalled(main)
