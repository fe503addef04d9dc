"""``lte refresher --store redis+cluster://…`` on a real 3-node Redis Cluster, with a node
restarted mid-stream. The oracle is computed from the topic alone (newest per key by
``(as_of, due_at)``, the later record on a tie)."""

from __future__ import annotations

import random

from lte_runtime.redis_cluster import LocalRedisCluster
from serving.store_url import parse_store_url
from tests.integration.harness import unique, wait_until
from tests.integration.store_backends import mismatches, records, sync_store, update_stream
from tests.integration.test_refresher import Setup, setup  # noqa: F401 - the fixture


def test_node_restart_mid_stream_loses_nothing(
    setup: Setup,  # noqa: F811 - the imported fixture
    redis_cluster: LocalRedisCluster,
) -> None:
    rng = random.Random("cluster-restart")
    basis = unique("basis")
    setup.produce(records(update_stream(rng, users=1500, count=12_000, d=16, basis_version=basis)))
    oracle, ends = setup.topic_state()
    process = setup.refresher(
        redis_cluster.url, "--batch-max-records", "40", "--retry-max-seconds", "0.3"
    ).start()
    process.wait_ready()
    wait_until(
        lambda: process.metric("lte_store_writes_total") >= 1000,
        timeout=60,
        what="progress before the restart",
    )
    failed = {"outcome": "error"}
    errors_before = process.metric("lte_store_writes_total", failed)
    redis_cluster.stop_node(1)
    wait_until(
        lambda: process.metric("lte_store_writes_total", failed) > errors_before,
        timeout=20,
        what="a batch to run into the stopped node",
    )
    assert not setup.all_committed(ends), "the topic was done before the restart"
    redis_cluster.start_node(1)
    redis_cluster.wait_healthy()
    wait_until(lambda: setup.all_committed(ends), timeout=90, what="every offset committed")
    with sync_store(parse_store_url(redis_cluster.url)) as opened:
        assert len(oracle) > 1000
        assert mismatches(opened, oracle) == [], f"checked {len(oracle)} users"
    assert process.stop() == 0
