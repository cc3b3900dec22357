//! Large frames through shared memory between an app and its node on one host (docs/protocol.md,
//! "Shared memory on one host"): real loopback streams, the node in this process or a `slim`
//! process of its own.

use crate::common;

use std::time::Duration;

use common::slim_process::SlimProcess;
use common::*;
use slim_bindings::app::App;
use slim_bindings::node::{ClientConfig, Node, ServerConfig};
use slim_bindings::session::SessionConfig;

fn anycast() -> SessionConfig {
    SessionConfig::Anycast { timeout: None, max_retries: None, mls_enabled: false, liveness: None }
}

/// Message `i` of the stream: sizes below the ring's smallest frame (16 KiB), in it, and above its
/// largest (1 MiB: inline), each with its own bytes.
fn payload(i: usize) -> Vec<u8> {
    let len = [100, 20_000, 65_536, 1_200_000, 300_000][i % 5];
    (0..len).map(|j| (i * 7 + j * 13) as u8).collect()
}

const MESSAGES: usize = 60;

/// `a` streams [`MESSAGES`] to `b` on a new session (b reading as they come); every one must
/// reach b whole and in order.
async fn stream(a: &App, b: &App) {
    let sid = a.create_session(anycast()).await.expect("session");
    let reader = {
        let b = b.clone();
        tokio::spawn(async move {
            let (info, first) = recv_new(&b).await;
            assert_eq!(first, payload(0));
            // The first message is also the session's first item (seed semantics).
            assert_eq!(recv(&b, info.session_id).await.expect("first again").1, payload(0));
            for i in 1..MESSAGES {
                let (_, got) = recv(&b, info.session_id).await.expect("a message");
                assert!(got == payload(i), "message {i}: {} bytes, not the {} sent", got.len(), payload(i).len());
            }
        })
    };
    for i in 0..MESSAGES {
        a.publish(sid, to(&b.name().without_id(), &payload(i))).await.expect("publish");
    }
    tokio::time::timeout(3 * WAIT, reader).await.expect("the stream arrives in time").expect("reader");
}

fn shared(app: &App) -> (u64, u64) {
    let s = app.node().stats();
    (s.shared_frames_sent, s.shared_frames_received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_cross_through_shared_memory_whole_and_in_order() {
    let (a, b) = (app("shm-a", "secret").await, app("shm-b", "secret").await);
    let hub = hub_with_pair(&a, &b).await;
    stream(&a, &b).await;
    // 20 KiB, 64 KiB and 300 KiB messages went through the rings (36 of 60), the rest inline.
    let through = (MESSAGES / 5 * 3) as u64;
    assert_eq!(shared(&a).0, through, "a wrote its large frames into its ring");
    assert_eq!(shared(&b).1, through, "b read them out of its own");
    let node = hub.node.stats();
    assert_eq!((node.shared_frames_received, node.shared_frames_sent), (through, through));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slim_process_takes_the_offer_and_passes_frames_on_through_shared_memory() {
    let mut slim = SlimProcess::spawn(&["--endpoint", "127.0.0.1:0"]);
    let endpoint = format!("http://{}", slim.listening_addr());
    let (a, b) = (app("shm-pa", "secret").await, app("shm-pb", "secret").await);
    let conn = connect(&a, &endpoint).await;
    connect(&b, &endpoint).await;
    a.set_route(&b.name().without_id(), conn).await.expect("route");
    // b's subscription reaches the other process on its own time: probe until b hears a.
    let probe = a.create_session(anycast()).await.expect("session");
    let mut heard = false;
    for _ in 0..100 {
        a.publish(probe, to(&b.name().without_id(), b"probe")).await.expect("publish");
        if tokio::time::timeout(Duration::from_millis(50), b.recv_new_session()).await.is_ok() {
            heard = true;
            break;
        }
    }
    assert!(heard, "b never heard a through slim");
    let before = (shared(&a).0, shared(&b).1);
    stream(&a, &b).await;
    let through = (MESSAGES / 5 * 3) as u64;
    assert_eq!((shared(&a).0 - before.0, shared(&b).1 - before.1), (through, through));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn either_end_can_keep_every_frame_on_the_socket() {
    // The client declines: it makes no offer.
    let (a, b) = (app("shm-ca", "secret").await, app("shm-cb", "secret").await);
    let hub = hub_with_pair(&a, &b).await;
    let no_offer = ClientConfig { shared_memory: Some(false), ..ClientConfig::insecure(hub.endpoint.clone()) };
    let (c, d) = (app("shm-cc", "secret").await, app("shm-cd", "secret").await);
    let conn = c.connect(no_offer.clone()).await.expect("connect");
    d.connect(no_offer).await.expect("connect");
    c.set_route(&d.name().without_id(), conn).await.expect("route");
    wait_subscribed(&hub.node, &d.name()).await;
    stream(&c, &d).await;
    assert_eq!((shared(&c), shared(&d)), ((0, 0), (0, 0)));

    // The server declines: it takes no offer.
    let node = Node::new("declining");
    let cfg = ServerConfig { shared_memory: Some(false), ..ServerConfig::insecure("127.0.0.1:0") };
    let endpoint = format!("http://{}", node.run_server(cfg).await.expect("serves"));
    let (e, f) = (app("shm-ce", "secret").await, app("shm-cf", "secret").await);
    let conn = connect(&e, &endpoint).await;
    connect(&f, &endpoint).await;
    e.set_route(&f.name().without_id(), conn).await.expect("route");
    wait_subscribed(&node, &f.name()).await;
    stream(&e, &f).await;
    assert_eq!((shared(&e), shared(&f)), ((0, 0), (0, 0)));
    assert_eq!(node.stats().shared_frames_received, 0);
    // The first pair, on a hub that allows it, did use the rings meanwhile (nothing else differs).
    stream(&a, &b).await;
    assert!(shared(&a).0 > 0 && shared(&b).1 > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_cross_a_mesh_link_through_shared_memory_with_their_tag() {
    // n1 dials n0 on loopback: the mesh link shares memory too, and what crosses it carries the
    // mesh tag n0 appends (docs/mesh.md, "Forwarding").
    let (n0, e0) = mesh_node("shm-n0").await;
    let (n1, e1) = mesh_node("shm-n1").await;
    link(&n1, &e0).await;
    let (a, b) = (app("shm-ma", "secret").await, app("shm-mb", "secret").await);
    let conn = connect(&a, &e0).await;
    connect(&b, &e1).await;
    a.set_route(&b.name().without_id(), conn).await.expect("route");
    wait_route(&n0, &b.name()).await;
    stream(&a, &b).await;
    let through = (MESSAGES / 5 * 3) as u64;
    let (s0, s1) = (n0.stats(), n1.stats());
    assert_eq!((s0.shared_frames_received, s0.shared_frames_sent), (through, through), "a's ring in, the link's out");
    assert_eq!((s1.shared_frames_received, s1.shared_frames_sent), (through, through), "the link's in, b's ring out");
    assert_eq!((shared(&a).0, shared(&b).1), (through, through));
}
