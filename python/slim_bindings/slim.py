"""`Slim`: the asyncio-friendly wrapper around one local app (`PyService`).

Differences from the seed-era wrapper whose API this one keeps, each a fix of a known bug there:

* the caller's ``PyName`` is never modified; ``local_name`` is a copy carrying the instance id;
* there is no Python receive loop: messages wait in bounded per-session queues inside the Rust
  core, so an error for one session never stops delivery to the others, and errors arrive as
  typed exceptions (``SLIMTimeoutError``, ``NoRouteError``, ...) from ``receive(session)``;
* ``disconnect`` forgets the connection, so connecting to the same endpoint again works;
* routing calls made before ``connect`` raise a clear ``SlimConnectionError``;
* ``remove`` exists, and ``invite(..., wait=True)`` waits until the member has joined.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import _slim_bindings as _native
from ._slim_bindings import (
    PyIdentityProvider,
    PyIdentityVerifier,
    PyName,
    PyService,
    PySessionConfiguration,
    PySessionInfo,
)
from .errors import SlimConnectionError

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11

__all__ = ["Slim"]

SessionRef = PySessionInfo | int


class Slim:
    """One local SLIM app: a name with a random instance id, an identity, sessions, its own node."""

    def __init__(self, svc: PyService, name: PyName | None = None) -> None:
        """Wraps an existing service. ``name`` is accepted for compatibility and not modified."""
        self.svc = svc
        self.local_name: PyName = svc.name
        self.conn_ids: dict[str, int] = {}
        self.conn_id: int | None = None

    @classmethod
    async def new(cls, name: PyName, provider: PyIdentityProvider, verifier: PyIdentityVerifier) -> Slim:
        """Creates an app named ``name`` (the caller's object is left as it is)."""
        svc = await _native.create_pyservice(name, provider, verifier)
        return cls(svc, name)

    def get_id(self) -> int:
        """The random instance id of this app."""
        return self.svc.id

    @property
    def id(self) -> int:
        """The random instance id of this app."""
        return self.svc.id

    @property
    def id_str(self) -> str:
        """``org/ns/app/<id>``."""
        parts = self.local_name.components_strings()
        return f"{parts[0]}/{parts[1]}/{parts[2]}/{self.svc.id}"

    def __repr__(self) -> str:
        return f"Slim({self.id_str})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    # --- servers and connections -------------------------------------------------------------

    async def run_server(self, config: dict[str, Any]) -> None:
        """Serves on ``config["endpoint"]`` (``host:port``); returns once listening. The listening
        socket is closed by ``stop_server``, by dropping the last reference to this app, or at
        interpreter exit, before they return: the same port can be served again at once."""
        await _native.run_server(self.svc, config)

    async def run_server_bound(self, config: dict[str, Any]) -> str:
        """Like ``run_server``; returns the bound ``host:port`` (useful with port 0)."""
        return await _native.run_server_bound(self.svc, config)

    async def stop_server(self, endpoint: str) -> None:
        """Stops the server started with this exact endpoint string; its port is free on return."""
        await _native.stop_server(self.svc, endpoint)

    async def connect(self, client_config: dict[str, Any]) -> int:
        """Connects to a node and subscribes this app's name there; returns the connection id."""
        conn_id = await _native.connect(self.svc, client_config)
        self.conn_ids[str(client_config.get("endpoint", ""))] = conn_id
        self.conn_id = conn_id
        return conn_id

    async def disconnect(self, endpoint: str) -> None:
        """Closes the connection to ``endpoint`` (connecting again later works)."""
        conn_id = self.conn_ids.get(endpoint)
        if conn_id is None:
            raise SlimConnectionError(f"not connected to {endpoint}")
        await _native.disconnect(self.svc, conn_id)
        del self.conn_ids[endpoint]
        if self.conn_id == conn_id:
            self.conn_id = next(reversed(self.conn_ids.values()), None)

    def _conn(self, conn: int | None) -> int:
        if conn is not None:
            return conn
        if self.conn_id is None:
            raise SlimConnectionError("No active connection. Please connect first.")
        return self.conn_id

    async def set_route(self, name: PyName, conn: int | None = None) -> None:
        """Sends traffic for ``name`` through the connection (default: the last one made)."""
        await _native.set_route(self.svc, self._conn(conn), name)

    async def remove_route(self, name: PyName, conn: int | None = None) -> None:
        """Removes a route set with ``set_route``."""
        await _native.remove_route(self.svc, self._conn(conn), name)

    async def subscribe(self, name: PyName, conn: int | None = None) -> None:
        """Asks the connected node to deliver ``name`` to this app."""
        await _native.subscribe(self.svc, self._conn(conn), name)

    async def unsubscribe(self, name: PyName, conn: int | None = None) -> None:
        """Withdraws a subscription made with ``subscribe``."""
        await _native.unsubscribe(self.svc, self._conn(conn), name)

    # --- sessions -----------------------------------------------------------------------------

    async def create_session(
        self, session_config: PySessionConfiguration, queue_size: int = 0
    ) -> PySessionInfo:
        """Creates a session. ``queue_size`` is accepted for compatibility and not used: every
        session queue holds 16,384 messages or 4 MiB of payload (whichever fills first) inside
        the core. Sending, a point-to-point session holds at most 16 MiB (see ``publish``).
        Queue policy when the receive queue is full: unreliable point-to-point and multicast
        sessions wait for the reader (back-pressure through the node to the sender, and in a group
        to every member) for up to 5 s; past that they drop, and each dropped message is reported
        by ``receive`` as a ``MessageLostError`` naming its id, in its place, and counted
        (``node_stats()["session_queue_dropped"]``). Reliable point-to-point sessions do not
        acknowledge what finds no room, so the sender retransmits it or raises
        ``SLIMTimeoutError`` for it. Nothing is dropped silently (docs/reliability.md)."""
        return await _native.create_session(self.svc, session_config)

    async def delete_session(self, session_id: SessionRef) -> None:
        """Deletes a session (``SessionNotFoundError`` if unknown). What was published on it
        leaves first: the call returns once the session holds none of it (sent; on a reliable
        session, acknowledged), or after 2 s, when what is left is dropped, counted
        (``node_stats()["session_delete_discarded"]``) and logged (docs/reliability.md,
        "Deleting a session"). Then readers get ``SessionClosedError`` and later calls on the
        session ``SessionNotFoundError``. Deleting a point-to-point session this app created tells
        the other side, which closes its own (``PeerClosedError``); so does deleting the responder
        side of a sticky session whose initiator is of this implementation. A session its peer ended is
        deleted already once its reader took what it held: nothing to do then, no error."""
        await _native.delete_session(self.svc, session_id)

    async def get_session_config(self, session_id: SessionRef) -> PySessionConfiguration:
        """The configuration of a session."""
        return await _native.get_session_config(self.svc, session_id)

    async def set_session_config(
        self, session_id: SessionRef, session_config: PySessionConfiguration
    ) -> None:
        """Changes the configuration of a session."""
        await _native.set_session_config(self.svc, session_id, session_config)

    async def set_default_session_config(self, session_config: PySessionConfiguration) -> None:
        """Sets the configuration used for sessions created on reception."""
        await _native.set_default_session_config(self.svc, session_config)

    # --- messages -----------------------------------------------------------------------------

    async def publish(
        self,
        session: SessionRef,
        msg: bytes,
        dest: PyName,
        payload_type: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Sends ``msg`` to ``dest`` on ``session``.

        Point to point, ``msg`` counts against the session's 16 MiB send buffer until it is sent
        (unreliable) or acknowledged or timed out (reliable). When the buffer is full this waits
        for room, up to 5 s or ``timeout * (max_retries + 1)`` when that is longer, then raises
        ``SendBufferFullError`` (a ``TimeoutError``; the message was not sent). A ``msg`` plus
        ``metadata`` over 4 MiB - 64 KiB raises ``MessageTooLargeError`` (a ``ValueError``) at
        once, nothing sent."""
        await _native.publish(self.svc, session, 1, msg, dest, payload_type, metadata)

    async def publish_to(
        self,
        session: PySessionInfo,
        msg: bytes,
        payload_type: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Replies to the sender of the message ``session`` was received with."""
        await _native.publish(self.svc, session, 1, msg, None, payload_type, metadata)

    async def publish_many(
        self,
        session: SessionRef,
        msgs: Sequence[bytes],
        dest: PyName | None = None,
        payload_type: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Sends every payload of ``msgs``, in order, on ``session`` in one call: to ``dest``, or
        (``dest=None``) back to the sender of the message ``session`` was received with, like
        ``publish_to``. The same guarantees and bounds as ``publish`` one by one (order, the
        16 MiB send buffer, back-pressure: it waits only while there is no room), at a fraction of
        the cost per message. On an error the messages before the failing one were sent and the
        rest were not; the exception's ``sent`` attribute says how many."""
        await _native.publish_many(self.svc, session, 1, msgs, dest, payload_type, metadata)

    async def invite(
        self,
        session: SessionRef,
        name: PyName,
        wait: bool = False,
        timeout: timedelta | float | None = None,
    ) -> None:
        """Invites ``name`` into a multicast session. Returns once the request is sent; with
        ``wait=True``, once the member has joined, (with MLS) can decrypt, and knows where every
        member's stream starts for it: from then on, whatever a member of this implementation
        publishes reaches it or is reported (``MessageLostError``). ``timeout`` (a
        ``timedelta`` or seconds, with ``wait=True`` only) bounds that wait: a member that has not
        joined by then raises ``InviteError`` and the moderator abandons the invite (the next one
        starts, held publishes go out). Without it the invite gives up after its retries (60 x 1 s)."""
        await _native.invite(self.svc, session, name, wait, timeout)

    async def participants(self, session: SessionRef) -> list[PyName]:
        """The members of a multicast session: on the moderator, itself and every member (a
        member that stops answering is dropped within the session's ``liveness_timeout``); on a
        member, the list the moderator's last heartbeat carried."""
        return await _native.participants(self.svc, session)

    async def remove(self, session: SessionRef, name: PyName) -> None:
        """Removes ``name`` from a multicast session."""
        await _native.remove(self.svc, session, name)

    async def receive(
        self, session: SessionRef | None = None, timeout: timedelta | float | None = None
    ) -> tuple[PySessionInfo, bytes]:
        """``session=None``: waits for a session started by someone else and returns its info and
        first payload (that payload is also the first item of the session's queue). With a
        session: its next message; errors for that session are raised as typed exceptions.

        ``timeout`` (a ``timedelta`` or seconds, > 0) bounds the wait: nothing by then raises
        ``TimeoutError`` and takes nothing from the queue. It costs less than
        ``asyncio.wait_for`` (no task and no event-loop timer per call).

        Messages wait in the session's bounded queue (see ``create_session``): a reader that
        falls behind slows the sender down (back-pressure) instead of losing messages; only a
        reader stalled for more than 5 s makes an unreliable or group session drop, and every
        message dropped is raised here as ``MessageLostError`` (with ``message_id``). For many
        messages, ``receive_many`` / ``messages`` take everything waiting in one call.

        A session its peer ended (this member removed from its group, the group deleted, or the
        app that created a point-to-point session deleted it or closed) still returns every
        message that reached it before; then ``PeerClosedError`` (a ``SessionClosedError``
        naming who ended it), then ``SessionClosedError``. A session whose peer vanished (process
        killed, node or network gone) ends the same way once it was silent for the initiator's
        ``liveness_timeout`` (found within 1.5x of it), with ``PeerLostError``: either side of a sticky session (``Unicast``,
        MLS), the server side of an anycast one (docs/liveness.md)."""
        if session is None:
            return await _native.receive_new_session(self.svc, timeout)
        return await _native.receive_session(self.svc, session, timeout)

    async def receive_many(
        self,
        session: SessionRef,
        max_messages: int = 4096,
        timeout: timedelta | float | None = None,
    ) -> list[tuple[PySessionInfo, bytes]]:
        """Every message of ``session`` already waiting (up to ``max_messages``; waits for at
        least one, up to ``timeout`` as ``receive`` does), in order. An error for the session is
        raised in its place: after the messages queued before it have been returned by an
        earlier call."""
        return await _native.receive_session_many(self.svc, session, max_messages, timeout)

    async def sessions(self) -> AsyncIterator[tuple[PySessionInfo, bytes]]:
        """``async for info, first in app.sessions()``: every new inbound session."""
        while True:
            yield await _native.receive_new_session(self.svc)

    async def messages(self, session: SessionRef) -> AsyncIterator[tuple[PySessionInfo, bytes]]:
        """``async for info, payload in app.messages(session)``: until the session is closed.
        Reads in batches (``receive_many``); other errors for the session are raised."""
        from .errors import SessionClosedError, SessionNotFoundError

        receive_many = _native.receive_session_many
        while True:
            try:
                batch = await receive_many(self.svc, session)
            except (SessionClosedError, SessionNotFoundError):
                return
            for item in batch:
                yield item
