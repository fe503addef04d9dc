"""The experiment's table: mean ± sd over seeds per variant, and paired user-bootstrap
intervals of each variant against ``none`` and against ``prefix_lagged``.

For the intervals a user's test NDCG is first averaged over the seeds (the seeds are the
model's noise, the users the data's), then :func:`offline.evaluation.user_bootstrap` gives
the relative difference of the sums and its 95% interval, resampling users.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from offline.evaluation import Comparison, user_bootstrap
from offline.experiment.runner import RunResult

METRICS = ("ndcg@10", "ndcg@100", "ndcg@500", "recall@10", "recall@100")
CI_METRICS = ("ndcg@10", "ndcg@500")
REFERENCES = ("none", "prefix_lagged")
DIAGNOSTICS = (
    "attention_ratio",
    "prefix_attention",
    "tokens_attended",
    "tokens_processed",
    "inference_ms_per_1000_users",
)
#: The LTE paper's offline figures, quoted beside ours (relative to its no-LTE baseline).
PAPER = {
    "prefix_lagged": "+1.31% NDCG@500; attention ratio 2.62 (none: 2.83)",
    "late_fusion": "degrades",
    "feature_injection": "degrades",
    "prefix_recency": "below uniform in every integration",
    "prefix_ae": "+2.1% rel. NDCG@500 over uniform",
}


@dataclass(frozen=True, slots=True)
class Summary:
    protocol: str
    variant: str
    seeds: int
    mean: dict[str, float]
    sd: dict[str, float]
    #: (reference, metric) -> comparison
    versus: dict[tuple[str, str], Comparison]


def summarise(results: Sequence[RunResult], rounds: int = 1000, seed: int = 0) -> list[Summary]:
    out = []
    by_key: dict[tuple[str, str], list[RunResult]] = {}
    for r in results:
        by_key.setdefault((r.protocol, r.variant), []).append(r)
    for (protocol, variant), runs in by_key.items():
        rows = [r.row() for r in runs]
        names = (*METRICS, *DIAGNOSTICS, "epochs", "train_seconds")
        values = {n: np.array([float(row[n]) for row in rows]) for n in names}
        versus = {}
        for ref in REFERENCES:
            other = by_key.get((protocol, ref))
            if other is None or ref == variant:
                continue
            for metric in CI_METRICS:
                users, mine = _per_user(runs, metric)
                ref_users, theirs = _per_user(other, metric)
                if not np.array_equal(users, ref_users) or theirs.sum() <= 0:
                    continue
                versus[(ref, metric)] = user_bootstrap(users, mine, theirs, rounds, seed)
        out.append(
            Summary(
                protocol,
                variant,
                len(runs),
                {n: float(v.mean()) for n, v in values.items()},
                {n: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for n, v in values.items()},
                versus,
            )
        )
    return out


def _per_user(
    runs: Sequence[RunResult], metric: str
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    users = runs[0].users
    return users, np.mean([r.per_case[metric] for r in runs], axis=0)


def to_json(results: Sequence[RunResult], summaries: Sequence[Summary]) -> dict[str, Any]:
    return {
        "rows": [r.row() for r in results],
        "summary": [
            {
                "protocol": s.protocol,
                "variant": s.variant,
                "seeds": s.seeds,
                "mean": s.mean,
                "sd": s.sd,
                "versus": {
                    f"{ref}/{metric}": {"relative": c.relative, "low": c.low, "high": c.high}
                    for (ref, metric), c in s.versus.items()
                },
            }
            for s in summaries
        ],
        "paper": PAPER,
    }


def markdown(summaries: Sequence[Summary], notes: Sequence[str] = ()) -> str:
    lines: list[str] = []
    for protocol in dict.fromkeys(s.protocol for s in summaries):
        rows = [s for s in summaries if s.protocol == protocol]
        lines += [f"## {protocol}", ""]
        head = ["variant", "seeds", *METRICS]
        lines += [_row(head), _row(["---"] * len(head))]
        lines += [
            _row([s.variant, str(s.seeds), *(f"{s.mean[m]:.4f} ± {s.sd[m]:.4f}" for m in METRICS)])
            for s in rows
        ]
        lines += ["", "Relative difference, 95% paired user-bootstrap interval:", ""]
        head = ["variant", *(f"{m} vs {ref}" for ref in REFERENCES for m in CI_METRICS), "paper"]
        lines += [_row(head), _row(["---"] * len(head))]
        for s in rows:
            cells = [
                str(s.versus[(ref, m)]) if (ref, m) in s.versus else ""
                for ref in REFERENCES
                for m in CI_METRICS
            ]
            lines.append(_row([s.variant, *cells, PAPER.get(s.variant, "")]))
        lines += ["", "Attention (last block, final query) and cost per prediction:", ""]
        head = [
            "variant",
            "last-item ratio",
            "prefix/token mass",
            "tokens attended",
            "tokens processed",
            "ms / 1000 users",
            "epochs",
        ]
        lines += [_row(head), _row(["---"] * len(head))]
        lines += [
            _row(
                [
                    s.variant,
                    f"{s.mean['attention_ratio']:.2f} ± {s.sd['attention_ratio']:.2f}",
                    f"{s.mean['prefix_attention']:.3f}",
                    f"{s.mean['tokens_attended']:.1f}",
                    f"{s.mean['tokens_processed']:.1f}",
                    f"{s.mean['inference_ms_per_1000_users']:.0f}",
                    f"{s.mean['epochs']:.1f}",
                ]
            )
            for s in rows
        ]
        lines.append("")
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
