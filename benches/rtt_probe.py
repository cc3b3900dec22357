#!/usr/bin/env python3
"""Round-trip probe: where a request/reply waits, by session kind, in one run (issue 12, item 4).

One node (our package's run_server), one responder and one requester, each in its own process, on
127.0.0.1. The requester opens one session of each kind to the responder and runs round trips in
blocks, alternating the kinds block by block so every kind sees the same machine load. For each kind
it prints the p50/p90 round trip and, per process, CPU microseconds and context switches (voluntary,
all threads, from /proc) per round trip: the last two do not depend on the machine's load, and a
round trip that waits on a timer or an extra thread hop shows there.

Kinds: anycast (the default session), anycast-reliable, unicast (sticky, unreliable), unicast-reliable.

Usage:  python benches/rtt_probe.py [--python .venv/bin/python] [--blocks 10] [--per-block 200]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import inspect
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import e2e

KINDS = ["anycast", "anycast-reliable", "unicast", "unicast-reliable"]
RESPONDER = "agntcy/probe/responder"
REQUESTER = "agntcy/probe/requester"
SECRET = e2e.SECRET


def switches(pid: int) -> int:
    """Voluntary context switches of every thread of `pid` so far."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches:"):
                            total += int(line.split()[1])
            except OSError:
                pass
    except OSError:
        pass
    return total


def thread_cpu(pid: int) -> dict:
    """CPU seconds so far of each thread of `pid`, summed by thread name."""
    out: dict = {}
    tick = os.sysconf("SC_CLK_TCK")
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        out[comm] = out.get(comm, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def name(text: str):
    import slim_bindings

    return slim_bindings.PyName(*text.split("/"))


async def make_app(local: str, endpoint: str | None):
    import slim_bindings

    provider = slim_bindings.PyIdentityProvider.SharedSecret(identity=local, shared_secret=SECRET)
    verifier = slim_bindings.PyIdentityVerifier.SharedSecret(identity=local, shared_secret=SECRET)
    app = await slim_bindings.Slim.new(name(local), provider, verifier)
    if endpoint:
        await app.connect({"endpoint": endpoint, "tls": {"insecure": True}})
    return app


async def worker_node(args) -> None:
    app = await make_app("agntcy/probe/node", None)
    await app.run_server({"endpoint": args.listen, "tls": {"insecure": True}})
    e2e.emit("ready")
    await e2e.read_command(args.deadline)


async def worker_responder(args) -> None:
    app = await make_app(RESPONDER, args.endpoint)
    e2e.emit("ready")

    async def serve(session) -> None:
        while True:
            batch = await app.receive_many(session.id)
            for ctx, blob in batch:
                if blob[:1] == b"Q":
                    return
                await app.publish_to(ctx, blob)

    tasks = []
    for _ in KINDS:
        info, _first = await asyncio.wait_for(app.receive(), args.deadline)
        tasks.append(asyncio.ensure_future(serve(info)))
    e2e.emit("sessions")
    await asyncio.wait_for(asyncio.gather(*tasks), args.deadline)
    e2e.emit("done")


async def worker_requester(args) -> None:
    import slim_bindings

    app = await make_app(REQUESTER, args.endpoint)
    peer = name(RESPONDER)
    await app.set_route(peer)
    reliable: dict[str, Any] = {"timeout": datetime.timedelta(seconds=1), "max_retries": 5}
    configs = {
        "anycast": slim_bindings.PySessionConfiguration.Anycast(),
        "anycast-reliable": slim_bindings.PySessionConfiguration.Anycast(**reliable),
        "unicast": slim_bindings.PySessionConfiguration.Unicast(),
        "unicast-reliable": slim_bindings.PySessionConfiguration.Unicast(**reliable),
    }
    sessions = {k: await app.create_session(configs[k]) for k in KINDS}
    payload = b"P" + b"x" * 99

    # Builds whose receive takes `timeout=` bound the wait on the runtime's timer; older ones need
    # asyncio.wait_for (a task and a loop timer per round trip).
    timed = "timeout" in inspect.signature(app.receive).parameters

    async def round_trip(session) -> float:
        t0 = time.perf_counter()
        await app.publish(session, payload, peer)
        if timed:
            await app.receive(session=session.id, timeout=5)
        else:
            await asyncio.wait_for(app.receive(session=session.id), 5)
        return time.perf_counter() - t0

    for k in KINDS:  # warm-up: sessions exist at both ends
        for _ in range(20):
            await round_trip(sessions[k])
    e2e.emit("warm")
    while True:
        line = await e2e.read_command(args.deadline)
        if not line.startswith("block "):
            break
        kind = line.split()[1]
        samples = [await round_trip(sessions[kind]) for _ in range(args.per_block)]
        e2e.emit("block", kind=kind, samples=samples)
    for k in KINDS:
        await app.publish(sessions[k], b"Q", peer)


def coordinator(args) -> int:
    me = str(Path(__file__).resolve())
    port = e2e.free_port()
    endpoint = f"http://127.0.0.1:{port}"
    common = ["--deadline", str(args.deadline), "--per-block", str(args.per_block)]
    children = []
    try:
        node = e2e.Child(
            "node", [args.python, me, "--worker", "node", "--listen", f"127.0.0.1:{port}", *common]
        )
        children.append(node)
        e2e.wait_listening(port, 30, node.proc)
        responder = e2e.Child(
            "responder", [args.python, me, "--worker", "responder", "--endpoint", endpoint, *common]
        )
        children.append(responder)
        responder.wait("ready", 30)
        requester = e2e.Child(
            "requester", [args.python, me, "--worker", "requester", "--endpoint", endpoint, *common]
        )
        children.append(requester)
        requester.wait("warm", 60)
        samples = {k: [] for k in KINDS}
        cpu = {k: {c.name: 0.0 for c in children} for k in KINDS}
        ctx = {k: {c.name: 0 for c in children} for k in KINDS}
        threads = {k: {} for k in KINDS}
        for b in range(args.blocks):
            for kind in args.kinds.split(","):
                before = {c.name: (e2e.cpu_seconds(c.proc.pid), switches(c.proc.pid)) for c in children}
                tbefore = {c.name: thread_cpu(c.proc.pid) for c in children}
                requester.events.clear()
                requester.tell(f"block {kind}")
                ev = requester.wait("block", 120)
                for c in children:
                    cpu[kind][c.name] += e2e.cpu_seconds(c.proc.pid) - before[c.name][0]
                    ctx[kind][c.name] += switches(c.proc.pid) - before[c.name][1]
                    for t, v in thread_cpu(c.proc.pid).items():
                        key = f"{c.name}/{t}"
                        threads[kind][key] = threads[kind].get(key, 0.0) + v - tbefore[c.name].get(t, 0.0)
                samples[kind] += ev["samples"]
        requester.tell("quit")
    finally:
        for c in reversed(children):
            c.stop()
    n = args.blocks * args.per_block
    print(
        f"round trips: {n} per kind, {args.blocks} blocks of {args.per_block}, kinds interleaved; "
        f"100-byte payload; load {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'kind':18}{'p50 ms':>9}{'p90 ms':>9}{'mean ms':>9}   CPU us/rt node resp req (all)   "
        f"ctx sw/rt node resp req"
    )
    for k in args.kinds.split(","):
        s = sorted(samples[k])
        p50, p90 = e2e.percentile(s, 0.5) * 1e3, e2e.percentile(s, 0.9) * 1e3
        c = [1e6 * cpu[k][p] / n for p in ("node", "responder", "requester")]
        w = [ctx[k][p] / n for p in ("node", "responder", "requester")]
        print(
            f"{k:18}{p50:9.3f}{p90:9.3f}{statistics.fmean(s) * 1e3:9.3f}   "
            f"{c[0]:6.0f}{c[1]:6.0f}{c[2]:6.0f} ({sum(c):4.0f})      {w[0]:5.1f}{w[1]:5.1f}{w[2]:5.1f}"
        )
    print("CPU us per round trip by thread (process/thread name):")
    for k in args.kinds.split(","):
        shown = sorted(threads[k].items(), key=lambda kv: -kv[1])
        print(f"  {k:18}" + ", ".join(f"{t} {1e6 * v / n:.0f}" for t, v in shown if v > 0))
    if args.json:
        print(
            json.dumps(
                {
                    k: {"samples_ms": [x * 1e3 for x in samples[k]], "cpu": cpu[k], "ctx": ctx[k]}
                    for k in KINDS
                }
            )
        )
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", choices=["node", "responder", "requester"])
    p.add_argument("--python", default=str(Path(__file__).resolve().parents[1] / ".venv/bin/python"))
    p.add_argument("--listen")
    p.add_argument("--endpoint")
    p.add_argument("--blocks", type=int, default=10)
    p.add_argument("--per-block", type=int, default=200)
    p.add_argument("--deadline", type=float, default=600)
    p.add_argument("--json", action="store_true")
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated subset of the kinds measured")
    args = p.parse_args()
    if args.worker:
        role = {"node": worker_node, "responder": worker_responder, "requester": worker_requester}[
            args.worker
        ]
        try:
            asyncio.run(role(args))
        except Exception as e:  # noqa: BLE001 - reported as an event: the coordinator reads stdout
            e2e.emit("error", error=f"{type(e).__name__}: {e}")
            return 1
        return 0
    return coordinator(args)


if __name__ == "__main__":
    sys.exit(main())
