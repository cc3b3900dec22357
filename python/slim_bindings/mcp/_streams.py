"""The read and write streams of one MCP connection over one SLIM session.

They satisfy the SDK's ``ReadStream[SessionMessage | Exception]`` / ``WriteStream[SessionMessage]``
protocols directly, without a relay task: ``receive`` takes every SLIM message already waiting in
one call and parses them one by one; ``send`` serialises and publishes in the caller's task.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
from types import TracebackType

import anyio
from mcp import types
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata, SessionMessage
from typing_extensions import Self

from .. import _slim_bindings as _native
from .._slim_bindings import PyName, PyService, PySessionInfo
from ..errors import MessageLostError, SessionClosedError, SessionNotFoundError, SlimError
from . import _framing as framing

log = logging.getLogger("slim_bindings.mcp")


@dataclass(frozen=True)
class SlimPeer:
    """Who is on the other end of a served MCP connection. Handlers find it as
    ``ctx.request_context.request`` in an ``MCPServer`` tool, ``ctx.request`` in a low-level
    ``Server`` handler. ``name`` is the client app's SLIM name with its instance id; every
    message on the connection passed this app's identity verifier (shared secret or JWT)."""

    name: PyName
    session_id: int


class Connection:
    """One SLIM session carrying one MCP connection: publishing, batched reading, liveness."""

    def __init__(self, svc: PyService, session_id: int, peer: PyName, max_message_size: int) -> None:
        self.svc = svc
        self.session_id = session_id
        self.peer = peer
        # No SLIM message carries more (a larger publish raises MessageTooLargeError): a larger
        # setting is lowered to it, so that an oversized message still gets its MCP error.
        self.max_message_size = min(max_message_size, framing.DEFAULT_MAX_MESSAGE_SIZE)
        # What the peer accepts, once it says (open/ready); ours until then.
        self.send_limit = self.max_message_size
        self.closed_by_peer = False
        self.ended = False
        self.last_sent = time.monotonic()
        self._waiting: collections.deque[tuple[PySessionInfo, bytes]] = collections.deque()

    async def publish(self, payload: bytes, payload_type: str) -> None:
        """Sends one SLIM message to the peer (``SlimError`` subclasses on failure)."""
        await _native.publish(self.svc, self.session_id, 1, payload, self.peer, payload_type, None)
        self.last_sent = time.monotonic()

    async def next_message(self) -> tuple[str, bytes] | None:
        """(payload_type, payload) of the next SLIM message; ``None`` once the connection is over:
        the session was deleted, or the peer stopped acknowledging (it is gone: the session layer
        has already retried), or it cannot be reached. A message the session reports lost is
        logged and skipped: the request it carried fails by its own timeout; later ones go on."""
        while not self._waiting:
            if self.ended:
                return None
            try:
                batch = await _native.receive_session_many(self.svc, self.session_id)
            except (SessionClosedError, SessionNotFoundError):
                self.ended = True
                return None
            except MessageLostError as e:
                log.warning(
                    "MCP over SLIM: session %d lost a message from %s: %s", self.session_id, self.peer, e
                )
                continue
            except SlimError as e:
                # SLIMTimeoutError (no acknowledgement after every retry) or NoRouteError: the peer
                # is gone. The connection ends; the SDK fails its pending requests.
                log.info("MCP over SLIM: session %d: peer %s unreachable: %s", self.session_id, self.peer, e)
                self.ended = True
                return None
            self._waiting.extend(batch)
        info, payload = self._waiting.popleft()
        return info.payload_type, payload

    async def keepalive(self, interval: float) -> None:
        """Sends ``ping`` whenever nothing was sent for ``interval`` seconds, until cancelled:
        the unacknowledged ping of a vanished peer ends the connection (``next_message``)."""
        while not self.ended:
            idle = time.monotonic() - self.last_sent
            if idle >= interval:
                try:
                    await self.publish(b"", framing.PING)
                except SlimError as e:
                    log.info("MCP over SLIM: session %d: keepalive failed: %s", self.session_id, e)
                    self.ended = True
                    return
                idle = 0.0
            await anyio.sleep(interval - idle)

    async def close(self) -> None:
        """Tells the peer (unless it closed first), then deletes the session. Bounded, shielded:
        runs to completion even when the caller is being cancelled."""
        with anyio.CancelScope(shield=True):
            if not self.closed_by_peer and not self.ended:
                with anyio.move_on_after(1.0):
                    try:
                        await self.publish(b"", framing.CLOSE)
                    except SlimError:
                        pass  # the peer is gone or the session already closed: nothing to tell
            self.ended = True
            try:
                await _native.delete_session(self.svc, self.session_id)
            except SlimError:
                pass  # already deleted (closed by the app or the runtime)


class _Stream:
    """What both halves share: a local close (the connection itself is closed by its owner:
    ``client`` on exit, ``serve`` when the SDK's loop for the connection ends)."""

    _closed = False

    async def aclose(self) -> None:
        self._closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        await self.aclose()
        return None


class SlimReadStream(_Stream):
    """The read half: each SLIM message as a ``SessionMessage`` (or the ``Exception`` the SDK
    expects for input it cannot use). Ends (``anyio.EndOfStream``) when the connection does."""

    def __init__(self, conn: Connection, *, serving: bool) -> None:
        self._conn = conn
        self._serving = serving
        # Server side, every inbound message carries who sent it (``SlimPeer``) to the handlers.
        self._metadata = (
            ServerMessageMetadata(request_context=SlimPeer(conn.peer, conn.session_id)) if serving else None
        )

    @property
    def session_id(self) -> int:
        """The SLIM session carrying this connection (the same id at both ends)."""
        return self._conn.session_id

    async def receive(self) -> SessionMessage | Exception:
        if self._closed:
            raise anyio.ClosedResourceError
        conn = self._conn
        while True:
            item = await conn.next_message()
            if item is None:
                raise anyio.EndOfStream
            payload_type, payload = item
            if payload_type in framing.CONTROL:
                if payload_type == framing.CLOSE:
                    conn.closed_by_peer = True
                    conn.ended = True
                    raise anyio.EndOfStream
                if payload_type == framing.OPEN and self._serving:
                    conn.send_limit = framing.peer_limit(payload) or conn.send_limit
                    await self._reply(framing.hello(conn.max_message_size), framing.READY)
                continue  # ping, or a stray open/ready
            if len(payload) > conn.max_message_size:
                rid = framing.request_id_in_prefix(payload)
                result = await self._refuse(
                    rid, framing.too_large(len(payload), conn.max_message_size, "message")
                )
            else:
                decoded = framing.decode(payload)
                if not isinstance(decoded, tuple):
                    return SessionMessage(decoded, self._metadata)
                result = await self._refuse(*decoded)
            if result is not None:
                return result

    async def _refuse(
        self, rid: types.RequestId | None, error: types.ErrorData
    ) -> SessionMessage | Exception | None:
        """Input that is not a usable JSON-RPC message. Server side: the peer gets the error (and
        nothing reaches the SDK). Client side: a request of ours the server answered unreadably
        fails with that error; anything else goes to the SDK as an exception (its message handler)."""
        log.info(
            "MCP over SLIM: session %d: refused a message from %s: %s",
            self._conn.session_id,
            self._conn.peer,
            error.message,
        )
        if self._serving:
            await self._reply(framing.encode(framing.error_message(rid, error)), framing.JSON)
            return None
        if rid is not None:
            return SessionMessage(framing.error_message(rid, error))
        return ValueError(error.message)

    async def _reply(self, payload: bytes, payload_type: str) -> None:
        try:
            await self._conn.publish(payload, payload_type)
        except SlimError as e:
            log.info(
                "MCP over SLIM: session %d: could not answer %s: %s",
                self._conn.session_id,
                self._conn.peer,
                e,
            )

    def __aiter__(self) -> SlimReadStream:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None


class SlimWriteStream(_Stream):
    """The write half: one SLIM message per JSON-RPC message. A message over the size limit is
    not sent: ``send`` raises ``MCPError`` (``INVALID_REQUEST``), which the SDK hands to the caller
    of a request or notification, and turns into an error response in place of an oversized
    result. A closed or broken session raises ``anyio.BrokenResourceError`` (the SDK's
    "connection closed")."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def send(self, item: SessionMessage, /) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        conn = self._conn
        payload = framing.encode(item.message)
        if len(payload) > conn.send_limit:
            error = framing.too_large(len(payload), conn.send_limit, _kind(item.message))
            if isinstance(item.message, types.JSONRPCError):
                # An error response must still reach the peer: send the short error instead.
                payload = framing.encode(framing.error_message(item.message.id, error))
            else:
                raise MCPError(code=error.code, message=error.message, data=error.data)
        if conn.ended:
            raise anyio.BrokenResourceError
        try:
            await conn.publish(payload, framing.JSON)
        except (SessionClosedError, SessionNotFoundError) as e:
            conn.ended = True
            raise anyio.BrokenResourceError from e
        except SlimError as e:
            raise anyio.BrokenResourceError from e


def _kind(message: types.JSONRPCMessage) -> str:
    if isinstance(message, types.JSONRPCRequest):
        return f"request {message.method!r}"
    if isinstance(message, types.JSONRPCNotification):
        return f"notification {message.method!r}"
    return "response"
