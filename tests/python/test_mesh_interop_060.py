"""slim-bindings 0.6.0 in a mesh of our nodes (docs/mesh.md, "Roles" and "Links"): a 0.6.0 app attached to
one end of a chain of three of our nodes reaches our app at the other end and the other way round, and
two 0.6.0 apps talk across the chain; a 0.6.0 node that our node dials stays a plain (leaf) link.

Every app and node is a separate process; 0.6.0 runs from its own venv (scripts/setup_venv_060.sh).
Skipped only when the 0.6.0 wheel cannot be fetched from the package registry.
"""

from __future__ import annotations

import pytest

from interop_test_helpers import free_port, p2p_echo, python060, start_peer
from mesh_helpers import Mesh, MeshNode

CASES = [
    pytest.param("060", "ours", id="060-app-at-A-answers-ours-at-C"),
    pytest.param("ours", "060", id="ours-at-A-answers-060-at-C"),
    pytest.param("060", "060", id="060-apps-across-our-chain"),
]


@pytest.fixture(scope="module")
def venv060():
    return python060()


@pytest.fixture
def chain(venv060):
    m = Mesh(3, [(1, 0), (2, 1)], prefix="i")
    try:
        m.start()
        yield m
    finally:
        m.close()


@pytest.mark.parametrize("responder_impl,sender_impl", CASES)
def test_p2p_across_a_chain_of_our_nodes(chain, responder_impl, sender_impl):
    def learned_across_the_chain() -> None:
        # The responder's name, learned from its subscription on node A (a leaf link), reaches node C.
        chain.wait(lambda: chain.routes_to(2, "alice"), "node C routes to the responder")
        assert any(link["kind"] == "leaf" for link in chain.nodes[0].info()["links"])

    p2p_echo(
        chain.apps,
        responder_impl,
        sender_impl,
        responder_endpoint=chain.nodes[0].endpoint,
        sender_endpoint=chain.nodes[2].endpoint,
        responder_name="agntcy/mesh/alice",
        sender_name="agntcy/mesh/bob",
        message="ping",
        sender_args=("--reliable",),
        before_sender=learned_across_the_chain,
        diagnostics=chain.diagnostics,
    )
    for c in chain.counters():
        assert c["mesh_dropped_hop_limit"] == 0, c


def test_a_060_node_we_dial_is_a_leaf(venv060):
    """Our node's `clients:` names a 0.6.0 node: the header we add is ignored, no mesh message reaches it."""
    port = free_port()
    node060 = start_peer("060", "node", "--listen", f"127.0.0.1:{port}", name="node-060", stdin_pipe=True)
    ours = MeshNode("dialer", free_port(), [port])
    try:
        node060.wait_event("ready", 30)
        ours.start()
        m = Mesh(0, [])
        m.nodes = [ours]
        m.wait(
            lambda: any(link["up"] and link["kind"] == "leaf" for link in ours.info()["links"]),
            "the link to the 0.6.0 node is up, as a leaf",
        )
        link = next(link for link in ours.info()["links"] if link["kind"] == "leaf")
        assert link["peer_node"] == "" and link["direction"] == "out", link
        assert node060.proc.poll() is None, node060.diagnostics()
        assert not node060.of("error"), node060.diagnostics()
    finally:
        ours.stop()
        ours.config.unlink(missing_ok=True)
        node060.kill()
