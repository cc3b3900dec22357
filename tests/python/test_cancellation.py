"""Issue 6: cancelling an awaiting receive cancels the Rust side and leaks nothing."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

import pytest

import slim_bindings
from conftest import Node, bounded


def _rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _timeouts(app: slim_bindings.Slim, session: slim_bindings.PySessionInfo, n: int) -> None:
    for _ in range(n):
        # wait_for's own timeout cancels the receive; an SLIMTimeoutError from the receive would not.
        with pytest.raises(asyncio.TimeoutError) as cancelled:
            await asyncio.wait_for(app.receive(session=session.id), 0.001)
        assert not isinstance(cancelled.value, slim_bindings.SlimError), cancelled.value


async def _alice_to_bob(
    node: Node,
) -> tuple[slim_bindings.Slim, slim_bindings.Slim, slim_bindings.PySessionInfo]:
    """Two apps on the node and an anycast session from alice to bob."""
    alice = await node.new_app("org", "default", "alice")
    bob = await node.new_app("org", "default", "bob")
    await alice.set_route(bob.local_name)
    session = await alice.create_session(slim_bindings.PySessionConfiguration.Anycast())
    return alice, bob, session


@pytest.mark.asyncio
async def test_ten_thousand_cancelled_receives_leak_nothing(node: Node) -> None:
    alice, bob, session = await _alice_to_bob(node)
    async with alice, bob:
        await _timeouts(alice, session, 1000)  # warm-up: allocator pools, caches
        tasks_before = len(asyncio.all_tasks())
        rss_before = _rss_bytes()
        await _timeouts(alice, session, 10_000)
        growth = _rss_bytes() - rss_before
        assert len(asyncio.all_tasks()) == tasks_before, "cancelled receives left tasks behind"
        assert growth < 4 * 1024 * 1024, f"RSS grew by {growth} bytes over 10,000 cancelled receives"

        # A cancelled receive must not have swallowed anything: a round trip still works.
        await alice.publish(session, b"ping", bob.local_name)
        info, payload = await bounded(bob.receive())
        assert payload == b"ping"
        await bob.publish_to(info, b"pong")
        _, reply = await bounded(alice.receive(session=session.id))
        assert reply == b"pong"


@pytest.mark.asyncio
async def test_receive_timeout_raises_timeout_error_and_takes_nothing(node: Node) -> None:
    alice, bob, session = await _alice_to_bob(node)
    async with alice, bob:
        # No session yet, nothing queued: each form raises the builtin TimeoutError (not an SLIM
        # error: no message timed out), within its own bound (the outer bound is a safety net).
        for wait in (bob.receive(timeout=0.02), alice.receive(session=session.id, timeout=0.02)):
            with pytest.raises(TimeoutError) as raised:
                await bounded(wait)
            assert not isinstance(raised.value, slim_bindings.SlimError), raised.value
        with pytest.raises(TimeoutError):
            await bounded(alice.receive_many(session, timeout=timedelta(milliseconds=20)))
        for bad, error in ((0, ValueError), (-1.0, ValueError), (float("nan"), ValueError), ("1", TypeError)):
            with pytest.raises(error):
                await alice.receive(session=session.id, timeout=bad)

        # Timed-out receives took nothing: the next messages arrive, in order, within the bound.
        await alice.publish(session, b"one", bob.local_name)
        info, first = await bounded(bob.receive(timeout=10))
        assert first == b"one"
        _, again = await bounded(bob.receive(session=info.id, timeout=10))
        assert again == b"one"  # the new-session notification's payload is also the queue's first
        for payload in (b"two", b"three"):
            await alice.publish(session, payload, bob.local_name)
        got: list[bytes] = []
        while len(got) < 2:
            got += [p for _, p in await bounded(bob.receive_many(info.id, timeout=10))]
        assert got == [b"two", b"three"]
        await bob.publish_to(info, b"pong")
        _, reply = await bounded(alice.receive(session=session.id, timeout=10))
        assert reply == b"pong"
