"""Issue 10 item 1 from Python, every app in its own process: a node, a moderator publishing
100-byte messages as fast as it can to 4 members of an MLS group, each member reading with
``await app.receive(session=id)``.

One member stops reading after the first message, until its queue has dropped. The three others must get every
message exactly once (the group waits for the stopped member for the 5 s delivery bound, then goes
on). The stopped member gets each message either delivered or reported by a ``MessageLostError``
naming its id, never both, never neither; and ``node_stats()`` counts what it lost.

(tests/session_group_loss.rs streams 200,000 messages in Rust; this debug-build Python test uses
fewer, enough to overflow the stopped member's 16,384-message queue.)
"""

from __future__ import annotations

import sys
from pathlib import Path

from interop_test_helpers import PeerProcess, start_package_node

WORKER = str(Path(__file__).resolve().parent / "group_loss_worker.py")
TOTAL = 30_000
MEMBERS = [f"org/loss/m{i}" for i in range(4)]


def test_mls_group_members_get_every_message_or_its_loss_reported() -> None:
    procs: list[PeerProcess] = []
    try:
        endpoint = start_package_node(procs)
        members = []
        for i, name in enumerate(MEMBERS):
            argv = [sys.executable, "-u", WORKER, "member", "--endpoint", endpoint, "--name", name]
            argv += ["--total", str(TOTAL), "--idle", "60"]
            if i == 0:
                argv += ["--stop"]
            members.append(PeerProcess(argv, name))
        procs.extend(members)
        for m in members:
            m.wait_event("ready", 60)
        argv = [sys.executable, "-u", WORKER, "moderator", "--endpoint", endpoint, "--name", "org/loss/mod"]
        argv += ["--channel", "org/loss/chat", "--members", ",".join(MEMBERS), "--total", str(TOTAL)]
        moderator = PeerProcess(argv, "moderator", stdin_pipe=True)
        procs.append(moderator)
        moderator.wait_event("ready", 60)
        moderator.wait_event("invited", 120)
        moderator.wait_event("published", 300)

        results = [m.wait_event("done", 300)[0] for m in members]
        stopped, readers = results[0], results[1:]
        for name, r in zip(MEMBERS[1:], readers):
            assert (r["got"], r["lost"], r["duplicates"], r["wrong_ids"]) == (TOTAL, 0, 0, 0), (name, r)
            assert r["session_queue_dropped"] == r["messages_lost_reported"] == r["mls_failures"] == 0, (
                name,
                r,
            )
        assert stopped["duplicates"] == 0 and stopped["wrong_ids"] == 0, stopped
        assert stopped["missing"] == 0, f"silently lost: {stopped}"
        assert stopped["got"] + stopped["lost"] == TOTAL, stopped
        assert stopped["got"] >= 16_384, f"its queue was full before anything was dropped: {stopped}"
        assert stopped["lost"] > 0, stopped
        assert stopped["session_queue_dropped"] == stopped["messages_lost_reported"] == stopped["lost"], (
            stopped
        )
        moderator.send_line("quit")
        for p in members + [moderator]:
            assert p.finish(60) == 0, p.diagnostics()
    finally:
        for p in procs:
            p.kill()
