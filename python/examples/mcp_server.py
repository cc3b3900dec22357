"""MCP server over SLIM: ``python mcp_server.py --local agntcy/ns/mcp-server [options]``.

An ``MCPServer`` (the SDK's high-level server) with two tools and a resource, served to every MCP
client that opens a session with this app, through the SLIM node given with ``--slim``. Clients
choose MLS; the server takes what each client asks for. Ctrl-C or SIGTERM stops it cleanly.

Needs the MCP SDK: ``pip install 'slim-bindings[mcp]'``.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from common import app_from_options, format_message_print, mcp_server_options, run_example
from mcp.server.mcpserver import Context, MCPServer

import slim_bindings
import slim_bindings.mcp

server = MCPServer("slim-demo", instructions="A demo MCP server reached over SLIM.")


def caller(ctx: Context) -> str:
    """``org/ns/app/instance`` of the client that sent the current request."""
    peer = ctx.request_context.request
    if isinstance(peer, slim_bindings.mcp.SlimPeer):
        return "/".join([*peer.name.components_strings(), str(peer.name.id)])
    return "unknown"


@server.tool()
def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


@server.tool()
async def countdown(n: int, ctx: Context, delay: float = 0.05) -> str:
    """Counts down from ``n`` (at most 100), reporting progress at every step."""
    n = max(0, min(n, 100))
    format_message_print("countdown", f"from {n}, for {caller(ctx)}")
    for i in range(n):
        await asyncio.sleep(delay)
        await ctx.report_progress(i + 1, n, f"{n - i - 1} to go")
    return "liftoff"


@server.resource("slim://demo/about", mime_type="text/plain")
def about() -> str:
    """What this server is."""
    return "slim-demo: an MCP server reached over SLIM, end-to-end encrypted with MLS when the client asks."


async def run_server(**kwargs: Any) -> int:
    """Serves until SIGINT/SIGTERM; returns the exit code."""
    app = await app_from_options(kwargs)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    serving = asyncio.ensure_future(slim_bindings.mcp.serve(app, server))
    format_message_print(f"{app.get_id()}", f"serving MCP server {server.name!r} as {kwargs['local']}")
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    for task in (serving, stopping):
        task.cancel()
    results = await asyncio.gather(serving, stopping, return_exceptions=True)
    failure = next((r for r in results if isinstance(r, Exception)), None)
    if failure is not None:
        raise failure
    format_message_print(f"{app.get_id()}", "stopped")
    return 0


@mcp_server_options
def main(**kwargs: Any) -> None:
    """Serves the demo MCP server as --local."""
    run_example(lambda: run_server(**kwargs))


if __name__ == "__main__":
    main()
