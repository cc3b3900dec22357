"""MCP over SLIM (``slim_bindings.mcp``) with the real ``mcp`` SDK through a real node on loopback:
concurrency, malformed input, requests and notifications in both directions, vanished peers.
The process-level tests (examples, JWT, a server killed mid-call) are in test_mcp_examples.py."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import mcp
import pytest
import pytest_asyncio
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

import slim_bindings
import slim_bindings.mcp
from conftest import Node, bounded

HERE = Path(__file__).resolve().parent
SERVER = "agntcy/mcp/server"


def build_server() -> tuple[MCPServer, dict[str, asyncio.Event]]:
    """An MCPServer whose tools exercise the transport; events tell the test what happened."""
    server = MCPServer("test-server")
    events = {"slow_started": asyncio.Event(), "slow_cancelled": asyncio.Event()}

    @server.tool()
    def echo(text: str) -> str:
        return text

    @server.tool()
    def whoami(ctx: Context) -> str:
        peer = ctx.request_context.request
        assert isinstance(peer, slim_bindings.mcp.SlimPeer)
        return "/".join(peer.name.components_strings())

    @server.tool()
    async def slow(ctx: Context) -> str:
        events["slow_started"].set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            events["slow_cancelled"].set()
            raise
        return "finished"

    @server.tool()
    async def ask_client(question: str, ctx: Context) -> str:
        """A server-to-client request (sampling) and a notification (log) inside one call."""
        with warnings.catch_warnings():  # both are deprecated in the 2026-07-28 era, fine in 2025-11-25
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await ctx.info(f"asking: {question}")
            answer = await ctx.session.create_message(
                [
                    mcp.types.SamplingMessage(
                        role="user", content=mcp.types.TextContent(type="text", text=question)
                    )
                ],
                max_tokens=10,
            )
        assert isinstance(answer.content, mcp.types.TextContent)
        return f"client said: {answer.content.text}"

    return server, events


@pytest_asyncio.fixture
async def served(node: Node) -> AsyncIterator[tuple[Node, dict[str, asyncio.Event], slim_bindings.Slim]]:
    """The test server served as agntcy/mcp/server (256 KiB message limit) for the test's length."""
    server, events = build_server()
    app = await node.new_app("agntcy", "mcp", "server")
    task = asyncio.create_task(slim_bindings.mcp.serve(app, server, timeout=5, max_message_size=256 * 1024))
    try:
        yield node, events, app
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def text(result: mcp.types.CallToolResult) -> str:
    assert not result.is_error, result
    block = result.content[0]
    assert isinstance(block, mcp.types.TextContent)
    return block.text


@pytest.mark.asyncio
async def test_fifty_clients_at_once_no_cross_talk(served: Any) -> None:
    """50 MCP connections (10 on each of 5 apps) call concurrently; every answer is the caller's own."""
    node, _, _ = served
    apps = [await node.new_app("agntcy", "mcp", f"client-{i}") for i in range(5)]

    async def one(k: int) -> list[str]:
        app = apps[k % len(apps)]
        async with (
            slim_bindings.mcp.client(app, SERVER, mls=k % 2 == 0, timeout=20) as (read, write),
            mcp.ClientSession(read, write) as session,
        ):
            await session.initialize()
            calls = [session.call_tool("echo", {"text": f"client {k} call {j}"}) for j in range(3)]
            return [text(r) for r in await asyncio.gather(*calls)]

    results = await bounded(asyncio.gather(*(one(k) for k in range(50))), 120)
    for k, answers in enumerate(results):
        assert answers == [f"client {k} call {j}" for j in range(3)]


@pytest.mark.asyncio
async def test_server_to_client_request_and_notifications_both_ways(served: Any) -> None:
    node, events, _ = served
    app = await node.new_app("agntcy", "mcp", "client")
    logs: list[str] = []

    async def sampling(
        ctx: Any, params: mcp.types.CreateMessageRequestParams
    ) -> mcp.types.CreateMessageResult:
        question = params.messages[0].content
        assert isinstance(question, mcp.types.TextContent)
        return mcp.types.CreateMessageResult(
            role="assistant",
            content=mcp.types.TextContent(type="text", text=question.text.upper()),
            model="test",
        )

    async def on_log(params: mcp.types.LoggingMessageNotificationParams) -> None:
        logs.append(str(params.data))

    async with (
        slim_bindings.mcp.client(app, SERVER, timeout=10) as (read, write),
        mcp.ClientSession(read, write, sampling_callback=sampling, logging_callback=on_log) as session,
    ):
        await bounded(session.initialize())
        # server -> client: a request (sampling) answered by the client, and a log notification
        assert (
            text(await bounded(session.call_tool("ask_client", {"question": "ping?"})))
            == "client said: PING?"
        )
        assert logs == ["asking: ping?"]
        # client -> server: cancelling a call sends notifications/cancelled; the handler stops
        with anyio.move_on_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(session.call_tool, "slow", {})
                await bounded(events["slow_started"].wait())
                tg.cancel_scope.cancel()
        await bounded(events["slow_cancelled"].wait())
        # the handler knows who called, by SLIM name
        assert text(await bounded(session.call_tool("whoami", {}))) == "agntcy/mcp/client"


@pytest.mark.asyncio
async def test_malformed_input_gets_errors_and_others_are_served(served: Any) -> None:
    node, _, _ = served
    good_app = await node.new_app("agntcy", "mcp", "good")
    raw = await node.new_app("agntcy", "mcp", "raw")
    server_name = slim_bindings.PyName("agntcy", "mcp", "server")

    async with (
        slim_bindings.mcp.client(good_app, SERVER, timeout=10) as (read, write),
        mcp.ClientSession(read, write) as session,
    ):
        await bounded(session.initialize())
        assert text(await bounded(session.call_tool("echo", {"text": "before"}))) == "before"

        # A plain SLIM app that writes whatever it likes on its own session.
        await raw.set_route(server_name)
        s = await raw.create_session(slim_bindings.PySessionConfiguration.Unicast(mls_enabled=False))

        async def answer(payload: bytes) -> dict[str, Any]:
            await raw.publish(s, payload, server_name)
            _, reply = await bounded(raw.receive(s.id))
            parsed: dict[str, Any] = json.loads(reply)
            return parsed

        r = await answer(b"this is not JSON")
        assert r["id"] is None and r["error"]["code"] == mcp.types.PARSE_ERROR
        r = await answer(json.dumps([1, {"jsonrpc": "2.0"}, "garbage", None]).encode())
        assert r["id"] is None and r["error"]["code"] == mcp.types.INVALID_REQUEST
        assert "batch" in r["error"]["message"]
        r = await answer(json.dumps({"jsonrpc": "2.0", "id": 9, "nonsense": True}).encode())
        assert r["id"] == 9 and r["error"]["code"] == mcp.types.INVALID_REQUEST
        big = {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "x" * 300_000}},
        }
        r = await answer(json.dumps(big).encode())
        assert r["id"] == 7 and r["error"]["code"] == mcp.types.INVALID_REQUEST
        assert r["error"]["data"]["limit"] == 256 * 1024
        # A raw 10 MiB message is more than a SLIM node carries: publish refuses it with a typed
        # error and sends nothing (no node drops the app's connection over it); the session goes on.
        with pytest.raises(slim_bindings.MessageTooLargeError) as too_large:
            await bounded(raw.publish(s, b"x" * (10 * 1024 * 1024), server_name))
        assert too_large.value.size == 10 * 1024 * 1024
        assert too_large.value.limit == slim_bindings.mcp.DEFAULT_MAX_MESSAGE_SIZE
        r = await answer(b"still not JSON")
        assert r["id"] is None and r["error"]["code"] == mcp.types.PARSE_ERROR

        # The SDK client's own oversized call: refused before it leaves (10 MiB), with an MCP error.
        started = time.monotonic()
        with pytest.raises(MCPError) as err:
            await bounded(session.call_tool("echo", {"text": "y" * (10 * 1024 * 1024)}))
        assert err.value.error.code == mcp.types.INVALID_REQUEST and "exceeds" in err.value.error.message
        assert time.monotonic() - started < 5
        # ... and what the server accepts is what the client learnt at the opening (256 KiB).
        with pytest.raises(MCPError):
            await bounded(session.call_tool("echo", {"text": "z" * 300_000}))

        # Everyone is still served: the same client, and a new one.
        assert text(await bounded(session.call_tool("echo", {"text": "after"}))) == "after"
    async with mcp.Client(slim_bindings.mcp.client(good_app, SERVER, mls=False, timeout=10)) as c:
        assert text(await bounded(c.call_tool("echo", {"text": "high-level client"}))) == "high-level client"


@pytest.mark.asyncio
async def test_lowlevel_server(node: Node) -> None:
    """``serve`` takes a low-level ``Server`` too; its handlers see the caller as a ``SlimPeer``."""

    async def list_tools(ctx: Any, params: Any) -> mcp.types.ListToolsResult:
        return mcp.types.ListToolsResult(
            tools=[mcp.types.Tool(name="upper", input_schema={"type": "object"})]
        )

    async def call_tool(ctx: Any, params: mcp.types.CallToolRequestParams) -> mcp.types.CallToolResult:
        peer = ctx.request
        assert isinstance(peer, slim_bindings.mcp.SlimPeer)
        said = (
            f"{str((params.arguments or {})['text']).upper()} for {'/'.join(peer.name.components_strings())}"
        )
        return mcp.types.CallToolResult(content=[mcp.types.TextContent(type="text", text=said)])

    app = await node.new_app("agntcy", "mcp", "low")
    server = Server("low", on_list_tools=list_tools, on_call_tool=call_tool)
    task = asyncio.create_task(slim_bindings.mcp.serve(app, server, timeout=5))
    try:
        caller = await node.new_app("agntcy", "mcp", "low-client")
        async with mcp.Client(slim_bindings.mcp.client(caller, "agntcy/mcp/low", timeout=10)) as c:
            assert [t.name for t in (await bounded(c.list_tools())).tools] == ["upper"]
            assert text(await bounded(c.call_tool("upper", {"text": "hi"}))) == "HI for agntcy/mcp/low-client"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.asyncio
async def test_no_server_fails_within_timeout(node: Node) -> None:
    app = await node.new_app("agntcy", "mcp", "lonely")
    started = time.monotonic()
    with pytest.raises(
        slim_bindings.SlimConnectionError, match="no MCP server answered as agntcy/mcp/nobody"
    ):
        async with slim_bindings.mcp.client(app, "agntcy/mcp/nobody", timeout=1.5):
            pass
    assert time.monotonic() - started < 5


@pytest.mark.asyncio
async def test_vanished_client_ends_only_its_connection(served: Any) -> None:
    node, _, server_app = served
    app = await node.new_app("agntcy", "mcp", "survivor")
    async with (
        slim_bindings.mcp.client(app, SERVER, timeout=10) as (read, write),
        mcp.ClientSession(read, write) as session,
    ):
        await bounded(session.initialize())
        doomed = subprocess.Popen(  # noqa: ASYNC220 - spawning returns at once; its output is read off the loop
            [sys.executable, str(HERE / "mcp_peer.py"), node.bound, SERVER],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert doomed.stdout is not None
            line = await bounded(asyncio.to_thread(doomed.stdout.readline), 60)
            session_id = int(line.split()[1])
            await server_app.get_session_config(session_id)  # served
            doomed.kill()
            doomed.wait(10)
        finally:
            if doomed.poll() is None:
                doomed.kill()
                doomed.wait(10)

        # The server's keepalive (timeout=5) notices within 5 s; the survivor never notices.
        deadline = time.monotonic() + 15
        while await _has_session(server_app, session_id):
            assert time.monotonic() < deadline, "the server kept the vanished client's connection"
            await asyncio.sleep(0.1)
        assert text(await bounded(session.call_tool("echo", {"text": "alive"}))) == "alive"


async def _has_session(app: slim_bindings.Slim, session_id: int) -> bool:
    try:
        await app.get_session_config(session_id)
    except slim_bindings.SessionNotFoundError:
        return False
    return True


def test_import_error_names_the_extra() -> None:
    code = "import sys; sys.modules['mcp'] = None; import slim_bindings.mcp"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and "pip install 'slim-bindings[mcp]'" in proc.stderr, proc.stderr
