//! Point-to-point sessions with MLS over real loopback gRPC: discovery → join (key package) →
//! welcome → ACK, then encrypted traffic both ways.

use crate::common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use slim_bindings::session::SessionConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mls_unicast_round_trip() {
    let alice = app("alice", "secret").await;
    let bob = app("bob", "secret").await;
    let _hub = hub_with_pair(&alice, &bob).await;

    // Anycast with MLS becomes sticky (reported as Unicast).
    let cfg = SessionConfig::Anycast {
        timeout: Some(Duration::from_secs(2)),
        max_retries: Some(5),
        mls_enabled: true,
        liveness: None,
    };
    let sid = alice.create_session(cfg).await.unwrap();
    assert!(matches!(alice.get_session_config(sid).unwrap(), SessionConfig::Unicast { mls_enabled: true, .. }));
    // Generous timeout: MLS crypto in an unoptimised test build is slow.
    const N: u32 = 100;
    for i in 0..N {
        alice.publish(sid, to(&name("bob"), &i.to_le_bytes())).await.unwrap();
    }
    let (first, _) = recv_new(&bob).await;
    assert!(first.metadata.is_empty(), "MLS keys must not leak: {:?}", first.metadata);
    for i in 0..N {
        let (_, p) = recv(&bob, sid).await.unwrap();
        assert_eq!(p, i.to_le_bytes());
    }
    assert!(matches!(bob.get_session_config(sid).unwrap(), SessionConfig::Unicast { mls_enabled: true, .. }));
    for i in 0..10u32 {
        bob.publish(sid, reply(&first, &i.to_le_bytes())).await.unwrap();
    }
    for i in 0..10u32 {
        assert_eq!(recv(&alice, sid).await.unwrap().1, i.to_le_bytes());
    }
    assert_eq!(alice.stats().snapshot()["mls_failures"], 0);
    assert_eq!(bob.stats().snapshot()["mls_failures"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mls_payloads_are_encrypted_on_the_wire() {
    // alice reaches the hub through a tap that looks for the plaintext in every publish.
    let (hub, endpoint) = hub().await;
    let needle = b"needle-in-the-payload";
    let tap = lossy_proxy::start_watching(&endpoint, needle).await;
    let alice = app("alice", "secret").await;
    let bob = app("bob", "secret").await;
    let ca = connect(&alice, &tap.endpoint).await;
    connect(&bob, &endpoint).await;
    alice.set_route(&name("bob"), ca).await.unwrap();
    wait_subscribed(&hub, &bob.name()).await;
    wait_subscribed(&hub, &alice.name()).await;

    let mls = SessionConfig::Unicast { timeout: None, max_retries: None, mls_enabled: true, liveness: None };
    let sid = alice.create_session(mls).await.unwrap();
    alice.publish(sid, to(&name("bob"), needle)).await.unwrap();
    let (info, p) = recv_new(&bob).await;
    assert_eq!((info.session_id, p.as_slice()), (sid, needle.as_slice()));
    assert_eq!(tap.counters.needle_hits.load(Ordering::Relaxed), 0, "plaintext visible on the wire");

    // Control: the same payload without MLS is visible to the tap.
    let plain = SessionConfig::Unicast { timeout: None, max_retries: None, mls_enabled: false, liveness: None };
    let sid2 = alice.create_session(plain).await.unwrap();
    alice.publish(sid2, to(&name("bob"), needle)).await.unwrap();
    let (info, _) = recv_new(&bob).await;
    assert_eq!(info.session_id, sid2);
    assert_eq!(tap.counters.needle_hits.load(Ordering::Relaxed), 1);
}
