"""MCP (Model Context Protocol) over SLIM, on the official ``mcp`` SDK (``pip install 'slim-bindings[mcp]'``).

An MCP client reaches an MCP server by its SLIM name, through any SLIM node (or network of
nodes), over a reliable point-to-point session that is end-to-end encrypted with MLS unless told
otherwise::

    # server: every session another app opens with `app` is one MCP connection
    await slim_bindings.mcp.serve(app, mcp_server)          # a low-level Server or an MCPServer

    # client: the streams of any mcp transport
    async with slim_bindings.mcp.client(app, "org/ns/server") as (read, write):
        async with mcp.ClientSession(read, write) as session:
            await session.initialize()
            await session.call_tool("add", {"a": 1, "b": 2})

    # or the SDK's high-level client
    async with mcp.Client(slim_bindings.mcp.client(app, "org/ns/server")) as c:
        await c.call_tool("add", {"a": 1, "b": 2})

Each JSON-RPC message travels as one SLIM message (UTF-8 JSON). What the transport adds on the wire
(an opening handshake, keepalives, a close notice, error replies to malformed input, size limits)
is described in docs/mcp.md. asyncio only (the SDK's anyio on its asyncio backend).
"""

from __future__ import annotations

try:
    import mcp as _mcp_sdk  # noqa: F401  (the SDK is there)
    from mcp.shared.message import SessionMessage as _SessionMessage  # noqa: F401  (2.x layout)
except ImportError as e:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "slim_bindings.mcp needs the MCP Python SDK (mcp >= 2): install it with "
        "pip install 'slim-bindings[mcp]'"
    ) from e


def _sdk_major() -> int | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        head = version("mcp").split(".")[0]
    except PackageNotFoundError:  # pragma: no cover - a vendored SDK: the imports above decide
        return None
    return int(head) if head.isdigit() else None


if (_major := _sdk_major()) is not None and _major < 2:
    raise ImportError(
        f"slim_bindings.mcp needs mcp >= 2 (installed: {_major}.x): install it with "
        "pip install 'slim-bindings[mcp]'"
    )

from ._client import client
from ._framing import DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_TIMEOUT
from ._server import serve
from ._streams import SlimPeer, SlimReadStream, SlimWriteStream

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_TIMEOUT",
    "SlimPeer",
    "SlimReadStream",
    "SlimWriteStream",
    "client",
    "serve",
]
