#!/usr/bin/env python3
"""End-to-end Python benchmark: one node and two apps, each in its own process, on 127.0.0.1.

Scenario, run for each implementation selected with --impl:
  1. a requester app opens a point-to-point session to a responder app through the node and warms it up
     with one request/reply;
  2. one-way stream: the requester publishes --messages messages of --size bytes as fast as it can (or for
     --seconds); the responder counts them and reports msgs/s between the first and the last it received;
  3. request/reply: --round-trips sequential round trips (or --rtt-seconds), p50/p90/p99 latency;
  4. resident memory (VmRSS now, VmHWM peak) of the node and both apps, taken after the stream and the
     round trips (so after --messages messages: `--messages 100000 --seconds 600` gives the RSS after 100k).
Also printed: MB/s at the receiver (msgs/s x --size) and the CPU time each process spent per message during
the stream (user+system, all threads, from /proc): unlike the rates, it does not depend on the machine's load.

Implementations:
  060   the released slim-bindings 0.6.0 wheel, in its own venv (scripts/setup_venv_060.sh), with a 0.6.0
        node (a 0.6.0 Slim that only runs a server) — the reference and speed baseline;
  ours  our package (the python given by --ours-python must import it) with our node: the `slim` binary
        (--slim-bin, $SLIM_BIN, target/release/slim, target/debug/slim), else our package's run_server.
        Skipped with a message when our package is not installed.

Usage:  python3 benches/e2e.py [--impl both] [--messages 50000] [--size 100] [--round-trips 2000]
        python3 benches/e2e.py --otel [--repeat 3]   OpenTelemetry cost, ours only: every run of the
        scenario three ways in one invocation (interleaved) and the medians side by side:
          never  nothing calls init_tracing;
          off    init_tracing with the opentelemetry block present but disabled;
          on     export enabled in both apps and the node, to an OTLP sink on loopback (a grpcio server in
                 this process that accepts and discards; --otel-endpoint uses a collector of your own).
        Needs grpcio in the coordinator's python for the sink (`pip install grpcio`).
Identities (--identity): shared secret (default), ES256 JWT (each app's Jwt provider signs its own tokens
with a key pair made with openssl in a temp dir; verifiers hold the public key), or `compare` = both in the
same run, then a table of JWT/shared ratios.
The same file is the worker program (`--worker node|responder|requester`), started with each
implementation's own python. Every wait is bounded; every process started is stopped at the end.
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
import tempfile
import threading
import time
from pathlib import Path
from typing import ClassVar

REPO_ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-shared-secret-0123456789abcdef0123"
RESPONDER = "agntcy/bench/responder"
REQUESTER = "agntcy/bench/requester"
KIND_DATA, KIND_PING, KIND_QUIT = b"D", b"P", b"Q"


# ---------------------------------------------------------------------------------------------------------
# Worker side: runs inside the implementation's own python.
# ---------------------------------------------------------------------------------------------------------


def emit(event: str, **fields) -> None:
    fields["event"] = event
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def split_name(text: str):
    import slim_bindings

    a, b, c = text.split("/")
    return slim_bindings.PyName(a, b, c)


# Set by the worker from --identity / --jwt-keys.
IDENTITY = {"kind": "shared", "keys": None}
JWT_ISSUER, JWT_AUDIENCE = "https://bench.issuer", "slim-bench"


def identity(local: str):
    import slim_bindings

    if IDENTITY["kind"] == "jwt":
        import datetime

        def es256(file: str):
            return slim_bindings.PyKey(
                slim_bindings.PyAlgorithm.ES256,
                slim_bindings.PyKeyFormat.Pem,
                slim_bindings.PyKeyData.File(str(Path(IDENTITY["keys"]) / file)),
            )

        provider = slim_bindings.PyIdentityProvider.Jwt(
            private_key=es256("es256.key"),
            duration=datetime.timedelta(hours=1),
            issuer=JWT_ISSUER,
            audience=[JWT_AUDIENCE],
            subject=local,
        )
        verifier = slim_bindings.PyIdentityVerifier.Jwt(
            public_key=es256("es256.pub.pem"),
            issuer=JWT_ISSUER,
            audience=[JWT_AUDIENCE],
            require_iss=True,
            require_aud=True,
        )
        return provider, verifier
    provider = slim_bindings.PyIdentityProvider.SharedSecret(identity=local, shared_secret=SECRET)
    verifier = slim_bindings.PyIdentityVerifier.SharedSecret(identity=local, shared_secret=SECRET)
    return provider, verifier


class BenchApp:
    """What a benchmark app does alike with either package (this script's and benches/group.py's): its
    Slim, with this run's identity, connected to the node at `endpoint`, or serving as that node."""

    # Extra keyword arguments of Slim.new.
    NEW_KWARGS: ClassVar[dict] = {}

    async def start(self, local: str, endpoint: str | None):
        import slim_bindings

        self.sb = slim_bindings
        self.app = await slim_bindings.Slim.new(split_name(local), *identity(local), **self.NEW_KWARGS)
        if endpoint:
            await self.app.connect({"endpoint": endpoint, "tls": {"insecure": True}})

    async def serve(self, listen: str):
        await self.app.run_server({"endpoint": listen, "tls": {"insecure": True}})

    # A receive bounded in time, as each client does it most cheaply: asyncio.wait_for (a task and
    # a loop timer per call) unless the client bounds its own wait (TimeoutError either way).
    async def recv_within(self, timeout: float):
        return await asyncio.wait_for(self.recv(), timeout)

    async def recv_batch_within(self, timeout: float):
        return await asyncio.wait_for(self.recv_batch(), timeout)


class App060(BenchApp):
    """slim-bindings 0.6.0: PointToPoint sessions, listen_for_session, PySession.publish/publish_to/get_message."""

    async def open_session(self, remote: str, reliable: bool):
        import datetime

        peer = split_name(remote)
        await self.app.set_route(peer)
        cfg = self.sb.PySessionConfiguration.PointToPoint(
            peer_name=peer,
            timeout=datetime.timedelta(seconds=1) if reliable else None,
            max_retries=5 if reliable else None,
        )
        self.session = await self.app.create_session(cfg)

    async def accept_session(self, timeout: float):
        import datetime

        self.session = await self.app.listen_for_session(datetime.timedelta(seconds=timeout))

    async def send(self, blob: bytes):
        await self.session.publish(blob)

    async def recv(self):
        return await self.session.get_message()

    async def recv_batch(self):
        return [await self.session.get_message()]

    async def reply(self, ctx, blob: bytes):
        await self.session.publish_to(ctx, blob)


class AppOurs(BenchApp):
    """Our package, seed-era API: Anycast/Unicast sessions, receive(), publish(session, msg, dest), publish_to."""

    async def open_session(self, remote: str, reliable: bool):
        import datetime

        self.peer = split_name(remote)
        await self.app.set_route(self.peer)
        if reliable:
            cfg = self.sb.PySessionConfiguration.Unicast(timeout=datetime.timedelta(seconds=1), max_retries=5)
        else:
            cfg = self.sb.PySessionConfiguration.Anycast()
        self.session = await self.app.create_session(cfg)

    async def accept_session(self, timeout: float):
        # The new-session notification carries the first payload, which is also the first item of the
        # session's queue (seed semantics): keep only the session.
        info, _first = await asyncio.wait_for(self.app.receive(), timeout)
        self.session = info

    async def send(self, blob: bytes):
        await self.app.publish(self.session, blob, self.peer)

    async def send_many(self, blobs: list[bytes]):
        if hasattr(self.app, "publish_many"):
            await self.app.publish_many(self.session, blobs, self.peer)
        else:  # builds without publish_many
            for blob in blobs:
                await self.app.publish(self.session, blob, self.peer)

    async def recv(self):
        return await self.app.receive(session=self.session.id)

    def _timed_receive(self) -> bool:
        """Builds whose receive takes `timeout=` (the runtime's timer, no asyncio task)."""
        if not hasattr(self, "timed"):
            import inspect

            self.timed = "timeout" in inspect.signature(self.app.receive_many).parameters
        return self.timed

    async def recv_within(self, timeout: float):
        if self._timed_receive():
            return await self.app.receive(session=self.session.id, timeout=timeout)
        return await super().recv_within(timeout)

    async def recv_batch_within(self, timeout: float):
        if self._timed_receive():
            return await self.app.receive_many(self.session.id, timeout=timeout)
        return await super().recv_batch_within(timeout)

    async def recv_batch(self):
        # Everything already waiting in one call (falls back to one message on older builds).
        if hasattr(self.app, "receive_many"):
            return await self.app.receive_many(self.session.id)
        return [await self.app.receive(session=self.session.id)]

    async def reply(self, ctx, blob: bytes):
        await self.app.publish_to(ctx, blob)


def rss_kib(pid: int) -> dict:
    """VmRSS and VmHWM (peak) of a process, in KiB, from /proc."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


async def read_command(timeout: float) -> str:
    loop = asyncio.get_running_loop()
    line = await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), timeout)
    return line.strip()


async def worker_node(app, args, name: str = "agntcy/bench/node") -> None:
    """The node process: `app` serves on --listen until the coordinator says quit (bounded by --deadline)."""
    await app.start(name, None)
    await app.serve(args.listen)
    emit("ready")
    # Until the coordinator closes our stdin (or says quit), bounded by --deadline.
    try:
        while await read_command(args.deadline) not in ("", "quit"):
            pass
    except asyncio.TimeoutError:
        pass


async def worker_responder(app, args) -> None:
    await app.start(RESPONDER, args.endpoint)
    emit("ready")
    await app.accept_session(args.deadline)
    emit("session")
    count = 0
    first = last = None
    count_at_first = 0
    reported = False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.deadline

    def report():
        elapsed = (last - first) if (first is not None and last is not None and last > first) else 0.0
        # Messages received after the clock started (the first batch arrived before it started).
        timed = count - count_at_first
        rate = timed / elapsed if elapsed > 0 and timed > 0 else 0.0
        emit("throughput", received=count, seconds=round(elapsed, 4), rate=rate)

    while loop.time() < deadline:
        # While a stream is under way, a pause of --idle seconds ends it (messages lost or sender gave up).
        wait = args.idle if (count and not reported) else max(0.1, deadline - loop.time())
        try:
            batch = await app.recv_batch_within(wait)
        except asyncio.TimeoutError:
            if count and not reported:
                report()
                reported = True
            continue
        quit_now = False
        for ctx, blob in batch:
            kind = bytes(blob[:1])
            if kind == KIND_DATA:
                count += 1
                continue
            if kind == KIND_PING:
                await app.reply(ctx, blob)
            elif kind == KIND_QUIT:
                quit_now = True
                break
        if count:
            now = time.perf_counter()
            if first is None:
                # The first batch's arrival starts the clock: its messages count from there.
                first = now
                count_at_first = count
            last = now
        if count >= args.messages and not reported:
            report()
            reported = True
        if quit_now:
            break
    emit("done")


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


async def worker_requester(app, args) -> None:
    await app.start(REQUESTER, args.endpoint)
    emit("ready")
    await app.open_session(RESPONDER, args.reliable)
    pad = b"x" * max(0, args.size - 1)

    async def round_trip(timeout: float) -> float:
        t0 = time.perf_counter()
        await app.send(KIND_PING + pad)
        while True:
            _ctx, blob = await app.recv_within(timeout)
            if bytes(blob[:1]) == KIND_PING:
                return time.perf_counter() - t0

    # Warm-up: the session exists at both ends and the route works both ways. Through a mesh, the
    # far node may not route back to this just-connected app yet (its interest is still
    # propagating): that reply is dropped and reported to the responder (NoRouteError), so the
    # ping is repeated, bounded in count and time.
    deadline = time.monotonic() + args.idle * 5
    for _attempt in range(50):
        left = deadline - time.monotonic()
        try:
            await round_trip(min(2.0, max(0.1, left)))
            break
        except asyncio.TimeoutError:
            if left <= 2.0:
                raise
    emit("warm")

    # Stream phase, started by the coordinator.
    if await read_command(args.deadline) != "stream":
        return
    data = KIND_DATA + pad
    sent = 0
    t0 = time.perf_counter()
    stop_at = t0 + args.seconds
    batch = getattr(args, "batch", 1)
    if batch > 1 and hasattr(app, "send_many"):
        # --batch: one publish_many call per `batch` messages (where the client has one).
        while sent < args.messages and time.perf_counter() < stop_at:
            n = min(batch, args.messages - sent)
            await app.send_many([data] * n)
            sent += n
    while sent < args.messages and time.perf_counter() < stop_at:
        await app.send(data)
        sent += 1
    elapsed = time.perf_counter() - t0
    emit("sent", sent=sent, seconds=round(elapsed, 4), rate=sent / elapsed if elapsed > 0 else 0.0)

    if await read_command(args.deadline) != "rtt":
        return
    samples = []
    stop_at = time.perf_counter() + args.rtt_seconds
    try:
        while len(samples) < args.round_trips and time.perf_counter() < stop_at:
            samples.append(await round_trip(args.idle))
    except asyncio.TimeoutError:
        emit("rtt-timeout", after=len(samples))
    s = sorted(samples)
    ms = 1000.0
    emit(
        "rtt",
        count=len(s),
        p50_ms=percentile(s, 0.50) * ms,
        p90_ms=percentile(s, 0.90) * ms,
        p99_ms=percentile(s, 0.99) * ms,
        mean_ms=(statistics.fmean(s) * ms) if s else float("nan"),
    )
    await read_command(args.deadline)  # "quit"
    await app.send(KIND_QUIT)


def otel_tracing_config(mode: str, endpoint: str | None, sampling: float | None) -> dict:
    """init_tracing's dictionary for an --otel mode ("off" keeps the block, disabled)."""
    otel: dict = {"enabled": mode == "on", "service_name": "slim-e2e-bench"}
    if endpoint:
        otel["grpc"] = {"endpoint": endpoint}
    if sampling is not None:
        otel["sampling_ratio"] = sampling
    return {"log_level": "warn", "opentelemetry": otel}


def worker_main(args) -> int:
    app = App060() if args.impl == "060" else AppOurs()
    IDENTITY.update(kind=args.identity, keys=args.jwt_keys)
    role = {"node": worker_node, "responder": worker_responder, "requester": worker_requester}[args.worker]

    async def run():
        if args.otel_mode in ("off", "on") and args.impl == "ours":
            import slim_bindings

            await slim_bindings.init_tracing(
                otel_tracing_config(args.otel_mode, args.otel_endpoint, args.otel_sampling)
            )
        try:
            await asyncio.wait_for(role(app, args), args.deadline + 10)
        except Exception as e:  # noqa: BLE001 - reported as an event: the coordinator reads stdout
            emit("error", error=f"{type(e).__name__}: {e}")
            return 1
        return 0

    return asyncio.run(run())


# ---------------------------------------------------------------------------------------------------------
# Coordinator side.
# ---------------------------------------------------------------------------------------------------------


class Child:
    """A worker process whose stdout JSON events are read by a thread."""

    def __init__(self, name: str, argv: list[str], env: dict | None = None):
        self.name = name
        self.events: list[dict] = []
        self.cond = threading.Condition()
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - lives as long as the child
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            bufsize=1,
            cwd=REPO_ROOT,
            env=env,
        )
        self.ended = False
        self.desc = name
        self.cleanup: list[Path] = []
        # A program that does not stop when its stdin closes (a third-party server) gets SIGTERM first.
        self.terminate_first = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            with self.cond:
                self.events.append(ev)
                self.cond.notify_all()
        with self.cond:
            self.ended = True
            self.cond.notify_all()

    def wait(self, event: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for ev in self.events:
                    if ev["event"] == event:
                        return ev
                    if ev["event"] == "error":
                        raise RuntimeError(f"{self.name}: {ev['error']}\n{self.tail()}")
                remaining = deadline - time.monotonic()
                if self.ended or remaining <= 0:
                    why = "exited" if self.ended else f"no {event!r} within {timeout} s"
                    raise RuntimeError(f"{self.name}: {why}\n{self.tail()}")
                self.cond.wait(remaining)

    def tell(self, line: str):
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def tail(self) -> str:
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read()[-1500:]

    def stop(self):
        if self.proc.poll() is None and self.terminate_first:
            self.proc.send_signal(signal.SIGTERM)
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
        for path in self.cleanup:
            path.unlink(missing_ok=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (all its threads), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"node exited (rc={proc.returncode}) before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"node not listening on {port} after {timeout} s")


def python_060() -> str:
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "setup_venv_060.sh")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"cannot set up the 0.6.0 venv:\n{proc.stderr[-1500:]}")
    return proc.stdout.strip().splitlines()[-1]


def ours_available(python: str) -> str | None:
    """None when `python` imports our package; else the reason it cannot be benchmarked."""
    probe = (
        "import importlib.metadata as m, slim_bindings\n"
        "v = m.version('slim-bindings')\n"
        "assert v != '0.6.0', 'the installed slim_bindings is the 0.6.0 wheel, not ours'\n"
        "print(v)\n"
    )
    try:
        p = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if p.returncode != 0:
        return (p.stderr.strip().splitlines() or ["import failed"])[-1]
    return None


def our_slim_binary(explicit: str | None) -> Path | None:
    for cand in (
        explicit,
        os.environ.get("SLIM_BIN"),
        REPO_ROOT / "target/release/slim",
        REPO_ROOT / "target/debug/slim",
    ):
        if cand and Path(cand).is_file():
            return Path(cand)
    return None


def start_bench_node(kind: str, port: int, args, common: list[str]) -> Child:
    """The router for a run: "060" = a 0.6.0 Slim serving; "ours" = our `slim` binary, else our package's
    run_server. `Child.desc` says which."""
    me = str(Path(__file__).resolve())
    listen = f"127.0.0.1:{port}"
    if kind == "ours":
        binary = our_slim_binary(args.slim_bin) if args.ours_node != "package" else None
        if binary is not None:
            fd, cfg_path = tempfile.mkstemp(prefix="slim-bench-", suffix=".yaml")
            tracing = "tracing:\n  log_level: warn\n"
            if getattr(args, "otel_mode", None) in ("off", "on"):
                tracing = (
                    "tracing: "
                    + json.dumps(otel_tracing_config(args.otel_mode, args.otel_endpoint, args.otel_sampling))
                    + "\n"
                )
            with os.fdopen(fd, "w") as f:
                f.write(
                    tracing + "services:\n  slim/0:\n    dataplane:\n      servers:\n"
                    f'        - endpoint: "{listen}"\n          tls:\n            insecure: true\n'
                )
            node = Child("node", [str(binary), "--config", cfg_path])
            node.cleanup.append(Path(cfg_path))
            node.desc = f"our binary {binary}"
            return node
        why = ours_available(args.ours_python)
        if why:
            raise RuntimeError(f"no node of ours: no slim binary and our package is not importable ({why})")
        node = Child(
            "node",
            [
                args.ours_python,
                me,
                "--worker",
                "node",
                "--listen",
                listen,
                "--impl",
                "ours",
                *otel_worker_args(args),
            ],
        )
        node.desc = "our package run_server"
        return node
    node = Child("node", [python_060(), me, "--worker", "node", "--listen", listen, "--impl", "060"])
    node.desc = "0.6.0 Slim run_server"
    return node


def make_es256_keys(directory: str) -> None:
    """es256.key / es256.pub.pem (P-256, PKCS#8) in `directory`, made with the openssl CLI."""
    key, pub = str(Path(directory) / "es256.key"), str(Path(directory) / "es256.pub.pem")
    genkey = ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key]
    for argv in (genkey, ["openssl", "pkey", "-in", key, "-pubout", "-out", pub]):
        subprocess.run(argv, check=True, capture_output=True, timeout=60)


def print_identity_ratios(by_identity: dict) -> None:
    """JWT vs shared-secret figures of each implementation measured with both."""
    keys = [
        ("one-way msgs/s at receiver", "recv_rate"),
        ("sender publish rate msgs/s", "send_rate"),
        ("stream CPU us/msg (all processes)", "cpu_us_per_msg"),
        ("round-trip p50 ms", "p50_ms"),
        ("round-trip p99 ms", "p99_ms"),
    ]
    print()
    print(f"{'identity comparison':34}{'impl':>8}{'shared':>14}{'jwt (ES256)':>14}{'jwt/shared':>12}")
    for impl in ("060", "ours"):
        if impl not in by_identity.get("shared", {}) or impl not in by_identity.get("jwt", {}):
            continue
        for label, key in keys:
            a, b = by_identity["shared"][impl][key], by_identity["jwt"][impl][key]
            ratio = f"{b / a:>11.2f}x" if a else f"{'-':>12}"
            print(f"{label:34}{impl:>8}{a:>14,.3f}{b:>14,.3f}{ratio}")


def add_scenario_options(
    p: argparse.ArgumentParser,
    *,
    messages: int = 50_000,
    seconds: float = 10.0,
    round_trips: int = 2_000,
    rtt_seconds: float = 120.0,
) -> None:
    """The scenario's options (sizes and bounds of the stream and the round trips, session kind),
    shared by every runner of this scenario (this script, mesh.py, ab.py); worker_common_args hands
    them on to the workers."""
    p.add_argument("--messages", type=int, default=messages, help="one-way stream length")
    p.add_argument("--size", type=int, default=100, help="payload bytes per message")
    p.add_argument("--seconds", type=float, default=seconds, help="bound on the stream's sending time")
    p.add_argument("--round-trips", type=int, default=round_trips)
    p.add_argument("--rtt-seconds", type=float, default=rtt_seconds, help="bound on the request/reply phase")
    p.add_argument("--idle", type=float, default=2.0, help="silence that ends a phase early")
    p.add_argument("--reliable", action="store_true", help="acknowledged session (timeout 1 s, 5 retries)")
    p.add_argument(
        "--batch",
        type=int,
        default=1,
        help="stream with publish_many, this many messages per call (ours; default: publish per message)",
    )
    p.add_argument("--deadline", type=float, default=300.0, help="bound on any worker")


def worker_common_args(impl: str, args) -> list[str]:
    """The flags every worker of a run gets (scenario sizes and bounds, identity, session kind)."""
    common = [
        "--impl",
        impl,
        "--size",
        str(args.size),
        "--messages",
        str(args.messages),
        "--seconds",
        str(args.seconds),
        "--round-trips",
        str(args.round_trips),
        "--rtt-seconds",
        str(args.rtt_seconds),
        "--idle",
        str(args.idle),
        "--deadline",
        str(args.deadline),
    ]
    if getattr(args, "identity", "shared") == "jwt":
        common += ["--identity", "jwt", "--jwt-keys", args.jwt_keys]
    if args.reliable:
        common.append("--reliable")
    if getattr(args, "batch", 1) > 1:
        common += ["--batch", str(args.batch)]
    return common + otel_worker_args(args)


def run_impl(impl: str, python: str, args) -> dict:
    """One full scenario for one implementation; returns its figures."""
    common = worker_common_args(impl, args)
    me = str(Path(__file__).resolve())
    node_kind = impl if args.node == "own" else args.node
    return run_scenario(
        impl,
        lambda port: start_bench_node(node_kind, port, args, common),
        lambda role, endpoint: [python, me, "--worker", role, "--endpoint", endpoint, *common],
        "http://127.0.0.1:{port}",
        args,
    )


def run_scenario(label: str, start_router, worker_argv, endpoint_format: str, args) -> dict:
    """The scenario with any router and workers that speak this file's event protocol (ready, warm,
    sent, throughput, rtt, done): `start_router(port)` returns the router's Child (named "node"),
    `worker_argv(role, endpoint)` a worker's command line; `endpoint_format` makes the endpoint
    from the port. Stream, then round trips; returns the figures (benches/peers.py reuses it)."""
    port = free_port()
    endpoint = endpoint_format.format(port=port)
    children: list[Child] = []
    result: dict = {"impl": label}
    try:
        node = start_router(port)
        result["node"] = node.desc
        children.append(node)
        wait_listening(port, 30, node.proc)

        responder = Child("responder", worker_argv("responder", endpoint))
        children.append(responder)
        responder.wait("ready", 30)
        requester = Child("requester", worker_argv("requester", endpoint))
        children.append(requester)
        requester.wait("warm", 30)

        cpu_before = {c.name: cpu_seconds(c.proc.pid) for c in children}
        requester.tell("stream")
        sent = requester.wait("sent", args.seconds + 30)
        thr = responder.wait("throughput", args.seconds + args.idle + 60)
        result["stream_cpu"] = {c.name: cpu_seconds(c.proc.pid) - cpu_before[c.name] for c in children}
        # CPU of node + both apps per streamed message: less sensitive to a loaded machine than msgs/s.
        result["cpu_us_per_msg"] = 1e6 * sum(result["stream_cpu"].values()) / max(1, thr["received"])
        requester.tell("rtt")
        rtt = requester.wait("rtt", args.rtt_seconds + args.idle + 30)
        result.update(
            sent=sent["sent"],
            send_rate=sent["rate"],
            received=thr["received"],
            recv_rate=thr["rate"],
            recv_seconds=thr["seconds"],
            rtt_count=rtt["count"],
            p50_ms=rtt["p50_ms"],
            p90_ms=rtt["p90_ms"],
            p99_ms=rtt["p99_ms"],
            mean_ms=rtt["mean_ms"],
            recv_mb_s=thr["rate"] * args.size / 1e6,
        )
        result["rss"] = {c.name: rss_kib(c.proc.pid) for c in children}
        requester.tell("quit")
        try:
            responder.wait("done", 15)
        except RuntimeError as e:  # the figures are in; a slow goodbye is only worth a note
            print(f"{label}: responder did not finish cleanly: {str(e).splitlines()[0]}", file=sys.stderr)
    finally:
        for c in reversed(children):
            c.stop()
    return result


def fmt_rss(r: dict) -> str:
    return f"{r.get('VmRSS', 0) / 1024:.1f}/{r.get('VmHWM', 0) / 1024:.1f}"


def print_table(results: dict, args) -> None:
    impls = [i for i in ("060", "ours") if i in results]
    rows = [
        ("one-way msgs/s at receiver", "recv_rate", "{:,.0f}", True),
        ("one-way MB/s at receiver", "recv_mb_s", "{:,.1f}", True),
        ("  messages sent", "sent", "{:,}", None),
        ("  messages received", "received", "{:,}", None),
        ("  sender publish rate msgs/s", "send_rate", "{:,.0f}", True),
        ("round trips measured", "rtt_count", "{:,}", None),
        ("round-trip p50 ms", "p50_ms", "{:.3f}", False),
        ("round-trip p90 ms", "p90_ms", "{:.3f}", False),
        ("round-trip p99 ms", "p99_ms", "{:.3f}", False),
    ]
    print()
    print(
        f"e2e: {args.size}-byte messages, stream of {args.messages:,} (max {args.seconds} s), "
        f"{args.round_trips:,} round trips (max {args.rtt_seconds} s), "
        f"{'reliable' if args.reliable else 'default (unreliable)'} point-to-point session"
    )
    header = f"{'metric (apps)':34}" + "".join(f"{i:>14}" for i in impls)
    if len(impls) == 2:
        header += f"{'ours/0.6.0':>12}"
    print(header)
    for label, key, f, higher_better in rows:
        line = f"{label:34}" + "".join(f"{f.format(results[i][key]):>14}" for i in impls)
        if len(impls) == 2 and higher_better is not None and results["060"][key]:
            line += f"{results['ours'][key] / results['060'][key]:>11.2f}x"
        print(line)
    for proc in ("node", "responder", "requester"):
        line = f"{'CPU us/msg in stream ' + proc:34}" + "".join(
            f"{1e6 * results[i].get('stream_cpu', {}).get(proc, float('nan')) / max(1, results[i]['received']):>14,.1f}"
            for i in impls
        )
        print(line)
    for proc in ("node", "responder", "requester"):
        line = f"{'RSS now/peak MiB ' + proc:34}" + "".join(
            f"{fmt_rss(results[i]['rss'].get(proc, {})):>14}" for i in impls
        )
        print(line)
    for i in impls:
        print(f"  {i}: node = {results[i]['node']}")


def otel_worker_args(args) -> list[str]:
    """The worker flags that carry the current --otel mode (none outside --otel runs)."""
    mode = getattr(args, "otel_mode", None)
    if not mode:
        return []
    out = ["--otel-mode", mode]
    if args.otel_endpoint:
        out += ["--otel-endpoint", args.otel_endpoint]
    if args.otel_sampling is not None:
        out += ["--otel-sampling", str(args.otel_sampling)]
    return out


class OtlpSink:
    """An OTLP/gRPC endpoint on loopback that accepts every export (traces, metrics, logs) and discards
    it, counting requests and bytes so the table can show that export really happened."""

    SERVICES = (
        "opentelemetry.proto.collector.trace.v1.TraceService",
        "opentelemetry.proto.collector.metrics.v1.MetricsService",
        "opentelemetry.proto.collector.logs.v1.LogsService",
    )

    def __init__(self):
        import concurrent.futures

        import grpc  # the sink's only dependency: pip install grpcio

        self.lock = threading.Lock()
        self.requests: dict[str, int] = {}
        self.bytes = 0

        def handler(service: str):
            def export(request: bytes, _context) -> bytes:
                with self.lock:
                    self.requests[service] = self.requests.get(service, 0) + 1
                    self.bytes += len(request)
                return b""  # an empty Export*ServiceResponse

            # No (de)serializers: requests arrive as bytes, the response goes out as given.
            return grpc.unary_unary_rpc_method_handler(export)

        handlers = [
            grpc.method_handlers_generic_handler(svc, {"Export": handler(svc.split(".")[-1])})
            for svc in self.SERVICES
        ]
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2), handlers=handlers)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.endpoint = f"http://127.0.0.1:{port}"

    def take(self) -> dict:
        with self.lock:
            out = {"requests": dict(self.requests), "bytes": self.bytes}
            self.requests, self.bytes = {}, 0
        return out

    def stop(self):
        self.server.stop(grace=1).wait(5)


def run_otel(args) -> int:
    """--otel: ours with OpenTelemetry never initialised / off / on, interleaved, medians side by side."""
    if args.identity != "shared":
        print(
            "--otel: apps use shared-secret identities (--identity is not combined with --otel)",
            file=sys.stderr,
        )
        args.identity = "shared"
    python = args.ours_python
    why = ours_available(python)
    if why:
        print(f"--otel needs our package: not importable with {python}: {why}", file=sys.stderr)
        return 1
    sink = None
    if not args.otel_endpoint:
        try:
            sink = OtlpSink()
        except ImportError:
            print(
                "--otel needs grpcio for the loopback sink: pip install grpcio "
                "(or give --otel-endpoint of a running collector)",
                file=sys.stderr,
            )
            return 1
    modes = ("never", "off", "on")
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    failed = False
    try:
        for r in range(args.repeat):
            for mode in modes:
                args.otel_mode = mode
                saved_endpoint = args.otel_endpoint
                if mode == "on" and sink is not None:
                    args.otel_endpoint = sink.endpoint
                print(
                    f"running ours, OpenTelemetry {mode} ({r + 1}/{args.repeat}) ...",
                    file=sys.stderr,
                    flush=True,
                )
                try:
                    res = run_impl("ours", python, args)
                    if sink is not None:
                        res["sink"] = sink.take()
                    runs[mode].append(res)
                except Exception as e:  # noqa: BLE001 - reported, then the run goes on
                    print(f"OpenTelemetry {mode} failed: {e}", file=sys.stderr)
                    failed = True
                finally:
                    args.otel_endpoint = saved_endpoint
    finally:
        args.otel_mode = None
        if sink is not None:
            sink.stop()
    if all(runs[m] for m in modes):
        print_otel_table(runs, args)
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2))
    return 1 if failed else 0


def print_otel_table(runs: dict, args) -> None:
    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[mode])

    rows = [
        ("one-way msgs/s at receiver", "recv_rate", "{:,.0f}", True),
        ("sender publish rate msgs/s", "send_rate", "{:,.0f}", True),
        ("round-trip p50 ms", "p50_ms", "{:.3f}", False),
        ("round-trip p99 ms", "p99_ms", "{:.3f}", False),
    ]
    for r in (r for m in runs.values() for r in m):
        r["cpu_us_per_msg"] = 1e6 * sum(r.get("stream_cpu", {}).values()) / max(1, r["received"])
    rows.append(("CPU us/msg, all processes", "cpu_us_per_msg", "{:.2f}", False))
    sampling = "library default" if args.otel_sampling is None else args.otel_sampling
    print()
    print(
        f"e2e OpenTelemetry cost (ours): {args.size}-byte messages, stream of {args.messages:,}, "
        f"{args.round_trips:,} round trips, median of {args.repeat} interleaved run(s) per mode; "
        f"on = export from both apps and the node, sampling_ratio {sampling}"
    )
    print(f"{'metric':30}{'never':>12}{'off':>12}{'on':>12}{'off/never':>11}{'on/off':>9}")
    for label, key, f, higher in rows:
        never, off, on = med("never", key), med("off", key), med("on", key)
        line = f"{label:30}" + "".join(f"{f.format(v):>12}" for v in (never, off, on))
        if higher:
            line += (
                f"{off / never if never else float('nan'):>11.3f}{on / off if off else float('nan'):>9.3f}"
            )
        else:  # latency and CPU (lower is better): inverted, so > 1 still means "faster"
            line += f"{never / off if off else float('nan'):>11.3f}{off / on if on else float('nan'):>9.3f}"
        print(line)
    for mode in ("on",):
        sinks = [r.get("sink") for r in runs[mode] if r.get("sink")]
        if sinks:
            reqs: dict[str, int] = {}
            for s in sinks:
                for k, v in s["requests"].items():
                    reqs[k] = reqs.get(k, 0) + v
            print(
                f"  sink received (all 'on' runs): {reqs or 'nothing'}, {sum(s['bytes'] for s in sinks):,} bytes"
            )
    print("  ratios > 1.000 mean the second mode was faster; on/off >= 0.900 is the target")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impl", choices=["ours", "060", "both"], default="both")
    add_scenario_options(p)
    p.add_argument("--ours-python", default=sys.executable, help="python that imports our package")
    p.add_argument(
        "--node",
        choices=["own", "060", "ours"],
        default="own",
        help="router for every run: each implementation's own (default), or one for all",
    )
    p.add_argument(
        "--ours-node",
        choices=["auto", "package"],
        default="auto",
        help="our router: the slim binary when one is found (auto), or our package's run_server",
    )
    p.add_argument(
        "--slim-bin", help="our node binary (default $SLIM_BIN, target/release/slim, target/debug/slim)"
    )
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument(
        "--identity",
        choices=["shared", "jwt", "compare"],
        default="shared",
        help="app identities: shared secret, ES256 JWT, or both in the same run (compare)",
    )
    p.add_argument("--jwt-keys", help=argparse.SUPPRESS)
    p.add_argument(
        "--otel",
        action="store_true",
        help="OpenTelemetry cost of ours: never initialised vs off vs on (export to a loopback sink)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="--otel / --identity compare: runs per mode (interleaved; medians shown)",
    )
    p.add_argument(
        "--otel-endpoint", help="--otel: OTLP/gRPC collector to export to (default: a loopback sink)"
    )
    p.add_argument(
        "--otel-sampling", type=float, help="--otel: opentelemetry.sampling_ratio (default: the library's)"
    )
    p.add_argument("--otel-mode", choices=["never", "off", "on"], help=argparse.SUPPRESS)
    p.add_argument("--worker", choices=["node", "responder", "requester"], help=argparse.SUPPRESS)
    p.add_argument("--endpoint", help=argparse.SUPPRESS)
    p.add_argument("--listen", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.size < 1:
        p.error("--size must be at least 1")
    if args.worker:
        return worker_main(args)
    if args.otel:
        return run_otel(args)

    identities = ["shared", "jwt"] if args.identity == "compare" else [args.identity]
    keys_dir = tempfile.TemporaryDirectory(prefix="slim-bench-keys-")
    if "jwt" in identities:
        make_es256_keys(keys_dir.name)
        args.jwt_keys = keys_dir.name
    by_identity: dict = {}
    failed = False
    wanted = ["060", "ours"] if args.impl == "both" else [args.impl]
    # compare: the identities alternate, --repeat rounds, so both see the same load; medians are reported.
    rounds = max(1, args.repeat) if len(identities) > 1 else 1
    runs: dict = {}
    for _ in range(rounds):
        for ident in identities:
            args.identity = ident
            for impl in wanted:
                if impl == "060":
                    python = python_060()
                else:
                    python = args.ours_python
                    why = ours_available(python)
                    if why:
                        print(
                            f"skipping ours: our slim_bindings is not importable with {python}: {why}",
                            file=sys.stderr,
                        )
                        continue
                print(f"running {impl} ({ident} identity) ...", file=sys.stderr, flush=True)
                try:
                    runs.setdefault(ident, {}).setdefault(impl, []).append(run_impl(impl, python, args))
                except Exception as e:  # noqa: BLE001 - reported, then the run goes on
                    print(f"{impl} ({ident} identity) failed: {e}", file=sys.stderr)
                    failed = True
    for ident in identities:
        results = by_identity.setdefault(ident, {})
        for impl, measured in runs.get(ident, {}).items():
            results[impl] = dict(measured[-1])
            for key, value in measured[-1].items():
                if isinstance(value, (int, float)):
                    results[impl][key] = statistics.median(m[key] for m in measured)
        if results:
            if len(identities) > 1 or ident != "shared":
                print(f"\nidentity: {ident}" + (f" (medians of {rounds} runs)" if rounds > 1 else ""))
            print_table(results, args)
    keys_dir.cleanup()
    if len(identities) > 1:
        print_identity_ratios(by_identity)
    results = by_identity.get("shared") or by_identity.get("jwt") or {}
    if args.json:
        Path(args.json).write_text(json.dumps(by_identity if len(identities) > 1 else results, indent=2))
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
