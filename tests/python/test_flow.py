"""Batch reception and back-pressure over a real node: a slow reader loses nothing."""

from __future__ import annotations

import asyncio
import datetime

import pytest

import slim_bindings
from conftest import Node, bounded, wait_until
from slim_bindings import PySessionConfiguration


def p2p_config(reliable: bool) -> PySessionConfiguration:
    """A reliable (Unicast, acks, 1 s x 5 retries) or default (Anycast) point-to-point session."""
    if reliable:
        return PySessionConfiguration.Unicast(timeout=datetime.timedelta(seconds=1), max_retries=5)
    return PySessionConfiguration.Anycast()


MESSAGES = 20_000


@pytest.mark.asyncio
async def test_receive_many_returns_everything_waiting_in_order(node: Node) -> None:
    alice = await node.new_app("org", "flow", "alice")
    bob = await node.new_app("org", "flow", "bob")
    async with alice, bob:
        await bob.set_route(alice.local_name)
        session = await bob.create_session(PySessionConfiguration.Anycast())
        for i in range(10):
            await bob.publish(session, i.to_bytes(4, "little"), alice.local_name)
        info, _first = await bounded(alice.receive())
        got: list[bytes] = []
        for _ in range(10):
            if len(got) == 10:
                break
            batch = await bounded(alice.receive_many(info.id, max_messages=4))
            assert 1 <= len(batch) <= 4
            got.extend(payload for _info, payload in batch)
        assert got == [i.to_bytes(4, "little") for i in range(10)]
        # The infos carry the sender for replies.
        await alice.publish_to(batch[-1][0], b"reply")
        _, reply = await bounded(bob.receive(session=session.id))
        assert reply == b"reply"
        await alice.delete_session(info.id)
        with pytest.raises(slim_bindings.SessionNotFoundError):
            await alice.receive_many(info.id)


@pytest.mark.asyncio
async def test_unreliable_stream_to_a_slow_reader_arrives_complete(node: Node) -> None:
    alice = await node.new_app("org", "flow", "reader")
    bob = await node.new_app("org", "flow", "writer")
    async with alice, bob:
        await bob.set_route(alice.local_name)
        session = await bob.create_session(PySessionConfiguration.Anycast())

        async def write() -> None:
            for i in range(MESSAGES):
                await bob.publish(session, i.to_bytes(4, "little") + b"x" * 96, alice.local_name)

        writer = asyncio.create_task(write())
        info, _first = await bounded(alice.receive())
        # Nothing is read until the session queue (16,384 messages) is full and its producer waits
        # for room, so back-pressure is exercised in every run; then reading starts at once (the
        # producer would drop after waiting 5 s).
        assert alice.svc.node_stats()["session_queue_full_waits"] == 0
        await wait_until(
            lambda: alice.svc.node_stats()["session_queue_full_waits"] > 0, 120, "the session queue to fill"
        )
        expected = 0
        async for _info, payload in alice.messages(info.id):
            assert int.from_bytes(payload[:4], "little") == expected
            expected += 1
            if expected % 1000 == 0:
                # A bounded consumer delay: the reader falls behind the writer.
                await asyncio.sleep(0.1)
            if expected == MESSAGES:
                break
        await bounded(writer, 60)
        assert slim_bindings.try_receive_session(alice.svc, info.id) is None
        assert alice.svc.node_stats()["session_queue_full_waits"] > 0
        assert alice.svc.node_stats()["session_queue_dropped"] == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("reliable", [False, True], ids=["default", "reliable"])
async def test_publish_many_delivers_a_batch_in_order_through_back_pressure(
    node: Node, reliable: bool
) -> None:
    # One call larger than the first queues on the way (embedded node 1024, session task 1024): the
    # call hands over what fits, waits for room like publish, and nothing is lost or reordered.
    alice = await node.new_app("org", "flow", "batch-reader")
    bob = await node.new_app("org", "flow", "batch-writer")
    async with alice, bob:
        await bob.set_route(alice.local_name)
        session = await bob.create_session(p2p_config(reliable))
        count = 5_000
        payloads = [i.to_bytes(4, "little") + b"x" * 96 for i in range(count)]
        writer = asyncio.create_task(bob.publish_many(session, payloads, alice.local_name))
        info, _first = await bounded(alice.receive())
        got = 0
        async for _info, payload in alice.messages(info.id):
            assert payload == payloads[got]
            got += 1
            if got % 1000 == 0:
                await asyncio.sleep(0.05)  # the reader falls behind
            if got == count:
                break
        await bounded(writer, 60)
        # Replies in a batch: dest=None answers the sender of the info, as publish_to does.
        await alice.publish_many(info, [b"r1", b"r2", b"r3"])
        replies = [(await bounded(bob.receive(session=session.id)))[1] for _ in range(3)]
        assert replies == [b"r1", b"r2", b"r3"]


@pytest.mark.asyncio
async def test_publish_many_reports_what_was_sent_on_error(node: Node) -> None:
    bob = await node.new_app("org", "flow", "batch-errors")
    async with bob:
        session = await bob.create_session(PySessionConfiguration.Anycast())
        await bob.publish_many(session, [], bob.local_name)  # nothing to send
        with pytest.raises(TypeError):  # checked before anything is sent
            await bob.publish_many(session, [b"ok", "not bytes"], bob.local_name)  # type: ignore[list-item]
        with pytest.raises(slim_bindings.ConfigurationError) as no_dest:  # an int session has no sender
            await bob.publish_many(session.id, [b"a"])
        assert no_dest.value.sent == 0
        await bob.delete_session(session)
        with pytest.raises(slim_bindings.SessionNotFoundError) as raised:
            await bob.publish_many(session, [b"a", b"b"], bob.local_name)
        assert raised.value.sent == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("reliable", [False, True], ids=["default", "reliable"])
async def test_publish_many_stops_at_a_refused_message_in_the_middle(node: Node, reliable: bool) -> None:
    # A batch is handed down in one piece (the session and target looked up once per call on the
    # default session, one command per 64 messages to a reliable session's task): a payload refused
    # in the middle still leaves exactly the messages before it sent, in order, and the rest unsent.
    limit = 4 * 1024 * 1024 - 64 * 1024
    alice = await node.new_app("org", "flow", "refused-reader")
    bob = await node.new_app("org", "flow", "refused-writer")
    async with alice, bob:
        await bob.set_route(alice.local_name)
        session = await bob.create_session(p2p_config(reliable))
        before = [b"m%d" % i for i in range(100)]
        with pytest.raises(slim_bindings.MessageTooLargeError) as raised:
            await bob.publish_many(session, [*before, b"x" * (limit + 1), b"never"], alice.local_name)
        assert raised.value.sent == len(before)
        await bob.publish_many(session, [b"after"], alice.local_name)
        info, _first = await bounded(alice.receive())
        got: list[bytes] = []
        ids: list[int] = []
        async for m_info, payload in alice.messages(info.id):
            got.append(payload)
            ids.append(m_info.message_id)
            if payload == b"after" or len(got) > len(before) + 2:
                break
        assert got == [*before, b"after"]
        # Each message has its own id, consecutive (the refused one took none): what a
        # MessageLostError would name.
        assert ids == list(range(ids[0], ids[0] + len(before) + 1))
