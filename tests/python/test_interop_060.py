"""Wire interop: apps built on the released slim-bindings 0.6.0 wheel talk through a node.

`node` is parametrized: "ours" is our standalone `slim` binary (what these tests are for); "060" is a 0.6.0
node, the reference, which checks that the peer scripts and the expectations themselves are right. Every
app is a separate process (tests/python/interop_peers/peer060.py) on loopback; the tests read the JSON
events the apps print. Skipped only when the 0.6.0 wheel cannot be fetched from the package registry.
"""

from __future__ import annotations

import pytest

from interop_test_helpers import python060, start_node, start_peer, start_peer060

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
    count = 5
    responder = _spawn(
        peers,
        "p2p-responder",
        "--endpoint",
        node.endpoint,
        "--local",
        responder_name,
        "--count",
        str(count),
        "--reply-prefix",
        "echo:",
        name="responder",
        stdin_pipe=True,
    )
    responder_ready = responder.wait_event("ready", 20)[0]

    extra = ["--reliable"] if reliable else []
    extra += ["--mls"] if mls else []
    sender = _spawn(
        peers,
        "p2p-sender",
        "--endpoint",
        node.endpoint,
        "--local",
        sender_name,
        "--remote",
        responder_name,
        "--count",
        str(count),
        "--message",
        f"ping from {sender_name}",
        "--metadata",
        '{"trace": "interop"}',
        *extra,
        name="sender",
    )
    assert sender.finish(60) == 0, sender.diagnostics() + responder.diagnostics() + node.proc.diagnostics()
    responder.close_stdin()  # the sender has every echo: the responder may go
    assert responder.finish(30) == 0, responder.diagnostics() + node.proc.diagnostics()

    sender_ready = sender.of("ready")[0]
    sent = [e["payload"] for e in sender.of("sent")]
    replies = sender.of("received")
    assert [r["payload"] for r in replies] == [f"echo:{p}" for p in sent]
    assert len(sent) == count
    # The echo comes from the responder instance itself, addressed to the sender instance.
    for r in replies:
        assert r["source_components"] == responder_ready["name_components"]
        assert r["destination_components"] == sender_ready["name_components"]

    got = responder.of("received")
    assert [g["payload"] for g in got] == sent  # in order, none lost, none duplicated
    for g in got:
        assert g["source_components"] == sender_ready["name_components"]
        assert g["destination_components"][:3] == responder_ready["name_components"][:3]

    # Both ends see the same session; the responder's session points back at the sender instance.
    s_sess = sender.of("session")[0]
    r_sess = responder.of("session")[0]
    assert s_sess["session_id"] == r_sess["session_id"]
    assert s_sess["session_type"].endswith("PointToPoint")
    assert r_sess["session_type"].endswith("PointToPoint")
    assert s_sess["dst_components"][:3] == responder_ready["name_components"][:3]
    assert r_sess["dst_components"] == sender_ready["name_components"]
    assert r_sess["metadata"].get("trace") == "interop"


@pytest.mark.parametrize("mls", [False, True], ids=["no-mls", "mls"])
def test_group_between_060_apps(node, peers, mls):
    """A Group session: a 0.6.0 moderator invites two 0.6.0 members; everyone hears everyone else."""
    channel = "agntcy/interop/chat"
    members = ["agntcy/interop/member-1", "agntcy/interop/member-2"]
    extra = ["--mls"] if mls else []
    member_procs = [
        _spawn(
            peers,
            "group-member",
            "--endpoint",
            node.endpoint,
            "--local",
            m,
            "--count",
            "3",
            "--publish",
            f"hi from {m}",
            "--publish-after",
            str(i + 1),
            "--idle-timeout",
            "20",
            name=m,
        )
        for i, m in enumerate(members)
    ]
    for p in member_procs:
        p.wait_event("ready", 20)

    invites = [a for m in members for a in ("--invite", m)]
    moderator = _spawn(
        peers,
        "group-moderator",
        "--endpoint",
        node.endpoint,
        "--local",
        "agntcy/interop/moderator",
        "--channel",
        channel,
        "--max-retries",
        "5",
        "--ack-timeout",
        "1",
        "--expect",
        str(len(members)),
        "--wait-timeout",
        "20",
        *invites,
        *extra,
        name="moderator",
        stdin_pipe=True,
    )
    moderator.wait_event("invited", 20, count=len(members))
    # The members' "session" event means the join (and with MLS the welcome) reached them.
    for p in member_procs:
        sess = p.wait_event("session", 30)[0]
        assert sess["session_type"].endswith("Group")
        assert (
            sess["dst"].startswith(channel + "/")
            or sess["dst_components"][:3] == moderator.of("session")[0]["dst_components"][:3]
        )

    moderator.send_line("first line from the moderator")
    for p in member_procs:
        p.wait_event("received", 20, predicate=lambda e: e["payload"] == "first line from the moderator")
    # Member i publishes after its i-th reception, so member-2 speaks only once member-1's line reached it:
    # one speaker at a time (with both members publishing at once, a 0.6.0 member reported "message lost"
    # in 2 of 4 MLS runs through a 0.6.0 node).
    moderator.wait_event("received", 20, count=len(members))
    moderator.send_line("second line from the moderator")
    for p in member_procs:
        p.wait_event("received", 20, predicate=lambda e: e["payload"] == "second line from the moderator")
    moderator.send_line("exit")
    moderator.close_stdin()

    assert moderator.finish(40) == 0, moderator.diagnostics()
    for p in member_procs:
        assert p.finish(40) == 0, p.diagnostics()

    moderator_ready = moderator.of("ready")[0]
    for i, p in enumerate(member_procs):
        other = members[1 - i]
        payloads = [e["payload"] for e in p.of("received")]
        assert sorted(payloads) == sorted(
            ["first line from the moderator", "second line from the moderator", f"hi from {other}"]
        ), payloads
        from_moderator = [e for e in p.of("received") if "moderator" in e["payload"]]
        assert all(e["source_components"] == moderator_ready["name_components"] for e in from_moderator)
    heard = sorted(e["payload"] for e in moderator.of("received"))
    assert heard == sorted(f"hi from {m}" for m in members)


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
        count = 5
        responder = start_peer(
            responder_impl,
            "p2p-responder",
            "--endpoint",
            node.endpoint,
            "--local",
            "agntcy/interop/bob",
            "--count",
            str(count),
            "--reply-prefix",
            "echo:",
            name=f"responder ({responder_impl})",
            stdin_pipe=True,
        )
        peers.append(responder)
        responder_ready = responder.wait_event("ready", 20)[0]
        sender = start_peer(
            sender_impl,
            "p2p-sender",
            "--endpoint",
            node.endpoint,
            "--local",
            "agntcy/interop/alice",
            "--remote",
            "agntcy/interop/bob",
            "--count",
            str(count),
            "--message",
            f"ping from {sender_impl}",
            *(["--reliable"] if reliable else []),
            *(["--mls"] if mls else []),
            name=f"sender ({sender_impl})",
        )
        peers.append(sender)
        assert sender.finish(60) == 0, sender.diagnostics() + responder.diagnostics()
        responder.close_stdin()
        assert responder.finish(30) == 0, responder.diagnostics()

        sender_ready = sender.of("ready")[0]
        sent = [e["payload"] for e in sender.of("sent")]
        assert len(sent) == count
        assert [r["payload"] for r in sender.of("received")] == [f"echo:{p}" for p in sent]
        assert all(
            r["source_components"] == responder_ready["name_components"] for r in sender.of("received")
        )
        got = responder.of("received")
        assert [g["payload"] for g in got] == sent
        assert all(g["source_components"] == sender_ready["name_components"] for g in got)
        assert sender.of("session")[0]["session_id"] == responder.of("session")[0]["session_id"]
    finally:
        node.stop()


def _group_layouts():
    """Every mix of a moderator and members (ours or 0.6.0), two members in either order and three
    alternating, MLS off and on; all-0.6.0 groups are test_group_between_060_apps. Every member
    publishes once (one at a time, see _run_group), so each reads every other member's message."""
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
        _run_group(node, peers, moderator_impl, member_impls, mls=mls)
    finally:
        node.stop()


def _run_group(node, peers, moderator_impl, member_impls, mls):
    channel = "agntcy/interop/chat"
    members = [f"agntcy/interop/member-{i + 1}" for i in range(len(member_impls))]
    member_procs = []
    for i, (m, impl) in enumerate(zip(members, member_impls)):
        p = start_peer(
            impl,
            "group-member",
            "--endpoint",
            node.endpoint,
            "--local",
            m,
            "--channel",
            channel,
            "--count",
            str(len(members) + 1),
            "--publish",
            f"hi from {m}",
            "--publish-after",
            str(i + 1),
            "--idle-timeout",
            "20",
            name=f"{m} ({impl})",
        )
        peers.append(p)
        member_procs.append(p)
    for p in member_procs:
        p.wait_event("ready", 20)
    invites = [a for m in members for a in ("--invite", m)]
    moderator = start_peer(
        moderator_impl,
        "group-moderator",
        "--endpoint",
        node.endpoint,
        "--local",
        "agntcy/interop/moderator",
        "--channel",
        channel,
        "--max-retries",
        "5",
        "--ack-timeout",
        "1",
        "--expect",
        str(len(members)),
        "--wait-timeout",
        "20",
        *invites,
        *(["--mls"] if mls else []),
        name=f"moderator ({moderator_impl})",
        stdin_pipe=True,
    )
    peers.append(moderator)
    moderator.wait_event("invited", 20, count=len(members))
    # Our moderator's "invited" means joined (wait=True). A 0.6.0 moderator's invite returns at once: a
    # 0.6.0 member reports its session when the join request reaches it; ours (seed-era receive()) only
    # with the first message, so nothing is awaited for it: what the moderator publishes before that
    # member has joined reaches it by retransmission (beacon, then RTX), as between 0.6.0 apps.
    for p, impl in zip(member_procs, member_impls):
        if impl == "060":
            p.wait_event("session", 30)
    moderator.send_line("first line from the moderator")
    for p in member_procs:
        p.wait_event("received", 20, predicate=lambda e: e["payload"] == "first line from the moderator")
    moderator.wait_event("received", 20, count=len(members))
    moderator.send_line("second line from the moderator")
    for p in member_procs:
        p.wait_event("received", 20, predicate=lambda e: e["payload"] == "second line from the moderator")
    moderator.send_line("exit")
    moderator.close_stdin()
    assert moderator.finish(40) == 0, moderator.diagnostics()
    for p in member_procs:
        assert p.finish(40) == 0, p.diagnostics()
    moderator_ready = moderator.of("ready")[0]
    for i, p in enumerate(member_procs):
        others = [f"hi from {m}" for j, m in enumerate(members) if j != i]
        payloads = [e["payload"] for e in p.of("received")]
        assert sorted(payloads) == sorted(
            ["first line from the moderator", "second line from the moderator", *others]
        ), payloads
        from_moderator = [e for e in p.of("received") if "moderator" in e["payload"]]
        assert all(e["source_components"] == moderator_ready["name_components"] for e in from_moderator)
    assert sorted(e["payload"] for e in moderator.of("received")) == sorted(f"hi from {m}" for m in members)
