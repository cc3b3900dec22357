#!/usr/bin/env python3
"""Soak: mixed traffic through one node for a long time (default 10 minutes), then the books.

Every app runs in its own process, on 127.0.0.1, with our package:
  node       `python -m slim_bindings node` on a free port;
  p2p        a sender publishes numbered messages at --p2p-rate msgs/s on one reliable Unicast session
             (timeout 1 s, 5 retries) to a receiver;
  group      an MLS group: a moderator invites --members members (invite(wait=True)), then publishes
             numbered messages at --group-rate msgs/s; every member reads them all;
  churn      every --churn-interval seconds a new app connects, opens a reliable session to the receiver,
             sends --churn-messages numbered messages, reads the receiver's echo of each, and leaves
             (disconnect, session and app dropped).
At the end the senders stop, in-flight messages get --drain seconds, and every process reports. Printed per
stream: messages sent, delivered (distinct, at each reader), lost and reported (MessageLostError or
SLIMTimeoutError raised to the app), lost silently (sent - delivered - reported: must be 0), duplicates;
and the resident memory (VmRSS) of every process at the start (traffic set up) and at the end.

Usage:  task bench:soak                          (release build, 10 minutes)
        task bench:soak DURATION=60               (shorter)
        python3 benches/soak.py --duration 600 [--p2p-rate 200] [--group-rate 200] [--members 3] [--json out]
Exit status 1 when anything was lost silently or a process failed. Not part of CI. Every wait is bounded;
every process started is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import json
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e import Child, emit, free_port, identity, rss_kib, split_name, wait_listening

RECEIVER = "agntcy/soak/receiver"
SENDER = "agntcy/soak/sender"
MODERATOR = "agntcy/soak/moderator"
CHANNEL = "agntcy/soak/chat"
KIND_P2P, KIND_GROUP, KIND_CHURN = b"P", b"G", b"C"


# ---------------------------------------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------------------------------------


async def new_app(local: str, endpoint: str):
    import slim_bindings

    app = await slim_bindings.Slim.new(split_name(local), *identity(local))
    await app.connect({"endpoint": endpoint, "tls": {"insecure": True}})
    return app


def reliable():
    import slim_bindings

    return slim_bindings.PySessionConfiguration.Unicast(timeout=datetime.timedelta(seconds=1), max_retries=5)


class Stdin:
    """Commands from the coordinator, one per line."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        self.ready = loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        self.reader = reader

    async def start(self) -> None:
        await self.ready
        asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self) -> None:
        while True:
            line = await self.reader.readline()
            await self.queue.put(line.decode().strip() if line else "eof")
            if not line:
                return

    async def wait(self, command: str) -> None:
        while True:
            got = await self.queue.get()
            if got in (command, "eof"):
                return


class Book:
    """What one reader saw of one stream. Ids are kept in a bitmap of blocks of `BLOCK` ids (16
    bytes per 128 ids), not a set (~60 bytes per id): the readers' RSS at the end is then the
    package's, not this book's (a set of 120,000 ids alone is ~7 MiB)."""

    BLOCK = 4096

    def __init__(self) -> None:
        self.blocks: dict[int, bytearray] = {}
        self.delivered = 0
        self.duplicates = 0
        self.reported = 0
        self.errors: dict[str, int] = {}

    def got(self, seq: int) -> None:
        block_no, bit = divmod(seq, self.BLOCK)
        block = self.blocks.get(block_no)
        if block is None:
            block = self.blocks[block_no] = bytearray(self.BLOCK // 8)
        mask = 1 << (bit & 7)
        if block[bit >> 3] & mask:
            self.duplicates += 1
        else:
            block[bit >> 3] |= mask
            self.delivered += 1

    def error(self, e: BaseException) -> None:
        import slim_bindings

        name = type(e).__name__
        self.errors[name] = self.errors.get(name, 0) + 1
        if isinstance(e, (slim_bindings.MessageLostError, slim_bindings.SLIMTimeoutError)):
            self.reported += 1

    def summary(self) -> dict:
        return {
            "delivered": self.delivered,
            "duplicates": self.duplicates,
            "reported": self.reported,
            "errors": self.errors,
        }


async def paced(rate: float, stop: asyncio.Event, send) -> int:
    """Calls `send(seq)` at `rate` per second until `stop`; returns how many were sent."""
    seq, start = 0, time.monotonic()
    while not stop.is_set():
        due = start + seq / rate
        delay = due - time.monotonic()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
                break
            except asyncio.TimeoutError:
                pass
        await send(seq)
        seq += 1
    return seq


async def read_errors(app, session, book: Book, stop: asyncio.Event) -> None:
    """A sender's own session: errors (timeouts) arrive as exceptions from receive."""
    while not stop.is_set():
        try:
            await app.receive(session=session)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - every typed error is counted
            book.error(e)


async def stream(args, cmd: Stdin, app, session, send, role: str) -> None:
    """Sends at --rate from "ready" to "stop", booking the session's errors; reports on "report"."""
    book, stop = Book(), asyncio.Event()
    errors = asyncio.create_task(read_errors(app, session, book, stop))
    emit("ready")
    sending = asyncio.create_task(paced(args.rate, stop, send))
    await cmd.wait("stop")
    stop.set()
    sent = await sending
    await cmd.wait("report")
    errors.cancel()
    emit("report", sent=sent, **{role: book.summary()})


async def worker_receiver(args, cmd: Stdin) -> None:
    """Accepts every session: numbered messages are booked per stream; churn messages are echoed."""
    import slim_bindings

    app = await new_app(RECEIVER, args.endpoint)
    books: dict[str, Book] = {}

    async def serve(info, first: bytes) -> None:
        # A session carries one stream: its first payload says which.
        book = books.setdefault("churn" if first[:1] == KIND_CHURN else "p2p", Book())
        while True:
            try:
                info2, blob = await app.receive(session=info.id)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - every typed error is counted
                book.error(e)
                if isinstance(e, (slim_bindings.SessionClosedError, slim_bindings.SessionNotFoundError)):
                    return
                continue
            seq = struct.unpack_from("<Q", blob, 9)[0]
            if blob[:1] == KIND_CHURN:
                book.got(struct.unpack_from("<Q", blob, 1)[0] * 1_000_000 + seq)
                try:
                    await app.publish_to(info2, blob)
                except Exception as e:  # noqa: BLE001
                    books.setdefault("churn-echo", Book()).error(e)
            else:
                book.got(seq)

    tasks = []

    async def accept() -> None:
        while True:
            info, first = await app.receive()
            tasks.append(asyncio.create_task(serve(info, first)))

    acceptor = asyncio.create_task(accept())
    emit("ready")
    await cmd.wait("report")
    acceptor.cancel()
    for t in tasks:
        t.cancel()
    emit("report", books={k: v.summary() for k, v in books.items()})


async def worker_sender(args, cmd: Stdin) -> None:
    app = await new_app(SENDER, args.endpoint)
    peer = split_name(RECEIVER)
    await app.set_route(peer)
    session = await app.create_session(reliable())

    async def send(seq: int) -> None:
        await app.publish(session, KIND_P2P + bytes(8) + struct.pack("<Q", seq), peer)

    await stream(args, cmd, app, session, send, "sender")


async def worker_moderator(args, cmd: Stdin) -> None:
    import slim_bindings

    app = await new_app(MODERATOR, args.endpoint)
    channel = split_name(CHANNEL)
    cfg = slim_bindings.PySessionConfiguration.Multicast(
        channel, moderator=True, max_retries=10, timeout=datetime.timedelta(seconds=1), mls_enabled=True
    )
    session = await app.create_session(cfg)
    for m in args.invite:
        await app.set_route(split_name(m))
        await asyncio.wait_for(app.invite(session, split_name(m), wait=True), 60)

    async def send(seq: int) -> None:
        await app.publish(session, KIND_GROUP + bytes(8) + struct.pack("<Q", seq), channel)

    await stream(args, cmd, app, session, send, "moderator")


async def worker_member(args, cmd: Stdin) -> None:
    import slim_bindings

    app = await new_app(args.local, args.endpoint)
    emit("ready")
    info, _first = await app.receive()
    book = Book()

    async def read() -> None:
        while True:
            try:
                items = await app.receive_many(info.id)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001
                book.error(e)
                if isinstance(e, (slim_bindings.SessionClosedError, slim_bindings.SessionNotFoundError)):
                    return
                continue
            for _info, blob in items:
                if blob[:1] == KIND_GROUP:
                    book.got(struct.unpack_from("<Q", blob, 9)[0])

    reader = asyncio.create_task(read())
    await cmd.wait("report")
    reader.cancel()
    emit("report", member=book.summary())


async def worker_churn(args, cmd: Stdin) -> None:
    """New apps that come, talk and go."""
    import slim_bindings

    stop = asyncio.Event()
    totals = {"apps": 0, "sent": 0, "echoed": 0, "reported": 0, "failed_apps": 0, "errors": {}}

    async def one(i: int) -> None:
        app = await new_app(f"agntcy/soak/churn-{i}", args.endpoint)
        peer = split_name(RECEIVER)
        await app.set_route(peer)
        session = await app.create_session(reliable())
        want = set(range(args.churn_messages))
        for seq in range(args.churn_messages):
            await app.publish(session, KIND_CHURN + struct.pack("<Q", i) + struct.pack("<Q", seq), peer)
            totals["sent"] += 1
        deadline = time.monotonic() + 15
        while want and time.monotonic() < deadline:
            try:
                _info, blob = await asyncio.wait_for(
                    app.receive(session=session), deadline - time.monotonic()
                )
            except asyncio.TimeoutError:
                break
            except (slim_bindings.MessageLostError, slim_bindings.SLIMTimeoutError) as e:
                totals["reported"] += 1
                totals["errors"][type(e).__name__] = totals["errors"].get(type(e).__name__, 0) + 1
                continue
            seq = struct.unpack_from("<Q", blob, 9)[0]
            if seq in want:
                want.discard(seq)
                totals["echoed"] += 1
        if want:
            totals["failed_apps"] += 1
        await app.delete_session(session)
        await app.disconnect(args.endpoint)
        del app
        gc.collect()

    async def loop() -> None:
        i = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                await one(i)
            except Exception as e:  # noqa: BLE001
                totals["failed_apps"] += 1
                totals["errors"][type(e).__name__] = totals["errors"].get(type(e).__name__, 0) + 1
            totals["apps"] += 1
            i += 1
            rest = args.churn_interval - (time.monotonic() - started)
            if rest > 0:
                try:
                    await asyncio.wait_for(stop.wait(), rest)
                except asyncio.TimeoutError:
                    pass

    emit("ready")
    task = asyncio.create_task(loop())
    await cmd.wait("stop")
    stop.set()
    await asyncio.wait_for(task, 30)
    await cmd.wait("report")
    emit("report", churn=totals)


WORKERS = {
    "receiver": worker_receiver,
    "sender": worker_sender,
    "moderator": worker_moderator,
    "member": worker_member,
    "churn": worker_churn,
}


def worker_main(args) -> int:
    async def run() -> None:
        cmd = Stdin()
        await cmd.start()
        await WORKERS[args.worker](args, cmd)

    try:
        asyncio.run(run())
    except Exception as e:  # noqa: BLE001
        emit("error", error=f"{type(e).__name__}: {e}")
        return 1
    return 0


# ---------------------------------------------------------------------------------------------------------
# Coordinator
# ---------------------------------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=600.0, help="seconds of traffic (default 600)")
    p.add_argument("--p2p-rate", type=float, default=200.0)
    p.add_argument("--group-rate", type=float, default=200.0)
    p.add_argument("--members", type=int, default=3)
    p.add_argument("--churn-interval", type=float, default=3.0)
    p.add_argument("--churn-messages", type=int, default=20)
    p.add_argument("--drain", type=float, default=15.0, help="seconds for in-flight messages after the stop")
    p.add_argument("--python", default=sys.executable, help="python that imports our slim_bindings")
    p.add_argument("--json", help="write the figures here too")
    # worker side
    p.add_argument("--worker", choices=sorted(WORKERS))
    p.add_argument("--endpoint")
    p.add_argument("--local")
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--invite", action="append", default=[])
    args = p.parse_args()
    if args.worker:
        return worker_main(args)

    me = str(Path(__file__).resolve())
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    py = args.python
    children: list[Child] = []

    def start(name: str, *argv: str) -> Child:
        c = Child(name, [py, me, "--endpoint", endpoint, *argv])
        children.append(c)
        return c

    members = [f"agntcy/soak/member-{i}" for i in range(args.members)]
    try:
        node = Child("node", [py, "-m", "slim_bindings", "node", "--endpoint", f"127.0.0.1:{port}"])
        children.append(node)
        wait_listening(port, 60, node.proc)
        receiver = start("receiver", "--worker", "receiver")
        receiver.wait("ready", 60)
        member_procs = [start(m.split("/")[2], "--worker", "member", "--local", m) for m in members]
        for m in member_procs:
            m.wait("ready", 60)
        moderator = start(
            "moderator",
            "--worker",
            "moderator",
            "--rate",
            str(args.group_rate),
            *[x for m in members for x in ("--invite", m)],
        )
        sender = start("sender", "--worker", "sender", "--rate", str(args.p2p_rate))
        churn = start(
            "churn",
            "--worker",
            "churn",
            "--churn-interval",
            str(args.churn_interval),
            "--churn-messages",
            str(args.churn_messages),
        )
        for c in (moderator, sender, churn):
            c.wait("ready", 120)
        rss_start = {c.name: rss_kib(c.proc.pid).get("VmRSS", 0) for c in children}
        print(
            f"soak: {args.duration:.0f} s of traffic through {endpoint} "
            f"(p2p {args.p2p_rate:.0f}/s, MLS group of {args.members} at {args.group_rate:.0f}/s, "
            f"a churn app every {args.churn_interval:.0f} s)",
            flush=True,
        )
        deadline = time.monotonic() + args.duration
        while time.monotonic() < deadline:
            time.sleep(min(10.0, max(0.0, deadline - time.monotonic())))
            for c in children:
                if c.proc.poll() is not None:
                    raise RuntimeError(f"{c.name} exited early (rc={c.proc.returncode})\n{c.tail()}")
        rss_end = {c.name: rss_kib(c.proc.pid).get("VmRSS", 0) for c in children}
        for c in (sender, moderator, churn):
            c.tell("stop")
        time.sleep(args.drain)
        for c in children[1:]:
            c.tell("report")
        reports = {c.name: c.wait("report", 60) for c in children[1:]}
    finally:
        for c in reversed(children):
            c.stop()

    rows = []
    p2p_sent = reports["sender"]["sent"]
    p2p_book = reports["receiver"]["books"].get("p2p", {"delivered": 0, "duplicates": 0, "reported": 0})
    p2p_reported = reports["sender"]["sender"]["reported"] + p2p_book["reported"]
    rows.append(
        ("p2p reliable", "receiver", p2p_sent, p2p_book["delivered"], p2p_reported, p2p_book["duplicates"])
    )
    g_sent = reports["moderator"]["sent"]
    for m in members:
        b = reports[m.split("/")[2]]["member"]
        rows.append(("MLS group", m.split("/")[2], g_sent, b["delivered"], b["reported"], b["duplicates"]))
    ch = reports["churn"]["churn"]
    ch_book = reports["receiver"]["books"].get("churn", {"delivered": 0, "duplicates": 0, "reported": 0})
    rows.append(
        ("churn", "receiver", ch["sent"], ch_book["delivered"], ch["reported"], ch_book["duplicates"])
    )
    silent_total = 0
    print(
        f"\n{'stream':<14} {'reader':<10} {'sent':>9} {'delivered':>10} {'lost(rep)':>10} "
        f"{'lost(silent)':>13} {'dups':>6}"
    )
    for stream, reader, sent, delivered, reported, dups in rows:
        silent = max(0, sent - delivered - reported)
        silent_total += silent
        print(f"{stream:<14} {reader:<10} {sent:>9} {delivered:>10} {reported:>10} {silent:>13} {dups:>6}")
    print(
        f"churn: {ch['apps']} apps came and went, {ch['echoed']} of {ch['sent']} echoes back, "
        f"{ch['failed_apps']} apps incomplete, errors {ch['errors']}"
    )
    print("\nRSS (MiB)      start      end")
    for c in children:
        print(f"  {c.name:<10} {rss_start.get(c.name, 0) / 1024:8.1f} {rss_end.get(c.name, 0) / 1024:8.1f}")
    print(f"\nlost silently: {silent_total}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "rows": rows,
                    "rss_start": rss_start,
                    "rss_end": rss_end,
                    "reports": reports,
                    "silent": silent_total,
                },
                indent=1,
            )
        )
    return 1 if silent_total else 0


if __name__ == "__main__":
    sys.exit(main())
