"""Every core error variant becomes its own typed Python exception, with its fields.

The native module builds one exception per `SlimError` variant through the same mapping every call
uses (`_error_samples`); this test names the class each variant must become, so a variant added in
Rust without a class here fails, and so does a class whose constructor no longer fits what the
mapping passes (it would otherwise arrive as a plain `SlimError`)."""

from __future__ import annotations

import asyncio

import pytest

import slim_bindings
from slim_bindings import _slim_bindings, errors

EXPECTED: dict[str, type[BaseException]] = {
    "SessionNotFound": errors.SessionNotFoundError,
    "SessionClosed": errors.SessionClosedError,
    "Timeout": errors.SLIMTimeoutError,
    "MessageLost": errors.MessageLostError,
    "NoRoute": errors.NoRouteError,
    "Connection": errors.SlimConnectionError,
    "Config": errors.ConfigurationError,
    "Auth": errors.AuthenticationError,
    "Mls": errors.MlsError,
    "Invite": errors.InviteError,
    "SendBufferFull": errors.SendBufferFullError,
    "MessageTooLarge": errors.MessageTooLargeError,
    "ModeratorLost": errors.ModeratorLostError,
    "PeerClosed": errors.PeerClosedError,
    "PeerLost": errors.PeerLostError,
    "Closed": errors.SessionClosedError,
    "Internal": errors.SlimError,
}


def _samples() -> dict[str, BaseException]:
    samples = dict(_slim_bindings._error_samples())
    assert set(samples) == set(EXPECTED), "a SlimError variant without a Python class here (or gone)"
    return samples


def test_every_variant_has_its_own_class() -> None:
    for variant, exc in _samples().items():
        assert type(exc) is EXPECTED[variant], (variant, type(exc), exc)
        assert isinstance(exc, slim_bindings.SlimError)
        # Built by its own constructor, not the fallback: no cause attached.
        assert exc.__cause__ is None, (variant, exc.__cause__)
        assert str(exc), variant


def test_fields_survive_the_mapping() -> None:
    s = _samples()
    not_found = s["SessionNotFound"]
    assert isinstance(not_found, errors.SessionNotFoundError) and isinstance(not_found, ValueError)
    assert not_found.session_id == 7 and "session not found: 7" in str(not_found)
    timeout = s["Timeout"]
    assert isinstance(timeout, errors.SLIMTimeoutError) and isinstance(timeout, asyncio.TimeoutError)
    assert (timeout.session_id, timeout.message_id) == (3, 9)
    gone = s["ModeratorLost"]
    assert isinstance(gone, errors.ModeratorLostError) and isinstance(gone, errors.SessionClosedError)
    assert gone.session_id == 3 and gone.moderator.components_strings()[2] == "moderator"
    assert (gone.silent_ms, gone.undelivered) == (10_000, 3)
    assert "stopped answering" in str(gone)
    peer_gone = s["PeerClosed"]
    assert isinstance(peer_gone, errors.PeerClosedError) and isinstance(peer_gone, errors.SessionClosedError)
    assert (peer_gone.session_id, peer_gone.undelivered) == (3, 2)
    assert peer_gone.peer.components_strings()[2] == "client" and peer_gone.peer.id == 9
    vanished = s["PeerLost"]
    assert isinstance(vanished, errors.PeerLostError) and isinstance(vanished, errors.SessionClosedError)
    assert not isinstance(vanished, errors.PeerClosedError)
    assert (vanished.session_id, vanished.silent_ms, vanished.undelivered) == (3, 10_000, 1)
    assert vanished.peer.components_strings()[2] == "server" and vanished.peer.id == 10
    assert "stopped answering" in str(vanished)
    lost = s["MessageLost"]
    assert isinstance(lost, errors.MessageLostError)
    assert (lost.session_id, lost.message_id) == (3, 11)
    assert lost.source_name is not None
    assert lost.source_name.components_strings()[:3] == ["org", "ns", "producer"] and lost.source_name.id == 5
    full = s["SendBufferFull"]
    assert isinstance(full, errors.SendBufferFullError) and full.session_id == 3
    too_large = s["MessageTooLarge"]
    assert isinstance(too_large, errors.MessageTooLargeError) and isinstance(too_large, ValueError)
    assert (too_large.size, too_large.limit) == (4 * 1024 * 1024 - 64 * 1024 + 1, 4 * 1024 * 1024 - 64 * 1024)
    assert "message too large" in str(too_large)
    assert "no matching found for" in str(s["NoRoute"])
    assert isinstance(s["Connection"], ConnectionError)
    assert isinstance(s["Config"], ValueError)


@pytest.mark.parametrize("variant", sorted(EXPECTED))
def test_each_variant_is_caught_by_its_class(variant: str) -> None:
    exc = _samples()[variant]
    with pytest.raises(EXPECTED[variant]):
        raise exc
