"""Issue 3: a sticky (Unicast) session among 10 instances sharing one name reaches exactly one of them,
the chosen instance varies from session to session, and the caller's PyName is never mutated."""

from __future__ import annotations

import asyncio
import datetime

import pytest

import slim_bindings
from conftest import Node, bounded

INSTANCES = 10
MESSAGES = 1000
SESSIONS = 6


async def _drain(
    app: slim_bindings.Slim, counts: dict[tuple[int, int], int], announced: dict[int, list[int]]
) -> None:
    """Counts every message this instance receives, per (session id, instance), until cancelled."""
    tasks = []

    async def count(sid: int) -> None:
        async for _info, _payload in app.messages(sid):
            counts[(sid, app.get_id())] = counts.get((sid, app.get_id()), 0) + 1

    try:
        async for info, _first in app.sessions():
            announced.setdefault(info.id, []).append(app.get_id())
            tasks.append(asyncio.ensure_future(count(info.id)))
    finally:
        for t in tasks:
            t.cancel()


@pytest.mark.asyncio
async def test_sticky_session_among_ten_instances(node: Node) -> None:
    receivers = [await node.new_app("org", "default", "receiver") for _ in range(INSTANCES)]
    assert len({r.get_id() for r in receivers}) == INSTANCES
    sender = await node.new_app("org", "default", "sender")
    target = slim_bindings.PyName("org", "default", "receiver")
    before = (target.components(), target.id)
    await sender.set_route(target)

    counts: dict[tuple[int, int], int] = {}
    announced: dict[int, list[int]] = {}
    drains = [asyncio.ensure_future(_drain(r, counts, announced)) for r in receivers]
    try:
        chosen = []
        for _ in range(SESSIONS):
            cfg = slim_bindings.PySessionConfiguration.Unicast(
                timeout=datetime.timedelta(seconds=1), max_retries=5
            )
            session = await sender.create_session(cfg)
            for i in range(MESSAGES):
                await sender.publish(session, f"m{i}".encode(), target, payload_type="hello message")

            def total(session_id: int = session.id) -> int:
                return sum(n for (sid, _), n in counts.items() if sid == session_id)

            async def all_in() -> None:
                while total() < MESSAGES:
                    await asyncio.sleep(0.01)

            await bounded(all_in(), 30)
            # Exactly one instance was told of the session and got all of its messages.
            assert len(announced[session.id]) == 1, announced[session.id]
            winner = announced[session.id][0]
            assert counts.get((session.id, winner)) == MESSAGES
            chosen.append(winner)
        assert len(announced) == SESSIONS
        # Discovery picks among all instances: six sessions all landing on one of ten is ~1e-5.
        assert len(set(chosen)) > 1, chosen
        assert (target.components(), target.id) == before, "the caller's PyName was mutated"
    finally:
        for d in drains:
            d.cancel()
