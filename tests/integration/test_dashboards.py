"""A real Prometheus scrapes the running stack (broker, worker, refresher, read API on Redis)
with the shipped alert rules; every dashboard query and every alert rule must parse and
return data, and the alerts of a healthy run must be quiet."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from lte_runtime.embedded_broker import EmbeddedBroker
from lte_runtime.ports import free_port
from lte_runtime.redis_server import RedisServer
from offline.synthetic import SyntheticSpec, SyntheticStream
from streams.replay import log_records
from tests.conftest import ROOT
from tests.integration.harness import LteProcess, http_status, produce, unique, wait_until

DEPLOY = ROOT / "deploy"
COMPARISON = re.compile(r"^(?P<left>.*?)\s+(?P<op>>=|<=|==|!=|>|<)\s+(?P<right>.+)$", re.DOTALL)


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "lte.json").read_text())
    return [
        (panel["title"], target["expr"].replace("$__rate_interval", "20s"))
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


class Prometheus:
    def __init__(self, work: Path, targets: dict[str, int]) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed (scripts/test installs Debian's package)")
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(DEPLOY / "prometheus" / "alerts.yml")],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                for job, port in targets.items()
            ],
        }
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        self._log = (work / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_until(
            lambda: http_status(self.port, "/-/ready") == 200,
            timeout=60,
            what="prometheus to be ready",
        )

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read())

    def query(self, expr: str) -> tuple[str, list[Any]]:
        doc = self.api("query", query=expr)
        return doc["status"], doc.get("data", {}).get("result", [])

    def query_range(self, expr: str, start: float, end: float) -> tuple[str, list[float]]:
        """What a panel over [start, end] plots: every non-NaN point of every series."""
        doc = self.api("query_range", query=expr, start=repr(start), end=repr(end), step="1")
        series = doc.get("data", {}).get("result", [])
        points = [float(v) for s in series for _, v in s["values"] if v != "NaN"]
        return doc["status"], points

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self._log.close()


@pytest.fixture
def stack(
    broker: EmbeddedBroker, redis_server: RedisServer, tmp_path: Path
) -> Iterator[dict[str, Any]]:
    name = unique("dash")
    spec = SyntheticSpec(
        users=400, items=300, dim=16, events=6000, days=20, start=1_700_000_000.0, seed=3
    )
    stream = SyntheticStream(spec)
    basis = stream.catalog.basis().save(tmp_path / "basis")
    # A pinned drift reference, as in production: the population the model was trained on.
    rows = np.concatenate([stream.catalog.basis().rows_of(c.item_ids) for c in stream.chunks()])
    reference = tmp_path / "reference.npy"
    np.save(reference, stream.catalog.vectors[rows].astype(np.float64).mean(axis=0))
    now = spec.start + spec.days * 86400 + 1
    topics = {"input": f"in-{name}", "updates": f"up-{name}"}
    basis_version = json.loads((basis / "metadata.json").read_text())["basis_version"]
    worker = LteProcess(
        [
            "worker",
            "--broker",
            broker.bootstrap,
            "--basis",
            str(basis),
            "--window",
            "10d",
            "--lag",
            "1d",
            "--bucket",
            "1d",
            "--now",
            repr(now),
            "--state-dir",
            str(tmp_path / "state"),
            "--input-topic",
            topics["input"],
            "--updates-topic",
            topics["updates"],
            "--dlq-topic",
            f"dlq-{name}",
            "--group-id",
            f"w-{name}",
            "--session-timeout-ms",
            "6000",
            "--batch-max-records",
            "200",
        ],
        tmp_path,
        "worker",
    ).start()
    refresher = LteProcess(
        [
            "refresher",
            "--broker",
            broker.bootstrap,
            "--store",
            redis_server.url,
            "--updates-topic",
            topics["updates"],
            "--dlq-topic",
            f"udlq-{name}",
            "--group-id",
            f"r-{name}",
            "--session-timeout-ms",
            "6000",
            "--drift-reference",
            str(reference),
        ],
        tmp_path,
        "refresher",
    ).start()
    api = LteProcess(
        [
            "serve",
            "--store",
            redis_server.url,
            "--basis-version",
            basis_version,
            "--encoder",
            "mean",
        ],
        tmp_path,
        "api",
        port_flag="--port",
    ).start()
    processes = [worker, refresher, api]
    try:
        for process in processes:
            process.wait_ready()
        yield {
            "worker": worker,
            "refresher": refresher,
            "api": api,
            "stream": stream,
            "topic": topics["input"],
            "broker": broker,
        }
    finally:
        for process in processes:
            process.kill()


def test_every_dashboard_and_alert_query_returns_data_and_alerts_are_quiet(
    stack: dict[str, Any], tmp_path: Path
) -> None:
    worker, refresher, api = stack["worker"], stack["refresher"], stack["api"]
    prometheus = Prometheus(
        tmp_path, {"lte-worker": worker.port, "lte-refresher": refresher.port, "lte-api": api.port}
    )
    try:
        started = time.time()

        def scraped(expr: str, at_least: float) -> bool:
            _, result = prometheus.query(expr)
            return bool(result) and float(result[0]["value"][1]) >= at_least

        wait_until(
            lambda: scraped('count(up{job=~"lte-.*"} == 1)', 3),
            timeout=30,
            what="prometheus to scrape every process",
        )
        # Traffic in waves, each seen by a scrape before the next, so that rates and
        # quantiles have increases to show and windows move more than once (drift).
        chunks = list(stack["stream"].chunks(size=750))
        applied = 0
        for chunk in chunks:
            produce(stack["broker"].bootstrap, stack["topic"], log_records(chunk))
            applied += len(chunk)
            wait_until(
                lambda n=applied: scraped("sum(lte_events_total)", n),  # type: ignore[misc]
                timeout=60,
                what="prometheus to see a wave applied",
            )
        users = sorted({u for c in chunks for u in c.user_ids.tolist()})
        for user in [*users[:60], "nobody"]:
            http_status(api.port, f"/v1/lte/{user}")
        wait_until(
            lambda: (
                refresher.metric("lte_store_writes_total")
                >= worker.metric("lte_updates_emitted_total")
            ),
            timeout=60,
            what="the refresher to take every update",
        )

        queries = dashboard_queries()
        assert len(queries) >= 20

        def missing() -> list[str]:
            out = []
            for title, expr in queries:
                status, points = prometheus.query_range(expr, started, time.time())
                if status != "success" or not points:
                    out.append(f"{title}: {expr} -> {status}, no points")
            return out

        still_missing: list[str] = []

        def all_have_data() -> bool:
            still_missing[:] = missing()
            return not still_missing

        try:
            wait_until(
                all_have_data, timeout=60, interval=1.0, what="every dashboard query to return data"
            )
        except AssertionError:
            pytest.fail("panels with no data:\n" + "\n".join(still_missing))

        for rule in alert_rules():
            expr = " ".join(rule["expr"].split())
            status, _ = prometheus.query(expr)
            assert status == "success", f"{rule['alert']}: {expr} does not parse"
            match = COMPARISON.match(expr)
            assert match, f"{rule['alert']}: expected `<quantity> <comparison> <threshold>`"
            _, measured = prometheus.query(match["left"])
            assert measured, f"{rule['alert']}: {match['left']} returns no data"

        def evaluated() -> list[dict[str, Any]]:
            groups = prometheus.api("rules")["data"]["groups"]
            return [r for g in groups for r in g["rules"]]

        wait_until(
            lambda: all(r.get("lastEvaluation", "").startswith("20") for r in evaluated()),
            timeout=30,
            what="every rule to be evaluated",
        )
        for rule in evaluated():
            assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
            assert rule["state"] == "inactive", f"{rule['name']} is {rule['state']}"
    finally:
        prometheus.stop()
