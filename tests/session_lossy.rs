//! Reliable unicast through a lossy, reordering link: every message exactly once, in order.

use crate::common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use slim_bindings::session::SessionConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_reliable_messages_survive_drops_and_reordering() {
    let (hub, endpoint) = hub().await;
    let proxy = lossy_proxy::start(&endpoint, 50, 50, 0x5EED).await;
    let alice = app("alice", "secret").await;
    let bob = app("bob", "secret").await;
    let ca = connect(&alice, &proxy.endpoint).await;
    let cb = connect(&bob, &endpoint).await;
    alice.set_route(&name("bob"), ca).await.unwrap();
    bob.set_route(&name("alice"), cb).await.unwrap();
    wait_subscribed(&hub, &alice.name()).await;
    wait_subscribed(&hub, &bob.name()).await;

    const N: u32 = 10_000;
    let cfg = SessionConfig::Unicast {
        timeout: Some(Duration::from_millis(500)),
        max_retries: Some(40),
        mls_enabled: false,
        liveness: None,
    };
    let sid = alice.create_session(cfg).await.unwrap();
    let reader = {
        let bob = bob.clone();
        tokio::spawn(async move {
            let (first, _) = tokio::time::timeout(Duration::from_secs(30), bob.recv_new_session())
                .await
                .expect("session arrives")
                .expect("new session");
            assert_eq!(first.session_id, sid);
            let mut next = 0u32;
            while next < N {
                let (_, p) = tokio::time::timeout(Duration::from_secs(30), bob.recv_session(sid))
                    .await
                    .expect("progress within 30 s")
                    .expect("no session error");
                let got = u32::from_le_bytes(p.try_into().expect("4-byte payload"));
                assert_eq!(got, next, "out of order or duplicated");
                next += 1;
            }
            next
        })
    };
    for i in 0..N {
        alice.publish(sid, to(&name("bob"), &i.to_le_bytes())).await.unwrap();
    }
    assert_eq!(reader.await.unwrap(), N);
    // Nothing more arrives (no duplicates after the last one).
    assert!(bob.try_recv_session(sid).is_none());
    let dropped = proxy.counters.dropped.load(Ordering::Relaxed);
    let reordered = proxy.counters.reordered.load(Ordering::Relaxed);
    assert!(
        dropped > 100 && reordered > 100,
        "the link must actually be lossy: {dropped} dropped, {reordered} reordered"
    );
    // Every message eventually acknowledged: no timeout surfaced on the sender.
    assert!(alice.try_recv_session(sid).is_none());
}
