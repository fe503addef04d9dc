"""The worker's clock: the simulated mode runs at its speed, never backwards, holds before
its anchor and after its end, agrees across processes, and converts due times to wall
instants; the flags that build it."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from lte_cli.main import cli
from lte_core.encoders import EncoderSpec
from lte_core.errors import ConfigError
from lte_core.window import WindowSpec
from lte_runtime.kafka.settings import KafkaSettings
from streams.clock import Clock, SimulatedTime
from streams.settings import WorkerSettings

START = 874_724_710.0  # MovieLens 100K's first event
ANCHOR = 1_800_000_000.0


class ScriptedWall:
    """A wall clock that reads the next of ``readings`` each time (then the last one)."""

    def __init__(self, readings: list[float]) -> None:
        self.readings = readings
        self.calls = 0

    def __call__(self) -> float:
        value = self.readings[min(self.calls, len(self.readings) - 1)]
        self.calls += 1
        return value


@given(
    st.floats(0.5, 1e6),
    st.lists(st.floats(-5.0, 100.0), min_size=2, max_size=40),
)
def test_simulated_clock_is_monotonic_and_runs_at_its_speed(
    speed: float, offsets: list[float]
) -> None:
    """Whatever the wall clock does (NTP steps back included), the clock never goes back;
    wherever the wall clock moves forward past the anchor, it moves ``speed`` times as far."""
    sim = SimulatedTime(start=START, speed=speed, anchor=ANCHOR)
    wall = ScriptedWall([ANCHOR + o for o in offsets])
    clock = Clock(None, sim, wall=wall)
    readings = [clock.now() for _ in offsets]
    assert all(b >= a for a, b in itertools.pairwise(readings))
    high = -1.0
    for offset, got in zip(offsets, readings, strict=True):
        expected = START + speed * max(0.0, offset)
        high = max(high, expected)
        # a float wall time near 1.8e9 s is exact to ~2.4e-7 s, times the speed
        assert got == pytest.approx(high, abs=speed * 1e-6)
    forward = [(a, b) for a, b in itertools.pairwise(offsets) if b > a >= 0 and b - a > 0.01]
    for a, b in forward:
        ratio = (sim.at(ANCHOR + b) - sim.at(ANCHOR + a)) / ((b - a) * speed)
        assert ratio == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize("speed", [1.0, 1_000.0, 310_000.0])
def test_simulated_clock_follows_real_time_at_its_speed(speed: float) -> None:
    """Against the monotonic clock as an independent reference: over ~50 ms of real time,
    simulated time advances ``speed`` times as much (ratio within 5%)."""
    clock = Clock.create(None, SimulatedTime(start=START, speed=speed, anchor=time.time()))
    m0, c0 = time.monotonic(), clock.now()
    deadline = m0 + 5.0
    while time.monotonic() - m0 < 0.05:  # let real time pass: a condition, not a sleep
        assert time.monotonic() < deadline
    c1, m1 = clock.now(), time.monotonic()
    assert (c1 - c0) / ((m1 - m0) * speed) == pytest.approx(1.0, rel=0.05)


def test_simulated_clock_holds_before_the_anchor_and_at_the_end() -> None:
    sim = SimulatedTime(start=START, speed=1000.0, anchor=ANCHOR, end=START + 5000.0)
    assert sim.at(ANCHOR - 100.0) == START
    assert sim.at(ANCHOR + 2.0) == START + 2000.0
    assert sim.at(ANCHOR + 5.0) == START + 5000.0
    assert sim.at(ANCHOR + 1e6) == START + 5000.0


def test_processes_started_at_different_moments_agree() -> None:
    """Only the wall clock and the shared numbers matter, not when a process started."""
    sim = SimulatedTime(start=START, speed=310_000.0, anchor=ANCHOR)
    wall = ANCHOR + 12.345
    early = Clock(None, sim, started_at=ANCHOR - 30.0, wall=lambda: wall)
    late = Clock(None, sim, started_at=ANCHOR + 10.0, wall=lambda: wall)
    assert early.now() == late.now()
    assert early.now() == pytest.approx(START + 310_000.0 * 12.345, abs=0.1)


@given(st.floats(0.0, 200 * 86400.0), st.floats(0.5, 1e6))
def test_reached_at_is_the_wall_instant_the_clock_showed_t(offset: float, speed: float) -> None:
    """Due times are carried as wall instants: where a simulated time ``t`` was reached,
    the clock read ``t`` (so staleness = write - due is real time)."""
    sim = SimulatedTime(start=START, speed=speed, anchor=ANCHOR)
    t = START + offset
    wall = float(Clock(None, sim).reached_at(np.array([t]))[0])
    assert wall == pytest.approx(ANCHOR + offset / speed, abs=1e-6)
    assert sim.at(wall) == pytest.approx(t, abs=speed * 1e-6)


def test_reached_at_for_the_wall_and_the_frozen_clock() -> None:
    t = np.array([1.0e9, 1.5e9])
    assert Clock(None).reached_at(t).tolist() == t.tolist()
    frozen = Clock(2.0e9, started_at=1234.5)
    assert frozen.now() == 2.0e9
    assert frozen.reached_at(t).tolist() == [1234.5, 1234.5]


@pytest.mark.parametrize(
    ("fields", "flag"),
    [
        ({"speed": 0.0}, "--clock-speed"),
        ({"speed": float("nan")}, "--clock-speed"),
        ({"end": START - 1}, "--clock-end"),
        ({"anchor": float("inf")}, "--clock-anchor"),
    ],
)
def test_bad_simulated_time_names_the_flag(fields: dict[str, float], flag: str) -> None:
    args = {"start": START, "speed": 2.0, "anchor": ANCHOR, **fields}
    with pytest.raises(ConfigError, match=flag):
        SimulatedTime(**args)


def test_settings_refuse_two_clocks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--now"):
        WorkerSettings(
            kafka=KafkaSettings(bootstrap="127.0.0.1:9"),
            basis_dir=tmp_path,
            window=WindowSpec(86400, 0, 86400),
            encoder=EncoderSpec.parse("mean"),
            state_dir=tmp_path,
            now=START,
            simulated=SimulatedTime(start=START, speed=2.0, anchor=ANCHOR),
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--clock-speed", "10"], "--clock-speed: needs --clock-start"),
        (["--clock-anchor", "1"], "--clock-anchor: needs --clock-start"),
        (["--clock-start", "1", "--clock-speed", "-3"], "--clock-speed: must be a positive"),
        (["--clock-start", "1", "--now", "5"], "--now: cannot be combined with --clock-start"),
    ],
)
def test_worker_clock_flags_fail_with_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(
        cli, ["worker", "--basis", str(tmp_path), "--state-dir", str(tmp_path / "s"), *args]
    )
    assert result.exit_code == 1, result.output
    assert message in result.output
