"""The server side: ``await slim_bindings.mcp.serve(app, server)``."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import MCPServer
from mcp.server.models import InitializationOptions
from mcp.server.runner import serve_dual_era_loop

from .. import _slim_bindings as _native
from .._slim_bindings import PySessionConfiguration, PySessionInfo
from ..slim import Slim
from . import _framing as framing
from ._streams import Connection, SlimReadStream, SlimWriteStream

log = logging.getLogger("slim_bindings.mcp")


def lowlevel_server(server: Server[Any] | MCPServer[Any]) -> Server[Any]:
    """The low-level ``Server`` behind ``server`` (itself, or the one an ``MCPServer`` — formerly
    ``FastMCP`` — wraps)."""
    if isinstance(server, Server):
        return server
    for attr in ("_lowlevel_server", "_mcp_server"):  # MCPServer (2.x), FastMCP (1.x)
        inner = getattr(server, attr, None)
        if isinstance(inner, Server):
            return inner
    raise TypeError(f"expected an mcp Server or MCPServer, not {type(server).__name__}")


async def serve(
    app: Slim,
    server: Server[Any] | MCPServer[Any],
    *,
    timeout: float = framing.DEFAULT_TIMEOUT,
    max_message_size: int = framing.DEFAULT_MAX_MESSAGE_SIZE,
    init_options: InitializationOptions | None = None,
    raise_exceptions: bool = False,
) -> None:
    """Serves ``server`` (an ``mcp.server.lowlevel.Server`` or an ``MCPServer``) to every session
    another app opens with ``app``, each as its own MCP connection, concurrently, until cancelled.

    The server's lifespan is entered once for all connections. A connection ends when its client
    leaves, when the client stops acknowledging for ``timeout`` seconds (its process died), or
    when it fails; the others go on. Messages that are not JSON-RPC, or longer than
    ``max_message_size`` bytes, are answered with a JSON-RPC error and go no further. ``serve``
    sets ``app``'s default point-to-point session configuration (how long a client may stay silent
    before a message to it is given up); sessions started by ``app`` itself are not affected.
    On cancellation every client is told that the connection is closed. One ``serve`` per app:
    it takes every session other apps open with it.
    """
    lowlevel = lowlevel_server(server)
    options = init_options or lowlevel.create_initialization_options()
    retransmit, keepalive = framing.session_timing(timeout)
    await app.set_default_session_config(
        PySessionConfiguration.Unicast(
            timeout=datetime.timedelta(seconds=retransmit), max_retries=framing.RELIABLE_RETRIES
        )
    )
    svc = app.svc

    async def run_connection(read: SlimReadStream, write: SlimWriteStream, state: Any) -> None:
        # The SDK's entry for a transport with many connections (as its streamable HTTP manager
        # uses): the lifespan entered once, above; the protocol era chosen by each client.
        await serve_dual_era_loop(
            lowlevel,
            read,
            write,
            lifespan_state=state,
            init_options=options,
            raise_exceptions=raise_exceptions,
        )

    async with lowlevel.lifespan(lowlevel) as state, anyio.create_task_group() as tg:
        while True:
            info, _first = await _native.receive_new_session(svc)
            tg.start_soon(_connection, svc, info, max_message_size, keepalive, run_connection, state)


async def _connection(
    svc: Any,
    info: PySessionInfo,
    max_message_size: int,
    keepalive: float,
    run: Callable[[SlimReadStream, SlimWriteStream, Any], Awaitable[None]],
    state: Any,
) -> None:
    """One MCP connection; whatever happens to it stays here."""
    conn = Connection(svc, info.id, info.source_name, max_message_size)
    log.debug("MCP over SLIM: connection from %s (session %d)", info.source_name, info.id)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(conn.keepalive, keepalive)
            try:
                await run(SlimReadStream(conn, serving=True), SlimWriteStream(conn), state)
            finally:
                tg.cancel_scope.cancel()
    except Exception:
        log.exception("MCP over SLIM: the connection from %s (session %d) failed", info.source_name, info.id)
    finally:
        await conn.close()
        log.debug("MCP over SLIM: connection from %s (session %d) ended", info.source_name, info.id)
