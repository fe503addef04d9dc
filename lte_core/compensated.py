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

The sums of many terms (an engine call's events, grouped by user) run as compiled loops
(:mod:`lte_core.compensated_kernels`, numba), imported on first use so that what never sums
(``lte --help``, the serving processes) does not load numba. :func:`two_sum` and
:func:`dd_add` stay elementwise numpy for the few-row additions of the one-user reference.
O(d) per term either way: the per-event cost of the engine does not change, only its
constant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def two_sum(a: F64, b: F64, out: tuple[F64, F64, F64] | None = None) -> tuple[F64, F64]:
    """``s + e == a + b`` exactly, with ``s = fl(a + b)`` (Knuth; no ordering needed).

    ``out = (s, e, scratch)``: arrays of the result's shape to compute in, so a caller in a
    loop allocates nothing (large temporaries cost more than the arithmetic here)."""
    s, e, t = out if out is not None else _scratch(a, b, 3)
    np.add(a, b, out=s)
    np.subtract(s, a, out=t)  # bb = s - a
    np.subtract(b, t, out=e)  # b - bb
    np.subtract(s, t, out=t)  # s - bb
    np.subtract(a, t, out=t)  # a - (s - bb)
    np.add(t, e, out=e)
    return s, e


def dd_add(
    a_hi: F64,
    a_lo: F64,
    b_hi: F64,
    b_lo: F64,
    out: tuple[F64, F64, F64, F64, F64] | None = None,
) -> tuple[F64, F64]:
    """``(a_hi + a_lo) + (b_hi + b_lo)`` as a normalised pair ``(hi, lo)``, ``|lo| <= u·|hi|``.

    When ``a_hi`` and ``b_hi`` cancel, ``two_sum`` returns their exact difference, so the
    residue is only the rounding of ``a_lo + b_lo`` (≈ u²·|a|). ``out = (hi, lo, three
    scratch arrays)``, all of the result's shape, none of them an input."""
    hi, lo, s, e, t = out if out is not None else _scratch(a_hi, b_hi, 5)
    two_sum(a_hi, b_hi, (s, e, t))
    np.add(a_lo, b_lo, out=t)
    np.add(e, t, out=e)  # e + (a_lo + b_lo)
    np.add(s, e, out=hi)
    np.subtract(hi, s, out=t)
    np.subtract(e, t, out=lo)  # e - (hi - s)
    return hi, lo


def _scratch(a: F64, b: F64, count: int) -> tuple[F64, ...]:
    shape = np.broadcast_shapes(np.shape(a), np.shape(b))
    return tuple(np.empty(shape, dtype=np.float64) for _ in range(count))


def segment_sums(terms: F64, starts: I64) -> tuple[F64, F64]:
    """Per segment (rows ``starts[j]:starts[j+1]`` of ``terms``, the last one to the end),
    the sum as ``(hi, lo)``; an empty segment sums to ``(0, 0)``.

    A pairwise tree of :func:`dd_add` inside each segment: neighbours ``(0, 1), (2, 3),
    ...`` are added, then neighbouring pairs, and a lone last row or subtree is carried up,
    so the error stays that of ``log2(length)`` additions. ``np.add.reduceat`` would round
    every addition once more (float64), which is exactly the cancellation this module
    exists to avoid. The first additions of a tree take rows whose low parts are zero,
    where :func:`dd_add` is :func:`two_sum`."""
    from lte_core import compensated_kernels as _kernels  # noqa: PLC0415 - see the module doc

    terms = np.ascontiguousarray(terms, dtype=np.float64)
    n, m, cols = terms.shape[0], len(starts), math.prod(terms.shape[1:])
    hi = np.empty((m, *terms.shape[1:]), dtype=np.float64)
    lo = np.empty_like(hi)
    # the kernel's terms are weights·table[rows]: weight 1.0 multiplies every float exactly
    _kernels.tree_sums(
        _read_only(terms.reshape(n, cols), np.float64),
        _read_only(np.ones(n), np.float64),
        _read_only(np.arange(n), np.int64),
        False,
        _read_only(starts, np.int64),
        hi.reshape(m, cols),
        lo.reshape(m, cols),
    )
    return hi, lo


def weighted_segment_sums(
    weights: F64, table: npt.NDArray[np.float32] | F64, rows: I64, starts: I64
) -> tuple[F64, F64]:
    """:func:`segment_sums` of the terms ``(weights[i]·table[rows[i]], weights[i])`` (a
    weighted sum of vectors and the sum of its weights), without materialising the terms:
    each is computed in float64 where it is added (a float32 times float32 product is
    exact there)."""
    from lte_core import compensated_kernels as _kernels  # noqa: PLC0415 - see the module doc

    d = table.shape[1]
    hi = np.empty((len(starts), d + 1), dtype=np.float64)
    lo = np.empty_like(hi)
    _kernels.tree_sums(
        _table(table),
        _read_only(weights, np.float64),
        _read_only(rows, np.int64),
        True,
        _read_only(starts, np.int64),
        hi,
        lo,
    )
    return hi, lo


def add_weighted_segment_sums(  # noqa: PLR0917 - two double-double targets and their terms
    sums: F64,
    sums_lo: F64,
    weight: F64,
    weight_lo: F64,
    owners: I64,
    weights: F64,
    table: npt.NDArray[np.float32] | F64,
    rows: I64,
    starts: I64,
) -> None:
    """In place, ``(sums, weight)[owners[j]] += `` segment ``j`` of
    :func:`weighted_segment_sums`, added with :func:`dd_add`: the same numbers as gathering
    the owners' rows, adding and scattering back, without the four temporaries.
    ``owners`` must be distinct; ``sums`` has the table's width."""
    from lte_core import compensated_kernels as _kernels  # noqa: PLC0415 - see the module doc

    targets = (sums, sums_lo, weight, weight_lo)
    # the loop writes through C-contiguous float64 arrays; others go through a copy
    work = [np.ascontiguousarray(t, dtype=np.float64) for t in targets]
    _kernels.add_weighted_tree_sums(
        work[0],
        work[1],
        work[2],
        work[3],
        _read_only(owners, np.int64),
        _read_only(weights, np.float64),
        _table(table),
        _read_only(rows, np.int64),
        _read_only(starts, np.int64),
    )
    for target, done in zip(targets, work, strict=True):
        if done is not target:
            target[...] = done


def warm(tables: Sequence[npt.DTypeLike] = (np.float32, np.float64)) -> None:
    """Compile (or load from numba's cache) the variants of the compiled sums for item
    tables of the types ``tables`` now (all of them by default, as an image build does).

    A process's first engine call would otherwise pay for it: 8-11 s on a machine that has
    never compiled them, 1-2 s to load the cache. A worker calls this with its basis's type
    before it joins its group, so that time is spent while it is not yet ready rather than as
    the staleness of its first batch, and no time on a table type it never sums. Each entry
    point is called on a few rows of every input type it is given: float64 terms, and the
    item table's type."""
    starts = np.array([0, 1], dtype=np.int64)
    rows = np.array([0, 1, 0], dtype=np.int64)
    weights = np.ones(3)
    segment_sums(np.ones((3, 2)), starts)
    for dtype in tables:
        table = np.ones((2, 2), dtype=dtype)
        weighted_segment_sums(weights, table, rows, starts)
        sums = np.zeros((2, 2))
        weight = np.zeros(2)
        owners = np.array([0, 1], dtype=np.int64)
        add_weighted_segment_sums(
            sums,
            np.zeros_like(sums),
            weight,
            np.zeros_like(weight),
            owners,
            weights,
            table,
            rows,
            starts,
        )


def _read_only(values: npt.ArrayLike, dtype: type[np.generic]) -> npt.NDArray[Any]:
    """A C-contiguous array of ``dtype`` (copied only if it is not one), as a read-only
    view: numba compiles one variant per argument type, and a read-only array is another
    type (basis vectors loaded from a file are read-only, the tests' are not), so every
    input goes in read-only and each entry point is compiled once per machine."""
    view = np.ascontiguousarray(values, dtype=dtype).view()
    view.flags.writeable = False
    return view


def _table(table: npt.NDArray[np.float32] | F64) -> npt.NDArray[Any]:
    """float32 tables stay float32 (widened per entry in the loop), anything else float64."""
    return _read_only(table, np.float32 if table.dtype == np.float32 else np.float64)
