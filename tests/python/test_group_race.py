"""Invites sent back to back without waiting, then an immediate publish: every invited member
reads every message, with and without MLS (the moderator holds its publishes until the invite
queue has drained)."""

from __future__ import annotations

import datetime

import pytest

from conftest import Node, bounded
from slim_bindings import PyName, PySessionConfiguration


@pytest.mark.asyncio
@pytest.mark.parametrize("mls", [False, True], ids=["plain", "mls"])
@pytest.mark.parametrize("count", [2, 3])
async def test_invites_back_to_back_then_publish(node: Node, mls: bool, count: int) -> None:
    moderator = await node.new_app("org", "default", f"race-mod-{count}")
    members = [await node.new_app("org", "default", f"race-{count}-{i}") for i in range(count)]
    channel = PyName("org", "default", f"race-chat-{count}")
    session = await moderator.create_session(
        PySessionConfiguration.Multicast(
            channel, moderator=True, max_retries=5, timeout=datetime.timedelta(seconds=1), mls_enabled=mls
        ),
    )
    for m in members:
        await moderator.set_route(m.local_name)
    for m in members:
        await moderator.invite(session, PyName(*m.local_name.components_strings()))
    sent = [f"line {i}".encode() for i in range(3)]
    for line in sent:
        await moderator.publish(session, line, channel)

    for m in members:
        info, first = await bounded(m.receive(), 20)
        assert (info.id, first) == (session.id, sent[0])
        got = [(await bounded(m.receive(session=info.id), 20))[1] for _ in sent]
        assert got == sent
