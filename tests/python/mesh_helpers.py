"""Helpers for the mesh tests: standalone nodes as separate processes (`python -m slim_bindings node --config`,
the pip user's node), linked by `clients:` entries, and apps as separate processes
(tests/python/interop_peers/mesh_app.py). Every wait is bounded; every process is killed at cleanup.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from interop_test_helpers import REPO_ROOT, PeerProcess, free_port, wait_listening
from slim_bindings.node import node_info

MESH_APP = REPO_ROOT / "tests" / "python" / "interop_peers" / "mesh_app.py"


class MeshNode:
    """One node process: label, port, the YAML it runs with; restartable (same port, same file)."""

    def __init__(self, label: str, port: int, dials: list[int]):
        self.label = label
        self.port = port
        fd, path = tempfile.mkstemp(prefix=f"slim-mesh-{label}-", suffix=".yaml")
        clients = "".join(
            f'        - endpoint: "http://127.0.0.1:{p}"\n          tls: {{insecure: true}}\n' for p in dials
        )
        with os.fdopen(fd, "w") as f:
            f.write(
                "tracing: {log_level: warn}\n"
                "services:\n"
                "  slim/0:\n"
                f"    node_id: {label}\n"
                "    dataplane:\n"
                f'      servers: [{{endpoint: "127.0.0.1:{port}", tls: {{insecure: true}}}}]\n'
                + ("      clients:\n" + clients if dials else "")
            )
        self.config = Path(path)
        self.proc: PeerProcess | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        argv = [sys.executable, "-m", "slim_bindings", "node", "--config", str(self.config)]
        self.proc = PeerProcess(argv, f"node {self.label}")
        wait_listening(self.port, timeout, self.proc.proc)

    def sigkill(self) -> None:
        assert self.proc is not None
        self.proc.proc.send_signal(signal.SIGKILL)
        self.proc.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()

    def info(self, name_filter: str = "") -> dict:
        return asyncio.run(node_info(self.endpoint, max_routes=5000, name_filter=name_filter))

    def diagnostics(self) -> str:
        return self.proc.diagnostics() if self.proc else ""


class Mesh:
    """`n` nodes; `edges` (i, j) means node i has node j in its `clients:`."""

    def __init__(self, n: int, edges: list[tuple[int, int]], prefix: str = "n"):
        ports = [free_port() for _ in range(n)]
        self.nodes = [
            MeshNode(f"{prefix}{i}", ports[i], [ports[j] for (a, j) in edges if a == i]) for i in range(n)
        ]
        self.edges = edges
        self.apps: list[PeerProcess] = []

    def start(self) -> None:
        # Servers first: a node dials its clients at start and gives up after a few seconds.
        for node in self.nodes:
            node.start()
        self.wait(
            lambda: all(self.sees_all(i) for i in range(len(self.nodes))), "every node sees every other"
        )

    def sees_all(self, i: int) -> bool:
        info = self.nodes[i].info()
        return sum(1 for n in info["nodes"] if n["reachable"]) == len(self.nodes)

    def wait(self, cond, what: str, timeout: float = 30) -> float:
        """Polls `cond` (bounded); returns how long it took."""
        start = time.monotonic()
        while not cond():
            if time.monotonic() - start > timeout:
                raise AssertionError(
                    f"timed out after {timeout} s waiting until {what}\n{self.diagnostics()}"
                )
            time.sleep(0.02)
        return time.monotonic() - start

    def routes_to(self, i: int, agent: str) -> list[dict]:
        return [r for r in self.nodes[i].info(agent)["routes"] if r["kind"] == "mesh"]

    def app(self, role: str, node: int, local: str, *args: str, stdin: bool = False) -> PeerProcess:
        argv = [
            sys.executable,
            "-u",
            str(MESH_APP),
            role,
            "--endpoint",
            self.nodes[node].endpoint,
            "--local",
            local,
            *args,
        ]
        p = PeerProcess(argv, f"{role} {local}@{self.nodes[node].label}", stdin_pipe=stdin)
        self.apps.append(p)
        return p

    def counters(self) -> list[dict]:
        return [n.info()["counters"] for n in self.nodes if n.proc and n.proc.proc.poll() is None]

    def mesh_out(self) -> int:
        """Data messages queued on mesh links, summed over the running nodes."""
        total = 0
        for n in self.nodes:
            if n.proc and n.proc.proc.poll() is None:
                total += sum(link["messages_out"] for link in n.info()["links"] if link["kind"] == "mesh")
        return total

    def diagnostics(self) -> str:
        return "\n".join([n.diagnostics() for n in self.nodes] + [a.diagnostics() for a in self.apps])

    def close(self) -> None:
        for a in self.apps:
            a.kill()
        for n in self.nodes:
            n.stop()
            n.config.unlink(missing_ok=True)


def node_info_cli(endpoint: str) -> str:
    """`python -m slim_bindings node-info --endpoint ...`, as an operator runs it."""
    proc = subprocess.run(
        [sys.executable, "-m", "slim_bindings", "node-info", "--endpoint", endpoint],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO_ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout
