"""Issue 10 item 2: a service's listening socket is closed when the last reference to it goes,
when ``stop_server`` returns, and when the interpreter exits, so the same port can be bound again
at once.

The pattern many test suites use: a fixture creates a service and ``run_server``s it on a fixed
port, kept in a module global; the next test's fixture replaces that global and serves on the
same port. Here the port is picked free once, at the start, and reused by every round.
"""

from __future__ import annotations

import gc
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

import slim_bindings
from conftest import shared_secret
from interop_test_helpers import free_port
from slim_bindings import PyName

PORT = free_port()
ROUNDS = 20
SERVER: dict[str, object] = {}


async def new_service(tag: str) -> slim_bindings.Slim:
    provider, verifier = shared_secret(f"org/ports/{tag}")
    return await slim_bindings.Slim.new(PyName("org", "ports", tag), provider, verifier)


def bind_now(port: int) -> None:
    """Binds (and releases) 127.0.0.1:port with a plain socket: fails if anything still holds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


@pytest_asyncio.fixture
async def served() -> AsyncIterator[slim_bindings.Slim]:
    """Replaces the global service with a new one serving on PORT (the old one is dropped here)."""
    SERVER["svc"] = await new_service("fixture")
    svc = SERVER["svc"]
    assert isinstance(svc, slim_bindings.Slim)
    await svc.run_server({"endpoint": f"127.0.0.1:{PORT}", "tls": {"insecure": True}})
    yield svc


@pytest.mark.asyncio
@pytest.mark.parametrize("round_", range(ROUNDS))
async def test_replacing_the_fixture_frees_the_port(served: slim_bindings.Slim, round_: int) -> None:
    # A client reaches the service this round started.
    client = await new_service(f"client{round_}")
    await client.connect({"endpoint": f"http://127.0.0.1:{PORT}", "tls": {"insecure": True}})
    await client.disconnect(f"http://127.0.0.1:{PORT}")


@pytest.mark.asyncio
async def test_dropping_the_last_reference_frees_the_port_at_once() -> None:
    SERVER.clear()  # the last fixture's service: its port must be free at once
    bind_now(PORT)
    for i in range(ROUNDS):
        svc = await new_service(f"drop{i}")
        await svc.run_server({"endpoint": f"127.0.0.1:{PORT}", "tls": {"insecure": True}})
        del svc
        gc.collect()
        bind_now(PORT)


@pytest.mark.asyncio
async def test_stop_server_frees_the_port_before_it_returns() -> None:
    SERVER.clear()
    svc = await new_service("stopper")
    client = await new_service("stopper-client")
    endpoint = f"127.0.0.1:{PORT}"
    for _ in range(ROUNDS):
        await svc.run_server({"endpoint": endpoint, "tls": {"insecure": True}})
        # With a live connection: an accepted stream must not keep the port either.
        await client.connect({"endpoint": f"http://{endpoint}", "tls": {"insecure": True}})
        await svc.stop_server(endpoint)
        bind_now(PORT)
        await client.disconnect(f"http://{endpoint}")


def test_interpreter_exit_frees_the_port() -> None:
    SERVER.clear()
    program = textwrap.dedent(
        f"""
        import asyncio, slim_bindings
        async def main():
            p = slim_bindings.PyIdentityProvider.SharedSecret(identity="org/ports/exit", shared_secret="s")
            v = slim_bindings.PyIdentityVerifier.SharedSecret(identity="org/ports/exit", shared_secret="s")
            global svc
            svc = await slim_bindings.Slim.new(slim_bindings.PyName("org", "ports", "exit"), p, v)
            await svc.run_server({{"endpoint": "127.0.0.1:{PORT}", "tls": {{"insecure": True}}}})
            print("serving", flush=True)
        asyncio.run(main())
        """
    )
    for _ in range(3):
        proc = subprocess.run(
            [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
        )
        assert proc.returncode == 0 and "serving" in proc.stdout, proc.stderr[-2000:]
        bind_now(PORT)
