"""Observability: `python -m slim_bindings` (version, embedded node) and Rust logs in `logging`."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import re
import signal
import socket
import sys
import threading

import pytest

import slim_bindings
from conftest import Node, bounded, shared_secret
from slim_bindings import PyName, PySessionConfiguration

# PEP 440 public version (the canonical regex from the spec, without local labels).
PEP440 = re.compile(
    r"^([1-9][0-9]*!)?(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*((a|b|rc)(0|[1-9][0-9]*))?"
    r"(\.post(0|[1-9][0-9]*))?(\.dev(0|[1-9][0-9]*))?$"
)


def test_version_is_pep440_and_the_package_version() -> None:
    assert PEP440.match(slim_bindings.__version__), slim_bindings.__version__
    assert slim_bindings.__version__ == importlib.metadata.version("slim-bindings")


@pytest.mark.asyncio
async def test_module_prints_version_and_build_info() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "slim_bindings", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await bounded(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert f"slim-bindings {slim_bindings.__version__}" in text
    assert "Profile:" in text and "Git SHA:" in text


async def _app(name: str) -> slim_bindings.Slim:
    provider, verifier = shared_secret(f"org/default/{name}")
    return await slim_bindings.Slim.new(PyName("org", "default", name), provider, verifier)


@pytest.mark.asyncio
async def test_module_runs_an_embedded_node_until_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "slim_bindings",
        "node",
        "--endpoint",
        "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await bounded(proc.stdout.readline(), timeout=30)).decode()
        match = re.search(r"listening on (127\.0\.0\.1:\d+)", line)
        assert match, line
        client = {"endpoint": f"http://{match.group(1)}", "tls": {"insecure": True}}

        # Two apps in this process route a message through the node in the child process.
        alice, bob = await _app("alice"), await _app("bob")
        await alice.connect(client)
        await bob.connect(client)
        await bob.set_route(alice.local_name)
        session = await bob.create_session(PySessionConfiguration.Anycast())
        # The node learns alice's subscription asynchronously; resend until it has (bounded).
        for _ in range(100):
            await bob.publish(session, b"via the embedded node", alice.local_name)
            try:
                _, payload = await asyncio.wait_for(alice.receive(), timeout=0.1)
                break
            except asyncio.TimeoutError:
                continue
        else:
            raise AssertionError("no message through the embedded node")
        assert payload == b"via the embedded node"

        proc.send_signal(signal.SIGTERM)
        await bounded(proc.wait(), timeout=15)
        assert proc.returncode == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.asyncio
async def test_rust_logs_reach_the_slim_bindings_logger() -> None:
    logger = logging.getLogger("slim_bindings")
    assert any(isinstance(h, logging.NullHandler) for h in logger.handlers)

    seen: list[logging.LogRecord] = []
    arrived = threading.Event()

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            # Only this app's attempts: apps of earlier tests may still be logging their own links.
            if "transport" in getattr(record, "rust_target", "") and f":{dead}" in record.getMessage():
                seen.append(record)
                arrived.set()

    capture = Capture(level=logging.DEBUG)
    logger.addHandler(capture)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    app = await _app("logger")
    try:
        slim_bindings.enable_logging("debug")
        try:
            await bounded(
                app.connect({"endpoint": f"http://127.0.0.1:{dead}", "tls": {"insecure": True}}), 60
            )
        except slim_bindings.SlimError:
            pass
        assert await asyncio.to_thread(arrived.wait, 10), "no Rust record on the slim_bindings logger"
        record = seen[0]
        assert record.name == "slim_bindings"
        assert record.levelno == logging.DEBUG
        assert str(dead) in record.getMessage()
    finally:
        slim_bindings.disable_logging("info")
        logger.removeHandler(capture)
        logger.setLevel(old_level)


@pytest.mark.asyncio
async def test_traceparent_travels_and_an_unreachable_collector_breaks_nothing(node: Node) -> None:
    with socket.socket() as s:  # a collector address nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    alice = await node.new_app("org", "default", "alice")
    bob = await node.new_app("org", "default", "bob")
    slim_bindings.init_tracing(
        {
            "log_level": "warn",
            "opentelemetry": {
                "enabled": True,
                "grpc": {"endpoint": f"http://127.0.0.1:{dead}"},
                "service_name": "slim-py-test",
                "sampling_ratio": 1.0,
            },
        }
    )
    try:
        await bob.set_route(alice.local_name)
        session = await bob.create_session(PySessionConfiguration.Anycast())
        for i in range(50):
            await bob.publish(session, str(i).encode(), alice.local_name)
        info, _ = await bounded(alice.receive())
        for i in range(50):
            info, payload = await bounded(alice.receive(session=info.id))
            assert payload == str(i).encode()
            assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", info.metadata.get("traceparent", "")), (
                info.metadata
            )
    finally:
        slim_bindings.init_tracing({"log_level": "info"})
    await bob.publish(session, b"untraced", alice.local_name)
    info, payload = await bounded(alice.receive(session=info.id))
    assert payload == b"untraced" and "traceparent" not in info.metadata
