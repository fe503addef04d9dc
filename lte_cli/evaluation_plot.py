"""The evaluation chart: one panel per metric, a group of bars per method, one bar per lag."""

from __future__ import annotations

from pathlib import Path

from lte_core.duration import format_duration
from offline.evaluation import EvaluationReport


def save_plot(report: EvaluationReport, path: Path) -> Path:
    import matplotlib  # noqa: PLC0415 - only the evaluate command draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    setup = report.setup
    metrics = [f"{m}@{k}" for m in ("recall", "ndcg") for k in setup.ks]
    methods = list(dict.fromkeys(r.method for r in report.rows))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 4.2), squeeze=False)
    width = 0.8 / len(setup.lags)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for j, lag in enumerate(setup.lags):
            heights = []
            for method in methods:
                row = next(
                    (r for r in report.rows if r.method == method and r.lag in (lag, None)), None
                )
                heights.append(row.metrics[metric] if row else 0.0)
            offsets = [i - 0.4 + width * (j + 0.5) for i in range(len(methods))]
            ax.bar(offsets, heights, width, label=f"lag {format_duration(lag)}")
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(
            [m if len(m) < 14 else m[:13] + "…" for m in methods],
            rotation=40,
            ha="right",
            fontsize=8,
        )
        ax.set_title(metric)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(
        f"Next items in {format_duration(setup.horizon)} after T, {report.cases} cases "
        f"({report.users} users); window {format_duration(setup.window)}",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
