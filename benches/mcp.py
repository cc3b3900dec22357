#!/usr/bin/env python3
"""MCP tool calls over SLIM (MLS on and off) beside the same server over the SDK's streamable HTTP
transport on loopback, in the same run: calls/s, call latency p50/p99, CPU per call.

Processes, all on 127.0.0.1:
  node          our package's node (``python -m slim_bindings node``), for the SLIM transports;
  slim server   an ``MCPServer`` with one tool (``echo``), served with ``slim_bindings.mcp.serve``;
  http server   the same ``MCPServer`` as the SDK's streamable HTTP app under uvicorn: with the SDK's
                defaults (stateful sessions, SSE responses: ``http``, the baseline of the ratios) and
                with ``json_response=True`` (plain JSON responses: ``http-json``, shown for context);
  client        one per measurement: one ``mcp.ClientSession`` (2025-11-25 handshake era, the same on
                every transport) over ``slim_bindings.mcp.client(...)`` or ``streamable_http_client``.

Each measurement: warm-up, then --latency-calls sequential calls (p50/p99), then --calls calls with
--concurrency in flight on the one connection (calls/s), and the CPU time (user+system, from /proc) the
client, the server and the node used during the latter, per call: unlike the rates, it hardly depends
on the machine's load. Transports are interleaved and every measurement is repeated --repeat times;
the table shows medians and the ratios to streamable HTTP.

Usage:  python benches/mcp.py [--calls 5000] [--concurrency 16] [--latency-calls 1000] [--repeat 3]
The same file is the worker program (--worker node|slim-server|http-server|client). Every wait is
bounded; every process started is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

# This file is named like the SDK: keep its own directory off the import path so `import mcp` finds
# the SDK, not this script.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

SECRET = "bench-mcp-shared-secret-0123456789abcdef"
SERVER_NAME = "agntcy/bench/mcp-server"
TRANSPORTS = {
    "slim-mls": "MCP over SLIM, MLS on",
    "slim": "MCP over SLIM, MLS off",
    "http": "streamable HTTP",
    "http-json": "streamable HTTP, JSON",
}
PAYLOAD = "hello from the benchmark"


# --- workers ----------------------------------------------------------------------------------------------


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def build_server() -> Any:
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("bench", log_level="WARNING")

    # async: a sync tool runs in a worker thread (the SDK's rule), which would cost the same on
    # every transport and blur the difference.
    @server.tool()
    async def echo(text: str) -> str:
        return text

    return server


async def slim_app(local: str, endpoint: str) -> Any:
    import slim_bindings

    org, ns, name = local.split("/")
    provider = slim_bindings.PyIdentityProvider.SharedSecret(identity=local, shared_secret=SECRET)
    verifier = slim_bindings.PyIdentityVerifier.SharedSecret(identity=local, shared_secret=SECRET)
    app = await slim_bindings.Slim.new(slim_bindings.PyName(org, ns, name), provider, verifier)
    await app.connect({"endpoint": f"http://{endpoint}", "tls": {"insecure": True}})
    return app


async def worker_slim_server(args: argparse.Namespace) -> None:
    import slim_bindings.mcp

    app = await slim_app(SERVER_NAME, args.endpoint)
    task = asyncio.ensure_future(slim_bindings.mcp.serve(app, build_server()))
    emit("ready")
    await wait_for_stdin_close()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def worker_http_server(args: argparse.Namespace) -> None:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = build_server().streamable_http_app(json_response=args.json_response)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 30
    while not server.started:
        if task.done() or time.monotonic() > deadline:
            raise SystemExit("uvicorn did not start")
        await asyncio.sleep(0.01)
    emit("ready", port=sock.getsockname()[1])
    await wait_for_stdin_close()
    server.should_exit = True
    await asyncio.wait_for(task, 10)


async def wait_for_stdin_close() -> None:
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def worker_client(args: argparse.Namespace) -> None:
    from contextlib import AsyncExitStack

    import mcp

    async with AsyncExitStack() as stack:
        if args.transport.startswith("http"):
            from mcp.client.streamable_http import streamable_http_client

            read, write = await stack.enter_async_context(streamable_http_client(args.url))
        else:
            import slim_bindings.mcp

            app = await slim_app("agntcy/bench/mcp-client", args.endpoint)
            transport = slim_bindings.mcp.client(
                app, SERVER_NAME, mls=args.transport == "slim-mls", timeout=30
            )
            read, write = await stack.enter_async_context(transport)
        session = await stack.enter_async_context(mcp.ClientSession(read, write))
        await asyncio.wait_for(session.initialize(), 30)

        async def call() -> None:
            result = await session.call_tool("echo", {"text": PAYLOAD})
            if result.is_error:
                raise RuntimeError(f"tool call failed: {result}")

        for _ in range(args.warmup):
            await call()

        latencies = []
        deadline = time.monotonic() + args.seconds
        for _ in range(args.latency_calls):
            t0 = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - t0)
            if time.monotonic() > deadline:
                break

        pids = {
            "client": os.getpid(),
            **{k: int(v) for k, v in (p.split("=") for p in args.pids.split(",") if p)},
        }
        cpu_before = {k: cpu_seconds(pid) for k, pid in pids.items()}
        remaining = args.calls
        done = 0

        async def caller() -> None:
            nonlocal remaining, done
            while remaining > 0 and time.monotonic() < deadline + args.seconds:
                remaining -= 1
                await call()
                done += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - t0
        cpu = {k: (cpu_seconds(pid) - cpu_before[k]) / done * 1e6 for k, pid in pids.items()}
        emit(
            "result",
            p50_ms=percentile(latencies, 0.5) * 1e3,
            p99_ms=percentile(latencies, 0.99) * 1e3,
            latency_calls=len(latencies),
            calls=done,
            calls_per_s=done / elapsed,
            cpu_us_per_call=cpu,
        )


def worker_main(args: argparse.Namespace) -> int:
    if args.worker == "slim-server":
        asyncio.run(worker_slim_server(args))
    elif args.worker == "http-server":
        asyncio.run(worker_http_server(args))
    elif args.worker == "client":
        asyncio.run(worker_client(args))
    return 0


# --- coordinator ------------------------------------------------------------------------------------------


class Child:
    """A worker process whose JSON event lines are collected (other lines are kept for errors)."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        self.events: list[dict[str, Any]] = []
        self.other: list[str] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.cond:
                try:
                    self.events.append(json.loads(line))
                except ValueError:
                    self.other.append(line.rstrip())
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait(self, event: str, timeout: float, pattern: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for e in self.events:
                    if e.get("event") == event:
                        return e
                for line in self.other:
                    if pattern and pattern in line:
                        return {"line": line}
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name}: no {event!r} (exit {self.proc.poll()}):\n"
                        + "\n".join(self.other[-30:])
                    )
                self.cond.wait(min(left, 0.5))

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(5)
            except (subprocess.TimeoutExpired, OSError):
                pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["slim-server", "http-server", "client"])
    parser.add_argument("--transport", choices=list(TRANSPORTS))
    parser.add_argument("--endpoint", help="(worker) the node's ip:port")
    parser.add_argument("--url", help="(worker) the streamable HTTP endpoint")
    parser.add_argument(
        "--json-response", action="store_true", help="(worker) http-server answers with JSON, not SSE"
    )
    parser.add_argument("--pids", default="", help="(worker) name=pid,... whose CPU time to count")
    parser.add_argument(
        "--transports",
        default=",".join(TRANSPORTS),
        help="comma-separated subset of " + ", ".join(TRANSPORTS),
    )
    parser.add_argument("--calls", type=int, default=5000, help="calls in the throughput phase")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight in the throughput phase")
    parser.add_argument("--latency-calls", type=int, default=1000, help="sequential calls for p50/p99")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0, help="bound on each phase")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.worker:
        return worker_main(args)

    transports = [t for t in args.transports.split(",") if t]
    me = [sys.executable, os.path.abspath(__file__)]
    children: list[Child] = []
    try:
        node = Child("node", [sys.executable, "-m", "slim_bindings", "node", "--endpoint", "127.0.0.1:0"])
        children.append(node)
        endpoint = node.wait("listening", 60, pattern="listening on")["line"].rsplit(" ", 1)[1]
        slim_server = Child("slim-server", [*me, "--worker", "slim-server", "--endpoint", endpoint])
        http_servers = {
            "http": Child("http-server", [*me, "--worker", "http-server"]),
            "http-json": Child("http-server-json", [*me, "--worker", "http-server", "--json-response"]),
        }
        children += [slim_server, *http_servers.values()]
        slim_server.wait("ready", 60)
        ports = {t: c.wait("ready", 60)["port"] for t, c in http_servers.items()}
        results: dict[str, list[dict[str, Any]]] = {t: [] for t in transports}
        for round_ in range(args.repeat):
            for t in transports:
                if t in http_servers:
                    pids, url = f"server={http_servers[t].proc.pid}", f"http://127.0.0.1:{ports[t]}/mcp"
                else:
                    pids, url = f"server={slim_server.proc.pid},node={node.proc.pid}", ""
                client = Child(
                    t,
                    [
                        *me,
                        "--worker",
                        "client",
                        "--transport",
                        t,
                        "--endpoint",
                        endpoint,
                        "--url",
                        url,
                        "--pids",
                        pids,
                        "--calls",
                        str(args.calls),
                        "--concurrency",
                        str(args.concurrency),
                        "--latency-calls",
                        str(args.latency_calls),
                        "--warmup",
                        str(args.warmup),
                        "--seconds",
                        str(args.seconds),
                    ],
                )
                try:
                    r = client.wait("result", 3 * args.seconds + 60)
                finally:
                    client.stop()
                results[t].append(r)
                cpu = sum(r["cpu_us_per_call"].values())
                print(
                    f"round {round_ + 1} {TRANSPORTS[t]:<24} {r['calls_per_s']:8.0f} calls/s  p50 {r['p50_ms']:6.2f} ms  "
                    f"p99 {r['p99_ms']:6.2f} ms  CPU {cpu:6.0f} µs/call",
                    flush=True,
                )
        print_table(results, args)
    finally:
        for c in reversed(children):
            c.stop()
    return 0


def print_table(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    def med(t: str, key: str) -> float:
        return statistics.median(r[key] for r in results[t])

    def med_cpu(t: str) -> dict[str, float]:
        keys = results[t][0]["cpu_us_per_call"].keys()
        return {k: statistics.median(r["cpu_us_per_call"][k] for r in results[t]) for k in keys}

    print(
        f"\nMCP tool call (echo, {len(PAYLOAD)}-char text), one ClientSession per transport; medians of {args.repeat} "
        f"interleaved runs; throughput with {args.concurrency} calls in flight."
    )
    print(
        f"{'transport':<24} {'calls/s':>9} {'x HTTP':>7} {'p50 ms':>8} {'p99 ms':>8} {'p50 x HTTP':>11} {'CPU µs/call':>12}  (client+server+node)"
    )
    http = "http" in results and results["http"]
    for t in results:
        cps, p50, p99 = med(t, "calls_per_s"), med(t, "p50_ms"), med(t, "p99_ms")
        cpu = med_cpu(t)
        ratio = f"{cps / med('http', 'calls_per_s'):.2f}" if http else "-"
        p50_ratio = f"{p50 / med('http', 'p50_ms'):.2f}" if http else "-"
        parts = "+".join(f"{v:.0f}" for v in cpu.values())
        print(
            f"{TRANSPORTS[t]:<24} {cps:9.0f} {ratio:>7} {p50:8.2f} {p99:8.2f} {p50_ratio:>11} {sum(cpu.values()):12.0f}  ({parts})"
        )


if __name__ == "__main__":
    sys.exit(main())
