"""``lte demo`` end to end on a small synthetic stream, replayed in compressed time by real
processes (broker, worker, refresher): the clock ran at ``--speed``, every stored LTE equals
the brute-force oracle at the final clock, users silent longer than window + lag end with
``n_events: 0``, the printed summary has only defined figures, and every panel of the report
has data."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from click.testing import CliRunner
from matplotlib.axes import Axes

from lte_cli.demo_report import ReportData, build_figure
from lte_cli.main import cli
from lte_core.basis import BasisArtifact
from lte_core.window import WindowSpec
from offline.datasets import InteractionLog
from offline.synthetic import SyntheticSpec, SyntheticStream
from serving.online_store import StoreKey
from serving.store_url import RocksDBLocation
from tests.integration.oracle_check import assert_updates_match, window_means
from tests.integration.store_backends import sync_store

EVENTS, USERS, DAYS = 4_000, 300, 30.0
SPEC = WindowSpec.parse("5d", "1d", "1d")
REPLAY_SECONDS = 8.0
SPEED = DAYS * 86400 / REPLAY_SECONDS


def _log() -> InteractionLog:
    """The stream the demo replays, regenerated here from the generator's spec."""
    chunks = list(
        SyntheticStream(
            SyntheticSpec(users=USERS, events=EVENTS, days=DAYS, start=1_700_000_000.0)
        ).chunks()
    )
    return InteractionLog(
        np.concatenate([c.user_ids for c in chunks]),
        np.concatenate([c.item_ids for c in chunks]),
        np.concatenate([c.ts for c in chunks]),
        np.concatenate([c.weights for c in chunks]),
    )


def _has_data(ax: Axes) -> bool:
    lines = any(
        np.isfinite(np.asarray(line.get_ydata(), dtype=float)).sum() >= 2 for line in ax.get_lines()
    )
    points = any(len(c.get_offsets()) > 10 for c in ax.collections)  # type: ignore[arg-type]
    return lines or points


def test_demo_replays_in_compressed_time(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "demo",
            "--synthetic",
            *("--events", str(EVENTS), "--users", str(USERS), "--days", str(DAYS)),
            *("--window", "5d", "--lag", "1d", "--speed", str(SPEED), "--out", str(tmp_path)),
        ],
    )
    output = result.output
    assert result.exit_code == 0, output
    (run_dir,) = tmp_path.iterdir()

    # The clock ran at --speed: the demo's samples, ratio of simulated to real time.
    log = _log()
    data = ReportData.from_json((run_dir / "report.json").read_bytes())
    moving = [
        (a, b)
        for a, b in zip(data.samples, data.samples[1:], strict=False)
        # not holding at either end, and the worker has seen a batch
        if b.clock > a.clock and b.clock < data.samples[-1].clock and a.worker_clock > 0
    ]
    assert len(moving) >= 10
    first, last = moving[0][0], moving[-1][1]
    ratio = (last.clock - first.clock) / ((last.wall - first.wall) * SPEED)
    assert ratio == pytest.approx(1.0, rel=0.05)
    # ... and so did the worker's, in another process: the clock of its batches and sweeps
    ratio = (last.worker_clock - first.worker_clock) / ((last.wall - first.wall) * SPEED)
    assert ratio == pytest.approx(1.0, rel=0.1)
    for clock in ("clock", "worker_clock"):
        seen = [getattr(s, clock) for s in data.samples]
        assert seen == sorted(seen), f"{clock} went backwards"
    assert data.samples[-1].worker_clock == pytest.approx(float(log.ts.max()) + 1.0)

    # Every stored LTE equals the oracle at the final clock; silent users are emptied.
    end = float(log.ts.max()) + 1.0
    basis = BasisArtifact.load(run_dir / "basis")
    users = sorted(set(log.user_ids.tolist()))
    with sync_store(RocksDBLocation(run_dir / "store"), writer=False) as store:
        entries = store.get_many([StoreKey(basis.basis_version, "mean", u) for u in users])
    latest = {u: e.update.to_dict() for u, e in zip(users, entries, strict=True) if e is not None}
    assert_updates_match(latest, window_means(log, basis, SPEC, end))
    last_seen = dict(zip(log.user_ids.tolist(), log.ts.tolist(), strict=True))  # time order
    silent = [u for u, t in last_seen.items() if t < end - SPEC.window - SPEC.lag - SPEC.bucket]
    assert len(silent) >= 5, "the stream should have users silent for longer than the window"
    assert {latest[u]["n_events"] for u in silent} == {0}
    assert all(latest[u]["vector"] is None for u in silent)

    # What a newcomer reads: defined figures only, and "expired" rather than "late".
    assert "nan" not in output.lower().split()
    assert "expired" in output and " late " not in output
    assert "all " in output and "from-scratch recomputation" in output
    assert "what sets this LTE apart" in output and "aged out" in output
    assert "/metrics" in output

    # The report: the PNG exists and every panel of its figure has data.
    png = (run_dir / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 50_000
    fig = build_figure(data)
    try:
        panels = fig.axes[:6]
        assert [p.get_title() != "" for p in panels] == [True] * 6
        empty = [p.get_title() for p in panels if not _has_data(p)]
        assert empty == []
        assert data.track is not None and len(data.track.as_of) >= 5
        assert math.isclose(data.track.cosine[-1], 1.0, abs_tol=1e-6)
        assert len(data.lte_map.x) == sum(1 for d in latest.values() if d["vector"] is not None)
    finally:
        plt.close(fig)
