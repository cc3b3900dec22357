"""The two tokio runtimes of a process (src/python/runtime.rs): apps run on one worker thread
(``slim-rt``), servers on their own runtime (``slim-srv``, one worker per core) started only by a
process that serves; ``TOKIO_WORKER_THREADS`` overrides both. Each configuration carries real
round trips, in a fresh process (the runtimes are per process)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import Node

WORKER = r"""
import asyncio, json, os, sys
import slim_bindings as sb

def threads():
    names = []
    for t in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{t}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass
    return {k: sum(n.startswith(k) for n in names) for k in ("slim-rt", "slim-srv")}

async def started(serving):
    # A worker thread takes its name when it first runs, which on a loaded machine can come after
    # the round trips (they need only one worker): with WANT_WORKERS, wait (bounded) until every
    # runtime has shown that many, then report what is there (the test's assertion judges it).
    want = int(os.environ.get("WANT_WORKERS", "0"))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        seen = threads()
        if (seen["slim-rt"] >= want and seen["slim-srv"] >= (want if serving else 0)) or loop.time() > deadline:
            return seen
        await asyncio.sleep(0.01)  # no event tells when a thread names itself: /proc is polled

async def app(org, name):
    ident = f"{org}/default/{name}"
    p = sb.PyIdentityProvider.SharedSecret(identity=ident, shared_secret="test-secret")
    v = sb.PyIdentityVerifier.SharedSecret(identity=ident, shared_secret="test-secret")
    return await sb.Slim.new(sb.PyName(org, "default", name), p, v)

async def round_trip(a, b, endpoint, label):
    for x in (a, b):
        await x.connect({"endpoint": f"http://{endpoint}", "tls": {"insecure": True}})
    await a.set_route(b.local_name)
    session = await a.create_session(sb.PySessionConfiguration.Anycast())
    # b's subscription reaches the node a moment after its connect: a try sent before it is
    # refused (NoRouteError on a's session) and sent again; bounded.
    for _ in range(50):
        await a.publish(session, label.encode(), b.local_name)
        try:
            info, got = await asyncio.wait_for(b.receive(), 0.2)
            break
        except asyncio.TimeoutError:
            continue
    else:
        raise SystemExit(f"{label}: nothing arrived")
    assert got == label.encode(), got
    await b.publish_to(info, b"re:" + got)
    for _ in range(50):
        try:
            _, reply = await asyncio.wait_for(a.receive(session=session.id), 10)
            break
        except sb.NoRouteError:
            continue
    assert reply == b"re:" + got, reply

async def main():
    remote = sys.argv[1]
    await round_trip(await app("org", "a1"), await app("org", "b1"), remote, "apps only")
    apps_only = await started(False)
    server = await app("org", "srv")
    bound = await server.run_server_bound({"endpoint": "127.0.0.1:0", "tls": {"insecure": True}})
    await round_trip(await app("org", "a2"), await app("org", "b2"), bound, "through our server")
    print(json.dumps({"apps_only": apps_only, "serving": await started(True), "cores": os.cpu_count()}), flush=True)

asyncio.run(main())
"""


async def _run(node: Node | str, env: dict[str, str]) -> dict[str, dict[str, int]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WORKER,
        node if isinstance(node, str) else node.bound,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()[-2000:]
    return json.loads(out.decode().strip().splitlines()[-1])


@pytest.mark.asyncio
async def test_apps_on_one_worker_servers_on_their_own_runtime(node: Node) -> None:
    if "TOKIO_WORKER_THREADS" in os.environ:
        pytest.skip("TOKIO_WORKER_THREADS is set in this environment")
    seen = await _run(node, {})
    assert seen["apps_only"] == {"slim-rt": 1, "slim-srv": 0}, seen
    assert seen["serving"]["slim-rt"] == 1, seen
    # tokio's default: one per core it may use (affinity and cgroup quota included).
    assert 1 <= seen["serving"]["slim-srv"] <= seen["cores"], seen


@pytest.mark.asyncio
async def test_tokio_worker_threads_sizes_both_runtimes(node: Node) -> None:
    seen = await _run(node, {"TOKIO_WORKER_THREADS": "3", "WANT_WORKERS": "3"})
    assert seen["apps_only"] == {"slim-rt": 3, "slim-srv": 0}, seen
    assert seen["serving"] == {"slim-rt": 3, "slim-srv": 3}, seen


def _thread_names(pid: int) -> list[str]:
    names = []
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass  # the thread ended while we listed them
    return names


@pytest.mark.asyncio
@pytest.mark.parametrize("n_cores", [1, 2])
async def test_package_node_reads_runtime_n_cores(tmp_path, n_cores: int) -> None:
    """`python -m slim_bindings node --config` gives the node `runtime.n_cores` workers of its
    own, named `runtime.thread_name`, as the `slim` binary does; and that node routes."""
    config = tmp_path / "node.yaml"
    config.write_text(
        f"runtime: {{n_cores: {n_cores}, thread_name: yaml-node}}\n"
        "services:\n"
        "  slim/0:\n"
        "    dataplane:\n"
        '      servers: [{endpoint: "127.0.0.1:0", tls: {insecure: true}}]\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "TOKIO_WORKER_THREADS"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "slim_bindings",
        "node",
        "--config",
        str(config),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert "listening on" in line, line
        bound = line.split()[-1]
        # A new thread takes its name when it first runs, which on a busy machine can be a while
        # after the node listens: bounded wait for the count.
        deadline = time.monotonic() + 30
        while (names := _thread_names(proc.pid)).count("yaml-node") < n_cores and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert names.count("yaml-node") == n_cores, names
        assert "slim-srv" not in names, names  # the servers' runtime was never started
        seen = await _run(bound, {})  # two apps in another process: a round trip through the node
        assert seen["apps_only"]["slim-rt"] == 1, seen
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, (await proc.stderr.read()).decode()[-2000:] if proc.stderr else ""
