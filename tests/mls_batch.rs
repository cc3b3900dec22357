//! MLS batches over a real hub on loopback: when every member advertises batch support, queued
//! group publishes go out several per MLS application message; every member still reads every
//! message exactly once, in order per sender, with its own id, type and metadata; an eavesdropper
//! on the channel sees batches but no plaintext. A member whose leaf does not advertise the
//! capability never receives a batch (and batching resumes once it is removed).
//!
//! Whether publishes queue up (and so form batches) must not depend on the machine's speed: the
//! tests run on a single-threaded runtime, where a burst of publishes fills the session task's
//! queue until the publishing task yields (tokio's cooperative budget, or a full queue), and
//! only then does the session task run and find several publishes waiting. The assertions that
//! batches exist therefore hold on any machine.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use common::shadow::Shadow;
use common::*;
use slim_bindings::app::App;
use slim_bindings::mls::batch::META_MLS_BATCH;
use slim_bindings::session::{PublishRequest, SessionConfig};
use slim_bindings::wire::{self, Message, Name, SessionMessageType};

fn group(topic: &str, moderator: bool) -> SessionConfig {
    SessionConfig::Multicast {
        topic: name(topic),
        moderator,
        max_retries: 5,
        timeout: Duration::from_millis(500),
        mls_enabled: true,
        liveness: None,
    }
}

/// Reads MULTICAST_MSGs from `from` until they carry `total` messages; returns the wire
/// messages. Fails on anything that is not ciphertext.
async fn capture(shadow: &mut Shadow, from: &Name, total: usize, secret_marker: &[u8]) -> Vec<Message> {
    let mut seen = Vec::new();
    let mut carried = 0;
    while carried < total {
        let m = shadow.expect(SessionMessageType::MulticastMsg).await;
        if m.source_name().as_ref() != Some(from) {
            continue;
        }
        assert!(!m.blob().windows(secret_marker.len()).any(|w| w == secret_marker), "plaintext on the wire");
        assert_eq!(m.metadata.get(wire::META_MLS_ENCRYPTED).map(String::as_str), Some("true"));
        carried += m.metadata.get(META_MLS_BATCH).map_or(1, |c| c.parse::<usize>().unwrap());
        seen.push(m);
    }
    assert_eq!(carried, total, "batches overlap the end of the burst");
    seen
}

fn numbered(channel: &Name, tag: &str, i: usize) -> PublishRequest {
    PublishRequest {
        dest: Some(channel.clone()),
        blob: format!("secret-{tag}-{i:05}").into_bytes().into(),
        payload_type: Some(format!("type-{tag}")),
        metadata: Some(HashMap::from([("seq".to_string(), i.to_string())])),
        fanout: 1,
        ..Default::default()
    }
}

/// Reads `expected` messages of session `sid`; per sender tag they must come in order, each once,
/// with their own type and metadata; messages tagged `ids.0` have message id = number + `ids.1`.
async fn read_all(app: &App, sid: u32, expected: &[(&str, usize)], ids: (&str, usize)) {
    let total: usize = expected.iter().map(|(_, n)| n).sum();
    let mut next: HashMap<String, usize> = HashMap::new();
    for _ in 0..total {
        let (info, blob) = recv(app, sid).await.unwrap_or_else(|e| panic!("{}: {e}", app.name()));
        let text = String::from_utf8(blob).unwrap();
        let mut parts = text.splitn(3, '-');
        let (_, tag, num) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        let i: usize = num.parse().unwrap();
        let want = next.entry(tag.to_string()).or_default();
        assert_eq!(i, *want, "{}: {tag} out of order or duplicated", app.name());
        *want += 1;
        assert_eq!(info.payload_type, format!("type-{tag}"));
        assert_eq!(info.metadata.get("seq"), Some(&i.to_string()));
        assert!(!info.metadata.contains_key(META_MLS_BATCH));
        if tag == ids.0 {
            assert_eq!(info.message_id as usize, i + ids.1, "{}: message id of {tag} {i}", app.name());
        }
    }
    for (tag, n) in expected {
        assert_eq!(next.get(*tag).copied().unwrap_or(0), *n, "{}: count of {tag}", app.name());
    }
    assert!(app.try_recv_session(sid).is_none(), "{}: more than expected", app.name());
}

#[tokio::test(flavor = "current_thread")]
async fn batched_group_delivers_each_message_once_in_order_to_members_only() {
    const FROM_MOD: usize = 3000;
    const FROM_P1: usize = 500;
    let (hub, endpoint) = hub().await;
    let channel = name("bchat");
    let moderator = app("bmod", "secret").await;
    let cm = connect(&moderator, &endpoint).await;
    let mut eve = Shadow::new(&endpoint, &hub, "beve", &[moderator.name().without_id()], &channel).await;
    let mut members = Vec::new();
    for agent in ["bp1", "bp2", "bp3"] {
        let a = app(agent, "secret").await;
        connect(&a, &endpoint).await;
        wait_subscribed(&hub, &a.name()).await;
        moderator.set_route(&name(agent), cm).await.unwrap();
        members.push(a);
    }
    let sid = moderator.create_session(group("bchat", true)).await.unwrap();
    for a in &members {
        moderator.invite(sid, &a.name().without_id()).await.unwrap().joined().await.unwrap();
    }
    // A first message makes every member's session known (and its id = the session's).
    moderator.publish(sid, numbered(&channel, "warm", 0)).await.unwrap();
    for a in &members {
        let (info, _) = recv_new(a).await;
        assert_eq!(info.session_id, sid);
        assert_eq!(recv(a, sid).await.unwrap().1, b"secret-warm-00000");
    }
    capture(&mut eve, &moderator.name(), 1, b"secret-").await;

    // Both bursts at once: the moderator's from here, p1's from a task.
    let p1 = members[0].clone();
    let ch = channel.clone();
    let p1_burst = tokio::spawn(async move {
        for i in 0..FROM_P1 {
            p1.publish(sid, numbered(&ch, "p1", i)).await.unwrap();
        }
    });
    for i in 0..FROM_MOD {
        moderator.publish(sid, numbered(&channel, "mod", i)).await.unwrap();
    }
    p1_burst.await.unwrap();

    // The warm-up message took the moderator's id 0.
    let readers: Vec<_> = members
        .iter()
        .enumerate()
        .map(|(k, a)| {
            let a = a.clone();
            tokio::spawn(async move {
                if k == 0 {
                    read_all(&a, sid, &[("mod", FROM_MOD)], ("mod", 1)).await;
                } else {
                    read_all(&a, sid, &[("mod", FROM_MOD), ("p1", FROM_P1)], ("mod", 1)).await;
                }
            })
        })
        .collect();
    // The moderator reads p1's messages (it is a member like the others).
    read_all(&moderator, sid, &[("p1", FROM_P1)], ("p1", 0)).await;
    for r in readers {
        r.await.unwrap();
    }

    let wire_msgs = capture(&mut eve, &moderator.name(), FROM_MOD, b"secret-").await;
    let batches = wire_msgs.iter().filter(|m| m.metadata.contains_key(META_MLS_BATCH)).count();
    assert!(batches > 0, "a burst of {FROM_MOD} publishes produced no batch");
    assert!(wire_msgs.len() < FROM_MOD, "batches carry several messages");
    // The eavesdropper cannot open them.
    for m in wire_msgs.iter().take(5) {
        assert!(eve.mls.decrypt(m.blob()).is_err());
    }
    for a in members.iter().chain([&moderator]) {
        assert_eq!(a.stats().mls_failures.load(std::sync::atomic::Ordering::Relaxed), 0, "{}", a.name());
    }
}

#[tokio::test(flavor = "current_thread")]
async fn member_without_batch_capability_never_receives_batches() {
    use SessionMessageType::*;
    const BURST: usize = 1500;
    let (hub, endpoint) = hub().await;
    let channel = name("lchat");
    let moderator = app("lmod", "secret").await;
    let cm = connect(&moderator, &endpoint).await;
    let mut legacy = Shadow::new(&endpoint, &hub, "llegacy", &[moderator.name().without_id()], &channel).await;
    legacy.mls.advertise_batches(false);
    let p1 = app("lp1", "secret").await;
    connect(&p1, &endpoint).await;
    wait_subscribed(&hub, &p1.name()).await;
    moderator.set_route(&name("lp1"), cm).await.unwrap();
    moderator.set_route(&name("llegacy"), cm).await.unwrap();
    let sid = moderator.create_session(group("lchat", true)).await.unwrap();
    moderator.invite(sid, &name("lp1")).await.unwrap().joined().await.unwrap();

    // The legacy member joins by hand (last, so no later commit needs applying).
    let invite = moderator.invite(sid, &name("llegacy")).await.unwrap();
    legacy.join_by_hand().await;
    invite.joined().await.unwrap();

    for i in 0..BURST {
        moderator.publish(sid, numbered(&channel, "mod", i)).await.unwrap();
    }
    let got = capture(&mut legacy, &moderator.name(), BURST, b"secret-").await;
    assert_eq!(got.len(), BURST, "one wire message per publish");
    for (i, m) in got.iter().enumerate() {
        assert!(!m.metadata.contains_key(META_MLS_BATCH), "a batch reached the legacy member");
        assert_eq!(legacy.mls.decrypt(m.blob()).unwrap(), format!("secret-mod-{i:05}").into_bytes());
    }
    let (info, _) = recv_new(&p1).await;
    assert_eq!(info.session_id, sid);
    read_all(&p1, sid, &[("mod", BURST)], ("mod", 0)).await;

    // Once the legacy member is removed, the group batches again (it still listens on the
    // channel, so it sees the batches but cannot read them).
    let remover = {
        let m = moderator.clone();
        tokio::spawn(async move { m.remove(sid, &name("llegacy")).await })
    };
    let commit = legacy.expect(ChannelMlsCommit).await;
    legacy.reply(&commit, ChannelMlsAck, Vec::new()).await;
    let leave = legacy.expect(ChannelLeaveRequest).await;
    legacy.reply(&leave, ChannelLeaveReply, Vec::new()).await;
    remover.await.unwrap().unwrap();
    for i in 0..BURST {
        moderator.publish(sid, numbered(&channel, "after", i)).await.unwrap();
    }
    let after = capture(&mut legacy, &moderator.name(), BURST, b"secret-").await;
    assert!(after.iter().any(|m| m.metadata.contains_key(META_MLS_BATCH)), "no batch after the removal");
    for next in 0..BURST {
        let (info, blob) = recv(&p1, sid).await.unwrap();
        assert_eq!(blob, format!("secret-after-{next:05}").into_bytes());
        assert_eq!(info.metadata.get("seq"), Some(&next.to_string()));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn lost_batches_are_recovered_per_message_in_order() {
    const N: usize = 2000;
    let (hub, endpoint) = hub().await;
    let proxy = lossy_proxy::start(&endpoint, 100, 50, 0xBA7C4).await;
    let channel = name("rchat");
    let moderator = app("rmod", "secret").await;
    let cm = connect(&moderator, &endpoint).await;
    let mut eve = Shadow::new(&endpoint, &hub, "reve", &[moderator.name().without_id()], &channel).await;
    let p1 = app("rp1", "secret").await;
    connect(&p1, &proxy.endpoint).await;
    wait_subscribed(&hub, &p1.name()).await;
    moderator.set_route(&name("rp1"), cm).await.unwrap();
    let cfg = SessionConfig::Multicast {
        topic: channel.clone(),
        moderator: true,
        max_retries: 40,
        timeout: Duration::from_millis(200),
        mls_enabled: true,
        liveness: None,
    };
    let sid = moderator.create_session(cfg).await.unwrap();
    moderator.invite(sid, &name("rp1")).await.unwrap().joined().await.unwrap();
    // A member starts its window at the first message it sees: one message first (recovered by
    // the beacon if dropped) so that the burst is read from its start.
    moderator.publish(sid, numbered(&channel, "warm", 0)).await.unwrap();
    let (first, _) = tokio::time::timeout(Duration::from_secs(30), p1.recv_new_session()).await.unwrap().unwrap();
    assert_eq!(first.session_id, sid);
    assert_eq!(recv(&p1, sid).await.unwrap().1, b"secret-warm-00000");
    capture(&mut eve, &moderator.name(), 1, b"secret-").await;
    let reader = {
        let p1 = p1.clone();
        tokio::spawn(async move { read_all(&p1, sid, &[("mod", N)], ("mod", 1)).await })
    };
    for i in 0..N {
        moderator.publish(sid, numbered(&channel, "mod", i)).await.unwrap();
    }
    let wire_msgs = capture(&mut eve, &moderator.name(), N, b"secret-").await;
    assert!(wire_msgs.iter().any(|m| m.metadata.contains_key(META_MLS_BATCH)), "no batch in the burst");
    tokio::time::timeout(Duration::from_secs(60), reader).await.expect("recovered within 60 s").unwrap();
    assert!(proxy.counters.dropped.load(std::sync::atomic::Ordering::Relaxed) > 10, "the link must drop");
    assert_eq!(p1.stats().mls_failures.load(std::sync::atomic::Ordering::Relaxed), 0);
}
