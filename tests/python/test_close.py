"""What an app sent before it closes leaves the process (docs/reliability.md, "Closing an app"),
and what it sent on a session before deleting it leaves too ("Deleting a session").

A sender in its own process publishes a stream and exits as soon as its last `publish_many` call has
returned; the reader, on the test's node, must get every message, once and in order. Both ways an app
closes: dropped (the coroutine that held it returned) and still open at interpreter exit. Then a
sender that deletes its session right after its last `publish_many` and stays open. Either way,
the reader's session then ends with `PeerClosedError` naming the sender (docs/protocol.md,
"Closing"), and is gone from its app.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

import slim_bindings
from conftest import Node
from interop_test_helpers import PeerProcess

WORKER = str(Path(__file__).resolve().parent / "close_worker.py")
SECRET = "close-secret-0123456789abcdef"
COUNT = 3000


async def ended_by_peer(reader: slim_bindings.Slim, session: int) -> slim_bindings.PeerClosedError:
    """The error that ends the reader's session once its messages were taken: the sender's close
    notice. A reliable session may first report acknowledgements that found no route to a sender
    that has exited (`NoRouteError`)."""
    for _ in range(100):
        try:
            got = await asyncio.wait_for(reader.receive(session=session), 10)
        except slim_bindings.NoRouteError:
            continue
        except slim_bindings.PeerClosedError as e:
            return e
        raise AssertionError(f"a message after the last one: {got!r}")
    raise AssertionError("only NoRouteErrors")


@pytest.mark.asyncio
@pytest.mark.parametrize("reliable", [False, True], ids=["default", "reliable"])
@pytest.mark.parametrize("keep", ["local", "global"])
async def test_what_was_sent_before_exit_arrives(node: Node, keep: str, reliable: bool) -> None:
    name = f"reader-{keep}-{int(reliable)}"
    reader = await node.new_app("org", "close", name, secret=SECRET)
    argv = [sys.executable, "-u", WORKER, "--endpoint", f"http://{node.bound}", "--local", "org/close/sender"]
    argv += ["--remote", f"org/close/{name}", "--count", str(COUNT), "--keep", keep]
    argv += ["--reliable"] if reliable else []
    sender = PeerProcess(argv, f"sender ({keep})")
    try:
        # The session's first message announces it here and is also the first its queue gives.
        info, _first = await asyncio.wait_for(reader.receive(), 30)
        got: list[int] = []
        errors = 0
        while len(got) < COUNT:
            try:
                batch = await asyncio.wait_for(reader.receive_many(info.id, max_messages=256), 10)
            except asyncio.TimeoutError:
                break
            except slim_bindings.NoRouteError:
                # Reliable: an acknowledgement to the sender that has exited finds no route; the
                # session says so in the stream, the messages after it are still there.
                errors += 1
                if errors > 100:
                    break
                continue
            got.extend(int.from_bytes(payload, "big") for _info, payload in batch)
        assert sender.finish(30) == 0, sender.diagnostics()
        assert sender.of("sent") == [{"event": "sent", "count": COUNT}], sender.diagnostics()
        first_wrong = next((i for i, n in enumerate(got) if n != i), len(got))
        assert got == list(range(COUNT)), f"got {len(got)} of {COUNT}, in order up to {first_wrong}"
        ended = await ended_by_peer(reader, info.id)
        assert ended.peer.components_strings()[:3] == ["org", "close", "sender"] and ended.undelivered == 0
        with pytest.raises(slim_bindings.SessionClosedError):
            await reader.publish_to(info, b"too late")
    finally:
        sender.kill()


@pytest.mark.asyncio
@pytest.mark.parametrize("reliable", [False, True], ids=["default", "reliable"])
async def test_what_was_sent_before_delete_session_arrives(node: Node, reliable: bool) -> None:
    # A reliable (sticky) session holds its first publishes until discovery has found the peer,
    # and every publish until it is acknowledged: deleting it at once used to drop them silently.
    name = f"reader-delete-{int(reliable)}"
    count = 500
    reader = await node.new_app("org", "close", name, secret=SECRET)
    argv = [sys.executable, "-u", WORKER, "--endpoint", f"http://{node.bound}", "--local", "org/close/del"]
    argv += ["--remote", f"org/close/{name}", "--count", str(count), "--keep", "delete"]
    argv += ["--reliable"] if reliable else []
    sender = PeerProcess(argv, "sender (delete)", stdin_pipe=True)
    try:
        info, _first = await asyncio.wait_for(reader.receive(), 30)
        got: list[int] = []
        while len(got) < count:
            try:
                batch = await asyncio.wait_for(reader.receive_many(info.id, max_messages=256), 10)
            except asyncio.TimeoutError:
                break
            got.extend(int.from_bytes(payload, "big") for _info, payload in batch)
        deleted = await asyncio.to_thread(sender.wait_event, "deleted", 30)
        assert deleted[0]["after"] == "SessionNotFoundError", sender.diagnostics()
        first_wrong = next((i for i, n in enumerate(got) if n != i), len(got))
        assert got == list(range(count)), f"got {len(got)} of {count}, in order up to {first_wrong}"
        ended = await ended_by_peer(reader, info.id)
        assert ended.peer.components_strings()[:3] == ["org", "close", "del"] and ended.session_id == info.id
        sender.close_stdin()
        assert sender.finish(30) == 0, sender.diagnostics()
    finally:
        sender.kill()
