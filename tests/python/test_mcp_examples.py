"""MCP over SLIM across processes: a standalone node (examples/slim.py), the example MCP server and
client (examples/mcp_server.py, mcp_client.py) with MLS on and off and with JWT identities; and a
server killed in the middle of a call, then restarted."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import mcp
import pytest
from mcp.shared.exceptions import MCPError

import slim_bindings
import slim_bindings.mcp
from conftest import shared_secret

EXAMPLES = Path(__file__).resolve().parents[2] / "python" / "examples"
sys.path.insert(0, str(EXAMPLES))

import run_demo

from test_jwt_examples import AUDIENCE, _svid, spire_bundle

SERVER = "agntcy/ns/mcp-server"
SECRET = "mcp-example-secret"


def slim_flag(endpoint: str) -> str:
    """The examples' ``--slim`` value for the node at ``endpoint`` (``http://host:port``)."""
    return json.dumps({"endpoint": endpoint, "tls": {"insecure": True}})


async def _node(deadline: float) -> tuple[run_demo.Proc, str, str]:
    node = await run_demo.start("node", "slim.py", "--slim", "127.0.0.1:0")
    m = await node.wait_for(r"listening on (\S+:\d+)", deadline)
    return node, m.group(1), slim_flag(f"http://{m.group(1)}")


async def start_server(client_config: str, identity: list[str], deadline: float) -> run_demo.Proc:
    server = await run_demo.start(
        "server", "mcp_server.py", "--local", SERVER, "--slim", client_config, *identity
    )
    await server.wait_for("serving MCP server 'slim-demo'", deadline)
    return server


def _check_client_output(client: run_demo.Proc, code: int, mls: bool) -> None:
    out = "\n".join(client.lines)
    assert code == 0, out
    assert f"connected to slim-demo (mls={mls})" in out
    assert "tools: add, countdown" in out
    assert "add(20, 22) = 42" in out
    assert "resource: slim-demo: an MCP server reached over SLIM" in out
    for step in ("progress 1/3: 2 to go", "progress 2/3: 1 to go", "progress 3/3: 0 to go"):
        assert step in out
    assert "countdown: liftoff" in out


async def run_clients(
    config: str,
    clients: dict[str, bool],
    flags: Callable[[str], list[str]],
    server: run_demo.Proc,
    deadline: float,
    procs: list[run_demo.Proc],
) -> None:
    """Starts the example client ``agntcy/ns/<name>`` (MLS on when ``clients[name]``) for every name at
    once, through the node whose ``--slim`` value is ``config``; checks that each one did everything
    and that ``server`` ran the countdown for it."""
    started = {}
    for name, mls in clients.items():
        started[name] = await run_demo.start(
            name,
            "mcp_client.py",
            "--local",
            f"agntcy/ns/{name}",
            "--remote",
            SERVER,
            "--slim",
            config,
            *flags(name),
            *([] if mls else ["--no-mls"]),
        )
        procs.append(started[name])
    for name, mls in clients.items():
        client = started[name]
        code = await asyncio.wait_for(client.proc.wait(), max(1.0, deadline - time.monotonic()))
        await client.stop()
        _check_client_output(client, code, mls)
        await server.wait_for(rf"Countdown\s+from 3, for agntcy/ns/{name}/\d+", deadline)


@pytest.mark.asyncio
@pytest.mark.parametrize("identity", ["shared-secret", "jwt"])
async def test_example_server_and_clients(tmp_path: Path, identity: str) -> None:
    """initialize, list tools, call a tool, read a resource, progress notifications; node, server
    and clients each in its own process. Shared secret: a client with MLS and one without, at
    once. JWT (RS256 tokens checked against a SPIRE-style bundle): a client with MLS."""
    deadline = time.monotonic() + 120
    procs: list[run_demo.Proc] = []
    if identity == "jwt":
        bundle = tmp_path / "bundle.json"
        bundle.write_text(json.dumps(spire_bundle("rsa_a.key", "key-a")))

        def flags(name: str) -> list[str]:
            return ["--jwt", _svid(tmp_path, name), "--bundle", str(bundle), "--audience", AUDIENCE]

        clients = {"mcp-client": True}
    else:

        def flags(name: str) -> list[str]:
            return ["--shared-secret", SECRET]

        clients = {"mcp-client": True, "mcp-client-plain": False}

    try:
        node, _, config = await _node(deadline)
        procs.append(node)
        server = await start_server(config, flags("mcp-server"), deadline)
        procs.append(server)
        await run_clients(config, clients, flags, server, deadline, procs)
        assert await server.stop() == 0, "\n".join(server.lines)
    finally:
        for p in reversed(procs):
            await p.stop()


@pytest.mark.asyncio
async def test_server_killed_mid_call_then_restarted() -> None:
    """The pending call fails with an MCP error within the client's timeout; a restarted server
    (same name, new process) serves new clients."""
    timeout = 3.0
    deadline = time.monotonic() + 90
    procs: list[run_demo.Proc] = []
    try:
        node, endpoint, config = await _node(deadline)
        procs.append(node)
        server = await start_server(config, ["--shared-secret", SECRET], deadline)
        procs.append(server)

        provider, verifier = shared_secret("agntcy/ns/mcp-client", SECRET)
        app = await slim_bindings.Slim.new(
            slim_bindings.PyName("agntcy", "ns", "mcp-client"), provider, verifier
        )
        await app.connect({"endpoint": f"http://{endpoint}", "tls": {"insecure": True}})

        progressed = asyncio.Event()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            progressed.set()

        async with (
            slim_bindings.mcp.client(app, SERVER, timeout=timeout) as (read, write),
            mcp.ClientSession(read, write) as session,
        ):
            await asyncio.wait_for(session.initialize(), 30)
            call = asyncio.ensure_future(
                session.call_tool("countdown", {"n": 100, "delay": 0.2}, progress_callback=on_progress)
            )
            await asyncio.wait_for(progressed.wait(), 30)
            server.proc.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            with pytest.raises(MCPError, match="Connection closed"):
                await asyncio.wait_for(call, 30)
            noticed = time.monotonic() - killed
            assert noticed < timeout + 1.0, f"the client noticed after {noticed:.1f} s"
        await server.stop()

        restarted = await start_server(config, ["--shared-secret", SECRET], deadline)
        procs.append(restarted)
        async with mcp.Client(slim_bindings.mcp.client(app, SERVER, timeout=10)) as c:
            result = await asyncio.wait_for(c.call_tool("add", {"a": 40, "b": 2}), 30)
            assert isinstance(result.content[0], mcp.types.TextContent) and result.content[0].text == "42"
    finally:
        for p in reversed(procs):
            await p.stop()
