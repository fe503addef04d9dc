"""What ``lte demo`` prints when the replay is over, and the data of its report.

Everything comes from the running stack: counters from ``/metrics``, LTEs from the read API.
Only figures that are defined are printed ("no user updated twice yet" rather than ``nan``).
Events older than the window when they arrive are called *expired* here (the metric label is
``late``, kept for the dashboards).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from lte_cli.demo_data import DemoData
from lte_cli.demo_report import LTEMap, ReportData, Sample, UserTrack, pca_2d
from lte_cli.demo_users import (
    Distinguisher,
    Recomputed,
    genre_shares,
    latest_items,
    recompute,
    user_groups,
)
from lte_cli.demo_watch import Follower, get_json, ms
from lte_runtime.metrics_scrape import Samples, buckets, quantile, total

F64 = npt.NDArray[np.float64]
BATCH_GET = 1000
#: the contract's exactness (max abs difference to a from-scratch mean)
EXACT = 1e-5
#: how long the store may take to reach the final clock's LTEs once the counters settle
CATCH_UP_SECONDS = 60.0
SHOWN_USERS = 3


def _day(t: float) -> str:
    return f"{datetime.fromtimestamp(t, UTC):%Y-%m-%d}"


def stored_ltes(api_url: str, users: list[str]) -> dict[str, dict[str, Any]]:
    """Every user's stored LTE (users without one are left out), by batch reads."""
    out: dict[str, dict[str, Any]] = {}
    for lo in range(0, len(users), BATCH_GET):
        chunk = users[lo : lo + BATCH_GET]
        doc = get_json(f"{api_url}/v1/lte:batchGet", orjson.dumps({"user_ids": chunk}))
        if doc is None:
            continue
        out.update({u: r for u, r in zip(chunk, doc["results"], strict=True) if r is not None})
    return out


def compare(expected: Recomputed, stored: dict[str, dict[str, Any]]) -> tuple[int, float]:
    """(users that differ, max abs difference) of the stored LTEs against a from-scratch
    recomputation (a user with nothing ever in the window may have no entry)."""
    differ = 0
    worst = 0.0
    for k, user in enumerate(expected.users):
        doc = stored.get(user)
        n = int(expected.counts[k])
        if doc is None and n == 0:
            continue  # nothing ever entered the window: no update was due
        if doc is None or int(doc["n_events"]) != n or (doc["vector"] is None) != (n == 0):
            differ += 1
            continue
        if n:
            gap = float(np.max(np.abs(np.asarray(doc["vector"]) - expected.means[k])))
            worst = max(worst, gap)
            differ += gap > EXACT
    return differ, worst


@dataclass(frozen=True)
class Results:
    data: DemoData
    simulated: bool
    samples: list[Sample]
    follower: Follower
    worker: Samples
    refresher: Samples
    stored: dict[str, dict[str, Any]]
    #: the mean of every stored non-empty LTE
    population_mean: F64
    #: users checked against the recomputation, how many differ, max abs difference
    checked: int
    differ: int
    worst: float
    #: seconds the store took to catch up with the final clock after the counters settled
    waited: float

    @classmethod
    def collect(
        cls,
        data: DemoData,
        stack: Any,
        simulated: bool,
        samples: list[Sample],
        follower: Follower,
        *,
        patience: float = CATCH_UP_SECONDS,
    ) -> Results:
        """Read every stored LTE until the store equals a from-scratch recomputation at the
        final clock, or ``patience`` seconds pass: when the counters settle, the last sweeps
        of a loaded worker can still be on their way."""
        expected = recompute(data, data.end)
        started = time.monotonic()
        while True:
            stored = stored_ltes(stack.api_url, data.users)
            differ, worst = compare(expected, stored)
            if differ == 0 or time.monotonic() - started > patience:
                break
            time.sleep(0.5)  # polling a condition with a deadline
        vectors = [d["vector"] for d in stored.values() if d["vector"] is not None]
        mean = (
            np.mean(np.asarray(vectors, dtype=np.float64), axis=0)
            if vectors
            else np.zeros(data.vectors.shape[1])
        )
        return cls(
            data,
            simulated,
            samples,
            follower,
            stack.worker_metrics(),
            stack.refresher_metrics(),
            stored,
            mean,
            checked=len(expected.users),
            differ=differ,
            worst=worst,
            waited=time.monotonic() - started,
        )

    def vector(self, user: str) -> F64 | None:
        doc = self.stored.get(user)
        if doc is None or doc["vector"] is None:
            return None
        return np.asarray(doc["vector"], dtype=np.float64)


def _busy_rate(samples: list[Sample], value: str) -> tuple[float, float]:
    """(count, per second while it grew) of a cumulative sample field."""
    ys = np.array([getattr(s, value) for s in samples])
    ts = np.array([s.wall for s in samples])
    grew = np.flatnonzero(np.diff(ys) > 0)
    if len(grew) == 0:
        return float(ys[-1]), math.nan
    busy = ts[grew[-1] + 1] - ts[grew[0]]
    return float(ys[-1]), float(ys[-1] - ys[grew[0]]) / busy if busy > 0 else math.nan


def _has(samples: Samples, name: str) -> bool:
    return any(n == name for n, _ in samples)


def summarise(console: Any, res: Results) -> None:
    from rich.table import Table  # noqa: PLC0415

    w, r = res.worker, res.refresher
    table = Table(title="summary", show_header=False)
    judged, per_s = _busy_rate(res.samples, "records")
    rate = f" ≈ {per_s:,.0f} events/s while they arrived" if math.isfinite(per_s) else ""
    table.add_row("events judged by the worker", f"{judged:,.0f}{rate}")

    def outcome(name: str) -> float:
        return total(w, "lte_events_total", outcome=name)

    rows = [
        f"applied {outcome('applied'):,.0f} (into the window, or waiting behind the lag)",
        f"expired {outcome('late'):,.0f} (already outside the window when they arrived)",
    ]
    if outcome("duplicate"):
        rows.append(f"duplicate {outcome('duplicate'):,.0f} (redelivered, ignored)")
    rows.append(
        f"dead-lettered {total(w, 'lte_dead_letters_total'):,.0f} (invalid "
        f"{outcome('invalid'):,.0f}, unknown item {outcome('unknown_item'):,.0f})"
    )
    table.add_row("outcomes", "\n".join(rows))
    on_event = total(w, "lte_updates_emitted_total", trigger="event")
    on_clock = total(w, "lte_updates_emitted_total", trigger="clock")
    written, per_s = _busy_rate(res.samples, "written")
    rate = f", ≈ {per_s:,.0f}/s" if math.isfinite(per_s) else ""
    table.add_row(
        "LTE updates",
        f"{on_event + on_clock:,.0f} emitted: {on_event:,.0f} when events arrived, "
        f"{on_clock:,.0f} as windows slid on the clock\n"
        f"{written:,.0f} written to the store{rate}",
    )
    staleness = buckets(r, "lte_staleness_seconds")
    delay = buckets(w, "lte_update_delay_seconds")
    table.add_row(
        "staleness p50 / p99",
        f"{ms(quantile(staleness, 0.5))} / {ms(quantile(staleness, 0.99))} real time "
        "(store write - when the update became due); the worker's share p50 "
        f"{ms(quantile(delay, 0.5))}"
        if staleness and staleness[-1][1] > 0
        else "no LTE stored yet",
    )
    drift = buckets(r, "lte_drift")
    table.add_row(
        "drift per update p50 / p99",
        f"{quantile(drift, 0.5):.4f} / {quantile(drift, 0.99):.4f} (1 - cos(previous, new))"
        if drift and drift[-1][1] > 0
        else "no user updated twice yet",
    )
    if _has(r, "lte_population_drift"):
        table.add_row(
            "population drift",
            f"{total(r, 'lte_population_drift'):.4f} (1 - cos(mean LTE now, mean of the first "
            "200 written))",
        )
    emptied = sum(1 for d in res.stored.values() if d["n_events"] == 0)
    table.add_row(
        "users",
        f"{total(w, 'lte_state_users'):,.0f} with window state; {len(res.stored):,} LTEs in "
        f"the store, {emptied:,} of them emptied (n_events 0: silent longer than window + lag)",
    )
    caught_up = f"; the last updates landed {res.waited:.1f} s late" if res.waited > 1 else ""
    table.add_row(
        "exactness",
        f"all {res.checked:,} users' stored LTEs equal a from-scratch recomputation at the "
        f"final clock (max |Δ| {res.worst:.1e}{caught_up})"
        if res.differ == 0
        else f"{res.differ:,} of {res.checked:,} users' stored LTEs DIFFER from a from-scratch "
        f"recomputation at the final clock (max |Δ| {res.worst:.1e}) after waiting "
        f"{res.waited:.0f} s",
    )
    console.print(table)
    _portraits(console, res)


def _portraits(console: Any, res: Results) -> None:
    data = res.data
    spec = data.spec
    groups = user_groups(data, data.end)
    rank = Distinguisher(data, res.population_mean)
    console.print(
        "\n[bold]users[/] — what sets an LTE apart is its deviation from the population mean "
        "LTE: items are ranked by cosine to (LTE - mean LTE of all users), since the raw "
        "nearest items are the same central titles for everyone"
    )
    lo = float(spec.start_bucket(data.end) * spec.bucket)
    hi = float(spec.end_bucket(data.end) * spec.bucket)
    recent = set(data.user_ids[data.ts >= hi].tolist())
    filled = sorted(
        (u for u, d in res.stored.items() if d["n_events"] >= 5),
        key=lambda u: (u not in recent, -res.stored[u]["n_events"]),
    )
    seen: set[str] = set()
    for user in filled:
        if groups.get(user) in seen:
            continue
        seen.add(groups.get(user, ""))
        vector = res.vector(user)
        assert vector is not None
        console.print(
            f"\n[bold]user {user}[/] — {res.stored[user]['n_events']} events in the window "
            f"[{_day(lo)} .. {_day(hi)}) at the final clock"
        )
        console.print(f"  long-term genres (the window):  {genre_shares(data, user, lo, hi)}")
        console.print(
            "  short-term items (latest, what a sequence model sees): "
            + "; ".join(latest_items(data, user, data.end))
        )
        console.print("  what sets this LTE apart: " + "; ".join(rank.top(vector)))
        if len(seen) == SHOWN_USERS:
            break
    silent_for = spec.window + spec.lag + spec.bucket
    last_seen: dict[str, float] = {}
    counts: dict[str, int] = {}
    for u, t in zip(data.user_ids.tolist(), data.ts.tolist(), strict=True):
        last_seen[u] = t
        counts[u] = counts.get(u, 0) + 1
    gone = [
        u
        for u, t in last_seen.items()
        if t < data.end - silent_for and u in res.stored and res.stored[u]["n_events"] == 0
    ]
    if gone:
        user = max(gone, key=lambda u: counts[u])
        console.print(
            f"\n[bold]user {user}[/] — {counts[user]} events, the last on "
            f"{_day(last_seen[user])}, then silent for "
            f"{(data.end - last_seen[user]) / 86400:.0f} days (longer than window + lag): the "
            f"stored LTE has n_events {res.stored[user]['n_events']} (vector null) — it aged "
            f"out without any new event, like {len(gone) - 1:,} other silent users"
        )


def report_data(res: Results) -> ReportData:
    data = res.data
    users = [u for u in res.stored if res.stored[u]["vector"] is not None]
    groups = user_groups(data, data.end)
    if users:
        coords, explained = pca_2d(np.asarray([res.stored[u]["vector"] for u in users]))
    else:
        coords, explained = np.zeros((0, 2)), (0.0, 0.0)
    lte_map = LTEMap(
        x=coords[:, 0].tolist(),
        y=coords[:, 1].tolist(),
        group=[groups.get(u, "unknown") for u in users],
        explained=explained,
        group_label=data.group_label,
    )
    return ReportData(
        simulated=res.simulated,
        samples=res.samples,
        lte_map=lte_map,
        track=_track(res),
        title=f"lte demo: {data.name}; {data.spec.describe()}",
    )


def _track(res: Results) -> UserTrack | None:
    f = res.follower
    final = res.vector(f.user)
    if final is None or not f.as_of:
        return None
    cosine = f.cosines_to(final)
    deviation = f.cosines_to(final, res.population_mean)
    rank = Distinguisher(res.data, res.population_mean)
    filled = [k for k, v in enumerate(f.vectors) if v is not None]
    picks = sorted({filled[int(q * (len(filled) - 1))] for q in (0.0, 0.35, 0.7, 1.0)})
    notes = []
    for k in picks:
        vector = f.vectors[k]
        assert vector is not None
        titles = [t if len(t) <= 26 else t[:25] + "…" for t in rank.top(vector, 2)]
        notes.append((f.as_of[k], deviation[k], "\n".join(titles)))
    return UserTrack(
        user=f.user,
        as_of=f.as_of,
        cosine=cosine,
        deviation_cosine=deviation,
        n_events=f.n_events,
        notes=notes,
    )
