"""deploy/ is checked without Docker: the compose file against the Compose Specification,
the Prometheus configuration and rules with promtool, the dashboard's structure."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import IN_CI, ROOT

DEPLOY = ROOT / "deploy"
SCHEMA = ROOT.parent / "shared" / "schemas" / "compose-spec.json"


def _schema() -> dict[str, Any]:
    if not SCHEMA.is_file():
        if IN_CI:
            pytest.fail(f"compose schema missing at {SCHEMA}")
        pytest.skip(f"compose schema missing at {SCHEMA}")
    doc: dict[str, Any] = json.loads(SCHEMA.read_text())
    return doc


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return doc


def test_compose_file_validates_against_the_compose_spec() -> None:
    schema = _schema()
    validator = jsonschema.Draft7Validator(schema)  # the spec's "$schema" is draft-07
    errors = sorted(validator.iter_errors(_compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_the_schema_check_can_fail() -> None:
    schema = _schema()
    broken = _compose()
    broken["services"]["worker"]["restrat"] = "always"  # a typo the spec must catch
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


def test_compose_runs_every_process_the_product_has() -> None:
    services = _compose()["services"]
    commands = {name: (svc.get("command") or [""])[0] for name, svc in services.items()}
    assert {"worker", "refresher", "serve", "replay"} <= set(commands.values())
    assert {"kafka", "redis", "prometheus", "grafana", "topics"} <= set(services)
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker  # it must scale


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:  # scripts/test installs Debian's prometheus package when missing
        pytest.fail("promtool is not installed (apt-get install prometheus)")
    return path


def test_promtool_accepts_the_prometheus_config_and_rules() -> None:
    promtool = _promtool()
    config = subprocess.run(
        [promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert config.returncode == 0, config.stdout + config.stderr
    rules = subprocess.run(
        [promtool, "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "8 rules found" in rules.stdout


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "alerts.yml"
    broken.write_text(
        "groups:\n  - name: x\n    rules:\n      - alert: X\n"
        "        expr: sum(rate(lte_events_total[5m]) > \n"
    )
    result = subprocess.run(
        [_promtool(), "check", "rules", str(broken)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0


def test_dashboard_is_provisioned_and_well_formed() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "lte.json").read_text())
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "lte.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    titles = " ".join(p["title"].lower() for p in panels)
    for needed in ("outcome", "lag", "staleness", "drift", "store writes", "latency"):
        assert needed in titles
    assert all(t["expr"] for p in panels for t in p["targets"])


def test_the_api_fails_closed_without_a_token() -> None:
    """No token, no API: compose refuses to interpolate an unset token (``:?``), the port is
    not published on every interface by default, and ``lte serve`` refuses a non-loopback
    host without a token (the container's ``--host 0.0.0.0``)."""
    api = _compose()["services"]["api"]
    token = api["environment"]["LTE_API_TOKEN"]
    assert token.startswith("${LTE_API_TOKEN:?"), token
    assert all(str(p).startswith("${LTE_API_PUBLISH:-127.0.0.1}:") for p in api["ports"])
    env = {k: v for k, v in os.environ.items() if k != "LTE_API_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-m", "lte_cli", *api["command"], "--store", "redis://127.0.0.1:1/0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("lte: error: LTE_API_TOKEN: required")
