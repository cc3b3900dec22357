"""One SLIM peer built on OUR slim_bindings package, for interop tests against 0.6.0 peers.

Same roles, arguments and JSON event lines as peer060.py (so a test can swap one for the other), written
against our API, which is the seed-era one:
  Slim.new(name, provider, verifier); Slim.connect(dict) -> int; Slim.run_server(dict); Slim.set_route(name)
  Slim.create_session(PySessionConfiguration.Anycast|Unicast(timeout, max_retries, mls_enabled)
                      | .Multicast(topic, moderator, max_retries, timeout, mls_enabled)) -> PySessionInfo
  Slim.publish(session, msg, dest, payload_type=None, metadata=None); Slim.publish_to(info, msg)
  Slim.receive() -> (info, first payload) of a new inbound session (that payload is also the first item of
  the session's queue); Slim.receive(session=id) -> (info, payload); Slim.invite(session, name, wait=False)
  PySessionInfo.id / source_name / destination_name / payload_type / metadata
Session metadata at creation does not exist in this API, so --metadata is accepted and ignored.
Run with a python whose `slim_bindings` is ours.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import signal
import sys
import time

import slim_bindings
from slim_bindings import PyIdentityProvider, PyIdentityVerifier, PyName, PySessionConfiguration, Slim


def emit(event: str, **fields) -> None:
    """Print one JSON event line and flush, so a parent process sees it at once."""
    fields["event"] = event
    fields["t"] = round(time.time(), 6)
    sys.stdout.write(json.dumps(fields, sort_keys=True) + "\n")
    sys.stdout.flush()


def parse_name(text: str) -> PyName:
    parts = text.split("/")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"name must be org/ns/app, got {text!r}")
    return PyName(parts[0], parts[1], parts[2])


def name_fields(prefix: str, name) -> dict:
    if name is None:
        return {prefix: None}
    strings = name.components_strings()
    comps = [int(c) for c in name.components()]
    if any(strings):
        text = f"{strings[0]}/{strings[1]}/{strings[2]}/{comps[3]}"
    else:
        text = "/".join(f"{c:x}" for c in comps[:3]) + f"/{comps[3]}"
    return {prefix: text, prefix + "_components": comps}


def payload_text(blob: bytes) -> str:
    return bytes(blob).decode("utf-8", errors="replace")


async def new_app(args) -> Slim:
    provider = PyIdentityProvider.SharedSecret(identity=args.local, shared_secret=args.secret)
    verifier = PyIdentityVerifier.SharedSecret(identity=args.local, shared_secret=args.secret)
    return await Slim.new(parse_name(args.local), provider, verifier)


async def connected_app(args) -> Slim:
    app = await new_app(args)
    conn = await asyncio.wait_for(
        app.connect({"endpoint": args.endpoint, "tls": {"insecure": True}}), args.step_timeout
    )
    emit(
        "ready", id=int(app.get_id()), local=args.local, conn=int(conn), **name_fields("name", app.local_name)
    )
    return app


def received_event(session_id: int, info, blob: bytes, **extra) -> None:
    emit(
        "received",
        session_id=int(session_id),
        payload=payload_text(blob),
        size=len(blob),
        payload_type=info.payload_type,
        metadata=dict(info.metadata),
        **name_fields("source", info.source_name),
        **name_fields("destination", info.destination_name),
        **extra,
    )


async def accept(app: Slim, args, kind: str):
    """The next inbound session; its first payload stays queued on the session and is read there."""
    info, _first = await asyncio.wait_for(app.receive(), args.wait_timeout)
    emit(
        "session",
        session_id=int(info.id),
        session_type=kind,
        metadata=dict(info.metadata),
        **name_fields("dst", info.source_name if kind == "PointToPoint" else info.destination_name),
    )
    return info


async def next_message(app: Slim, session_id: int, timeout: float):
    info, blob = await asyncio.wait_for(app.receive(session=session_id), timeout)
    return info, bytes(blob)


async def role_node(args) -> int:
    app = await new_app(args)
    await asyncio.wait_for(
        app.run_server({"endpoint": args.listen, "tls": {"insecure": True}}), args.step_timeout
    )
    emit("ready", id=int(app.get_id()), listen=args.listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if not args.no_stdin:
        loop.run_in_executor(None, lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)))
    try:
        await asyncio.wait_for(stop.wait(), args.duration)
    except asyncio.TimeoutError:
        pass
    emit("done")
    return 0


async def role_p2p_responder(args) -> int:
    app = await connected_app(args)
    session = await accept(app, args, "PointToPoint")
    echoed = 0
    while args.count <= 0 or echoed < args.count:
        try:
            info, blob = await next_message(app, session.id, args.idle_timeout)
        except asyncio.TimeoutError:
            break
        received_event(session.id, info, blob)
        reply = (args.reply_prefix.encode() + blob) if args.reply_prefix else blob
        await asyncio.wait_for(app.publish_to(info, reply), args.step_timeout)
        echoed += 1
        emit("replied", n=echoed, size=len(reply))
    emit("done", echoed=echoed)
    await linger(args)
    if args.count > 0 and echoed < args.count:
        emit("error", error=f"echoed {echoed} of {args.count}")
        return 1
    return 0


async def linger(args) -> None:
    """Stay alive until stdin closes (bounded): publish calls return before the bytes leave the process, so
    exiting right after the last reply could lose it. With stdin not a pipe this returns at once."""
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.read), args.wait_timeout)
    except asyncio.TimeoutError:
        pass


async def role_p2p_sender(args) -> int:
    app = await connected_app(args)
    remote = parse_name(args.remote)
    await asyncio.wait_for(app.set_route(remote), args.step_timeout)
    timeout = datetime.timedelta(seconds=args.ack_timeout) if args.reliable else None
    retries = args.max_retries if args.reliable else None
    kind = args.session_kind or ("unicast" if (args.reliable or args.mls) else "anycast")
    variant = PySessionConfiguration.Unicast if kind == "unicast" else PySessionConfiguration.Anycast
    config = variant(timeout=timeout, max_retries=retries, mls_enabled=args.mls)
    if kind == "unicast" and args.liveness:
        config = variant(
            timeout=timeout,
            max_retries=retries,
            mls_enabled=args.mls,
            liveness_timeout=datetime.timedelta(seconds=args.liveness),
        )
    session = await asyncio.wait_for(app.create_session(config), args.step_timeout)
    emit(
        "session",
        session_id=int(session.id),
        session_type="PointToPoint",
        metadata={},
        **name_fields("dst", remote),
    )
    replies = 0
    for i in range(args.count):
        if i and args.pause:
            await asyncio.sleep(args.pause)  # an idle gap in the conversation (--pause)
        text = f"{args.message} {i}"
        await asyncio.wait_for(app.publish(session, text.encode(), remote), args.step_timeout)
        emit("sent", n=i, payload=text)
        try:
            info, blob = await next_message(app, session.id, args.reply_timeout)
        except asyncio.TimeoutError:
            emit("error", error=f"no reply to message {i} within {args.reply_timeout}s")
            return 1
        received_event(session.id, info, blob, n=i)
        replies += 1
    await asyncio.wait_for(app.delete_session(session.id), args.step_timeout)
    emit("done", replies=replies)
    return 0


async def role_group_moderator(args) -> int:
    app = await connected_app(args)
    channel = parse_name(args.channel)
    config = PySessionConfiguration.Multicast(
        channel, True, args.max_retries, datetime.timedelta(seconds=args.ack_timeout), args.mls
    )
    session = await asyncio.wait_for(app.create_session(config), args.step_timeout)
    emit(
        "session",
        session_id=int(session.id),
        session_type="Group",
        metadata={},
        **name_fields("dst", channel),
    )
    for member in args.invite:
        name = parse_name(member)
        await asyncio.wait_for(app.set_route(name), args.step_timeout)
        # wait=True: returns once the member has joined (and, with MLS, can decrypt).
        await asyncio.wait_for(app.invite(session, name, wait=True), args.wait_timeout)
        emit("invited", member=member)

    received = 0

    async def receive_loop():
        nonlocal received
        while True:
            info, blob = await app.receive(session=session.id)
            received += 1
            received_event(session.id, info, bytes(blob), n=received)

    receiver = asyncio.create_task(receive_loop())
    published = 0
    loop = asyncio.get_running_loop()
    try:
        if args.no_stdin:
            for i in range(args.count):
                await asyncio.wait_for(
                    app.publish(session, f"{args.message} {i}".encode(), channel), args.step_timeout
                )
                published += 1
                emit("published", n=published)
        else:
            deadline = loop.time() + args.duration
            while loop.time() < deadline:
                line = await asyncio.wait_for(
                    loop.run_in_executor(None, sys.stdin.readline), deadline - loop.time()
                )
                if not line or line.strip() == "exit":
                    break
                await asyncio.wait_for(
                    app.publish(session, line.rstrip("\n").encode(), channel), args.step_timeout
                )
                published += 1
                emit("published", n=published, payload=line.rstrip("\n"))
        if args.expect > 0:
            deadline = loop.time() + args.wait_timeout
            while received < args.expect and loop.time() < deadline:
                await asyncio.sleep(0.02)
    except asyncio.TimeoutError:
        emit("error", error="moderator timed out")
        return 1
    finally:
        receiver.cancel()
    emit("done", published=published, received=received)
    if args.expect > 0 and received < args.expect:
        emit("error", error=f"received {received} of {args.expect}")
        return 1
    await asyncio.wait_for(app.delete_session(session.id), args.step_timeout)
    return 0


async def role_group_member(args) -> int:
    app = await connected_app(args)
    session = await accept(app, args, "Group")
    channel = parse_name(args.channel)
    received = 0
    published = False
    while args.count <= 0 or received < args.count:
        try:
            info, blob = await next_message(app, session.id, args.idle_timeout)
        except asyncio.TimeoutError:
            break
        received += 1
        received_event(session.id, info, blob, n=received)
        if args.publish and not published and received >= args.publish_after:
            await asyncio.wait_for(app.publish(session, args.publish.encode(), channel), args.step_timeout)
            published = True
            emit("published", payload=args.publish)
    emit("done", received=received)
    if args.count > 0 and received < args.count:
        emit("error", error=f"received {received} of {args.count}")
        return 1
    return 0


ROLES = {
    "node": role_node,
    "p2p-responder": role_p2p_responder,
    "p2p-sender": role_p2p_sender,
    "group-moderator": role_group_moderator,
    "group-member": role_group_member,
}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("role", choices=sorted(ROLES))
    p.add_argument("--endpoint", default="http://127.0.0.1:46357")
    p.add_argument("--listen", default="127.0.0.1:46357")
    p.add_argument("--local", default="agntcy/interop/peer")
    p.add_argument("--remote")
    p.add_argument("--channel", default="agntcy/interop/chat")
    p.add_argument("--invite", action="append", default=[])
    p.add_argument("--secret", default="interop-shared-secret-0123456789abcdef")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--expect", type=int, default=0)
    p.add_argument("--message", default="hello from ours")
    p.add_argument("--reply-prefix", default="")
    p.add_argument("--publish", default="")
    p.add_argument("--publish-after", type=int, default=1)
    p.add_argument("--reliable", action="store_true")
    p.add_argument("--mls", action="store_true")
    p.add_argument("--session-kind", choices=["anycast", "unicast"], help="p2p-sender (default: by flags)")
    p.add_argument("--liveness", type=float, default=0.0, help="p2p-sender, unicast: liveness_timeout (s)")
    p.add_argument("--pause", type=float, default=0.0, help="p2p-sender: idle seconds between messages")
    p.add_argument("--metadata", default="{}", help="accepted for parity with peer060.py; not in this API")
    p.add_argument("--ack-timeout", type=float, default=1.0)
    p.add_argument("--max-retries", type=int, default=5)
    p.add_argument("--no-stdin", action="store_true")
    p.add_argument("--step-timeout", type=float, default=10.0)
    p.add_argument("--wait-timeout", type=float, default=20.0)
    p.add_argument("--reply-timeout", type=float, default=10.0)
    p.add_argument("--idle-timeout", type=float, default=10.0)
    p.add_argument("--duration", type=float, default=120.0)
    return p.parse_args(argv)


async def main_async(args) -> int:
    # INTEROP_OURS_LOG=debug (or info, trace...) shows what our runtime does, on stderr.
    level = os.environ.get("INTEROP_OURS_LOG")
    if level:
        slim_bindings.init_tracing({"log_level": level})
    try:
        return await asyncio.wait_for(ROLES[args.role](args), args.duration + 5)
    except asyncio.TimeoutError:
        emit("error", error=f"role {args.role} timed out")
        return 2
    except Exception as e:  # noqa: BLE001 - reported, then the run goes on
        emit("error", error=f"{type(e).__name__}: {e}")
        return 1


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    emit("start", role=args.role, version=slim_bindings.get_version())
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
