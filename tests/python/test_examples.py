"""Smoke tests of the example programs, run as subprocesses against a node on a free port."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "python" / "examples"
sys.path.insert(0, str(EXAMPLES))

import run_demo


async def _node(deadline: float) -> tuple[run_demo.Proc, str]:
    node = await run_demo.start("node", "slim.py", "--slim", "127.0.0.1:0")
    m = await node.wait_for(r"listening on (\S+:\d+)", deadline)
    return node, json.dumps({"endpoint": f"http://{m.group(1)}", "tls": {"insecure": True}})


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["anycast", "unicast", "unicast-mls"])
async def test_point_to_point_example(mode: str) -> None:
    deadline = time.monotonic() + 60
    procs: list[run_demo.Proc] = []
    try:
        node, client = await _node(deadline)
        procs.append(node)
        common = ["--slim", client, "--shared-secret", "example-secret"]
        if mode == "unicast-mls":
            mode = "unicast"
            common.append("--enable-mls")
        alice = await run_demo.start(
            "alice", "point_to_point.py", mode, "--local", "agntcy/ns/alice", *common
        )
        procs.append(alice)
        await alice.wait_for(r"Connected to", deadline)
        bob = await run_demo.start(
            "bob",
            "point_to_point.py",
            mode,
            "--local",
            "agntcy/ns/bob",
            "--remote",
            "agntcy/ns/alice",
            "--message",
            "hey there",
            "--iterations",
            "2",
            *common,
        )
        procs.append(bob)
        code = await asyncio.wait_for(bob.proc.wait(), max(1.0, deadline - time.monotonic()))
        await bob.stop()
        assert code == 0, "\n".join(bob.lines)
        replies = [line for line in bob.lines if "received (from session" in line]
        assert len(replies) == 2, bob.lines
        assert all("hey there from" in line for line in replies)
        await alice.wait_for(r"replies: hey there from", deadline)
    finally:
        for p in reversed(procs):
            await p.stop()
    # Ctrl-C/SIGTERM stop the receiver and the node cleanly.
    assert alice.proc.returncode == 0, "\n".join(alice.lines)
    assert node.proc.returncode == 0, "\n".join(node.lines)


@pytest.mark.asyncio
async def test_sender_without_remote_is_refused() -> None:
    proc = await run_demo.start(
        "bob",
        "point_to_point.py",
        "--local",
        "agntcy/ns/bob",
        "--message",
        "x",
        "--shared-secret",
        "s",
    )
    code = await asyncio.wait_for(proc.proc.wait(), 30)
    await proc.stop()
    assert code != 0
    assert any("Remote ID must be provided" in line for line in proc.lines), proc.lines


@pytest.mark.asyncio
@pytest.mark.parametrize("enable_mls", [False, True], ids=["plain", "mls"])
async def test_multicast_demo(enable_mls: bool) -> None:
    code = await run_demo.demo(enable_mls=enable_mls, timeout=90)
    assert code == 0


@pytest.mark.asyncio
async def test_multicast_moderator_ends_at_end_of_input() -> None:
    deadline = time.monotonic() + 60
    procs: list[run_demo.Proc] = []
    try:
        node, client = await _node(deadline)
        procs.append(node)
        member = await run_demo.start(
            "member",
            "multicast.py",
            "--local",
            "agntcy/ns/m1",
            "--remote",
            "agntcy/ns/room",
            "--slim",
            client,
            "--shared-secret",
            "s",
        )
        procs.append(member)
        await member.wait_for("Waiting for session", deadline)
        moderator = await run_demo.start(
            "moderator",
            "multicast.py",
            "--local",
            "agntcy/ns/mod",
            "--remote",
            "agntcy/ns/room",
            "--invites",
            "agntcy/ns/m1",
            "--slim",
            client,
            "--shared-secret",
            "s",
        )
        procs.append(moderator)
        await moderator.wait_for("add .*m1", deadline)
        await moderator.send("only line")
        await member.wait_for("Received message from agntcy/ns/mod: only line$", deadline)
        assert moderator.proc.stdin is not None
        moderator.proc.stdin.close()
        code = await asyncio.wait_for(moderator.proc.wait(), max(1.0, deadline - time.monotonic()))
        assert code == 0, "\n".join(moderator.lines)
    finally:
        for p in reversed(procs):
            await p.stop()


@pytest.mark.asyncio
async def test_node_example_reads_slim_slim_as_host_port_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every example option can come from SLIM_<OPTION>; slim.py's --slim is host:port or a JSON
    # server config (the examples' options table).
    deadline = time.monotonic() + 60
    for value in ("127.0.0.1:0", json.dumps({"endpoint": "127.0.0.1:0", "tls": {"insecure": True}})):
        monkeypatch.setenv("SLIM_SLIM", value)
        node = await run_demo.start("node", "slim.py")
        try:
            m = await node.wait_for(r"listening on 127\.0\.0\.1:(\d+)", deadline)
            assert int(m.group(1)) != 0
        finally:
            await node.stop()
