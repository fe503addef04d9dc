"""Watching the running stack from outside, as an operator would: scrape the worker's and the
refresher's ``/metrics`` and read one user's LTE through the read API, a few times a second;
show the live status line and keep the samples for the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from lte_cli.demo_report import Sample
from lte_runtime.metrics_scrape import Samples, buckets, quantile, total

RATE_WINDOW_SECONDS = 2.0


def get_json(url: str, body: bytes | None = None) -> Any:
    """GET (or POST ``body``) a local URL; ``None`` when it does not answer 200."""
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    request = urllib.request.Request(url, data=body, method="POST" if body else "GET")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - local API
            return orjson.loads(resp.read())
    except (OSError, urllib.error.URLError, orjson.JSONDecodeError):
        return None


def sample(wall: float, clock: float, worker: Samples, refresher: Samples) -> Sample:
    return Sample(
        wall=wall,
        clock=clock,
        worker_clock=total(worker, "lte_worker_clock_seconds"),
        records=total(worker, "lte_events_total"),
        written=total(refresher, "lte_store_writes_total", outcome="written"),
        state_users=total(worker, "lte_state_users"),
        state_events=total(worker, "lte_state_events"),
        staleness=buckets(refresher, "lte_staleness_seconds"),
        drift=buckets(refresher, "lte_drift"),
    )


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds >= 0.0095 else f"{seconds * 1000:.1f} ms"


def status_line(samples: list[Sample]) -> str:
    """Events/s and updates/s over the last seconds, staleness so far, users with state."""
    last = samples[-1]
    since = next((s for s in samples if last.wall - s.wall <= RATE_WINDOW_SECONDS), samples[0])
    span = last.wall - since.wall
    parts = []
    if span > 0:
        parts.append(f"{(last.records - since.records) / span:,.0f} events/s")
        parts.append(f"{(last.written - since.written) / span:,.0f} updates/s")
    if last.staleness and last.staleness[-1][1] > 0:
        parts.append(
            f"staleness p50 {ms(quantile(last.staleness, 0.5))} "
            f"p99 {ms(quantile(last.staleness, 0.99))}"
        )
    parts.append(f"{last.state_users:,.0f} users with state")
    return " · ".join(parts)


def date(t: float) -> str:
    return f"{datetime.fromtimestamp(t, UTC):%Y-%m-%d %H:%M}"


@dataclass
class Follower:
    """One user's stored LTE each time it changes (polled through the read API)."""

    api_url: str
    user: str
    as_of: list[float] = field(default_factory=list)
    n_events: list[int] = field(default_factory=list)
    vectors: list[npt.NDArray[np.float64] | None] = field(default_factory=list)

    def poll(self) -> None:
        doc = get_json(f"{self.api_url}/v1/lte/{self.user}")
        if not doc or (self.as_of and doc["as_of"] <= self.as_of[-1]):
            return
        self.as_of.append(float(doc["as_of"]))
        self.n_events.append(int(doc["n_events"]))
        vector = doc.get("vector")
        self.vectors.append(None if vector is None else np.asarray(vector, dtype=np.float64))

    def cosines_to(
        self, final: npt.NDArray[np.float64], minus: npt.NDArray[np.float64] | None = None
    ) -> list[float]:
        """Cosine of each version to ``final`` (0 for an empty window); with ``minus``, of
        ``version - minus`` to ``final - minus``."""
        shift = 0.0 if minus is None else minus
        target = final - shift
        norm = float(np.linalg.norm(target)) or 1.0
        out = []
        for v in self.vectors:
            d = None if v is None else v - shift
            out.append(
                0.0 if d is None else float(d @ target / ((float(np.linalg.norm(d)) or 1.0) * norm))
            )
        return out
