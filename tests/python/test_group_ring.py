"""The relay ring of ten: the moderator invites nine members in turn; every member, when a
message calls it, calls the next one; every member receives every message (MLS on and off)."""

from __future__ import annotations

import asyncio
import datetime

import pytest

from conftest import Node, bounded
from slim_bindings import PyName, PySessionConfiguration

MEMBERS = 10


@pytest.mark.asyncio
@pytest.mark.parametrize("mls", [False, True], ids=["plain", "mls"])
async def test_relay_ring_of_ten(node: Node, mls: bool) -> None:
    tag = "mls" if mls else "plain"
    apps = [await node.new_app("org", "default", f"ring-{tag}-{i}") for i in range(MEMBERS)]
    channel = PyName("org", "default", f"ring-{tag}")
    moderator = apps[0]
    session = await moderator.create_session(
        PySessionConfiguration.Multicast(
            channel, moderator=True, max_retries=5, timeout=datetime.timedelta(seconds=1), mls_enabled=mls
        ),
    )
    for a in apps[1:]:
        await moderator.set_route(a.local_name)
        await bounded(moderator.invite(session, PyName(*a.local_name.components_strings()), wait=True), 30)

    async def member(i: int) -> list[bytes]:
        a = apps[i]
        info, _ = await bounded(a.receive(), 20)
        assert info.id == session.id
        seen = []
        for _ in range(MEMBERS - 1):
            msg_info, payload = await bounded(a.receive(session=info.id), 20)
            if payload == f"call {i}".encode():
                await a.publish(msg_info, f"call {(i + 1) % MEMBERS}".encode(), channel)
            seen.append(payload)
        return seen

    tasks = [asyncio.create_task(member(i)) for i in range(1, MEMBERS)]
    await moderator.publish(session, b"call 1", channel)
    seen0 = [(await bounded(moderator.receive(session=session.id), 20))[1] for _ in range(MEMBERS - 1)]
    results = [seen0, *await bounded(asyncio.gather(*tasks), 60)]
    for i, seen in enumerate(results):
        expected = sorted(f"call {k}".encode() for k in range(MEMBERS) if k != (i + 1) % MEMBERS)
        assert sorted(seen) == expected, f"member {i}"
