"""Typed errors raised by real operations over a real node (not constructed by the test).

Where the others are raised: ``SLIMTimeoutError`` by a rejected reliable message
(test_identity.py), ``MessageLostError`` by ``receive`` in a member that stopped reading
(test_group_loss.py, through group_loss_worker.py), ``NoRouteError``, ``SessionNotFoundError`` and
``SlimConnectionError`` in test_bindings.py, ``ConfigurationError`` in test_identity.py."""

from __future__ import annotations

import asyncio

import pytest

import slim_bindings
from conftest import Node, bounded
from slim_bindings import PyName, PySessionConfiguration


@pytest.mark.asyncio
async def test_deleting_a_session_ends_a_waiting_receive_with_session_closed(node: Node) -> None:
    alice = await node.new_app("org", "errors", "alice")
    bob = await node.new_app("org", "errors", "bob")
    async with alice, bob:
        await alice.set_route(bob.local_name)
        session = await alice.create_session(PySessionConfiguration.Anycast())
        waiting = asyncio.create_task(alice.receive(session=session.id))
        # One turn of the loop runs the task's first step: the receive is then waiting on the session.
        await asyncio.sleep(0)
        assert not waiting.done()
        await alice.delete_session(session.id)
        with pytest.raises(slim_bindings.SessionClosedError):
            await bounded(waiting)


@pytest.mark.asyncio
async def test_invite_on_a_point_to_point_session_is_an_invite_error(node: Node) -> None:
    alice = await node.new_app("org", "errors", "inviter")
    async with alice:
        session = await alice.create_session(PySessionConfiguration.Unicast())
        with pytest.raises(slim_bindings.InviteError, match="multicast"):
            await bounded(alice.invite(session, PyName("org", "errors", "guest")))


@pytest.mark.asyncio
async def test_invite_by_a_member_is_an_invite_error(node: Node) -> None:
    member = await node.new_app("org", "errors", "plain-member")
    async with member:
        # A multicast session this app does not moderate.
        session = await member.create_session(
            PySessionConfiguration.Multicast(PyName("org", "errors", "room"), moderator=False)
        )
        with pytest.raises(slim_bindings.InviteError, match="moderator"):
            await bounded(member.invite(session, PyName("org", "errors", "guest"), wait=True))


@pytest.mark.asyncio
async def test_publish_that_never_gets_room_is_send_buffer_full(node: Node) -> None:
    # A sticky session to a name nobody serves: discovery never finds a peer, so publishes wait
    # in the session's send buffer (16 MiB) until it is full; the next one waits its bound (5 s)
    # and fails typed, having sent nothing.
    sender = await node.new_app("org", "errors", "sender")
    nobody = PyName("org", "errors", "nobody")
    async with sender:
        session = await sender.create_session(PySessionConfiguration.Unicast(timeout=None, max_retries=None))
        payload = b"x" * (64 * 1024)
        with pytest.raises(slim_bindings.SendBufferFullError) as full:
            for _ in range(16 * 1024 * 1024 // len(payload) + 2):  # one more than fits, bounded
                await bounded(sender.publish(session, payload, nobody), 30)
        assert full.value.session_id == session.id
        assert isinstance(full.value, TimeoutError)
