"""The RabbitMQ adapter against a real rabbitmq-server: topology, settling, publishing, restarts."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from srvthreds_engine.adapters.rabbitmq import (
    ATTEMPTS_HEADER,
    LAST_REASON_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    MessagingError,
    RabbitBroker,
    RabbitDelivery,
    RabbitInboundEvents,
    RabbitMessagePublisher,
    Topology,
)
from srvthreds_engine.ports import InboundDelivery, InboundEvents, MessagePublisher, RoutedMessage
from tests.brokers.rabbitmq_server import RabbitMqServer

pytestmark = pytest.mark.backends

WAIT_SECONDS = 20.0


@pytest.fixture
def topology() -> Topology:
    return Topology(prefix=f"t{uuid.uuid4().hex[:10]}.")


@pytest.fixture
async def admin(
    rabbitmq_server: RabbitMqServer, topology: Topology
) -> AsyncIterator[AbstractChannel]:
    """A plain channel to inspect queues; deletes the test's exchanges and queues afterwards."""
    rabbitmq_server.ensure_running()  # a failed restart test may have left it stopped
    connection = await aio_pika.connect(rabbitmq_server.url)
    channel = await connection.channel()
    yield channel
    await connection.close()
    # A fresh connection: a test may have restarted the broker under the first one.
    cleanup = await aio_pika.connect(rabbitmq_server.url)
    await _delete_topology(cleanup, topology=topology)
    await cleanup.close()


@pytest.fixture
async def broker(
    rabbitmq_server: RabbitMqServer, topology: Topology, admin: AbstractChannel
) -> AsyncIterator[RabbitBroker]:
    connected = await RabbitBroker.connect(
        rabbitmq_server.url,
        topology=topology,
        reconnect_interval=0.2,
        ready_timeout=1.0,
        publish_timeout=10.0,
    )
    yield connected
    await connected.close()


@pytest.fixture
async def events(broker: RabbitBroker) -> AsyncIterator[RabbitInboundEvents]:
    inbound = RabbitInboundEvents(broker, prefetch=10, max_attempts=3)
    yield inbound
    await inbound.close()


async def _delete_topology(connection: AbstractConnection, *, topology: Topology) -> None:
    channel = await connection.channel()
    node_queues = (topology.node_queue("node-7"),)
    dead = tuple(topology.dead_letter_queue(queue) for queue in node_queues)
    for queue in (*topology.queue_names(), *node_queues, *dead):
        await channel.queue_delete(queue)
    dead_exchanges = tuple(topology.dead_letter_exchange(queue) for queue in node_queues)
    for exchange in (*topology.exchange_names(), *dead_exchanges):
        await channel.exchange_delete(exchange)
    await channel.close()


def as_ports(
    events: RabbitInboundEvents, publisher: RabbitMessagePublisher, delivery: RabbitDelivery
) -> tuple[InboundEvents, MessagePublisher, InboundDelivery]:
    """Not a test: mypy checks here that the adapters implement the ports."""
    return events, publisher, delivery


def make_event(number: int) -> dict[str, Any]:
    return {
        "id": f"e{number}",
        "type": "org.wt.test",
        "source": {"id": "participant0"},
        "data": {"title": f"event {number}", "content": {"values": {"n": number}}},
    }


async def wait_until(
    condition: Callable[[], Awaitable[bool]] | Callable[[], bool], *, what: str
) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def ready_count(admin: AbstractChannel, queue: str) -> int:
    """Messages in `queue` that are not out with a consumer (the broker's own count)."""
    declared = await admin.declare_queue(queue, passive=True)
    count = declared.declaration_result.message_count
    assert count is not None
    return count


async def take_from(admin: AbstractChannel, queue: str) -> AbstractIncomingMessage:
    declared = await admin.declare_queue(queue, passive=True)
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        message = await declared.get(no_ack=True, fail=False)
        if message is not None:
            return message
        await asyncio.sleep(0.05)
    raise AssertionError(f"no message arrived in {queue}")


async def next_delivery(deliveries: AsyncIterator[RabbitDelivery]) -> RabbitDelivery:
    return await asyncio.wait_for(anext(deliveries), WAIT_SECONDS)


def body_of(delivery: RabbitDelivery) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(delivery.body)
    return decoded


# --- topology ----------------------------------------------------------------------------------


async def test_declaring_the_topology_twice_is_fine(
    broker: RabbitBroker,
    admin: AbstractChannel,
    topology: Topology,
    rabbitmq_server: RabbitMqServer,
) -> None:
    await broker.declare_topology()
    second = await RabbitBroker.connect(rabbitmq_server.url, topology=topology)
    await second.close()
    for queue in topology.queue_names():
        assert await ready_count(admin, queue) == 0


async def test_every_message_key_reaches_its_queue(
    broker: RabbitBroker, admin: AbstractChannel, topology: Topology
) -> None:
    publisher = RabbitMessagePublisher(broker)
    keys = dict(topology.message_queues)
    await publisher.publish(
        [
            RoutedMessage(routing_key=key, message_id=f"m-{key}", body={"id": "x", "to": []})
            for key in keys.values()
        ]
    )
    for queue, key in keys.items():
        message = await take_from(admin, queue)
        assert message.message_id == f"m-{key}"
        assert message.routing_key == key


async def test_a_node_queue_receives_the_messages_keyed_by_its_node_id(
    broker: RabbitBroker, admin: AbstractChannel, topology: Topology
) -> None:
    queue = await broker.declare_node_queue("node-7")
    await RabbitMessagePublisher(broker).publish(
        [RoutedMessage(routing_key="node-7", message_id="e1_0", body={"id": "e1_0", "to": []})]
    )
    assert queue == topology.node_queue("node-7")
    assert (await take_from(admin, queue)).message_id == "e1_0"
    assert await ready_count(admin, topology.dead_letter_queue(queue)) == 0


async def test_the_topology_is_declared_again_after_a_reconnect(
    broker: RabbitBroker, admin: AbstractChannel, topology: Topology
) -> None:
    events = RabbitInboundEvents(broker)
    await admin.queue_delete(topology.event_queue)
    await admin.exchange_delete(topology.event_exchange)
    await admin.queue_delete(topology.dead_letter_queue(topology.event_queue))
    transport = broker.connection.transport
    assert transport is not None
    await transport.connection.close()
    await wait_until(lambda: not broker.healthy, what="the connection to be seen down")
    await wait_until(lambda: broker.healthy, what="the connection to be restored")

    await events.submit([make_event(1)])
    assert (await take_from(admin, topology.event_queue)).message_id == "e1"
    assert await ready_count(admin, topology.dead_letter_queue(topology.event_queue)) == 0


# --- inbound events ----------------------------------------------------------------------------


async def test_a_submitted_event_is_persistent_json_with_its_id(
    events: RabbitInboundEvents, admin: AbstractChannel, topology: Topology
) -> None:
    await events.submit([make_event(1)])
    message = await take_from(admin, topology.event_queue)
    assert message.message_id == "e1"
    assert message.content_type == "application/json"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert json.loads(message.body) == make_event(1)


async def test_a_submitted_event_is_delivered_and_an_ack_removes_it(
    events: RabbitInboundEvents, admin: AbstractChannel, topology: Topology
) -> None:
    await events.submit([make_event(1)])
    deliveries = events.deliveries()
    delivery = await next_delivery(deliveries)
    assert body_of(delivery) == make_event(1)
    assert delivery.attempts == 0
    await delivery.ack()
    await events.close()
    assert await ready_count(admin, topology.event_queue) == 0
    assert await ready_count(admin, topology.dead_letter_queue(topology.event_queue)) == 0


async def test_a_message_retried_max_attempts_times_ends_in_the_dead_letter_queue(
    events: RabbitInboundEvents, admin: AbstractChannel, topology: Topology
) -> None:
    await events.submit([make_event(1)])
    deliveries = events.deliveries()
    seen = []
    for failure in range(events.max_attempts):
        delivery = await next_delivery(deliveries)
        seen.append(delivery.attempts)
        assert body_of(delivery) == make_event(1)
        await delivery.retry(reason=f"failure {failure}")

    dead = await take_from(admin, topology.dead_letter_queue(topology.event_queue))
    assert seen == [0, 1, 2]
    assert json.loads(dead.body) == make_event(1)
    assert dead.message_id == "e1"
    assert dead.headers[REASON_HEADER] == "failure 2"
    assert dead.headers[ATTEMPTS_HEADER] == events.max_attempts
    assert dead.headers[QUEUE_HEADER] == topology.event_queue
    await events.close()
    assert await ready_count(admin, topology.event_queue) == 0


async def test_a_retried_message_carries_the_last_reason(
    events: RabbitInboundEvents, topology: Topology
) -> None:
    await events.submit([make_event(1)])
    deliveries = events.deliveries()
    await (await next_delivery(deliveries)).retry(reason="database down")
    again = await next_delivery(deliveries)
    assert again.attempts == 1
    assert again.message.headers[LAST_REASON_HEADER] == "database down"
    assert again.message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    await again.ack()


async def test_dead_letter_goes_straight_to_the_dead_letter_queue_with_the_reason(
    events: RabbitInboundEvents, admin: AbstractChannel, topology: Topology
) -> None:
    await events.submit([make_event(1), make_event(2)])
    deliveries = events.deliveries()
    first = await next_delivery(deliveries)
    await first.dead_letter(reason="malformed event")
    second = await next_delivery(deliveries)
    await second.ack()

    dead = await take_from(admin, topology.dead_letter_queue(topology.event_queue))
    assert json.loads(dead.body) == make_event(1)
    assert dead.headers[REASON_HEADER] == "malformed event"
    assert dead.headers[ATTEMPTS_HEADER] == 1
    assert body_of(second) == make_event(2)
    await events.close()
    assert await ready_count(admin, topology.event_queue) == 0


async def test_release_puts_the_message_back_without_counting(
    events: RabbitInboundEvents, admin: AbstractChannel, topology: Topology
) -> None:
    await events.submit([make_event(1)])
    deliveries = events.deliveries()
    await (await next_delivery(deliveries)).release()
    again = await next_delivery(deliveries)
    assert body_of(again) == make_event(1)
    assert again.attempts == 0
    assert again.redelivered
    await again.ack()
    assert await ready_count(admin, topology.dead_letter_queue(topology.event_queue)) == 0


async def test_settling_twice_is_an_error(events: RabbitInboundEvents) -> None:
    await events.submit([make_event(1)])
    delivery = await next_delivery(events.deliveries())
    await delivery.ack()
    with pytest.raises(RuntimeError, match="already settled"):
        await delivery.release()


async def test_prefetch_bounds_the_unsettled_deliveries(
    broker: RabbitBroker, admin: AbstractChannel, topology: Topology
) -> None:
    events = RabbitInboundEvents(broker, prefetch=3)
    await events.submit([make_event(number) for number in range(6)])
    deliveries = events.deliveries()
    held = [await next_delivery(deliveries) for _ in range(3)]
    # With three unsettled, the broker keeps the other three back.
    assert await ready_count(admin, topology.event_queue) == 3
    await held[0].ack()
    fourth = await next_delivery(deliveries)
    assert await ready_count(admin, topology.event_queue) == 2
    assert [body_of(d)["id"] for d in [*held, fourth]] == ["e0", "e1", "e2", "e3"]
    await events.close()


async def test_deliveries_end_after_close(events: RabbitInboundEvents) -> None:
    await events.start()
    waiting = asyncio.ensure_future(anext(events.deliveries()))
    await asyncio.sleep(0)
    await events.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, WAIT_SECONDS)


async def test_closing_while_starting_leaves_no_consumer(
    events: RabbitInboundEvents, admin: AbstractChannel, topology: Topology
) -> None:
    starting = asyncio.ensure_future(events.start())
    await asyncio.sleep(0)
    await events.close()
    await starting
    declared = await admin.declare_queue(topology.event_queue, passive=True)
    assert declared.declaration_result.consumer_count == 0
    with pytest.raises(StopAsyncIteration):
        await anext(events.deliveries())


async def test_closing_the_broker_ends_the_deliveries(
    broker: RabbitBroker, events: RabbitInboundEvents
) -> None:
    await events.start()
    waiting = asyncio.ensure_future(anext(events.deliveries()))
    await asyncio.sleep(0)
    await broker.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, WAIT_SECONDS)
    assert not broker.healthy


# --- outbound messages -------------------------------------------------------------------------


async def test_a_published_message_arrives_with_its_message_id(
    broker: RabbitBroker, admin: AbstractChannel, topology: Topology
) -> None:
    body = {"id": "e1_agent_0", "event": make_event(1), "to": ["org.wt.robot"]}
    await RabbitMessagePublisher(broker).publish(
        [RoutedMessage(routing_key="org.wt.robot", message_id="e1_agent_0", body=body)]
    )
    message = await take_from(admin, topology.prefix + "robot-message-queue")
    assert message.message_id == "e1_agent_0"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.content_type == "application/json"
    assert json.loads(message.body) == body


async def test_an_unroutable_message_is_returned_and_the_rest_delivered(
    broker: RabbitBroker, admin: AbstractChannel, topology: Topology
) -> None:
    publisher = RabbitMessagePublisher(broker)
    nobody = RoutedMessage(routing_key="org.wt.nobody", message_id="x", body={"id": "x"})
    robot = RoutedMessage(routing_key="org.wt.robot", message_id="y", body={"id": "y"})
    assert await publisher.publish([nobody, robot]) == [nobody]
    # The channel is still usable afterwards, and the routable message arrived.
    assert await publisher.publish([robot]) == []
    for _ in range(2):
        received = await take_from(admin, topology.prefix + "robot-message-queue")
        assert received.message_id == "y"


# --- broker restart ----------------------------------------------------------------------------


async def test_consumption_resumes_after_a_broker_restart_with_nothing_lost(
    broker: RabbitBroker,
    events: RabbitInboundEvents,
    rabbitmq_server: RabbitMqServer,
    topology: Topology,
) -> None:
    await events.submit([make_event(number) for number in range(6)])
    deliveries = events.deliveries()
    processed = []
    for _ in range(2):
        delivery = await next_delivery(deliveries)
        processed.append(body_of(delivery)["id"])
        await delivery.ack()
    unsettled = [await next_delivery(deliveries) for _ in range(2)]
    assert broker.healthy
    assert await broker.ping()

    await rabbitmq_server.astop()
    await wait_until(lambda: not broker.healthy, what="healthy to turn False")
    assert not events.healthy
    assert not await broker.ping()
    with pytest.raises(MessagingError, match="not reachable"):
        await events.submit([make_event(99)])
    await rabbitmq_server.astart()
    await wait_until(lambda: broker.healthy, what="healthy to turn True")
    assert await broker.ping()
    await wait_until(lambda: events.healthy, what="the consumer's channel to be restored")

    # What was out with the lost channel is back in the queue: settling it changes nothing.
    await unsettled[0].ack()
    await unsettled[1].retry(reason="too late")
    await events.submit([make_event(6)])
    expected = {f"e{number}" for number in range(7)}
    # At least once: an ack the broker had not read when it stopped may bring one back.
    while not expected <= set(processed):
        delivery = await next_delivery(deliveries)
        assert delivery.attempts == 0
        processed.append(body_of(delivery)["id"])
        await delivery.ack()
    await events.close()

    assert set(processed) == expected
    connection = await aio_pika.connect(rabbitmq_server.url)
    channel = await connection.channel()
    assert await ready_count(channel, topology.event_queue) == 0
    assert await ready_count(channel, topology.dead_letter_queue(topology.event_queue)) == 0
    await connection.close()
