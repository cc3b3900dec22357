"""MCP over SLIM through a mesh (docs/mesh.md): the MCP server and its clients on different standalone
nodes (`python -m slim_bindings node --config`, each its own process, from mesh_helpers), the example
server and clients in their own processes (as in test_mcp_examples.py).

- chain of 3, A <- B <- C: the example server on A, two example clients on C at once, one with MLS and
  one without: initialize, list tools, call a tool, read a resource, progress notifications;
- ring of 4: a client (this process) on node 0, the example server on node 2; the node the route
  crosses is SIGKILLed; once node 0 routes the other way round, a new call on the open MCP connection
  and a new connection both succeed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import mcp
import pytest

import slim_bindings
import slim_bindings.mcp
from conftest import shared_secret
from mesh_helpers import Mesh
from test_mcp import text
from test_mcp_examples import SECRET, SERVER, run_clients, run_demo, slim_flag, start_server
from test_mesh import meshes  # noqa: F401  (meshes: the fixture that kills every node at the end)

SERVER_APP = SERVER.rsplit("/", 1)[1]
# A ring 0-1-2-3-0 in which every node dials only nodes started before it (3 dials 2 and 0): a node
# gives up on a `clients:` entry that does not answer within a few seconds, and a loaded machine can
# take that long to start the next node.
RING_OF_4 = [(1, 0), (2, 1), (3, 2), (3, 0)]


def secret(name: str) -> list[str]:
    return ["--shared-secret", SECRET]


async def start_mesh(meshes: list[Mesh], n: int, edges: list[tuple[int, int]]) -> Mesh:  # noqa: F811
    m = Mesh(n, edges)
    meshes.append(m)
    await asyncio.to_thread(m.start)
    return m


async def wait_route(m: Mesh, node: int, cond: Any, what: str) -> list[dict]:
    """Waits (bounded, polling node-info) until node ``node``'s mesh routes to the MCP server satisfy
    ``cond``; returns them."""

    def poll() -> list[dict]:
        m.wait(lambda: cond(m.routes_to(node, SERVER_APP)), what)
        return m.routes_to(node, SERVER_APP)

    return await asyncio.to_thread(poll)


@pytest.mark.asyncio
async def test_chain_of_three_server_and_clients_at_the_ends(meshes: list[Mesh]) -> None:  # noqa: F811
    m = await start_mesh(meshes, 3, [(1, 0), (2, 1)])  # A <- B <- C
    deadline = time.monotonic() + 120
    procs: list[run_demo.Proc] = []
    try:
        server = await start_server(slim_flag(m.nodes[0].endpoint), secret("mcp-server"), deadline)
        procs.append(server)
        routes = await wait_route(m, 2, bool, "node C routes to the MCP server")
        assert routes[0]["next_hop_label"] == m.nodes[1].label and routes[0]["cost"] == 2, routes
        clients = {"mcp-client": True, "mcp-client-plain": False}
        await run_clients(slim_flag(m.nodes[2].endpoint), clients, secret, server, deadline, procs)
        assert await server.stop() == 0, "\n".join(server.lines)
    finally:
        for p in reversed(procs):
            await p.stop()
    for c in await asyncio.to_thread(m.counters):
        assert c["mesh_dropped_hop_limit"] == 0 and c["mesh_dropped_off_tree"] == 0, c


@pytest.mark.asyncio
async def test_ring_new_calls_after_a_killed_node_is_routed_around(meshes: list[Mesh]) -> None:  # noqa: F811
    m = await start_mesh(meshes, 4, RING_OF_4)
    deadline = time.monotonic() + 120
    procs: list[run_demo.Proc] = []
    try:
        server = await start_server(slim_flag(m.nodes[2].endpoint), secret("mcp-server"), deadline)
        procs.append(server)
        via = (await wait_route(m, 0, bool, "node 0 routes to the MCP server"))[0]["next_hop_label"]
        victim = next(i for i, n in enumerate(m.nodes) if n.label == via)
        assert victim in (1, 3)

        provider, verifier = shared_secret("agntcy/ns/mcp-client", SECRET)
        app = await slim_bindings.Slim.new(
            slim_bindings.PyName("agntcy", "ns", "mcp-client"), provider, verifier
        )
        await app.connect({"endpoint": m.nodes[0].endpoint, "tls": {"insecure": True}})
        async with (
            slim_bindings.mcp.client(app, SERVER, timeout=10) as (read, write),
            mcp.ClientSession(read, write, read_timeout_seconds=30) as session,
        ):
            await asyncio.wait_for(session.initialize(), 30)
            assert text(await session.call_tool("add", {"a": 20, "b": 22})) == "42"

            await asyncio.to_thread(m.nodes[victim].sigkill)
            routes = await wait_route(
                m, 0, lambda r: r and r[0]["next_hop_label"] != via, f"node 0 routes around {via}"
            )
            assert routes[0]["cost"] == 2, routes

            # The MCP connection (its SLIM session, MLS group and all) outlived the node.
            assert text(await session.call_tool("add", {"a": 1, "b": 2})) == "3"
            about = await asyncio.wait_for(session.read_resource("slim://demo/about"), 30)
            assert any("slim-demo" in getattr(c, "text", "") for c in about.contents), about
        async with mcp.Client(slim_bindings.mcp.client(app, SERVER, timeout=10)) as c:
            assert text(await asyncio.wait_for(c.call_tool("add", {"a": 40, "b": 2}), 30)) == "42"
        assert await server.stop() == 0, "\n".join(server.lines)
    finally:
        for p in reversed(procs):
            await p.stop()
