"""Worker process for test_group_loss.py: one app of an MLS group, in its own process.

    python group_loss_worker.py member    --endpoint http://127.0.0.1:P --name org/loss/m0 --total N [--stop]
    python group_loss_worker.py moderator --endpoint http://127.0.0.1:P --name org/loss/mod --channel org/loss/chat
                                          --members org/loss/m0,org/loss/m1 --total N

Each prints one JSON object per line on stdout: {"event": "ready"}, then (moderator)
{"event": "published", "seconds": ...} or (member) {"event": "done", ...} with what it read:
messages received once, lost ids reported by MessageLostError, duplicates, and its node_stats().
A member reads with ``await app.receive(session=id)``, one message at a time, as a user would.
Every wait is bounded; the moderator exits on "quit" (or EOF) on stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys
import time

from slim_bindings import MessageLostError, PySessionConfiguration
from worker_io import emit, new_app, split

SECRET = "group-loss-secret-0123456789abcdef"


async def member(args: argparse.Namespace) -> None:
    app = await new_app(args.name, args.endpoint, SECRET)
    emit("ready")
    info, _first = await asyncio.wait_for(app.receive(), args.deadline)
    session = info.id
    if args.stop:
        # Reads nothing until its queue has dropped: first the group waits for it, then (past the
        # 5 s delivery bound) its queue drops, and each dropped message must be reported.
        deadline = time.monotonic() + args.deadline
        while app.svc.node_stats()["session_queue_dropped"] == 0:
            if time.monotonic() > deadline:
                emit("error", what="the stopped member's queue never dropped")
                return
            await asyncio.sleep(0.1)
    got: set[int] = set()
    lost: set[int] = set()
    duplicates = 0
    wrong_ids = 0
    while len(got) + len(lost) < args.total:
        try:
            info, blob = await asyncio.wait_for(app.receive(session=session), args.idle)
        except MessageLostError as e:
            assert e.message_id is not None and e.session_id == session
            if e.message_id in lost or e.message_id in got:
                duplicates += 1
            lost.add(e.message_id)
            continue
        except asyncio.TimeoutError:
            break
        n = int.from_bytes(blob[:4], "big")
        if n != info.message_id:
            wrong_ids += 1
        if n in got or n in lost:
            duplicates += 1
        got.add(n)
    stats = app.svc.node_stats()
    emit(
        "done",
        got=len(got),
        lost=len(lost),
        duplicates=duplicates,
        wrong_ids=wrong_ids,
        missing=args.total - len(got | lost),
        session_queue_dropped=stats["session_queue_dropped"],
        messages_lost_reported=stats["messages_lost_reported"],
        mls_failures=stats["mls_failures"],
    )


async def moderator(args: argparse.Namespace) -> None:
    app = await new_app(args.name, args.endpoint, SECRET)
    channel = split(args.channel)
    cfg = PySessionConfiguration.Multicast(
        channel, moderator=True, max_retries=5, timeout=datetime.timedelta(seconds=1), mls_enabled=True
    )
    session = await app.create_session(cfg)
    names = [split(m) for m in args.members.split(",")]
    for n in names:
        await app.set_route(n)
    emit("ready")
    await asyncio.wait_for(asyncio.gather(*(app.invite(session, n, wait=True) for n in names)), args.deadline)
    emit("invited")
    pad = bytes(96)
    start = time.monotonic()
    for i in range(args.total):
        await app.publish(session, i.to_bytes(4, "big") + pad, channel)
    emit("published", seconds=time.monotonic() - start)
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), args.deadline)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["member", "moderator"])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--total", type=int, required=True)
    parser.add_argument("--channel")
    parser.add_argument("--members")
    parser.add_argument("--stop", action="store_true", help="read nothing until the queue has dropped")
    parser.add_argument("--idle", type=float, default=30.0, help="give up after this long without anything")
    parser.add_argument("--deadline", type=float, default=120.0)
    args = parser.parse_args()
    asyncio.run(member(args) if args.role == "member" else moderator(args))


if __name__ == "__main__":
    main()
