"""Shared steps of the example-program tests (test_examples.py, test_jwt_examples.py): the examples'
node on a free port, a point-to-point exchange and a moderator/member pair, each as subprocesses of
python/examples (started through run_demo's ``Proc``, so every output line is kept and every wait is
bounded by the caller's deadline)."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "python" / "examples"
sys.path.insert(0, str(EXAMPLES))

import run_demo

Proc = run_demo.Proc
start = run_demo.start


def remaining(deadline: float) -> float:
    """Seconds left until ``deadline`` (at least 1, so a late step still gets a bounded chance)."""
    return max(1.0, deadline - time.monotonic())


async def example_node(deadline: float) -> tuple[Proc, str]:
    """slim.py on 127.0.0.1 with a free port, and the ``--slim`` client config that reaches it."""
    node = await start("node", "slim.py", "--slim", "127.0.0.1:0")
    m = await node.wait_for(r"listening on (\S+:\d+)", deadline)
    return node, json.dumps({"endpoint": f"http://{m.group(1)}", "tls": {"insecure": True}})


async def exit_code(proc: Proc, timeout: float) -> int:
    """Waits (bounded) for ``proc`` to exit on its own and returns its exit code."""
    code = await asyncio.wait_for(proc.proc.wait(), timeout)
    await proc.stop()
    return code


async def stop_all(procs: list[Proc]) -> None:
    """Stops ``procs``, last started first."""
    for p in reversed(procs):
        await p.stop()


async def point_to_point_exchange(
    procs: list[Proc],
    deadline: float,
    mode: str,
    message: str,
    alice_args: list[str],
    bob_args: list[str],
) -> Proc:
    """point_to_point.py in ``mode``: alice (agntcy/ns/alice) answers, bob sends ``message`` twice and
    must exit 0 with both replies; alice must have answered. Both are appended to ``procs`` (the
    caller stops them); returns alice."""
    alice = await start("alice", "point_to_point.py", mode, "--local", "agntcy/ns/alice", *alice_args)
    procs.append(alice)
    await alice.wait_for(r"Connected to", deadline)
    bob = await start(
        "bob",
        "point_to_point.py",
        mode,
        "--local",
        "agntcy/ns/bob",
        "--remote",
        "agntcy/ns/alice",
        "--message",
        message,
        "--iterations",
        "2",
        *bob_args,
    )
    procs.append(bob)
    code = await exit_code(bob, remaining(deadline))
    assert code == 0, "\n".join(bob.lines)
    replies = [line for line in bob.lines if "received (from session" in line]
    assert len(replies) == 2, bob.lines
    assert all(f"{message} from" in line for line in replies)
    await alice.wait_for(f"replies: {re.escape(message)} from", deadline)
    return alice


async def multicast_line(
    procs: list[Proc],
    deadline: float,
    line: str,
    member_args: list[str],
    moderator_args: list[str],
) -> Proc:
    """multicast.py on channel agntcy/ns/room: member agntcy/ns/m1 waits, moderator agntcy/ns/mod
    invites it and sends ``line``, which the member must print. Both are appended to ``procs`` (the
    caller stops them); returns the moderator, still running."""
    room = ["--remote", "agntcy/ns/room"]
    member = await start("member", "multicast.py", "--local", "agntcy/ns/m1", *room, *member_args)
    procs.append(member)
    await member.wait_for("Waiting for session", deadline)
    moderator = await start(
        "moderator",
        "multicast.py",
        "--local",
        "agntcy/ns/mod",
        *room,
        "--invites",
        "agntcy/ns/m1",
        *moderator_args,
    )
    procs.append(moderator)
    await moderator.wait_for("add .*m1", deadline)
    await moderator.send(line)
    await member.wait_for(f"Received message from agntcy/ns/mod: {re.escape(line)}$", deadline)
    return moderator
