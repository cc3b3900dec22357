"""A SLIM network (docs/mesh.md): standalone nodes in separate processes (`python -m slim_bindings node
--config`), linked by `clients:` entries, with apps in separate processes on different nodes.

- chain of 3: a reliable stream of 10,000 messages each way, exactly once, in order; a group whose
  moderator and members sit on different nodes;
- ring of 4 and full mesh of 4: every pair of apps exchanges messages, each arrives once, and the node
  counters show every message took a shortest path (no copy looped);
- ring of 4: SIGKILL the node a reliable stream crosses; it completes the other way round; the node
  restarts and its routes come back in `node-info`;
- a name nobody has: "no matching found" comes back from the mesh.
"""

from __future__ import annotations

import itertools
from collections import deque

import pytest

from mesh_helpers import Mesh, node_info_cli


@pytest.fixture
def meshes():
    """Collects started meshes so that every process is killed at the end, pass or fail."""
    started: list[Mesh] = []
    yield started
    for m in started:
        m.close()


def start(meshes, n: int, edges: list[tuple[int, int]]) -> Mesh:
    m = Mesh(n, edges)
    meshes.append(m)
    m.start()
    return m


def hops(n: int, edges: list[tuple[int, int]]) -> list[list[int]]:
    adj = {i: set() for i in range(n)}
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    out = []
    for s in range(n):
        d = {s: 0}
        q = deque([s])
        while q:
            u = q.popleft()
            for v in adj[u]:
                if v not in d:
                    d[v] = d[u] + 1
                    q.append(v)
        out.append([d[i] for i in range(n)])
    return out


def summary(p, m: Mesh | None = None, timeout: float = 120):
    try:
        return p.wait_event("summary", timeout)[0]
    except AssertionError as e:
        raise AssertionError(f"{e}\n{m.diagnostics() if m else ''}") from None


def test_chain_of_three_reliable_stream_and_group(meshes):
    m = start(meshes, 3, [(1, 0), (2, 1)])  # A <- B <- C
    count = 10_000
    recv = m.app(
        "stream-recv", 0, "org/mesh/alice", "--count", str(count), "--echo", "--every", "5000", stdin=True
    )
    recv.wait_event("ready", 30)
    m.wait(lambda: m.routes_to(2, "alice"), "node C has a route to alice")
    send = m.app(
        "stream-send",
        2,
        "org/mesh/bob",
        "--remote",
        "org/mesh/alice",
        "--count",
        str(count),
        "--expect-echo",
        "--every",
        "5000",
    )
    result = send.wait_event("summary", 180)[0]
    got = summary(recv)
    recv.close_stdin()
    assert got["received"] == count and got["in_order"] and got["duplicates"] == 0, m.diagnostics()
    assert result["echoed"] == count and result["echoes_in_order"], m.diagnostics()
    print(f"chain of 3: {count} reliable messages each way in {result['seconds']} s")

    # A group: moderator on A, members on B and C; everyone hears everyone else once.
    members = []
    for node, who in [(1, "member-b"), (2, "member-c")]:
        argv = [
            "--count",
            "6",
            "--publish",
            f"hi from {who}",
            "--publish-after",
            "3",
            "--idle-timeout",
            "20",
            "--channel",
            "org/mesh/chat",
        ]
        members.append(m_peer(m, "group-member", node, f"org/mesh/{who}", argv))
    for mem in members:
        mem.wait_event("ready", 30)
    for who in ["member-b", "member-c"]:
        m.wait(lambda who=who: m.routes_to(0, who), f"node A has a route to {who}")
    mod = m_peer(
        m,
        "group-moderator",
        0,
        "org/mesh/moderator",
        [
            "--channel",
            "org/mesh/chat",
            "--invite",
            "org/mesh/member-b",
            "--invite",
            "org/mesh/member-c",
            "--no-stdin",
            "--count",
            "5",
            "--expect",
            "2",
        ],
    )
    assert mod.finish(90) == 0, mod.diagnostics() + m.diagnostics()
    for mem in members:
        assert mem.finish(60) == 0, mem.diagnostics() + m.diagnostics()
        texts = [e["payload"] for e in mem.of("received")]
        from_mod = [t for t in texts if t.startswith("hello from ours")]
        assert from_mod == [f"hello from ours {i}" for i in range(5)], texts
        assert len(texts) == len(set(texts)), texts
    for c in m.counters():
        assert c["mesh_dropped_hop_limit"] == 0 and c["mesh_dropped_off_tree"] == 0, c


def m_peer(m: Mesh, role: str, node: int, local: str, args: list[str]):
    """A peer_ours.py role (the interop peers) on node `node` of mesh `m`."""
    from interop_test_helpers import start_peer_ours

    p = start_peer_ours(
        role, "--endpoint", m.nodes[node].endpoint, "--local", local, *args, name=f"{role} {local}"
    )
    m.apps.append(p)
    return p


TOPOLOGIES = {
    "ring-of-4": [(1, 0), (2, 1), (3, 2), (0, 3)],
    "full-mesh-of-4": [(1, 0), (2, 0), (3, 0), (2, 1), (3, 1), (3, 2)],
}


@pytest.mark.parametrize("topology", sorted(TOPOLOGIES))
def test_every_pair_exactly_once(meshes, topology):
    edges = TOPOLOGIES[topology]
    m = start(meshes, 4, edges)
    agents = [f"org/mesh/app{i}" for i in range(4)]
    k = 50
    apps = []
    for i, agent in enumerate(agents):
        peers = [x for a in agents if a != agent for x in ("--peer", a)]
        apps.append(m.app("all-pairs", i, agent, "--count", str(k), "--wait-go", *peers, stdin=True))
    for a in apps:
        a.wait_event("ready", 30)
    d = hops(4, edges)
    # Shortest routes, not just any: until both ends of a link have announced it, a node may route
    # the long way round (docs/mesh.md, "What each node keeps"), and the hop count below is exact.
    for i, j in itertools.permutations(range(4), 2):
        m.wait(
            lambda i=i, j=j: any(r["cost"] == d[i][j] for r in m.routes_to(i, f"app{j}")),
            f"node {i} routes to app{j} over {d[i][j]} hop(s)",
        )
    before = m.mesh_out()
    for a in apps:
        a.send_line("go")
    for i, a in enumerate(apps):
        s = summary(a)
        assert s["duplicates"] == 0, s
        assert s["received"] == 3 * k and s["distinct"] == 3 * k, (s, m.diagnostics())
        assert s["per_source"] == {x: k for x in agents if x != agents[i]}, s
    paths = sum(d[i][j] for i, j in itertools.permutations(range(4), 2))
    assert m.mesh_out() - before == k * paths, "every message took a shortest path, no copy looped"
    # Every app deletes its sessions while all are up: each tells its peer (SESSION_CLOSE on the
    # path of its data, docs/protocol.md "Closing"), and each app's reader sees the end of every
    # peer's session once.
    for a in apps:
        a.send_line("delete")
    for i, a in enumerate(apps):
        ended = a.wait_event("deleted", 30)[0]["ended"]
        assert ended == {x: 1 for x in agents if x != agents[i]}, (ended, m.diagnostics())
    for a in apps:
        a.send_line("exit")
    for c in m.counters():
        assert c["mesh_dropped_hop_limit"] == 0 and c["mesh_dropped_off_tree"] == 0, c
        assert c["mesh_dropped_transit_no_route"] == 0, c


def test_ring_survives_a_killed_node_and_routes_return(meshes):
    m = start(meshes, 4, TOPOLOGIES["ring-of-4"])
    count = 4000
    recv = m.app("stream-recv", 2, "org/mesh/bob", "--count", str(count), "--every", "500", stdin=True)
    recv.wait_event("ready", 30)
    m.wait(lambda: m.routes_to(0, "bob"), "node 0 routes to bob")
    via = m.routes_to(0, "bob")[0]["next_hop_label"]
    victim = next(i for i, n in enumerate(m.nodes) if n.label == via)
    assert victim in (1, 3)
    send = m.app(
        "stream-send",
        0,
        "org/mesh/alice",
        "--remote",
        "org/mesh/bob",
        "--count",
        str(count),
        "--every",
        "500",
        "--ack-timeout",
        "0.5",
        "--linger",
        stdin=True,
    )
    recv.wait_event("progress", 60)  # 500 messages arrived through the victim
    m.nodes[victim].sigkill()
    s = summary(recv, m)
    assert s["received"] == count and s["in_order"] and s["duplicates"] == 0, m.diagnostics()
    assert send.wait_event("summary", 60)[0]["sent"] == count
    other = m.routes_to(0, "bob")[0]["next_hop_label"]
    assert other != via, "after the kill the route goes the other way"

    # The node comes back (same file, same port, a new node id) and routes through it return.
    m.nodes[victim].start()
    took = m.wait(lambda: m.sees_all(0) and m.routes_to(victim, "bob"), "the restarted node is routed again")
    text = node_info_cli(m.nodes[victim].endpoint)
    assert "bob" in text and "mesh" in text, text
    assert f"node {via}" in text
    text0 = node_info_cli(m.nodes[0].endpoint)
    assert via in text0 and "unreachable" in text0, "the old run of the node is listed as unreachable"
    print(f"ring of 4: routes back {took:.2f} s after the restart")
    recv.close_stdin()
    send.close_stdin()


def test_no_matching_found_comes_back_from_the_mesh(meshes):
    m = start(meshes, 2, [(1, 0)])
    p = m.app("publish-once", 1, "org/mesh/alice", "--remote", "org/mesh/nobody", "--timeout", "10")
    s = summary(p)
    assert s.get("kind") == "NoRouteError", s
    assert "no matching found" in s["error"] and "nobody" in s["error"], s


def test_readme_three_node_example(meshes):
    """README's three-node chain, as written (ports moved to free ones): the nodes link, apps at both
    ends talk, and node-info shows the mesh."""
    import re

    from interop_test_helpers import REPO_ROOT, free_port
    from mesh_helpers import MeshNode

    readme = (REPO_ROOT / "README.md").read_text()
    blocks = dict(re.findall(r"<!-- mesh-example:(\w\.yaml) -->\n```yaml\n(.*?)```", readme, re.DOTALL))
    assert sorted(blocks) == ["a.yaml", "b.yaml", "c.yaml"], blocks.keys()
    ports = {p: free_port() for p in ("46357", "46358", "46359")}
    m = Mesh(0, [])
    meshes.append(m)
    for name, port in zip(("a.yaml", "b.yaml", "c.yaml"), ports):
        text = blocks[name]
        for old, new in ports.items():
            text = text.replace(old, str(new))
        node = MeshNode(name[0], ports[port], [])
        node.config.write_text(text)
        m.nodes.append(node)
        node.start()
    m.wait(lambda: m.sees_all(0) and m.sees_all(2), "the three README nodes see each other")
    text = node_info_cli(m.nodes[0].endpoint)
    for label in ("a", "b", "c"):
        assert re.search(rf"^\s+{label}\s+[0-9a-f]{{16}}\s+cost", text, re.MULTILINE), text
    recv = m.app("stream-recv", 0, "org/readme/alice", "--count", "20", "--echo", stdin=True)
    recv.wait_event("ready", 30)
    m.wait(lambda: m.routes_to(2, "alice"), "node c routes to alice")
    send = m.app(
        "stream-send", 2, "org/readme/bob", "--remote", "org/readme/alice", "--count", "20", "--expect-echo"
    )
    assert send.wait_event("summary", 60)[0]["echoes_in_order"], m.diagnostics()
    recv.close_stdin()
