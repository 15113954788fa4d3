"""RabbitMQ adapter (aio-pika): the §12 topology, inbound events and outbound messages.

`RabbitBroker` owns one robust connection, declares the topology and reports health;
`RabbitInboundEvents` implements `ports.InboundEvents` and `RabbitMessagePublisher` implements
`ports.MessagePublisher` on top of it::

    broker = await RabbitBroker.connect(url)
    events = RabbitInboundEvents(broker, prefetch=10, max_attempts=5)
    publisher = RabbitMessagePublisher(broker)

Choices where the contract leaves room (the lead's runtime relies on them):

* Topology. `event-exchange` (topic) is bound to `event-queue` with `#`: every event published
  to the exchange is consumed, whatever key a publisher uses; `submit` uses `org.wt.event`.
  Each consumed queue `<q>` (the event queue, the six message queues and the node queues) has
  its own fanout dead-letter exchange `<q>.dlx` and dead-letter queue `<q>.dead`, and is
  declared with `x-dead-letter-exchange: <q>.dlx` so that a broker-side dead-lettering (a
  consumer's reject) lands there too. Every exchange and queue is durable; `Topology.prefix`
  prefixes every exchange and queue name (not the routing keys) so tests can isolate.
* Restoration. Declarations are made on long-lived robust channels, which aio-pika restores
  on reconnect; in addition the whole topology is declared again after every reconnect before
  `healthy` turns True again, so a broker that lost its definitions gets them back.
* Attempts. `attempts` is the `x-srvthreds-attempts` header (absent: 0): how many processings
  of the message failed through `retry`. A broker redelivery after a crash or a `release` is
  not counted (classic queues keep no delivery count).
* `retry` republishes a copy (same body and properties, `x-srvthreds-attempts` + 1, the reason
  in `x-srvthreds-last-reason`) through the default exchange straight to the consumed queue,
  waits for its confirm, then acks the original: the retry goes to the tail of the queue, it
  is not delayed. The failure that makes `attempts + 1` reach `max_attempts` dead-letters the
  message instead, so a message is processed at most `max_attempts` times.
* `dead_letter` publishes a copy to `<q>.dlx` with confirms, then acks the original: a reject
  cannot add headers, and the copy carries `x-srvthreds-reason`, `x-srvthreds-attempts` (the
  failed processings, this one included) and `x-srvthreds-queue` (where it came from).
* Settling never raises for a broker failure. When the channel the message came on is gone
  (a reconnect), the broker has already put the message back and will deliver it again; when
  the copy of a retry or a dead-lettering cannot be published, the original is released. At
  worst a message is delivered twice, which the engine recognises by the event id. Settling a
  delivery twice is a programming error (`RuntimeError`).
* Publishing (`submit`, `publish`) waits up to `ready_timeout` for a connection that is down,
  then publishes every message at once with `mandatory` set and waits for every confirm; a
  nack, an unroutable message (returned), a lost connection or a timeout raises
  `MessagingError` (some of the messages may have been delivered: publishing again may
  duplicate them, which consumers recognise by `message_id`).
* `deliveries()` starts the consumer on first use; one iteration at a time; it ends after
  `close()` (of the events or of the broker). Deliveries received on a channel that has since
  closed are skipped (the broker delivers them again on the new channel). Besides `body` and
  `attempts`, a delivery has `redelivered` (the broker's flag: delivered before, e.g. to a
  process that crashed) and `message` (the aio-pika message).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustExchange,
    AbstractRobustQueue,
)

from srvthreds_engine.ports import RoutedMessage

_log = logging.getLogger(__name__)

ATTEMPTS_HEADER = "x-srvthreds-attempts"
REASON_HEADER = "x-srvthreds-reason"
LAST_REASON_HEADER = "x-srvthreds-last-reason"
QUEUE_HEADER = "x-srvthreds-queue"
JSON_CONTENT_TYPE = "application/json"

DEFAULT_MESSAGE_QUEUES: tuple[tuple[str, str], ...] = (
    ("session1-message-queue", "org.wt.session1"),
    ("session-message-queue", "org.wt.session"),
    ("persistence-message-queue", "org.wt.persistence"),
    ("robot-message-queue", "org.wt.robot"),
    ("pattern-message-queue", "org.wt.pattern"),
    ("sensor-message-queue", "org.wt.sensor"),
)

# Errors of a broker or connection that went away (as opposed to programming errors).
_BROKER_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPError,
    aio_pika.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    TimeoutError,
)


class MessagingError(Exception):
    """Publishing failed: nacked, unroutable, not confirmed in time or the broker is down."""


@dataclass(frozen=True, slots=True)
class Topology:
    """The exchange, queue and routing key names of spec §12 (`prefix` isolates tests)."""

    prefix: str = ""
    event_exchange_base: str = "event-exchange"
    event_queue_base: str = "event-queue"
    event_binding_key: str = "#"
    event_routing_key: str = "org.wt.event"
    message_exchange_base: str = "message-exchange"
    message_queue_bases: tuple[tuple[str, str], ...] = DEFAULT_MESSAGE_QUEUES
    dead_letter_exchange_suffix: str = ".dlx"
    dead_letter_queue_suffix: str = ".dead"
    node_queue_suffix: str = "-message-queue"

    @property
    def event_exchange(self) -> str:
        """The exchange events are published to."""
        return self.prefix + self.event_exchange_base

    @property
    def event_queue(self) -> str:
        """The queue every engine replica consumes events from."""
        return self.prefix + self.event_queue_base

    @property
    def message_exchange(self) -> str:
        """The exchange outbound messages are published to."""
        return self.prefix + self.message_exchange_base

    @property
    def message_queues(self) -> tuple[tuple[str, str], ...]:
        """`(queue, binding key)` of each agent's message queue."""
        return tuple((self.prefix + queue, key) for queue, key in self.message_queue_bases)

    def node_queue(self, node_id: str) -> str:
        """The message queue of one session-agent replica (bound by its node id)."""
        return self.prefix + node_id + self.node_queue_suffix

    def static_queue_for(self, routing_key: str) -> str | None:
        """The §12 message queue bound by `routing_key` (e.g. `org.wt.session1`), if any."""
        for queue, key in self.message_queues:
            if key == routing_key:
                return queue
        return None

    def dead_letter_exchange(self, queue: str) -> str:
        """The dead-letter exchange of a consumed queue (a full, prefixed name)."""
        return queue + self.dead_letter_exchange_suffix

    def dead_letter_queue(self, queue: str) -> str:
        """The dead-letter queue of a consumed queue (a full, prefixed name)."""
        return queue + self.dead_letter_queue_suffix

    def consumed_queues(self) -> tuple[str, ...]:
        """Every queue a consumer reads (each has a dead-letter exchange and queue)."""
        return (self.event_queue, *(queue for queue, _ in self.message_queues))

    def exchange_names(self) -> tuple[str, ...]:
        """Every exchange `declare_topology` declares (without node queues)."""
        dead = (self.dead_letter_exchange(queue) for queue in self.consumed_queues())
        return (self.event_exchange, self.message_exchange, *dead)

    def queue_names(self) -> tuple[str, ...]:
        """Every queue `declare_topology` declares (without node queues)."""
        dead = (self.dead_letter_queue(queue) for queue in self.consumed_queues())
        return (*self.consumed_queues(), *dead)


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON, the body of every message this adapter publishes."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def attempts_of(headers: Mapping[str, Any]) -> int:
    """The failed processings recorded in a message's headers (0 when absent or malformed)."""
    value = headers.get(ATTEMPTS_HEADER)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return value


def _json_message(body: Any, *, message_id: str | None) -> aio_pika.Message:
    return aio_pika.Message(
        encode_json(body),
        message_id=message_id,
        content_type=JSON_CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def _copy_message(
    message: AbstractIncomingMessage, *, headers: Mapping[str, Any]
) -> aio_pika.Message:
    """A persistent copy of a delivered message with new headers (user_id and expiry dropped)."""
    return aio_pika.Message(
        message.body,
        headers={**message.headers, **headers},
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=message.priority,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
    )


class RabbitBroker:
    """One robust connection to RabbitMQ: topology, health, and confirmed publishing."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        *,
        topology: Topology,
        ready_timeout: float,
        publish_timeout: float,
    ) -> None:
        self.connection = connection
        self.topology = topology
        self.ready_timeout = ready_timeout
        self.publish_timeout = publish_timeout
        self._channel: AbstractRobustChannel | None = None
        self._node_ids: list[str] = []
        self._consumers: list[RabbitInboundEvents] = []
        self._ready = asyncio.Event()
        self._closing = False

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        topology: Topology | None = None,
        reconnect_interval: float = 1.0,
        connect_timeout: float = 10.0,
        ready_timeout: float = 5.0,
        publish_timeout: float = 30.0,
    ) -> RabbitBroker:
        """Connect (failing fast when the broker cannot be reached) and declare the topology."""
        connection = await aio_pika.connect_robust(
            url, reconnect_interval=reconnect_interval, timeout=connect_timeout
        )
        broker = cls(
            connection,
            topology=topology or Topology(),
            ready_timeout=ready_timeout,
            publish_timeout=publish_timeout,
        )
        try:
            await broker.start()
        except BaseException:
            await connection.close()
            raise
        return broker

    async def start(self) -> None:
        """Open the publishing channel, declare the topology, and follow the connection."""
        channel = self.connection.channel(publisher_confirms=True, on_return_raises=True)
        await channel.initialize()
        self._channel = channel
        await self.declare_topology()
        self.connection.close_callbacks.add(self._on_connection_lost)
        self.connection.reconnect_callbacks.add(self._on_reconnected)
        self._ready.set()

    @property
    def channel(self) -> AbstractRobustChannel:
        """The publishing channel (publisher confirms, returns raise)."""
        if self._channel is None:
            raise RuntimeError("RabbitBroker.start() was not called")
        return self._channel

    @property
    def healthy(self) -> bool:
        """Whether the connection is up and the topology declared on it (readiness)."""
        return (
            self._ready.is_set()
            and not self.connection.is_closed
            and self.connection.connected.is_set()
            and not self.channel.is_closed
        )

    async def ping(self, *, within: float = 5.0) -> bool:
        """Whether the broker answers a request within `within` seconds (False while down)."""
        if not self.healthy:
            return False
        try:
            underlay = await self.channel.get_underlay_channel()
            # basic.qos is answered and changes nothing on a channel without consumers; a
            # passive declare of a missing queue would close the publishing channel instead.
            await underlay.basic_qos(prefetch_count=0, timeout=within)
        except _BROKER_ERRORS:
            return False
        return True

    async def wait_ready(self) -> None:
        """Wait until the connection is up; `MessagingError` after `ready_timeout` seconds."""
        if self.healthy:
            return
        try:
            await asyncio.wait_for(self._ready.wait(), self.ready_timeout)
        except TimeoutError:
            raise MessagingError("RabbitMQ is not reachable") from None

    async def declare_topology(self, *, robust: bool = True) -> None:
        """Declare every exchange, queue and binding of §12 (idempotent)."""
        topology = self.topology
        event_exchange = await self._declare_exchange(topology.event_exchange, robust=robust)
        message_exchange = await self._declare_exchange(topology.message_exchange, robust=robust)
        await self._declare_consumed_queue(
            topology.event_queue,
            exchange=event_exchange,
            keys=[topology.event_binding_key],
            robust=robust,
        )
        for queue, key in topology.message_queues:
            await self._declare_consumed_queue(
                queue, exchange=message_exchange, keys=[key], robust=robust
            )
        for node_id in self._node_ids:
            await self._declare_node_queue(node_id, robust=robust)

    async def declare_node_queue(self, node_id: str) -> str:
        """Declare (and keep restoring) the message queue of a session-agent replica.

        A node id that is the binding key of a §12 queue (`org.wt.session1`) gets that queue:
        a second queue on the same key would receive a copy of every message.
        """
        static = self.topology.static_queue_for(node_id)
        if static is not None:
            return static
        name = await self._declare_node_queue(node_id, robust=True)
        if node_id not in self._node_ids:
            self._node_ids.append(node_id)
        return name

    async def publish(
        self,
        messages: Iterable[tuple[aio_pika.Message, str]],
        *,
        exchange: str,
        unroutable_ok: bool = False,
    ) -> list[int]:
        """Publish `(message, routing key)` pairs at once and wait for every confirm.

        With `unroutable_ok`, a message no queue is bound for is not an error: the indexes of
        such messages are returned.
        """
        await self.wait_ready()
        target = await self.channel.get_exchange(exchange, ensure=False)
        return await self._confirm_all(target, messages, unroutable_ok=unroutable_ok)

    async def publish_to_queue(self, message: aio_pika.Message, *, queue: str) -> None:
        """Publish one message straight to a queue (the default exchange) with a confirm."""
        await self.wait_ready()
        await self._confirm_all(self.channel.default_exchange, [(message, queue)])

    def queue_arguments(self, queue: str) -> dict[str, Any]:
        """The declaration arguments of a consumed queue (a redeclare must repeat them)."""
        return {"x-dead-letter-exchange": self.topology.dead_letter_exchange(queue)}

    async def close(self) -> None:
        """End every consumer's `deliveries()`, then close the connection (unsettled
        deliveries go back to their queues)."""
        self._closing = True
        for consumer in self._consumers:
            await consumer.close()
        self._ready.clear()
        await self.connection.close()

    async def _confirm_all(
        self,
        exchange: AbstractExchange,
        messages: Iterable[tuple[aio_pika.Message, str]],
        *,
        unroutable_ok: bool = False,
    ) -> list[int]:
        publishes = [
            exchange.publish(message, routing_key=key, mandatory=True, timeout=self.publish_timeout)
            for message, key in messages
        ]
        results = await asyncio.gather(*publishes, return_exceptions=True)
        unroutable = [
            index
            for index, result in enumerate(results)
            if unroutable_ok and isinstance(result, aiormq.exceptions.PublishError)
        ]
        failures = [
            result
            for index, result in enumerate(results)
            if isinstance(result, BaseException) and index not in unroutable
        ]
        if failures:
            raise MessagingError(
                f"{len(failures)} of {len(results)} messages to {exchange.name!r} not confirmed: "
                f"{failures[0]!r}"
            ) from failures[0]
        return unroutable

    async def _declare_exchange(
        self, name: str, *, robust: bool, kind: aio_pika.ExchangeType = aio_pika.ExchangeType.TOPIC
    ) -> AbstractRobustExchange:
        return await self.channel.declare_exchange(name, kind, durable=True, robust=robust)

    async def _declare_consumed_queue(
        self, name: str, *, exchange: AbstractExchange, keys: Sequence[str], robust: bool
    ) -> AbstractRobustQueue:
        dead_exchange = await self._declare_exchange(
            self.topology.dead_letter_exchange(name),
            robust=robust,
            kind=aio_pika.ExchangeType.FANOUT,
        )
        dead_queue = await self.channel.declare_queue(
            self.topology.dead_letter_queue(name), durable=True, robust=robust
        )
        await dead_queue.bind(dead_exchange, routing_key="", robust=robust)
        queue = await self.channel.declare_queue(
            name, durable=True, arguments=self.queue_arguments(name), robust=robust
        )
        for key in keys:
            await queue.bind(exchange, routing_key=key, robust=robust)
        return queue

    async def _declare_node_queue(self, node_id: str, *, robust: bool) -> str:
        message_exchange = await self._declare_exchange(
            self.topology.message_exchange, robust=robust
        )
        name = self.topology.node_queue(node_id)
        await self._declare_consumed_queue(
            name, exchange=message_exchange, keys=[node_id], robust=robust
        )
        return name

    def _on_connection_lost(self, *_: Any) -> None:
        # Also called for every failed reconnection attempt: log the transition only.
        if self._ready.is_set() and not self._closing:
            _log.warning("RabbitMQ connection lost; reconnecting")
        self._ready.clear()

    async def _on_reconnected(self, *_: Any) -> None:
        # Robust channels redeclare what they declared; declaring it all again (not recorded
        # twice) also covers a broker that lost definitions declared through another channel.
        try:
            await self.declare_topology(robust=False)
        except _BROKER_ERRORS:
            _log.exception("RabbitMQ topology not restored after reconnect")
            return
        _log.info("RabbitMQ connection restored")
        self._ready.set()


class RabbitDelivery:
    """One delivered event message and its settling (see the module docstring)."""

    def __init__(self, message: AbstractIncomingMessage, *, events: RabbitInboundEvents) -> None:
        self.body: bytes = message.body
        self.attempts: int = attempts_of(message.headers)
        # The broker delivered it before (a crash or `release`), which `attempts` does not count.
        self.redelivered: bool = bool(message.redelivered)
        self.message = message
        self._events = events
        self._settled = False

    async def ack(self) -> None:
        """Processed: remove it from the queue."""
        if self._settle():
            await self._acknowledge()

    async def retry(self, *, reason: str) -> None:
        """Failed: back to the tail of the queue counted, or dead-lettered after the last try."""
        if not self._settle():
            return
        failures = self.attempts + 1
        if failures >= self._events.max_attempts:
            await self._dead_letter(reason=reason, failures=failures)
            return
        copy = _copy_message(
            self.message, headers={ATTEMPTS_HEADER: failures, LAST_REASON_HEADER: reason}
        )
        try:
            await self._events.broker.publish_to_queue(copy, queue=self._events.queue)
        except MessagingError:
            _log.warning("retry of message %s not published; released", self.message.message_id)
            await self._requeue()
            return
        await self._acknowledge()

    async def dead_letter(self, *, reason: str) -> None:
        """Never processable: to the dead-letter queue with `reason`."""
        if self._settle():
            await self._dead_letter(reason=reason, failures=self.attempts + 1)

    async def release(self) -> None:
        """Not processed: back to the queue, not counted."""
        if self._settle():
            await self._requeue()

    def _settle(self) -> bool:
        """Mark settled; False when the broker has already taken the message back."""
        if self._settled:
            raise RuntimeError(f"delivery {self.message.message_id} is already settled")
        self._settled = True
        if _channel_closed(self.message):
            # Its channel closed (a reconnect): the broker requeued it and delivers it again;
            # a retry or dead-letter copy now would only duplicate it.
            _log.info("delivery %s lost with its channel; redelivered", self.message.message_id)
            return False
        return True

    async def _dead_letter(self, *, reason: str, failures: int) -> None:
        queue = self._events.queue
        headers = {REASON_HEADER: reason, ATTEMPTS_HEADER: failures, QUEUE_HEADER: queue}
        copy = _copy_message(self.message, headers=headers)
        exchange = self._events.broker.topology.dead_letter_exchange(queue)
        try:
            await self._events.broker.publish([(copy, queue)], exchange=exchange)
        except MessagingError:
            _log.warning("message %s not dead-lettered; released", self.message.message_id)
            await self._requeue()
            return
        _log.warning("message %s dead-lettered: %s", self.message.message_id, reason)
        await self._acknowledge()

    async def _acknowledge(self) -> None:
        try:
            await self.message.ack()
        except _BROKER_ERRORS:
            _log.info("ack of %s lost with its channel; redelivered", self.message.message_id)

    async def _requeue(self) -> None:
        try:
            await self.message.nack(requeue=True)
        except _BROKER_ERRORS:
            _log.info("nack of %s lost with its channel; redelivered", self.message.message_id)


class RabbitInboundEvents:
    """`InboundEvents` on a RabbitMQ queue (`event-queue` by default; agents pass theirs)."""

    def __init__(
        self,
        broker: RabbitBroker,
        *,
        queue: str | None = None,
        prefetch: int = 10,
        max_attempts: int = 5,
    ) -> None:
        if prefetch < 1 or max_attempts < 1:
            raise ValueError("prefetch and max_attempts must be at least 1")
        self.broker = broker
        self.queue = queue or broker.topology.event_queue
        self.prefetch = prefetch
        self.max_attempts = max_attempts
        # None marks the end (after close()).
        self._buffer: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()
        self._channel: AbstractRobustChannel | None = None
        self._consumer: tuple[AbstractRobustQueue, str] | None = None
        self._closed = False
        self._lifecycle = asyncio.Lock()
        broker._consumers.append(self)

    @property
    def healthy(self) -> bool:
        """Whether the connection is up and the consumer's channel (once started) open."""
        return self.broker.healthy and (self._channel is None or not self._channel.is_closed)

    async def start(self) -> None:
        """Start consuming (at most `prefetch` unsettled deliveries); `deliveries()` calls it.

        A no-op once started or closed."""
        async with self._lifecycle:
            if self._consumer is not None or self._closed:
                return
            await self.broker.wait_ready()
            channel = self.broker.connection.channel(publisher_confirms=False)
            self._channel = channel
            await channel.initialize()
            await channel.set_qos(prefetch_count=self.prefetch)
            # Declared on this channel (same arguments as the topology) so that the robust
            # channel restores the queue together with its consumer.
            queue = await channel.declare_queue(
                self.queue, durable=True, arguments=self.broker.queue_arguments(self.queue)
            )
            self._consumer = (queue, await queue.consume(self._buffer.put, no_ack=False))

    async def deliveries(self) -> AsyncIterator[RabbitDelivery]:
        """Deliveries as they arrive, across reconnects, until `close()`."""
        await self.start()
        while True:
            item = await self._buffer.get()
            if item is None:
                self._buffer.put_nowait(None)
                return
            if _channel_closed(item):
                continue
            yield RabbitDelivery(item, events=self)

    async def submit(self, events: Sequence[dict[str, Any]]) -> None:
        """Publish events (persistent JSON, `message_id` = event id) and wait for every confirm."""
        if not events:
            return
        key = self.broker.topology.event_routing_key
        messages = [(_json_message(event, message_id=_event_id(event)), key) for event in events]
        await self.broker.publish(messages, exchange=self.broker.topology.event_exchange)

    async def close(self) -> None:
        """Stop consuming; unsettled deliveries return to the queue; `deliveries()` ends."""
        if self._closed:
            return
        self._closed = True
        async with self._lifecycle:  # not in the middle of start()
            consumer, self._consumer = self._consumer, None
            channel, self._channel = self._channel, None
        if consumer is not None and channel is not None and not channel.is_closed:
            queue, tag = consumer
            try:
                await queue.cancel(tag)
            except _BROKER_ERRORS:
                _log.debug("consumer %s not cancelled", tag, exc_info=True)
        if channel is not None:
            try:
                await channel.close()
            except _BROKER_ERRORS:
                _log.debug("consumer channel not closed cleanly", exc_info=True)
        self._buffer.put_nowait(None)


class RabbitMessagePublisher:
    """`MessagePublisher` to `message-exchange` (persistent, confirmed; unroutable reported)."""

    def __init__(self, broker: RabbitBroker) -> None:
        self.broker = broker

    async def publish(self, messages: Sequence[RoutedMessage]) -> list[RoutedMessage]:
        """Publish every message with its routing key, confirmed; return the unroutable ones.

        A message whose routing key no queue is bound for (an agent that is not deployed) is
        returned, not raised: nobody can take it, and redelivering its event would not change
        that. A nack, a timeout or a lost connection raises `MessagingError`.
        """
        if not messages:
            return []
        batch = [
            (_json_message(message.body, message_id=message.message_id), message.routing_key)
            for message in messages
        ]
        unroutable = await self.broker.publish(
            batch, exchange=self.broker.topology.message_exchange, unroutable_ok=True
        )
        return [messages[index] for index in unroutable]


def _event_id(event: Mapping[str, Any]) -> str | None:
    value = event.get("id")
    return value if isinstance(value, str) else None


def _channel_closed(message: AbstractIncomingMessage) -> bool:
    try:
        return message.channel.is_closed
    except aiormq.exceptions.ChannelInvalidStateError:
        return True
