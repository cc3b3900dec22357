#!/usr/bin/env python3
"""Ours beside NATS, ZeroMQ and Zenoh: the same three scenarios, in the same run, one table.

Every system runs as a router process plus two Python client processes on 127.0.0.1, each in its own
process, driven by benches/e2e.py's workers and coordinator (same event protocol, same clocks):
  1. one-way stream of --messages 100-byte messages (the receiver's delivered rate; lost = sent - received);
  2. request/reply: --round-trips sequential round trips, p50/p99;
  3. 64 KiB stream: --big-messages messages of 65,536 bytes, MB/s delivered.
CPU µs per message is the user+system CPU of all three processes during the stream (from /proc) divided
by the messages delivered: unlike the rates, it hardly depends on the machine's load.

Systems (--systems, all by default):
  ours           our package's node (run_server) and apps, default (Anycast) session;
  ours-reliable  the same with a reliable session (Unicast, acks and retransmission);
  ours-per-call  ours, default session, one `publish` call per message even with --ours-batch;
  nats           nats-server (Debian's package) + nats-py clients, core pub/sub (no JetStream);
  zmq            pyzmq: a zmq.proxy(XSUB, XPUB) process + PUB/SUB clients (PUB drops at its HWM);
  zenoh          eclipse-zenoh: a Python session in router mode + two client-mode sessions, its defaults
                 (which include shared memory: on one host a put larger than 3,072 bytes goes into a
                 shared-memory pool and only a reference crosses the router's TCP links);
  zenoh-tcp      the same with shared memory off (`transport.shared_memory.enabled: false` in all three):
                 every byte through loopback TCP, as ours, NATS and ZeroMQ send it.
Each peer is used with its defaults and the usual asyncio way of its Python client; replies go back on
a second subject/topic/key. Peers whose client or server is missing are skipped with a message.

Usage: task bench:peers (installs the peers into .venv-peers, nats-server from Debian when missing, and
our release build into .venv), or python3 benches/peers.py --ours-python .venv/bin/python
--peers-python .venv-peers/bin/python [--repeat 3]. Runs alternate between systems; medians shown.
The same file is the peers' worker program (--worker requester|responder|router --peer ...).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import copy
import json
import os
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import e2e  # benches/e2e.py: workers, Child, run_scenario

BIG = 65536
WARM = b"W"  # a peer's route check, answered below the e2e protocol (never seen by its workers)
SUBJECT = {e2e.REQUESTER: "bench.requester", e2e.RESPONDER: "bench.responder"}
SYSTEMS = ("ours", "ours-reliable", "ours-per-call", "nats", "zmq", "zenoh", "zenoh-tcp")


# ---------------------------------------------------------------------------------------------------------
# Peer apps: the interface of e2e.AppOurs (start, open_session, accept_session, send, recv, recv_batch,
# reply), over each peer's Python client.
# ---------------------------------------------------------------------------------------------------------


class Inbox:
    """Received (reply-context, payload) pairs for the asyncio side; `put` may be called from any
    thread (`threadsafe`) or from the loop's own callbacks. Wakes the reader only when it waits."""

    def __init__(self, threadsafe: bool):
        self.items: collections.deque = collections.deque()
        self.waiter: asyncio.Future | None = None
        self.loop = asyncio.get_running_loop()
        self.threadsafe = threadsafe

    def put(self, item) -> None:
        self.items.append(item)
        w = self.waiter
        if w is not None:
            self.waiter = None
            if self.threadsafe:
                self.loop.call_soon_threadsafe(_wake, w)
            else:
                _wake(w)

    async def _wait(self, timeout: float | None) -> None:
        deadline = None if timeout is None else self.loop.time() + timeout
        while not self.items:
            fut = self.loop.create_future()
            self.waiter = fut
            if self.items:  # arrived between the check and the waiter
                self.waiter = None
                return
            if deadline is None:
                await fut
                continue
            # A loop timer on the waiter itself: no task per call, as asyncio.wait_for would add.
            expiry = self.loop.call_at(deadline, _expire, fut)
            try:
                await fut
            finally:
                expiry.cancel()
                if self.waiter is fut:
                    self.waiter = None

    async def get_one(self, timeout: float | None = None):
        await self._wait(timeout)
        return self.items.popleft()

    async def get_all(self, limit: int = 4096, timeout: float | None = None) -> list:
        await self._wait(timeout)
        n = min(limit, len(self.items))
        return [self.items.popleft() for _ in range(n)]


def _wake(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class PeerApp:
    """What the three peers share: the route check (W) and filtering it out of received batches."""

    inbox: Inbox
    answers_warm = False  # the responder answers W; the requester drops late ones

    async def open_session(self, remote: str, reliable: bool):
        # Subscriptions propagate asynchronously (ZeroMQ's "slow joiner", Zenoh's declarations):
        # send W until one comes back (bounded), then the e2e warm-up round trip runs as for ours.
        for _ in range(100):
            await self.send(WARM)
            try:
                while True:
                    _ctx, blob = await self.inbox.get_one(0.1)
                    if blob[:1] == WARM:
                        return
            except asyncio.TimeoutError:
                continue
        raise RuntimeError("no route to the responder after 100 attempts")

    async def accept_session(self, timeout: float):
        pass

    async def finish(self):
        """Flushes what the client still buffers (the requester's QUIT) before the process exits."""

    async def recv(self, timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ctx, blob = await self.inbox.get_one(left)
            if blob[:1] != WARM:
                return ctx, blob
            if self.answers_warm:
                await self.reply(ctx, WARM)

    async def recv_within(self, timeout: float):
        return await self.recv(timeout)

    async def recv_batch_within(self, timeout: float):
        return await self.recv_batch(timeout)

    async def recv_batch(self, timeout: float | None = None):
        batch = await self.inbox.get_all(timeout=timeout)
        out = []
        for ctx, blob in batch:
            if blob[:1] != WARM:
                out.append((ctx, blob))
            elif self.answers_warm:
                await self.reply(ctx, WARM)
        return out


class AppNats(PeerApp):
    """nats-py: core publish/subscribe through nats-server."""

    async def start(self, local: str, endpoint: str | None):
        import nats

        self.inbox = Inbox(threadsafe=False)
        self.answers_warm = local == e2e.RESPONDER
        self.nc = await nats.connect(endpoint, max_reconnect_attempts=0)
        inbox = self.inbox

        async def on_msg(msg):
            inbox.put((None, msg.data))

        await self.nc.subscribe(SUBJECT[local], cb=on_msg)
        await self.nc.flush()
        self.peer = SUBJECT[e2e.RESPONDER if local == e2e.REQUESTER else e2e.REQUESTER]

    async def send(self, blob: bytes):
        await self.nc.publish(self.peer, blob)

    async def finish(self):
        await self.nc.flush()

    async def reply(self, ctx, blob: bytes):
        await self.nc.publish(self.peer, blob)


class AppZmq(PeerApp):
    """pyzmq (zmq.asyncio): PUB to the proxy's XSUB, SUB from its XPUB; a one-byte topic prefix."""

    TOPIC: ClassVar[dict[str, bytes]] = {e2e.REQUESTER: b"q", e2e.RESPONDER: b"r"}

    async def start(self, local: str, endpoint: str | None):
        import zmq
        import zmq.asyncio

        self.zmq = zmq
        self.ctx = zmq.asyncio.Context()
        xsub, xpub = endpoint.split(",")
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.connect(xsub)
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.connect(xpub)
        self.sub.setsockopt(zmq.SUBSCRIBE, self.TOPIC[local])
        # Drains what is already queued without a future per message.
        self.sub_now = zmq.Socket.shadow(self.sub.underlying)
        self.prefix = self.TOPIC[e2e.RESPONDER if local == e2e.REQUESTER else e2e.REQUESTER]
        self.inbox = Inbox(threadsafe=False)
        self.answers_warm = local == e2e.RESPONDER
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self):
        zmq = self.zmq
        while True:
            frame = await self.sub.recv()
            self.inbox.put((None, frame[1:]))
            for _ in range(4096):
                try:
                    frame = self.sub_now.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self.inbox.put((None, frame[1:]))

    async def send(self, blob: bytes):
        await self.pub.send(self.prefix + blob)

    async def finish(self):
        await asyncio.sleep(0.1)  # the I/O thread sends what the PUB socket still holds

    async def reply(self, ctx, blob: bytes):
        await self.pub.send(self.prefix + blob)


def zenoh_config(settings: dict, shm: bool) -> dict:
    """`settings` with Zenoh's shared memory left at its default (on) or switched off."""
    if not shm:
        settings = {**settings, "transport": {"shared_memory": {"enabled": False}}}
    return settings


class AppZenoh(PeerApp):
    """eclipse-zenoh: a client-mode session; put on a declared publisher, a callback subscriber."""

    KEY: ClassVar[dict[str, str]] = {e2e.REQUESTER: "bench/requester", e2e.RESPONDER: "bench/responder"}
    SHM: ClassVar[bool] = True

    async def start(self, local: str, endpoint: str | None):
        import zenoh

        self.inbox = Inbox(threadsafe=True)
        self.answers_warm = local == e2e.RESPONDER
        conf = zenoh.Config.from_json5(
            json.dumps(
                zenoh_config(
                    {
                        "mode": "client",
                        "connect": {"endpoints": [endpoint]},
                        "scouting": {"multicast": {"enabled": False}},
                    },
                    self.SHM,
                )
            )
        )
        self.session = zenoh.open(conf)
        inbox = self.inbox
        self.sub = self.session.declare_subscriber(
            self.KEY[local], lambda sample: inbox.put((None, sample.payload.to_bytes()))
        )
        self.pub = self.session.declare_publisher(
            self.KEY[e2e.RESPONDER if local == e2e.REQUESTER else e2e.REQUESTER]
        )

    async def send(self, blob: bytes):
        self.pub.put(blob)

    async def finish(self):
        self.session.close()  # flushes the batch that holds the last put

    async def reply(self, ctx, blob: bytes):
        self.pub.put(blob)


class AppZenohTcp(AppZenoh):
    """Zenoh with shared memory off: every payload through the TCP links."""

    SHM: ClassVar[bool] = False


PEER_APPS = {"nats": AppNats, "zmq": AppZmq, "zenoh": AppZenoh, "zenoh-tcp": AppZenohTcp}


def run_router(peer: str, listen: str, deadline: float) -> int:
    """The router of a peer that has no server program of its own (zmq, zenoh), until stdin closes."""
    if peer == "zmq":
        import zmq

        ctx = zmq.Context()
        xsub, xpub = ctx.socket(zmq.XSUB), ctx.socket(zmq.XPUB)
        a, b = listen.split(",")
        xsub.bind(a)
        xpub.bind(b)
        threading.Thread(target=zmq.proxy, args=(xsub, xpub), daemon=True).start()
    else:
        import zenoh

        conf = zenoh.Config.from_json5(
            json.dumps(
                zenoh_config(
                    {
                        "mode": "router",
                        "listen": {"endpoints": [listen]},
                        "scouting": {"multicast": {"enabled": False}, "gossip": {"enabled": False}},
                    },
                    PEER_APPS[peer].SHM,
                )
            )
        )
        session = zenoh.open(conf)  # noqa: F841 (kept open until exit)
    e2e.emit("ready")
    waiter = threading.Thread(target=sys.stdin.readline, daemon=True)
    waiter.start()
    waiter.join(deadline)
    sys.stdout.flush()
    os._exit(0)  # no orderly teardown: a proxy thread and a zenoh runtime do not stop on request


def worker_main(args) -> int:
    if args.worker == "router":
        return run_router(args.peer, args.listen, args.deadline)
    app = PEER_APPS[args.peer]()
    role = {"responder": e2e.worker_responder, "requester": e2e.worker_requester}[args.worker]

    async def run():
        try:
            await asyncio.wait_for(role(app, args), args.deadline + 10)
            await asyncio.wait_for(app.finish(), 5)
        except Exception as e:  # noqa: BLE001 - reported as an event: the coordinator reads stdout
            e2e.emit("error", error=f"{type(e).__name__}: {e}")
            return 1
        return 0

    rc = asyncio.run(run())
    sys.stdout.flush()
    os._exit(rc)  # zenoh and zmq contexts can hang at interpreter exit


# ---------------------------------------------------------------------------------------------------------
# Coordinator.
# ---------------------------------------------------------------------------------------------------------


def peer_available(system: str, python: str) -> str | None:
    """None when `system` can run here; else why not."""
    module = {"nats": "nats", "zmq": "zmq", "zenoh": "zenoh", "zenoh-tcp": "zenoh"}[system]
    if system == "nats" and not shutil.which("nats-server"):
        return "nats-server is not installed (apt-get install nats-server)"
    import subprocess

    p = subprocess.run(
        [python, "-c", f"import {module}"], capture_output=True, text=True, timeout=60, check=False
    )
    if p.returncode != 0:
        return f"{python} cannot import {module}"
    return None


def run_peer(system: str, python: str, args) -> dict:
    me = str(Path(__file__).resolve())
    common = e2e.worker_common_args(system, args)[2:]  # without "--impl X": peers take --peer
    ports: dict = {}

    def router(port: int) -> e2e.Child:
        if system == "nats":
            node = e2e.Child("node", ["nats-server", "-a", "127.0.0.1", "-p", str(port)])
            node.terminate_first = True
            node.desc = "nats-server"
            return node
        if system == "zmq":
            ports["xpub"] = e2e.free_port()
            listen = f"tcp://127.0.0.1:{port},tcp://127.0.0.1:{ports['xpub']}"
        else:
            listen = f"tcp/127.0.0.1:{port}"
        node = e2e.Child(
            "node",
            [
                python,
                me,
                "--worker",
                "router",
                "--peer",
                system,
                "--listen",
                listen,
                "--deadline",
                str(args.deadline),
            ],
        )
        node.desc = {
            "zmq": "zmq.proxy(XSUB, XPUB)",
            "zenoh": "zenoh router-mode session",
            "zenoh-tcp": "zenoh router-mode session, shared memory off",
        }[system]
        return node

    def worker(role: str, endpoint: str) -> list[str]:
        if system == "zmq":
            endpoint = f"{endpoint},tcp://127.0.0.1:{ports['xpub']}"
        return [python, me, "--worker", role, "--peer", system, "--endpoint", endpoint, *common]

    fmt = {
        "nats": "nats://127.0.0.1:{port}",
        "zmq": "tcp://127.0.0.1:{port}",
        "zenoh": "tcp/127.0.0.1:{port}",
        "zenoh-tcp": "tcp/127.0.0.1:{port}",
    }
    return e2e.run_scenario(system, router, worker, fmt[system], args)


def run_system(system: str, args, size: int) -> dict:
    """One run of `system` at one message size (100 B: stream + round trips; 64 KiB: stream)."""
    a = copy.copy(args)
    a.size = size
    a.reliable = system == "ours-reliable"
    a.batch = args.ours_batch if system in ("ours", "ours-reliable") else 1
    if size == BIG:
        a.messages, a.round_trips = args.big_messages, 10
    if system.startswith("ours"):
        return e2e.run_impl("ours", args.ours_python, a)
    return run_peer(system, args.peers_python, a)


def median_of(runs: list[dict]) -> dict:
    out = dict(runs[-1])
    for key, value in runs[-1].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            vals = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
            out[key] = statistics.median(vals)
    out["runs"] = len(runs)
    return out


def print_tables(small: dict, big: dict, args) -> None:
    systems = [s for s in SYSTEMS if s in small or s in big]
    col = 15

    def row(label: str, table: dict, fn, fmt: str) -> None:
        cells = []
        for s in systems:
            r = table.get(s)
            v = fn(r) if r else None
            cells.append(f"{fmt.format(v) if v is not None else '-':>{col}}")
        print(f"{label:34}" + "".join(cells))

    print()
    print(
        f"peers: {args.messages:,} x 100 B one-way, {args.round_trips:,} request/reply, "
        f"{args.big_messages:,} x 64 KiB one-way; each router and client its own process; "
        f"medians of {args.repeat} run(s)"
    )
    how = (
        f"publish_many, {args.ours_batch} per call" if args.ours_batch > 1 else "one publish call per message"
    )
    print(
        f"ours and ours-reliable stream with {how}; ours-per-call and every peer with one publish call per "
        "message (the peers' clients buffer)"
    )
    print(f"{'':34}" + "".join(f"{s:>{col}}" for s in systems))
    row("100 B delivered msgs/s", small, lambda r: r["recv_rate"], "{:,.0f}")
    row("  sent msgs/s (publisher)", small, lambda r: r["send_rate"], "{:,.0f}")
    row("  lost (sent - delivered)", small, lambda r: r["sent"] - r["received"], "{:,.0f}")
    row("  CPU us/msg, all processes", small, lambda r: r["cpu_us_per_msg"], "{:.2f}")
    row("request/reply p50 ms", small, lambda r: r["p50_ms"], "{:.3f}")
    row("request/reply p99 ms", small, lambda r: r["p99_ms"], "{:.3f}")
    row("64 KiB delivered MB/s", big, lambda r: r["recv_mb_s"], "{:,.0f}")
    row("  lost (sent - delivered)", big, lambda r: r["sent"] - r["received"], "{:,.0f}")
    row("  CPU us/msg, all processes", big, lambda r: r["cpu_us_per_msg"], "{:.1f}")
    for name, table in (("100 B", small), ("64 KiB", big)):
        for s in systems:
            if s in table:
                cpu = table[s].get("stream_cpu", {})
                parts = ", ".join(f"{k} {1e6 * v / max(1, table[s]['received']):.2f}" for k, v in cpu.items())
                print(f"  {name} {s}: CPU us/msg by process: {parts}; router = {table[s].get('node')}")

    ours = small.get("ours")
    peers = [s for s in systems if not s.startswith("ours")]
    print()
    print("ours (default session) vs each peer, same run: > 1.00 = ours ahead (latency and CPU as peer/ours)")
    print(f"{'':34}" + "".join(f"{s:>{col}}" for s in peers))

    def ratio_row(label: str, table: dict, key: str, higher_better: bool) -> None:
        mine = table.get("ours")
        cells = []
        for s in peers:
            r = table.get(s)
            if not mine or not r or not r.get(key) or not mine.get(key):
                cells.append(f"{'-':>{col}}")
                continue
            v = mine[key] / r[key] if higher_better else r[key] / mine[key]
            cells.append(f"{v:>{col - 1}.2f}x")
        print(f"{label:34}" + "".join(cells))

    ratio_row("100 B delivered msgs/s", small, "recv_rate", True)
    ratio_row("100 B CPU us/msg", small, "cpu_us_per_msg", False)
    ratio_row("request/reply p50", small, "p50_ms", False)
    ratio_row("64 KiB delivered MB/s", big, "recv_mb_s", True)

    if ours:
        print()
        print("targets (issue 12)")
        checks = []
        if "nats" in small:
            checks.append(
                ("100 B >= 1.5x NATS delivered", ours["recv_rate"] / small["nats"]["recv_rate"], 1.5)
            )
        if "zenoh" in small:
            checks.append(
                ("100 B >= 0.7x Zenoh delivered", ours["recv_rate"] / small["zenoh"]["recv_rate"], 0.7)
            )
        if "ours-reliable" in small:
            checks.append(
                ("reliable >= 0.8x default", small["ours-reliable"]["recv_rate"] / ours["recv_rate"], 0.8)
            )
        for label, v, bound in checks:
            print(f"  {label:40}{v:>8.2f}x  {'met' if v >= bound else 'NOT met'}")
        lost = ours["sent"] - ours["received"]
        print(f"  {'ours 100 B lost == 0':40}{lost:>8,}   {'met' if lost == 0 else 'NOT met'}")
        p50 = ours["p50_ms"]
        print(f"  {'request/reply p50 <= 0.25 ms':40}{p50:>8.3f}   {'met' if p50 <= 0.25 else 'NOT met'}")
        if "ours" in big:
            mb = big["ours"]["recv_mb_s"]
            print(f"  {'64 KiB >= 1,500 MB/s':40}{mb:>8,.0f}   {'met' if mb >= 1500 else 'NOT met'}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--systems", default=",".join(SYSTEMS), help="comma-separated subset of " + ", ".join(SYSTEMS)
    )
    p.add_argument("--messages", type=int, default=200_000, help="100-byte stream length")
    p.add_argument("--big-messages", type=int, default=20_000, help="64 KiB stream length")
    p.add_argument("--round-trips", type=int, default=2_000)
    p.add_argument("--seconds", type=float, default=15.0, help="bound on each stream's sending time")
    p.add_argument("--rtt-seconds", type=float, default=60.0)
    p.add_argument("--idle", type=float, default=1.0, help="silence that ends a stream (lossy peers)")
    p.add_argument("--deadline", type=float, default=300.0)
    p.add_argument("--repeat", type=int, default=1, help="runs per system (alternating); medians shown")
    p.add_argument("--ours-python", default=sys.executable, help="python that imports our package")
    p.add_argument("--peers-python", default=sys.executable, help="python with nats-py, pyzmq, eclipse-zenoh")
    p.add_argument(
        "--ours-batch",
        type=int,
        default=64,
        help="ours, ours-reliable: stream with publish_many, this many messages per call (1 = publish)",
    )
    p.add_argument("--json", help="also write every run's figures to this file")
    # Worker side.
    p.add_argument("--worker", choices=["requester", "responder", "router"], help=argparse.SUPPRESS)
    p.add_argument("--peer", choices=list(PEER_APPS), help=argparse.SUPPRESS)
    p.add_argument("--endpoint", help=argparse.SUPPRESS)
    p.add_argument("--listen", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=100, help=argparse.SUPPRESS)
    p.add_argument("--reliable", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker_main(args)

    # What e2e's run_impl / run_scenario read from args.
    args.node, args.ours_node, args.slim_bin, args.identity = "own", "package", None, "shared"
    args.otel_mode = None
    wanted = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SYSTEMS]
    if unknown:
        p.error(f"unknown systems: {unknown}")
    available = []
    for s in wanted:
        why = (
            e2e.ours_available(args.ours_python)
            if s.startswith("ours")
            else peer_available(s, args.peers_python)
        )
        if why:
            print(f"skipping {s}: {why}", file=sys.stderr)
        else:
            available.append(s)
    runs: dict = {100: {}, BIG: {}}
    failed = False
    for r in range(args.repeat):
        for s in available:
            for size in (100, BIG):
                print(
                    f"running {s}, {size}-byte messages ({r + 1}/{args.repeat}) ...",
                    file=sys.stderr,
                    flush=True,
                )
                try:
                    runs[size].setdefault(s, []).append(run_system(s, args, size))
                except Exception as e:  # noqa: BLE001 - reported, then the run goes on
                    print(f"{s} ({size} B) failed: {e}", file=sys.stderr)
                    failed = True
    small = {s: median_of(v) for s, v in runs[100].items()}
    big = {s: median_of(v) for s, v in runs[BIG].items()}
    print_tables(small, big, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"100": runs[100], "65536": runs[BIG]}, indent=2))
    return 1 if failed or not small else 0


if __name__ == "__main__":
    sys.exit(main())
