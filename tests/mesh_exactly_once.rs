//! Exactly once over any topology (docs/mesh.md): in one process, real mesh nodes linked over
//! loopback gRPC, with raw local connections as subscribers so every copy a node makes is seen (no
//! session layer dedups anything here). Counts at the receivers and on the links.

use crate::common;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use slim_bindings::node::{LinkKind, LocalConnection, LocalDelivery, Node};
use slim_bindings::wire::builders::{self, Flags, PublishSpec};
use slim_bindings::wire::{Message, Name, SessionMessageType, SessionType};

/// A subscriber: a raw local connection of one node, subscribed to its own name (and maybe more).
struct Sub {
    conn: LocalConnection,
    name: Name,
}

async fn attach(node: &Node, agent: &str, id: u64) -> Sub {
    let conn = node.register_local();
    let name = Name::new("org", "ns", agent, Some(id));
    conn.tx.send(builders::subscribe(&name, &name, Flags::one())).await.unwrap();
    Sub { conn, name }
}

async fn also_subscribe(s: &Sub, extra: &Name) {
    s.conn.tx.send(builders::subscribe(&s.name, extra, Flags::one())).await.unwrap();
}

fn data(src: &Name, dst: &Name, fanout: u32, seq: u32) -> Message {
    builders::publish(
        &PublishSpec {
            source: src,
            destination: dst,
            flags: Flags::all(fanout),
            session_type: SessionType::SessionPointToPoint,
            message_type: SessionMessageType::P2PMsg,
            session_id: 1,
            message_id: seq,
            original_names: true,
            content_type: "msg",
        },
        seq.to_le_bytes().to_vec(),
        HashMap::new(),
    )
}

/// Reads `n` messages from `s` (bounded), failing on an error delivery.
async fn take(s: &mut Sub, n: usize) -> Vec<Message> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(WAIT, s.conn.rx.recv()).await {
            Ok(Some(LocalDelivery::Message(m))) => out.push(m),
            Ok(Some(LocalDelivery::Error(e))) => panic!("{} got an error: {e}", s.name),
            Ok(None) => panic!("{} closed", s.name),
            Err(_) => panic!("{} got {} of {n} messages", s.name, out.len()),
        }
    }
    out
}

/// Messages queued on mesh links, summed over `nodes` (data only: control traffic is not counted).
fn mesh_traversals(nodes: &[Node]) -> u64 {
    nodes.iter().flat_map(|n| n.links()).filter(|l| l.kind == LinkKind::Mesh).map(|l| l.messages_out).sum()
}

fn loops_caught(nodes: &[Node]) -> u64 {
    nodes
        .iter()
        .map(|n| {
            let s = n.mesh_stats();
            s.dropped_hop_limit.load(Ordering::Relaxed)
                + s.dropped_off_tree.load(Ordering::Relaxed)
                + s.dropped_transit_no_route.load(Ordering::Relaxed)
        })
        .sum()
}

/// Hop distances between all pairs of an undirected graph.
fn distances(n: usize, edges: &[(usize, usize)]) -> Vec<Vec<u64>> {
    let mut adj = vec![Vec::new(); n];
    for &(a, b) in edges {
        adj[a].push(b);
        adj[b].push(a);
    }
    (0..n)
        .map(|s| {
            let mut d = vec![u64::MAX; n];
            d[s] = 0;
            let mut q = VecDeque::from([s]);
            while let Some(u) = q.pop_front() {
                for &v in &adj[u] {
                    if d[v] == u64::MAX {
                        d[v] = d[u] + 1;
                        q.push_back(v);
                    }
                }
            }
            d
        })
        .collect()
}

async fn build(n: usize, edges: &[(usize, usize)]) -> Vec<Node> {
    let mut nodes = Vec::new();
    let mut eps = Vec::new();
    for i in 0..n {
        let (node, ep) = mesh_node(&format!("n{i}")).await;
        nodes.push(node);
        eps.push(ep);
    }
    for &(a, b) in edges {
        link(&nodes[a], &eps[b]).await;
    }
    nodes
}

/// Every pair of subscribers on different nodes exchanges `k` one-instance messages, then every
/// node broadcasts `k` messages to a group every node holds; each copy arrives once, and the links
/// carry exactly the shortest-path hop count (one-instance) and at most n-1 copies (broadcast).
async fn exchange(n: usize, edges: &[(usize, usize)]) {
    let nodes = build(n, edges).await;
    let group = Name::new("org", "ns", "group", None);
    let mut subs = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let s = attach(node, &format!("app{i}"), 100 + i as u64).await;
        also_subscribe(&s, &group).await;
        subs.push(s);
    }
    for (i, node) in nodes.iter().enumerate() {
        for (j, s) in subs.iter().enumerate() {
            if i != j {
                wait_route(node, &s.name).await;
            }
        }
    }
    let dist = distances(n, edges);
    let k = 20u32;
    let before = mesh_traversals(&nodes);
    let mut expected = 0;
    for i in 0..n {
        for j in 0..n {
            if i != j {
                for seq in 0..k {
                    subs[i].conn.tx.send(data(&subs[i].name, &subs[j].name, 1, seq)).await.unwrap();
                }
                expected += u64::from(k) * dist[i][j];
            }
        }
    }
    for (j, s) in subs.iter_mut().enumerate() {
        let got = take(s, (n - 1) * k as usize).await;
        let mut per_source: HashMap<Name, Vec<u32>> = HashMap::new();
        for m in got {
            let src = m.source_name().unwrap();
            let seq = u32::from_le_bytes(m.blob().try_into().unwrap());
            assert!(!m.metadata.contains_key("SLIM_MESH"), "the mesh tag never leaves the mesh");
            per_source.entry(src).or_default().push(seq);
        }
        assert_eq!(per_source.len(), n - 1, "app{j} hears every other app");
        for seqs in per_source.values() {
            assert_eq!(seqs, &(0..k).collect::<Vec<_>>(), "app{j}: once each, in order");
        }
    }
    let unicast = mesh_traversals(&nodes) - before;
    assert_eq!(unicast, expected, "one-instance messages take shortest paths, no extra copies");

    // Broadcast: every node's subscriber publishes to the group; all others get each copy once.
    for s in &subs {
        for seq in 0..k {
            s.conn.tx.send(data(&s.name, &group, 50, seq)).await.unwrap();
        }
    }
    for s in subs.iter_mut() {
        let got = take(s, (n - 1) * k as usize).await;
        let mut count: HashMap<(Name, u32), u32> = HashMap::new();
        for m in got {
            *count.entry((m.source_name().unwrap(), u32::from_le_bytes(m.blob().try_into().unwrap()))).or_default() +=
                1;
        }
        assert_eq!(count.len(), (n - 1) * k as usize);
        assert!(count.values().all(|&c| c == 1));
    }
    let broadcast = mesh_traversals(&nodes) - before - unicast;
    let bound = (n as u64 - 1) * n as u64 * u64::from(k);
    assert!(broadcast <= bound, "a broadcast crosses each tree edge once: {broadcast} > {bound}");
    assert_eq!(loops_caught(&nodes), 0, "no loop, no off-tree copy, no transit drop");
    for s in subs.iter_mut() {
        assert!(s.conn.rx.try_recv().is_err(), "{} got more than was sent to it", s.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_of_four_exactly_once() {
    exchange(4, &[(1, 0), (2, 1), (3, 2), (0, 3)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_mesh_of_four_exactly_once() {
    exchange(4, &[(1, 0), (2, 0), (3, 0), (2, 1), (3, 1), (3, 2)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_of_five_propagates_a_new_name_within_100ms() {
    let nodes = build(5, &[(1, 0), (2, 1), (3, 2), (4, 3)]).await;
    // Wait until the chain itself is known end to end: a probe name on the last node.
    let probe = attach(&nodes[4], "probe", 1).await;
    wait_route(&nodes[0], &probe.name).await;
    let mut worst = Duration::ZERO;
    for round in 0..5u64 {
        let start = Instant::now();
        let s = attach(&nodes[4], "late", round).await;
        wait_route(&nodes[0], &s.name).await;
        let took = start.elapsed();
        println!("announce {round}: {took:?}");
        worst = worst.max(took);
        // And it is withdrawn as fast when the subscriber goes.
        let start = Instant::now();
        drop(s);
        let n0 = nodes[0].clone();
        let name = Name::new("org", "ns", "late", Some(round));
        wait_until("withdrawal", move || !n0.can_route(&name)).await;
        worst = worst.max(start.elapsed());
    }
    println!("propagation over 4 hops (worst of 5 announcements and 5 withdrawals): {worst:?}");
    assert!(worst < Duration::from_millis(100), "took {worst:?}");
}
