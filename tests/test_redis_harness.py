"""The test harness's own Redis Cluster: a node's port taken between the choice and the
node's bind (the race that failed a CI run) is swapped for another before the cluster is
formed."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.redis_server import RedisCluster, cluster_port


def test_cluster_ports_leave_the_kernels_ephemeral_range_alone() -> None:
    floor = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(50):
        port = cluster_port()
        if floor - 10001 >= 10000:
            assert 10000 <= port < 20000
            assert port + 10000 < floor


def test_a_bus_port_taken_before_the_node_starts_is_swapped() -> None:
    cluster = RedisCluster(masters=3)
    first = cluster.nodes[0].port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", first + 10000))
        squatter.listen()
        try:
            cluster.start()
            assert cluster.nodes[0].port != first
            for node in cluster.nodes:
                client = node.client()
                try:
                    assert client.cluster("INFO")["cluster_state"] == "ok"
                finally:
                    client.close()
        finally:
            cluster.cleanup()
