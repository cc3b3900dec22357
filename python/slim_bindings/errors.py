"""Exceptions raised by slim_bindings.

Every error comes from one root, :class:`SlimError`. Where a builtin fits, the class also derives
from it (``TimeoutError``, ``ConnectionError``, ``ValueError``), so existing ``except`` clauses keep
working. Messages keep the upstream wording, so substring checks such as ``"session not found"`` or
``"no matching found"`` still match.

The native module raises these classes (it imports this module), so ``except SlimError`` catches
everything the bindings raise on purpose.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = [
    "AuthenticationError",
    "ConfigurationError",
    "InviteError",
    "MessageLostError",
    "MessageTooLargeError",
    "MlsError",
    "ModeratorLostError",
    "NoRouteError",
    "PeerClosedError",
    "PeerLostError",
    "SLIMTimeoutError",
    "SendBufferFullError",
    "SessionClosedError",
    "SessionNotFoundError",
    "SlimConnectionError",
    "SlimError",
]


class SlimError(Exception):
    """Root of every error raised by slim_bindings.

    ``sent`` is set by ``publish_many``: how many messages of the batch were sent before this
    error (the rest were not); None elsewhere."""

    sent: int | None = None


class SessionNotFoundError(SlimError, ValueError):
    """The session id is unknown (never created, or already deleted)."""

    def __init__(self, message: str, session_id: int | None = None) -> None:
        super().__init__(message)
        self.session_id = session_id


class SessionClosedError(SlimError):
    """The session (or the whole app) was closed while the operation was pending."""


class ModeratorLostError(SessionClosedError):
    """A group member stopped hearing from its moderator for longer than the session's liveness
    bound (``PySessionConfiguration.Multicast(..., liveness_timeout=...)``, default 10 s): the
    moderator's process died, or its node or network is gone. Raised by ``receive`` after every
    message that arrived before; the session is closed on this member. ``moderator`` names the
    moderator (with its id), ``session_id`` the group session, ``silent_ms`` how long nothing
    came from it, and ``undelivered`` counts what this member had published and never got out
    (waiting for the group to be ready, or not yet taken by its session)."""

    def __init__(
        self,
        message: str,
        session_id: int | None = None,
        moderator: Any = None,
        silent_ms: int = 0,
        undelivered: int = 0,
    ) -> None:
        super().__init__(message)
        self.session_id = session_id
        self.moderator = moderator
        self.silent_ms = silent_ms
        self.undelivered = undelivered


class PeerClosedError(SessionClosedError):
    """The other side ended the session: the app that created a point-to-point session deleted
    it or closed, or a group's moderator removed this member or deleted the group
    (docs/reliability.md, "When the peer ends a session"). Raised by ``receive`` after every
    message that arrived before; the session is closed on this side. ``peer`` names who ended it
    (with its id), ``session_id`` the session, and ``undelivered`` counts what this side had
    published and never got out (queued, or sent and not acknowledged)."""

    def __init__(
        self, message: str, session_id: int | None = None, peer: Any = None, undelivered: int = 0
    ) -> None:
        super().__init__(message)
        self.session_id = session_id
        self.peer = peer
        self.undelivered = undelivered


class PeerLostError(SessionClosedError):
    """The peer of a point-to-point session stopped answering for longer than the session's
    liveness bound (the initiator's ``Unicast``/``Anycast(..., liveness_timeout=...)``, default
    10 s; found within 1.5x of it; docs/liveness.md): its process died, or its node or network is
    gone. A peer that is only slow, or a reader here that pauses, does not count. Either side of a
    sticky session (``Unicast``, MLS) watches the other; the server side of an anycast session
    watches its client. Raised by ``receive`` after every message that arrived before;
    the session is closed on this side. ``peer`` names the peer (with its id), ``session_id`` the
    session, ``silent_ms`` how long nothing came from it, and ``undelivered`` counts what this
    side had published and never got out (queued, or sent and not acknowledged)."""

    def __init__(
        self,
        message: str,
        session_id: int | None = None,
        peer: Any = None,
        silent_ms: int = 0,
        undelivered: int = 0,
    ) -> None:
        super().__init__(message)
        self.session_id = session_id
        self.peer = peer
        self.silent_ms = silent_ms
        self.undelivered = undelivered


# On Python 3.10 asyncio.TimeoutError is its own class; from 3.11 it is the builtin.
_TIMEOUT_BASES: tuple[type[BaseException], ...] = (
    (TimeoutError,) if asyncio.TimeoutError is TimeoutError else (TimeoutError, asyncio.TimeoutError)
)


class SLIMTimeoutError(SlimError, *_TIMEOUT_BASES):  # type: ignore[misc]
    """A reliable message was not acknowledged after all its retries."""

    def __init__(
        self,
        message_id: int,
        session_id: int,
        message: str = "SLIM timeout error",
        original_exception: BaseException | None = None,
    ) -> None:
        super().__init__(message)
        self.message_id = message_id
        self.session_id = session_id
        self.message = message
        self.original_exception = original_exception

    def __str__(self) -> str:
        text = f"{self.message} for session {self.session_id} and message {self.message_id}"
        if self.original_exception is not None:
            text += f". Caused by: {self.original_exception!r}"
        return text

    def __repr__(self) -> str:
        return (
            f"SLIMTimeoutError(session_id={self.session_id}, message_id={self.message_id}, "
            f"message={self.message!r}, original_exception={self.original_exception!r})"
        )


class MessageLostError(SlimError):
    """A message of the session was lost and could not be recovered; delivery goes on after it.

    Raised by ``receive(session)`` in the lost message's place in the stream, once per lost
    message. ``message_id`` names it; ``source_name`` is its producer when known (in a group,
    ids count per producer). Causes: its producer no longer had it when it was asked again, it
    could not be decrypted, or the reader left the session queue full for longer than the 5 s
    delivery bound (see docs/reliability.md)."""

    def __init__(
        self,
        message: str,
        session_id: int | None = None,
        message_id: int | None = None,
        source_name: Any = None,
    ) -> None:
        super().__init__(message)
        self.session_id = session_id
        self.message_id = message_id
        self.source_name = source_name


class SendBufferFullError(SlimError, *_TIMEOUT_BASES):  # type: ignore[misc]
    """A publish waited its whole bound for room in the session's send buffer and was not sent.

    A point-to-point session holds at most 16 MiB for sending (publishes waiting plus reliable
    messages not yet acknowledged). A publish that finds it full waits for the peer to acknowledge
    (or for old messages to time out); after 5 s, or ``timeout * (max_retries + 1)`` when that is
    longer, it raises this instead. Nothing was sent; publishing again later is safe."""

    def __init__(self, message: str, session_id: int | None = None) -> None:
        super().__init__(message)
        self.session_id = session_id


class MessageTooLargeError(SlimError, ValueError):
    """A publish larger than a SLIM message can carry; nothing was sent.

    A node takes messages of up to 4 MiB; a payload plus its metadata may use all of it but 64 KiB
    (kept for the headers, the identity token and MLS): ``limit``, 4,128,768 bytes. ``size`` is
    what the publish asked for."""

    def __init__(self, message: str, size: int | None = None, limit: int | None = None) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class NoRouteError(SlimError):
    """No node knows where to deliver the message (the text contains "no matching found")."""

    def __init__(self, message: str, session_id: int | None = None) -> None:
        super().__init__(message)
        self.session_id = session_id


class SlimConnectionError(SlimError, ConnectionError):
    """Connecting to, or talking with, a remote node failed."""

    def __init__(self, message: str) -> None:
        # ConnectionError (an OSError) would read two arguments as errno/strerror: pass one.
        super().__init__(message)


class ConfigurationError(SlimError, ValueError):
    """A configuration value (dict, session config, identity) is invalid."""


class AuthenticationError(SlimError):
    """An identity token could not be produced or was rejected."""


class MlsError(SlimError):
    """The MLS group of a session failed (key package, commit, welcome, decryption)."""


class InviteError(SlimError):
    """Inviting or removing a participant failed."""
