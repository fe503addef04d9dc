"""The numpy double-double segment sums that ``lte_core`` shipped before its compiled
kernels (:mod:`lte_core.compensated_kernels`), kept unchanged as their test oracle.

It lays each segment out position-major, padded with zero rows up to a power of two, and
runs the pairwise tree level by level in whole-array passes: a different computation of the
same additions, so the kernels must equal it bit for bit. Its zero padding of the weighted
sums is ``0·v`` (a clipped row's vector times weight zero), which is ``-0.0`` where that
vector's entry is negative: where a sum is an exact zero its sign can differ from the
kernel's, which pads with ``+0.0`` like :func:`segment_sums` (values never differ). It
reads past an empty segment (a segment is one user's events, never empty in the engine);
the tests give it none.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from lte_core.compensated import dd_add, two_sum

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: Elements (rows x columns) of one block of :func:`segment_sums`: its scratch arrays
#: stay in cache and are reused, instead of event-sized temporaries per tree level.
BLOCK_ELEMENTS = 1 << 18


def segment_sums(terms: F64, starts: I64) -> tuple[F64, F64]:
    """Per segment (rows ``starts[j]:starts[j+1]`` of ``terms``), the sum as ``(hi, lo)``.

    A pairwise tree of :func:`dd_add` inside each segment: at each level neighbours
    ``(0, 1), (2, 3), ...`` are added and a lone last row is carried up, so the error stays
    that of ``log2(length)`` additions. ``np.add.reduceat`` would round every addition once
    more (float64), which is exactly the cancellation this module exists to avoid.

    How (the arithmetic above, laid out for numpy): segments are grouped by
    ``k = ceil(log2(length))`` and each group is cut into blocks of about
    :data:`BLOCK_ELEMENTS`, laid out position-major ``(2^k, segments, columns)`` and
    padded with zeros after each segment's last row, so every tree level is a few
    contiguous elementwise passes over cache-sized scratch. Adding ``(0, 0)`` to a
    normalised pair returns it unchanged, so a padded row is the carried lone row; the
    first level adds pairs whose low parts are zero, where :func:`dd_add` is
    :func:`two_sum` exactly. A batch with one very busy user costs a few more passes over
    a small group, not a Python loop per event.
    """

    def fill(x: F64, at: I64, real: npt.NDArray[np.bool_]) -> None:
        x[...] = 0.0
        x[real] = terms[at[real]]

    return _segment_sums(fill, terms.shape[0], terms.shape[1:], starts)


#: ``fill(x, at, real)`` writes into ``x`` (``at.shape + columns``) the terms of rows
#: ``at`` where ``real``, and zeros (of either sign) elsewhere.
Fill = Callable[[F64, I64, npt.NDArray[np.bool_]], None]


def weighted_segment_sums(
    weights: F64, table: npt.NDArray[np.float32] | F64, rows: I64, starts: I64
) -> tuple[F64, F64]:
    """:func:`segment_sums` of the terms ``(weights[i]·table[rows[i]], weights[i])`` (a
    weighted sum of vectors and the sum of its weights), without materialising the terms:
    each block multiplies its own rows into its scratch (in float64, where a float32 times
    float32 product is exact), padding rows with weight zero."""
    d = table.shape[1]

    def fill(x: F64, at: I64, real: npt.NDArray[np.bool_]) -> None:
        # padding slots read a clipped row and get weight zero (take: about twice as fast
        # as fancy indexing here)
        w = np.take(weights, at, mode="clip")
        w[~real] = 0.0
        vectors = np.take(table, np.take(rows, at, mode="clip"), axis=0)
        np.multiply(w[..., None], vectors, out=x[..., :d])
        x[..., d] = w

    return _segment_sums(fill, len(weights), (d + 1,), starts)


def _segment_sums(fill: Fill, n: int, columns: tuple[int, ...], starts: I64) -> tuple[F64, F64]:
    starts = np.asarray(starts, dtype=np.int64)
    hi_out = np.zeros((len(starts), *columns), dtype=np.float64)
    lo_out = np.zeros_like(hi_out)
    if n == 0:
        return hi_out, lo_out
    lengths = np.diff(np.r_[starts, n])
    levels = np.zeros(len(starts), dtype=np.int64)
    longer = lengths > 1
    levels[longer] = np.ceil(np.log2(lengths[longer])).astype(np.int64)
    # float log2 is exact at powers of two; fix any off-by-one rounding elsewhere
    levels[longer] += (np.int64(1) << levels[longer]) < lengths[longer]
    single = np.flatnonzero(levels == 0)
    if len(single):
        x = np.empty((1, len(single), *columns), dtype=np.float64)
        fill(x, starts[single][None, :], np.ones((1, len(single)), dtype=np.bool_))
        hi_out[single] = x[0]
    per_row = max(1, math.prod(columns))
    # scratch for the tree levels, reused by every block: level 1 writes pair A, level 2
    # pair B, level 3 pair A again, ... (each level reads only the previous one)
    widest = (1 << int(levels.max())) * per_row
    scratch = np.empty((7, max(BLOCK_ELEMENTS, widest) // 2), dtype=np.float64)
    terms = np.empty(max(BLOCK_ELEMENTS, widest), dtype=np.float64)
    for k in np.unique(levels[levels > 0]).tolist():
        group = np.flatnonzero(levels == k)
        width = 1 << k
        step = max(1, BLOCK_ELEMENTS // (width * per_row))
        for first in range(0, len(group), step):
            block = group[first : first + step]
            position = np.arange(width, dtype=np.int64)[:, None]
            real = position < lengths[block][None, :]
            x = terms[: width * len(block) * per_row].reshape(width, len(block), *columns)
            fill(x, starts[block][None, :] + position, real)
            hi_out[block], lo_out[block] = _tree(x, scratch)
    return hi_out, lo_out


def _tree(x: F64, scratch: F64) -> tuple[F64, F64]:
    """The pairwise double-double sum of ``x`` along its first axis (a power of two)."""

    inner = x.shape[1:]
    per_row = math.prod(inner)

    def views(rows: int, *at: int) -> tuple[F64, ...]:
        return tuple(scratch[i, : rows * per_row].reshape(rows, *inner) for i in at)

    rows = x.shape[0] // 2
    # level 1: the low parts are zero, so the sum of a pair is its two_sum
    hi, lo, t = views(rows, 0, 1, 6)
    two_sum(x[0::2], x[1::2], (hi, lo, t))
    pair = (2, 3)
    while rows > 1:
        rows //= 2
        out = views(rows, *pair, 4, 5, 6)
        hi, lo = dd_add(hi[0::2], lo[0::2], hi[1::2], lo[1::2], out)  # type: ignore[arg-type]
        pair = (0, 1) if pair == (2, 3) else (2, 3)
    return hi[0], lo[0]
