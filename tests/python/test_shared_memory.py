"""Large messages through shared memory between apps and their node on one host
(docs/protocol.md, "Shared memory on one host"), over a real node on a loopback port."""

from __future__ import annotations

import asyncio

import pytest

from conftest import Node, bounded, wait_until
from slim_bindings import PySessionConfiguration

MESSAGES = 200
SIZE = 65_536


def payload(i: int) -> bytes:
    return i.to_bytes(4, "little") * (SIZE // 4)


async def stream(writer, reader) -> None:
    """`writer` streams MESSAGES x 64 KiB to `reader`, which must get each whole and in order."""
    await writer.set_route(reader.local_name)
    session = await writer.create_session(PySessionConfiguration.Anycast())

    async def read() -> None:
        info, first = await bounded(reader.receive())
        assert first == payload(0)
        got = [payload for _info, payload in await bounded(reader.receive_many(info.id))]
        for _ in range(MESSAGES):
            if len(got) >= MESSAGES:
                break
            got.extend(payload for _info, payload in await bounded(reader.receive_many(info.id)))
        assert len(got) == MESSAGES
        assert all(got[i] == payload(i) for i in range(MESSAGES)), "a message arrived changed or out of order"

    task = asyncio.create_task(read())
    for start in range(0, MESSAGES, 50):
        await writer.publish_many(session, [payload(i) for i in range(start, start + 50)], reader.local_name)
    await bounded(task, 60)


@pytest.mark.asyncio
async def test_large_messages_go_through_shared_memory_and_arrive_whole(node: Node) -> None:
    alice = await node.new_app("org", "shm", "alice")
    bob = await node.new_app("org", "shm", "bob")
    async with alice, bob:
        await stream(bob, alice)
        assert bob.svc.node_stats()["shared_frames_sent"] >= MESSAGES
        assert alice.svc.node_stats()["shared_frames_received"] >= MESSAGES
        server = node.app.svc.node_stats()
        assert server["shared_frames_received"] >= MESSAGES and server["shared_frames_sent"] >= MESSAGES


@pytest.mark.asyncio
async def test_a_client_can_keep_every_message_on_the_socket(node: Node) -> None:
    alice = await node.new_app("org", "shm", "carol", connect=False)
    bob = await node.new_app("org", "shm", "dave", connect=False)
    async with alice, bob:
        for app in (alice, bob):
            await app.connect({**node.client_config, "shared_memory": False})
            await wait_until(lambda app=app: node.has_subscription(app.local_name), what="subscription")
        await stream(bob, alice)
        for app in (alice, bob):
            stats = app.svc.node_stats()
            assert (stats["shared_frames_sent"], stats["shared_frames_received"]) == (0, 0)
