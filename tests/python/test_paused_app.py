"""An app whose process is paused for a few seconds keeps its connection to a standalone node, and
what was sent to it meanwhile arrives (docs/mesh.md, "Link failure and recovery").

The package's node (`python -m slim_bindings node`) takes part in the mesh, so it pings every
connection it accepts each second. It used to give up after 2 s without an answer, before it knew
whether the peer was a node or an app: an app stopped for 3 s (a GC pause, a debugger, a loaded
machine) lost its connection, and what was sent to it then found no route. The reader here is a
separate process, frozen with SIGSTOP while idle; after 4 s another process sends to it, still frozen.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from interop_test_helpers import PeerProcess, start_package_node
from slim_bindings.node import node_info

HERE = Path(__file__).resolve().parent
COUNT = 200
# Longer than the mesh keepalive's PING interval plus its old 2 s timeout, well under the 20 s bound.
PAUSE_S = 4.0
READER = "org/pause/reader"


def _wait_for_route(endpoint: str, name: str, timeout: float = 30) -> None:
    """Polls the node's inspection API (bounded) until it has a route to ``name``."""
    deadline = time.monotonic() + timeout
    while True:
        info = asyncio.run(node_info(endpoint, name_filter=name))
        if any(name in r["name"] for r in info["routes"]):
            return
        assert time.monotonic() < deadline, f"no route to {name} at the node after {timeout} s: {info}"
        time.sleep(0.02)


def test_paused_app_keeps_its_connection_and_gets_what_was_sent_meanwhile() -> None:
    procs: list[PeerProcess] = []
    try:
        endpoint = start_package_node(procs)
        reader = PeerProcess(
            [sys.executable, "-u", str(HERE / "pause_worker.py"), "--endpoint", endpoint]
            + ["--local", READER, "--count", str(COUNT)],
            "reader",
        )
        procs.append(reader)
        reader.wait_event("ready", 60)
        # The reader's subscription leaves its process after `connect` returns: freeze it only once
        # the node lists the route (a process stopped first never sends it, and what is sent to it
        # then comes back to the sender as "no route", not to the reader).
        _wait_for_route(endpoint, READER)
        os.kill(reader.proc.pid, signal.SIGSTOP)
        try:
            # The pause itself is what is tested: nothing to wait for but the clock (bounded).
            time.sleep(PAUSE_S)
            sender = PeerProcess(
                [sys.executable, "-u", str(HERE / "close_worker.py"), "--endpoint", endpoint]
                + ["--local", "org/pause/sender", "--remote", READER]
                + ["--count", str(COUNT), "--keep", "local"],
                "sender",
            )
            procs.append(sender)
            sender.wait_event("sent", 60)
            assert sender.finish(60) == 0, sender.diagnostics()
        finally:
            os.kill(reader.proc.pid, signal.SIGCONT)
        done = reader.wait_event("done", 60)[0]
        assert done["got"] == list(range(COUNT)), reader.diagnostics()
        assert done["reconnects"] == 0, done
        assert reader.finish(30) == 0, reader.diagnostics()
    finally:
        for p in procs:
            p.kill()
