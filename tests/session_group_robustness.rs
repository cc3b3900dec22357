//! Group behaviour over a real hub on loopback: the relay ring of ten members (MLS on and off),
//! MLS confidentiality against a member that keeps listening after removal and against a late
//! joiner, senders with a bad identity, a permanent gap reported exactly once, invite-then-publish
//! a hundred times, and bad input that must be refused or dropped without stalling the group.

use crate::common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::shadow::Shadow;
use common::*;
use slim_bindings::app::App;
use slim_bindings::error::SlimError;
use slim_bindings::session::SessionConfig;
use slim_bindings::wire::builders::{self, Flags, PublishSpec};
use slim_bindings::wire::payload::JoinMessagePayload;
use slim_bindings::wire::{self, SessionMessageType, SessionType};

fn group(topic: &str, moderator: bool, mls_enabled: bool) -> SessionConfig {
    SessionConfig::Multicast {
        topic: name(topic),
        moderator,
        max_retries: 5,
        timeout: Duration::from_millis(200),
        mls_enabled,
        liveness: None,
    }
}

async fn ring(tag: &str, mls: bool) {
    const MEMBERS: usize = 10;
    let (hub, endpoint) = hub().await;
    let mut apps: Vec<App> = Vec::new();
    for i in 0..MEMBERS {
        let a = app(&format!("{tag}{i}"), "secret").await;
        if i > 0 {
            connect(&a, &endpoint).await;
            wait_subscribed(&hub, &a.name()).await;
        }
        apps.push(a);
    }
    let topic = format!("{tag}-ring");
    let moderator = apps[0].clone();
    let conn = connect(&moderator, &endpoint).await;
    let sid = moderator.create_session(group(&topic, true, mls)).await.unwrap();
    for a in &apps[1..] {
        moderator.set_route(&a.name().without_id(), conn).await.unwrap();
        moderator.invite(sid, &a.name().without_id()).await.unwrap().joined().await.unwrap();
    }
    // Member i, called by message "call i", calls member i+1; member 0 ends the ring.
    let mut tasks = Vec::new();
    for (i, a) in apps.iter().enumerate().skip(1) {
        let a = a.clone();
        let topic = topic.clone();
        tasks.push(tokio::spawn(async move {
            let (info, _) = recv_new(&a).await;
            assert_eq!(info.session_id, sid);
            let mut seen = Vec::new();
            for _ in 0..MEMBERS - 1 {
                let (_, m) = recv(&a, sid).await.unwrap_or_else(|e| panic!("member {i}: {e}"));
                let text = String::from_utf8(m).unwrap();
                if text == format!("call {i}") {
                    let next = format!("call {}", (i + 1) % MEMBERS);
                    a.publish(sid, to(&name(&topic), next.as_bytes())).await.unwrap();
                }
                seen.push(text);
            }
            seen
        }));
    }
    moderator.publish(sid, to(&name(&topic), b"call 1")).await.unwrap();
    let mut seen0 = Vec::new();
    for _ in 0..MEMBERS - 1 {
        seen0.push(String::from_utf8(recv(&moderator, sid).await.unwrap().1).unwrap());
    }
    let all: Vec<String> = (0..MEMBERS).map(|k| format!("call {k}")).collect();
    let expect_for = |i: usize| -> Vec<String> {
        // Everything except what member i itself sent ("call i+1").
        let mut v: Vec<String> = (1..=MEMBERS).map(|k| all[k % MEMBERS].clone()).collect();
        v.retain(|m| *m != all[(i + 1) % MEMBERS]);
        v.sort();
        v
    };
    // Each message exactly once; messages of different senders may interleave differently.
    seen0.sort();
    assert_eq!(seen0, expect_for(0));
    for (n, t) in tasks.into_iter().enumerate() {
        let i = n + 1;
        let mut seen = t.await.unwrap();
        seen.sort();
        assert_eq!(seen, expect_for(i), "member {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_of_ten_plain() {
    ring("ringp", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_of_ten_mls() {
    ring("ringm", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mls_late_joiner_and_removed_member_cannot_read() {
    use SessionMessageType::*;
    let (hub, endpoint) = hub().await;
    let channel = name("vault");
    let moderator = app("vmod", "secret").await;
    let cm = connect(&moderator, &endpoint).await;
    // Subscribed to the channel from the start: it captures what is sent before it joins.
    let mut shadow = Shadow::new(&endpoint, &hub, "shadow", &[moderator.name().without_id()], &channel).await;
    let p1 = app("vp1", "secret").await;
    // Short RTX bounds on the member too: an unreadable message is asked again, then reported.
    p1.set_default_session_config(group("vault", false, true)).unwrap();
    connect(&p1, &endpoint).await;
    wait_subscribed(&hub, &p1.name()).await;
    moderator.set_route(&name("vp1"), cm).await.unwrap();
    moderator.set_route(&name("shadow"), cm).await.unwrap();

    let sid = moderator.create_session(group("vault", true, true)).await.unwrap();
    moderator.invite(sid, &name("vp1")).await.unwrap().joined().await.unwrap();
    moderator.publish(sid, to(&channel, b"before shadow")).await.unwrap();
    assert_eq!(recv_new(&p1).await.1, b"before shadow");
    assert_eq!(recv(&p1, sid).await.unwrap().1, b"before shadow");
    let before = shadow.expect(MulticastMsg).await;

    // The shadow joins like any participant.
    let invite = moderator.invite(sid, &name("shadow")).await.unwrap();
    let welcome = shadow.join_by_hand().await;
    invite.joined().await.unwrap();

    // A late joiner cannot read what was sent before it joined ...
    assert!(shadow.mls.decrypt(before.blob()).is_err(), "late joiner decrypted an earlier message");
    // ... but reads what is sent now.
    moderator.publish(sid, to(&channel, b"with shadow")).await.unwrap();
    let during = shadow.expect(MulticastMsg).await;
    assert_eq!(shadow.mls.decrypt(during.blob()).unwrap(), b"with shadow");
    assert_eq!(recv(&p1, sid).await.unwrap().1, b"with shadow");

    // Corrupted ciphertext and forged control messages from a member: dropped and counted; the
    // unreadable message is asked for again (the shadow never answers), then reported lost by id.
    let enc = [(wire::META_MLS_ENCRYPTED, "true")];
    shadow.send(MulticastMsg, &channel, sid, 0, b"\x00\x01garbage".to_vec(), &enc).await;
    let fake_commit = shadow.mls.encrypt(b"not a commit").unwrap();
    shadow.send(ChannelMlsCommit, &channel, sid, 99, fake_commit, &[]).await;
    shadow
        .send(ChannelMlsWelcome, &channel, sid, 7, welcome.blob().to_vec(), &[(wire::META_MLS_INIT_COMMIT_ID, "1")])
        .await;
    shadow.send(ChannelLeaveRequest, &channel, sid, 8, Vec::new(), &[]).await;
    let good = shadow.mls.encrypt(b"shadow speaks").unwrap();
    shadow.send(MulticastMsg, &channel, sid, 1, good, &enc).await;
    for reader in [&p1, &moderator] {
        let lost = SlimError::MessageLost { session_id: sid, message_id: 0, producer: Some(shadow.name.clone()) };
        assert_eq!(recv(reader, sid).await, Err(lost), "{}", reader.name());
        assert_eq!(recv(reader, sid).await.unwrap().1, b"shadow speaks");
    }
    assert!(p1.stats().mls_failures.load(Ordering::Relaxed) >= 1);
    assert!(p1.stats().unhandled_control.load(Ordering::Relaxed) >= 3);
    assert!(p1.try_recv_session(sid).is_none(), "nothing else reached p1");

    // Removal: the shadow acknowledges the COMMIT but does not apply it, answers the LEAVE and
    // stays subscribed to the channel.
    let remover = {
        let m = moderator.clone();
        tokio::spawn(async move { m.remove(sid, &name("shadow")).await })
    };
    let commit = shadow.expect(ChannelMlsCommit).await;
    shadow.reply(&commit, ChannelMlsAck, Vec::new()).await;
    let leave = shadow.expect(ChannelLeaveRequest).await;
    shadow.reply(&leave, ChannelLeaveReply, Vec::new()).await;
    remover.await.unwrap().unwrap();

    moderator.publish(sid, to(&channel, b"after shadow")).await.unwrap();
    assert_eq!(recv(&p1, sid).await.unwrap().1, b"after shadow");
    let after = shadow.expect(MulticastMsg).await;
    assert!(!after.blob().windows(12).any(|w| w == b"after shadow"), "plaintext on the wire");
    assert!(shadow.mls.decrypt(after.blob()).is_err(), "removed member decrypted a new message");
    // Applying the removal commit does not help either.
    let _ = shadow.mls.process_commit(commit.blob());
    assert!(shadow.mls.decrypt(after.blob()).is_err(), "removed member decrypted after its removal commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_with_a_bad_identity_is_not_delivered() {
    let (hub, endpoint) = hub().await;
    let moderator = app("imod", "secret").await;
    let p1 = app("ip1", "secret").await;
    let mallory = app("mallory", "other secret").await;
    let cm = connect(&moderator, &endpoint).await;
    connect(&p1, &endpoint).await;
    let cmal = connect(&mallory, &endpoint).await;
    wait_subscribed(&hub, &p1.name()).await;
    moderator.set_route(&name("ip1"), cm).await.unwrap();
    let sid = moderator.create_session(group("ichat", true, false)).await.unwrap();
    moderator.invite(sid, &name("ip1")).await.unwrap().joined().await.unwrap();

    // Mallory writes on the channel with the same session id, through the hub.
    mallory.set_route(&name("ichat"), cmal).await.unwrap();
    mallory.set_default_session_config(group("ichat", false, false)).unwrap();
    let msid = mallory.create_session(group("ichat", false, false)).await.unwrap();
    mallory.publish(msid, to(&name("ichat"), b"forged")).await.unwrap();
    let p1c = p1.clone();
    wait_until("p1 rejects mallory's identity", move || p1c.stats().identity_rejected.load(Ordering::Relaxed) >= 1)
        .await;
    moderator.publish(sid, to(&name("ichat"), b"genuine")).await.unwrap();
    let (info, m) = recv_new(&p1).await;
    assert_eq!((info.session_id, m.as_slice()), (sid, b"genuine".as_slice()));
    assert_eq!(recv(&p1, sid).await.unwrap().1, b"genuine");
    assert!(p1.try_recv_session(sid).is_none());
    assert!(p1.try_recv_new_session().is_none(), "no session from mallory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_gap_is_reported_once_then_delivery_continues() {
    use SessionMessageType::*;
    let (hub, endpoint) = hub().await;
    let channel = name("gappy");
    let p1 = app("gp1", "secret").await;
    connect(&p1, &endpoint).await;
    wait_subscribed(&hub, &p1.name()).await;
    let mut producer = Shadow::new(&endpoint, &hub, "producer", &[p1.name().without_id()], &channel).await;
    // The hand-driven producer acts as moderator: p1 joins its group.
    let sid = 777;
    let join = JoinMessagePayload { channel_name: channel.clone(), moderator_name: producer.name.clone() };
    let spec = PublishSpec {
        source: &producer.name,
        destination: &p1.name(),
        flags: Flags::one(),
        session_type: SessionType::SessionMulticast,
        message_type: ChannelJoinRequest,
        session_id: sid,
        message_id: 5,
        original_names: false,
        content_type: "",
    };
    let mut msg = builders::publish(
        &spec,
        join.encode(),
        HashMap::from([(wire::META_IDENTITY.to_string(), producer.token.clone())]),
    );
    builders::set_session_destination(&mut msg, &channel);
    producer.tx.send(msg).await.unwrap();
    producer.expect(ChannelJoinReply).await;

    producer.send(MulticastMsg, &p1.name(), sid, 0, b"m0".to_vec(), &[]).await;
    producer.send(MulticastMsg, &p1.name(), sid, 2, b"m2".to_vec(), &[]).await;
    let rtx = producer.expect(RtxRequest).await;
    assert_eq!(rtx.session_header().unwrap().message_id, 1);
    let spec = PublishSpec {
        source: &producer.name,
        destination: &p1.name(),
        flags: Flags::one().error(),
        session_type: SessionType::SessionMulticast,
        message_type: RtxReply,
        session_id: sid,
        message_id: 1,
        original_names: false,
        content_type: "",
    };
    let meta = HashMap::from([(wire::META_IDENTITY.to_string(), producer.token.clone())]);
    producer.tx.send(builders::publish(&spec, Vec::new(), meta)).await.unwrap();
    producer.send(MulticastMsg, &p1.name(), sid, 3, b"m3".to_vec(), &[]).await;

    assert_eq!(recv_new(&p1).await.1, b"m0");
    assert_eq!(recv(&p1, sid).await.unwrap().1, b"m0");
    assert_eq!(
        recv(&p1, sid).await,
        Err(SlimError::MessageLost { session_id: sid, message_id: 1, producer: Some(producer.name.clone()) })
    );
    assert_eq!(recv(&p1, sid).await.unwrap().1, b"m2");
    assert_eq!(recv(&p1, sid).await.unwrap().1, b"m3");
    // The late RTX reply for the same id and a duplicate change nothing.
    producer.send(RtxReply, &p1.name(), sid, 1, b"m1 late".to_vec(), &[]).await;
    producer.send(MulticastMsg, &p1.name(), sid, 2, b"m2 again".to_vec(), &[]).await;
    producer.send(MulticastMsg, &p1.name(), sid, 4, b"m4".to_vec(), &[]).await;
    assert_eq!(recv(&p1, sid).await.unwrap().1, b"m4");
    assert!(p1.try_recv_session(sid).is_none(), "exactly one MessageLost, nothing else");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_message_after_joined_is_read_in_100_of_100_runs() {
    let (hub, endpoint) = hub().await;
    let moderator = app("hmod", "secret").await;
    let p = app("hp", "secret").await;
    let cm = connect(&moderator, &endpoint).await;
    connect(&p, &endpoint).await;
    wait_subscribed(&hub, &p.name()).await;
    moderator.set_route(&name("hp"), cm).await.unwrap();
    // Each step below is bounded (`recv_new` by WAIT; the others end or fail typed); how long
    // the 100 runs take is no business of this test (speed is measured in benches/).
    for run in 0..100 {
        let mls = run % 2 == 0;
        let sid = moderator.create_session(group("hundred", true, mls)).await.unwrap();
        moderator.invite(sid, &name("hp")).await.unwrap().joined().await.unwrap();
        let text = format!("first {run}");
        moderator.publish(sid, to(&name("hundred"), text.as_bytes())).await.unwrap();
        let (info, m) = recv_new(&p).await;
        assert_eq!((info.session_id, m), (sid, text.into_bytes()), "run {run} (mls {mls})");
        // The member's old session leaves while the next one joins the same channel.
        moderator.delete_session(sid).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_calls_with_bad_input_get_typed_errors() {
    let (hub, endpoint) = hub().await;
    let moderator = app("bmod", "secret").await;
    let p1 = app("bp1", "secret").await;
    let cm = connect(&moderator, &endpoint).await;
    connect(&p1, &endpoint).await;
    wait_subscribed(&hub, &p1.name()).await;
    moderator.set_route(&name("bp1"), cm).await.unwrap();

    assert!(matches!(moderator.invite(12345, &name("bp1")).await, Err(SlimError::SessionNotFound(12345))));
    assert!(matches!(moderator.remove(12345, &name("bp1")).await, Err(SlimError::SessionNotFound(12345))));
    let p2p = moderator
        .create_session(SessionConfig::Unicast { timeout: None, max_retries: None, mls_enabled: false, liveness: None })
        .await
        .unwrap();
    assert!(matches!(moderator.invite(p2p, &name("bp1")).await, Err(SlimError::Invite(_))));
    assert!(matches!(moderator.remove(p2p, &name("bp1")).await, Err(SlimError::Invite(_))));

    let sid = moderator.create_session(group("bchat", true, true)).await.unwrap();
    moderator.invite(sid, &name("bp1")).await.unwrap().joined().await.unwrap();
    moderator.publish(sid, to(&name("bchat"), b"hi")).await.unwrap();
    assert_eq!(recv_new(&p1).await.1, b"hi");
    assert_eq!(recv(&p1, sid).await.unwrap().1, b"hi");
    let by_member = p1.invite(sid, &name("bmod")).await.unwrap().joined().await;
    assert!(matches!(by_member, Err(SlimError::Invite(_))), "{by_member:?}");
    assert!(matches!(p1.remove(sid, &name("bmod")).await, Err(SlimError::Invite(_))));
    assert!(matches!(moderator.remove(sid, &name("nobody")).await, Err(SlimError::Invite(_))));
    // The group still works after all of that.
    p1.publish(sid, to(&name("bchat"), b"still here")).await.unwrap();
    assert_eq!(recv(&moderator, sid).await.unwrap().1, b"still here");
}

/// A member's message published while a newcomer's invite is in flight (a 0.6.0 moderator lets
/// its app publish then) reaches the newcomer only by retransmission, after its WELCOME: the
/// RTX_REPLY must be encrypted at the producer's current epoch, or the newcomer cannot read it
/// (issue 4 interop: a 0.6.0 member never read our member's message). A message older than
/// `RTX_REENCRYPT_WINDOW` keeps its epoch (unit test `rtx_reencryption_is_bounded` in
/// src/session/multicast/producer.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retransmission_reaches_the_member_added_by_the_latest_commit() {
    use SessionMessageType::*;
    let (hub, endpoint) = hub().await;
    let channel = name("relay");
    let moderator = app("rmod", "secret").await;
    let cm = connect(&moderator, &endpoint).await;
    let p1 = app("rp1", "secret").await;
    let p2 = app("rp2", "secret").await;
    connect(&p1, &endpoint).await;
    connect(&p2, &endpoint).await;
    wait_subscribed(&hub, &p1.name()).await;
    wait_subscribed(&hub, &p2.name()).await;
    let routes = [moderator.name().without_id(), p1.name().without_id()];
    let mut shadow = Shadow::new(&endpoint, &hub, "rshadow", &routes, &channel).await;
    for n in ["rp1", "rp2", "rshadow"] {
        moderator.set_route(&name(n), cm).await.unwrap();
    }
    let sid = moderator.create_session(group("relay", true, true)).await.unwrap();
    moderator.invite(sid, &name("rp1")).await.unwrap().joined().await.unwrap();

    // p1 speaks before the shadow is invited: its ciphertext is of the epoch before the shadow's.
    p1.publish(sid, to(&channel, b"early")).await.unwrap();
    assert_eq!(recv(&moderator, sid).await.unwrap().1, b"early");
    let early = shadow.expect(MulticastMsg).await;

    let invite = moderator.invite(sid, &name("rshadow")).await.unwrap();
    shadow.join_by_hand().await;
    invite.joined().await.unwrap(); // p1 acknowledged the COMMIT: it is at the shadow's epoch
    assert!(shadow.mls.decrypt(early.blob()).is_err(), "the original ciphertext is of an earlier epoch");

    // Asked for it (a beacon would prompt this), p1 retransmits it readable at the current epoch.
    let early_id = early.session_header().unwrap().message_id;
    shadow.send(RtxRequest, &p1.name(), sid, early_id, Vec::new(), &[]).await;
    let reply = shadow.expect(RtxReply).await;
    assert_eq!(reply.metadata.get(wire::META_MLS_ENCRYPTED).map(String::as_str), Some("true"));
    assert!(!reply.blob().windows(5).any(|w| w == b"early"), "plaintext on the wire");
    assert_eq!(shadow.mls.decrypt(reply.blob()).unwrap(), b"early");

    // One more member: two epochs old, still recent, it is again readable at the current epoch.
    let invite = moderator.invite(sid, &name("rp2")).await.unwrap();
    let commit = shadow.expect(ChannelMlsCommit).await;
    shadow.mls.process_commit(commit.blob()).unwrap();
    shadow.reply(&commit, ChannelMlsAck, Vec::new()).await;
    invite.joined().await.unwrap();
    shadow.send(RtxRequest, &p1.name(), sid, early_id, Vec::new(), &[]).await;
    let reply = shadow.expect(RtxReply).await;
    assert_eq!(shadow.mls.decrypt(reply.blob()).unwrap(), b"early");
}

/// A member that one moderator invited into two groups (two channels) has one route to that
/// moderator in its node (on its connection to the hub), shared by both sessions: leaving the
/// first group must leave it to the second (the check "does another session use it?" and the
/// removal are one step under the app's channel lock), and leaving the last group removes it.
/// Before, the first leave removed it whenever the other session was on another channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_one_group_keeps_the_route_to_the_moderator_for_another() {
    let moderator = app("rmod", "secret").await;
    let member = app("rmem", "secret").await;
    let hub = hub_with(&moderator, &[&member]).await;
    let member_conn = hub.conns[0];
    let routed = || member.node().subscriptions_of(member_conn).contains(&moderator.name());
    let g1 = moderator.create_session(group("rchat1", true, false)).await.unwrap();
    let g2 = moderator.create_session(group("rchat2", true, false)).await.unwrap();
    moderator.invite(g1, &name("rmem")).await.unwrap().joined().await.unwrap();
    moderator.invite(g2, &name("rmem")).await.unwrap().joined().await.unwrap();
    moderator.publish(g2, to(&name("rchat2"), b"two")).await.unwrap();
    assert_eq!(recv(&member, g2).await.unwrap().1, b"two");
    assert!(routed(), "the member's sessions set a route to the moderator");

    tokio::time::timeout(Duration::from_secs(10), moderator.remove(g1, &name("rmem")))
        .await
        .expect("removal from the first group within 10 s")
        .unwrap();
    // The first session's end reaches its reader after the route change (if any) was sent; once
    // read, the session leaves the member's app. A message sent after it through the member's
    // node has crossed: the node has applied it.
    assert!(matches!(recv(&member, g1).await, Err(SlimError::PeerClosed { session_id, .. }) if session_id == g1));
    wait_until("the member's first session deleted", || member.get_session_config(g1).is_err()).await;
    member.publish(g2, to(&name("rchat2"), b"still here")).await.unwrap();
    assert_eq!(recv(&moderator, g2).await.unwrap().1, b"still here");
    assert!(routed(), "leaving the first group removed the route the second group uses");

    tokio::time::timeout(Duration::from_secs(10), moderator.remove(g2, &name("rmem")))
        .await
        .expect("removal from the second group within 10 s")
        .unwrap();
    wait_until("the route to the moderator removed with the last group", || !routed()).await;
}
