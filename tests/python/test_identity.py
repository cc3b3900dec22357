"""JWT identities end to end: a message is delivered only when the receiver's verifier accepts
the sender's token (keys from tests/data/jwt)."""

from __future__ import annotations

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
ISSUER = "test-issuer"


def _key(alg: PyAlgorithm, file: str) -> PyKey:
    return PyKey(alg, PyKeyFormat.Pem, PyKeyData.File(str(KEYS / file)))


def _provider(alg: PyAlgorithm, private: str, subject: str) -> PyIdentityProvider:
    return PyIdentityProvider.Jwt(
        private_key=_key(alg, private),
        duration=datetime.timedelta(hours=1),
        issuer=ISSUER,
        audience=["test.audience"],
        subject=subject,
    )


def _verifier(alg: PyAlgorithm, public: str, audience: list[str]) -> PyIdentityVerifier:
    return PyIdentityVerifier.Jwt(
        public_key=_key(alg, public),
        issuer=ISSUER,
        audience=audience,
        require_iss=True,
        require_aud=True,
    )


async def _jwt_app(
    node: Node, name: str, provider: PyIdentityProvider, verifier: PyIdentityVerifier
) -> slim_bindings.Slim:
    app = await slim_bindings.Slim.new(PyName("org", "default", name), provider, verifier)
    node.apps.append(app)
    await app.connect(node.client_config)
    await wait_until(lambda: node.has_subscription(app.local_name), what=f"subscription of {name}")
    return app


@pytest.mark.asyncio
@pytest.mark.parametrize("audience", [["test.audience"], ["wrong.audience"]])
async def test_identity_verification(node: Node, audience: list[str]) -> None:
    # The sender signs with ES256 and checks ES384; the receiver the other way round.
    sender = await _jwt_app(
        node,
        "sender",
        _provider(PyAlgorithm.ES256, "ec256_a.key", "sender"),
        _verifier(PyAlgorithm.ES384, "ec384_a.pub.pem", ["test.audience"]),
    )
    receiver = await _jwt_app(
        node,
        "receiver",
        _provider(PyAlgorithm.ES384, "ec384_a.key", "receiver"),
        _verifier(PyAlgorithm.ES256, "ec256_a.pub.pem", audience),
    )

    await sender.set_route(receiver.local_name)
    session = await sender.create_session(
        PySessionConfiguration.Anycast(timeout=datetime.timedelta(seconds=1), max_retries=3)
    )
    await sender.publish(session, b"thisistherequest", receiver.local_name)

    if audience == ["test.audience"]:
        info, request = await bounded(receiver.receive())
        assert request == b"thisistherequest"
        assert "SLIM_IDENTITY" not in info.metadata
        await receiver.publish_to(info, b"thisistheresponse")
        _, response = await bounded(sender.receive(session=session.id))
        assert response == b"thisistheresponse"
    else:
        # Rejected by the receiver: nothing arrives there, and the sender's reliable message
        # ends in SLIMTimeoutError once its retries are spent (a hang fails: `bounded` raises Hung).
        with pytest.raises(slim_bindings.SLIMTimeoutError) as timed_out:
            await bounded(sender.receive(session=session.id), 8.0)
        assert timed_out.value.session_id == session.id
        await nothing_within(receiver.receive(), 0.3)


@pytest.mark.asyncio
async def test_bad_identity_configuration_is_a_value_error() -> None:
    name = PyName("org", "default", "broken")
    ok_verifier = PyIdentityVerifier.SharedSecret(identity="x", shared_secret="s")
    with pytest.raises(slim_bindings.ConfigurationError, match="missing.jwt"):
        await slim_bindings.Slim.new(
            name, PyIdentityProvider.StaticJwt(path=str(KEYS / "missing.jwt")), ok_verifier
        )
    with pytest.raises(ValueError):
        await slim_bindings.Slim.new(
            name, PyIdentityProvider.SharedSecret(identity="x", shared_secret="s"), PyIdentityVerifier.Jwt()
        )
    with pytest.raises(ValueError):
        await slim_bindings.Slim.new(
            name, PyIdentityProvider.SharedSecret(identity="x", shared_secret=""), ok_verifier
        )
