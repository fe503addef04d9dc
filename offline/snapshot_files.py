"""Files of ``lte snapshot``: the PAIRS CSV it reads and the ``.jsonl`` / ``.parquet`` it
writes.

The parquet file is meant to be an offline feature source as it stands (a Feast
``FileSource`` with ``timestamp_field="event_timestamp"``): one row per pair with the
``lte-updates`` fields, vectors as ``list<float32>`` (null for an empty window), an
``event_timestamp`` column equal to ``as_of``, and the basis version, encoder and window
spec in the file's key-value metadata, so a training job can refuse a file made for
another basis before it reads a row.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from offline.snapshot import Snapshot, SnapshotError

F64 = npt.NDArray[np.float64]

#: Columns a snapshot file always has, in order (parquet adds ``event_timestamp``).
FIELDS = (
    "user_id",
    "as_of",
    "basis_version",
    "encoder",
    "window_start",
    "window_end",
    "n_events",
    "weight_sum",
    "coefficients",
    "vector",
)
OVERLAP = "overlap"
EVENT_TIMESTAMP = "event_timestamp"
#: Names a PAIRS column may not have: the output writes them.
OUTPUT_ONLY = frozenset(FIELDS[1:]) | {OVERLAP, EVENT_TIMESTAMP}
#: Key-value metadata keys of a parquet snapshot.
META_BASIS_VERSION = b"lte.basis_version"
META_ENCODER = b"lte.encoder"
META_WINDOW = b"lte.window"
FORMATS = (".jsonl", ".parquet")
_ROWS_PER_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Pairs:
    """The rows of a PAIRS file in file order; ``extra`` holds every other column as text,
    in header order; ``line`` is each row's line number (for error messages)."""

    user_ids: npt.NDArray[np.str_]
    ts: F64
    extra: dict[str, list[str]]
    line: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.ts)

    def times(self, column: str, path: Path) -> F64:
        """An extra column read as timestamps (e.g. each example's sequence start)."""
        if column not in self.extra:
            raise SnapshotError(
                f"{path}: no column {column!r} (columns: {', '.join(self.extra) or 'none'})"
            )
        return np.array(
            [
                parse_time(text, f"{path}:{line}: {column}")
                for text, line in zip(self.extra[column], self.line.tolist(), strict=True)
            ],
            dtype=np.float64,
        )


def parse_time(text: str, where: str) -> float:
    """Seconds since the Unix epoch, or an ISO-8601 time with a UTC offset."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        seconds = _iso_seconds(value, text, where)
    if not math.isfinite(seconds):
        raise SnapshotError(f"{where}: {text!r} is not finite")
    return seconds


def _iso_seconds(value: str, text: str, where: str) -> float:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise SnapshotError(
            f"{where}: {text!r} is not a time (Unix seconds or ISO-8601 with an offset)"
        ) from None
    if moment.tzinfo is None:
        raise SnapshotError(f"{where}: {text!r} has no UTC offset (write e.g. ...Z)")
    return moment.timestamp()


def read_pairs(path: Path) -> Pairs:
    """A CSV with header ``user_id,ts`` (any order) plus any other columns."""
    users: list[str] = []
    times: list[float] = []
    lines: list[int] = []
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise SnapshotError(f"{path}: empty; expected a header user_id,ts")
            names = [name.strip() for name in header]
            missing = [n for n in ("user_id", "ts") if n not in names]
            if missing or len(set(names)) != len(names):
                raise SnapshotError(
                    f"{path}:1: header must name user_id and ts once each, got {','.join(names)}"
                )
            clash = [n for n in names if n in OUTPUT_ONLY]
            if clash:
                raise SnapshotError(
                    f"{path}:1: column {clash[0]!r} would collide with an output field; rename it"
                )
            u_at, t_at = names.index("user_id"), names.index("ts")
            others = [(i, n) for i, n in enumerate(names) if i not in (u_at, t_at)]
            extra: dict[str, list[str]] = {n: [] for _, n in others}
            for row in reader:
                line = reader.line_num
                if not row:
                    continue
                if len(row) != len(names):
                    raise SnapshotError(
                        f"{path}:{line}: {len(row)} fields, the header has {len(names)}"
                    )
                user = row[u_at]
                if not 1 <= len(user) <= 256:
                    raise SnapshotError(f"{path}:{line}: user_id must be 1-256 characters")
                users.append(user)
                times.append(parse_time(row[t_at], f"{path}:{line}: ts"))
                lines.append(line)
                for i, name in others:
                    extra[name].append(row[i])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SnapshotError(f"{path}: cannot read pairs ({exc})") from exc
    return Pairs(
        user_ids=np.asarray(users, dtype=np.str_),
        ts=np.asarray(times, dtype=np.float64),
        extra=extra,
        line=np.asarray(lines, dtype=np.int64),
    )


def _window_meta(snapshot: Snapshot) -> dict[str, Any]:
    w = snapshot.window
    return {"window": w.window, "lag": w.lag, "bucket": w.bucket, "describe": w.describe()}


def write_snapshot(
    path: Path,
    snapshot: Snapshot | Iterable[Snapshot],
    extra: dict[str, list[str]] | None = None,
    overlap: npt.NDArray[np.bool_] | None = None,
) -> None:
    """Write ``snapshot`` -- one :class:`Snapshot`, or consecutive chunks of one (as
    :meth:`~offline.snapshot.SnapshotStream.chunks` yields them, at least one) -- by the
    file extension (``.jsonl`` or ``.parquet``), atomically: a failed run leaves no
    half-written file under the final name. ``extra`` and ``overlap`` hold one entry per
    row of the whole snapshot; only one chunk's rows are in memory at a time."""
    writers: dict[str, Callable[[Path, Iterable[Snapshot], dict[str, list[str]], Any], None]] = {
        ".jsonl": _write_jsonl,
        ".parquet": _write_parquet,
    }
    writer = writers.get(path.suffix)
    if writer is None:
        raise SnapshotError(f"--out: {path} must end in {' or '.join(FORMATS)}")
    chunks = [snapshot] if isinstance(snapshot, Snapshot) else snapshot
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        writer(tmp, chunks, extra or {}, overlap)
        tmp.replace(path)
    except OSError as exc:
        raise SnapshotError(f"--out: cannot write {path} ({exc})") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _rows(snapshot: Snapshot) -> Iterator[dict[str, Any]]:
    filled = (snapshot.n_events > 0).tolist()
    head = {"basis_version": snapshot.basis_version, "encoder": snapshot.encoder}
    for i, (user, as_of, start, end, n, w, has) in enumerate(
        zip(
            snapshot.user_ids.tolist(),
            snapshot.as_of.tolist(),
            snapshot.window_start.tolist(),
            snapshot.window_end.tolist(),
            snapshot.n_events.tolist(),
            snapshot.weight_sum.tolist(),
            filled,
            strict=True,
        )
    ):
        yield {
            "user_id": user,
            "as_of": as_of,
            **head,
            "window_start": start,
            "window_end": end,
            "n_events": n,
            "weight_sum": w,
            "coefficients": snapshot.coefficients[i] if has else None,
            "vector": snapshot.vectors[i] if has else None,
        }


def _write_jsonl(
    path: Path,
    chunks: Iterable[Snapshot],
    extra: dict[str, list[str]],
    overlap: npt.NDArray[np.bool_] | None,
) -> None:
    flags = overlap.tolist() if overlap is not None else None
    dumps = orjson.dumps
    option = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE
    i = 0
    with path.open("wb") as out:
        for chunk in chunks:
            for row in _rows(chunk):
                if flags is not None:
                    row[OVERLAP] = flags[i]
                for name, values in extra.items():
                    row[name] = values[i]
                out.write(dumps(row, option=option))
                i += 1


def _parquet_table(
    snapshot: Snapshot,
    extra: dict[str, list[str]],
    overlap: npt.NDArray[np.bool_] | None,
) -> Any:
    """One chunk's rows as an arrow table; ``extra`` and ``overlap`` are the chunk's."""
    import pyarrow as pa  # noqa: PLC0415 - only this format needs it

    n = len(snapshot)
    filled = snapshot.n_events > 0

    def vectors(matrix: npt.NDArray[np.float32]) -> Any:
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(filled * matrix.shape[1], out=offsets[1:])
        return pa.ListArray.from_arrays(
            pa.array(offsets),
            pa.array(matrix[filled].reshape(-1), type=pa.float32()),
            type=pa.list_(pa.float32()),
            mask=pa.array(~filled),
        )

    micros = np.round(snapshot.as_of * 1e6).astype(np.int64)
    columns: dict[str, Any] = {
        "user_id": pa.array(snapshot.user_ids.tolist(), type=pa.string()),
        "as_of": pa.array(snapshot.as_of),
        EVENT_TIMESTAMP: pa.array(micros, type=pa.timestamp("us", tz="UTC")),
        "basis_version": pa.array([snapshot.basis_version] * n, type=pa.string()),
        "encoder": pa.array([snapshot.encoder] * n, type=pa.string()),
        "window_start": pa.array(snapshot.window_start),
        "window_end": pa.array(snapshot.window_end),
        "n_events": pa.array(snapshot.n_events),
        "weight_sum": pa.array(snapshot.weight_sum),
        "coefficients": vectors(snapshot.coefficients),
        "vector": vectors(snapshot.vectors),
    }
    if overlap is not None:
        columns[OVERLAP] = pa.array(overlap, type=pa.bool_())
    for name, values in extra.items():
        columns[name] = pa.array(values, type=pa.string())
    return pa.table(columns).replace_schema_metadata(
        {
            META_BASIS_VERSION: snapshot.basis_version.encode(),
            META_ENCODER: snapshot.encoder.encode(),
            META_WINDOW: orjson.dumps(_window_meta(snapshot)),
        }
    )


def _write_parquet(
    path: Path,
    chunks: Iterable[Snapshot],
    extra: dict[str, list[str]],
    overlap: npt.NDArray[np.bool_] | None,
) -> None:
    """A row group per chunk (at most :data:`_ROWS_PER_CHUNK` rows each)."""
    import pyarrow.parquet as pq  # noqa: PLC0415 - only this format needs it

    writer: Any = None
    lo = 0
    try:
        for chunk in chunks:
            for start in range(0, max(len(chunk), 1), _ROWS_PER_CHUNK):
                part = _sliced(chunk, start, start + _ROWS_PER_CHUNK)
                hi = lo + len(part)
                table = _parquet_table(
                    part,
                    {name: values[lo:hi] for name, values in extra.items()},
                    None if overlap is None else overlap[lo:hi],
                )
                if writer is None:
                    writer = pq.ParquetWriter(path, table.schema)
                writer.write_table(table)
                lo = hi
    finally:
        if writer is not None:
            writer.close()


def _sliced(snapshot: Snapshot, lo: int, hi: int) -> Snapshot:
    if lo == 0 and hi >= len(snapshot):
        return snapshot
    coefficients = snapshot.coefficients[lo:hi]
    same = snapshot.vectors is snapshot.coefficients
    return replace(
        snapshot,
        user_ids=snapshot.user_ids[lo:hi],
        as_of=snapshot.as_of[lo:hi],
        window_start=snapshot.window_start[lo:hi],
        window_end=snapshot.window_end[lo:hi],
        n_events=snapshot.n_events[lo:hi],
        weight_sum=snapshot.weight_sum[lo:hi],
        coefficients=coefficients,
        vectors=coefficients if same else snapshot.vectors[lo:hi],
    )
