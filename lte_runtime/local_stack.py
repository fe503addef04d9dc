"""The whole pipeline on one machine, as real processes: the embedded broker, ``lte worker``
and ``lte refresher --serve`` (refresher + read API). Used by ``lte demo`` and benchmarks."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from lte_runtime.embedded_broker import EmbeddedBroker
from lte_runtime.errors import ServiceError
from lte_runtime.metrics_scrape import Samples, scrape
from lte_runtime.ports import free_port
from lte_runtime.supervisor import Child, Supervisor


@dataclass(frozen=True, slots=True)
class StackConfig:
    run_dir: Path
    basis_dir: Path
    window: str
    lag: str
    bucket: str
    now: float | None
    store_url: str
    encoder: str = "mean"
    max_future_skew: str = "1h"
    worker_args: tuple[str, ...] = ()
    refresher_args: tuple[str, ...] = ()
    session_timeout_ms: int = 6000


@dataclass
class LocalStack:
    config: StackConfig
    broker: EmbeddedBroker | None = None
    worker: Child | None = None
    refresher: Child | None = None
    worker_port: int = field(default_factory=free_port)
    #: the refresher serves the read API, /metrics and /readyz on this one port (--serve)
    api_port: int = field(default_factory=free_port)
    _supervisor: Supervisor = field(default_factory=Supervisor)

    @property
    def bootstrap(self) -> str:
        assert self.broker is not None
        return self.broker.bootstrap

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self, timeout: float = 90.0) -> LocalStack:
        c = self.config
        logs = c.run_dir / "logs"
        self.broker = EmbeddedBroker(log_path=logs / "broker.log").start()
        clock = ["--now", repr(c.now)] if c.now is not None else []
        self.worker = self._supervisor.start(
            "worker",
            [
                "worker",
                "--broker",
                self.bootstrap,
                "--basis",
                str(c.basis_dir),
                "--window",
                c.window,
                "--lag",
                c.lag,
                "--bucket",
                c.bucket,
                "--encoder",
                c.encoder,
                "--state-dir",
                str(c.run_dir / "state"),
                "--metrics-port",
                str(self.worker_port),
                "--session-timeout-ms",
                str(c.session_timeout_ms),
                "--max-future-skew",
                c.max_future_skew,
                *clock,
                *c.worker_args,
            ],
            logs / "worker.log",
        )
        self.refresher = self._supervisor.start(
            "refresher",
            [
                "refresher",
                "--broker",
                self.bootstrap,
                "--store",
                c.store_url,
                "--serve",
                "--port",
                str(self.api_port),
                "--session-timeout-ms",
                str(c.session_timeout_ms),
                *c.refresher_args,
            ],
            logs / "refresher.log",
        )
        self._wait_ready(self.worker, self.worker_port, timeout)
        self._wait_ready(self.refresher, self.api_port, timeout)
        return self

    def _wait_ready(self, child: Child, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not child.alive:
                raise ServiceError(f"{child.name} exited:\n{child.tail()}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/readyz",
                    timeout=1,
                ) as resp:
                    if resp.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        raise ServiceError(f"{child.name} was not ready within {timeout:g}s:\n{child.tail()}")

    def worker_metrics(self) -> Samples:
        return scrape(f"http://127.0.0.1:{self.worker_port}/metrics")

    def refresher_metrics(self) -> Samples:
        return scrape(f"http://127.0.0.1:{self.api_port}/metrics")

    def stop(self) -> None:
        self._supervisor.stop_all()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
