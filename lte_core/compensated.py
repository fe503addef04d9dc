"""Double-double (compensated) sums, so window sums stay exact when big weights cancel.

Why: a window's ``Σ w·v`` is a running sum that adds a term when an event enters and
subtracts the same term when it leaves. With weights anywhere in the admitted
``[1e-6, 1e6]``, a plain float64 sum that held a ``1e6`` event keeps ≈1e6·2^-53 of rounding
after the event leaves, and divided by a remaining weight of ``1e-6`` that is an error of
≈1e-4 in the mean (DESIGN 3.2 allows 1e-5). Each term ``w·v`` is exact in float64 (float32
times float32 needs 48 bits), so the only rounding is in the additions; keeping every sum as
an unevaluated pair ``hi + lo`` with the error of each addition captured exactly
(Knuth's TwoSum) leaves an error of about ``2·u²·|operands|`` per addition (u = 2^-53) instead
of ``u·|operands|``: after a 1e6 event leaves, ≈1e-26 of residue against a weight of 1e-6.
See ``docs/contracts.md`` ("Exactness over the whole weight range") for the bound.

Everything here is elementwise numpy, O(d) per term: the per-event cost of the engine does
not change, only its constant (about three times the float operations).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def two_sum(a: F64, b: F64) -> tuple[F64, F64]:
    """``s + e == a + b`` exactly, with ``s = fl(a + b)`` (Knuth; no ordering needed)."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def dd_add(a_hi: F64, a_lo: F64, b_hi: F64, b_lo: F64) -> tuple[F64, F64]:
    """``(a_hi + a_lo) + (b_hi + b_lo)`` as a normalised pair ``(hi, lo)``, ``|lo| <= u·|hi|``.

    When ``a_hi`` and ``b_hi`` cancel, ``two_sum`` returns their exact difference, so the
    residue is only the rounding of ``a_lo + b_lo`` (≈ u²·|a|)."""
    s, e = two_sum(a_hi, b_hi)
    e = e + (a_lo + b_lo)
    hi = s + e
    lo = e - (hi - s)
    return hi, lo


def segment_sums(terms: F64, starts: I64) -> tuple[F64, F64]:
    """Per segment (rows ``starts[j]:starts[j+1]`` of ``terms``), the sum as ``(hi, lo)``.

    A pairwise tree of :func:`dd_add` inside each segment: ``log2(longest segment)`` numpy
    passes over all rows, so a batch with one very busy user costs a few more passes, not a
    Python loop per event. ``np.add.reduceat`` would round every addition once more
    (float64), which is exactly the cancellation this module exists to avoid.
    """
    n = terms.shape[0]
    starts = np.asarray(starts, dtype=np.int64)
    if n == 0:
        return terms.astype(np.float64, copy=True), np.zeros(terms.shape, dtype=np.float64)
    lengths = np.diff(np.r_[starts, n])
    # A one-term segment is its own sum. Only the rows of longer segments go up the tree,
    # and a segment leaves it as soon as it is down to one row: a batch of mostly one-event
    # users no longer copies every row at every level (same pairs, same bits).
    hi_out = np.array(terms[starts], dtype=np.float64)
    lo_out = np.zeros_like(hi_out)
    seg_of_row = np.repeat(np.arange(len(starts)), lengths)
    active = np.flatnonzero(lengths[seg_of_row] > 1)
    hi = np.array(terms[active], dtype=np.float64)
    lo = np.zeros_like(hi)
    seg = seg_of_row[active]
    while len(seg):
        first = np.r_[True, seg[1:] != seg[:-1]]
        pos = np.arange(len(seg)) - np.maximum.accumulate(np.where(first, np.arange(len(seg)), 0))
        has_next = np.r_[seg[1:] == seg[:-1], False]
        left = (pos % 2 == 0) & has_next
        lone = (pos % 2 == 0) & ~has_next
        li = np.flatnonzero(left)
        keep = np.sort(np.concatenate([li, np.flatnonzero(lone)]))
        new_hi, new_lo = hi[keep], lo[keep]
        at = np.searchsorted(keep, li)
        new_hi[at], new_lo[at] = dd_add(hi[li], lo[li], hi[li + 1], lo[li + 1])
        hi, lo, seg = new_hi, new_lo, seg[keep]
        change = seg[1:] != seg[:-1]
        done = np.r_[True, change] & np.r_[change, True]
        hi_out[seg[done]], lo_out[seg[done]] = hi[done], lo[done]
        hi, lo, seg = hi[~done], lo[~done], seg[~done]
    return hi_out, lo_out
