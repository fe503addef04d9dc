"""Reading a process's ``/metrics`` from another process (the demo, benchmarks)."""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, timeout: float = 2.0) -> Samples:
    """Every sample at ``url`` (empty when the process does not answer)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - local URL
            text = resp.read().decode()
    except (OSError, urllib.error.URLError):
        return {}
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= lab)


def buckets(samples: Samples, histogram: str) -> list[tuple[float, float]]:
    """Cumulative ``(le, count)`` of a histogram, summed over its other labels."""
    acc: dict[float, float] = {}
    for (name, labels), value in samples.items():
        if name != f"{histogram}_bucket":
            continue
        le = dict(labels)["le"]
        bound = math.inf if le == "+Inf" else float(le)
        acc[bound] = acc.get(bound, 0.0) + value
    return sorted(acc.items())


def quantile(cumulative: list[tuple[float, float]], q: float) -> float:
    """``histogram_quantile`` as Prometheus computes it (linear within the bucket)."""
    if not cumulative or cumulative[-1][1] <= 0:
        return math.nan
    rank = q * cumulative[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in cumulative:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def per_bucket(cumulative: list[tuple[float, float]]) -> Mapping[float, float]:
    out: dict[float, float] = {}
    previous = 0.0
    for bound, count in cumulative:
        out[bound] = count - previous
        previous = count
    return out
