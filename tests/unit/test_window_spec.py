from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lte_core.duration import format_duration, parse_duration
from lte_core.errors import ConfigError
from lte_core.window import WindowSpec


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("1h", 3600),
        ("28d", 28 * 86400),
        ("2w", 14 * 86400),
        ("0", 0),
        ("7", 7),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1y", "-1d", "1.5h", "d", "1 day", "1h30m"])
def test_parse_duration_rejects_and_names_the_field(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^--lag: "):
        parse_duration(text, field="--lag")


@given(st.integers(0, 10**9))
def test_format_duration_round_trips(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    ("window", "lag", "bucket", "message"),
    [
        ("10d", "0", "3d", "whole number of buckets"),
        ("1h", "0", "1d", "at least one bucket"),
        ("1d", "0", "0s", "at least 1s"),
    ],
)
def test_spec_validation(window: str, lag: str, bucket: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        WindowSpec.parse(window, lag, bucket)


bucket_sizes = st.sampled_from([1, 7, 60, 3600, 86400])
times = st.one_of(
    st.floats(-1e10, 1e10, allow_nan=False),
    st.integers(-(10**6), 10**6).map(lambda k: k * 86400.0),
    st.integers(-(10**6), 10**6).map(lambda k: np.nextafter(k * 3600.0, -np.inf)),
)


@given(bucket_sizes, times)
def test_bucket_of_is_the_exact_floor(bucket: int, ts: float) -> None:
    spec = WindowSpec(window=bucket, lag=0, bucket=bucket)
    exact = int(Fraction(ts) // bucket)
    assert spec.bucket_of(ts) == exact
    assert spec.bucket_of_array(np.array([ts]))[0] == exact


@given(bucket_sizes, st.integers(0, 5), st.integers(0, 10**5), st.floats(0, 1e9))
def test_enter_and_leave_times_are_the_edges(bucket: int, n: int, lag: int, ts: float) -> None:
    spec = WindowSpec(window=(n + 1) * bucket, lag=lag, bucket=bucket)
    b = spec.bucket_of(ts)
    enter, leave = spec.enter_time(b), spec.leave_time(b)
    assert spec.start_bucket(enter) <= b < spec.end_bucket(enter)
    assert not b < spec.end_bucket(enter - 1e-3 if enter < 1e8 else enter - 1)
    assert spec.start_bucket(leave) > b
    assert spec.start_bucket(leave - 1) <= b


@given(bucket_sizes, st.integers(0, 10**5), st.floats(-1e9, 1e9))
def test_edge_at_or_after(bucket: int, lag: int, now: float) -> None:
    spec = WindowSpec(window=bucket, lag=lag, bucket=bucket)
    edge = spec.edge_at_or_after(now)
    assert edge >= now
    assert (edge - lag) % bucket == 0
    assert edge - bucket < now
