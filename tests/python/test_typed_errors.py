"""Typed errors raised by real operations over a real node (not constructed by the test).

Where the others are raised: ``SLIMTimeoutError`` by a rejected reliable message
(test_identity.py), ``MessageLostError`` by ``receive`` in a member that stopped reading
(test_group_loss.py, through group_loss_worker.py), ``NoRouteError``, ``SessionNotFoundError`` and
``SlimConnectionError`` in test_bindings.py, ``ConfigurationError`` in test_identity.py,
``MessageTooLargeError`` in test_bindings.py and test_mcp.py."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import time
from pathlib import Path
from typing import Any

import pytest

import slim_bindings
from conftest import Node, bounded, wait_until
from slim_bindings import (
    PyAlgorithm,
    PyIdentityProvider,
    PyIdentityVerifier,
    PyKey,
    PyKeyData,
    PyKeyFormat,
    PyName,
    PySessionConfiguration,
)

KEYS = Path(__file__).resolve().parents[1] / "data" / "jwt"
ISSUER = "https://issuer.test"


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


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned_jwt(subject: str, exp: int) -> str:
    """A JWT-shaped token (the signature is not checked by its holder, only by receivers)."""
    header = {"alg": "ES256", "typ": "JWT"}
    claims = {"iss": ISSUER, "sub": subject, "exp": exp}
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}.{_b64(b'signature')}"


@pytest.mark.asyncio
async def test_publish_with_an_expired_identity_token_is_an_authentication_error(
    node: Node, tmp_path: Path
) -> None:
    """An app whose token file comes to hold an expired JWT: every receiver would reject (and
    drop) what it sends, so publish refuses with AuthenticationError, and a reliable session
    reports it on its queue; nothing is sent."""
    token_file = tmp_path / "token.jwt"
    token_file.write_text(_unsigned_jwt("org/errors/expiring", int(time.time()) + 3600) + "\n")
    verifier = PyIdentityVerifier.SharedSecret(identity="org/errors/expiring", shared_secret="s" * 32)
    app = await slim_bindings.Slim.new(
        PyName("org", "errors", "expiring"), PyIdentityProvider.StaticJwt(path=str(token_file)), verifier
    )
    node.apps.append(app)
    peer = await node.new_app("org", "errors", "peer")
    async with app, peer:
        await app.connect(node.client_config)
        await app.set_route(peer.local_name)
        session = await app.create_session(PySessionConfiguration.Anycast())
        await bounded(app.publish(session, b"token still valid", peer.local_name))

        # The file is renewed with a token that has already expired; the provider notices the
        # change within a second (it looks at the file at most once a second).
        token_file.write_text(_unsigned_jwt("org/errors/expiring", int(time.time()) - 3600) + "\n")
        deadline = time.monotonic() + 10
        while True:
            try:
                await bounded(app.publish(session, b"refused once the token expired", peer.local_name))
            except slim_bindings.AuthenticationError as e:
                assert "expired" in str(e)
                assert isinstance(e, slim_bindings.SlimError)
                break
            assert time.monotonic() < deadline, "publish kept sending with an expired token"
            await asyncio.sleep(0.05)

        reliable = await app.create_session(
            # A handshake bound of 3 s: the discovery request is re-sent at 1 s and 2 s.
            PySessionConfiguration.Unicast(timeout=datetime.timedelta(seconds=1), max_retries=2)
        )
        await bounded(app.publish(reliable, b"never sent", peer.local_name))
        with pytest.raises(slim_bindings.AuthenticationError, match="expired"):
            await bounded(app.receive(session=reliable.id))
        # Once per outage: the discovery's re-sends are refused too (counted), but the next thing
        # the session reports is the handshake giving up, not one AuthenticationError per re-send.
        with pytest.raises(slim_bindings.SLIMTimeoutError):
            await bounded(app.receive(session=reliable.id))
        assert app.svc.node_stats()["identity_send_refused"] >= 3


def _jwt_app_identity(subject: str, audience: str, accepted: list[str]) -> tuple[Any, Any]:
    key = PyKey(PyAlgorithm.ES256, PyKeyFormat.Pem, PyKeyData.File(str(KEYS / "ec256_a.key")))
    public = PyKey(PyAlgorithm.ES256, PyKeyFormat.Pem, PyKeyData.File(str(KEYS / "ec256_a.pub.pem")))
    provider = PyIdentityProvider.Jwt(
        private_key=key,
        duration=datetime.timedelta(hours=1),
        issuer=ISSUER,
        audience=[audience],
        subject=subject,
    )
    verifier = PyIdentityVerifier.Jwt(
        public_key=public, issuer=ISSUER, audience=accepted, require_iss=True, require_aud=True
    )
    return provider, verifier


@pytest.mark.asyncio
async def test_member_that_rejects_a_newcomers_credential_gets_mls_error(node: Node) -> None:
    """The moderator (and the newcomer itself) accept the newcomer's token (audience "guests"), an
    existing member's verifier does not (it accepts "members" only): that member cannot apply the
    MLS commit that adds the newcomer, and its receive raises MlsError instead of the group going
    quiet for it."""

    async def jwt_app(name: str, audience: str, accepted: list[str]) -> slim_bindings.Slim:
        app = await slim_bindings.Slim.new(
            PyName("org", "errors", name), *_jwt_app_identity(f"org/errors/{name}", audience, accepted)
        )
        node.apps.append(app)
        await app.connect(node.client_config)
        await wait_until(lambda: node.has_subscription(app.local_name), what=f"subscription of {name}")
        return app

    moderator = await jwt_app("mls-moderator", "members", ["members", "guests"])
    strict = await jwt_app("mls-strict", "members", ["members"])
    guest = await jwt_app("mls-guest", "guests", ["members", "guests"])
    async with moderator, strict, guest:
        session = await moderator.create_session(
            PySessionConfiguration.Multicast(
                PyName("org", "errors", "mls-room"),
                moderator=True,
                max_retries=4,
                timeout=datetime.timedelta(milliseconds=500),
                mls_enabled=True,
            )
        )
        for member in (strict, guest):
            await moderator.set_route(member.local_name)
            await bounded(
                moderator.invite(session, PyName(*member.local_name.components_strings()), wait=True), 30
            )
        with pytest.raises(slim_bindings.MlsError, match="credential rejected") as rejected:
            await bounded(strict.receive(session=session.id))
        assert isinstance(rejected.value, slim_bindings.SlimError)
