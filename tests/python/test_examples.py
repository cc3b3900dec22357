"""Smoke tests of the example programs, run as subprocesses against a node on a free port."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

import example_helpers as ex


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["anycast", "unicast", "unicast-mls"])
async def test_point_to_point_example(mode: str) -> None:
    deadline = time.monotonic() + 60
    procs: list[ex.Proc] = []
    try:
        node, client = await ex.example_node(deadline)
        procs.append(node)
        common = ["--slim", client, "--shared-secret", "example-secret"]
        if mode == "unicast-mls":
            mode = "unicast"
            common.append("--enable-mls")
        alice = await ex.point_to_point_exchange(procs, deadline, mode, "hey there", common, common)
    finally:
        await ex.stop_all(procs)
    # Ctrl-C/SIGTERM stop the receiver and the node cleanly.
    assert alice.proc.returncode == 0, "\n".join(alice.lines)
    assert node.proc.returncode == 0, "\n".join(node.lines)


@pytest.mark.asyncio
async def test_sender_without_remote_is_refused() -> None:
    proc = await ex.start(
        "bob",
        "point_to_point.py",
        "--local",
        "agntcy/ns/bob",
        "--message",
        "x",
        "--shared-secret",
        "s",
    )
    assert await ex.exit_code(proc, 30) != 0
    assert any("Remote ID must be provided" in line for line in proc.lines), proc.lines


@pytest.mark.asyncio
@pytest.mark.parametrize("enable_mls", [False, True], ids=["plain", "mls"])
async def test_multicast_demo(enable_mls: bool) -> None:
    code = await ex.run_demo.demo(enable_mls=enable_mls, timeout=90)
    assert code == 0


@pytest.mark.asyncio
async def test_multicast_moderator_ends_at_end_of_input() -> None:
    deadline = time.monotonic() + 60
    procs: list[ex.Proc] = []
    try:
        node, client = await ex.example_node(deadline)
        procs.append(node)
        common = ["--slim", client, "--shared-secret", "s"]
        moderator = await ex.multicast_line(procs, deadline, "only line", common, common)
        assert moderator.proc.stdin is not None
        moderator.proc.stdin.close()
        code = await asyncio.wait_for(moderator.proc.wait(), ex.remaining(deadline))
        assert code == 0, "\n".join(moderator.lines)
    finally:
        await ex.stop_all(procs)


@pytest.mark.asyncio
async def test_node_example_reads_slim_slim_as_host_port_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every example option can come from SLIM_<OPTION>; slim.py's --slim is host:port or a JSON
    # server config (the examples' options table).
    deadline = time.monotonic() + 60
    for value in ("127.0.0.1:0", json.dumps({"endpoint": "127.0.0.1:0", "tls": {"insecure": True}})):
        monkeypatch.setenv("SLIM_SLIM", value)
        node = await ex.start("node", "slim.py")
        try:
            m = await node.wait_for(r"listening on 127\.0\.0\.1:(\d+)", deadline)
            assert int(m.group(1)) != 0
        finally:
            await node.stop()
