//! Nodes that route for each other (docs/mesh.md), in one process over real loopback gRPC: apps on
//! different nodes of a chain, a ring and a full mesh reach each other exactly once; routes follow
//! subscriptions and links as they come and go.

use crate::common;

use std::time::Duration;

use common::*;
use slim_bindings::app::App;
use slim_bindings::node::{LinkKind, Node, ServerConfig};
use slim_bindings::session::SessionConfig;

fn reliable() -> SessionConfig {
    // Generous: retransmissions are for losses, not for a slow (debug, loaded) machine.
    SessionConfig::Unicast {
        timeout: Some(Duration::from_secs(2)),
        max_retries: Some(10),
        mls_enabled: false,
        liveness: None,
    }
}

/// `n` mesh nodes linked by `edges` (i dials j).
async fn mesh(n: usize, edges: &[(usize, usize)]) -> (Vec<Node>, Vec<String>) {
    let mut nodes = Vec::new();
    let mut endpoints = Vec::new();
    for i in 0..n {
        let (node, ep) = mesh_node(&format!("n{i}")).await;
        nodes.push(node);
        endpoints.push(ep);
    }
    for &(i, j) in edges {
        link(&nodes[i], &endpoints[j]).await;
    }
    (nodes, endpoints)
}

/// An app connected to `endpoint` as a leaf.
async fn leaf(agent: &str, endpoint: &str) -> App {
    let a = app(agent, "secret").await;
    let conn = connect(&a, endpoint).await;
    // Everything this app sends goes to its node, which routes it.
    for other in ["alice", "bob", "carol", "dave", "erin", "nobody"] {
        if other != agent {
            a.set_route(&name(other), conn).await.unwrap();
        }
    }
    a
}

/// `count` reliable messages from `from` to `to`, then checks they arrived once each, in order.
async fn stream(from: &App, to: &App, to_agent: &str, count: u32) {
    let sid = from.create_session(reliable()).await.unwrap();
    for i in 0..count {
        from.publish(sid, common::to(&name(to_agent), &i.to_le_bytes())).await.unwrap();
    }
    let (first, payload) = recv_new(to).await;
    assert_eq!(first.session_id, sid);
    assert_eq!(payload, 0u32.to_le_bytes());
    // The first message also heads the session's queue.
    for i in 0..count {
        let (info, p) = recv(to, sid).await.unwrap();
        assert_eq!(p, i.to_le_bytes(), "message {i} out of order or duplicated");
        // The last mesh node takes its tag off before handing the message to a leaf (the frame it
        // received, cut before the tag entry the previous node appended: docs/mesh.md).
        assert!(!info.metadata.contains_key("SLIM_MESH"), "the mesh tag never leaves the mesh: {:?}", info.metadata);
    }
    assert!(to.try_recv_session(sid).is_none(), "nothing more than what was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_of_three_routes_both_ways() {
    // n1 dials n0, n2 dials n1: A <- B <- C.
    let (nodes, eps) = mesh(3, &[(1, 0), (2, 1)]).await;
    for n in &nodes {
        assert!(n.links().iter().all(|l| l.kind == LinkKind::Mesh), "{:?}", n.links());
    }
    let alice = leaf("alice", &eps[0]).await;
    let bob = leaf("bob", &eps[2]).await;
    wait_route(&nodes[2], &alice.name()).await;
    wait_route(&nodes[0], &bob.name()).await;
    stream(&bob, &alice, "alice", 500).await;
    stream(&alice, &bob, "bob", 500).await;
    for n in &nodes {
        let s = n.mesh_stats();
        assert_eq!(s.dropped_hop_limit.load(std::sync::atomic::Ordering::Relaxed), 0);
    }
}

fn group(moderator: bool) -> SessionConfig {
    SessionConfig::Multicast {
        topic: name("chat"),
        moderator,
        max_retries: 10,
        timeout: Duration::from_millis(200),
        mls_enabled: false,
        liveness: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multicast_group_across_a_chain() {
    let (nodes, eps) = mesh(3, &[(1, 0), (2, 1)]).await;
    let moderator = leaf("alice", &eps[0]).await;
    let members = [leaf("bob", &eps[1]).await, leaf("carol", &eps[2]).await];
    for m in &members {
        wait_route(&nodes[0], &m.name()).await;
    }
    let sid = moderator.create_session(group(true)).await.unwrap();
    for who in ["bob", "carol"] {
        moderator.invite(sid, &name(who)).await.unwrap().joined().await.unwrap();
    }
    for i in 0..50u32 {
        moderator.publish(sid, common::to(&name("chat"), &i.to_le_bytes())).await.unwrap();
    }
    for m in &members {
        let (info, _) = recv_new(m).await;
        assert_eq!(info.session_id, sid);
        let mut got = Vec::new();
        while got.len() < 50 {
            let (info, p) = recv(m, sid).await.unwrap();
            if info.source == moderator.name() {
                got.push(u32::from_le_bytes(p.try_into().unwrap()));
            }
        }
        assert_eq!(got, (0..50).collect::<Vec<_>>(), "every group message once, in order");
    }
    // The members stream to each other and to the moderator across two nodes, right after the
    // invites (the newcomer's routes may still be spreading through the mesh: where each stream
    // starts was fixed at the invite, so whatever the routes missed is asked for again): every
    // stream reaches everyone whole, in order.
    for (i, m) in members.iter().enumerate() {
        for k in 0..50u32 {
            m.publish(sid, common::to(&name("chat"), &(1000 * (i as u32 + 1) + k).to_le_bytes())).await.unwrap();
        }
    }
    for (app, from) in [(&moderator, vec![0, 1]), (&members[0], vec![1]), (&members[1], vec![0])] {
        let mut got: std::collections::HashMap<usize, Vec<u32>> = from.iter().map(|i| (*i, Vec::new())).collect();
        while got.values().any(|v| v.len() < 50) {
            let (info, p) = recv(app, sid).await.unwrap();
            if let Some(i) = members.iter().position(|m| info.source == m.name()) {
                got.get_mut(&i).expect("a stream this app reads").push(u32::from_le_bytes(p.try_into().unwrap()));
            }
        }
        for (i, v) in got {
            let base = 1000 * (i as u32 + 1);
            assert_eq!(v, (base..base + 50).collect::<Vec<_>>(), "{}'s stream at {}", members[i].name(), app.name());
        }
    }
    for n in &nodes {
        assert_eq!(n.mesh_stats().dropped_off_tree.load(std::sync::atomic::Ordering::Relaxed), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_withdrawn_on_unsubscribe_and_disconnect() {
    let (nodes, eps) = mesh(3, &[(1, 0), (2, 1)]).await;
    let bob = app("bob", "secret").await;
    let conn = connect(&bob, &eps[2]).await;
    let extra = name("bob-extra");
    bob.subscribe(&extra, Some(conn)).await.unwrap();
    wait_route(&nodes[0], &bob.name()).await;
    wait_route(&nodes[0], &extra).await;
    bob.unsubscribe(&extra, Some(conn)).await.unwrap();
    let n0 = nodes[0].clone();
    let e = extra.clone();
    wait_until("unsubscribe withdraws the name", move || !n0.can_route(&e)).await;
    assert!(nodes[0].can_route(&bob.name()));
    bob.disconnect(conn).await.unwrap();
    let n0 = nodes[0].clone();
    let b = bob.name();
    wait_until("disconnect withdraws the app's names", move || !n0.can_route(&b)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_nobody_has_gets_no_matching_found_back() {
    let (_nodes, eps) = mesh(2, &[(1, 0)]).await;
    // alice's embedded node has a route for "nobody" (to node 0): the answer comes from the mesh.
    let alice = leaf("alice", &eps[0]).await;
    let nobody = name("nobody");
    let sid = alice
        .create_session(SessionConfig::Anycast { timeout: None, max_retries: None, mls_enabled: false, liveness: None })
        .await
        .unwrap();
    alice.publish(sid, common::to(&nobody, b"anyone?")).await.unwrap();
    match recv(&alice, sid).await {
        Err(slim_bindings::error::SlimError::NoRoute(text)) => {
            assert!(text.contains("no matching found"), "{text}");
            assert!(text.contains("nobody"), "{text}");
        }
        other => panic!("expected NoRoute, got {other:?}"),
    }
}

fn unreliable() -> SessionConfig {
    SessionConfig::Anycast { timeout: None, max_retries: None, mls_enabled: false, liveness: None }
}

/// A message a mesh node in the middle of the path drops (here: the hop limit of the middle node
/// of a chain is 1) is reported to its sender when the sender never sends it again: the middle
/// node's "no matching found" notice travels back over the mesh, by the sender's name, and the
/// sender's unreliable session gets one `NoRoute` per message. Nothing reaches the destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_dropped_in_transit_is_reported_to_its_sender() {
    let (n0, e0) = mesh_node("n0").await;
    let n1 = Node::new("n1");
    n1.enable_mesh(&slim_bindings::node::MeshConfig { max_hops: 1, ..Default::default() });
    let e1 = format!("http://{}", n1.run_server(ServerConfig::insecure("127.0.0.1:0")).await.unwrap());
    let (n2, e2) = mesh_node("n2").await;
    link(&n1, &e0).await;
    link(&n2, &e1).await;
    let alice = leaf("alice", &e0).await;
    let bob = leaf("bob", &e2).await;
    wait_route(&n0, &bob.name()).await;
    wait_route(&n1, &alice.name()).await;
    let sid = alice.create_session(unreliable()).await.unwrap();
    for i in 0..3u8 {
        alice.publish(sid, common::to(&name("bob"), &[i])).await.unwrap();
    }
    for _ in 0..3 {
        match recv(&alice, sid).await {
            Err(slim_bindings::error::SlimError::NoRoute(text)) => assert!(text.contains("bob"), "{text}"),
            other => panic!("expected NoRoute, got {other:?}"),
        }
    }
    let hop_limit = n1.mesh_stats().dropped_hop_limit.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(hop_limit, 3);
    assert!(bob.try_recv_new_session().is_none(), "nothing reached bob");
}

/// A leaf's unreliable message finds no route at its node; the name appears a moment later,
/// within the node's notice grace. The message itself is gone (its sender never sends it
/// again), so the notice still goes back: the sender's session gets `NoRoute`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreliable_message_with_no_route_is_reported_even_if_the_name_appears_meanwhile() {
    let (n0, e0) = mesh_node("n0").await;
    let alice = leaf("alice", &e0).await;
    let late = app("late", "secret").await;
    let conn = connect(&late, &e0).await;
    let sid = alice.create_session(unreliable()).await.unwrap();
    alice.publish(sid, common::to(&name("erin"), b"too early")).await.unwrap();
    // The message found no route at n0 (and waits for its grace there) before the name appears.
    let n = n0.clone();
    wait_until("the message found no route", move || n.stats().dropped_no_route >= 1).await;
    late.subscribe(&name("erin"), Some(conn)).await.unwrap();
    let (n, erin) = (n0.clone(), name("erin"));
    wait_until("the name appears at n0", move || n.can_route(&erin)).await;
    match recv(&alice, sid).await {
        Err(slim_bindings::error::SlimError::NoRoute(text)) => assert!(text.contains("erin"), "{text}"),
        other => panic!("expected NoRoute, got {other:?}"),
    }
}
