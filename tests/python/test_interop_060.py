"""Wire interop: apps built on the released slim-bindings 0.6.0 wheel talk through a node.

`node` is parametrized: "ours" is our standalone `slim` binary (what these tests are for); "060" is a 0.6.0
node, the reference, which checks that the peer scripts and the expectations themselves are right. Every
app is a separate process (tests/python/interop_peers/peer060.py) on loopback; the tests read the JSON
events the apps print. Skipped only when the 0.6.0 wheel cannot be fetched from the package registry.
"""

from __future__ import annotations

import pytest

from interop_test_helpers import p2p_echo, python060, run_group, start_node, start_peer, start_peer060

NODES = ["ours", "060"]


@pytest.fixture(scope="module")
def venv060():
    """The 0.6.0 venv (installed once); fails when it cannot be installed, unless SLIM_SKIP_INTEROP_060 says why not."""
    return python060()


@pytest.fixture(params=NODES)
def node(request, venv060):
    node = start_node(request.param)
    yield node
    node.stop()


@pytest.fixture
def peers():
    """Collects started peers so that every one is killed at the end, pass or fail."""
    started = []
    yield started
    for p in started:
        p.kill()


def _spawn(peers, *args, **kwargs):
    p = start_peer060(*args, **kwargs)
    peers.append(p)
    return p


P2P_CASES = [
    pytest.param("agntcy/interop/alice", "agntcy/interop/bob", False, False, id="alice-to-bob"),
    pytest.param("agntcy/interop/bob", "agntcy/interop/alice", False, False, id="bob-to-alice"),
    pytest.param("agntcy/interop/alice", "agntcy/interop/bob", True, False, id="alice-to-bob-reliable"),
    pytest.param("agntcy/interop/bob", "agntcy/interop/alice", True, True, id="bob-to-alice-reliable-mls"),
]


@pytest.mark.parametrize("sender_name,responder_name,reliable,mls", P2P_CASES)
def test_p2p_echo_between_060_apps(node, peers, sender_name, responder_name, reliable, mls):
    """A PointToPoint session from one 0.6.0 app to another through the node; every message comes back."""
    extra = ["--reliable"] if reliable else []
    extra += ["--mls"] if mls else []
    sender, responder = p2p_echo(
        peers,
        "060",
        "060",
        responder_endpoint=node.endpoint,
        sender_endpoint=node.endpoint,
        responder_name=responder_name,
        sender_name=sender_name,
        message=f"ping from {sender_name}",
        sender_args=("--metadata", '{"trace": "interop"}', *extra),
        diagnostics=node.proc.diagnostics,
    )
    responder_ready = responder.of("ready")[0]
    sender_ready = sender.of("ready")[0]
    # Echoes are addressed to the sender instance; messages to the responder's name.
    for r in sender.of("received"):
        assert r["destination_components"] == sender_ready["name_components"]
    for g in responder.of("received"):
        assert g["destination_components"][:3] == responder_ready["name_components"][:3]

    # Both ends see the same session; the responder's session points back at the sender instance.
    s_sess = sender.of("session")[0]
    r_sess = responder.of("session")[0]
    assert s_sess["session_type"].endswith("PointToPoint")
    assert r_sess["session_type"].endswith("PointToPoint")
    assert s_sess["dst_components"][:3] == responder_ready["name_components"][:3]
    assert r_sess["dst_components"] == sender_ready["name_components"]
    assert r_sess["metadata"].get("trace") == "interop"


@pytest.mark.parametrize("mls", [False, True], ids=["no-mls", "mls"])
def test_group_between_060_apps(node, peers, mls):
    """A Group session: a 0.6.0 moderator invites two 0.6.0 members; everyone hears everyone else."""
    run_group(node.endpoint, peers, "060", ["060", "060"], mls=mls)


@pytest.mark.parametrize("kind", NODES)
def test_p2p_session_survives_node_restart(venv060, peers, kind):
    """The node stops and comes back on the same port: both 0.6.0 apps reconnect, re-subscribe, and the
    same reliable session carries traffic again."""
    node = start_node(kind)
    try:
        responder = _spawn(
            peers,
            "p2p-responder",
            "--endpoint",
            node.endpoint,
            "--local",
            "agntcy/interop/bob",
            "--count",
            "0",
            "--idle-timeout",
            "60",
            name="responder",
        )
        responder.wait_event("ready", 20)
        sender = _spawn(
            peers,
            "p2p-sender",
            "--endpoint",
            node.endpoint,
            "--local",
            "agntcy/interop/alice",
            "--remote",
            "agntcy/interop/bob",
            "--reliable",
            "--stdin-steps",
            "--reply-timeout",
            "3",
            "--attempts",
            "10",
            name="sender",
            stdin_pipe=True,
        )
        sender.send_line("before restart")
        sender.wait_event("step-done", 20, predicate=lambda e: e["n"] == 0)

        port = node.port
        node.stop()
        node = start_node(kind, port=port)

        sender.send_line("after restart")
        sender.wait_event("step-done", 40, predicate=lambda e: e["n"] == 1)
        sender.send_line("exit")
        sender.close_stdin()
        assert sender.finish(20) == 0, sender.diagnostics()
        s_sess = sender.of("session")[0]
        # The responder printed it before echoing it, but its line may still be on the way to the
        # reader thread: waited for, not just looked up.
        responder.wait_event("received", 20, predicate=lambda e: e["payload"] == "after restart")
        got = [e for e in responder.of("received")]
        assert {e["payload"] for e in got} >= {"before restart", "after restart"}
        assert all(e["session_id"] == s_sess["session_id"] for e in got)
    finally:
        node.stop()


MIXED_CASES = [
    pytest.param("ours", "060", False, False, id="ours-to-060"),
    pytest.param("060", "ours", False, False, id="060-to-ours"),
    pytest.param("ours", "060", True, False, id="ours-to-060-reliable"),
    pytest.param("060", "ours", True, False, id="060-to-ours-reliable"),
    pytest.param("ours", "060", True, True, id="ours-to-060-reliable-mls"),
    pytest.param("060", "ours", True, True, id="060-to-ours-reliable-mls"),
]


@pytest.mark.parametrize("sender_impl,responder_impl,reliable,mls", MIXED_CASES)
def test_p2p_echo_between_our_app_and_060_app(venv060, peers, sender_impl, responder_impl, reliable, mls):
    """One of OUR apps and one 0.6.0 app, point to point through our node, each way."""
    node = start_node("ours")
    try:
        p2p_echo(
            peers,
            responder_impl,
            sender_impl,
            responder_endpoint=node.endpoint,
            sender_endpoint=node.endpoint,
            responder_name="agntcy/interop/bob",
            sender_name="agntcy/interop/alice",
            message=f"ping from {sender_impl}",
            sender_args=(*(["--reliable"] if reliable else []), *(["--mls"] if mls else [])),
            diagnostics=node.proc.diagnostics,
        )
    finally:
        node.stop()


def _group_layouts():
    """Every mix of a moderator and members (ours or 0.6.0), two members in either order and three
    alternating, MLS off and on; all-0.6.0 groups are test_group_between_060_apps. Every member
    publishes once (one at a time, see run_group), so each reads every other member's message."""
    layouts = [
        ["060", "060"],
        ["ours", "060"],
        ["060", "ours"],
        ["ours", "ours"],
        ["ours", "060", "ours"],
        ["060", "ours", "060"],
    ]
    cases = []
    for mls in (False, True):
        for moderator in ("ours", "060"):
            for members in layouts:
                if moderator == "060" and members == ["060", "060"]:
                    continue
                ident = f"{moderator}-moderator-{'-'.join(members)}-members" + ("-mls" if mls else "")
                cases.append(pytest.param(moderator, members, mls, id=ident))
    return cases


MIXED_GROUPS = _group_layouts()


@pytest.mark.parametrize("moderator_impl,member_impls,mls", MIXED_GROUPS)
def test_group_between_our_apps_and_060_apps(venv060, peers, moderator_impl, member_impls, mls):
    """A Group (multicast) session mixing our apps and 0.6.0 apps, through our node."""
    node = start_node("ours")
    try:
        run_group(node.endpoint, peers, moderator_impl, member_impls, mls=mls)
    finally:
        node.stop()


@pytest.mark.parametrize("kind", ["anycast", "unicast", "reliable"])
def test_a_060_responder_reading_past_our_close_notice_sees_nothing(venv060, peers, kind):
    """Our sender deletes its session once it has its echoes, which sends SESSION_CLOSE (an extension,
    docs/protocol.md "Closing"); a 0.6.0 responder still reading that session afterwards gets neither a
    message nor an error from it (it only logs one line), for every kind of point-to-point session."""
    node = start_node("ours")
    try:
        responder = start_peer(
            "060", "p2p-responder", "--endpoint", node.endpoint, "--local", "agntcy/interop/bob",
            "--count", "0", "--idle-timeout", "3", name="responder (060)",
        )  # fmt: skip
        peers.append(responder)
        responder.wait_event("ready", 30)
        kind_args = ["--reliable"] if kind == "reliable" else ["--session-kind", kind]
        sender = start_peer(
            "ours", "p2p-sender", "--endpoint", node.endpoint, "--local", "agntcy/interop/alice",
            "--remote", "agntcy/interop/bob", "--count", "3", *kind_args, name="sender (ours)",
        )  # fmt: skip
        peers.append(sender)
        assert sender.finish(60) == 0, sender.diagnostics() + responder.diagnostics()
        # The responder reads until 3 s pass without anything: the notice came and went meanwhile.
        assert responder.finish(30) == 0, responder.diagnostics() + node.proc.diagnostics()
        assert [e["echoed"] for e in responder.of("done")] == [3], responder.diagnostics()
        assert responder.of("error") == [], responder.diagnostics()
    finally:
        node.stop()


@pytest.mark.parametrize("mls", [False, True], ids=["reliable", "reliable-mls"])
def test_a_060_responder_is_never_taken_for_gone(venv060, peers, mls):
    """Our sticky initiator offers heartbeats with a 0.5 s liveness bound (docs/liveness.md); a 0.6.0
    responder does not echo the offer, so it is neither pinged nor watched: after idle gaps of four
    bounds each, every message still gets its echo on the same session (a PeerLostError would end the
    sender with an error)."""
    node = start_node("ours")
    try:
        p2p_echo(
            peers,
            "060",
            "ours",
            responder_endpoint=node.endpoint,
            sender_endpoint=node.endpoint,
            responder_name="agntcy/interop/bob",
            sender_name="agntcy/interop/alice",
            message="after a pause",
            sender_args=("--reliable", "--liveness", "0.5", "--pause", "2", *(["--mls"] if mls else [])),
            count=3,
            diagnostics=node.proc.diagnostics,
        )
    finally:
        node.stop()
