"""The per-user *head*: everything about a window except the events themselves.

A window's events are stored one record per event (see :mod:`lte_core.engine`); the head
keeps the running sums and the bookkeeping that tells, without reading any event, whether a
clock move changes the window (``oldest`` and ``pending_min``) and which source offsets were
applied. Layout (little-endian)::

    64-byte header   version u8 | flags u8 | d u16 | count u32 | n u32 | partition i32 |
                     end i64 | last_offset i64 | oldest i64 | pending_min i64 |
                     weight_sum f64 | decayed_weight f64
    sum              d x f64    Σ w·v over the in-window events
    decayed_sum      d x f64    Σ w·2^((b - end)·G/h)·v, only with a recency half-life

``count`` = events in the window, ``n`` = events stored (window + pending), ``end`` = the
window's end bucket, ``oldest`` = smallest stored bucket, ``pending_min`` = smallest stored
bucket at or after ``end``; both are :data:`NO_BUCKET` when there is none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lte_core.errors import StateCodecError

FORMAT_VERSION = 1
FLAG_HAS_CLOCK = 1
FLAG_DECAYED = 2
NO_BUCKET = np.iinfo(np.int64).max
HEAD_HEADER_BYTES = 64

HEAD_DTYPE = np.dtype(
    [
        ("version", "u1"),
        ("flags", "u1"),
        ("d", "<u2"),
        ("count", "<u4"),
        ("n", "<u4"),
        ("partition", "<i4"),
        ("end", "<i8"),
        ("last_offset", "<i8"),
        ("oldest", "<i8"),
        ("pending_min", "<i8"),
        ("weight_sum", "<f8"),
        ("decayed_weight", "<f8"),
    ]
)
assert HEAD_DTYPE.itemsize == HEAD_HEADER_BYTES

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


def head_bytes(d: int, decayed: bool) -> int:
    """Size of one head: ``64 + 8·d`` (``64 + 16·d`` with a recency half-life)."""
    return HEAD_HEADER_BYTES + 8 * d * (2 if decayed else 1)


@dataclass(slots=True)
class Heads:
    """Heads of ``m`` users as columns (mutable working arrays)."""

    has_clock: npt.NDArray[np.bool_]
    count: I64
    n: I64
    partition: npt.NDArray[np.int32]
    end: I64
    last_offset: I64
    oldest: I64
    pending_min: I64
    weight_sum: F64
    decayed_weight: F64
    sums: F64
    decayed_sums: F64 | None

    def __len__(self) -> int:
        return len(self.count)

    @classmethod
    def empty(cls, m: int, d: int, decayed: bool) -> Heads:
        return cls(
            has_clock=np.zeros(m, dtype=bool),
            count=np.zeros(m, dtype=np.int64),
            n=np.zeros(m, dtype=np.int64),
            partition=np.full(m, -1, dtype=np.int32),
            end=np.zeros(m, dtype=np.int64),
            last_offset=np.full(m, -1, dtype=np.int64),
            oldest=np.full(m, NO_BUCKET, dtype=np.int64),
            pending_min=np.full(m, NO_BUCKET, dtype=np.int64),
            weight_sum=np.zeros(m, dtype=np.float64),
            decayed_weight=np.zeros(m, dtype=np.float64),
            sums=np.zeros((m, d), dtype=np.float64),
            decayed_sums=np.zeros((m, d), dtype=np.float64) if decayed else None,
        )


def parse_heads(data: Sequence[bytes | None], d: int, decayed: bool) -> Heads:
    """Decode many heads at once (None = a user with no head yet)."""
    m = len(data)
    heads = Heads.empty(m, d, decayed)
    size = head_bytes(d, decayed)
    present = [i for i, b in enumerate(data) if b is not None]
    if not present:
        return heads
    blob = b"".join(data[i] for i in present)  # type: ignore[misc]
    if len(blob) != size * len(present):
        bad = next(i for i in present if len(data[i]) != size)  # type: ignore[arg-type]
        raise StateCodecError(
            f"a stored head is {len(data[bad])} bytes, expected {size} "  # type: ignore[arg-type]
            f"(d={d}, decayed sums {'on' if decayed else 'off'}); the state directory was "
            "written with another basis or encoder; use a fresh --state-dir"
        )
    raw = np.frombuffer(blob, dtype=np.uint8).reshape(len(present), size)
    hdr = np.ascontiguousarray(raw[:, :HEAD_HEADER_BYTES]).view(HEAD_DTYPE).reshape(-1)
    if (hdr["version"] != FORMAT_VERSION).any():
        raise StateCodecError(
            f"head format version {int(hdr['version'][0])} is not supported "
            f"(expected {FORMAT_VERSION})"
        )
    if (hdr["d"] != d).any() or (((hdr["flags"] & FLAG_DECAYED) != 0) != decayed).any():
        raise StateCodecError(
            "a stored head was written for another dimension or encoder; use a fresh --state-dir"
        )
    idx = np.asarray(present, dtype=np.int64)
    heads.has_clock[idx] = (hdr["flags"] & FLAG_HAS_CLOCK) != 0
    for name in ("count", "n", "partition", "end", "last_offset", "oldest", "pending_min"):
        getattr(heads, name)[idx] = hdr[name]
    heads.weight_sum[idx] = hdr["weight_sum"]
    heads.decayed_weight[idx] = hdr["decayed_weight"]
    body = HEAD_HEADER_BYTES
    heads.sums[idx] = np.ascontiguousarray(raw[:, body : body + 8 * d]).view("<f8")
    if heads.decayed_sums is not None:
        heads.decayed_sums[idx] = np.ascontiguousarray(raw[:, body + 8 * d :]).view("<f8")
    return heads


def serialise_heads(heads: Heads, rows: npt.NDArray[np.int64]) -> list[bytes]:
    """Encode the heads of ``rows`` (one ``bytes`` each)."""
    k = len(rows)
    d = heads.sums.shape[1]
    decayed = heads.decayed_sums is not None
    size = head_bytes(d, decayed)
    out = np.zeros((k, size), dtype=np.uint8)
    hdr = np.zeros(k, dtype=HEAD_DTYPE)
    hdr["version"] = FORMAT_VERSION
    hdr["flags"] = np.where(heads.has_clock[rows], FLAG_HAS_CLOCK, 0) | (
        FLAG_DECAYED if decayed else 0
    )
    hdr["d"] = d
    for name in ("count", "n", "partition", "end", "last_offset", "oldest", "pending_min"):
        hdr[name] = getattr(heads, name)[rows]
    hdr["weight_sum"] = heads.weight_sum[rows]
    hdr["decayed_weight"] = heads.decayed_weight[rows]
    out[:, :HEAD_HEADER_BYTES] = hdr.view(np.uint8).reshape(k, HEAD_HEADER_BYTES)
    out[:, HEAD_HEADER_BYTES : HEAD_HEADER_BYTES + 8 * d] = (
        heads.sums[rows].astype("<f8").view(np.uint8).reshape(k, 8 * d)
    )
    if heads.decayed_sums is not None:
        out[:, HEAD_HEADER_BYTES + 8 * d :] = (
            heads.decayed_sums[rows].astype("<f8").view(np.uint8).reshape(k, 8 * d)
        )
    blob = out.tobytes()
    return [blob[i * size : (i + 1) * size] for i in range(k)]
