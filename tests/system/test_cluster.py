"""On a real three-node RabbitMQ cluster, the product's quorum queue keeps every confirmed message when the node
holding its leader is SIGKILLed: another node becomes leader with all of them, and the killed node, restarted,
rejoins."""

from __future__ import annotations

import aio_pika
import pytest
from cluster import Cluster
from support import RUN_ID

from ingest.topology import Topology

pytestmark = pytest.mark.chaos


async def test_confirmed_messages_survive_the_leader_node_being_killed(rabbitmq_cluster: Cluster) -> None:
    cluster = rabbitmq_cluster
    topology = Topology(f"ctwa-test-{RUN_ID}-cluster")
    bodies = [f"callback {n}".encode() for n in range(5)]
    async with await aio_pika.connect(cluster.urls[0], timeout=10) as connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange, _ = await topology.declare(channel)
        for body in bodies:
            # Returns once the broker confirmed it; raises if nacked or unroutable.
            await exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), "message.inbound"
            )

    leader = await cluster.leader(topology.queue)
    assert leader in cluster.nodes
    await cluster.kill(leader)
    assert leader not in cluster.running_nodes()

    new_leader = await cluster.leader_other_than(topology.queue, leader)
    assert new_leader in cluster.running_nodes()
    survivor = next(node for node in cluster.nodes if node != leader)
    async with await aio_pika.connect(cluster.url(survivor), timeout=10) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(topology.queue, passive=True)
        kept = []
        while (message := await queue.get(no_ack=True, fail=False, timeout=5)) is not None:
            kept.append(message.body)
        assert kept == bodies
        # No clean-up: the cluster is this run's own. (Deleting a quorum queue while one of its members is down
        # takes 10 s of waiting for that member.)

    await cluster.start(leader)
    assert await cluster.cluster_running(via=leader) == sorted(cluster.nodes)
