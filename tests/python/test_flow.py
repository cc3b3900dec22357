"""Batch reception and back-pressure over a real node: a slow reader loses nothing."""

from __future__ import annotations

import asyncio

import pytest

import slim_bindings
from slim_bindings import PySessionConfiguration

from conftest import Node, bounded

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
