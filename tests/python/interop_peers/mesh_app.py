"""An app of OUR package for the mesh tests (tests/python/test_mesh.py): one process per app, JSON events
on stdout (like peer_ours.py), summaries instead of one line per message so that long streams stay cheap.

Roles:
  stream-send   a reliable Unicast session to --remote; sends --count messages ("0", "1", ...) as fast as the
                session takes them and, with --expect-echo, reads the echoes back on the same session
                (in order, each once). Emits "progress" every --every messages and a final "summary".
  stream-recv   accepts one session; reads --count messages, checks they are 0..count-1 in order, each once;
                with --echo sends each one back. Emits "progress" and "summary".
  all-pairs     sends --count one-instance messages to every --peer (anycast, no retransmission: what the
                network delivers is what arrives), reads everything the others send, and reports per source
                how many arrived and how many were duplicates; with --wait-go it then deletes its sessions
                on a "delete" line and exits on the next line (or end of input).
  publish-once  publishes to --remote (routed to the node, which has nobody for it) and reports the error.

Every role with --wait-go waits for a "go" line on stdin before it sends. Every wait is bounded (the whole
role by 3 x --timeout; single steps outside the message loops by --timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import sys
import time
from collections import Counter

import slim_bindings
from slim_bindings import PyIdentityProvider, PyIdentityVerifier, PyName, PySessionConfiguration, Slim


def emit(event: str, **fields) -> None:
    fields["event"] = event
    fields["t"] = round(time.time(), 6)
    sys.stdout.write(json.dumps(fields, sort_keys=True) + "\n")
    sys.stdout.flush()


def parse_name(text: str) -> PyName:
    a, b, c = text.split("/")
    return PyName(a, b, c)


async def connected(args) -> Slim:
    local = args.local
    provider = PyIdentityProvider.SharedSecret(identity=local, shared_secret=args.secret)
    verifier = PyIdentityVerifier.SharedSecret(identity=local, shared_secret=args.secret)
    app = await Slim.new(parse_name(local), provider, verifier)
    await asyncio.wait_for(app.connect({"endpoint": args.endpoint, "tls": {"insecure": True}}), 10)
    for peer in args.peer + ([args.remote] if args.remote else []):
        await app.set_route(parse_name(peer))
    emit("ready", id=int(app.get_id()), local=local)
    return app


async def read_line(args) -> str:
    loop = asyncio.get_running_loop()
    line = await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), args.timeout)
    return line.strip()


async def wait_go(args) -> None:
    if args.wait_go:
        line = await read_line(args)
        if line != "go":
            raise RuntimeError(f"expected 'go' on stdin, got {line!r}")


async def role_stream_send(args) -> int:
    app = await connected(args)
    remote = parse_name(args.remote)
    await wait_go(args)
    config = PySessionConfiguration.Unicast(
        timeout=datetime.timedelta(seconds=args.ack_timeout), max_retries=args.max_retries
    )
    session = await app.create_session(config)
    echoes: list[int] = []

    async def read_echoes() -> None:
        while len(echoes) < args.count:
            _, blob = await app.receive(session=session.id)
            echoes.append(int(bytes(blob)))
            if len(echoes) % args.every == 0:
                emit("progress", echoed=len(echoes))

    reader = asyncio.create_task(read_echoes()) if args.expect_echo else None
    start = time.monotonic()
    for i in range(args.count):
        await app.publish(session, str(i).encode(), remote)
        if (i + 1) % args.every == 0:
            emit("progress", sent=i + 1)
    if reader is not None:
        await reader
    elapsed = time.monotonic() - start
    in_order = echoes == list(range(args.count))
    emit("summary", sent=args.count, echoed=len(echoes), echoes_in_order=in_order, seconds=round(elapsed, 3))
    if args.linger:
        # A publish returns once queued: stay (until stdin closes) so retransmissions can still happen.
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.read), args.timeout)
    return 0 if (reader is None or in_order) else 1


async def role_stream_recv(args) -> int:
    app = await connected(args)
    info, _first = await asyncio.wait_for(app.receive(), args.timeout)
    got: list[int] = []
    while len(got) < args.count:
        msg_info, blob = await app.receive(session=info.id)
        got.append(int(bytes(blob)))
        if args.echo:
            await app.publish_to(msg_info, bytes(blob))
        if len(got) % args.every == 0:
            emit("progress", received=len(got))
    in_order = got == list(range(args.count))
    emit("summary", received=len(got), in_order=in_order, duplicates=len(got) - len(set(got)))
    # Stay until told (the last echoes must leave this process before it exits).
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.read), args.timeout)
    return 0 if in_order else 1


async def role_all_pairs(args) -> int:
    app = await connected(args)
    counts: Counter[tuple[str, int]] = Counter()
    ended: Counter[str] = Counter()  # PeerClosedError per peer that ended its session to this app
    expected = args.count * len(args.peer)
    readers = []

    async def read(session_id: int) -> None:
        while True:
            try:
                _, blob = await app.receive(session=session_id)
            except slim_bindings.PeerClosedError as e:
                ended["/".join(e.peer.components_strings()[:3])] += 1
                return
            src, n = bytes(blob).decode().rsplit(":", 1)
            counts[(src, int(n))] += 1

    async def accept_all() -> None:
        while True:
            info, _ = await app.receive()
            readers.append(asyncio.create_task(read(info.id)))

    acceptor = asyncio.create_task(accept_all())
    await wait_go(args)
    sessions = {}
    for peer in args.peer:
        sessions[peer] = await app.create_session(PySessionConfiguration.Anycast())
    for i in range(args.count):
        for peer in args.peer:
            await app.publish(sessions[peer], f"{args.local}:{i}".encode(), parse_name(peer))
    emit("sent", count=args.count * len(args.peer))
    deadline = time.monotonic() + args.timeout
    while sum(counts.values()) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    # Anything extra (a duplicate) would arrive right behind the rest: give it a moment.
    await asyncio.sleep(args.settle)
    acceptor.cancel()
    per_source = Counter(src for (src, _) in counts)
    duplicates = sum(c - 1 for c in counts.values())
    emit(
        "summary",
        received=sum(counts.values()),
        distinct=len(counts),
        duplicates=duplicates,
        per_source=dict(per_source),
    )
    if args.wait_go and await read_line(args) == "delete":
        # Told once every app has reported, so every peer is still up: each session this app
        # created tells its peer it is done (SESSION_CLOSE), and each peer's session to this app
        # ends the same way: reported once the readers have seen every peer's end (bounded).
        for session in sessions.values():
            await app.delete_session(session)
        deadline = time.monotonic() + args.timeout
        while sum(ended.values()) < len(args.peer) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        emit("deleted", ended=dict(ended))
        await read_line(args)
    for r in readers:
        r.cancel()
    return 0


async def role_publish_once(args) -> int:
    app = await connected(args)
    session = await app.create_session(PySessionConfiguration.Anycast())
    await app.publish(session, b"anyone?", parse_name(args.remote))
    try:
        await asyncio.wait_for(app.receive(session=session.id), args.timeout)
        emit("summary", error=None)
    except slim_bindings.NoRouteError as e:
        emit("summary", error=str(e), kind="NoRouteError")
    return 0


ROLES = {
    "stream-send": role_stream_send,
    "stream-recv": role_stream_recv,
    "all-pairs": role_all_pairs,
    "publish-once": role_publish_once,
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("role", choices=sorted(ROLES))
    p.add_argument("--endpoint", required=True)
    p.add_argument("--local", required=True)
    p.add_argument("--remote")
    p.add_argument("--peer", action="append", default=[])
    p.add_argument("--secret", default="mesh-test-secret")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--every", type=int, default=1000)
    p.add_argument("--echo", action="store_true")
    p.add_argument("--expect-echo", action="store_true")
    p.add_argument("--wait-go", action="store_true")
    p.add_argument("--linger", action="store_true", help="stream-send: stay until stdin closes")
    p.add_argument("--ack-timeout", type=float, default=1.0)
    p.add_argument("--max-retries", type=int, default=30)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--settle", type=float, default=0.3)
    args = p.parse_args()
    emit("start", role=args.role)
    try:
        return asyncio.run(asyncio.wait_for(ROLES[args.role](args), args.timeout * 3))
    except Exception as e:  # noqa: BLE001 - reported as an event: the test prints it with the diagnostics
        emit("error", error=f"{type(e).__name__}: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
