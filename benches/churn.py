#!/usr/bin/env python3
"""Churn: many short-lived clients and one long-lived receiver; what the receiver holds afterwards.

Every process on 127.0.0.1, with the package of --python:
  node      `python -m slim_bindings node` on a free port;
  receiver  accepts every session and reads it with `async for ... in app.messages(session)`, the
            usual server loop (it ends when the session is closed); `--receiver ignores`: takes only
            each new session's first message (`receive()`) and never reads the session;
  clients   one process that makes --clients apps one after another; each connects, opens an anycast
            session to the receiver, publishes --messages messages and goes: `--end delete` deletes the
            session and drops the app, `--end close` drops the app with the session still open;
            `--end kill`: one app opens --clients sessions (liveness bound --liveness) and publishes
            on each, then the process is SIGKILLed: nothing tells the receiver, which learns it from
            the missing heartbeats (docs/liveness.md, "Anycast sessions"); the second reading comes
            --liveness + --settle seconds after the kill.
Printed: how many of the receiver's session loops ended, and the receiver's resident memory (VmRSS)
before the first client and after the last one (after a pause of --settle seconds). A receiver whose
sessions stay open after their clients left grows with every client (about 30 KiB each); one whose
sessions close (docs/protocol.md, "Closing") does not.

Usage:  python3 benches/churn.py [--python PY] [--clients 1000] [--messages 3] [--end delete|close|kill]
                                 [--receiver reads|ignores] [--liveness S]
Not part of CI. Every wait is bounded; every process started is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e import Child, emit, free_port, identity, rss_kib, split_name, wait_listening

RECEIVER = "agntcy/churn/receiver"


async def new_app(local: str, endpoint: str):
    import slim_bindings

    app = await slim_bindings.Slim.new(split_name(local), *identity(local))
    await app.connect({"endpoint": endpoint, "tls": {"insecure": True}})
    return app


async def worker_receiver(args) -> None:
    app = await new_app(RECEIVER, args.endpoint)
    counts = {"sessions": 0, "ended": 0, "messages": 0}

    async def serve(info) -> None:
        async for _info, _payload in app.messages(info.id):
            counts["messages"] += 1
        counts["ended"] += 1

    async def accept() -> None:
        tasks = set()
        while True:
            info, _first = await app.receive()
            counts["sessions"] += 1
            if args.receiver == "reads":
                task = asyncio.create_task(serve(info))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    acceptor = asyncio.create_task(accept())
    emit("ready")
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() == "stop":
            break
        emit("counts", **counts)
    acceptor.cancel()


def anycast(slim_bindings, liveness: float):
    """An anycast config with liveness bound `liveness` (a build without the option: its default)."""
    import datetime

    try:
        return slim_bindings.PySessionConfiguration.Anycast(
            liveness_timeout=datetime.timedelta(seconds=liveness)
        )
    except TypeError:
        return slim_bindings.PySessionConfiguration.Anycast()


async def worker_clients(args) -> None:
    import slim_bindings

    peer = split_name(RECEIVER)
    started = time.monotonic()
    if args.end == "kill":
        app = await new_app("agntcy/churn/client", args.endpoint)
        await app.set_route(peer)
        sessions = []
        for _ in range(args.clients):
            session = await app.create_session(anycast(slim_bindings, args.liveness))
            sessions.append(session)
            for seq in range(args.messages):
                await app.publish(session, seq.to_bytes(4, "big"), peer)
        emit("done", seconds=round(time.monotonic() - started, 1))
        # Killed here by the coordinator (bounded: it gives up after --timeout).
        await asyncio.sleep(args.timeout)
        return
    for i in range(args.clients):
        app = await new_app(f"agntcy/churn/client-{i}", args.endpoint)
        await app.set_route(peer)
        session = await app.create_session(slim_bindings.PySessionConfiguration.Anycast())
        for seq in range(args.messages):
            await app.publish(session, seq.to_bytes(4, "big"), peer)
        if args.end == "delete":
            await app.delete_session(session)
        del session, app
        gc.collect()
    emit("done", seconds=round(time.monotonic() - started, 1))


def fresh_counts(receiver: Child) -> dict:
    """The receiver's counts now (a report asked for and awaited, bounded)."""
    with receiver.cond:
        seen = sum(1 for ev in receiver.events if ev["event"] == "counts")
    receiver.tell("report")
    deadline = time.monotonic() + 30
    with receiver.cond:
        while True:
            reports = [ev for ev in receiver.events if ev["event"] == "counts"]
            if len(reports) > seen:
                return reports[-1]
            remaining = deadline - time.monotonic()
            if receiver.ended or remaining <= 0:
                raise RuntimeError(f"receiver: no report within 30 s\n{receiver.tail()}")
            receiver.cond.wait(remaining)


def coordinator(args) -> int:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    me = str(Path(__file__).resolve())
    children: list[Child] = []
    try:
        node = Child("node", [args.python, "-m", "slim_bindings", "node", "--endpoint", f"127.0.0.1:{port}"])
        children.append(node)
        wait_listening(port, 60, node.proc)
        common = ["--endpoint", endpoint, "--messages", str(args.messages), "--end", args.end]
        common += ["--liveness", str(args.liveness), "--timeout", str(args.timeout)]
        common += ["--receiver", args.receiver]
        receiver = Child("receiver", [args.python, me, "--worker", "receiver", *common])
        children.append(receiver)
        receiver.wait("ready", 60)
        time.sleep(args.settle)
        before = rss_kib(receiver.proc.pid).get("VmRSS", 0)
        readings = []
        for r in range(args.rounds):
            clients = Child(
                "clients", [args.python, me, "--worker", "clients", "--clients", str(args.clients), *common]
            )
            children.append(clients)
            done = clients.wait("done", args.timeout)
            if args.end == "kill":
                # Every session reached the receiver (bounded), then the client process dies.
                deadline = time.monotonic() + 60
                while (
                    time.monotonic() < deadline
                    and fresh_counts(receiver)["sessions"] < (r + 1) * args.clients
                ):
                    time.sleep(0.1)
                clients.proc.kill()
                clients.proc.wait(30)
                time.sleep(args.liveness)
            time.sleep(args.settle)
            readings.append(rss_kib(receiver.proc.pid).get("VmRSS", 0))
        after = readings[-1]
        counts = fresh_counts(receiver)
        print(
            f"{args.clients} clients ({args.messages} messages each, end: {args.end}) in {done['seconds']} s; "
            f"receiver {args.receiver}: "
            f"{counts['sessions']} sessions, {counts['ended']} ended, {counts['messages']} messages; "
            f"VmRSS {before / 1024:.1f} -> {' -> '.join(f'{x / 1024:.1f}' for x in readings)} MiB "
            f"({(after - before) / max(args.clients * args.rounds, 1):.1f} KiB per client)"
        )
        return 0
    finally:
        for c in reversed(children):
            c.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--python", default=sys.executable, help="python whose slim_bindings is measured")
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--messages", type=int, default=3)
    p.add_argument("--end", choices=["delete", "close", "kill"], default="delete")
    p.add_argument(
        "--liveness", type=float, default=2.0, help="--end kill: the sessions' liveness bound, seconds"
    )
    p.add_argument("--receiver", choices=["reads", "ignores"], default="reads")
    p.add_argument("--rounds", type=int, default=1, help="client processes, one after another")
    p.add_argument("--settle", type=float, default=2.0, help="pause before each memory reading, seconds")
    p.add_argument("--timeout", type=float, default=600.0, help="bound on the clients' whole run, seconds")
    p.add_argument("--worker", choices=["receiver", "clients"], help=argparse.SUPPRESS)
    p.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker == "receiver":
        asyncio.run(worker_receiver(args))
        return 0
    if args.worker == "clients":
        asyncio.run(worker_clients(args))
        return 0
    return coordinator(args)


if __name__ == "__main__":
    sys.exit(main())
