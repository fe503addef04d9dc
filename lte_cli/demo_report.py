"""The demo's report: one figure, six panels, from data the demo also saves as JSON.

Panels (x axis: the simulated date; in ``--backlog`` mode, whose clock is frozen, seconds
since the start): events and LTE updates per simulated day; staleness p50/p99 over time in
real milliseconds; the window state (users, events) as it fills and slides; a 2-D PCA map
of the stored LTEs coloured by each user's dominant genre (cluster on the synthetic stream);
one user's LTE over time as the window slides (cosine to their final LTE, with the items
closest to what sets it apart at a few points); drift per update over time.

Quantiles over time come from the refresher's histograms scraped during the run (the
Prometheus ``histogram_quantile`` interpolation within a bucket), per interval.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
import orjson
from matplotlib.figure import Figure

from lte_runtime.metrics_scrape import quantile

DAY = 86400.0
#: intervals of the quantile-over-time panels (enough observations in each for a quantile)
INTERVALS = 24
#: the Unix epoch in matplotlib's date numbers (days)
EPOCH = float(mdates.date2num(datetime(1970, 1, 1, tzinfo=UTC)))  # type: ignore[no-untyped-call]
Cumulative = list[tuple[float, float]]


@dataclass(frozen=True, slots=True)
class Sample:
    """One scrape of the worker and the refresher during the run (counters cumulative)."""

    wall: float  # seconds since the replay started
    clock: float  # the window clock (simulated Unix time) as the demo reads it
    worker_clock: float  # the clock of the latest batch or sweep, from the worker's metrics
    records: float  # input records the worker has judged (every outcome)
    written: float  # updates the refresher wrote to the store
    state_users: float
    state_events: float
    staleness: Cumulative
    drift: Cumulative


@dataclass(frozen=True, slots=True)
class UserTrack:
    """One user's stored LTE each time it changed: ``as_of``, cosine to the final LTE (and
    between the deviations from the population mean LTE, which move much more), events in the
    window; ``notes`` are (as_of, deviation cosine, what set the LTE apart then)."""

    user: str
    as_of: list[float]
    cosine: list[float]
    deviation_cosine: list[float]
    n_events: list[int]
    notes: list[tuple[float, float, str]]


@dataclass(frozen=True, slots=True)
class LTEMap:
    """2-D PCA coordinates of the stored vectors and each user's group."""

    x: list[float]
    y: list[float]
    group: list[str]
    explained: tuple[float, float]
    group_label: str


@dataclass(frozen=True)
class ReportData:
    simulated: bool
    samples: list[Sample]
    lte_map: LTEMap
    track: UserTrack | None
    title: str = ""
    notes: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_SERIALIZE_NUMPY)

    @classmethod
    def from_json(cls, raw: bytes) -> ReportData:
        doc: dict[str, Any] = orjson.loads(raw)
        track = doc["track"]
        return cls(
            simulated=doc["simulated"],
            samples=[
                Sample(
                    **{
                        **s,
                        "staleness": [tuple(b) for b in s["staleness"]],
                        "drift": [tuple(b) for b in s["drift"]],
                    }
                )
                for s in doc["samples"]
            ],
            lte_map=LTEMap(**{**doc["lte_map"], "explained": tuple(doc["lte_map"]["explained"])}),
            track=None
            if track is None
            else UserTrack(**{**track, "notes": [tuple(n) for n in track["notes"]]}),
            title=doc["title"],
            notes=doc["notes"],
        )


def pca_2d(
    vectors: npt.NDArray[np.floating],
) -> tuple[npt.NDArray[np.float64], tuple[float, float]]:
    """The vectors on their first two principal components, and the share of variance each
    explains."""
    x = np.asarray(vectors, dtype=np.float64)
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    total = float((s**2).sum()) or 1.0
    k = min(2, vt.shape[0])
    coords = np.zeros((len(x), 2))
    coords[:, :k] = centred @ vt[:k].T
    shares = [(float(v) ** 2) / total for v in s[:2]] + [0.0, 0.0]
    return coords, (shares[0], shares[1])


def interval_quantiles(
    xs: list[float], hists: list[Cumulative], edges: npt.NDArray[np.float64]
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Per interval between consecutive ``edges`` (on the ``xs`` axis): the middle, the
    number of observations, p50 and p99 of the histogram's growth in that interval; intervals
    with no observation are left out."""
    mids: list[float] = []
    counts: list[float] = []
    p50: list[float] = []
    p99: list[float] = []
    idx = np.searchsorted(np.asarray(xs), edges, side="right") - 1
    for lo, hi, a, b in zip(edges[:-1], edges[1:], idx[:-1], idx[1:], strict=True):
        if b <= a or a < 0 or not hists[b]:
            continue
        before = dict(hists[a])
        delta = [(le, c - before.get(le, 0.0)) for le, c in hists[b]]
        n = delta[-1][1]
        if n <= 0:
            continue
        mids.append(float(lo + hi) / 2)
        counts.append(n)
        p50.append(quantile(delta, 0.5))
        p99.append(quantile(delta, 0.99))
    return mids, counts, p50, p99


def _axis(ax: Any, simulated: bool) -> None:
    if simulated:
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))  # type: ignore[no-untyped-call]
        for label in ax.get_xticklabels():
            label.set_rotation(30)
            label.set_ha("right")
        ax.set_xlabel("simulated date (UTC)")
    else:
        ax.set_xlabel("seconds since start (frozen clock)")
    ax.grid(alpha=0.3)


def _legend(ax: Any, twin: Any, loc: str = "upper left") -> None:
    lines = ax.get_lines() + twin.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], fontsize=8, loc=loc)


def _x(data: ReportData, values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Clock times as matplotlib dates (simulated) or wall seconds (backlog)."""
    arr = np.asarray(values, dtype=np.float64)
    if not data.simulated:
        return arr
    out: npt.NDArray[np.float64] = arr / DAY + EPOCH
    return out


def _per_day(data: ReportData, ax: Any) -> None:
    s = data.samples
    if data.simulated:
        clock = np.array([x.clock for x in s])
        edges = np.arange(math.floor(clock[0] / DAY), math.ceil(clock[-1] / DAY) + 1) * DAY
        unit = "per simulated day"
    else:
        clock = np.array([x.wall for x in s])
        edges = np.arange(0.0, math.ceil(clock[-1]) + 1.0)
        unit = "per second"
    twin = ax.twinx()
    for axis, name, values, colour in (
        (ax, "events", [x.records for x in s], "#4c72b0"),
        (twin, "LTE updates stored (right)", [x.written for x in s], "#dd8452"),
    ):
        cumulative = np.interp(edges, clock, np.asarray(values, dtype=np.float64))
        axis.step(_x(data, edges[:-1]), np.diff(cumulative), where="post", label=name, color=colour)
        axis.set_ylim(bottom=0)
    ax.set_ylabel("events")
    twin.set_ylabel("LTE updates")
    ax.set_title(f"events and LTE updates {unit}")
    _legend(ax, twin)
    _axis(ax, data.simulated)


def _quantiles_over_time(
    data: ReportData, ax: Any, hists: list[Cumulative], scale: float, what: str, unit: str
) -> None:
    s = data.samples
    xs = [x.clock if data.simulated else x.wall for x in s]
    hi = xs[-1] if xs[-1] > xs[0] else xs[0] + 1.0
    edges = np.linspace(xs[0], hi, INTERVALS + 1)
    mids, _, p50, p99 = interval_quantiles(xs, hists, edges)
    if not mids:
        ax.text(0.5, 0.5, "nothing observed", ha="center", transform=ax.transAxes)
    ax.plot(_x(data, mids), np.asarray(p50) * scale, "o-", ms=3, label="p50")
    ax.plot(_x(data, mids), np.asarray(p99) * scale, "o-", ms=3, label="p99")
    ax.set_yscale("log")
    ax.set_ylabel(unit)
    ax.set_title(what)
    ax.legend(fontsize=8)
    _axis(ax, data.simulated)


def _state(data: ReportData, ax: Any) -> None:
    s = data.samples
    x = _x(data, [v.clock if data.simulated else v.wall for v in s])
    ax.plot(x, [v.state_events for v in s], color="#4c72b0", label="events in windows")
    ax.set_ylabel("events held (in or behind the lag)")
    twin = ax.twinx()
    twin.plot(x, [v.state_users for v in s], color="#55a868", label="users with state")
    twin.set_ylabel("users with state")
    _legend(ax, twin)
    ax.set_title("window state: fills, then slides (events expire)")
    _axis(ax, data.simulated)


def _map(data: ReportData, ax: Any) -> None:
    m = data.lte_map
    groups = np.asarray(m.group)
    names, counts = np.unique(groups, return_counts=True)
    order = names[np.argsort(-counts)]
    palette = plt.get_cmap("tab10")
    shown = list(order[:9])
    for k, name in enumerate([*shown, "other"]):
        mask = np.isin(groups, shown, invert=True) if name == "other" else groups == name
        if mask.any():
            ax.scatter(
                np.asarray(m.x)[mask],
                np.asarray(m.y)[mask],
                s=8,
                alpha=0.7,
                color=palette(k) if name != "other" else "#bbbbbb",
                label=f"{name} ({int(mask.sum())})",
            )
    ax.set_xlabel(f"PC1 ({m.explained[0]:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({m.explained[1]:.0%})")
    ax.set_title(f"stored LTEs ({len(m.x):,} users), by dominant {m.group_label} in the window")
    ax.legend(fontsize=7, markerscale=1.5, loc="best")
    ax.grid(alpha=0.3)


def _track(data: ReportData, ax: Any) -> None:
    t = data.track
    if t is None:
        ax.set_title("no user had an LTE to follow")
        return
    # A frozen clock never slides the window: the versions are then numbered instead.
    x = _x(data, t.as_of) if data.simulated else np.arange(len(t.as_of), dtype=np.float64)
    ax.plot(x, t.cosine, ".-", ms=3, color="#8172b2", label="cosine to the final LTE")
    ax.plot(
        x,
        t.deviation_cosine,
        ".-",
        ms=3,
        color="#c44e52",
        label="same, of the deviations from the mean LTE",
    )
    ax.set_ylabel("cosine to the final")
    twin = ax.twinx()
    twin.step(x, t.n_events, where="post", color="#bbbbbb", label="events in the window (right)")
    twin.set_ylabel("events in the window")
    _legend(ax, twin, loc="lower left")
    for k, (when, cos, text) in enumerate(t.notes):
        right = k >= len(t.notes) / 2
        ax.annotate(
            text,
            (x[t.as_of.index(when)], cos),
            textcoords="offset points",
            xytext=(-4 if right else 4, -16),
            ha="right" if right else "left",
            va="top",
            fontsize=6.5,
            arrowprops={"arrowstyle": "-", "color": "#888888", "lw": 0.5},
            bbox={"fc": "white", "alpha": 0.85, "lw": 0},
            zorder=10,
        )
    ax.set_title(f"user {t.user}: LTE as the window slides")
    _axis(ax, data.simulated)
    if not data.simulated:
        ax.set_xlabel("version of the stored LTE (frozen clock)")


def build_figure(data: ReportData) -> Figure:
    fig, axes = plt.subplots(2, 3, figsize=(19, 10.5))
    _per_day(data, axes[0][0])
    _quantiles_over_time(
        data,
        axes[0][1],
        [s.staleness for s in data.samples],
        1000.0,
        "staleness (store write - due), real time",
        "milliseconds",
    )
    _state(data, axes[0][2])
    _map(data, axes[1][0])
    _track(data, axes[1][1])
    _quantiles_over_time(
        data,
        axes[1][2],
        [s.drift for s in data.samples],
        1.0,
        "drift per update (1 - cos(previous, new))",
        "1 - cosine",
    )
    if data.title:
        fig.suptitle(data.title, fontsize=11)
    fig.tight_layout()
    return fig


def write_report(directory: Path, data: ReportData) -> Path:
    """``report.png`` and ``report.json`` (the figure's data) in ``directory``."""
    (directory / "report.json").write_bytes(data.to_json())
    fig = build_figure(data)
    path = directory / "report.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
