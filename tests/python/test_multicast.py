"""Multicast through a real node: invite (waiting for the join), group messages in both
directions, and remove."""

from __future__ import annotations

import datetime

import pytest

import slim_bindings
from conftest import Node, bounded
from slim_bindings import PyName, PySessionConfiguration


@pytest.mark.asyncio
@pytest.mark.parametrize("mls", [False, True], ids=["plain", "mls"])
async def test_multicast_group(node: Node, mls: bool) -> None:
    moderator = await node.new_app("org", "default", "moderator")
    members = [await node.new_app("org", "default", f"member-{i}") for i in range(2)]
    channel = PyName("org", "default", "chat")

    session = await moderator.create_session(
        PySessionConfiguration.Multicast(
            channel, moderator=True, max_retries=5, timeout=datetime.timedelta(seconds=1), mls_enabled=mls
        ),
    )
    for m in members:
        await moderator.set_route(m.local_name)
        # Resolves once the member has joined (and, with MLS, can decrypt).
        invitee = PyName(*m.local_name.components_strings())  # any instance of the member's name
        await bounded(moderator.invite(session, invitee, wait=True), 30)

    await moderator.publish(session, b"hello group", channel, payload_type="chat", metadata={"n": "1"})
    member_sessions = []
    for m in members:
        info, first = await bounded(m.receive())
        assert first == b"hello group"
        assert info.id == session.id
        assert info.source_name == moderator.local_name
        assert info.destination_name.equal_without_id(channel)
        assert info.payload_type == "chat"
        assert info.metadata == {"n": "1"}
        again, payload = await bounded(m.receive(session=info.id))
        assert payload == b"hello group"
        member_sessions.append(again)

    # A member publishes: the moderator and the other member get it, the publisher does not.
    await members[0].publish(member_sessions[0], b"from member-0", channel)
    info, payload = await bounded(moderator.receive(session=session.id))
    assert payload == b"from member-0"
    assert info.source_name == members[0].local_name
    _, payload = await bounded(members[1].receive(session=member_sessions[1].id))
    assert payload == b"from member-0"

    # Removing a member completes once it has left; the rest of the group keeps working.
    await bounded(moderator.remove(session, members[1].local_name), 30)
    await moderator.publish(session, b"after remove", channel)
    _, payload = await bounded(members[0].receive(session=member_sessions[0].id))
    assert payload == b"after remove"


@pytest.mark.asyncio
async def test_invite_on_point_to_point_session_is_an_error(node: Node) -> None:
    app = await node.new_app("org", "default", "p2p")
    session = await app.create_session(PySessionConfiguration.Anycast())
    with pytest.raises(slim_bindings.SlimError):
        await bounded(app.invite(session, PyName("org", "default", "someone")))


@pytest.mark.asyncio
@pytest.mark.parametrize("end", ["remove", "delete"])
async def test_what_arrived_before_the_group_ended_is_read_then_closed(node: Node, end: str) -> None:
    """A member removed from the group (or whose moderator deleted the group) reads every message
    that reached it before, then gets SessionClosedError: the session stays readable until drained."""
    moderator = await node.new_app("org", "default", "moderator")
    member = await node.new_app("org", "default", "member")
    channel = PyName("org", "default", "chat")
    session = await moderator.create_session(
        PySessionConfiguration.Multicast(
            channel, moderator=True, max_retries=5, timeout=datetime.timedelta(seconds=1)
        ),
    )
    await moderator.set_route(member.local_name)
    await bounded(moderator.invite(session, PyName(*member.local_name.components_strings()), wait=True), 30)

    count = 50
    for i in range(count):
        await moderator.publish(session, f"m{i}".encode(), channel)
    # The member's first message announces the session; it and the rest wait in the session's
    # queue, unread.
    info, first = await bounded(member.receive())
    assert first == b"m0"
    # The group's messages precede the LEAVE_REQUEST on the one path to the member: once the
    # remove (or delete) is done, all of them sit in the member's queue, unread.
    if end == "remove":
        await bounded(moderator.remove(session, member.local_name), 30)
    else:
        await bounded(moderator.delete_session(session), 30)
    got = []
    with pytest.raises(slim_bindings.PeerClosedError) as ended:
        for _ in range(count + 1):
            _, payload = await bounded(member.receive(session=info.id))
            got.append(payload)
    assert got == [f"m{i}".encode() for i in range(count)]
    # The end says who: the moderator, with nothing of the member's own left undelivered.
    assert ended.value.peer == moderator.local_name and ended.value.undelivered == 0
    # Drained: the session is gone, and says why (its peer closed it), to receive and publish.
    with pytest.raises(slim_bindings.SessionClosedError):
        await bounded(member.receive(session=info.id))
    with pytest.raises(slim_bindings.SessionClosedError):
        await bounded(member.publish(info, b"late", channel))
    await bounded(member.delete_session(info.id))  # already gone: nothing to do, no error
