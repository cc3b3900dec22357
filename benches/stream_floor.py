#!/usr/bin/env python3
"""The floor under the 64 KiB stream on this machine: bytes through plain TCP, no protocol (issue 12).

    sender ── relay ── receiver          (--relays 0: sender ── receiver)

Each is its own process on 127.0.0.1 (TCP_NODELAY). The sender writes --size-byte messages back to back
for --seconds; the relay reads up to --relay-read-size bytes per call (default --read-size) and writes
what it read on in writes of up to --write-size bytes; the receiver reads up to --read-size bytes per
call and counts them. With --receiver bytes, the receiver hands over
each message as a `bytes` object of its own, as a Python app receiving messages must (one copy per
message out of its read buffer). Printed: MB/s at the receiver and the user + system CPU µs per message
of each process (from `os.times()` in each), medians of --repeat runs.

What it is for: a SLIM node forwards the same bytes between two loopback TCP connections, so this is
what any router that sends the payload through its sockets (ours, NATS, ZeroMQ, Zenoh without shared
memory) can reach here at best, to hold beside `benches/peers.py`'s 64 KiB row (benches/README.md).

Usage: python3 benches/stream_floor.py [--size 65536] [--seconds 4] [--repeat 3] [--relays 0|1]
       [--read-size 1048576] [--relay-read-size N] [--write-size 1048576] [--receiver count|bytes]

What it showed (benches/README.md, "The 64 KiB floor"): the relay's read size decides (reads of one
message each cost it ~2x the CPU of reads that drain the socket), writes of one message each cost a
little, and the receiver's read size nothing measurable.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

WAIT = 30.0  # bound on any single wait (accept, connect, a child's report)


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def listen() -> socket.socket:
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    ls.settimeout(WAIT)
    return ls


def accept(ls: socket.socket) -> socket.socket:
    conn, _ = ls.accept()
    conn.settimeout(WAIT)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def dial(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def say(**fields) -> None:
    print(json.dumps(fields), flush=True)


def receiver(args) -> None:
    ls = listen()
    say(port=ls.getsockname()[1])
    conn = accept(ls)
    buf = bytearray(max(args.read_size, args.size))
    view = memoryview(buf)
    total = 0
    held = 0  # bytes received of the message not yet complete (--receiver bytes)
    first = last = None
    cpu0 = cpu_seconds()
    while True:
        n = conn.recv_into(buf)
        if args.receiver == "bytes":
            # Every message completed by this read becomes a `bytes` of its own (a copy of
            # --size bytes out of the buffer, as an app's receive makes).
            held += n
            while held >= args.size:
                held -= args.size
                start = max(0, n - held - args.size)
                _ = bytes(view[start : start + args.size])
        if n == 0:
            break
        now = time.perf_counter()
        first = first if first is not None else now
        last = now
        total += n
    seconds = (last - first) if first is not None and last is not None else 0.0
    say(received=total, seconds=seconds, cpu=cpu_seconds() - cpu0)


def relay(args) -> None:
    ls = listen()
    say(port=ls.getsockname()[1])
    inbound = accept(ls)
    outbound = dial(args.upstream)
    buf = bytearray(args.relay_read_size or args.read_size)
    view = memoryview(buf)
    cpu0 = cpu_seconds()
    while True:
        n = inbound.recv_into(buf)
        if n == 0:
            break
        for at in range(0, n, args.write_size):
            outbound.sendall(view[at : min(n, at + args.write_size)])
    outbound.close()
    say(cpu=cpu_seconds() - cpu0)


class Child:
    def __init__(self, role: str, argv_tail: list[str]):
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--child", role, *argv_tail], stdout=subprocess.PIPE, text=True
        )

    def report(self) -> dict:
        # A child says one JSON line per event; readline is bounded by the child's own socket timeouts.
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            raise RuntimeError(f"child {self.proc.args} ended without a report")
        return json.loads(line)

    def close(self) -> None:
        try:
            self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=WAIT)


def one_run(args) -> dict:
    common = [
        *("--size", str(args.size), "--read-size", str(args.read_size)),
        *("--write-size", str(args.write_size), "--receiver", args.receiver),
        *("--relay-read-size", str(args.relay_read_size)),
    ]
    recv = Child("receiver", common)
    relays: list[Child] = []
    try:
        port = recv.report()["port"]
        if args.relays:
            relays.append(Child("relay", [*common, "--upstream", str(port)]))
            port = relays[0].report()["port"]
        s = dial(port)
        msg = b"x" * args.size
        sent = 0
        cpu0 = cpu_seconds()
        end = time.perf_counter() + args.seconds
        while time.perf_counter() < end and sent < args.max_messages:
            s.sendall(msg)
            sent += 1
        sender_cpu = cpu_seconds() - cpu0
        s.close()
        relay_cpu = relays[0].report()["cpu"] if relays else 0.0
        r = recv.report()
    finally:
        for c in (*relays, recv):
            c.close()
    messages = r["received"] / args.size
    out = {
        "MB/s": r["received"] / max(r["seconds"], 1e-9) / 1e6,
        "sender": 1e6 * sender_cpu / max(sent, 1),
        "relay": 1e6 * relay_cpu / max(messages, 1),
        "receiver": 1e6 * r["cpu"] / max(messages, 1),
    }
    out["all"] = out["sender"] + out["relay"] + out["receiver"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=65536)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--max-messages", type=int, default=2_000_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--relays", type=int, choices=(0, 1), default=1)
    p.add_argument("--read-size", type=int, default=1 << 20)
    p.add_argument("--relay-read-size", type=int, default=0, help="default: --read-size")
    p.add_argument("--write-size", type=int, default=1 << 20)
    p.add_argument("--receiver", choices=("count", "bytes"), default="count")
    p.add_argument("--child", choices=("receiver", "relay"))
    p.add_argument("--upstream", type=int)
    args = p.parse_args()
    args.seconds = min(max(args.seconds, 0.5), 60.0)
    args.repeat = min(max(args.repeat, 1), 20)
    if args.child == "receiver":
        return receiver(args)
    if args.child == "relay":
        return relay(args)
    runs = [one_run(args) for _ in range(args.repeat)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    path = "sender - relay - receiver" if args.relays else "sender - receiver"
    relay_reads = f"relay reads {args.relay_read_size or args.read_size:,} B, writes {args.write_size:,} B, "
    print(
        f"stream floor: {path}, {args.size:,} B messages, {relay_reads if args.relays else ''}"
        f"receiver reads {args.read_size:,} B ({args.receiver}), medians of {len(runs)}"
    )
    print(
        f"  {med['MB/s']:,.0f} MB/s; CPU µs/msg: sender {med['sender']:.1f}, relay {med['relay']:.1f}, "
        f"receiver {med['receiver']:.1f}, all {med['all']:.1f}"
    )


if __name__ == "__main__":
    main()
