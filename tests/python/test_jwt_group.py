"""A group whose members hold different JWT identities (distinct subjects, one issuer signing
with one ES256 key, every verifier holding the issuer's public key) forms and exchanges
messages, with and without MLS; an app whose token is signed by another key cannot join, and
what it sends is not delivered (keys from tests/data/jwt)."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

import pytest

import slim_bindings
from conftest import Node, bounded, nothing_within, wait_until
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
AUDIENCE = "slim.group.test"


def _pem(file: str) -> PyKey:
    return PyKey(PyAlgorithm.ES256, PyKeyFormat.Pem, PyKeyData.File(str(KEYS / file)))


def _identity(
    subject: str, signing_key: str = "ec256_a.key"
) -> tuple[PyIdentityProvider, PyIdentityVerifier]:
    """A token for ``subject`` signed with ``signing_key``; a verifier trusting only the issuer's
    key (``ec256_a``) that demands issuer, audience and a subject (any subject)."""
    provider = PyIdentityProvider.Jwt(
        private_key=_pem(signing_key),
        duration=datetime.timedelta(hours=1),
        issuer=ISSUER,
        audience=[AUDIENCE],
        subject=subject,
    )
    verifier = PyIdentityVerifier.Jwt(
        public_key=_pem("ec256_a.pub.pem"),
        issuer=ISSUER,
        audience=[AUDIENCE],
        require_iss=True,
        require_aud=True,
        require_sub=True,
    )
    return provider, verifier


async def _app(node: Node, name: str, signing_key: str = "ec256_a.key") -> slim_bindings.Slim:
    subject = f"spiffe://group.test/{name}"
    app = await slim_bindings.Slim.new(PyName("org", "default", name), *_identity(subject, signing_key))
    node.apps.append(app)
    await app.connect(node.client_config)
    await wait_until(lambda: node.has_subscription(app.local_name), what=f"subscription of {name}")
    return app


async def _nothing_more(app: slim_bindings.Slim, session: slim_bindings.PySessionInfo | None = None) -> None:
    """Nothing else arrives for a short while (the bound of a negative check)."""
    await nothing_within(app.receive(session=session.id if session else None), 0.5)


async def _form_group(node: Node, mls: bool):
    moderator = await _app(node, "moderator")
    members = [await _app(node, f"member-{i}") for i in range(2)]
    channel = PyName("org", "default", "jwt-room")
    session = await moderator.create_session(
        PySessionConfiguration.Multicast(
            channel,
            moderator=True,
            max_retries=4,
            timeout=datetime.timedelta(milliseconds=500),
            mls_enabled=mls,
        ),
    )
    for m in members:
        await moderator.set_route(m.local_name)
        await bounded(moderator.invite(session, PyName(*m.local_name.components_strings()), wait=True), 30)
    return moderator, members, channel, session


@pytest.mark.asyncio
@pytest.mark.parametrize("mls", [True, False], ids=["mls", "plain"])
async def test_group_of_distinct_jwt_identities(node: Node, mls: bool) -> None:
    moderator, members, channel, session = await _form_group(node, mls)

    await moderator.publish(session, b"welcome, both of you", channel)
    member_sessions = []
    for m in members:
        info, first = await bounded(m.receive())
        assert first == b"welcome, both of you"
        assert info.id == session.id
        assert info.source_name == moderator.local_name
        assert "SLIM_IDENTITY" not in info.metadata
        again, payload = await bounded(m.receive(session=info.id))
        assert payload == b"welcome, both of you"
        member_sessions.append(again)

    # Each member publishes; the moderator and the other member read it, the publisher does not.
    for i, m in enumerate(members):
        text = f"hello from member-{i}".encode()
        await m.publish(member_sessions[i], text, channel)
        info, payload = await bounded(moderator.receive(session=session.id))
        assert (payload, info.source_name) == (text, m.local_name)
        other = 1 - i
        info, payload = await bounded(members[other].receive(session=member_sessions[other].id))
        assert (payload, info.source_name) == (text, m.local_name)
    await moderator.publish(session, b"last word", channel)
    for m, s in zip(members, member_sessions):
        _, payload = await bounded(m.receive(session=s.id))
        assert payload == b"last word"
        await _nothing_more(m, s)


@pytest.mark.asyncio
async def test_token_signed_by_another_key_cannot_join_nor_deliver(node: Node) -> None:
    moderator, members, channel, session = await _form_group(node, mls=True)
    # Same issuer, audience and subject layout, but signed with a key the verifiers do not trust.
    intruder = await _app(node, "intruder", signing_key="ec256_b.key")

    # The moderator drops the intruder's answers, so the invite fails at the caller's bound (the
    # moderator abandons it then: its held publishes go out).
    await moderator.set_route(intruder.local_name)
    invite = asyncio.ensure_future(
        moderator.invite(session, PyName(*intruder.local_name.components_strings()), wait=True, timeout=3)
    )

    # Meanwhile: a direct message from the intruder is dropped, while the same message from an
    # app holding a properly signed token, sent right after it, is delivered (so the intruder's
    # is not merely late).
    outsider = await _app(node, "outsider")
    for sender in (intruder, outsider):
        await sender.set_route(members[0].local_name)
        p2p = await sender.create_session(PySessionConfiguration.Anycast())
        text = f"direct from {sender.local_name.components_strings()[2]}".encode()
        await sender.publish(p2p, text, members[0].local_name)
    info, payload = await bounded(members[0].receive())
    assert payload == b"direct from outsider"
    assert info.source_name == outsider.local_name
    await _nothing_more(members[0])

    with pytest.raises(slim_bindings.InviteError, match="no answer"):
        await bounded(invite, 10)

    # The group is undisturbed: the moderator's next message reaches both members, once.
    await moderator.publish(session, b"still here", channel)
    for m in members:
        info, first = await bounded(m.receive())
        assert (first, info.id) == (b"still here", session.id)
        _, payload = await bounded(m.receive(session=info.id))
        assert payload == b"still here"
        await _nothing_more(m, info)
