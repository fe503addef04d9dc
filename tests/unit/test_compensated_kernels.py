"""The compiled double-double sums (:mod:`lte_core.compensated_kernels`) against the numpy
implementation they replaced (:mod:`tests.reference_sums`), bit for bit.

Terms span the whole admitted weight range (``[1e-6, 1e6]``, docs/contracts.md), signed,
with exact cancellations inside a segment and exact zeros of both signs; half the draws use
weights that are not float32 (the ``recency`` encoder's decayed weights), so a product
``w·v`` is rounded and a multiply fused into the following addition (FMA) would show.
Segments run from empty to ~300 rows.

Zero signs: ``segment_sums`` pads with ``+0.0`` in both implementations, so there the sign
of an exact zero must match too (checked with ``signbit``). The reference's *weighted* sums
pad with ``0·v``, which is ``-0.0`` where ``v < 0``; the kernels pad with ``+0.0`` there as
well, so an exact zero's sign may differ from the reference's (``==`` treats them as equal;
values never differ), and the weighted kernels are held to the sign-exact ``segment_sums``
of the same terms materialised instead.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numba
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lte_core import compensated, compensated_kernels
from lte_core.compensated import dd_add
from tests import reference_sums

F64 = npt.NDArray[np.float64]
W_MIN, W_MAX = 1e-6, 1e6
ROOT = Path(__file__).resolve().parents[2]


def _identical(got: F64, want: F64) -> None:
    """Equal values and equal signs (of zeros too)."""
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


def _weights(rng: np.random.Generator, n: int, float32: bool) -> F64:
    w = 10.0 ** rng.uniform(math.log10(W_MIN), math.log10(W_MAX), n)
    w[rng.random(n) < 0.05] = W_MIN
    w[rng.random(n) < 0.05] = W_MAX
    if float32:
        w = w.astype(np.float32).astype(np.float64)
    signed: F64 = w * rng.choice([-1.0, 1.0], n)
    return signed


def _table(rng: np.random.Generator, rows: int, d: int, zeros: float) -> npt.NDArray[np.float32]:
    """Vectors with a fraction ``zeros`` of exact zeros, half of them ``-0.0``."""
    table = rng.standard_normal((rows, d)).astype(np.float32)
    zero = rng.random((rows, d)) < zeros
    table[zero] = np.where(rng.random((rows, d)) < 0.5, 0.0, -0.0)[zero]
    return table


def _starts(lengths: list[int]) -> npt.NDArray[np.int64]:
    starts: npt.NDArray[np.int64] = np.r_[0, np.cumsum(lengths)[:-1]].astype(np.int64)
    return starts


def _cancel(rows: npt.NDArray[np.int64], w: F64) -> None:
    """Every third event is the previous one negated: exact cancellation inside segments."""
    rows[1::3] = rows[0:-1:3][: len(rows[1::3])]
    w[1::3] = -w[0:-1:3][: len(w[1::3])]


def _reference(
    fn_terms: F64, starts: npt.NDArray[np.int64], lengths: list[int], columns: int
) -> tuple[F64, F64]:
    """The reference per segment, with empty segments summing to zero (the reference
    itself reads the next segment's first row for them: the engine never has any)."""
    keep = np.flatnonzero(np.asarray(lengths) > 0)
    hi = np.zeros((len(lengths), columns))
    lo = np.zeros((len(lengths), columns))
    if len(keep):
        ref_starts = _starts([lengths[i] for i in keep])
        hi[keep], lo[keep] = reference_sums.segment_sums(fn_terms, ref_starts)
    return hi, lo


#: fraction of exact zeros in the vectors: dense, and sparse enough that whole subtrees sum
#: to a signed zero
zero_fractions = st.sampled_from([0.0, 0.1, 0.8])
segment_lengths = st.lists(
    st.one_of(st.integers(0, 9), st.integers(10, 300)), min_size=1, max_size=8
)


@settings(max_examples=120, deadline=None)
@given(
    lengths=segment_lengths,
    columns=st.integers(1, 5),
    float32=st.booleans(),
    zeros=zero_fractions,
    seed=st.integers(0, 2**32 - 1),
)
def test_segment_sums_equal_the_numpy_reference_bit_for_bit_and_zero_sign(
    lengths: list[int], columns: int, float32: bool, zeros: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    rows = rng.integers(0, 7, n)
    w = _weights(rng, n, float32)
    _cancel(rows, w)
    terms = w[:, None] * _table(rng, 7, columns, zeros)[rows].astype(np.float64)
    starts = _starts(lengths)
    hi, lo = compensated.segment_sums(terms, starts)
    want_hi, want_lo = _reference(terms, starts, lengths, columns)
    _identical(hi, want_hi)
    _identical(lo, want_lo)


@settings(max_examples=120, deadline=None)
@given(
    lengths=segment_lengths,
    d=st.integers(1, 5),
    float32=st.booleans(),
    zeros=zero_fractions,
    seed=st.integers(0, 2**32 - 1),
)
def test_weighted_sums_equal_the_reference_and_the_sums_of_the_materialised_terms(
    lengths: list[int], d: int, float32: bool, zeros: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    table = _table(rng, 7, d, zeros)
    rows = rng.integers(0, 7, n)
    w = _weights(rng, n, float32)
    _cancel(rows, w)
    starts = _starts(lengths)
    hi, lo = compensated.weighted_segment_sums(w, table, rows, starts)
    terms = np.concatenate([w[:, None] * table[rows].astype(np.float64), w[:, None]], axis=1)
    # the same terms summed by the sign-exact kernel: identical, zero signs included
    want_hi, want_lo = compensated.segment_sums(terms, starts)
    _identical(hi, want_hi)
    _identical(lo, want_lo)
    # the numpy reference: equal values (its padding 0·v may give an exact zero a - sign)
    ref_hi, ref_lo = _reference(terms, starts, lengths, d + 1)
    assert (hi == ref_hi).all()
    assert (lo == ref_lo).all()
    keep = [j for j, length in enumerate(lengths) if length > 0]
    if keep:
        direct = reference_sums.weighted_segment_sums(
            w, table, rows, _starts([lengths[j] for j in keep])
        )
        assert (hi[keep] == direct[0]).all()
        assert (lo[keep] == direct[1]).all()


@settings(max_examples=80, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 300), min_size=1, max_size=8),
    d=st.integers(1, 5),
    float32=st.booleans(),
    zeros=zero_fractions,
    seed=st.integers(0, 2**32 - 1),
)
def test_adding_into_the_owners_equals_dd_add_of_the_gathered_rows(
    lengths: list[int], d: int, float32: bool, zeros: float, seed: int
) -> None:
    """What the engine did before: segment sums, then ``dd_add`` into ``sums[owners]``."""
    rng = np.random.default_rng(seed)
    n, users = sum(lengths), 2 * len(lengths)
    table = _table(rng, 7, d, zeros)
    rows = rng.integers(0, 7, n)
    w = _weights(rng, n, float32)
    _cancel(rows, w)
    starts = _starts(lengths)
    owners = rng.permutation(users)[: len(lengths)]
    # running double-double sums as an engine holds them: (hi, lo) with |lo| <= u·|hi|
    sums, sums_lo = dd_add(
        rng.standard_normal((users, d)) * 1e3, np.zeros((users, d)), np.zeros((users, d)),
        rng.standard_normal((users, d)) * 1e-14,
    )  # fmt: skip
    weight, weight_lo = dd_add(
        rng.uniform(0, 1e6, users), np.zeros(users), np.zeros(users), rng.uniform(0, 1e-11, users)
    )
    want = [a.copy() for a in (sums, sums_lo, weight, weight_lo)]
    hi, lo = reference_sums.weighted_segment_sums(w, table, rows, starts)
    want[0][owners], want[1][owners] = dd_add(
        want[0][owners], want[1][owners], hi[:, :d], lo[:, :d]
    )
    want[2][owners], want[3][owners] = dd_add(want[2][owners], want[3][owners], hi[:, d], lo[:, d])
    compensated.add_weighted_segment_sums(
        sums, sums_lo, weight, weight_lo, owners, w, table, rows, starts
    )
    for got, expected in zip((sums, sums_lo, weight, weight_lo), want, strict=True):
        assert (got == expected).all()


def test_non_contiguous_targets_are_updated_too() -> None:
    table = np.array([[1.5, -2.0]], dtype=np.float32)
    heads = np.zeros((3, 4))  # columns 0-1 sums, 2 weight, 3 weight_lo: strided views
    sums_lo = np.zeros((3, 2))
    compensated.add_weighted_segment_sums(
        heads[:, :2], sums_lo, heads[:, 2], heads[:, 3], np.array([2]),
        np.array([2.0, 1e6]), table, np.array([0, 0]), np.array([0]),
    )  # fmt: skip
    np.testing.assert_array_equal(heads[2], [1.5 * 1e6 + 3.0, -2e6 - 4.0, 1e6 + 2.0, 0.0])
    assert not heads[:2].any()


def test_the_compiled_loops_contain_no_fused_multiply_add() -> None:
    """TwoSum needs every operation rounded on its own; an FMA (``w·v + s`` in one
    rounding) would change the sums of inexact products. Compiled afresh, since numba does
    not disassemble cached code; the engine's kernel holds every operation there is."""
    kernel: Any = compensated_kernels.add_weighted_tree_sums
    fresh = numba.njit(nogil=True)(kernel.py_func)
    fresh(
        np.zeros((1, 2)), np.zeros((1, 2)), np.zeros(1), np.zeros(1), np.zeros(1, np.int64),
        np.ones(3), np.ones((1, 2), np.float32), np.zeros(3, np.int64), np.zeros(1, np.int64),
    )  # fmt: skip
    (asm,) = fresh.inspect_asm().values()
    assert "vaddpd" in asm or "addsd" in asm  # it is the arithmetic we think it is
    assert re.findall(r"\bv?f(?:n)?m(?:add|sub)\w*", asm) == []


@pytest.mark.parametrize("user_cache", [True, False], ids=["user-cache", "nothing-writable"])
def test_a_read_only_install_compiles_and_says_nothing(tmp_path: Path, user_cache: bool) -> None:
    """Where ``__pycache__`` beside the code cannot be made (a read-only install), numba
    caches in the user's cache directory; where that cannot be made either, numba refuses
    ``cache=True`` and the loops compile in the process instead. Either way the process
    computes and prints nothing on stderr (warnings are errors here)."""
    package = tmp_path / "site"
    package.mkdir()
    (package / "__pycache__").write_text("")  # a file where the cache directory would go
    blocked = tmp_path / "blocked"
    blocked.write_text("")
    user = tmp_path / "user-cache" if user_cache else blocked / "cache"
    (package / "probe.py").write_text(
        "from lte_core.compensated_kernels import _compiled\n"
        "def twice(x):\n"
        "    return 2 * x\n"
        "twice = _compiled(twice)\n"
        "print(twice(21), type(twice._cache).__name__)\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")},
        "XDG_CACHE_HOME": str(user),
        "HOME": str(blocked / "home"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(package)]),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    done = subprocess.run(
        [sys.executable, "-W", "error", str(package / "probe.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.split() == ["42", "FunctionCache" if user_cache else "NullCache"]
    assert any((user / "numba").rglob("*.nbi")) == user_cache


def test_warm_compiles_every_variant_the_engine_calls() -> None:
    """After :func:`~lte_core.compensated.warm`, a worker's engine work compiles nothing
    more (in a fresh interpreter: this one may have compiled everything already). The
    engine runs a ``mean`` and a ``recency`` window over a float32 basis, and the public
    sums are called with inputs of other types, which must be converted, not compiled for."""
    probe = """
import numpy as np
from lte_core import compensated, compensated_kernels as k
from lte_core.engine import EventColumns, WindowEngine
from lte_core.head import Heads
from lte_core.window import WindowSpec
kernels = (k.tree_sums, k.add_weighted_tree_sums)
assert [len(f.signatures) for f in kernels] == [0, 0]
compensated.warm()
warmed = [len(f.signatures) for f in kernels]
rng = np.random.default_rng(1)
table = rng.standard_normal((50, 8)).astype(np.float32)
for half_life in (None, 3600.0):
    engine = WindowEngine(WindowSpec(window=864000, lag=0, bucket=86400), table,
                          half_life=half_life)
    counts = rng.integers(1, 9, 5)
    n = int(counts.sum())
    events = EventColumns(
        seg=np.r_[0, np.cumsum(counts)].astype(np.int64),
        items=rng.integers(0, 50, n).astype(np.uint32),
        ts=rng.uniform(0, 86400 * 3, n),
        weights=rng.uniform(0.5, 2.0, n).astype(np.float32),
        offsets=np.arange(n, dtype=np.int64),
    )
    heads = Heads.empty(5, 8, half_life is not None)
    engine.advance(heads, lambda requests: None, events, np.full(5, 86400 * 4.0))
rows = np.array([0, 1, 0], dtype=np.int32)
compensated.weighted_segment_sums(np.ones(3, np.float32), table[::2], rows, np.array([0, 2]))
compensated.segment_sums(np.ones((3, 4), np.float32), np.array([0, 1], np.int32))
print(warmed, [len(f.signatures) for f in kernels])
"""
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    warmed, after = done.stdout.strip().split("] [")
    assert warmed.strip("[") == after.strip("]"), done.stdout
    assert "0" not in warmed.strip("[").split(", "), done.stdout
