#!/usr/bin/env python3
"""Mesh benchmark: the point-to-point scenario of benches/e2e.py through a chain of 1, 2 and 3 of our
standalone nodes, in the same run (docs/mesh.md).

    requester app ── node 1 ── node 2 ── node 3 ── responder app        (chain of 3: nodes 2 and 3 dial)

For each chain length: the one-way 100-byte stream (msgs/s at the receiver, CPU µs per message of every
process from /proc) and sequential round trips (p50/p99). Lengths are interleaved and repeated
(--repeat), medians reported, and the figures that matter printed as ratios against the one-node chain of
the same run: throughput of 2 and 3 nodes relative to 1 (target: 3 nodes >= 0.8x), and round-trip p50
added per extra node (target: <= 50 µs).

Nodes are our `slim` binary (--slim-bin, $SLIM_BIN, target/release/slim; `task bench:mesh` builds it);
apps are e2e.py workers run with --ours-python. Every process is its own; every wait is bounded.
--node-cores N writes `runtime: {n_cores: N}` into every node's YAML (default: the node's default).

A/B of two node builds or runtimes in the same run: --b-slim-bin and/or --b-node-cores describe node
variant B (what is not given is A's); every round runs A then B for each length, and the summary gives
each variant's table and B/A ratios of the per-extra-node p50 and of throughput.

Usage: python benches/mesh.py [--messages 50000] [--round-trips 2000] [--repeat 3] [--reliable]
       [--node-cores N] [--b-slim-bin PATH] [--b-node-cores N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import e2e

ME = Path(e2e.__file__).resolve()


def node_config(label: str, port: int, dial: int | None, cores: int | None = None) -> Path:
    fd, path = tempfile.mkstemp(prefix=f"slim-mesh-bench-{label}-", suffix=".yaml")
    clients = (
        f'      clients: [{{endpoint: "http://127.0.0.1:{dial}", tls: {{insecure: true}}}}]\n' if dial else ""
    )
    runtime = f"runtime: {{n_cores: {cores}}}\n" if cores is not None else ""
    with os.fdopen(fd, "w") as f:
        f.write(
            "tracing: {log_level: warn}\n" + runtime + "services:\n  slim/0:\n"
            f"    node_id: {label}\n    dataplane:\n"
            f'      servers: [{{endpoint: "127.0.0.1:{port}", tls: {{insecure: true}}}}]\n' + clients
        )
    return Path(path)


def wait_route(python: str, endpoint: str, agent: str, timeout: float = 30) -> None:
    """Polls the head node's inspection API (with our package) until it routes to `agent`."""
    probe = (
        "import asyncio, sys\n"
        "from slim_bindings.node import node_info\n"
        "info = asyncio.run(node_info(sys.argv[1], name_filter=sys.argv[2]))\n"
        "sys.exit(0 if info['routes'] else 1)\n"
    )
    import subprocess

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (
            subprocess.run(
                [python, "-c", probe, endpoint, agent], capture_output=True, timeout=30, check=False
            ).returncode
            == 0
        ):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the head node has no route to {agent} after {timeout} s")


def status_kib(pid: int, field: str) -> int:
    """A `/proc/<pid>/status` field in KiB (`VmRSS:`, `RssAnon:`, ...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def node_sched(pid: int) -> tuple[float, int]:
    """(seconds on CPU, voluntary context switches) of every thread of `pid` so far: schedstat's
    nanoseconds, not clock ticks, so that a few thousand round trips are measured."""
    cpu, switches = 0.0, 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return cpu, switches
    for tid in tids:
        try:
            cpu += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0]) / 1e9
            for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    switches += int(line.split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return cpu, switches


def run_chain(length: int, args, variant: dict) -> dict:
    binary = e2e.our_slim_binary(variant["bin"])
    if binary is None:
        raise RuntimeError("no slim binary: build it with `cargo build --release --bin slim`")
    ports = [e2e.free_port() for _ in range(length)]
    common = e2e.worker_common_args("ours", args)
    children: list[e2e.Child] = []
    result: dict = {"length": length}
    try:
        for i, port in enumerate(ports):
            cfg = node_config(f"n{i + 1}", port, ports[i - 1] if i else None, variant["cores"])
            node = e2e.Child(f"node{i + 1}", [str(binary), "--config", str(cfg)])
            node.cleanup.append(cfg)
            children.append(node)
            e2e.wait_listening(port, 30, node.proc)
        # Resident memory of an idle node (listening, no app yet): the release binary's footprint.
        result["idle_rss_kib"] = status_kib(children[0].proc.pid, "VmRSS:")
        head, tail = f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[-1]}"
        responder = e2e.Child(
            "responder", [args.ours_python, str(ME), "--worker", "responder", "--endpoint", tail, *common]
        )
        children.append(responder)
        responder.wait("ready", 30)
        if length > 1:
            wait_route(args.ours_python, head, e2e.RESPONDER.split("/")[-1])
        requester = e2e.Child(
            "requester", [args.ours_python, str(ME), "--worker", "requester", "--endpoint", head, *common]
        )
        children.append(requester)
        if length > 1:
            requester.wait("ready", 30)
            # The tail node must route replies back to the requester too.
            wait_route(args.ours_python, tail, e2e.REQUESTER.split("/")[-1])
        requester.wait("warm", 30)
        cpu_before = {c.name: e2e.cpu_seconds(c.proc.pid) for c in children}
        requester.tell("stream")
        requester.wait("sent", args.seconds + 30)
        thr = responder.wait("throughput", args.seconds + args.idle + 60)
        cpu = {c.name: e2e.cpu_seconds(c.proc.pid) - cpu_before[c.name] for c in children}
        nodes = [c for c in children if c.name.startswith("node")]
        sched_before = [node_sched(c.proc.pid) for c in nodes]
        requester.tell("rtt")
        rtt = requester.wait("rtt", args.rtt_seconds + args.idle + 30)
        sched = [tuple(x - y for x, y in zip(node_sched(c.proc.pid), b)) for c, b in zip(nodes, sched_before)]
        trips = max(1, rtt["count"])
        nodes_cpu = sum(v for k, v in cpu.items() if k.startswith("node"))
        result.update(
            recv_rate=thr["rate"],
            received=thr["received"],
            p50_us=rtt["p50_ms"] * 1000,
            p99_us=rtt["p99_ms"] * 1000,
            cpu_us_per_msg=1e6 * sum(cpu.values()) / max(1, thr["received"]),
            node_cpu_us_per_msg=1e6 * nodes_cpu / max(1, thr["received"]),
            # During the round trips, per node (mean over the chain's nodes) and per round trip.
            node_cpu_us_per_rtt=1e6 * sum(c for c, _ in sched) / len(nodes) / trips,
            node_switches_per_rtt=sum(s for _, s in sched) / len(nodes) / trips,
        )
        requester.tell("quit")
        try:
            responder.wait("done", 15)
        except RuntimeError:
            pass
    finally:
        for c in reversed(children):
            c.stop()
    return result


def summary(label: str, runs: dict[int, list[dict]], lengths: list[int]) -> dict[int, dict]:
    """Prints one variant's table (medians over its runs) and returns the medians."""
    med = {
        n: {k: statistics.median(x[k] for x in runs[n]) for k in runs[n][0] if k != "length"} for n in lengths
    }
    print(f"\n{label}")
    print(
        f"{'nodes':>6}{'msgs/s':>12}{'vs 1 node':>11}{'p50 us':>9}{'p99 us':>9}{'+p50/extra node':>17}"
        f"{'CPU us/msg':>12}{'node CPU us/msg':>17}{'node us/rtt':>13}{'switches/rtt':>14}"
    )
    base = med[lengths[0]]
    for n in lengths:
        m = med[n]
        m["extra_p50_us"] = (m["p50_us"] - base["p50_us"]) / (n - lengths[0]) if n > lengths[0] else 0.0
        m["vs_first"] = m["recv_rate"] / base["recv_rate"]
        print(
            f"{n:>6}{m['recv_rate']:>12,.0f}{m['vs_first']:>10.2f}x{m['p50_us']:>9.0f}"
            f"{m['p99_us']:>9.0f}{m['extra_p50_us']:>16.0f} {m['cpu_us_per_msg']:>11.1f}{m['node_cpu_us_per_msg']:>17.1f}"
            f"{m['node_cpu_us_per_rtt']:>13.0f}{m['node_switches_per_rtt']:>14.1f}"
        )
    idle = statistics.median(x["idle_rss_kib"] for n in lengths for x in runs[n])
    print(f"idle node (listening, before any app): {idle / 1024:.1f} MiB resident (median)")
    return med


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", default="1,2,3", help="chain lengths, comma-separated")
    e2e.add_scenario_options(p, rtt_seconds=60.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--ours-python", default=sys.executable)
    p.add_argument("--slim-bin")
    p.add_argument(
        "--node-cores", type=int, help="runtime.n_cores of every node (default: the node's default)"
    )
    p.add_argument("--b-slim-bin", help="variant B's slim binary (default: A's)")
    p.add_argument("--b-node-cores", type=int, help="variant B's runtime.n_cores (default: A's)")
    p.add_argument("--json", help="also write every run to this file")
    args = p.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    variants = {"A": {"bin": args.slim_bin, "cores": args.node_cores}}
    if args.b_slim_bin is not None or args.b_node_cores is not None:
        variants["B"] = {
            "bin": args.b_slim_bin or args.slim_bin,
            "cores": args.b_node_cores if args.b_node_cores is not None else args.node_cores,
        }
    runs: dict[str, dict[int, list[dict]]] = {v: {n: [] for n in lengths} for v in variants}
    for r in range(args.repeat):
        for n in lengths:
            for v, variant in variants.items():
                res = run_chain(n, args, variant)
                runs[v][n].append(res)
                tag = f" {v}" if len(variants) > 1 else ""
                print(
                    f"round {r + 1}{tag}, {n} node(s): {res['recv_rate']:,.0f} msgs/s, p50 {res['p50_us']:.0f} us, "
                    f"{res['cpu_us_per_msg']:.1f} CPU us/msg, node {res['node_cpu_us_per_msg']:.1f}; per round "
                    f"trip and node: {res['node_cpu_us_per_rtt']:.0f} CPU us, {res['node_switches_per_rtt']:.1f} switches",
                    flush=True,
                )
    kind = "reliable" if args.reliable else "default"
    print(f"\nmesh chain, point to point {args.size} B ({kind}), medians of {args.repeat} interleaved runs")
    meds = {}
    for v, variant in variants.items():
        label = f"{v}: {e2e.our_slim_binary(variant['bin'])}, n_cores {variant['cores'] if variant['cores'] is not None else 'default'}"
        meds[v] = summary(
            label if len(variants) > 1 else str(e2e.our_slim_binary(variant["bin"])), runs[v], lengths
        )
    if len(variants) > 1:
        print("\nB vs A (medians)")
        for n in lengths[1:]:
            a, b = meds["A"][n], meds["B"][n]
            print(
                f"{n} nodes: +p50/extra node {a['extra_p50_us']:.0f} -> {b['extra_p50_us']:.0f} us; "
                f"p50 {a['p50_us']:.0f} -> {b['p50_us']:.0f} us; throughput vs 1 node {a['vs_first']:.2f}x -> "
                f"{b['vs_first']:.2f}x; msgs/s B/A {b['recv_rate'] / a['recv_rate']:.2f}"
            )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"runs": runs, "medians": meds, "variants": variants}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
