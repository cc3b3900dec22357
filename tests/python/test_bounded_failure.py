"""Bounded failure: a reliable session to a name nobody serves fails within its own
``timeout x (max_retries + 1)``, and ``invite(wait=True, timeout=...)`` to an absent member within
the caller's bound (real node on a loopback port, real apps)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

import slim_bindings
from conftest import Node, bounded
from slim_bindings import PyName, PySessionConfiguration

# Scheduling slack on a loaded 2-core machine.
MARGIN = 1.5


@pytest.mark.asyncio
async def test_reliable_session_to_a_routed_name_nobody_serves_fails_within_its_bound(node: Node) -> None:
    alice = await node.new_app("org", "ns", "alice")
    nobody = PyName("org", "ns", "nobody")
    # Routed through the node, which has no subscriber for the name.
    await alice.set_route(nobody)
    timeout, retries = 0.25, 3
    bound = timeout * (retries + 1)
    session = await alice.create_session(
        PySessionConfiguration.Unicast(timeout=timedelta(seconds=timeout), max_retries=retries)
    )
    started = time.monotonic()
    await alice.publish(session, b"hello?", nobody)
    # Our node answers a message it cannot route with a route-error notice (NoRouteError, at
    # once); the message itself is reported as timed out once the session's bound has passed.
    errors: list[Exception] = []
    while not errors or not isinstance(errors[-1], slim_bindings.SLIMTimeoutError):
        with pytest.raises((slim_bindings.NoRouteError, slim_bindings.SLIMTimeoutError)) as err:
            await bounded(alice.receive(session=session), bound + MARGIN)
        errors.append(err.value)
        assert len(errors) <= 2, errors
    elapsed = time.monotonic() - started
    assert all(isinstance(e, slim_bindings.NoRouteError) for e in errors[:-1]), errors
    assert errors[-1].session_id == session.id
    assert bound <= elapsed < bound + MARGIN, elapsed
    assert slim_bindings.try_receive_session(alice.svc, session) is None, "one error per publish"


@pytest.mark.asyncio
async def test_invite_to_an_absent_member_fails_within_the_callers_bound(node: Node) -> None:
    moderator = await node.new_app("org", "ns", "moderator")
    absent = PyName("org", "ns", "absent")
    channel = PyName("org", "ns", "bounded-chat")
    await moderator.set_route(absent)
    session = await moderator.create_session(
        PySessionConfiguration.Multicast(
            topic=channel, moderator=True, max_retries=5, timeout=timedelta(seconds=1)
        )
    )
    for bound in (timedelta(seconds=1.5), 1.5):  # a timedelta or seconds
        started = time.monotonic()
        with pytest.raises(slim_bindings.InviteError, match="no answer"):
            await bounded(moderator.invite(session, absent, wait=True, timeout=bound), 1.5 + MARGIN)
        elapsed = time.monotonic() - started
        assert 1.5 <= elapsed < 1.5 + MARGIN, elapsed


@pytest.mark.asyncio
async def test_invite_timeout_is_checked_at_the_call(node: Node) -> None:
    moderator = await node.new_app("org", "ns", "moderator")
    session = await moderator.create_session(
        PySessionConfiguration.Multicast(topic=PyName("org", "ns", "c"), moderator=True)
    )
    someone = PyName("org", "ns", "someone")
    with pytest.raises(ValueError, match="wait=True"):
        await moderator.invite(session, someone, timeout=1.0)
    with pytest.raises(ValueError, match="greater than zero"):
        await moderator.invite(session, someone, wait=True, timeout=0)
    with pytest.raises(TypeError, match="timedelta or a number"):
        await moderator.invite(session, someone, wait=True, timeout="soon")  # type: ignore[arg-type]
