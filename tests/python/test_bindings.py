"""End-to-end behaviour of the raw functions and the Slim wrapper, over a real node."""

from __future__ import annotations

import asyncio
import datetime
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import slim_bindings
from conftest import Node, bounded, nothing_within, shared_secret, wait_until
from slim_bindings import PyName, PySessionConfiguration


@pytest.mark.asyncio
async def test_end_to_end_raw_api(node: Node) -> None:
    alice = await node.new_app("org", "default", "alice")
    bob = await node.new_app("org", "default", "bob")

    await slim_bindings.set_route(alice.svc, alice.conn_id, bob.local_name)
    session = await slim_bindings.create_session(alice.svc, PySessionConfiguration.Anycast())
    msg = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    await slim_bindings.publish(alice.svc, session, 1, msg, name=bob.local_name)

    info, payload = await bounded(slim_bindings.receive(bob.svc))
    assert info.id == session.id
    assert payload == bytes(msg)
    assert info.source_name == alice.local_name
    assert info.destination_name.equal_without_id(bob.local_name)
    assert info.payload_type == "msg"

    # name=None replies to the sender through the connection the message came in on.
    await slim_bindings.publish(bob.svc, info, 1, payload)
    info2, payload2 = await bounded(slim_bindings.receive(alice.svc))
    assert info2.id == session.id
    assert payload2 == bytes(msg)

    assert await slim_bindings.delete_session(alice.svc, session) is None
    await slim_bindings.delete_session(bob.svc, info.id)
    with pytest.raises(slim_bindings.SessionNotFoundError, match="session not found"):
        await slim_bindings.publish(alice.svc, session, 1, msg, name=bob.local_name)
    with pytest.raises(slim_bindings.SessionNotFoundError, match="session not found"):
        await slim_bindings.delete_session(alice.svc, 123456789)


@pytest.mark.asyncio
async def test_a_peer_that_ends_its_session_raises_nothing_in_the_any_session_stream(node: Node) -> None:
    """The raw `receive(svc)` reads every session in arrival order. A peer that deletes its session
    ends that session for the session's own readers (`PeerClosedError`), not the app's whole stream."""
    alice = await node.new_app("org", "default", "alice")
    bob = await node.new_app("org", "default", "bob")
    await slim_bindings.set_route(alice.svc, alice.conn_id, bob.local_name)
    session = await slim_bindings.create_session(alice.svc, PySessionConfiguration.Anycast())
    for i in range(3):
        await slim_bindings.publish(alice.svc, session, 1, [i], name=bob.local_name)
    await slim_bindings.delete_session(alice.svc, session)
    got = [await bounded(slim_bindings.receive(bob.svc)) for _ in range(3)]
    assert [payload for _info, payload in got] == [b"\x00", b"\x01", b"\x02"]
    await nothing_within(slim_bindings.receive(bob.svc), 0.5)
    ended_id = got[0][0].id
    with pytest.raises(slim_bindings.PeerClosedError) as ended:
        await bounded(bob.receive(session=ended_id))
    assert ended.value.peer == alice.local_name
    with pytest.raises(slim_bindings.SessionClosedError):
        await bounded(bob.receive(session=ended_id))


@pytest.mark.asyncio
async def test_slim_wrapper_round_trip(node: Node) -> None:
    alice = await node.new_app("org", "default", "alice")
    bob = await node.new_app("org", "default", "bob")

    async with alice, bob:
        await bob.set_route(alice.local_name)
        session = await bob.create_session(PySessionConfiguration.Anycast())
        await bob.publish(session, b"first", alice.local_name, payload_type="greeting", metadata={"k": "v"})
        await bob.publish(session, b"second", alice.local_name)

        # receive() announces the new session with its first payload ...
        new_info, first = await bounded(alice.receive())
        assert new_info.id == session.id
        assert first == b"first"
        assert new_info.payload_type == "greeting"
        assert new_info.metadata == {"k": "v"}
        # ... and the session queue starts with that same message.
        info, m1 = await bounded(alice.receive(session=new_info.id))
        assert m1 == b"first"
        info, m2 = await bounded(alice.receive(session=new_info.id))
        assert m2 == b"second"

        await alice.publish_to(info, b"reply")
        _, reply = await bounded(bob.receive(session=session.id))
        assert reply == b"reply"

    await alice.delete_session(new_info.id)
    await bob.delete_session(session.id)
    with pytest.raises(slim_bindings.SessionNotFoundError, match="session not found"):
        await bob.publish(session, b"late", alice.local_name)


@pytest.mark.asyncio
async def test_metadata_never_contains_identity(node: Node) -> None:
    alice = await node.new_app("org", "default", "alice")
    bob = await node.new_app("org", "default", "bob")
    await bob.set_route(alice.local_name)
    session = await bob.create_session(PySessionConfiguration.Anycast())
    await bob.publish(session, b"x", alice.local_name, metadata={"user": "1"})
    info, _ = await bounded(alice.receive())
    assert info.metadata == {"user": "1"}
    assert not any(k == "SLIM_IDENTITY" or k.startswith("MLS_") for k in info.metadata)


@pytest.mark.asyncio
async def test_session_config_round_trip(node: Node) -> None:
    app = await node.new_app("org", "default", "cfg", connect=False)

    anycast = PySessionConfiguration.Anycast()
    s1 = await app.create_session(anycast)
    got = await app.get_session_config(s1.id)
    assert got == anycast
    assert isinstance(got, PySessionConfiguration.Anycast)

    reliable = PySessionConfiguration.Unicast(timeout=datetime.timedelta(milliseconds=250), max_retries=3)
    s2 = await app.create_session(reliable)
    got2 = await app.get_session_config(s2.id)
    assert isinstance(got2, PySessionConfiguration.Unicast)
    assert got2.timeout == datetime.timedelta(milliseconds=250)
    assert got2.max_retries == 3
    assert got2.liveness_timeout == datetime.timedelta(seconds=10)  # the default bound

    watched = PySessionConfiguration.Unicast(liveness_timeout=datetime.timedelta(seconds=3))
    assert await app.get_session_config((await app.create_session(watched)).id) == watched
    with pytest.raises(slim_bindings.ConfigurationError, match="liveness_timeout"):
        await app.create_session(
            PySessionConfiguration.Unicast(liveness_timeout=datetime.timedelta(milliseconds=50))
        )

    assert await app.set_default_session_config(anycast) is None
    with pytest.raises(slim_bindings.SessionNotFoundError):
        await app.get_session_config(4242)


@pytest.mark.asyncio
async def test_multicast_session_config_round_trip(node: Node) -> None:
    app = await node.new_app("org", "default", "cfg", connect=False)
    topic = PyName("org", "default", "group")
    multicast = PySessionConfiguration.Multicast(topic, False, 12345)
    assert multicast.timeout == datetime.timedelta(seconds=1)
    s3 = await app.create_session(multicast)
    got3 = await app.get_session_config(s3.id)
    assert got3 == multicast
    assert got3.topic == topic


def test_session_configuration_values() -> None:
    a = PySessionConfiguration.Anycast(datetime.timedelta(seconds=2), 4, False)
    assert (a.timeout, a.max_retries, a.mls_enabled) == (datetime.timedelta(seconds=2), 4, False)
    assert a != PySessionConfiguration.Unicast(datetime.timedelta(seconds=2), 4, False)
    m = PySessionConfiguration.Multicast(topic=PyName("a", "b", "c"))
    assert (m.moderator, m.max_retries, m.mls_enabled) == (False, 0, False)
    match m:
        case PySessionConfiguration.Multicast(topic, moderator):
            assert topic == PyName("a", "b", "c") and moderator is False
        case _:
            pytest.fail("Multicast did not match its own pattern")


@pytest.mark.asyncio
async def test_error_on_nonexistent_subscription(node: Node) -> None:
    alice = await node.new_app("org", "default", "alice")
    nobody = PyName("org", "default", "nobody")
    session = await alice.create_session(PySessionConfiguration.Anycast())
    await alice.publish(session, b"hello?", nobody)
    with pytest.raises(slim_bindings.NoRouteError, match="no matching found"):
        await bounded(alice.receive(session=session.id), 5)


@pytest.mark.asyncio
async def test_wrong_shared_secret_is_not_delivered(node: Node) -> None:
    alice = await node.new_app("org", "default", "alice", secret="right-secret")
    mallory = await node.new_app("org", "default", "mallory", secret="wrong-secret")
    carol = await node.new_app("org", "default", "carol", secret="right-secret")

    received_before = alice.svc.node_stats()["messages_received"]
    await mallory.set_route(alice.local_name)
    bad = await mallory.create_session(PySessionConfiguration.Anycast())
    await mallory.publish(bad, b"forged", alice.local_name)
    # The forged message reaches alice's node (and is dropped by her session layer) ...
    await wait_until(
        lambda: alice.svc.node_stats()["messages_received"] > received_before, what="forged message at alice"
    )

    # ... so the first thing alice's app gets is the genuine message sent afterwards.
    await carol.set_route(alice.local_name)
    good = await carol.create_session(PySessionConfiguration.Anycast())
    await carol.publish(good, b"genuine", alice.local_name)
    info, payload = await bounded(alice.receive())
    assert payload == b"genuine"
    assert info.source_name == carol.local_name
    await nothing_within(alice.receive(), 0.3)


@pytest.mark.asyncio
async def test_bad_config_dict_names_the_key(node: Node) -> None:
    app = node.app
    with pytest.raises(ValueError, match="endpoint"):
        await app.run_server({"tls": {"insecure": True}})
    with pytest.raises(ValueError, match="endpoit"):
        await app.connect({"endpoit": "http://127.0.0.1:1"})
    with pytest.raises(slim_bindings.ConfigurationError, match="insecur"):
        await app.connect({"endpoint": "http://127.0.0.1:1", "tls": {"insecur": True}})
    with pytest.raises(ValueError, match="log_levle"):
        slim_bindings.init_tracing({"log_levle": "info"})


@pytest.mark.asyncio
async def test_connect_to_dead_port_fails_typed_within_bound(node: Node) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens on `port` any more.
    app = await node.new_app("org", "default", "lonely", connect=False)
    started = time.monotonic()
    with pytest.raises(slim_bindings.SlimConnectionError) as err:
        await asyncio.wait_for(
            app.connect({"endpoint": f"http://127.0.0.1:{port}", "tls": {"insecure": True}}), 60
        )
    assert isinstance(err.value, ConnectionError)
    assert time.monotonic() - started < 60
    assert app.conn_id is None


@pytest.mark.asyncio
async def test_disconnect_then_reconnect_same_endpoint(node: Node) -> None:
    alice = await node.new_app("org", "default", "alice")
    bob = await node.new_app("org", "default", "bob")
    endpoint = node.client_config["endpoint"]

    await alice.disconnect(endpoint)
    assert alice.conn_id is None and endpoint not in alice.conn_ids
    with pytest.raises(slim_bindings.SlimConnectionError, match="connect first"):
        await alice.set_route(bob.local_name)

    conn = await alice.connect(node.client_config)
    assert alice.conn_ids[endpoint] == conn
    await bob.set_route(alice.local_name)
    session = await bob.create_session(PySessionConfiguration.Anycast())
    # Alice's subscription travels again on the new connection.
    await wait_until(lambda: node.has_subscription(alice.local_name), what="alice resubscribed")
    await bob.publish(session, b"after reconnect", alice.local_name)
    _, payload = await bounded(alice.receive())
    assert payload == b"after reconnect"


@pytest.mark.asyncio
async def test_routing_before_connect_is_a_clear_error(node: Node) -> None:
    app = await node.new_app("org", "default", "early", connect=False)
    for call in (app.set_route, app.remove_route, app.subscribe, app.unsubscribe):
        with pytest.raises(slim_bindings.SlimConnectionError, match="connect first"):
            await call(PyName("org", "default", "x"))


@pytest.mark.asyncio
async def test_callers_name_is_not_mutated() -> None:
    name = PyName("org", "default", "keep")
    before = name.components()
    provider, verifier = shared_secret("org/default/keep")
    app = await slim_bindings.Slim.new(name, provider, verifier)
    assert name.components() == before
    assert name.id == 2**64 - 1
    assert app.local_name.id == app.get_id()
    assert app.local_name.equal_without_id(name)
    assert app.local_name != name


def test_pyname_semantics() -> None:
    a = PyName("org", "default", "alice")
    assert a.components()[:3] == [9745323415579563579, 2419281581437851240, 8903823788458029442]
    assert a.id == 2**64 - 1
    assert a.components_strings() == ["org", "default", "alice"]
    b = PyName("org", "default", "alice", id=5)
    assert a != b and a.equal_without_id(b)
    assert hash(a) == hash(PyName("org", "default", "alice"))
    assert len({a, PyName("org", "default", "alice")}) == 1
    assert str(a) == (
        "873e580376ea963b/219303c7c93f9668/7b90bc8fa5b6b182/ffffffffffffffff "
        "(org/default/alice/ffffffffffffffff)"
    )
    a.id = 5
    assert a == b


def test_exceptions_hierarchy() -> None:
    e = slim_bindings.SLIMTimeoutError(7, 3)
    assert isinstance(e, TimeoutError) and isinstance(e, asyncio.TimeoutError)
    assert isinstance(e, slim_bindings.SlimError)
    assert str(e) == "SLIM timeout error for session 3 and message 7"
    assert (e.message_id, e.session_id) == (7, 3)
    assert issubclass(slim_bindings.SlimConnectionError, ConnectionError)
    assert issubclass(slim_bindings.ConfigurationError, ValueError)


def test_star_import_and_exports() -> None:
    namespace: dict[str, object] = {}
    exec("from slim_bindings import *", namespace)  # noqa: S102 - a star import, as a user writes it
    for name in ("Slim", "remove", "SESSION_UNSPECIFIED", "SlimError", "NoRouteError", "__version__"):
        assert name in namespace, name
    assert slim_bindings.SESSION_UNSPECIFIED == 2**32 - 1
    assert slim_bindings.__version__ == slim_bindings.get_version() == "0.1.0"
    assert slim_bindings.get_build_profile() in ("debug", "release")
    assert slim_bindings.get_build_info().startswith("Version:\t")


def test_build_info_names_the_commit_that_was_built() -> None:
    """build.rs reruns when HEAD moves, so a build after a commit or a checkout reports that commit
    (`task python:test` builds first; run `task python:build` before running pytest by hand)."""
    root = Path(__file__).resolve().parents[2]
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=False
    )
    if head.returncode != 0:
        pytest.skip("not a git checkout (an sdist build records no commit)")
    assert f"Git SHA:\t{head.stdout.strip()}\n" in slim_bindings.get_build_info()


@pytest.mark.asyncio
async def test_payload_type_checks(node: Node) -> None:
    app = await node.new_app("org", "default", "typed", connect=False)
    session = await app.create_session(PySessionConfiguration.Anycast())
    with pytest.raises(TypeError):
        await app.publish(session, "not bytes", PyName("a", "b", "c"))  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_largest_message_crosses_a_node_and_one_byte_more_is_refused(node: Node) -> None:
    """Payload plus metadata may reach 4 MiB - 64 KiB: the rest of a node's 4 MiB frame holds the
    headers, the identity token and MLS. One byte more raises MessageTooLargeError, sends nothing
    and leaves the session (and the app's connection) as they were."""
    limit = 4 * 1024 * 1024 - 64 * 1024
    alice = await node.new_app("org", "default", "alice")
    bob = await node.new_app("org", "default", "bob")
    await bob.set_route(alice.local_name)
    config = PySessionConfiguration.Unicast(
        timeout=datetime.timedelta(seconds=1), max_retries=3, mls_enabled=True
    )
    session = await bob.create_session(config)
    with pytest.raises(slim_bindings.MessageTooLargeError, match="message too large") as e:
        await bob.publish(session, b"x" * (limit + 1), alice.local_name)
    assert (e.value.size, e.value.limit) == (limit + 1, limit)
    assert isinstance(e.value, ValueError)
    with pytest.raises(slim_bindings.MessageTooLargeError):
        await bob.publish(session, b"x" * (limit - 3), alice.local_name, metadata={"k": "vvv"})

    await bounded(bob.publish(session, b"y" * limit, alice.local_name))
    info, first = await bounded(alice.receive(), 60)
    assert info.id == session.id and first == b"y" * limit
    _, again = await bounded(alice.receive(session=info.id), 30)  # the session queue starts with it too
    assert again == first
    await bounded(bob.publish(session, b"after", alice.local_name))
    _, after = await bounded(alice.receive(session=info.id), 30)
    assert after == b"after"


@pytest.mark.asyncio
async def test_async_iteration_over_sessions_and_messages(node: Node) -> None:
    alice = await node.new_app("org", "default", "alice")
    bob = await node.new_app("org", "default", "bob")
    await bob.set_route(alice.local_name)
    session = await bob.create_session(PySessionConfiguration.Anycast())
    for i in range(3):
        await bob.publish(session, f"m{i}".encode(), alice.local_name)

    async def first_session() -> tuple[slim_bindings.PySessionInfo, bytes]:
        async for info, first in alice.sessions():
            return info, first
        raise AssertionError("sessions() ended")

    info, first = await bounded(first_session())
    assert first == b"m0"

    async def three_messages() -> list[bytes]:
        got = []
        async for _, payload in alice.messages(info.id):
            got.append(payload)
            if len(got) == 3:
                break
        return got

    assert await bounded(three_messages()) == [b"m0", b"m1", b"m2"]

    # The iterator ends when the session is deleted.
    await alice.delete_session(info.id)
    assert [p async for _, p in alice.messages(info.id)] == []


def test_cli_help_reads_as_plain_text() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "slim_bindings", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "``" not in out.stdout, out.stdout
    assert "node-info" in out.stdout and "version and build info" in out.stdout, out.stdout
