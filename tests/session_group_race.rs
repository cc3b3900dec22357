//! Regression: a moderator that invites several members back to back without waiting for the
//! joins, then publishes at once, reaches every one of them (MLS on and off). Before the fix the
//! held messages went out, encrypted for the group of the first member only, as soon as that
//! first invite completed, and later members could not read them.

use crate::common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use slim_bindings::session::SessionConfig;

fn group(topic: &str, mls_enabled: bool) -> SessionConfig {
    SessionConfig::Multicast {
        topic: name(topic),
        moderator: true,
        max_retries: 5,
        timeout: Duration::from_millis(200),
        mls_enabled,
        liveness: None,
    }
}

/// `members` invited back to back, `count` messages published right after the last invite call.
async fn back_to_back(tag: &str, members: usize, count: usize, mls: bool) {
    let moderator = app(&format!("{tag}-mod"), "secret").await;
    let apps = apps(&format!("{tag}-p"), members).await;
    let _hub = hub_with(&moderator, &apps.iter().collect::<Vec<_>>()).await;
    let topic = format!("{tag}-chat");
    let sid = moderator.create_session(group(&topic, mls)).await.unwrap();
    let mut handles = Vec::new();
    for p in &apps {
        handles.push(moderator.invite(sid, &p.name().without_id()).await.unwrap());
    }
    let sent: Vec<Vec<u8>> = (0..count).map(|i| format!("hello {i}").into_bytes()).collect();
    for m in &sent {
        moderator.publish(sid, to(&name(&topic), m)).await.unwrap();
    }
    for h in handles {
        h.joined().await.unwrap();
    }
    for (i, p) in apps.iter().enumerate() {
        let (info, first) = recv_new(p).await;
        assert_eq!((info.session_id, first.as_slice()), (sid, sent[0].as_slice()), "member {i} first message");
        for (k, expected) in sent.iter().enumerate() {
            let (_, got) = recv(p, sid).await.unwrap_or_else(|e| panic!("member {i} message {k}: {e}"));
            assert_eq!(&got, expected, "member {i} message {k}");
        }
        assert_eq!(p.stats().mls_failures.load(Ordering::Relaxed), 0, "member {i} could not decrypt something");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_invites_back_to_back_mls() {
    back_to_back("r2m", 2, 3, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_invites_back_to_back_mls() {
    back_to_back("r3m", 3, 3, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_invites_back_to_back_plain() {
    back_to_back("r3p", 3, 3, false).await;
}
