from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from lte_runtime.metrics_scrape import quantile


@given(st.lists(st.floats(0.0, 10.0), min_size=1, max_size=200), st.floats(0.01, 0.99))
def test_quantile_lies_in_the_bucket_holding_the_true_quantile(
    values: list[float], q: float
) -> None:
    bounds = [0.5, 1.0, 2.5, 5.0, 10.0, math.inf]
    counts = [(b, float(sum(v <= b for v in values))) for b in bounds]
    got = quantile(counts, q)
    true = float(np.quantile(values, q, method="inverted_cdf"))
    upper = next(b for b in bounds if b >= true)
    lower = max([0.0] + [b for b in bounds if b < upper])
    assert lower - 1e-9 <= got <= upper + 1e-9


def test_empty_histogram_is_nan() -> None:
    assert math.isnan(quantile([], 0.5))
    assert math.isnan(quantile([(1.0, 0.0), (math.inf, 0.0)], 0.5))
