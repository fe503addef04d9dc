"""The experiment chart: NDCG@10 and NDCG@500 per variant (mean over seeds, ±sd), and the
last-item attention ratio per variant, one row of panels per protocol."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from offline.experiment.report import Summary


def save_plot(summaries: Sequence[Summary], path: Path) -> Path:
    import matplotlib  # noqa: PLC0415 - only the experiment command draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    protocols = list(dict.fromkeys(s.protocol for s in summaries))
    panels = ("ndcg@10", "ndcg@500", "attention_ratio")
    fig, axes = plt.subplots(
        len(protocols), len(panels), figsize=(4.5 * len(panels), 4 * len(protocols)), squeeze=False
    )
    for row, protocol in zip(axes, protocols, strict=True):
        rows = [s for s in summaries if s.protocol == protocol]
        names = [s.variant for s in rows]
        for ax, metric in zip(row, panels, strict=True):
            ax.bar(
                range(len(rows)),
                [s.mean[metric] for s in rows],
                yerr=[s.sd[metric] for s in rows],
                capsize=3,
                color=["tab:gray" if n.startswith("none") else "tab:blue" for n in names],
            )
            ax.set_xticks(range(len(rows)))
            ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
            ax.set_title(f"{protocol}: {metric}", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
