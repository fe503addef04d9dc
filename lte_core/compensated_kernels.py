"""Compiled (numba) loops of the double-double segment sums in :mod:`lte_core.compensated`.

Why compiled: in numpy every TwoSum is six passes over memory and the pairwise tree needs its
terms laid out and padded first; a loop does the same additions in registers, one pass over
the events, and builds each term ``w·v`` where it is added (never materialised). The
arithmetic is exactly the numpy tree's (same additions, same order, same operands); the
tests keep the numpy implementation as the oracle and compare bit for bit.

Rules the loops keep:

* No ``fastmath``: TwoSum is exact only under IEEE round-to-nearest with every operation
  rounded on its own. Without ``fastmath`` numba emits no ``contract`` flag, so LLVM fuses no
  multiply and add into an FMA (``tests/unit/test_compensated_kernels.py`` checks the
  generated assembly for it).
* ``nogil``: ``lte snapshot`` runs engine calls on two threads.
* ``cache=True``: compiled once per machine (into ``__pycache__`` beside this file, else
  numba's user-wide cache, or ``NUMBA_CACHE_DIR``), loaded from there by later processes.
  Where no cache directory is writable (a read-only install with a read-only home) numba
  refuses ``cache=True`` outright; the loops are then compiled in each process instead.

Segment order is a binary counter per segment: a stack holding one finished subtree per
level (the set bits of the rows seen so far), so row ``p`` closes the subtrees its trailing
one bits name, exactly the numpy tree's neighbours ``(0, 1), (2, 3), ...``. At a segment's
end the partial subtrees are closed as the numpy layout closes them: each against a subtree
of zero padding ``(+0, +0)``, which changes no value and keeps even the sign of an exact zero
equal to the numpy reference's unweighted sums (``tests/reference_sums.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Table = npt.NDArray[np.float32] | F64

#: Stack levels: a segment of up to 2^62 rows.
LEVELS = 63

_F = TypeVar("_F", bound=Callable[..., object])


def _compiled(func: _F) -> _F:
    """``numba.njit(cache=True, nogil=True)``, without the cache where none can be written.

    numba raises at decoration when neither ``__pycache__`` beside the source nor its
    user-wide cache directory is writable; compiling in every process is slower to start
    but computes the same."""
    try:
        return cast(_F, numba.njit(cache=True, nogil=True)(func))
    except RuntimeError:
        return cast(_F, numba.njit(cache=False, nogil=True)(func))


def _inlined(func: _F) -> _F:
    """A helper compiled into its callers (numba IR inlining): no call per element or
    segment, and the loops it holds vectorise in the caller's context."""
    return cast(_F, numba.njit(inline="always", nogil=True)(func))


@_inlined
def _two_sum(a: float, b: float) -> tuple[float, float]:
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


@_inlined
def _dd_add(a_hi: float, a_lo: float, b_hi: float, b_lo: float) -> tuple[float, float]:
    s, e = _two_sum(a_hi, b_hi)
    e = e + (a_lo + b_lo)
    hi = s + e
    return hi, e - (hi - s)


@_inlined
def _term_row(  # noqa: PLR0917 - one term row into caller-owned scratch
    out: F64, table: Table, weights: F64, rows: I64, weight_column: bool, i: int
) -> None:
    """Term row ``i`` (see :func:`_segment`) into ``out``."""
    d: int = table.shape[1]
    w = weights[i]
    r = rows[i]
    for c in range(d):
        out[c] = w * np.float64(table[r, c])
    if weight_column:
        out[d] = w


@_inlined
def _segment(  # noqa: PLR0912, PLR0917 - one segment's tree over caller-owned scratch
    table: Table,
    weights: F64,
    rows: I64,
    weight_column: bool,
    first: int,
    length: int,
    stack_hi: F64,
    stack_lo: F64,
    leaf: F64,
    hi: F64,
    lo: F64,
) -> None:
    """Into ``(hi, lo)``: the sum of the term rows ``first:first+length``, term row ``i``
    being ``weights[i]·table[rows[i]]`` (float32 entries widened first, so the product is
    the float64 one), followed by ``weights[i]`` if ``weight_column``. ``stack_*`` (LEVELS
    x columns) and ``leaf`` (columns) are scratch."""
    d: int = table.shape[1]
    cols = d + 1 if weight_column else d
    if length <= 1:  # the numpy layout takes a lone row as it is, low part +0
        for c in range(cols):
            hi[c] = 0.0
            lo[c] = 0.0
        if length == 1:
            _term_row(hi, table, weights, rows, weight_column, first)
        return
    for p in range(length):
        if p % 2 == 0:  # a row waiting for its right neighbour
            _term_row(leaf, table, weights, rows, weight_column, first + p)
            continue
        w = weights[first + p]
        r = rows[first + p]
        for c in range(d):
            hi[c], lo[c] = _two_sum(leaf[c], w * np.float64(table[r, c]))
        if weight_column:
            hi[d], lo[d] = _two_sum(leaf[d], w)
        k = (p + 1) >> 1  # subtrees of two rows finished so far
        level = 1
        while k & 1 == 0:
            for c in range(cols):
                hi[c], lo[c] = _dd_add(stack_hi[level, c], stack_lo[level, c], hi[c], lo[c])
            k >>= 1
            level += 1
        for c in range(cols):
            stack_hi[level, c] = hi[c]
            stack_lo[level, c] = lo[c]
    # close the partial subtrees as the zero-padded layout does (see the module docstring)
    partial = length % 2 == 1
    if partial:
        for c in range(cols):
            hi[c], lo[c] = _two_sum(leaf[c], 0.0)
    bits = length >> 1
    level = 1
    while (1 << level) < length:
        if bits & 1 and partial:
            for c in range(cols):
                hi[c], lo[c] = _dd_add(stack_hi[level, c], stack_lo[level, c], hi[c], lo[c])
        elif bits & 1:
            for c in range(cols):
                hi[c], lo[c] = _dd_add(stack_hi[level, c], stack_lo[level, c], 0.0, 0.0)
            partial = True
        elif partial:
            for c in range(cols):
                hi[c], lo[c] = _dd_add(hi[c], lo[c], 0.0, 0.0)
        bits >>= 1
        level += 1
    if not partial:  # a power of two: the last row closed the whole tree
        for c in range(cols):
            hi[c] = stack_hi[level, c]
            lo[c] = stack_lo[level, c]


@_compiled
def tree_sums(  # noqa: PLR0917 - the kernel behind segment_sums and weighted_segment_sums
    table: Table,
    weights: F64,
    rows: I64,
    weight_column: bool,
    starts: I64,
    hi: F64,
    lo: F64,
) -> None:
    """``(hi[j], lo[j])`` = the double-double sum of the term rows (see :func:`_segment`)
    of segment ``j``: ``starts[j]:starts[j+1]``, the last one up to ``len(weights)``; an
    empty segment sums to ``(+0, +0)``."""
    cols = hi.shape[1]
    stack_hi = np.empty((LEVELS, cols))
    stack_lo = np.empty((LEVELS, cols))
    leaf = np.empty(cols)
    m = starts.shape[0]
    n = weights.shape[0]
    for j in range(m):
        end = starts[j + 1] if j + 1 < m else n
        _segment(
            table, weights, rows, weight_column, starts[j], end - starts[j], stack_hi,
            stack_lo, leaf, hi[j], lo[j],
        )  # fmt: skip


@_compiled
def add_weighted_tree_sums(  # noqa: PLR0917 - two double-double targets and their terms
    sums: F64,
    sums_lo: F64,
    weight: F64,
    weight_lo: F64,
    owners: I64,
    weights: F64,
    table: Table,
    rows: I64,
    starts: I64,
) -> None:
    """``(sums, weight)[owners[j]] += `` segment ``j``'s weighted sum (with its weight
    column), each a double-double addition of the segment's ``(hi, lo)``, as ``dd_add`` of
    the gathered rows does; ``owners`` distinct."""
    d: int = table.shape[1]
    stack_hi = np.empty((LEVELS, d + 1))
    stack_lo = np.empty((LEVELS, d + 1))
    leaf = np.empty(d + 1)
    hi: F64 = np.empty(d + 1)
    lo: F64 = np.empty(d + 1)
    m = starts.shape[0]
    n = weights.shape[0]
    for j in range(m):
        end = starts[j + 1] if j + 1 < m else n
        _segment(
            table, weights, rows, True, starts[j], end - starts[j], stack_hi, stack_lo, leaf,
            hi, lo,
        )  # fmt: skip
        o = owners[j]
        for c in range(d):
            sums[o, c], sums_lo[o, c] = _dd_add(sums[o, c], sums_lo[o, c], hi[c], lo[c])
        weight[o], weight_lo[o] = _dd_add(weight[o], weight_lo[o], hi[d], lo[d])
