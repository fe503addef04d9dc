"""A Prometheus histogram fed a whole numpy array at a time.

``Histogram.observe`` costs a few microseconds of Python per value; the worker and the
refresher observe one value per LTE update, hundreds of thousands per second. This
collector bins a batch with one ``searchsorted`` and exposes exactly what a
``prometheus_client.Histogram`` with the same buckets would (``_bucket``, ``_count``,
``_sum``), so dashboards and alerts cannot tell them apart.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector


class BulkHistogram(Collector):
    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self._name = name
        self._doc = documentation
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != float("inf"):
            bounds.append(float("inf"))
        self._bounds = np.asarray(bounds)
        self._counts = np.zeros(len(bounds), dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: npt.ArrayLike) -> None:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        if arr.size == 0:
            return
        counts = np.bincount(
            np.searchsorted(self._bounds, arr, side="left"), minlength=len(self._bounds)
        )
        with self._lock:
            self._counts += counts[: len(self._bounds)]
            self._sum += float(arr.sum())

    def observe(self, value: float) -> None:
        self.observe_many([value])

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            cumulative = np.cumsum(self._counts).tolist()
            total = self._sum
        family = HistogramMetricFamily(
            self._name,
            self._doc,
            buckets=[(_le(b), c) for b, c in zip(self._bounds.tolist(), cumulative, strict=True)],
            sum_value=total,
        )
        yield family

    def describe(self) -> Iterable[Metric]:
        yield HistogramMetricFamily(self._name, self._doc)


def _le(bound: float) -> str:
    """Bucket label as prometheus_client writes it (``0.5``, ``1.0``, ``+Inf``)."""
    return "+Inf" if bound == float("inf") else repr(bound)
