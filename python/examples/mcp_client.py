"""MCP client over SLIM: ``python mcp_client.py --local agntcy/ns/mcp-client --remote agntcy/ns/mcp-server``.

Connects to the MCP server named ``--remote`` through the SLIM node given with ``--slim`` (MLS on
unless ``--no-mls``), lists its tools, calls ``add``, reads the resource ``slim://demo/about`` and
calls ``countdown`` printing its progress notifications, then exits (0 when everything worked).

Needs the MCP SDK: ``pip install 'slim-bindings[mcp]'``.
"""

from __future__ import annotations

from typing import Any

import mcp
from common import app_from_options, format_message_print, mcp_client_options, run_example
from mcp.shared.exceptions import MCPError

import slim_bindings.mcp

TIMEOUT_S = 10.0


def text_of(result: mcp.types.CallToolResult) -> str:
    """The text blocks of a tool result, joined."""
    return " ".join(block.text for block in result.content if isinstance(block, mcp.types.TextContent))


async def run_client(**kwargs: Any) -> int:
    """Runs the calls; returns the exit code."""
    remote: str | None = kwargs["remote"]
    if not remote:
        raise ValueError("--remote (the MCP server's name) is required.")
    app = await app_from_options(kwargs)
    me = f"{app.get_id()}"
    transport = slim_bindings.mcp.client(app, remote, mls=kwargs["mls"], timeout=TIMEOUT_S)
    async with (
        transport as (read, write),
        mcp.ClientSession(read, write, read_timeout_seconds=TIMEOUT_S) as session,
    ):
        init = await session.initialize()
        format_message_print(me, f"connected to {init.server_info.name} (mls={kwargs['mls']})")

        tools = await session.list_tools()
        format_message_print(me, f"tools: {', '.join(t.name for t in tools.tools)}")

        result = await session.call_tool("add", {"a": 20, "b": 22})
        format_message_print(me, f"add(20, 22) = {text_of(result)}")

        about = await session.read_resource("slim://demo/about")
        for content in about.contents:
            if isinstance(content, mcp.types.TextResourceContents):
                format_message_print(me, f"resource: {content.text}")

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            format_message_print(
                me, f"progress {progress:g}/{total:g}: {message}" if total else f"progress {progress:g}"
            )

        result = await session.call_tool("countdown", {"n": 3}, progress_callback=on_progress)
        format_message_print(me, f"countdown: {text_of(result)}")
    return 0


@mcp_client_options
def main(**kwargs: Any) -> None:
    """Calls the demo MCP server --remote."""
    run_example(lambda: run_client(**kwargs), MCPError)


if __name__ == "__main__":
    main()
