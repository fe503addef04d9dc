"""The demo's PNG report: throughput over time, staleness and drift distributions."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from lte_runtime.metrics_scrape import per_bucket


def _bucket_bars(ax: object, cumulative: list[tuple[float, float]], unit: str, title: str) -> None:
    counts = per_bucket(cumulative)
    labels = [
        ("≤" + (f"{b * 1000:g}ms" if unit == "s" and b < 1 else f"{b:g}"))
        if not math.isinf(b)
        else "more"
        for b in counts
    ]
    ax.bar(range(len(counts)), list(counts.values()), color="#4c72b0")  # type: ignore[attr-defined]
    ax.set_xticks(range(len(counts)), labels, rotation=45, ha="right", fontsize=8)  # type: ignore[attr-defined]
    ax.set_title(title)  # type: ignore[attr-defined]
    ax.set_ylabel("updates")  # type: ignore[attr-defined]


def write_report(
    path: Path,
    samples: list[tuple[float, float, float]],
    staleness: list[tuple[float, float]],
    drift: list[tuple[float, float]],
) -> Path:
    """``samples`` are (seconds since start, events applied, LTEs stored)."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    if len(samples) > 1:
        t = np.array([s[0] for s in samples])
        applied = np.array([s[1] for s in samples])
        stored = np.array([s[2] for s in samples])
        dt = np.maximum(np.diff(t), 1e-6)
        axes[0].plot(t[1:], np.diff(applied) / dt, label="events applied/s")
        axes[0].plot(t[1:], np.diff(stored) / dt, label="LTEs stored/s")
        axes[0].legend()
    axes[0].set_title("throughput")
    axes[0].set_xlabel("seconds since start")
    _bucket_bars(axes[1], staleness, "s", "staleness (store write - due)")
    _bucket_bars(axes[2], drift, "", "drift per update (1 - cos)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
