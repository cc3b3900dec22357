//! MLS-encrypted multicast sessions over real loopback gRPC, seen from outside: a message held
//! before the first join, traffic in every direction after a second add, no plaintext and
//! always `MLS_ENCRYPTED` on the hub (an eavesdropping local connection subscribed to the
//! channel), removal by MLS commit then LEAVE, and traffic after it.

use crate::common;

use std::time::Duration;

use common::*;
use slim_bindings::error::SlimError;
use slim_bindings::node::LocalDelivery;
use slim_bindings::session::SessionConfig;
use slim_bindings::wire::builders::{Flags, subscribe};
use slim_bindings::wire::{META_MLS_ENCRYPTED, SessionMessageType};

fn group(moderator: bool) -> SessionConfig {
    SessionConfig::Multicast {
        topic: name("secure-chat"),
        moderator,
        max_retries: 5,
        timeout: Duration::from_millis(200),
        mls_enabled: true,
        liveness: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mls_group_invite_talk_remove() {
    let moderator = app("mod", "secret").await;
    let p1 = app("p1", "secret").await;
    let p2 = app("p2", "secret").await;
    let hub = hub_with(&moderator, &[&p1, &p2]).await;

    // An eavesdropper on the hub itself sees every channel broadcast as it travels.
    let mut eve = hub.node.register_local();
    eve.tx.send(subscribe(&name("eve"), &name("secure-chat"), Flags::one())).await.unwrap();

    let sid = moderator.create_session(group(true)).await.unwrap();
    moderator.publish(sid, to(&name("secure-chat"), b"early")).await.unwrap();
    moderator.invite(sid, &name("p1")).await.unwrap().joined().await.unwrap();
    let (info, first) = recv_new(&p1).await;
    assert_eq!((info.session_id, first.as_slice()), (sid, b"early".as_slice()));
    assert!(info.metadata.keys().all(|k| !k.starts_with("MLS_")), "{:?}", info.metadata);
    let (_, again) = recv(&p1, sid).await.unwrap();
    assert_eq!(again, b"early");

    // p2 joins: p1 must apply the COMMIT before the invite completes.
    moderator.invite(sid, &name("p2")).await.unwrap().joined().await.unwrap();
    moderator.publish(sid, to(&name("secure-chat"), b"m1")).await.unwrap();
    assert_eq!(recv(&p1, sid).await.unwrap().1, b"m1");
    let (p2_first, m) = recv_new(&p2).await;
    assert_eq!((p2_first.session_id, m.as_slice()), (sid, b"m1".as_slice()));
    assert_eq!(recv(&p2, sid).await.unwrap().1, b"m1");

    p1.publish(sid, to(&name("secure-chat"), b"from p1")).await.unwrap();
    assert_eq!(recv(&moderator, sid).await.unwrap().1, b"from p1");
    assert_eq!(recv(&p2, sid).await.unwrap().1, b"from p1");
    p2.publish(sid, to(&name("secure-chat"), b"from p2")).await.unwrap();
    assert_eq!(recv(&moderator, sid).await.unwrap().1, b"from p2");
    assert_eq!(recv(&p1, sid).await.unwrap().1, b"from p2");

    // On the wire every group payload is an MLS PrivateMessage, never the plaintext.
    let mut seen = 0;
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(200), eve.rx.recv()).await {
        let LocalDelivery::Message(m) = d else { continue };
        if m.session_message_type() != SessionMessageType::MulticastMsg {
            continue;
        }
        seen += 1;
        assert_eq!(m.metadata.get(META_MLS_ENCRYPTED).map(String::as_str), Some("true"));
        for plain in [&b"from p1"[..], b"from p2", b"early"] {
            assert!(!m.blob().windows(plain.len()).any(|w| w == plain), "plaintext on the wire");
        }
    }
    assert!(seen >= 3, "the eavesdropper saw {seen} group messages");

    moderator.remove(sid, &name("p2")).await.unwrap();
    let p2c = p2.clone();
    wait_until("p2's session is closed", move || {
        matches!(p2c.try_recv_session(sid), Some(Err(SlimError::SessionClosed)))
    })
    .await;
    moderator.publish(sid, to(&name("secure-chat"), b"m2")).await.unwrap();
    assert_eq!(recv(&p1, sid).await.unwrap().1, b"m2");
    p1.publish(sid, to(&name("secure-chat"), b"p1 after")).await.unwrap();
    assert_eq!(recv(&moderator, sid).await.unwrap().1, b"p1 after");
}
