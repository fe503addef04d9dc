"""The demo's summary prints only defined figures, and says *expired* for events that were
already outside the window; the report's quantiles per interval match a brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from rich.console import Console

from lte_cli.demo_data import DemoData
from lte_cli.demo_report import Sample, interval_quantiles
from lte_cli.demo_summary import Results, compare, summarise
from lte_cli.demo_users import recompute
from lte_cli.demo_watch import Follower
from lte_core.window import WindowSpec
from lte_runtime.metrics_scrape import quantile

ITEMS = ["a", "b"]


def _data() -> DemoData:
    return DemoData(
        name="tiny",
        user_ids=np.array(["u1", "u1", "u2"]),
        item_ids=np.array(["a", "b", "a"]),
        ts=np.array([0.0, 86400.0, 2 * 86400.0]),
        catalog=ITEMS,
        vectors=np.eye(2, dtype=np.float32),
        titles={"a": "Alpha", "b": "Beta"},
        genres={"a": ("Drama",), "b": ("Comedy", "Drama")},
        spec=WindowSpec.parse("2d", "0d", "1d"),
        group_label="genre",
    )


def _sample(records: float, written: float) -> Sample:
    return Sample(
        wall=records,
        clock=records,
        worker_clock=records,
        records=records,
        written=written,
        state_users=0,
        state_events=0,
        staleness=[],
        drift=[],
    )


def test_nothing_stored_yet_prints_words_not_nan() -> None:
    worker = {
        ("lte_events_total", frozenset({("outcome", "late")})): 3.0,
        ("lte_state_users", frozenset({("partition", "0")})): 0.0,
    }
    results = Results(
        data=_data(),
        simulated=True,
        samples=[_sample(0, 0), _sample(0, 0)],
        follower=Follower("http://127.0.0.1:9", "u1"),
        worker=worker,
        refresher={},
        stored={},
        population_mean=np.zeros(2),
        checked=2,
        differ=2,
        worst=0.0,
        waited=60.0,
    )
    console = Console(record=True, width=200)
    summarise(console, results)
    text = console.export_text()
    assert "nan" not in text.lower()
    assert "no LTE stored yet" in text
    assert "no user updated twice yet" in text
    assert "expired 3" in text and "late" not in text
    assert "population drift" not in text  # the gauge is absent until a reference exists
    assert "DIFFER" in text  # three events in windows, none stored


@pytest.mark.parametrize("seed", range(5))
def test_interval_quantiles_are_those_of_each_interval_growth(seed: int) -> None:
    """Against a brute force: the histogram of the observations made within each interval."""
    rng = np.random.default_rng(seed)
    bounds = [0.01, 0.1, 1.0, math.inf]
    times = np.sort(rng.uniform(0, 100, 400))
    values = rng.lognormal(-3, 1.5, 400)
    xs = np.arange(0.0, 101.0, 1.0)
    hists = [
        [(b, float(((times <= x) & (values <= b)).sum())) for b in bounds] for x in xs.tolist()
    ]
    edges = np.array([0.0, 25.0, 50.0, 100.0])
    mids, counts, p50, p99 = interval_quantiles(xs.tolist(), hists, edges)
    for k, (lo, hi) in enumerate(itertools.pairwise(edges)):
        inside = values[(times > lo) & (times <= hi)]
        brute = [(b, float((inside <= b).sum())) for b in bounds]
        assert mids[k] == (lo + hi) / 2
        assert counts[k] == len(inside)
        assert p50[k] == pytest.approx(quantile(brute, 0.5))
        assert p99[k] == pytest.approx(quantile(brute, 0.99))


def test_compare_counts_every_way_a_stored_lte_can_be_wrong() -> None:
    expected = recompute(_data(), 3 * 86400.0)  # window [1d, 3d): u1's "b", u2's "a"
    assert expected.users == ["u1", "u2"] and expected.counts.tolist() == [1, 1]
    right = {
        "u1": {"n_events": 1, "vector": [0.0, 1.0]},
        "u2": {"n_events": 1, "vector": [1.0, 0.0]},
    }
    assert compare(expected, right) == (0, 0.0)
    off = {**right, "u1": {"n_events": 1, "vector": [0.0, 1.0 + 2e-5]}}
    assert compare(expected, off)[0] == 1
    assert compare(expected, {**right, "u2": {"n_events": 2, "vector": [1.0, 0.0]}})[0] == 1
    assert compare(expected, {**right, "u2": {"n_events": 0, "vector": None}})[0] == 1
    assert compare(expected, {"u1": right["u1"]})[0] == 1
