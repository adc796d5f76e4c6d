"""Behaviour every Transport must have. Runs against each implementation."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from types import SimpleNamespace
from typing import Any

import aio_pika
import aiormq
import pytest
from aio_pika.abc import UnderlayConnection
from aio_pika.tools import OneShotCallback

from contracts.errors import ConveyorError
from contracts.ports import processing
from engine.transport.failover import GuardedChannel
from engine.transport.queues import mismatch_advice, queue_arguments
from engine.transport.rabbit_consumer import RabbitConsumer
from engine.transport.rabbitmq import RabbitTransport
from tests.amqp import amqp_channel
from tests.deadletters import until_dead_lettered

Transport = Any  # MemoryTransport | RabbitTransport: the Protocol plus dead-letter peeking


@pytest.fixture
def transport(each_transport: Any) -> Any:
    return each_transport


@pytest.fixture
def q() -> str:
    """A queue of this test's own, so tests sharing a broker do not see each other."""
    return f"test.{uuid.uuid4().hex[:12]}"


async def test_messages_arrive_in_order_and_ack_removes_them(transport: Transport, q: str) -> None:
    await transport.publish(q, [b"1", b"2", b"3"])
    consumer = await transport.consume(q, prefetch=10)
    it = aiter(consumer)
    got = []
    for _ in range(3):
        delivery = await anext(it)
        got.append(delivery.body)
        assert not delivery.redelivered
        await delivery.ack()
    assert got == [b"1", b"2", b"3"]
    await consumer.close()
    second = await transport.consume(q, prefetch=10)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(aiter(second)), 0.05)


async def test_prefetch_bounds_unsettled_deliveries(transport: Transport, q: str) -> None:
    await transport.publish(q, [b"a", b"b", b"c"])
    consumer = await transport.consume(q, prefetch=2)
    it = aiter(consumer)
    first = await anext(it)
    await anext(it)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(it), 0.05)
    await first.ack()
    third = await asyncio.wait_for(anext(it), 1)
    assert third.body == b"c"


async def test_nack_with_requeue_redelivers(transport: Transport, q: str) -> None:
    await transport.publish(q, [b"x", b"y"])
    consumer = await transport.consume(q, prefetch=1)
    it = aiter(consumer)
    first = await anext(it)
    await first.nack(requeue=True)
    again = await anext(it)
    assert again.body == b"x" and again.redelivered


async def test_reject_without_requeue_dead_letters(transport: Transport, q: str) -> None:
    await transport.publish(q, [b"poison"], headers={"traceparent": "00-ab-cd-01"})
    consumer = await transport.consume(q, prefetch=1)
    delivery = await anext(aiter(consumer))
    await delivery.nack(requeue=False)
    await until_dead_lettered(transport, b"poison")


async def test_closing_a_consumer_returns_unsettled_messages(transport: Transport, q: str) -> None:
    await transport.publish(q, [b"m"])
    consumer = await transport.consume(q, prefetch=1)
    await anext(aiter(consumer))
    await consumer.close()  # e.g. the worker died before acking
    other = await transport.consume(q, prefetch=1)
    delivery = await asyncio.wait_for(anext(aiter(other)), 1)
    assert delivery.body == b"m" and delivery.redelivered


async def test_a_drained_consumer_ends_after_what_it_was_sent_and_can_still_settle_it(
    transport: Transport, q: str
) -> None:
    """Draining is how a worker stops a consumer before it acks (so acks do not make
    room for more messages): what was on its way still arrives, nothing after it, and
    whatever is not settled by the close goes back to the queue."""
    await transport.publish(q, [b"1", b"2", b"3", b"4"])
    consumer = await transport.consume(q, prefetch=3)
    it = aiter(consumer)
    first = await anext(it)
    await consumer.drain()
    rest = [delivery async for delivery in it]  # ends: no more deliveries come
    handed = [first.body, *(d.body for d in rest)]
    assert handed == [b"1", b"2", b"3"][: len(handed)]
    await first.ack()  # settling still works after the drain
    await consumer.close()  # ... and the rest, not settled, go back

    other = await transport.consume(q, prefetch=10)
    back = [await asyncio.wait_for(anext(aiter(other)), 1) for _ in range(3)]
    assert sorted(d.body for d in back) == [b"2", b"3", b"4"]
    assert all(d.redelivered for d in back if d.body in handed)
    with pytest.raises(TimeoutError):  # the acked one is gone for good
        await asyncio.wait_for(anext(aiter(other)), 0.1)


async def test_a_drained_consumer_reopens_with_a_new_prefetch_and_keeps_what_it_had(
    transport: Transport, q: str
) -> None:
    """After a drain the same consumer delivers again, as many as its new prefetch: the
    deliveries from before stay its own to settle and count against it no more."""
    await transport.publish(q, [str(i).encode() for i in range(6)])
    consumer = await transport.consume(q, prefetch=2)
    it = aiter(consumer)
    first = await anext(it)
    await consumer.drain()
    before = [first, *[delivery async for delivery in it]]
    await consumer.reopen(prefetch=3)
    it = aiter(consumer)
    after = [await asyncio.wait_for(anext(it), 1) for _ in range(3)]
    with pytest.raises(TimeoutError):  # three unsettled: the new prefetch is reached
        await asyncio.wait_for(anext(it), 0.1)
    bodies = [d.body for d in before + after]
    assert bodies == [str(i).encode() for i in range(len(bodies))]  # in order, none twice
    for delivery in before:  # settled after the reopen, on the same consumer
        await delivery.ack()
    await after[0].ack()
    assert (await asyncio.wait_for(anext(it), 1)).body == str(len(bodies)).encode()
    await consumer.close()


async def test_each_message_goes_to_one_of_several_consumers(transport: Transport, q: str) -> None:
    bodies = [str(i).encode() for i in range(20)]
    await transport.publish(q, bodies)
    seen: list[bytes] = []

    async def drain(prefetch: int) -> None:
        consumer = await transport.consume(q, prefetch=prefetch)
        it = aiter(consumer)
        while len(seen) < len(bodies):
            try:
                delivery = await asyncio.wait_for(anext(it), 0.2)
            except TimeoutError:
                return
            seen.append(delivery.body)
            await delivery.ack()

    await asyncio.gather(drain(1), drain(3))
    assert sorted(seen) == sorted(bodies)


async def test_processing_acks_requeues_or_dead_letters(transport: Transport, q: str) -> None:
    await transport.publish(q, [b"ok", b"retry", b"fatal"])
    consumer = await transport.consume(q, prefetch=1)
    it = aiter(consumer)
    async with processing(await anext(it)):
        pass
    with pytest.raises(ConveyorError):
        async with processing(await anext(it)):
            raise ConveyorError("transient", retryable=True)
    redelivered = await anext(it)
    assert redelivered.body == b"retry" and redelivered.redelivered
    await redelivered.ack()
    with pytest.raises(ConveyorError):
        async with processing(await anext(it)):
            raise ConveyorError("never works", retryable=False)
    await until_dead_lettered(transport, b"fatal")


async def test_broadcast_reaches_every_listener(transport: Transport, q: str) -> None:
    one, two = transport.listen(q), transport.listen(q)
    await one.ready()
    await two.ready()
    await transport.broadcast(q, b"stop")
    assert await anext(aiter(one)) == b"stop"
    assert await anext(aiter(two)) == b"stop"


async def test_headers_travel_with_messages(transport: Transport, q: str) -> None:
    await transport.publish(
        q, [b"m"], headers={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}
    )
    consumer = await transport.consume(q, prefetch=1)
    delivery = await anext(aiter(consumer))
    assert delivery.headers["traceparent"].startswith("00-aaaa")


async def test_announcements_reach_the_queues_bound_to_matching_keys(
    transport: Transport, q: str
) -> None:
    other = f"{q}.other"
    await transport.bind_announcements(q, f"run.{q}.*")
    await transport.bind_announcements(other, "task.#")
    await transport.announce(f"run.{q}.succeeded", b"one")
    await transport.announce(f"run.{q}-x.failed", b"not bound")
    await transport.announce(f"task.{q}.running", b"two")
    for queue, expected in ((q, b"one"), (other, b"two")):
        consumer = await transport.consume(queue, prefetch=10)
        delivery = await asyncio.wait_for(anext(aiter(consumer)), 5)
        assert delivery.body == expected
        await delivery.ack()
        assert consumer.ready(10) == []
        await consumer.close()


async def test_announcements_sent_together_arrive_in_the_order_they_were_started(
    transport: Transport, q: str
) -> None:
    """The announcer sends a window of state changes before awaiting their confirms, and
    relies on the transport to send them in the order it started them."""
    await transport.bind_announcements(q, f"task.{q}.*")
    bodies = [str(n).encode() for n in range(300)]
    await asyncio.gather(*(transport.announce(f"task.{q}.running", body) for body in bodies))
    consumer = await transport.consume(q, prefetch=len(bodies))
    got: list[bytes] = []
    async with asyncio.timeout(10):
        async for delivery in consumer:
            got.append(delivery.body)
            await delivery.ack()
            if len(got) == len(bodies):
                break
    assert got == bodies
    await consumer.close()


def test_topic_matching_follows_amqp() -> None:
    from contracts.topology import topic_matches

    assert topic_matches("run.*.succeeded", "run.etl.succeeded")
    assert not topic_matches("run.*.succeeded", "run.etl.failed")
    assert topic_matches("run.#", "run.etl.failed")
    assert topic_matches("#", "task.etl.running")
    assert not topic_matches("run.*", "run.etl.failed")
    assert topic_matches("run.etl.#", "run.etl")


async def test_queues_are_quorum_by_default_and_a_mismatch_is_said_clearly(
    amqp_url: str, q: str
) -> None:
    quorum = RabbitTransport(amqp_url)
    await quorum.start()
    try:
        await quorum.publish(q, [b"one"])
        quorum_only = "x-(queue-type|delivery-limit|dead-letter-strategy|overflow)"
        with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed, match=quorum_only):
            async with amqp_channel(amqp_url) as channel:
                # The same queue as a classic one: not what it is.
                await channel.declare_queue(
                    q, durable=True, arguments=queue_arguments(q, "classic")
                )
        # As a Conveyor with CONVEYOR_QUEUE_TYPE=classic declares it.
        classic_queue = f"{q}.classic"
        async with amqp_channel(amqp_url) as channel:
            await channel.declare_queue(
                classic_queue, durable=True, arguments=queue_arguments(classic_queue, "classic")
            )
        # A queue's type cannot change: a transport expecting the other type says so and
        # what to do, and nothing is lost.
        with pytest.raises(
            ConveyorError,
            match="x-queue-type classic, and this process declares it with quorum: drain and"
            r" delete it \(rabbitmqctl delete_queue\), or set CONVEYOR_QUEUE_TYPE=classic",
        ):
            await quorum.consume(classic_queue, prefetch=1)
        classic = RabbitTransport(amqp_url, queue_type="classic")
        with pytest.raises(ConveyorError, match="drain and delete it"):
            await classic.start()  # conveyor.dead is a quorum queue on this broker
        await classic.close()
        assert await quorum.queue_depth(q) == 1
    finally:
        await quorum.close()


async def test_a_delivery_limit_mismatch_names_the_limit_and_its_setting(
    amqp_url: str, q: str
) -> None:
    five = RabbitTransport(amqp_url, delivery_limit=5)
    await five.start()
    twenty = RabbitTransport(amqp_url)
    try:
        await twenty.start()
        await five.publish(q, [b"kept"])
        with pytest.raises(ConveyorError) as raised:
            await twenty.consume(q, prefetch=1)
        assert str(raised.value).startswith(
            f"queue {q!r} exists on the broker with x-delivery-limit 5, and this process"
            " declares it with 20: set CONVEYOR_DELIVERY_LIMIT=5"
        )
        assert await five.queue_depth(q) == 1
    finally:
        await twenty.close()
        await five.close()


@pytest.mark.parametrize(
    ("argument", "broker_says", "advice"),
    [
        (
            "x-queue-type",
            "received none but current is the value 'quorum' of type 'longstr'",
            "x-queue-type quorum, and this process declares it with classic: drain and"
            " delete it (rabbitmqctl delete_queue), or set CONVEYOR_QUEUE_TYPE=quorum",
        ),
        (
            "x-single-active-consumer",
            "received the value 'true' of type 'bool' but current is none",
            "x-single-active-consumer none, and this process declares it with true: drain"
            " and delete it (rabbitmqctl delete_queue)",
        ),
    ],
)
def test_a_queue_mismatch_says_which_argument_differs(
    argument: str, broker_says: str, advice: str
) -> None:
    text = (
        f"PRECONDITION_FAILED - inequivalent arg '{argument}' for queue 'jobs' in vhost"
        f" '/': {broker_says}"
    )
    said = mismatch_advice("jobs", "quorum", text)
    assert said == f"queue 'jobs' exists on the broker with {advice}"


def test_a_mismatch_the_broker_words_otherwise_is_passed_on() -> None:
    said = mismatch_advice("jobs", "quorum", "PRECONDITION_FAILED - something new")
    assert said == (
        "queue 'jobs' exists on the broker with other settings than a quorum queue of"
        " Conveyor's (PRECONDITION_FAILED - something new): drain and delete it"
        " (rabbitmqctl delete_queue)"
    )


async def test_a_quorum_queue_dead_letters_past_its_delivery_limit(amqp_url: str, q: str) -> None:
    transport = RabbitTransport(amqp_url, delivery_limit=2)
    await transport.start()
    try:
        await transport.publish(q, [b"crashes-its-consumer"])
        deliveries = 0
        for _ in range(3):  # a consumer that dies each time (its deliveries go back)
            consumer = await transport.consume(q, prefetch=1)
            async with asyncio.timeout(10):
                async for _delivery in consumer:
                    deliveries += 1
                    break
            await consumer.close()
        await until_dead_lettered(transport, b"crashes-its-consumer")
        assert deliveries == 3 and await transport.queue_depth(q) == 0
    finally:
        await transport.close()


async def test_a_delivery_whose_channel_is_gone_is_no_longer_settleable(
    amqp_url: str, q: str
) -> None:
    """The broker takes back what a lost channel held and sends it again on the channel
    the robust connection opens in its place; the first delivery says it is gone."""
    transport = RabbitTransport(amqp_url)
    await transport.start()
    try:
        await transport.publish(q, [b"m"])
        consumer = await transport.consume(q, prefetch=1)
        first = await asyncio.wait_for(anext(aiter(consumer)), 5)
        assert first.settleable and not first.redelivered
        await first._message.channel.close()  # as a dropped connection closes it
        again = await asyncio.wait_for(anext(aiter(consumer)), 20)
        assert again.body == b"m" and again.redelivered
        assert not first.settleable and again.settleable
        await again.ack()
        await consumer.close()
    finally:
        await transport.close()


async def test_a_drained_consumer_a_reconnect_brings_back_is_cancelled_again(
    amqp_url: str, q: str
) -> None:
    """A robust channel consumes again, after a reconnect, for every consumer it knows
    of; one whose drain was lost with the connection comes back for a consumer that
    takes nothing more. It sends back what it is handed once and is cancelled, rather
    than being handed the same message again and again (each return counted by the
    quorum queue towards its delivery limit)."""
    transport = RabbitTransport(amqp_url)
    await transport.start()
    try:
        consumer = await transport.consume(q, prefetch=1)
        drained_tag = consumer._tag
        await consumer.drain()
        # What the robust channel's restore does for a consumer it still knows of.
        await consumer._queue.consume(consumer._received, consumer_tag=drained_tag)
        await transport.publish(q, [b"m"])
        async with amqp_channel(amqp_url) as channel:
            async with asyncio.timeout(10):
                while True:
                    declared = await channel.declare_queue(q, passive=True)
                    result = declared.declaration_result
                    if result.consumer_count == 0 and result.message_count == 1:
                        break  # sent back, and nobody consumes for the drained consumer
                    await asyncio.sleep(0.02)
        other = await transport.consume(q, prefetch=1)
        delivery = await asyncio.wait_for(anext(aiter(other)), 5)
        assert delivery.body == b"m" and delivery.redelivered
        assert int(delivery.headers.get("x-delivery-count", 0)) <= 1
        await delivery.ack()
    finally:
        await transport.close()


async def test_a_message_for_a_queue_deleted_since_it_was_declared_is_not_lost(
    amqp_url: str, q: str
) -> None:
    # The broker drops a message it cannot route, and confirms it all the same: a queue
    # deleted behind the transport's back (by an operator, or with a lost classic queue's
    # node) must be declared again and the message published into it.
    transport = RabbitTransport(amqp_url)
    await transport.start()
    try:
        await transport.publish(q, [b"first"])
        async with amqp_channel(amqp_url) as channel:
            await channel.queue_delete(q)
        await transport.publish(q, [b"after the deletion", b"and another"])
        consumer = await transport.consume(q, prefetch=10)
        got = []
        async with asyncio.timeout(10):
            async for delivery in consumer:
                got.append(delivery.body)
                await delivery.ack()
                if len(got) == 2:
                    break
        assert got == [b"after the deletion", b"and another"]
        await consumer.close()
    finally:
        await transport.close()


async def test_a_cluster_url_list_goes_on_to_a_node_that_answers(amqp_url: str, q: str) -> None:
    from tests.services import free_port

    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    transport = RabbitTransport(f"{dead},{amqp_url}")
    await transport.start()  # the first node does not answer: the second serves
    try:
        await transport.publish(q, [b"through the second node"])
        assert await transport.queue_depth(q) == 1
    finally:
        await transport.close()


async def test_a_connection_the_broker_drops_while_starting_is_waited_out(
    amqp_url: str, q: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RabbitMQ can close a connection with INTERNAL_ERROR just as a process declares its
    # topology or starts consuming; the process goes on once the broker answers again.
    refusals = {"topology": 1, "consume": 2}

    def failing_once(name: str, real: Any) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            if refusals[name]:
                refusals[name] -= 1
                raise aiormq.exceptions.ConnectionInternalError("INTERNAL_ERROR")
            return await real(*args, **kwargs)

        return call

    monkeypatch.setattr(
        RabbitTransport,
        "_declare_topology",
        failing_once("topology", RabbitTransport._declare_topology),
    )
    monkeypatch.setattr(RabbitConsumer, "start", failing_once("consume", RabbitConsumer.start))
    transport = RabbitTransport(amqp_url)
    await transport.start()
    try:
        consumer = await transport.consume(q, prefetch=1)
        await transport.publish(q, [b"after the drop"])
        delivery = await asyncio.wait_for(anext(aiter(consumer)), 10)
        assert delivery.body == b"after the drop"
        await delivery.ack()
        assert refusals == {"topology": 0, "consume": 0}
        await consumer.close()
    finally:
        await transport.close()


async def test_a_publish_channel_that_never_opens_does_not_hold_publishing(
    amqp_url: str, q: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A channel open the broker never answers (on a connection to a node as it stops)
    # once held every publish of a process for good, with nothing in its logs: after a
    # refusal, the publish that renews the channel waited for it, and the others for
    # that publish.
    transport = RabbitTransport(amqp_url)
    await transport.start()
    monkeypatch.setattr("engine.transport.rabbitmq.CHANNEL_TIMEOUT", 0.5)
    never_answered = asyncio.Event()
    real_setup, real_publish = transport._declared_on, RabbitTransport._publish_all
    refusals = [1]

    async def setup_hanging_once(channel: Any) -> Any:
        if not never_answered.is_set():
            never_answered.set()
            await asyncio.Event().wait()  # the broker never answers
        return await real_setup(channel)

    async def refused_once(*args: Any) -> None:
        if refusals[0]:
            refusals[0] -= 1
            raise aio_pika.exceptions.DeliveryError(None, aiormq.spec.Basic.Nack(delivery_tag=1))
        await real_publish(*args)

    monkeypatch.setattr(transport, "_declared_on", setup_hanging_once)
    monkeypatch.setattr(RabbitTransport, "_publish_all", staticmethod(refused_once))
    try:
        async with asyncio.timeout(10):
            await asyncio.gather(
                transport.publish(q, [b"refused, then sent"]),
                transport.publish(q, [b"sent on the renewed channel"]),
            )
        assert never_answered.is_set() and refusals == [0]
        assert await transport.queue_depth(q) == 2
    finally:
        await transport.close()


class _NeverReady(UnderlayConnection):
    """A connection's transport as aio-pika sees it after the connection dropped: its
    readiness never comes."""

    async def ready(self) -> None:  # type: ignore[override]
        await asyncio.Event().wait()


async def test_a_channel_does_not_wait_for_a_connection_that_is_gone(amqp_url: str) -> None:
    # A robust channel reopening (to restore itself) on a connection that closes meanwhile
    # waited for good, holding its restore lock; the robust connection's restore on the
    # next node then waited behind it, and nothing was consumed or published again.
    connection = await aiormq.connect(amqp_url)
    owner = SimpleNamespace(transport=_NeverReady(connection, OneShotCallback(lambda *_: None)))
    channel = GuardedChannel(owner)  # type: ignore[arg-type]
    reopening = asyncio.ensure_future(channel._open())
    await asyncio.wait({reopening}, timeout=0.1)
    assert not reopening.done()  # waiting for the connection, as it should while it lives
    await connection.close()
    async with asyncio.timeout(5):
        with pytest.raises(aio_pika.exceptions.ChannelInvalidStateError, match="closed"):
            await reopening
    # And opening on a connection already closed gives up at once.
    with pytest.raises(aio_pika.exceptions.ChannelInvalidStateError, match="closed"):
        await asyncio.wait_for(GuardedChannel(owner)._open(), 5)  # type: ignore[arg-type]


async def test_a_look_at_a_queue_the_broker_does_not_answer_gives_up(
    amqp_url: str, q: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The queue-depth gauge autoscaling reads looks every few seconds; a look stuck on a
    # channel that never opens froze it for good.
    transport = RabbitTransport(amqp_url)
    await transport.start()
    try:
        await transport.publish(q, [b"waiting"])
        monkeypatch.setattr("engine.transport.rabbitmq.CHANNEL_TIMEOUT", 0.3)
        connection = transport._connection_or_fail()
        real_channel = connection.channel
        monkeypatch.setattr(connection, "channel", lambda: asyncio.Event().wait())
        async with asyncio.timeout(5):
            with pytest.raises(TimeoutError):
                await transport.queue_depth(q)
            with pytest.raises(TimeoutError):
                await transport.dead_letters()
        monkeypatch.setattr(connection, "channel", real_channel)
        assert await transport.queue_depth(q) == 1  # the next look answers

        # A channel that opens but whose declare is never answered gives up too.
        async def unanswered(*args: object) -> None:
            await asyncio.Event().wait()

        monkeypatch.setattr(transport, "_declare", unanswered)
        async with asyncio.timeout(5):
            with pytest.raises(TimeoutError):
                await transport.dead_letters()
            with pytest.raises(TimeoutError):
                await transport.dead_letter_count()
    finally:
        await transport.close()


async def test_a_listener_whose_bind_the_broker_does_not_answer_binds_again(
    amqp_url: str, q: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker waits for its cancel listener before it takes work: a channel open that
    # is never answered kept it from starting, with nothing logged.
    transport = RabbitTransport(amqp_url)
    await transport.start()
    try:
        monkeypatch.setattr("engine.transport.rabbitmq.CHANNEL_TIMEOUT", 0.3)
        connection = transport._connection_or_fail()
        real_channel = connection.channel
        opens = 0

        def first_never_answers() -> Awaitable[object]:
            nonlocal opens
            opens += 1
            return asyncio.Event().wait() if opens == 1 else real_channel()

        monkeypatch.setattr(connection, "channel", first_never_answers)
        listener = transport.listen(q)
        try:
            async with asyncio.timeout(5):
                await listener.ready()
                await transport.broadcast(q, b"cancel")
                assert await anext(aiter(listener)) == b"cancel"
            assert opens == 2
        finally:
            await listener.aclose()
    finally:
        await transport.close()
