from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from lte_runtime.bulk_histogram import BulkHistogram

BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0)


@given(st.lists(st.lists(st.floats(-1, 20, allow_nan=False), max_size=30), max_size=5))
def test_same_samples_as_a_prometheus_histogram(batches: list[list[float]]) -> None:
    ours_registry, ref_registry = CollectorRegistry(), CollectorRegistry()
    ours = BulkHistogram("lte_x_seconds", "x", BUCKETS, ours_registry)
    ref = Histogram("lte_x_seconds", "x", buckets=BUCKETS, registry=ref_registry)
    for batch in batches:
        ours.observe_many(np.asarray(batch))
        for value in batch:
            ref.observe(value)
    for le in ("0.01", "0.1", "0.5", "1.0", "5.0", "+Inf"):
        assert ours_registry.get_sample_value("lte_x_seconds_bucket", {"le": le}) == (
            ref_registry.get_sample_value("lte_x_seconds_bucket", {"le": le})
        )
    assert ours_registry.get_sample_value("lte_x_seconds_count") == (
        ref_registry.get_sample_value("lte_x_seconds_count")
    )
    total = ours_registry.get_sample_value("lte_x_seconds_sum")
    assert total is not None
    assert abs(total - (ref_registry.get_sample_value("lte_x_seconds_sum") or 0.0)) < 1e-6
