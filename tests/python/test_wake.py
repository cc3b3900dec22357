"""The receive wake (src/python/wake.rs): a pending receive is woken through a socket pair its
event loop watches, resolved on the loop's own thread; a burst of wakes, other loops in other
threads, and a receive cancelled after it was woken but before it ran, over a real node."""

from __future__ import annotations

import asyncio
import select
import threading

import pytest

import slim_bindings
from conftest import Node, bounded


async def _pair(node: Node) -> tuple[slim_bindings.Slim, slim_bindings.Slim]:
    alice = await node.new_app("org", "default", "alice")
    bob = await node.new_app("org", "default", "bob")
    await alice.set_route(bob.local_name)
    return alice, bob


async def _open(
    alice: slim_bindings.Slim, bob: slim_bindings.Slim
) -> tuple[slim_bindings.PySessionInfo, slim_bindings.PySessionInfo]:
    """A session from alice to bob: alice's id, and bob's info to reply with (bob's queue then
    holds the first message, already read here)."""
    session = await alice.create_session(slim_bindings.PySessionConfiguration.Anycast())
    await alice.publish(session, b"hello", bob.local_name)
    info, first = await bounded(bob.receive())
    assert first == b"hello"
    _, again = await bounded(bob.receive(session=info.id))
    assert again == b"hello"
    return session, info


@pytest.mark.asyncio
async def test_many_pending_receives_woken_by_one_burst(node: Node) -> None:
    alice, bob = await _pair(node)
    async with alice, bob:
        sessions = [await _open(alice, bob) for _ in range(16)]
        # Every receive is pending (one loop round lets each task poll once) before any reply.
        waiting = [asyncio.ensure_future(alice.receive(session=s.id)) for s, _ in sessions]
        await asyncio.sleep(0)
        assert not any(t.done() for t in waiting)
        for i, (_, info) in enumerate(sessions):
            for k in range(3):
                await bob.publish_to(info, f"{i}:{k}".encode())
        firsts = await bounded(asyncio.gather(*waiting))
        assert [payload for _, payload in firsts] == [f"{i}:0".encode() for i in range(len(sessions))]
        # The rest of each session's replies, in order.
        for i, (session, _) in enumerate(sessions):
            for k in (1, 2):
                _, payload = await bounded(alice.receive(session=session.id))
                assert payload == f"{i}:{k}".encode()


@pytest.mark.asyncio
async def test_receive_woken_then_cancelled_loses_nothing(node: Node) -> None:
    alice, bob = await _pair(node)
    async with alice, bob:
        session, info = await _open(alice, bob)
        pending = asyncio.ensure_future(alice.receive(session=session.id))
        await asyncio.sleep(0)  # one loop round: the receive polls once and waits
        assert not pending.done()
        await bob.publish_to(info, b"pong")  # handed over without a loop round
        # The loop is blocked here, so the wake can only be recorded: wait for its byte on the
        # loop's bell, then cancel the receive before the loop resolves it.
        bell = asyncio.get_running_loop()._slim_bindings_bell  # type: ignore[attr-defined]
        readable, _, _ = select.select([bell], [], [], 10)
        assert readable, "the reply never woke the pending receive"
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        _, payload = await bounded(alice.receive(session=session.id))
        assert payload == b"pong"


@pytest.mark.asyncio
async def test_receive_awaited_on_another_threads_loop(node: Node) -> None:
    alice, bob = await _pair(node)
    async with alice, bob:
        session, info = await _open(alice, bob)
        polled = threading.Event()

        async def receive_there() -> bytes:
            task = asyncio.ensure_future(alice.receive(session=session.id))
            await asyncio.sleep(0)
            polled.set()
            _, payload = await asyncio.wait_for(task, 10)
            return payload

        there = asyncio.get_running_loop().run_in_executor(None, asyncio.run, receive_there())
        assert await asyncio.to_thread(polled.wait, 10), "the other loop never polled its receive"
        await bob.publish_to(info, b"to the other loop")
        assert await bounded(there) == b"to the other loop"
