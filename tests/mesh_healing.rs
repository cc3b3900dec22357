//! Self-healing (docs/mesh.md, "Link failure and recovery"), in one process over real loopback
//! gRPC: a node on the path of a reliable stream dies and the stream completes the other way round
//! a ring; it comes back and routes return; 20 nodes with cycles lose 3 and every remaining pair
//! routes again within 2 s.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rand::{RngExt, SeedableRng};
use slim_bindings::app::App;
use slim_bindings::node::{LocalDelivery, Node, ServerConfig};
use slim_bindings::session::SessionConfig;
use slim_bindings::wire::Name;
use slim_bindings::wire::builders::{self, Flags};

fn reliable() -> SessionConfig {
    // Retransmission recovers what died with the node; generous enough not to fire on a slow machine.
    SessionConfig::Unicast {
        timeout: Some(Duration::from_secs(1)),
        max_retries: Some(30),
        mls_enabled: false,
        liveness: None,
    }
}

async fn leaf(agent: &str, endpoint: &str, peers: &[&str]) -> App {
    let a = app(agent, "secret").await;
    let conn = connect(&a, endpoint).await;
    for p in peers {
        a.set_route(&name(p), conn).await.unwrap();
    }
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_reroutes_around_a_dead_node_and_routes_return() {
    if std::env::var("MESH_LOG").is_ok() {
        let _ =
            tracing_subscriber::fmt().with_env_filter("slim_bindings=debug").with_writer(std::io::stderr).try_init();
    }
    // Ring n0 <- n1 <- n2 <- n3 <- n0 (each dials the previous one).
    let mut nodes = Vec::new();
    let mut eps = Vec::new();
    for i in 0..4 {
        let (n, ep) = mesh_node(&format!("n{i}")).await;
        nodes.push(n);
        eps.push(ep);
    }
    for i in 0..4 {
        link(&nodes[i], &eps[(i + 3) % 4]).await;
    }
    let alice = leaf("alice", &eps[0], &["bob"]).await;
    let bob = leaf("bob", &eps[2], &["alice"]).await;
    wait_route(&nodes[0], &bob.name()).await;
    // The neighbour of n0 on the path to bob: n1 or n3.
    let via = nodes[0].describe(100, "bob").routes.iter().find(|r| r.kind == "mesh").map(|r| r.next_hop_node);
    let victim = (1..4).find(|&i| Some(nodes[i].mesh_node_id()) == via).expect("a next hop");
    assert!(victim == 1 || victim == 3);

    const N: u32 = 2000;
    let sid = alice.create_session(reliable()).await.unwrap();
    let sender = {
        let alice = alice.clone();
        tokio::spawn(async move {
            for i in 0..N {
                alice.publish(sid, to(&name("bob"), &i.to_le_bytes())).await.unwrap();
                if i % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let (first, _) = recv_new(&bob).await;
    assert_eq!(first.session_id, sid);
    let mut killed_at = None;
    let t0 = Instant::now();
    for i in 0..N {
        let (_, p) = recv(&bob, sid).await.unwrap();
        assert_eq!(p, i.to_le_bytes(), "message {i}: in order, none lost, none twice");
        if i == N / 4 {
            println!("{} messages before the kill in {:?}", N / 4, t0.elapsed());
            killed_at = Some(Instant::now());
            nodes[victim].shutdown().await;
        }
    }
    sender.await.unwrap();
    println!("stream of {N} completed {:?} after the node on its path died", killed_at.unwrap().elapsed());
    assert!(nodes[0].can_route(&bob.name()));

    // The node comes back on the same port (a new run: a new random id) and links again.
    let port = eps[victim].rsplit(':').next().unwrap().to_string();
    let back = Node::new(&format!("n{victim}-again"));
    back.enable_mesh(&Default::default());
    back.run_server(ServerConfig::insecure(format!("127.0.0.1:{port}"))).await.unwrap();
    link(&back, &eps[(victim + 3) % 4]).await;
    wait_route(&back, &bob.name()).await;
    wait_route(&back, &alice.name()).await;
    let id = back.mesh_node_id();
    let n0 = nodes[0].clone();
    wait_until("n0 sees the node again", move || {
        n0.describe(0, "").nodes.iter().any(|n| n.node == id && n.reachable && n.cost == 1)
    })
    .await;
}

/// A random connected graph: a random spanning tree plus `extra` edges (so it has cycles).
fn random_graph(rng: &mut rand::rngs::StdRng, n: usize, extra: usize) -> Vec<(usize, usize)> {
    let mut edges: HashSet<(usize, usize)> = HashSet::new();
    for i in 1..n {
        let j = rng.random_range(0..i);
        edges.insert((i, j));
    }
    while edges.len() < n - 1 + extra {
        let (a, b) = (rng.random_range(0..n), rng.random_range(0..n));
        if a != b && !edges.contains(&(b, a)) {
            edges.insert((a, b));
        }
    }
    let mut e: Vec<_> = edges.into_iter().collect();
    e.sort();
    e
}

fn connected_without(n: usize, edges: &[(usize, usize)], dead: &HashSet<usize>) -> bool {
    let alive: Vec<usize> = (0..n).filter(|i| !dead.contains(i)).collect();
    let mut seen = HashSet::from([alive[0]]);
    let mut stack = vec![alive[0]];
    while let Some(u) = stack.pop() {
        for &(a, b) in edges {
            for (x, y) in [(a, b), (b, a)] {
                if x == u && !dead.contains(&y) && seen.insert(y) {
                    stack.push(y);
                }
            }
        }
    }
    seen.len() == alive.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_two_hundred_names_lose_three() {
    const N: usize = 20;
    const NAMES: usize = 200;
    if std::env::var("MESH_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("slim_bindings::node=debug")
            .with_writer(std::io::stderr)
            .try_init();
    }
    let seed = std::env::var("MESH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(7u64);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let edges = random_graph(&mut rng, N, 12);
    let mut nodes = Vec::new();
    let mut eps = Vec::new();
    for i in 0..N {
        let (n, ep) = mesh_node(&format!("n{i}")).await;
        nodes.push(n);
        eps.push(ep);
    }
    for &(a, b) in &edges {
        link(&nodes[a], &eps[b]).await;
    }
    // 200 names spread over the nodes, each held by one raw local connection.
    let mut holders = Vec::new();
    for k in 0..NAMES {
        let at = rng.random_range(0..N);
        let conn = nodes[at].register_local();
        let name = Name::new("org", "scale", &format!("svc-{k}"), Some(k as u64));
        conn.tx.send(builders::subscribe(&name, &name, Flags::one())).await.unwrap();
        holders.push((at, name, conn));
    }
    let start = Instant::now();
    let all_routes = |nodes: &[Node], holders: &[(usize, Name, _)], dead: &HashSet<usize>| {
        nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| !dead.contains(i))
            .all(|(_, node)| holders.iter().all(|(at, name, _)| dead.contains(at) != node.can_route(name)))
    };
    let none = HashSet::new();
    while !all_routes(&nodes, &holders, &none) {
        if start.elapsed() > WAIT {
            for (i, node) in nodes.iter().enumerate() {
                let missing = holders.iter().filter(|(_, n, _)| !node.can_route(n)).count();
                let info = node.describe(0, "");
                eprintln!(
                    "n{i}: missing {missing}, knows {} nodes ({} reachable), links {:?}",
                    info.nodes.len(),
                    info.nodes.iter().filter(|n| n.reachable).count(),
                    node.links().iter().map(|l| (l.kind, l.up)).collect::<Vec<_>>()
                );
            }
            panic!("routes incomplete after {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "20 nodes, {} links, 200 names: every name routable everywhere {:?} after the last link",
        edges.len(),
        start.elapsed()
    );

    // One message from every node to every name: each arrives exactly once.
    let senders: Vec<_> = nodes.iter().map(|n| n.register_local()).collect();
    for (i, s) in senders.iter().enumerate() {
        let src = Name::new("org", "scale", "sender", Some(1000 + i as u64));
        for (_, name, _) in &holders {
            s.tx.send(builders::publish(
                &builders::PublishSpec {
                    source: &src,
                    destination: name,
                    flags: Flags::one(),
                    session_type: slim_bindings::wire::SessionType::SessionPointToPoint,
                    message_type: slim_bindings::wire::SessionMessageType::P2PMsg,
                    session_id: 1,
                    message_id: i as u32,
                    original_names: false,
                    content_type: "msg",
                },
                vec![i as u8],
                HashMap::new(),
            ))
            .await
            .unwrap();
        }
    }
    for (_, name, conn) in holders.iter_mut() {
        let mut from = HashSet::new();
        while from.len() < N {
            match tokio::time::timeout(WAIT, conn.rx.recv()).await {
                Ok(Some(LocalDelivery::Message(m))) => {
                    assert!(from.insert(m.blob()[0]), "{name}: a second copy from sender {}", m.blob()[0]);
                }
                other => {
                    for n in nodes.iter() {
                        let m = n.mesh_stats();
                        eprintln!(
                            "{}: {:?} hop_limit={} off_tree={} transit_no_route={}",
                            n.node_id(),
                            n.stats(),
                            m.dropped_hop_limit.load(std::sync::atomic::Ordering::Relaxed),
                            m.dropped_off_tree.load(std::sync::atomic::Ordering::Relaxed),
                            m.dropped_transit_no_route.load(std::sync::atomic::Ordering::Relaxed)
                        );
                    }
                    panic!("{name}: {} of {N} messages, then {other:?}", from.len())
                }
            }
        }
        assert!(conn.rx.try_recv().is_err(), "{name}: more than one message per sender");
    }

    // Kill 3 nodes at random (keeping the rest connected) and time the reconvergence.
    let mut dead = HashSet::new();
    while dead.len() < 3 {
        let v = rng.random_range(0..N);
        dead.insert(v);
        if !connected_without(N, &edges, &dead) {
            dead.remove(&v);
        }
    }
    let killed = Instant::now();
    for &v in &dead {
        nodes[v].shutdown().await;
    }
    println!("shutdowns took {:?}", killed.elapsed());
    let nodes = Arc::new(nodes);
    while !all_routes(&nodes, &holders, &dead) {
        assert!(killed.elapsed() < WAIT, "no reconvergence after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = killed.elapsed();
    println!("killed nodes {dead:?}: every remaining pair routes again after {took:?}");
    assert!(took < Duration::from_secs(2), "reconvergence took {took:?}");
}
