"""``lte snapshot`` — point-in-time LTEs for training data (DESIGN 3.5b)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from lte_cli.exit_status import reports_errors
from lte_cli.options import (
    basis_option,
    bucket_option,
    encoder_option,
    lag_option,
    type_weights_option,
    window_option,
)
from lte_cli.worker_cmd import parse_type_weights
from offline.datasets import LOG_FORMATS

#: Offending rows a refused leakage check names.
SHOWN_OVERLAPS = 3


@click.command()
@click.option(
    "--log",
    "log_path",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Interaction log: JSON lines (the interactions schema) or MovieLens u.data.",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="auto",
    show_default=True,
    help="auto: .data or a directory = MovieLens, .jsonl/.json/.ndjson = JSON lines.",
)
@click.option(
    "--at",
    "pairs_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV with header user_id,ts (Unix seconds or ISO-8601) plus any columns to carry.",
)
@basis_option
@window_option
@lag_option
@bucket_option
@encoder_option
@type_weights_option
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output file: .jsonl or .parquet.",
)
@click.option(
    "--sequence-start-col",
    default=None,
    help="PAIRS column with each example's first short-term input time; rows whose LTE "
    "window ends after it are refused (leakage).",
)
@click.option(
    "--allow-overlap",
    is_flag=True,
    help="With --sequence-start-col: keep overlapping rows, marked overlap: true.",
)
@reports_errors
def snapshot(**options: Any) -> None:
    """Write, for each (user, ts) in PAIRS, the LTE the stream served at ts."""
    import numpy as np  # noqa: PLC0415

    from lte_core.basis import BasisArtifact  # noqa: PLC0415
    from lte_core.encoders import EncoderSpec  # noqa: PLC0415
    from lte_core.errors import ConfigError  # noqa: PLC0415
    from lte_core.window import WindowSpec  # noqa: PLC0415
    from offline.datasets import read_interaction_log  # noqa: PLC0415
    from offline.snapshot import (  # noqa: PLC0415
        Snapshot,
        SnapshotError,
        overlapping,
        streamed,
        window_ends,
    )
    from offline.snapshot_files import read_pairs, write_snapshot  # noqa: PLC0415

    out: Path = options["out_path"]
    if out.suffix not in (".jsonl", ".parquet"):
        raise ConfigError(f"--out: {out} must end in .jsonl or .parquet")
    column = options["sequence_start_col"]
    if options["allow_overlap"] and column is None:
        raise ConfigError("--allow-overlap needs --sequence-start-col")
    window = WindowSpec(options["window"], options["lag"], options["bucket"])
    encoder = EncoderSpec.parse(options["encoder"])
    basis = BasisArtifact.load(options["basis_dir"])
    log_path: Path = options["log_path"]
    pairs_path: Path = options["pairs_path"]
    pairs = read_pairs(pairs_path)
    sequence_start = pairs.times(column, pairs_path) if column is not None else None
    log = read_interaction_log(
        log_path,
        options["log_format"],
        type_weights=parse_type_weights(options["type_weights"]),
    )
    ends = window_ends(window, pairs.ts)
    counted = {"empty": 0}

    def counting(chunks: Iterator[Snapshot]) -> Iterator[Snapshot]:
        for chunk in chunks:
            counted["empty"] += int(np.count_nonzero(chunk.n_events == 0))
            yield chunk

    with streamed(
        log,
        pairs.user_ids,
        pairs.ts,
        basis=basis,
        window=window,
        encoder=encoder,
        source=str(log_path),
    ) as result:
        if result.unknown_items:
            click.echo(
                f"skipped {result.unknown_items:,} events of {log_path} whose item is not in "
                f"basis {basis.basis_version} (the worker dead-letters them as unknown_item)",
                err=True,
            )
        overlap = None
        if sequence_start is not None:
            overlap = overlapping(ends, sequence_start)
            bad = np.flatnonzero(overlap)
            if len(bad) and not options["allow_overlap"]:
                shown = "; ".join(
                    f"line {int(pairs.line[i])} user {pairs.user_ids[i]}: window_end "
                    f"{ends[i]:.0f} > {column} {sequence_start[i]:.0f}"
                    for i in bad[:SHOWN_OVERLAPS].tolist()
                )
                raise SnapshotError(
                    f"{pairs_path}: {len(bad):,} of {result.rows:,} rows have an LTE window "
                    f"that ends after the sequence start ({shown}); the LTE would leak the "
                    "targets of causal training. Start sequences at or after window_end, raise "
                    "--lag, or pass --allow-overlap to keep them marked overlap: true"
                )
        write_snapshot(out, counting(result.chunks()), pairs.extra, overlap)
    marked = f", {int(overlap.sum()):,} marked overlap" if overlap is not None else ""
    click.echo(
        f"wrote {result.rows:,} rows ({counted['empty']:,} empty windows{marked}) for basis "
        f"{result.basis_version}, encoder {result.encoder}, {window.describe()} to {out}",
        err=True,
    )
