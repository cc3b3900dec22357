#!/usr/bin/env python3
"""Group (multicast) Python benchmark: one node, a moderator and its members on 127.0.0.1, ours beside
slim-bindings 0.6.0 in the same run.

Per implementation and configuration, fresh processes: a node, a moderator app, member apps.
  fan-out   4 members, each in its own process, MLS off and MLS on. The moderator invites them, then
            publishes --messages messages of --size bytes as fast as it can (at most --seconds); each
            member reports msgs/s between its first and last data message, and how many it got. Also
            the CPU time (user+system, all threads, from /proc) each process spent per message sent
            during the stream: unlike msgs/s it hardly depends on how busy the machine is.
  ready     time from the first invite to every member ready, for 4 members (the fan-out runs) and for
            --big members (default 32; several member apps share a process: --per-process, default 8).
            A member is ready when its first group message arrives (it can receive and, with MLS,
            decrypt): once the invites are done, the moderator publishes a small probe every
            --probe-interval seconds until every member has reported one. "Invites done" is each
            implementation's own signal: ours, every `invite(..., wait=True)` returned (join done, MLS
            welcome applied; also reported on its own); 0.6.0, whose `invite` resolves when the request is
            queued and which gives the moderator no join signal, every member's `listen_for_session`
            returned (seen by the coordinator through the members' output). 0.6.0 must wait for that:
            with MLS its group stalls when application messages are published while invites are in flight
            (observed here: 8 members, probes from the first invite, only 2 ever joined).

Session settings, the same for both: moderator session with max_retries=--retries (default 5) and
timeout=--timeout (default 1 s) for retransmissions; 0.6.0 `PySessionConfiguration.Group(channel_name,
max_retries, timeout, mls_enabled)`, ours `PySessionConfiguration.Multicast(topic, moderator=True,
max_retries, timeout, mls_enabled)`. Invites: 0.6.0 awaits `session.invite(name)` one after another (it
resolves once the request is queued); ours starts all `invite(session, name, wait=True)` at once (the
session runs them one at a time). Members of 0.6.0 use `Slim.new(..., local_service=True)` so that apps
sharing a process do not share a node; ours always gives each app its own node.

Usage:  python3 benches/group.py [--impl both] [--messages 100000] [--seconds 8] [--big 32] [--json out.json]
0.6.0 comes from its own venv (scripts/setup_venv_060.sh); ours from --ours-python (default: this python),
built with `task python:build PROFILE=release`. The node of each
implementation is that implementation's package serving (`run_server`), or our `slim` binary with --slim-bin.
The same file is the worker program (`--worker node|moderator|members`). Every wait is bounded; every
process started is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e import (
    BenchApp,
    Child,
    cpu_seconds,
    emit,
    free_port,
    ours_available,
    python_060,
    read_command,
    rss_kib,
    split_name,
    wait_listening,
)
from e2e import worker_node as serve_as_node

MODERATOR = "agntcy/groupbench/moderator"
KIND_DATA, KIND_PROBE = b"D", b"P"


# ---------------------------------------------------------------------------------------------------------
# Worker side: runs inside the implementation's own python.
# ---------------------------------------------------------------------------------------------------------


def now() -> float:
    """CLOCK_MONOTONIC: comparable between processes of this host."""
    return time.monotonic()


class Group060(BenchApp):
    """slim-bindings 0.6.0: Group sessions driven through PySession."""

    NEW_KWARGS: ClassVar[dict] = {"local_service": True}

    async def create_group(self, channel: str, args):
        self.channel = split_name(channel)
        cfg = self.sb.PySessionConfiguration.Group(
            channel_name=self.channel,
            max_retries=args.retries,
            timeout=datetime.timedelta(seconds=args.timeout),
            mls_enabled=args.mls,
        )
        self.session = await self.app.create_session(cfg)

    async def set_route(self, name: str):
        await self.app.set_route(split_name(name))

    async def invite_all(self, names: list[str], timeout: float) -> None:
        for n in names:
            await asyncio.wait_for(self.session.invite(split_name(n)), timeout)

    async def send(self, blob: bytes):
        await self.session.publish(blob)

    async def accept(self, timeout: float):
        self.session = await self.app.listen_for_session(datetime.timedelta(seconds=timeout))

    async def recv_batch(self):
        return [(await self.session.get_message())[1]]


class GroupOurs(BenchApp):
    """Our package: Multicast sessions, invite(..., wait=True), receive_many."""

    async def create_group(self, channel: str, args):
        self.channel = split_name(channel)
        cfg = self.sb.PySessionConfiguration.Multicast(
            self.channel,
            moderator=True,
            max_retries=args.retries,
            timeout=datetime.timedelta(seconds=args.timeout),
            mls_enabled=args.mls,
        )
        self.session = await self.app.create_session(cfg)

    async def set_route(self, name: str):
        await self.app.set_route(split_name(name))

    async def invite_all(self, names: list[str], timeout: float) -> None:
        invites = [self.app.invite(self.session, split_name(n), wait=True) for n in names]
        await asyncio.wait_for(asyncio.gather(*invites), timeout)

    async def send(self, blob: bytes):
        await self.app.publish(self.session, blob, self.channel)

    async def accept(self, timeout: float):
        # The new-session notification's payload is also the first item of the session's queue.
        info, _first = await asyncio.wait_for(self.app.receive(), timeout)
        self.session = info.id

    async def recv_batch(self):
        return [blob for _info, blob in await self.app.receive_many(self.session)]


def make_app(impl: str):
    return Group060() if impl == "060" else GroupOurs()


async def worker_node(args) -> None:
    await serve_as_node(make_app(args.impl), args, "agntcy/groupbench/node")


async def worker_moderator(args) -> None:
    app = make_app(args.impl)
    await app.start(MODERATOR, args.endpoint)
    await app.create_group(args.channel, args)
    members = args.members.split(",")
    for m in members:
        await app.set_route(m)
    emit("ready")
    if await read_command(args.deadline) != "invite":
        return
    t0 = now()
    emit("inviting", t=t0)
    try:
        await app.invite_all(members, args.ready_timeout)
        emit("invited", t=now(), seconds=now() - t0)
    except asyncio.TimeoutError:
        emit("invite-timeout", seconds=now() - t0)

    # On "probe": a probe every --probe-interval until the coordinator has seen every member ready
    # (or gives up) and says "stream" or "done".
    if await read_command(args.ready_timeout + 30) != "probe":
        return
    emit("probing", t=now())
    stop = asyncio.get_running_loop().create_future()

    async def wait_command():
        try:
            stop.set_result(await read_command(args.deadline))
        except asyncio.TimeoutError:
            stop.set_result("")

    reader = asyncio.create_task(wait_command())
    probes = 0
    probe_end = now() + args.ready_timeout
    while not stop.done() and now() < probe_end:
        await app.send(KIND_PROBE)
        probes += 1
        try:
            await asyncio.wait_for(asyncio.shield(stop), args.probe_interval)
        except asyncio.TimeoutError:
            pass
    command = await asyncio.wait_for(stop, args.deadline)
    await reader
    emit("probed", probes=probes)
    if command != "stream":
        return
    data = KIND_DATA + b"x" * max(0, args.size - 1)
    sent = 0
    t0 = now()
    stop_at = t0 + args.seconds
    while sent < args.messages and now() < stop_at:
        await app.send(data)
        sent += 1
    elapsed = now() - t0
    emit("sent", sent=sent, seconds=elapsed, rate=sent / elapsed if elapsed > 0 else 0.0)
    await read_command(args.deadline)  # "quit" or EOF: stay alive so retransmissions can still be served


async def run_member(impl: str, name: str, args) -> None:
    app = make_app(impl)
    await app.start(name, args.endpoint)
    emit("member-up", name=name)
    await app.accept(args.ready_timeout + 30)
    emit("member-session", name=name, t=now())
    count = count_at_first = errors = 0
    first = last = None
    ready_sent = False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.deadline
    while loop.time() < deadline:
        wait = args.idle if count else max(0.1, deadline - loop.time())
        try:
            batch = await asyncio.wait_for(app.recv_batch(), wait)
        except asyncio.TimeoutError:
            if count:
                break
            continue
        except Exception as e:  # noqa: BLE001 - e.g. a lost message reported by the session: counted, the stream goes on
            errors += 1
            if errors == 1 or errors > 1000:
                emit("receive-error", name=name, error=f"{type(e).__name__}: {e}")
            if errors > 1000:
                break
            continue
        t = now()
        if not ready_sent:
            emit("member-ready", name=name, t=t)
            ready_sent = True
        for blob in batch:
            if bytes(blob[:1]) == KIND_DATA:
                count += 1
        if count:
            if first is None:
                # The first data batch's arrival starts the clock; its messages are not timed.
                first, count_at_first = t, count
            last = t
        if count >= args.messages:
            break
    timed = count - count_at_first
    elapsed = (last - first) if first is not None and last > first else 0.0
    rate = timed / elapsed if elapsed else 0.0
    emit("throughput", name=name, received=count, seconds=elapsed, rate=rate, errors=errors)


async def worker_members(args) -> None:
    names = args.members.split(",")
    tasks = [asyncio.create_task(run_member(args.impl, n, args)) for n in names]
    emit("ready")
    stopper = asyncio.create_task(read_command(args.deadline))
    pending = {*tasks, stopper}
    try:
        # Members that reported stay alive until told (retransmissions, clean goodbye).
        while not stopper.done():
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stopper and t.exception() is not None:
                    raise t.exception()
    finally:
        for t in tasks:
            t.cancel()


def worker_main(args) -> int:
    role = {"node": worker_node, "moderator": worker_moderator, "members": worker_members}[args.worker]

    async def run():
        try:
            await asyncio.wait_for(role(args), args.deadline + 10)
        except Exception as e:  # noqa: BLE001 - reported as an event: the coordinator reads stdout
            emit("error", error=f"{type(e).__name__}: {e}")
            return 1
        return 0

    code = asyncio.run(run())
    sys.stdout.flush()
    # The 0.6.0 wheel may abort while the interpreter tears down its runtime; the figures are already out.
    os._exit(code)


# ---------------------------------------------------------------------------------------------------------
# Coordinator side.
# ---------------------------------------------------------------------------------------------------------


def events_named(child: Child, event: str) -> list[dict]:
    with child.cond:
        return [e for e in child.events if e["event"] == event]


def wait_all(children: list[Child], event: str, total: int, timeout: float) -> list[dict]:
    """Waits until `total` `event`s arrived over `children` (errors raise); returns those seen by then."""
    deadline = time.monotonic() + timeout
    while True:
        got = []
        for c in children:
            with c.cond:
                for ev in c.events:
                    if ev["event"] == "error":
                        raise RuntimeError(f"{c.name}: {ev['error']}\n{c.tail()}")
                got += [e for e in c.events if e["event"] == event]
        if len(got) >= total or time.monotonic() >= deadline:
            return got
        if all(c.ended for c in children):
            return got
        # Wake on any child's event (short, bounded nap on the first child's condition).
        with children[0].cond:
            children[0].cond.wait(min(0.02, max(0.0, deadline - time.monotonic())))


def start_node(impl: str, python: str, port: int, args) -> Child:
    me = str(Path(__file__).resolve())
    listen = f"127.0.0.1:{port}"
    if impl == "ours" and args.slim_bin:
        fd, cfg_path = tempfile.mkstemp(prefix="slim-groupbench-", suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            f.write(
                "tracing:\n  log_level: warn\nservices:\n  slim/0:\n    dataplane:\n      servers:\n"
                f'        - endpoint: "{listen}"\n          tls:\n            insecure: true\n'
            )
        node = Child("node", ["nice", "-n", str(args.nice), args.slim_bin, "--config", cfg_path])
        node.cleanup.append(Path(cfg_path))
        node.desc = f"our binary {args.slim_bin}"
        return node
    node = Child(
        "node",
        [
            "nice",
            "-n",
            str(args.nice),
            python,
            me,
            "--worker",
            "node",
            "--impl",
            impl,
            "--listen",
            listen,
            "--deadline",
            str(args.deadline),
        ],
    )
    node.desc = f"{impl} package run_server"
    return node


def run_config(
    impl: str, python: str, n_members: int, per_process: int, mls: bool, stream: bool, args
) -> dict:
    """One group: node, moderator, members; ready time and (when `stream`) fan-out figures."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    tag = f"{impl}-{n_members}-{'mls' if mls else 'plain'}"
    names = [f"agntcy/groupbench/member-{i}" for i in range(n_members)]
    common = [
        "--impl",
        impl,
        "--endpoint",
        endpoint,
        "--size",
        str(args.size),
        "--messages",
        str(args.messages if stream else 0),
        "--seconds",
        str(args.seconds),
        "--idle",
        str(args.idle),
        "--deadline",
        str(args.deadline),
        "--ready-timeout",
        str(args.ready_timeout),
        "--retries",
        str(args.retries),
        "--timeout",
        str(args.timeout),
        "--probe-interval",
        str(args.probe_interval),
        "--channel",
        f"agntcy/groupbench/chan-{tag}",
    ]
    if mls:
        common.append("--with-mls")
    me = str(Path(__file__).resolve())
    worker = ["nice", "-n", str(args.nice), python, me]
    children: list[Child] = []
    result: dict = {"impl": impl, "members": n_members, "mls": mls, "per_process": per_process}
    try:
        node = start_node(impl, python, port, args)
        result["node"] = node.desc
        children.append(node)
        wait_listening(port, 30, node.proc)

        groups = [names[i : i + per_process] for i in range(0, n_members, per_process)]
        member_procs = []
        for gi, group in enumerate(groups):
            argv = [*worker, "--worker", "members", "--members", ",".join(group), *common]
            c = Child(f"members-{gi}", argv)
            member_procs.append(c)
            children.append(c)
        up = wait_all(member_procs, "member-up", n_members, 60)
        if len(up) < n_members:
            raise RuntimeError(f"{tag}: only {len(up)} of {n_members} member apps came up")
        argv = [*worker, "--worker", "moderator", "--members", ",".join(names), *common]
        moderator = Child("moderator", argv)
        children.append(moderator)
        moderator.wait("ready", 60)

        cpu_invite = {c.name: cpu_seconds(c.proc.pid) for c in children}
        moderator.tell("invite")
        t0 = moderator.wait("inviting", 10)["t"]
        if impl == "060":
            # 0.6.0 has no join signal at the moderator, and its MLS groups stall when application
            # messages are published while invites are still in flight: probe once every member's
            # listen_for_session has returned.
            joined = wait_all(member_procs + [moderator], "member-session", n_members, args.ready_timeout)
            result["sessions_s"] = max(e["t"] for e in joined) - t0 if len(joined) == n_members else None
        else:
            result["sessions_s"] = None
        moderator.tell("probe")
        ready = wait_all(member_procs + [moderator], "member-ready", n_members, args.ready_timeout)
        times = sorted(e["t"] - t0 for e in ready)
        # CPU of every process of the run from the invites to all ready (includes the probes).
        result["ready_cpu_s"] = sum(cpu_seconds(c.proc.pid) - cpu_invite[c.name] for c in children)
        result["ready_count"] = len(times)
        result["ready_all_s"] = times[-1] if len(times) == n_members else None
        result["ready_median_s"] = times[len(times) // 2] if times else None
        inv = events_named(moderator, "invited")
        if not inv:
            try:
                inv = [moderator.wait("invited", 5)]
            except RuntimeError:
                inv = []
        result["invite_return_s"] = inv[0]["seconds"] if inv else None

        if stream and len(times) == n_members:
            cpu0 = {c.name: cpu_seconds(c.proc.pid) for c in children}
            moderator.tell("stream")
            sent = moderator.wait("sent", args.seconds + 60)
            thr = wait_all(member_procs, "throughput", n_members, args.seconds + args.idle + 60)
            cpu = {c.name: cpu_seconds(c.proc.pid) - cpu0[c.name] for c in children}
            # CPU per message does not depend much on how loaded the machine is (unlike msgs/s).
            if sent["sent"]:
                per = 1e6 / sent["sent"]
                result["cpu_us_moderator"] = cpu["moderator"] * per
                result["cpu_us_node"] = cpu["node"] * per
                result["cpu_us_member"] = sum(cpu[c.name] for c in member_procs) / n_members * per
            rates = [e["rate"] for e in thr]
            result.update(
                sent=sent["sent"],
                send_rate=sent["rate"],
                delivered_min=min((e["received"] for e in thr), default=0),
                delivered_total=sum(e["received"] for e in thr),
                receive_errors=sum(e.get("errors", 0) for e in thr),
                rate_mean=sum(rates) / n_members if rates else 0.0,
                rate_min=min(rates) if len(rates) == n_members else 0.0,
                reported=len(thr),
            )
        else:
            moderator.tell("done")
        result["rss"] = {c.name: rss_kib(c.proc.pid) for c in children}
    finally:
        if args.verbose:
            for c in children:
                with c.cond:
                    evs = [e for e in c.events if e["event"] not in ("member-up",)]
                print(f"--- {tag} {c.name}: {json.dumps(evs)[:3000]}\n{c.tail()[-1500:]}", file=sys.stderr)
        for c in reversed(children):
            c.tell("quit")
        for c in reversed(children):
            c.stop()
    return result


def fmt(v, spec: str) -> str:
    return "-" if v is None else spec.format(v)


def print_table(results: dict, args, conditions: str) -> None:
    impls = [i for i in ("060", "ours") if i in results]
    both = len(impls) == 2
    print()
    print(
        f"group: {args.size}-byte messages, moderator -> 4 members (one process each) via one node on "
        f"127.0.0.1; stream of {args.messages:,} (max {args.seconds:g} s); "
        f"sessions max_retries={args.retries}, "
        f"timeout={args.timeout:g} s; {args.big} members in processes of {args.per_process} apps"
    )
    print(f"conditions: {conditions}")
    header = f"{'metric':44}" + "".join(f"{i:>13}" for i in impls) + (f"{'ours/0.6.0':>12}" if both else "")
    print(header)

    def row(label, key_fn, spec, higher_better):
        vals = {i: key_fn(results[i]) for i in impls}
        if all(v is None for v in vals.values()):
            return
        line = f"{label:44}" + "".join(f"{fmt(vals[i], spec):>13}" for i in impls)
        if both and higher_better is not None and vals["060"] and vals["ours"]:
            line += f"{vals['ours'] / vals['060']:>11.2f}x"
        print(line)

    def get(cfg, key):
        return lambda r: r.get(cfg, {}).get(key)

    for mls in ("plain", "mls"):
        cfg = f"fanout-{mls}"
        label = "MLS on" if mls == "mls" else "MLS off"
        row(f"fan-out 4, {label}: msgs/s per member (mean)", get(cfg, "rate_mean"), "{:,.0f}", True)
        row("  slowest member msgs/s", get(cfg, "rate_min"), "{:,.0f}", True)
        row("  moderator publish msgs/s", get(cfg, "send_rate"), "{:,.0f}", True)
        row("  sent", get(cfg, "sent"), "{:,}", None)
        row("  delivered (fewest of 4 members)", get(cfg, "delivered_min"), "{:,}", None)
        if any(results[i].get(cfg, {}).get("receive_errors") for i in impls):
            row("  receive errors (all members)", get(cfg, "receive_errors"), "{:,}", None)
        row("  CPU us/msg: moderator (lower better)", get(cfg, "cpu_us_moderator"), "{:.1f}", False)
        row("  CPU us/msg: node (4 copies out)", get(cfg, "cpu_us_node"), "{:.1f}", False)
        row("  CPU us/msg: each member", get(cfg, "cpu_us_member"), "{:.1f}", False)
    for i in impls:
        off = results[i].get("fanout-plain", {}).get("rate_mean")
        on = results[i].get("fanout-mls", {}).get("rate_mean")
        results[i]["mls_cost_pct"] = (100.0 * (off - on) / off) if off and on is not None else None
    row("MLS cost, % of MLS-off msgs/s (lower better)", lambda r: r.get("mls_cost_pct"), "{:.1f}%", None)
    row(
        "  MLS-on msgs/s as a multiple of MLS-off",
        lambda r: (
            r["fanout-mls"]["rate_mean"] / r["fanout-plain"]["rate_mean"]
            if r.get("fanout-plain", {}).get("rate_mean")
            and r.get("fanout-mls", {}).get("rate_mean") is not None
            else None
        ),
        "{:.2f}x",
        None,
    )
    big = f"{args.big} ({args.per_process}/process)"
    for n, cfgs in (("4", ("fanout-plain", "fanout-mls")), (big, ("big-plain", "big-mls"))):
        for cfg in cfgs:
            label = "MLS on" if cfg.endswith("mls") else "MLS off"
            row(f"ready {n}, {label}: s to all", get(cfg, "ready_all_s"), "{:.3f}", False)
            expected = 4 if cfg.startswith("fanout") else args.big
            if any(results[i].get(cfg, {}).get("ready_count") not in (None, expected) for i in impls):
                row("  members ready before timeout", get(cfg, "ready_count"), "{}", None)
            row(
                "  ours: s until invite(wait=True) all done",
                lambda r, c=cfg: r.get(c, {}).get("invite_return_s") if r.get("impl") == "ours" else None,
                "{:.3f}",
                None,
            )
            row("  0.6.0: s until all listen_for_session", get(cfg, "sessions_s"), "{:.3f}", None)
            row("  CPU s of all processes until ready", get(cfg, "ready_cpu_s"), "{:.2f}", False)
    for i in impls:
        nodes = {r.get("node") for k, r in results[i].items() if isinstance(r, dict) and r.get("node")}
        print(f"  {i}: node = {', '.join(sorted(nodes))}")
    print(
        "  ratios: ours/0.6.0 (>1 is better for msgs/s, <1 is better for seconds); "
        "targets: fan-out >= 5x, MLS cost <= 20%, 32 ready <= 3 s"
    )


def conditions_text() -> str:
    load = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f} at start"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impl", choices=["ours", "060", "both"], default="both")
    p.add_argument(
        "--messages", type=int, default=100_000, help="fan-out stream length (bounded by --seconds)"
    )
    p.add_argument("--size", type=int, default=100, help="payload bytes per message")
    p.add_argument("--seconds", type=float, default=8.0, help="bound on the stream's sending time")
    p.add_argument("--idle", type=float, default=3.0, help="silence that ends a member's stream")
    p.add_argument("--retries", type=int, default=5, help="session max_retries (both implementations)")
    p.add_argument("--timeout", type=float, default=1.0, help="session timeout in seconds (both)")
    p.add_argument("--big", type=int, default=32, help="members in the big ready-time group (0: skip)")
    p.add_argument("--per-process", type=int, default=8, help="member apps per process in the big group")
    p.add_argument("--ready-timeout", type=float, default=30.0, help="bound on invites until all ready")
    p.add_argument("--probe-interval", type=float, default=0.01, help="seconds between readiness probes")
    p.add_argument("--mls", choices=["both", "off", "on"], default="both")
    p.add_argument(
        "--phases",
        choices=["all", "fanout", "big"],
        default="all",
        help="fan-out runs (4 members), the big ready-time group, or both",
    )
    p.add_argument("--deadline", type=float, default=180.0, help="bound on any worker")
    p.add_argument("--nice", type=int, default=5, help="niceness of the processes started")
    p.add_argument("--ours-python", default=sys.executable, help="python that imports our package")
    p.add_argument("--slim-bin", help="our node as the `slim` binary instead of our package's run_server")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--verbose", action="store_true", help="print every worker's events and stderr tail")
    p.add_argument("--worker", choices=["node", "moderator", "members"], help=argparse.SUPPRESS)
    p.add_argument("--endpoint", help=argparse.SUPPRESS)
    p.add_argument("--listen", help=argparse.SUPPRESS)
    p.add_argument("--members", help=argparse.SUPPRESS)
    p.add_argument("--channel", help=argparse.SUPPRESS)
    p.add_argument("--with-mls", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.mls = args.with_mls
        return worker_main(args)
    if args.size < 1:
        p.error("--size must be at least 1")

    conditions = conditions_text()
    pythons = {}
    for impl in ["060", "ours"] if args.impl == "both" else [args.impl]:
        if impl == "060":
            pythons[impl] = python_060()
        else:
            why = ours_available(args.ours_python)
            if why:
                print(f"skipping ours: {why}", file=sys.stderr)
                continue
            pythons[impl] = args.ours_python
    mls_modes = {"both": [False, True], "off": [False], "on": [True]}[args.mls]
    plan = [("fanout", 4, 1, True)] if args.phases in ("all", "fanout") else []
    if args.big > 0 and args.phases in ("all", "big"):
        plan.append(("big", args.big, max(1, args.per_process), False))
    results: dict = {i: {"impl": i} for i in pythons}
    failed = False
    # Interleave implementations per configuration so both see the same load at about the same time.
    for kind, n, per_process, stream in plan:
        for mls in mls_modes:
            for impl, python in pythons.items():
                cfg = f"{kind}-{'mls' if mls else 'plain'}"
                print(f"running {impl} {cfg} ({n} members) ...", file=sys.stderr, flush=True)
                started = time.monotonic()
                try:
                    results[impl][cfg] = run_config(impl, python, n, per_process, mls, stream, args)
                except Exception as e:  # noqa: BLE001 - reported, then the run goes on
                    print(f"{impl} {cfg} failed: {e}", file=sys.stderr)
                    failed = True
                print(f"  took {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    conditions += f"; load average {os.getloadavg()[0]:.2f} at end"
    print_table(results, args, conditions)
    if args.json:
        Path(args.json).write_text(json.dumps({"conditions": conditions, "results": results}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
