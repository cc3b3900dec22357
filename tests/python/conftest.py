"""Fixtures: a real node (our run_server on 127.0.0.1:0) and real apps connected to it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest_asyncio

import slim_bindings

SECRET = "test-secret"


def shared_secret(identity: str, secret: str = SECRET) -> tuple[Any, Any]:
    """A provider/verifier pair."""
    return (
        slim_bindings.PyIdentityProvider.SharedSecret(identity=identity, shared_secret=secret),
        slim_bindings.PyIdentityVerifier.SharedSecret(identity=identity, shared_secret=secret),
    )


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Polls a condition that has no event to await (e.g. a remote node's table), bounded."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass
class Node:
    """The node under test: a server app plus the client config that reaches it."""

    app: slim_bindings.Slim
    listen: str
    bound: str
    apps: list[slim_bindings.Slim] = field(default_factory=list)

    @property
    def client_config(self) -> dict[str, Any]:
        return {"endpoint": f"http://{self.bound}", "tls": {"insecure": True}}

    def has_subscription(self, name: slim_bindings.PyName) -> bool:
        return any(n == name for n in self.app.svc.subscribed_names())

    async def new_app(
        self, org: str, ns: str, app: str, secret: str = SECRET, connect: bool = True
    ) -> slim_bindings.Slim:
        """An app with its own node; connected (and its subscription visible here) if asked."""
        provider, verifier = shared_secret(f"{org}/{ns}/{app}", secret)
        slim = await slim_bindings.Slim.new(slim_bindings.PyName(org, ns, app), provider, verifier)
        self.apps.append(slim)
        if connect:
            await slim.connect(self.client_config)
            await wait_until(lambda: self.has_subscription(slim.local_name), what=f"subscription of {app}")
        return slim


@pytest_asyncio.fixture
async def node() -> AsyncIterator[Node]:
    """A node serving on a free loopback port; stopped at the end."""
    provider, verifier = shared_secret("agntcy/default/server")
    server = await slim_bindings.Slim.new(
        slim_bindings.PyName("agntcy", "default", "server"), provider, verifier
    )
    listen = "127.0.0.1:0"
    bound = await server.run_server_bound({"endpoint": listen, "tls": {"insecure": True}})
    n = Node(app=server, listen=listen, bound=bound)
    try:
        yield n
    finally:
        for app in n.apps:
            for endpoint in list(app.conn_ids):
                try:
                    await app.disconnect(endpoint)
                except slim_bindings.SlimError:
                    pass
        await server.stop_server(listen)


class Hung(AssertionError):
    """An awaited call neither returned nor raised within its bound. Deliberately not a
    ``TimeoutError``: ``pytest.raises(SLIMTimeoutError)`` (a ``TimeoutError``) must not pass on a hang."""


async def _settle(task: asyncio.Future[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def bounded(aw: Awaitable[Any], timeout: float = 10.0) -> Any:
    """Awaits with a bound, so a hang is a failure (``Hung``) rather than a stuck run. Whatever
    ``aw`` raises (``SLIMTimeoutError`` included) comes through unchanged."""
    task = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    finally:
        if not task.done():
            await _settle(task)
    if not done:
        raise Hung(f"no answer within {timeout} s")
    return task.result()


async def nothing_within(aw: Awaitable[Any], seconds: float) -> None:
    """The negative check "nothing arrives for a while": ``aw`` (a receive, say) must neither return
    nor raise within ``seconds``; it is then cancelled. Unlike ``pytest.raises(TimeoutError)`` around
    ``asyncio.wait_for``, an ``SLIMTimeoutError`` or any other error from ``aw`` fails the check."""
    task = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    finally:
        if not task.done():
            await _settle(task)
    if done:
        error = task.exception()
        if error is not None:
            raise AssertionError(f"expected nothing within {seconds} s, got {error!r}") from error
        raise AssertionError(f"expected nothing within {seconds} s, got {task.result()!r}")
