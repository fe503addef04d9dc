"""One user's lagged-window state: the event multiset plus a running sum (DESIGN 3.2).

Representation, chosen for memory at 10^8 users and for O(d) work per event:

* every event the window still needs (in the window, or pending behind the lag) is kept as
  ``(bucket, item row, weight)`` sorted by bucket: 12 bytes, because the window must be able
  to drop it later without keeping any per-bucket vectors;
* the weighted sum of the in-window item vectors and its weight total are kept as
  double-double float64 pairs (:mod:`lte_core.compensated`), updated by adding an event's
  ``w * v`` when it enters and subtracting the same exact term when it leaves. ``w`` is
  stored as float32 and item vectors are float32, so each term ``w * v`` is exact in float64;
  the compensated additions make a leaving ``1e6`` event cancel its entry to ≈1e-26, so a
  ``1e-6`` event left behind still has an exact mean; the sum is reset to exact zero
  whenever the window empties.

Serialised size: ``80 + 16·d + 12·n`` bytes for ``n`` stored events (:meth:`to_bytes`).
A clock that moves backwards is ignored: a window that has let events go cannot take them
back. The streaming worker stores the same head but one record per event
(:mod:`lte_core.engine`); this class is the readable one-user reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lte_core.compensated import dd_add, segment_sums
from lte_core.errors import EventTimeRangeError, StateCodecError
from lte_core.head import Heads, head_bytes, legacy_head_bytes, parse_heads, serialise_heads
from lte_core.summary import WindowSummary
from lte_core.window import MAX_RELATIVE_BUCKETS, WindowSpec

__all__ = ["ApplyOutcome", "LaggedWindow", "WindowDelta", "state_bytes"]

_NO_CLOCK = -(2**63)
_EVENT_DTYPE = np.dtype([("rel", "<i4"), ("item", "<u4"), ("weight", "<f4")])


def state_bytes(d: int, n_events: int, *, plain: bool = False) -> int:
    """Serialised size of a whole window: ``80 + 16·d + 12·n``, or ``64 + 8·d + 12·n`` for a
    ``plain`` one, whose sums have no low parts (:attr:`LaggedWindow.plain`)."""
    head = legacy_head_bytes(d, decayed=False) if plain else head_bytes(d, decayed=False)
    return head + _EVENT_DTYPE.itemsize * n_events


F64Array = npt.NDArray[np.float64]
F32Array = npt.NDArray[np.float32]
I64Array = npt.NDArray[np.int64]
U32Array = npt.NDArray[np.uint32]


@dataclass(frozen=True, slots=True)
class ApplyOutcome:
    """What happened to a batch handed to :meth:`LaggedWindow.apply`."""

    applied: int
    late: int
    duplicate: int


@dataclass(frozen=True, slots=True)
class WindowDelta:
    """Events that entered or left the window during a clock advance."""

    entered: int
    left: int

    @property
    def changed(self) -> bool:
        return bool(self.entered or self.left)


class LaggedWindow:
    """The lagged-window state of one user.

    ``vectors`` (the basis artifact's item matrix, float32 ``n_items x d``) is passed to the
    operations that move events in or out of the sum rather than stored, so the state stays a
    plain value that serialises to bytes.
    """

    __slots__ = (
        "_buckets",
        "_end",
        "_entered",
        "_items",
        "_sum",
        "_sum_lo",
        "_weight_lo",
        "_weight_sum",
        "_weights",
        "d",
        "last_offset",
        "source_partition",
        "spec",
    )

    def __init__(self, spec: WindowSpec, d: int) -> None:
        self.spec = spec
        self.d = d
        self._sum: F64Array = np.zeros(d, dtype=np.float64)
        self._sum_lo: F64Array = np.zeros(d, dtype=np.float64)
        self._weight_sum = 0.0
        self._weight_lo = 0.0
        self._end = _NO_CLOCK
        self._buckets: I64Array = np.empty(0, dtype=np.int64)
        self._items: U32Array = np.empty(0, dtype=np.uint32)
        self._weights: F32Array = np.empty(0, dtype=np.float32)
        self._entered = 0
        self.last_offset = -1
        self.source_partition = -1

    # -- reading -------------------------------------------------------------------------

    @property
    def has_clock(self) -> bool:
        return self._end != _NO_CLOCK

    @property
    def end_bucket(self) -> int:
        return self._end

    @property
    def start_bucket(self) -> int:
        return self._end - self.spec.n_buckets

    @property
    def count(self) -> int:
        """Events currently in the window."""
        return self._entered

    @property
    def pending(self) -> int:
        """Events stored but still behind the lag."""
        return len(self._buckets) - self._entered

    @property
    def n_stored(self) -> int:
        return len(self._buckets)

    @property
    def is_empty(self) -> bool:
        """Nothing in the window and nothing pending: the state carries no information
        except its source offset, so the store may drop it (see the worker docs)."""
        return len(self._buckets) == 0

    @property
    def plain(self) -> bool:
        """Whether every low part of the sums is zero: the head is then written in format 1
        (:mod:`lte_core.head`), ``16 + 8·d`` bytes shorter."""
        return self._weight_lo == 0.0 and not self._sum_lo.any()

    @property
    def weight_sum(self) -> float:
        return self._weight_sum + self._weight_lo

    @property
    def sum(self) -> F64Array:
        """Σ w·v over the window, the double-double pair rounded once (a read-only copy)."""
        total = self._sum + self._sum_lo
        total.flags.writeable = False
        return total

    def window_items(self) -> U32Array:
        return self._items[: self._entered]

    def window_weights(self) -> F32Array:
        return self._weights[: self._entered]

    def window_buckets(self) -> I64Array:
        return self._buckets[: self._entered]

    @property
    def oldest_bucket(self) -> int | None:
        """Smallest stored bucket (in the window or pending)."""
        return int(self._buckets[0]) if len(self._buckets) else None

    @property
    def first_pending_bucket(self) -> int | None:
        return int(self._buckets[self._entered]) if self._entered < len(self._buckets) else None

    def next_change(self) -> int | None:
        """The next clock time at which this window's contents change, or None if never.

        This is what the sweeper's due-time index stores, so silent users are revisited
        exactly when an event enters past the lag or leaves the window.
        """
        if not self.has_clock or len(self._buckets) == 0:
            return None
        times = []
        if self._entered < len(self._buckets):
            times.append(self.spec.enter_time(int(self._buckets[self._entered])))
        if self._entered > 0:
            times.append(self.spec.leave_time(int(self._buckets[0])))
        return min(times)

    # -- changing ------------------------------------------------------------------------

    def advance(self, now: float, vectors: F32Array) -> WindowDelta:
        """Move the clock to ``now``: events whose bucket passed the lag enter, events older
        than the window leave. A clock earlier than the state's own is ignored."""
        new_end = self.spec.end_bucket(now)
        if not self.has_clock:
            self._end = new_end
            return WindowDelta(0, 0)
        if new_end <= self._end:
            return WindowDelta(0, 0)
        new_start = new_end - self.spec.n_buckets
        buckets = self._buckets
        gone = int(np.searchsorted(buckets, new_start, side="left"))
        entered_now = int(np.searchsorted(buckets, new_end, side="left"))
        left_sum = min(gone, self._entered)
        enter_from = max(gone, self._entered)
        if left_sum:
            self._accumulate(vectors, slice(0, left_sum), sign=-1.0)
        if entered_now > enter_from:
            self._accumulate(vectors, slice(enter_from, entered_now), sign=1.0)
        delta = WindowDelta(entered=max(0, entered_now - enter_from), left=left_sum)
        if gone:
            self._buckets = buckets[gone:]
            self._items = self._items[gone:]
            self._weights = self._weights[gone:]
        self._entered = entered_now - gone
        self._end = new_end
        if self._entered == 0:
            self._sum[:] = 0.0
            self._sum_lo[:] = 0.0
            self._weight_sum = self._weight_lo = 0.0
        return delta

    def apply(
        self,
        items: npt.ArrayLike,
        ts: npt.ArrayLike,
        weights: npt.ArrayLike,
        vectors: F32Array,
        now: float,
        *,
        offsets: npt.ArrayLike | None = None,
        partition: int = -1,
    ) -> ApplyOutcome:
        """Advance to ``now``, then add a batch of events.

        ``items`` are rows of ``vectors``. With ``offsets`` (source offsets, increasing),
        events at or below :attr:`last_offset` are duplicates of deliveries already applied
        and are skipped: this is what makes redelivery after a crash harmless. Events whose
        bucket already left the window are ``late`` and not stored.
        """
        self.advance(now, vectors)
        item_arr = np.asarray(items, dtype=np.uint32).reshape(-1)
        ts_arr = np.asarray(ts, dtype=np.float64).reshape(-1)
        w_arr = np.asarray(weights, dtype=np.float32).reshape(-1)
        total = len(ts_arr)
        if not (len(item_arr) == total == len(w_arr)):
            raise ValueError("items, ts and weights must have the same length")
        keep = np.ones(total, dtype=bool)
        duplicate = 0
        if offsets is not None:
            off_arr = np.asarray(offsets, dtype=np.int64).reshape(-1)
            if len(off_arr) != total:
                raise ValueError("offsets must have one entry per event")
            fresh = off_arr > self.last_offset
            duplicate = int(total - np.count_nonzero(fresh))
            keep &= fresh
            if total:
                self.last_offset = max(self.last_offset, int(off_arr.max()))
            if partition >= 0:
                self.source_partition = partition
        start_seconds = float(self.start_bucket) * self.spec.bucket
        on_time = ts_arr >= start_seconds
        late = int(np.count_nonzero(keep & ~on_time))
        keep &= on_time
        n_new = int(np.count_nonzero(keep))
        if n_new == 0:
            return ApplyOutcome(applied=0, late=late, duplicate=duplicate)

        new_buckets = self.spec.bucket_of_array(ts_arr[keep])
        if int(new_buckets.max()) - self._end > MAX_RELATIVE_BUCKETS:
            raise EventTimeRangeError(
                "event ts is more than 2^31 buckets after the window clock; reject such "
                "events before they reach the state (the worker's --max-future-skew does)"
            )
        new_items = item_arr[keep]
        new_weights = w_arr[keep]
        inside = new_buckets < self._end
        if inside.any():
            self._add(new_weights[inside].astype(np.float64), vectors[new_items[inside]])
        buckets = np.concatenate([self._buckets, new_buckets])
        order = np.argsort(buckets, kind="stable")
        self._buckets = buckets[order]
        self._items = np.concatenate([self._items, new_items])[order]
        self._weights = np.concatenate([self._weights, new_weights])[order]
        self._entered += int(np.count_nonzero(inside))
        return ApplyOutcome(applied=n_new, late=late, duplicate=duplicate)

    def _accumulate(self, vectors: F32Array, rows: slice, sign: float) -> None:
        self._add(sign * self._weights[rows].astype(np.float64), vectors[self._items[rows]])

    def _add(self, signed_w: F64Array, vecs: F32Array) -> None:
        """Add Σ w·(v, 1) to the double-double sums, one term per event."""
        terms = np.empty((len(signed_w), self.d + 1), dtype=np.float64)
        terms[:, : self.d] = signed_w[:, None] * vecs.astype(np.float64)
        terms[:, self.d] = signed_w
        hi, lo = segment_sums(terms, np.zeros(1, dtype=np.int64))
        self._sum, self._sum_lo = dd_add(self._sum, self._sum_lo, hi[0, : self.d], lo[0, : self.d])
        w_hi, w_lo = dd_add(
            np.array([self._weight_sum]),
            np.array([self._weight_lo]),
            hi[0, self.d :],
            lo[0, self.d :],
        )
        self._weight_sum, self._weight_lo = float(w_hi[0]), float(w_lo[0])

    # -- summaries and bytes ----------------------------------------------------------------

    def summary(
        self, vectors: F32Array | None = None, half_life: float | None = None
    ) -> WindowSummary:
        """This window as an encoder reads it. With ``half_life`` (and ``vectors``) the
        decayed sums are recomputed from the event multiset; the streaming engine maintains
        them incrementally instead, and tests compare the two."""
        decayed_sums = decayed_weights = None
        if half_life is not None:
            if vectors is None:
                raise ValueError("decayed sums need the item vectors")
            age = (self._end - self.window_buckets()).astype(np.float64)
            w = self.window_weights().astype(np.float64) * np.exp2(
                -age * (self.spec.bucket / half_life)
            )
            decayed_sums = (w @ vectors[self.window_items()].astype(np.float64))[None, :]
            decayed_weights = np.array([w.sum()])
        return WindowSummary(
            sums=self.sum[None, :].copy(),
            weight_sums=np.array([self.weight_sum]),
            counts=np.array([self._entered], dtype=np.int64),
            decayed_sums=decayed_sums,
            decayed_weights=decayed_weights,
        )

    def to_bytes(self) -> bytes:
        """Head (:mod:`lte_core.head`) followed by the stored events as 12-byte records
        ``(bucket - end i32, item u32, weight f32)``: ``80 + 16·d + 12·n`` bytes."""
        heads = Heads.empty(1, self.d, decayed=False)
        heads.has_clock[0] = self.has_clock
        heads.count[0] = self._entered
        heads.n[0] = len(self._buckets)
        heads.partition[0] = self.source_partition
        heads.end[0] = self._end if self.has_clock else 0
        heads.last_offset[0] = self.last_offset
        if len(self._buckets):
            heads.oldest[0] = self._buckets[0]
            if self._entered < len(self._buckets):
                heads.pending_min[0] = self._buckets[self._entered]
        heads.weight_sum[0] = self._weight_sum
        heads.weight_lo[0] = self._weight_lo
        heads.sums[0] = self._sum
        heads.sums_lo[0] = self._sum_lo
        events = np.empty(len(self._buckets), dtype=_EVENT_DTYPE)
        events["rel"] = self._buckets - heads.end[0]
        events["item"] = self._items
        events["weight"] = self._weights
        return serialise_heads(heads, np.zeros(1, dtype=np.int64))[0] + events.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, spec: WindowSpec, d: int) -> LaggedWindow:
        """Decode :meth:`to_bytes` output (a format-1 head, ``64 + 8·d`` bytes, is read too)."""
        size = head_bytes(d, decayed=False)
        if data[:1] == b"\x01" and len(data) >= legacy_head_bytes(d, decayed=False):
            size = legacy_head_bytes(d, decayed=False)
        if len(data) < size or (len(data) - size) % _EVENT_DTYPE.itemsize:
            raise StateCodecError(
                f"state is {len(data)} bytes; expected {size} + 12·n for d={d} "
                "(written for another basis? use a fresh --state-dir)"
            )
        heads = parse_heads([data[:size]], d, decayed=False)
        n = int(heads.n[0])
        if len(data) != size + _EVENT_DTYPE.itemsize * n:
            raise StateCodecError(
                f"state is {len(data)} bytes, expected {size + _EVENT_DTYPE.itemsize * n} for n={n}"
            )
        state = cls(spec, d)
        has_clock = bool(heads.has_clock[0])
        end = int(heads.end[0])
        state._end = end if has_clock else _NO_CLOCK
        state.last_offset = int(heads.last_offset[0])
        state.source_partition = int(heads.partition[0])
        state._weight_sum = float(heads.weight_sum[0])
        state._weight_lo = float(heads.weight_lo[0])
        state._sum = heads.sums[0].copy()
        state._sum_lo = heads.sums_lo[0].copy()
        events = np.frombuffer(data, dtype=_EVENT_DTYPE, count=n, offset=size)
        state._buckets = events["rel"].astype(np.int64) + (end if has_clock else 0)
        state._items = events["item"].astype(np.uint32)
        state._weights = events["weight"].astype(np.float32)
        state._entered = int(heads.count[0])
        return state
