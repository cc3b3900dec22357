"""Liveness of a group, every app in its own process, through a real node on a loopback port.

- SIGKILL the moderator: every member's pending ``receive(session)`` raises ``ModeratorLostError``
  (a ``SessionClosedError``) within the group's liveness bound (plus scheduling slack).
- SIGKILL a member: the moderator's ``participants(session)`` loses it within the bound, and the
  remaining members still exchange messages.
- A sticky point-to-point session (reliable, with and without MLS): SIGKILL either side, and the
  other's pending ``receive(session)`` raises ``PeerLostError`` (a ``SessionClosedError``) naming it,
  with what it published after the death counted as undelivered; an anycast session: SIGKILL the
  client, and the server's reader gets the same.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from interop_test_helpers import PeerProcess, start_package_node

WORKER = str(Path(__file__).resolve().parent / "liveness_worker.py")
BOUND = 2.0
# Heartbeats, process scheduling and pipes on a loaded 2-core machine.
SLACK = 3.0


@pytest.fixture
def procs() -> Iterator[list[PeerProcess]]:
    started: list[PeerProcess] = []
    try:
        yield started
    finally:
        for p in started:
            p.kill()


def start_group(
    procs: list[PeerProcess], endpoint: str, members: list[str]
) -> tuple[PeerProcess, list[PeerProcess]]:
    started = []
    for name in members:
        p = PeerProcess(
            [sys.executable, "-u", WORKER, "member", "--endpoint", endpoint, "--name", name], name, True
        )
        procs.append(p)
        started.append(p)
    for p in started:
        p.wait_event("ready", 60)
    argv = [sys.executable, "-u", WORKER, "moderator", "--endpoint", endpoint, "--name", "org/live/mod"]
    argv += ["--channel", "org/live/chat", "--members", ",".join(members), "--bound", str(BOUND)]
    moderator = PeerProcess(argv, "moderator", stdin_pipe=True)
    procs.append(moderator)
    moderator.wait_event("invited", 120)
    for p in started:
        p.wait_event("joined", 60)
    return moderator, started


def participants(moderator: PeerProcess) -> list[str]:
    seen = len(moderator.of("participants"))
    moderator.send_line("participants")
    return moderator.wait_event("participants", 10, count=seen + 1)[-1]["names"]


def test_members_learn_that_the_moderator_died(procs: list[PeerProcess]) -> None:
    endpoint = start_package_node(procs)
    names = ["org/live/m0", "org/live/m1"]
    moderator, members = start_group(procs, endpoint, names)
    assert participants(moderator) == ["org/live/m0", "org/live/m1", "org/live/mod"]

    moderator.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    for m in members:
        lost = m.wait_event("moderator_lost", BOUND + SLACK)[0]
        took = time.monotonic() - killed
        assert lost["type"] == "ModeratorLostError", lost
        assert "moderator" in lost["error"] and "stopped answering" in lost["error"], lost
        # Silent for at least the bound; the member published nothing, so nothing is undelivered.
        assert lost["silent_ms"] >= BOUND * 1000 and lost["undelivered"] == 0, lost
        assert took < BOUND + SLACK, took


def test_moderator_drops_a_dead_member_and_the_others_keep_talking(procs: list[PeerProcess]) -> None:
    endpoint = start_package_node(procs)
    names = ["org/live/m0", "org/live/m1", "org/live/m2"]
    moderator, members = start_group(procs, endpoint, names)
    assert participants(moderator) == sorted(names + ["org/live/mod"])

    members[2].proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    while "org/live/m2" in participants(moderator):
        assert time.monotonic() - killed < BOUND + SLACK, "the dead member is still a participant"
        time.sleep(0.1)
    assert participants(moderator) == ["org/live/m0", "org/live/m1", "org/live/mod"]

    # The others still talk, both ways, and nobody is told the moderator is gone.
    members[0].send_line("publish after-the-death")
    for p in (members[1], moderator):
        p.wait_event("got", 10, lambda e: e["payload"] == "after-the-death")
    moderator.send_line("publish still-here")
    for p in members[:2]:
        p.wait_event("got", 10, lambda e: e["payload"] == "still-here")
    # Members learn the new list from the moderator's heartbeats.
    for p in members[:2]:
        assert not p.of("moderator_lost"), p.diagnostics()


def start_p2p(
    procs: list[PeerProcess], endpoint: str, mls: bool, kind: str = "unicast"
) -> tuple[PeerProcess, PeerProcess]:
    """A server and a client with a reliable session of `kind` between them (the first message and
    its echo have gone through)."""
    server = PeerProcess(
        [sys.executable, "-u", WORKER, "server", "--endpoint", endpoint, "--name", "org/live/server"],
        "server",
        stdin_pipe=True,
    )
    procs.append(server)
    server.wait_event("ready", 60)
    argv = [sys.executable, "-u", WORKER, "client", "--endpoint", endpoint, "--name", "org/live/client"]
    argv += ["--server", "org/live/server", "--bound", str(BOUND), "--kind", kind] + (
        ["--mls"] if mls else []
    )
    client = PeerProcess(argv, "client", stdin_pipe=True)
    procs.append(client)
    client.wait_event("got", 60, lambda e: e["payload"] == "echo:hello")
    return server, client


def kill_and_expect_lost(dead: PeerProcess, survivor: PeerProcess, dead_name: str) -> None:
    """SIGKILL `dead`; the survivor publishes once more, and its pending ``receive(session)``
    raises ``PeerLostError`` naming `dead_name`, that publish counted as undelivered, within the
    bound (plus slack)."""
    # First the survivor must hold nothing unacknowledged: a last message from `dead` that asks
    # for no answer arrives after every acknowledgement `dead` sent before it (one path, in
    # order). Else the survivor's last echo could still await its acknowledgement at the kill,
    # and count as undelivered too.
    dead.send_line("publish quiet:sync")
    survivor.wait_event("got", 10, lambda e: e["payload"] == "quiet:sync")
    dead.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    survivor.send_line("publish into-the-void")
    survivor.wait_event("published", 10)
    ended = survivor.wait_event("ended", BOUND + SLACK)[0]
    took = time.monotonic() - killed
    assert ended["type"] == "PeerLostError", ended
    assert ended["peer"] == dead_name, ended
    assert ended["undelivered"] == 1, ended
    assert ended["silent_ms"] >= BOUND * 1000, ended
    assert "stopped answering" in ended["error"], ended
    assert took < BOUND + SLACK, took


@pytest.mark.parametrize("mls", [False, True], ids=["reliable", "reliable-mls"])
@pytest.mark.parametrize("dies", ["client", "server"])
def test_a_sticky_sessions_survivor_learns_that_its_peer_died(
    procs: list[PeerProcess], dies: str, mls: bool
) -> None:
    endpoint = start_package_node(procs)
    server, client = start_p2p(procs, endpoint, mls)
    if dies == "client":
        kill_and_expect_lost(client, server, "org/live/client")
    else:
        kill_and_expect_lost(server, client, "org/live/server")


def test_an_anycast_server_learns_that_its_client_died(procs: list[PeerProcess]) -> None:
    """The instance that got an anycast session's first message watches its initiator
    (docs/liveness.md, "Anycast sessions"): SIGKILL the client, and the server's pending
    ``receive(session)`` raises ``PeerLostError`` naming it within the bound."""
    endpoint = start_package_node(procs)
    server, client = start_p2p(procs, endpoint, mls=False, kind="anycast")
    kill_and_expect_lost(client, server, "org/live/client")
