"""One SLIM peer built on the released slim-bindings 0.6.0 wheel, for interop tests.

Run it with the python of the 0.6.0 venv (scripts/setup_venv_060.sh), never with ours: both install the
module `slim_bindings`. It plays one role picked by argv and prints one JSON object per line on stdout per
event, e.g. {"event": "ready", "id": 123, ...}, {"event": "received", "payload": "...", "source": "..."},
{"event": "done", ...} or {"event": "error", "error": "..."}. Every wait is bounded; the exit code is 0 only
when the role reached its goal.

Roles:
  node            a 0.6.0 Slim that only runs a server (a reference router to validate the other roles)
  p2p-responder   waits for one session and echoes every message back with publish_to
  p2p-sender      creates a PointToPoint session to --remote, sends --count messages, collects the echoes
                  (or, with --stdin-steps, one message per stdin line, re-sent until echoed)
  group-moderator creates a Group session on --channel, set_route + invite for each --invite, then publishes
                  every line read from stdin (or --count generated lines when --no-stdin)
  group-member    waits for the group session, prints what it receives, optionally publishes --publish

0.6.0 API relied upon (read from the wheel's _slim_bindings.pyi, slim.py and session.py, and probed):
  Slim.new(name: PyName, provider: PyIdentityProvider, verifier: PyIdentityVerifier, local_service=False)
      -> Slim   (async; local_service=False shares one process-global node, fine: one app per process)
  Slim.id -> int;  Slim.local_name -> PyName
  Slim.connect(client_config: dict) -> int   (async; also subscribes the local name on that connection)
  Slim.run_server(config: dict)  (async; {"endpoint": "127.0.0.1:<port>", "tls": {"insecure": True}})
  Slim.set_route(name: PyName)   (async; needs a prior connect)
  Slim.create_session(PySessionConfiguration) -> PySession   (async)
  Slim.listen_for_session(timeout: datetime.timedelta | None) -> PySession   (async)
  Slim.delete_session(session: PySession)   (async)
  PySessionConfiguration.PointToPoint(peer_name, timeout=None, max_retries=None, mls_enabled=False, metadata={})
  PySessionConfiguration.Group(channel_name, max_retries=0, timeout=timedelta(seconds=1), mls_enabled=False,
                               metadata={})
  PySession.id, .src, .dst, .session_type, .metadata
  PySession.publish(msg: bytes, payload_type=None, metadata=None)   (async)
  PySession.publish_to(message_ctx: PyMessageContext, msg: bytes, payload_type=None, metadata=None)   (async)
  PySession.get_message() -> (PyMessageContext, bytes)   (async)
  PySession.invite(name: PyName) / PySession.remove(name: PyName)   (async)
  PyMessageContext.source_name / destination_name: PyName, .payload_type: str, .metadata: dict,
      .input_connection: int
  PyIdentityProvider.SharedSecret(identity, shared_secret) / PyIdentityVerifier.SharedSecret(identity, shared_secret)
  PyName(c0, c1, c2, id=None); .components() -> [int]*4; .components_strings() -> [str]*3; str(name)
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
from slim_bindings import (
    PyIdentityProvider,
    PyIdentityVerifier,
    PyName,
    PySessionConfiguration,
    Slim,
)


def emit(event: str, **fields) -> None:
    """Print one JSON event line and flush, so a parent process sees it at once."""
    fields["event"] = event
    fields["t"] = round(time.time(), 6)
    sys.stdout.write(json.dumps(fields, sort_keys=True) + "\n")
    sys.stdout.flush()


def parse_name(text: str) -> PyName:
    """`org/ns/app` -> PyName without id."""
    parts = text.split("/")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"name must be org/ns/app, got {text!r}")
    return PyName(parts[0], parts[1], parts[2])


def name_text(name: PyName | None) -> str | None:
    """Readable form of a name; names that came off the wire have no strings, so fall back to the hashes."""
    if name is None:
        return None
    strings = name.components_strings()
    comps = name.components()
    if any(strings):
        return f"{strings[0]}/{strings[1]}/{strings[2]}/{comps[3]}"
    return "/".join(f"{c:x}" for c in comps[:3]) + f"/{comps[3]}"


def name_fields(prefix: str, name: PyName | None) -> dict:
    """The readable name plus its four integer components (what a test compares)."""
    if name is None:
        return {prefix: None}
    return {prefix: name_text(name), prefix + "_components": [int(c) for c in name.components()]}


def payload_text(blob: bytes) -> str:
    return bytes(blob).decode("utf-8", errors="replace")


async def new_app(args) -> Slim:
    """A 0.6.0 app with a shared-secret identity `<local>` / `--secret`."""
    provider = PyIdentityProvider.SharedSecret(identity=args.local, shared_secret=args.secret)
    verifier = PyIdentityVerifier.SharedSecret(identity=args.local, shared_secret=args.secret)
    return await Slim.new(parse_name(args.local), provider, verifier)


async def connected_app(args) -> Slim:
    app = await new_app(args)
    conn = await asyncio.wait_for(
        app.connect({"endpoint": args.endpoint, "tls": {"insecure": True}}), args.step_timeout
    )
    emit("ready", id=int(app.id), local=args.local, conn=int(conn), **name_fields("name", app.local_name))
    return app


async def next_message(session, timeout: float):
    ctx, blob = await asyncio.wait_for(session.get_message(), timeout)
    return ctx, bytes(blob)


def received_event(session, ctx, blob: bytes, **extra) -> None:
    emit(
        "received",
        session_id=int(session.id),
        payload=payload_text(blob),
        size=len(blob),
        payload_type=ctx.payload_type,
        metadata=dict(ctx.metadata),
        input_connection=int(ctx.input_connection),
        **name_fields("source", ctx.source_name),
        **name_fields("destination", ctx.destination_name),
        **extra,
    )


def session_event(event: str, session, **extra) -> None:
    emit(
        event,
        session_id=int(session.id),
        session_type=str(session.session_type),
        metadata=dict(session.metadata),
        **name_fields("src", session.src),
        **name_fields("dst", session.dst),
        **extra,
    )


async def role_node(args) -> int:
    """Reference router: a 0.6.0 Slim that runs a server until SIGTERM/SIGINT, stdin EOF or --duration."""
    app = await new_app(args)
    await asyncio.wait_for(
        app.run_server({"endpoint": args.listen, "tls": {"insecure": True}}), args.step_timeout
    )
    emit("ready", id=int(app.id), listen=args.listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if not args.no_stdin:
        # The parent holds our stdin open; its EOF (parent gone) ends the node.
        loop.run_in_executor(None, lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)))
    try:
        await asyncio.wait_for(stop.wait(), args.duration)
    except asyncio.TimeoutError:
        pass
    emit("done")
    return 0


async def role_p2p_responder(args) -> int:
    app = await connected_app(args)
    session = await app.listen_for_session(datetime.timedelta(seconds=args.wait_timeout))
    session_event("session", session)
    echoed = 0
    while args.count <= 0 or echoed < args.count:
        try:
            ctx, blob = await next_message(session, args.idle_timeout)
        except asyncio.TimeoutError:
            break
        received_event(session, ctx, blob)
        reply = (args.reply_prefix.encode() + blob) if args.reply_prefix else blob
        await asyncio.wait_for(session.publish_to(ctx, reply), args.step_timeout)
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
    config = PySessionConfiguration.PointToPoint(
        peer_name=remote,
        timeout=timeout,
        max_retries=retries,
        mls_enabled=args.mls,
        metadata=json.loads(args.metadata),
    )
    session = await asyncio.wait_for(app.create_session(config), args.step_timeout)
    session_event("session", session)
    if args.stdin_steps:
        return await sender_stdin_steps(args, session)
    replies = 0
    for i in range(args.count):
        text = f"{args.message} {i}"
        await asyncio.wait_for(session.publish(text.encode()), args.step_timeout)
        emit("sent", n=i, payload=text)
        try:
            ctx, blob = await next_message(session, args.reply_timeout)
        except asyncio.TimeoutError:
            emit("error", error=f"no reply to message {i} within {args.reply_timeout}s")
            return 1
        received_event(session, ctx, blob, n=i)
        replies += 1
    await asyncio.wait_for(app.delete_session(session), args.step_timeout)
    emit("done", replies=replies)
    return 0


async def sender_stdin_steps(args, session) -> int:
    """One message per stdin line; each is re-sent every --reply-timeout until its echo comes back, at most
    --attempts times (this rides out a node restart). EOF or "exit" ends it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.duration
    step = 0
    while loop.time() < deadline:
        line = await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), deadline - loop.time())
        if not line or line.strip() == "exit":
            break
        text = line.rstrip("\n")
        echoed = False
        for attempt in range(1, args.attempts + 1):
            try:
                await asyncio.wait_for(session.publish(text.encode()), args.step_timeout)
            except Exception as e:  # noqa: BLE001 - the node may be down; the next attempt retries
                emit("send-failed", n=step, attempt=attempt, error=f"{type(e).__name__}: {e}")
                await asyncio.sleep(args.reply_timeout)
                continue
            emit("sent", n=step, payload=text, attempt=attempt)
            give_up = loop.time() + args.reply_timeout
            while loop.time() < give_up:
                try:
                    ctx, blob = await next_message(session, give_up - loop.time())
                except asyncio.TimeoutError:
                    break
                except Exception as e:  # noqa: BLE001 - an error for an attempt (e.g. no route while the node restarts)
                    emit("receive-failed", n=step, attempt=attempt, error=f"{type(e).__name__}: {e}")
                    break
                received_event(session, ctx, blob, n=step)
                if text in payload_text(blob):
                    echoed = True
                    break
            if echoed:
                break
        if not echoed:
            emit("error", error=f"no echo for step {step} after {args.attempts} attempts")
            return 1
        emit("step-done", n=step)
        step += 1
    emit("done", replies=step)
    return 0


async def role_group_moderator(args) -> int:
    app = await connected_app(args)
    channel = parse_name(args.channel)
    config = PySessionConfiguration.Group(
        channel_name=channel,
        max_retries=args.max_retries,
        timeout=datetime.timedelta(seconds=args.ack_timeout),
        mls_enabled=args.mls,
        metadata=json.loads(args.metadata),
    )
    session = await asyncio.wait_for(app.create_session(config), args.step_timeout)
    session_event("session", session)
    for member in args.invite:
        name = parse_name(member)
        await asyncio.wait_for(app.set_route(name), args.step_timeout)
        await asyncio.wait_for(session.invite(name), args.step_timeout)
        emit("invited", member=member)

    received = 0

    async def receive_loop():
        nonlocal received
        while True:
            ctx, blob = await session.get_message()
            received += 1
            received_event(session, ctx, blob, n=received)

    receiver = asyncio.create_task(receive_loop())
    published = 0
    loop = asyncio.get_running_loop()
    try:
        if args.no_stdin:
            for i in range(args.count):
                await asyncio.wait_for(session.publish(f"{args.message} {i}".encode()), args.step_timeout)
                published += 1
                emit("published", n=published)
        else:
            # Each stdin line is published; "exit" or EOF ends the moderator. Bounded by --duration overall.
            deadline = loop.time() + args.duration
            while loop.time() < deadline:
                line = await asyncio.wait_for(
                    loop.run_in_executor(None, sys.stdin.readline), deadline - loop.time()
                )
                if not line or line.strip() == "exit":
                    break
                await asyncio.wait_for(session.publish(line.rstrip("\n").encode()), args.step_timeout)
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
    await asyncio.wait_for(app.delete_session(session), args.step_timeout)
    return 0


async def role_group_member(args) -> int:
    app = await connected_app(args)
    session = await app.listen_for_session(datetime.timedelta(seconds=args.wait_timeout))
    session_event("session", session)
    received = 0
    published = False
    while args.count <= 0 or received < args.count:
        try:
            ctx, blob = await next_message(session, args.idle_timeout)
        except asyncio.TimeoutError:
            break
        received += 1
        received_event(session, ctx, blob, n=received)
        if args.publish and not published and received >= args.publish_after:
            await asyncio.wait_for(session.publish(args.publish.encode()), args.step_timeout)
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
    p.add_argument("--endpoint", default="http://127.0.0.1:46357", help="node to connect to (client roles)")
    p.add_argument("--listen", default="127.0.0.1:46357", help="address to serve on (node role)")
    p.add_argument("--local", default="agntcy/interop/peer", help="own name org/ns/app")
    p.add_argument("--remote", help="peer name org/ns/app (p2p-sender)")
    p.add_argument("--channel", default="agntcy/interop/chat", help="group channel org/ns/app")
    p.add_argument("--invite", action="append", default=[], help="member to invite (repeatable)")
    p.add_argument("--secret", default="interop-shared-secret-0123456789abcdef")
    p.add_argument("--count", type=int, default=1, help="messages to send/expect (0 = until idle)")
    p.add_argument("--expect", type=int, default=0, help="group-moderator: messages to wait for from members")
    p.add_argument("--message", default="hello from 0.6.0")
    p.add_argument("--reply-prefix", default="", help="p2p-responder: prefix added to each echo")
    p.add_argument("--publish", default="", help="group-member: text to publish once")
    p.add_argument("--publish-after", type=int, default=1, help="group-member: publish after N receptions")
    p.add_argument("--reliable", action="store_true", help="p2p-sender: ack timeout + retries")
    p.add_argument("--stdin-steps", action="store_true", help="p2p-sender: one message per stdin line")
    p.add_argument("--attempts", type=int, default=10, help="p2p-sender --stdin-steps: sends per line")
    p.add_argument("--mls", action="store_true")
    p.add_argument("--metadata", default="{}", help="session metadata as a JSON object")
    p.add_argument("--ack-timeout", type=float, default=1.0)
    p.add_argument("--max-retries", type=int, default=5)
    p.add_argument("--no-stdin", action="store_true", help="node/moderator: do not read stdin")
    p.add_argument("--step-timeout", type=float, default=10.0, help="bound on each single call")
    p.add_argument("--wait-timeout", type=float, default=20.0, help="bound on waiting for a session/replies")
    p.add_argument("--reply-timeout", type=float, default=10.0)
    p.add_argument("--idle-timeout", type=float, default=10.0, help="stop receiving after this much silence")
    p.add_argument("--duration", type=float, default=120.0, help="overall bound on the process")
    return p.parse_args(argv)


async def main_async(args) -> int:
    # INTEROP_060_LOG=debug (or info, trace...) shows what the 0.6.0 runtime does, on stderr.
    level = os.environ.get("INTEROP_060_LOG")
    if level:
        await slim_bindings.init_tracing({"log_level": level})
    try:
        return await asyncio.wait_for(ROLES[args.role](args), args.duration + 5)
    except asyncio.TimeoutError:
        emit("error", error=f"role {args.role} timed out")
        return 2
    except Exception as e:  # noqa: BLE001 - report any failure as an event; the test reads stdout, not tracebacks
        emit("error", error=f"{type(e).__name__}: {e}")
        return 1


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    emit("start", role=args.role, version=slim_bindings.get_version())
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter finalization: the 0.6.0 wheel sometimes aborts (SIGABRT) while Python tears down
    # with its runtime's tasks still alive, after the role has already finished and reported.
    os._exit(code)
