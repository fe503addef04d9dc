from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lte_core.errors import StateCodecError
from lte_core.head import (
    FLAG_DECAYED,
    FLAG_HAS_CLOCK,
    FORMAT_VERSION,
    HEAD_HEADER_BYTES,
    LO_BYTES,
    Heads,
    head_bytes,
    legacy_head_bytes,
    parse_heads,
    serialise_heads,
)
from lte_core.state import LaggedWindow, state_bytes
from lte_core.window import WindowSpec

SPEC = WindowSpec(window=30 * 86400, lag=7 * 86400, bucket=86400)


def _state(n: int, d: int = 4, seed: int = 0) -> tuple[LaggedWindow, np.ndarray]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((50, d)).astype(np.float32)
    state = LaggedWindow(SPEC, d)
    now = 1_700_000_000.0
    ts = now - rng.uniform(0, 40 * 86400, n)
    state.apply(
        rng.integers(0, 50, n),
        ts,
        rng.uniform(0.5, 2, n),
        vectors,
        now,
        offsets=np.arange(n),
        partition=3,
    )
    return state, vectors


@given(st.integers(0, 300), st.integers(1, 8), st.integers(0, 1000))
def test_round_trip_is_exact(n: int, d: int, seed: int) -> None:
    state, _ = _state(n, d, seed)
    data = state.to_bytes()
    again = LaggedWindow.from_bytes(data, SPEC, d)
    assert again.to_bytes() == data
    np.testing.assert_array_equal(again.sum, state.sum)
    assert again.weight_sum == state.weight_sum
    assert (again.count, again.pending, again.last_offset, again.source_partition) == (
        state.count,
        state.pending,
        state.last_offset,
        state.source_partition,
    )
    np.testing.assert_array_equal(again.window_items(), state.window_items())
    np.testing.assert_array_equal(again.window_buckets(), state.window_buckets())
    assert again.next_change() == state.next_change()


def test_size_formula_is_16_bytes_or_less_per_event() -> None:
    for n in (10, 100, 1000):  # weights in [0.5, 2): the sums have low parts
        state, _ = _state(n, d=64)
        assert not state.plain
        assert len(state.to_bytes()) == state_bytes(64, state.n_stored)
    empty, _ = _state(0, d=64)
    assert empty.plain and len(empty.to_bytes()) == state_bytes(
        64, 0, plain=True
    )  # exact in float64 alone: a format-1 head
    assert len(empty.to_bytes()) == legacy_head_bytes(64, decayed=False) < state_bytes(64, 0)
    assert state_bytes(64, 1000) - state_bytes(64, 0) == 12_000
    assert state_bytes(384, 0) == 80 + 16 * 384


def test_fresh_state_without_clock_round_trips() -> None:
    state = LaggedWindow(SPEC, 3)
    again = LaggedWindow.from_bytes(state.to_bytes(), SPEC, 3)
    assert not again.has_clock and again.is_empty and again.next_change() is None


def test_decode_errors_are_precise() -> None:
    state, _ = _state(5)
    data = state.to_bytes()
    with pytest.raises(StateCodecError, match="fresh --state-dir"):
        LaggedWindow.from_bytes(data[:10], SPEC, 4)
    with pytest.raises(StateCodecError, match="expected"):
        LaggedWindow.from_bytes(data[:-12], SPEC, 4)
    with pytest.raises(StateCodecError, match="another basis"):
        LaggedWindow.from_bytes(data, SPEC, 5)
    with pytest.raises(StateCodecError, match="version 9"):
        LaggedWindow.from_bytes(b"\x09" + data[1:], SPEC, 4)


def test_a_format_1_head_is_still_read_with_zero_low_parts() -> None:
    """State written before the double-double sums (format 1: ``64 + 8·d`` head) restores."""
    state, _ = _state(20, d=4)
    data = state.to_bytes()
    head = bytearray(data[:HEAD_HEADER_BYTES])
    head[0] = 1
    body = data[HEAD_HEADER_BYTES + LO_BYTES : HEAD_HEADER_BYTES + LO_BYTES + 8 * 4]
    legacy = bytes(head) + body + data[HEAD_HEADER_BYTES + LO_BYTES + 16 * 4 :]
    assert len(legacy) - 12 * state.n_stored == legacy_head_bytes(4, decayed=False)
    again = LaggedWindow.from_bytes(legacy, SPEC, 4)
    assert again.count == state.count and again.last_offset == state.last_offset
    np.testing.assert_array_equal(again.sum, np.frombuffer(body, "<f8"))
    heads = parse_heads(
        [legacy[: legacy_head_bytes(4, decayed=False)], None, data[: head_bytes(4, decayed=False)]],
        4,
        False,
    )
    assert heads.n[0] == heads.n[2] == state.n_stored and not heads.sums_lo[0].any()


def _low_parts(heads: Heads, i: int) -> list[float]:
    out = [float(heads.weight_lo[i]), float(heads.decayed_weight_lo[i]), *heads.sums_lo[i]]
    return out + ([] if heads.decayed_sums_lo is None else list(heads.decayed_sums_lo[i]))


def _reference_head(heads: Heads, i: int) -> bytes:
    """One head field by field with ``struct`` (the layout of lte_core.head): format 1 when
    every low part is zero, format 2 otherwise."""
    decayed = heads.decayed_sums is not None
    flags = (FLAG_HAS_CLOCK if heads.has_clock[i] else 0) | (FLAG_DECAYED if decayed else 0)
    d = heads.sums.shape[1]
    plain = not any(_low_parts(heads, i))
    out = struct.pack(
        "<BBHIIiqqqqdd",
        1 if plain else FORMAT_VERSION,
        flags,
        d,
        heads.count[i],
        heads.n[i],
        heads.partition[i],
        heads.end[i],
        heads.last_offset[i],
        heads.oldest[i],
        heads.pending_min[i],
        heads.weight_sum[i],
        heads.decayed_weight[i],
    )
    if plain:
        arrays = [heads.sums] + ([] if heads.decayed_sums is None else [heads.decayed_sums])
    else:
        out += struct.pack("<dd", heads.weight_lo[i], heads.decayed_weight_lo[i])
        arrays = [heads.sums, heads.sums_lo]
        if heads.decayed_sums is not None and heads.decayed_sums_lo is not None:
            arrays += [heads.decayed_sums, heads.decayed_sums_lo]
    for arr in arrays:
        out += struct.pack(f"<{d}d", *arr[i])
    return out


@given(st.integers(1, 40), st.integers(1, 400), st.booleans(), st.integers(0, 1000))
def test_serialised_heads_match_a_field_by_field_encoding(
    m: int, d: int, decayed: bool, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    heads = Heads.empty(m, d, decayed)
    for name in ("count", "n", "end", "last_offset", "oldest", "pending_min"):
        getattr(heads, name)[:] = rng.integers(0, 2**31, m)
    heads.partition[:] = rng.integers(-1, 64, m)
    heads.has_clock[:] = rng.random(m) < 0.5
    for name in ("weight_sum", "decayed_weight", "weight_lo", "decayed_weight_lo"):
        getattr(heads, name)[:] = rng.standard_normal(m)
    for arr in (heads.sums, heads.sums_lo, heads.decayed_sums, heads.decayed_sums_lo):
        if arr is not None:
            arr[...] = rng.standard_normal(arr.shape) * 10.0 ** rng.integers(-300, 300, arr.shape)
    # per row: random low parts, all zero (some -0.0: exact in float64 alone), or all zero
    # but one, anywhere: the encoder must look at every low part of every row
    mode = rng.integers(0, 3, m)
    lows = [a for a in (heads.weight_lo, heads.decayed_weight_lo) if a is not None]
    lows += [a for a in (heads.sums_lo, heads.decayed_sums_lo) if a is not None]
    for arr in lows:
        arr[mode > 0] = np.where(rng.random(arr[mode > 0].shape) < 0.5, 0.0, -0.0)
    for i in np.flatnonzero(mode == 2).tolist():
        arr = lows[rng.integers(0, len(lows))]
        if arr.ndim == 1:
            arr[i] = 2.0**-60
        else:
            arr[i, rng.integers(0, d)] = -(2.0**-60)
    rows = rng.permutation(m)[: rng.integers(0, m + 1)]
    data = serialise_heads(heads, rows)
    assert data == [_reference_head(heads, int(i)) for i in rows]
    for i, b in zip(rows.tolist(), data, strict=True):
        plain = not any(_low_parts(heads, i))
        assert type(b) is bytes
        assert len(b) == (legacy_head_bytes(d, decayed) if plain else head_bytes(d, decayed))
    again = parse_heads(data, d, decayed)
    assert [_reference_head(again, i) for i in range(len(rows))] == data
    for name in ("sums", "sums_lo", "weight_sum", "weight_lo", "decayed_sums_lo"):
        mine, theirs = getattr(again, name), getattr(heads, name)
        if mine is not None:
            np.testing.assert_array_equal(mine, theirs[rows])
