"""Issue 6: cancelling an awaiting receive cancels the Rust side and leaks nothing."""

from __future__ import annotations

import asyncio
import os

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


@pytest.mark.asyncio
async def test_ten_thousand_cancelled_receives_leak_nothing(node: Node) -> None:
    alice = await node.new_app("org", "default", "alice")
    bob = await node.new_app("org", "default", "bob")
    await alice.set_route(bob.local_name)
    session = await alice.create_session(slim_bindings.PySessionConfiguration.Anycast())
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
