"""Worker process for test_liveness.py: one app of a group, or one side of a sticky
point-to-point session, in its own process (so the test can SIGKILL it).

    python liveness_worker.py member    --endpoint http://127.0.0.1:P --name org/live/m0
    python liveness_worker.py moderator --endpoint http://127.0.0.1:P --name org/live/mod
                                        --channel org/live/chat --members org/live/m0,org/live/m1 --bound 2
    python liveness_worker.py server    --endpoint http://127.0.0.1:P --name org/live/server
    python liveness_worker.py client    --endpoint http://127.0.0.1:P --name org/live/client
                                        --server org/live/server --bound 2 [--mls] [--kind anycast]

Point to point: the client opens a reliable session, sticky or --kind anycast (liveness bound
--bound), and publishes "hello"; the server answers every message with "echo:" + payload, but
those starting "quiet:". Both print {"event": "ready"}, {"event": "got", ...} per message and
{"event": "ended", "type": ..., "peer": ..., "undelivered": ..., "silent_ms": ...} when their
pending receive raises; both read "publish <text>" and "quit".

Each prints one JSON object per line on stdout. Member: {"event": "ready"}, {"event": "joined"}
(first group message), {"event": "got", "payload": ...} per message, {"event": "moderator_lost",
"error": ..., "type": ...} when its pending receive raises. Moderator: {"event": "ready"},
{"event": "invited"}, {"event": "got", ...}, {"event": "participants", "names": [...]}.
Both read commands on stdin: "publish <text>", "participants", "quit". Every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys

import slim_bindings
from slim_bindings import PyName, PySessionConfiguration
from worker_io import emit, new_app, split

SECRET = "liveness-secret-0123456789abcdef0123"


def short(name: PyName) -> str:
    return "/".join(name.components_strings()[:3])


async def commands(app: slim_bindings.Slim, session: int, dest: PyName) -> None:
    """Runs stdin commands until "quit" or EOF; publishes go to `dest` (the group's channel, or
    the point-to-point peer)."""
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() == "quit":
            return
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "publish":
            await app.publish(session, arg.encode(), dest)
            emit("published", payload=arg)
        elif cmd == "participants":
            names = await app.participants(session)
            emit("participants", names=sorted(short(n) for n in names))


async def read(app: slim_bindings.Slim, session: int) -> None:
    """Reports every message of the session, then how the session ended."""
    while True:
        try:
            info, payload = await app.receive(session=session)
        except slim_bindings.SessionClosedError as e:
            emit(
                "moderator_lost",
                error=str(e),
                type=type(e).__name__,
                silent_ms=getattr(e, "silent_ms", None),
                undelivered=getattr(e, "undelivered", None),
            )
            return
        emit("got", payload=payload.decode(), source=short(info.source_name))


async def read_p2p(app: slim_bindings.Slim, session: int, echo: bool) -> None:
    """Reports every message of a point-to-point session (answering it when `echo`), then how the
    session ended."""
    while True:
        try:
            info, payload = await app.receive(session=session)
        except slim_bindings.SessionClosedError as e:
            peer = getattr(e, "peer", None)
            emit(
                "ended",
                error=str(e),
                type=type(e).__name__,
                peer=short(peer) if peer is not None else None,
                undelivered=getattr(e, "undelivered", None),
                silent_ms=getattr(e, "silent_ms", None),
            )
            return
        except slim_bindings.SlimError as e:
            # E.g. "no matching found" for a publish to a peer that is gone: reported, not the end.
            emit("reported", error=str(e), type=type(e).__name__)
            continue
        emit("got", payload=payload.decode(), source=short(info.source_name))
        if echo and not payload.startswith(b"quiet:"):
            await app.publish_to(info, b"echo:" + payload)


async def server(args: argparse.Namespace) -> None:
    app = await new_app(args.name, args.endpoint, SECRET)
    emit("ready")
    info, _first = await asyncio.wait_for(app.receive(), args.deadline)
    emit("session", id=int(info.id))
    reader = asyncio.ensure_future(read_p2p(app, info.id, echo=True))
    await commands(app, info.id, info.source_name)
    reader.cancel()


async def client(args: argparse.Namespace) -> None:
    app = await new_app(args.name, args.endpoint, SECRET)
    peer = split(args.server)
    await app.set_route(peer)
    kind = PySessionConfiguration.Anycast if args.kind == "anycast" else PySessionConfiguration.Unicast
    config = kind(
        timeout=datetime.timedelta(milliseconds=200),
        max_retries=100,
        mls_enabled=args.mls,
        liveness_timeout=datetime.timedelta(seconds=args.bound),
    )
    session = await app.create_session(config)
    await app.publish(session, b"hello", peer)
    reader = asyncio.ensure_future(read_p2p(app, session.id, echo=False))
    emit("ready")
    await commands(app, session.id, peer)
    reader.cancel()


async def member(args: argparse.Namespace) -> None:
    app = await new_app(args.name, args.endpoint, SECRET)
    emit("ready")
    info, first = await asyncio.wait_for(app.receive(), args.deadline)
    emit("joined", payload=first.decode())
    channel = info.destination_name
    # The first message is also the first item of the session's queue.
    reader = asyncio.ensure_future(read(app, info.id))
    await commands(app, info.id, channel)
    reader.cancel()


async def moderator(args: argparse.Namespace) -> None:
    app = await new_app(args.name, args.endpoint, SECRET)
    channel = split(args.channel)
    config = PySessionConfiguration.Multicast(
        topic=channel,
        moderator=True,
        max_retries=5,
        timeout=datetime.timedelta(seconds=1),
        liveness_timeout=datetime.timedelta(seconds=args.bound),
    )
    session = await app.create_session(config)
    emit("ready")
    for m in args.members.split(","):
        await app.set_route(split(m))
        await asyncio.wait_for(app.invite(session, split(m), wait=True), args.deadline)
    await app.publish(session, b"welcome", channel)
    emit("invited")
    reader = asyncio.ensure_future(read(app, session.id))
    await commands(app, session.id, channel)
    reader.cancel()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["member", "moderator", "server", "client"])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--channel", default="org/live/chat")
    parser.add_argument("--members", default="")
    parser.add_argument("--bound", type=float, default=2.0)
    parser.add_argument("--deadline", type=float, default=60.0)
    parser.add_argument("--server", default="org/live/server")
    parser.add_argument("--mls", action="store_true")
    parser.add_argument("--kind", choices=["unicast", "anycast"], default="unicast")
    args = parser.parse_args()
    roles = {"member": member, "moderator": moderator, "server": server, "client": client}
    asyncio.run(roles[args.role](args))


if __name__ == "__main__":
    main()
