"""The client side: ``slim_bindings.mcp.client(app, server_name)``."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from .._slim_bindings import PyName, PySessionConfiguration
from ..errors import SlimConnectionError, SlimError
from ..slim import Slim
from . import _framing as framing
from ._streams import Connection, SlimReadStream, SlimWriteStream


def as_name(name: str | PyName) -> PyName:
    """``"org/ns/app"`` or a ``PyName`` → ``PyName`` (``ValueError`` for anything else)."""
    if isinstance(name, PyName):
        return name
    parts = name.split("/") if isinstance(name, str) else []
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"an MCP server name is 'organization/namespace/application', not {name!r}")
    return PyName(parts[0], parts[1], parts[2])


@asynccontextmanager
async def client(
    app: Slim,
    server_name: str | PyName,
    *,
    mls: bool = True,
    timeout: float = framing.DEFAULT_TIMEOUT,
    max_message_size: int = framing.DEFAULT_MAX_MESSAGE_SIZE,
) -> AsyncIterator[tuple[SlimReadStream, SlimWriteStream]]:
    """Connects to the MCP server ``server_name`` (``"org/ns/app"`` or a ``PyName``) and yields
    ``(read_stream, write_stream)`` for ``mcp.ClientSession(read, write)``; the context manager
    itself is a transport for ``mcp.Client(...)``.

    The connection is a reliable point-to-point SLIM session from ``app`` (connected to a node;
    a route to ``server_name`` is set through its last connection), end-to-end encrypted with MLS
    unless ``mls=False``. ``timeout`` (seconds) bounds the wait for the server: entering raises
    ``SlimConnectionError`` if no MCP server answers within it, and once connected a server that
    stops acknowledging (its process died, its node went away) is noticed within it: the read
    stream ends and every pending request fails with an ``MCPError`` ("Connection closed"). It does
    not bound how long a live server may take to answer; use the SDK's ``read_timeout_seconds``.
    Messages longer than ``max_message_size`` bytes (or than the server accepts) are not sent: the
    call raises ``MCPError`` at once. Leaving the block tells the server and deletes the session.
    """
    name = as_name(server_name)
    retransmit, keepalive = framing.session_timing(timeout)
    if app.conn_id is not None:
        await app.set_route(name)
    config = PySessionConfiguration.Unicast(
        timeout=datetime.timedelta(seconds=retransmit), max_retries=framing.RELIABLE_RETRIES, mls_enabled=mls
    )
    info = await app.create_session(config)
    conn = Connection(app.svc, info.id, name, max_message_size)
    try:
        await _open(conn, timeout)
        async with anyio.create_task_group() as tg:
            tg.start_soon(conn.keepalive, keepalive)
            try:
                yield SlimReadStream(conn, serving=False), SlimWriteStream(conn)
            finally:
                tg.cancel_scope.cancel()
    finally:
        await conn.close()


async def _open(conn: Connection, timeout: float) -> None:
    """Sends ``open`` (the session's first message: it runs discovery and, with MLS, the group
    join) and waits for ``ready``."""
    what = f"no MCP server answered as {'/'.join(conn.peer.components_strings())} within {timeout:g} s"
    with anyio.move_on_after(timeout) as scope:
        try:
            await conn.publish(framing.hello(conn.max_message_size), framing.OPEN)
            while True:
                item = await conn.next_message()
                if item is None:
                    raise SlimConnectionError(f"{what}: the session ended")
                payload_type, payload = item
                if payload_type == framing.READY:
                    conn.send_limit = min(
                        conn.max_message_size, framing.peer_limit(payload) or conn.max_message_size
                    )
                    return
        except SlimConnectionError:
            raise
        except SlimError as e:
            raise SlimConnectionError(f"{what}: {e}") from e
    if scope.cancelled_caught:
        raise SlimConnectionError(what)
