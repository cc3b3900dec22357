"""A client process for the MCP-over-SLIM tests: connects to a server through a node, makes one
call, prints ``session <id>`` and then holds the connection until it is killed.

    python mcp_peer.py ENDPOINT SERVER_NAME
"""

from __future__ import annotations

import asyncio
import sys

import mcp

import slim_bindings
import slim_bindings.mcp

SECRET = "test-secret"


async def main(endpoint: str, server: str) -> None:
    name = slim_bindings.PyName("agntcy", "mcp", "doomed")
    provider = slim_bindings.PyIdentityProvider.SharedSecret(
        identity="agntcy/mcp/doomed", shared_secret=SECRET
    )
    verifier = slim_bindings.PyIdentityVerifier.SharedSecret(
        identity="agntcy/mcp/doomed", shared_secret=SECRET
    )
    app = await slim_bindings.Slim.new(name, provider, verifier)
    await app.connect({"endpoint": f"http://{endpoint}", "tls": {"insecure": True}})
    async with (
        slim_bindings.mcp.client(app, server, timeout=5) as (read, write),
        mcp.ClientSession(read, write) as session,
    ):
        await session.initialize()
        await session.call_tool("echo", {"text": "still here"})
        print(f"session {read.session_id}", flush=True)
        await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
