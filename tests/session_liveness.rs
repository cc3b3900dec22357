//! Liveness of a group over real loopback gRPC (docs/liveness.md): a member whose moderator is
//! gone gets `ModeratorLost` within the bound; a moderator drops a member that stopped answering
//! and the others keep talking; `participants` on both sides; an invite with a deadline is
//! abandoned by the moderator, which lets its held publishes go out. Sticky point-to-point
//! sessions: each side learns within the bound that the other is gone (`PeerLost`), a quiet
//! session stays up, and a responder's delete ends the initiator's side (`PeerClosed`).

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use slim_bindings::app::App;
use slim_bindings::error::SlimError;
use slim_bindings::session::{PublishRequest, SessionConfig};
use slim_bindings::wire::Name;

const BOUND: Duration = Duration::from_millis(1200);
/// Scheduling slack on a loaded machine.
const SLACK: Duration = Duration::from_millis(2500);

fn group(moderator: bool, mls: bool) -> SessionConfig {
    SessionConfig::Multicast {
        topic: name("live-chat"),
        moderator,
        max_retries: 5,
        timeout: Duration::from_millis(200),
        mls_enabled: mls,
        liveness: Some(BOUND),
    }
}

/// The agent parts of `names`, sorted.
fn agents(names: Vec<Name>) -> Vec<String> {
    let mut out: Vec<String> = names.iter().map(|n| n.strings().map(|s| s[2].clone()).unwrap_or_default()).collect();
    out.sort();
    out
}

/// A moderator and `n` members on one hub, every member invited (and joined); returns the
/// session id once every member has read the moderator's first message.
async fn group_of(n: usize, mls: bool) -> (Hub, App, Vec<App>, u32) {
    let moderator = app("mod", "secret").await;
    let members = apps("m", n).await;
    let refs: Vec<&App> = members.iter().collect();
    let hub = hub_with(&moderator, &refs).await;
    let sid = moderator.create_session(group(true, mls)).await.unwrap();
    for m in &members {
        moderator.invite_within(sid, &m.name().without_id(), Some(WAIT)).await.unwrap().joined().await.unwrap();
    }
    moderator.publish(sid, to(&name("live-chat"), b"hello")).await.unwrap();
    for m in &members {
        let (info, p) = recv_new(m).await;
        assert_eq!((info.session_id, p.as_slice()), (sid, b"hello".as_slice()));
        assert_eq!(recv(m, sid).await.unwrap().1, b"hello");
    }
    (hub, moderator, members, sid)
}

async fn members_learn_that_the_moderator_is_gone(mls: bool) {
    let (_hub, moderator, members, sid) = group_of(2, mls).await;
    let mut expected: Vec<String> = vec!["m0".into(), "m1".into(), "mod".into()];
    expected.sort();
    assert_eq!(agents(moderator.participants(sid).await.unwrap()), expected);
    // A member learns the list from the moderator's heartbeats.
    participants_until(&members[0], sid, BOUND * 2, |names| *names == expected).await;

    let pending: Vec<_> = members
        .iter()
        .map(|m| {
            let m = m.clone();
            tokio::spawn(async move { (m.recv_session(sid).await, Instant::now()) })
        })
        .collect();
    // The moderator's process dies: its node goes, and nothing more comes from it.
    moderator.node().shutdown().await;
    let died = Instant::now();
    drop(moderator);
    for p in pending {
        let (got, at) = tokio::time::timeout(BOUND + SLACK, p).await.expect("the pending receive raised").unwrap();
        match got {
            Err(SlimError::ModeratorLost { session_id, moderator, .. }) => {
                assert_eq!(session_id, sid);
                assert_eq!(agents(vec![moderator]), vec!["mod".to_string()]);
            }
            other => panic!("expected ModeratorLost, got {other:?}"),
        }
        assert!(at - died < BOUND + SLACK, "{:?}", at - died);
    }
    for m in &members {
        assert!(matches!(m.recv_session(sid).await, Err(SlimError::SessionClosed)), "closed after the error");
    }
}

/// Polls `app.participants(sid)` until `done` holds for the agent names; panics after `bound`.
async fn participants_until(app: &App, sid: u32, bound: Duration, done: impl Fn(&Vec<String>) -> bool) {
    let deadline = Instant::now() + bound;
    loop {
        let names = agents(app.participants(sid).await.expect("participants"));
        if done(&names) {
            return;
        }
        assert!(Instant::now() < deadline, "participants of {} still {names:?}", app.name());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `dead` members of a group of `dead + 2` die at the same moment (their processes end): the
/// moderator drops all of them within the bound (under MLS, a removal commit does not wait for
/// a member that is itself found dead) and the two others keep talking.
async fn moderator_drops_dead_members(mls: bool, dead: usize) {
    let (_hub, moderator, mut members, sid) = group_of(2 + dead, mls).await;
    let gone: Vec<App> = members.drain(2..).collect();
    for g in &gone {
        g.node().shutdown().await;
    }
    let died = Instant::now();
    drop(gone);
    participants_until(&moderator, sid, BOUND + SLACK, |names| names.len() == 3).await;
    assert!(died.elapsed() < BOUND + SLACK, "{:?}", died.elapsed());
    assert_eq!(agents(moderator.participants(sid).await.unwrap()), vec!["m0", "m1", "mod"]);

    // The others keep talking, both ways, and nobody thinks the moderator is gone.
    members[0].publish(sid, to(&name("live-chat"), b"from m0")).await.unwrap();
    for a in [&members[1], &moderator] {
        let (info, p) = recv(a, sid).await.unwrap();
        assert_eq!((p.as_slice(), agents(vec![info.source])), (b"from m0".as_slice(), vec!["m0".to_string()]));
    }
    moderator.publish(sid, to(&name("live-chat"), b"still here")).await.unwrap();
    for a in &members {
        assert_eq!(recv(a, sid).await.unwrap().1, b"still here");
    }
    // Several bounds later the group is unchanged.
    tokio::time::sleep(BOUND * 2).await;
    assert_eq!(agents(moderator.participants(sid).await.unwrap()), vec!["m0", "m1", "mod"]);
    for a in &members {
        assert!(a.try_recv_session(sid).is_none(), "nothing else, no ModeratorLost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_learn_that_the_moderator_is_gone_plain() {
    members_learn_that_the_moderator_is_gone(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_learn_that_the_moderator_is_gone_mls() {
    members_learn_that_the_moderator_is_gone(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderator_drops_a_dead_member_plain() {
    moderator_drops_dead_members(false, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderator_drops_a_dead_member_mls() {
    moderator_drops_dead_members(true, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderator_drops_two_members_that_die_together_plain() {
    moderator_drops_dead_members(false, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderator_drops_two_members_that_die_together_mls() {
    moderator_drops_dead_members(true, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_past_its_deadline_is_abandoned_and_held_publishes_go_out() {
    let (hub, moderator, members, sid) = group_of(1, false).await;
    moderator.set_route(&name("absent"), hub.conn).await.unwrap();
    let started = Instant::now();
    let invite = moderator.invite_within(sid, &name("absent"), Some(Duration::from_millis(800))).await.unwrap();
    // Held while the invite runs, then sent once the moderator gives up on it.
    moderator.publish(sid, to(&name("live-chat"), b"after the invite")).await.unwrap();
    match tokio::time::timeout(WAIT, invite.joined()).await.expect("the invite ends") {
        Err(SlimError::Invite(text)) => assert!(text.contains("no answer"), "{text}"),
        other => panic!("expected an invite error, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_millis(800) + SLACK, "{:?}", started.elapsed());
    assert_eq!(recv(&members[0], sid).await.unwrap().1, b"after the invite");
    assert!(started.elapsed() < Duration::from_millis(800) + SLACK, "held publish out late: {:?}", started.elapsed());
    assert_eq!(agents(moderator.participants(sid).await.unwrap()), vec!["m0", "mod"]);
    // A point-to-point session has no participants.
    let p2p = moderator.create_session(SessionConfig::default_p2p()).await.unwrap();
    assert!(matches!(moderator.participants(p2p).await, Err(SlimError::Invite(_))));
}

fn sticky(mls: bool) -> SessionConfig {
    // Retries far past the bound: what is published after the peer died is still held (not timed
    // out) when the session ends, so the error counts it.
    SessionConfig::Unicast {
        timeout: Some(Duration::from_millis(200)),
        max_retries: Some(100),
        mls_enabled: mls,
        liveness: Some(BOUND),
    }
}

/// A reliable sticky session from `alice` to `bob` that has carried one message each way.
async fn sticky_pair(mls: bool) -> (Hub, App, App, u32) {
    let (hub, alice, bob) = pair("alice", "bob").await;
    let sid = alice.create_session(sticky(mls)).await.unwrap();
    alice.publish(sid, to(&name("bob"), b"hello")).await.unwrap();
    let (first, _) = recv_new(&bob).await;
    assert_eq!(first.session_id, sid);
    assert_eq!(recv(&bob, sid).await.unwrap().1, b"hello");
    bob.publish(sid, reply(&first, b"hi")).await.unwrap();
    assert_eq!(recv(&alice, sid).await.unwrap().1, b"hi");
    (hub, alice, bob, sid)
}

/// Nothing reaches `app`'s reader of `sid` for two bounds (no `PeerLost` while the peer lives).
async fn quiet_for_two_bounds(app: &App, sid: u32) {
    let got = tokio::time::timeout(BOUND * 2, app.recv_session(sid)).await;
    assert!(got.is_err(), "{}: expected nothing, got {got:?}", app.name());
}

async fn the_survivor_learns_that_its_peer_is_gone(initiator_dies: bool, mls: bool) {
    let (_hub, alice, bob, sid) = sticky_pair(mls).await;
    // Quiet for two bounds: the heartbeats keep the session up on both sides.
    tokio::join!(quiet_for_two_bounds(&alice, sid), quiet_for_two_bounds(&bob, sid));
    let (dead, survivor) = if initiator_dies { (alice, bob) } else { (bob, alice) };
    let dead_name = dead.name();
    let pending = {
        let s = survivor.clone();
        tokio::spawn(async move {
            // The node may answer the publish below with "no matching found" first (once the
            // dead app's subscriptions are gone): reported on the session once (not once per
            // retransmission), then the end comes.
            let mut no_route = 0;
            loop {
                let got = s.recv_session(sid).await;
                if !matches!(got, Err(SlimError::NoRoute(_))) {
                    return (got, no_route, Instant::now());
                }
                no_route += 1;
            }
        })
    };
    // The peer's process dies: its node goes, and nothing more comes from it.
    dead.node().shutdown().await;
    let died = Instant::now();
    drop(dead);
    // Published after the death: never acknowledged, still held when the session ends.
    let last = PublishRequest { dest: Some(dead_name.without_id()), ..to(&dead_name, b"into the void") };
    survivor.publish(sid, last).await.unwrap();
    let (got, no_route, at) =
        tokio::time::timeout(BOUND + SLACK, pending).await.expect("the pending receive raised").unwrap();
    assert!(no_route <= 1, "{no_route} NoRoute errors for one message");
    match got {
        Err(SlimError::PeerLost { session_id, peer, silent_ms, undelivered }) => {
            assert_eq!((session_id, peer.clone()), (sid, dead_name.clone()));
            assert_eq!(agents(vec![peer]), vec![if initiator_dies { "alice" } else { "bob" }.to_string()]);
            assert!(silent_ms >= BOUND.as_millis() as u64, "{silent_ms}");
            assert_eq!(undelivered, 1, "the publish after the death");
        }
        other => panic!("expected PeerLost, got {other:?}"),
    }
    assert!(at - died < BOUND + SLACK, "{:?}", at - died);
    // Closed on this side, and gone from the app once read.
    assert!(matches!(survivor.recv_session(sid).await, Err(SlimError::SessionClosed)));
    assert!(matches!(survivor.publish(sid, to(&dead_name, b"late")).await, Err(SlimError::SessionClosed)));
    wait_until("the drained session leaves the survivor", || survivor.open_sessions() == 0).await;
    assert!(matches!(survivor.delete_session(sid).await, Ok(())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_sessions_responder_learns_that_the_initiator_is_gone() {
    the_survivor_learns_that_its_peer_is_gone(true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_sessions_initiator_learns_that_the_responder_is_gone() {
    the_survivor_learns_that_its_peer_is_gone(false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mls_sessions_sides_learn_that_the_other_is_gone() {
    the_survivor_learns_that_its_peer_is_gone(true, true).await;
    the_survivor_learns_that_its_peer_is_gone(false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responders_delete_ends_the_initiators_side() {
    let (_hub, alice, bob, sid) = sticky_pair(false).await;
    let pending = {
        let a = alice.clone();
        tokio::spawn(async move { a.recv_session(sid).await })
    };
    let deleted = Instant::now();
    bob.delete_session(sid).await.unwrap();
    match tokio::time::timeout(WAIT, pending).await.expect("the pending receive raised").unwrap() {
        Err(SlimError::PeerClosed { session_id, peer, undelivered }) => {
            assert_eq!((session_id, peer, undelivered), (sid, bob.name(), 0));
        }
        other => panic!("expected PeerClosed, got {other:?}"),
    }
    // Told, not found silent: well within the bound.
    assert!(deleted.elapsed() < BOUND, "{:?}", deleted.elapsed());
    assert!(matches!(alice.recv_session(sid).await, Err(SlimError::SessionClosed)));
    wait_until("the drained session leaves alice", || alice.open_sessions() == 0).await;
}

fn anycast(reliable: bool) -> SessionConfig {
    SessionConfig::Anycast {
        timeout: reliable.then_some(Duration::from_millis(200)),
        max_retries: Some(100),
        mls_enabled: false,
        liveness: Some(BOUND),
    }
}

/// A server (`bob`) reads an anycast session a client (`alice`) opened and answered it; the
/// client's process dies; the server's reader gets `PeerLost` within the bound and the session
/// leaves the server. Before that, a quiet session stays up on both sides.
async fn an_anycast_server_learns_that_its_client_is_gone(reliable: bool) {
    let (_hub, alice, bob) = pair("alice", "bob").await;
    let sid = alice.create_session(anycast(reliable)).await.unwrap();
    for i in 0..3u8 {
        alice.publish(sid, to(&name("bob"), &[i])).await.unwrap();
    }
    let (first, _) = recv_new(&bob).await;
    for i in 0..3u8 {
        assert_eq!(recv(&bob, sid).await.unwrap().1, vec![i], "in order, none lost");
    }
    bob.publish(sid, reply(&first, b"hi")).await.unwrap();
    assert_eq!(recv(&alice, sid).await.unwrap().1, b"hi");
    tokio::join!(quiet_for_two_bounds(&alice, sid), quiet_for_two_bounds(&bob, sid));
    assert_eq!(bob.open_sessions(), 1);

    let pending = {
        let b = bob.clone();
        tokio::spawn(async move { (b.recv_session(sid).await, Instant::now()) })
    };
    let alice_name = alice.name();
    alice.node().shutdown().await;
    let died = Instant::now();
    drop(alice);
    let (got, at) = tokio::time::timeout(BOUND + SLACK, pending).await.expect("the pending receive raised").unwrap();
    match got {
        Err(SlimError::PeerLost { session_id, peer, undelivered, .. }) => {
            assert_eq!((session_id, peer.clone(), undelivered), (sid, alice_name, 0));
            assert_eq!(agents(vec![peer]), vec!["alice".to_string()]);
        }
        other => panic!("expected PeerLost, got {other:?}"),
    }
    assert!(at - died < BOUND + SLACK, "{:?}", at - died);
    assert!(matches!(bob.recv_session(sid).await, Err(SlimError::SessionClosed)));
    wait_until("the drained session leaves the server", || bob.open_sessions() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anycast_server_learns_that_its_client_is_gone_unreliable() {
    an_anycast_server_learns_that_its_client_is_gone(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anycast_server_learns_that_its_client_is_gone_reliable() {
    an_anycast_server_learns_that_its_client_is_gone(true).await;
}

/// `bob` stops reading for two and a half bounds while `alice` streams `count` messages of `size`
/// bytes to it: the stream fills bob's session queue, then what waits in front of it (the
/// session task's backlog, the dispatcher, the node's link), and the heartbeats must not wait
/// behind it. Neither side takes the other for gone; bob then reads every message, in order.
async fn a_reader_that_pauses_is_not_taken_for_gone(cfg: SessionConfig, size: usize, count: u32) {
    let (_hub, alice, bob) = pair("alice", "bob").await;
    let sid = alice.create_session(cfg).await.unwrap();
    let sender = {
        let a = alice.clone();
        tokio::spawn(async move {
            for i in 0..count {
                let mut payload = vec![0u8; size];
                payload[..4].copy_from_slice(&i.to_be_bytes());
                a.publish(sid, to(&name("bob"), &payload)).await?;
            }
            Ok::<_, SlimError>(())
        })
    };
    let (first, _) = recv_new(&bob).await;
    assert_eq!(first.session_id, sid);
    // The pause is the scenario: a reader busy elsewhere.
    tokio::time::sleep(BOUND * 5 / 2).await;
    for i in 0..count {
        let (_, payload) = recv(&bob, sid).await.unwrap_or_else(|e| panic!("message {i}: {e:?}"));
        assert_eq!(payload[..4], i.to_be_bytes(), "in order, none lost");
    }
    tokio::time::timeout(WAIT, sender).await.expect("the stream ends").unwrap().expect("every publish taken");
    // Both sides still up: nothing more for either reader, for two bounds.
    tokio::join!(quiet_for_two_bounds(&alice, sid), quiet_for_two_bounds(&bob, sid));
    assert_eq!((alice.open_sessions(), bob.open_sessions()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_reader_that_pauses_is_not_taken_for_gone() {
    let cfg = SessionConfig::Unicast { timeout: None, max_retries: None, mls_enabled: false, liveness: Some(BOUND) };
    a_reader_that_pauses_is_not_taken_for_gone(cfg, 100, 40_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reliable_sticky_reader_of_large_messages_that_pauses_is_not_taken_for_gone() {
    a_reader_that_pauses_is_not_taken_for_gone(sticky(false), 64 * 1024, 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anycast_reader_that_pauses_is_not_taken_for_gone() {
    a_reader_that_pauses_is_not_taken_for_gone(anycast(false), 100, 40_000).await;
}

/// Publishes accepted after the peer died, more than the session task holds (its window and its
/// queue of 4,096): the rest wait in its command channel. When the peer is found gone, every
/// accepted publish is counted in `PeerLost::undelivered`, those still in the channel included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_publish_accepted_before_the_peer_was_found_gone_is_counted() {
    let (_hub, alice, bob, sid) = sticky_pair(false).await;
    // Alice's first message acknowledged: what is counted below is only what follows.
    wait_until("alice holds nothing", || alice.session_send_buffer(sid).is_ok_and(|(used, _)| used == 0)).await;
    let bob_name = bob.name();
    bob.node().shutdown().await;
    drop(bob);
    let publisher = {
        let (a, dest) = (alice.clone(), bob_name.clone());
        tokio::spawn(async move {
            let mut accepted = 0usize;
            for i in 0..8_000u32 {
                if a.publish(sid, to(&dest, &i.to_be_bytes())).await.is_err() {
                    break;
                }
                accepted += 1;
            }
            accepted
        })
    };
    let end = loop {
        match tokio::time::timeout(BOUND + SLACK, alice.recv_session(sid)).await.expect("the end within the bound") {
            Err(SlimError::NoRoute(_)) => continue,
            other => break other,
        }
    };
    let accepted = tokio::time::timeout(WAIT, publisher).await.expect("publishing ends with the session").unwrap();
    assert!(
        accepted > 5_000 && accepted < 8_000,
        "{accepted}: some waited in the command channel, the rest were refused"
    );
    match end {
        Err(SlimError::PeerLost { peer, undelivered, .. }) => {
            assert_eq!((peer, undelivered), (bob_name, accepted));
        }
        other => panic!("expected PeerLost, got {other:?}"),
    }
}

/// Every instance of an anycast name that got any of a client's messages watches the client (each
/// data message carries the offer, not only the first): when the client dies, both instances'
/// readers get `PeerLost` and their sessions go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_anycast_instance_that_got_a_message_learns_that_the_client_is_gone() {
    let alice = app("alice", "secret").await;
    let bobs = [app("bob", "secret").await, app("bob", "secret").await];
    let _hub = hub_with(&alice, &[&bobs[0], &bobs[1]]).await;
    let sid = alice.create_session(anycast(false)).await.unwrap();
    // Each message goes to one instance picked at random: both get some (both missing odds: 2^-63).
    for i in 0..64u8 {
        alice.publish(sid, to(&name("bob"), &[i])).await.unwrap();
    }
    let mut got = Vec::new();
    wait_until("all 64 messages, over both instances", || {
        for bob in &bobs {
            while let Some(Ok((_, payload))) = bob.try_recv_session(sid) {
                got.extend(payload);
            }
        }
        got.len() == 64
    })
    .await;
    assert!(bobs.iter().all(|b| b.open_sessions() == 1), "both instances got some");
    let alice_name = alice.name();
    alice.node().shutdown().await;
    drop(alice);
    for bob in &bobs {
        match tokio::time::timeout(BOUND + SLACK, bob.recv_session(sid)).await.expect("the end within the bound") {
            Err(SlimError::PeerLost { peer, .. }) => assert_eq!(peer, alice_name),
            other => panic!("expected PeerLost, got {other:?}"),
        }
    }
    wait_until("both sessions leave", || bobs.iter().all(|b| b.open_sessions() == 0)).await;
}

/// A member stops reading for two and a half bounds while the moderator streams to the group:
/// the member is not taken for gone (not removed), the moderator is not either, and the member
/// then reads every message, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_reader_pauses_stays_in_the_group() {
    a_group_reader_pauses(false).await;
}

/// A group of one member; one side streams 40,000 messages while the other side's reader pauses
/// for 2.5 bounds (`moderator_reads`: the member streams and the moderator pauses). Neither takes
/// the other for gone: the reader then gets every message in order, the member stays in the
/// group, and no `ModeratorLost` comes.
async fn a_group_reader_pauses(moderator_reads: bool) {
    let (_hub, moderator, members, sid) = group_of(1, false).await;
    let (sender_app, reader) =
        if moderator_reads { (members[0].clone(), &moderator) } else { (moderator.clone(), &members[0]) };
    let count = 40_000u32;
    let sender = tokio::spawn(async move {
        for i in 0..count {
            sender_app.publish(sid, to(&name("live-chat"), &i.to_be_bytes())).await?;
        }
        Ok::<_, SlimError>(())
    });
    // The pause is the scenario: a reader busy elsewhere.
    tokio::time::sleep(BOUND * 5 / 2).await;
    for i in 0..count {
        let (_, payload) = recv(reader, sid).await.unwrap_or_else(|e| panic!("message {i}: {e:?}"));
        assert_eq!(payload, i.to_be_bytes(), "in order, none lost");
    }
    tokio::time::timeout(WAIT, sender).await.expect("the stream ends").unwrap().expect("every publish taken");
    assert!(members[0].try_recv_session(sid).is_none(), "no ModeratorLost");
    assert_eq!(agents(moderator.participants(sid).await.unwrap()), vec!["m0", "mod"]);
    quiet_for_two_bounds(&members[0], sid).await;
    assert_eq!(agents(moderator.participants(sid).await.unwrap()), vec!["m0", "mod"]);
}

/// The peer streams into a paused reader's session, then dies: what reached this app before the
/// peer went silent waits in the session task's backlog, behind a full queue, when the peer is
/// found gone. It is not dropped with the session: the reader gets every message, in order, then
/// `PeerLost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_peer_sent_before_it_went_silent_is_all_delivered() {
    let (_hub, alice, bob) = pair("alice", "bob").await;
    let cfg = SessionConfig::Unicast { timeout: None, max_retries: None, mls_enabled: false, liveness: Some(BOUND) };
    let sid = alice.create_session(cfg).await.unwrap();
    // More than bob's session queue holds (16,384): the rest waits in its task's backlog.
    let count = 18_000u32;
    for i in 0..count {
        alice.publish(sid, to(&name("bob"), &i.to_be_bytes())).await.unwrap();
    }
    // Every message handed to alice's node, then a marker behind them on a session of its own:
    // once bob's app announces the marker's session, it has taken in the whole stream.
    wait_until("alice's stream handed to her node", || alice.session_send_buffer(sid).is_ok_and(|(used, _)| used == 0))
        .await;
    let marker = alice.create_session(anycast(false)).await.unwrap();
    alice.publish(marker, to(&name("bob"), b"marker")).await.unwrap();
    loop {
        if recv_new(&bob).await.0.session_id == marker {
            break;
        }
    }
    let alice_name = alice.name();
    alice.node().shutdown().await;
    drop(alice);
    // The reader pauses past the moment the peer is found gone.
    tokio::time::sleep(BOUND * 5 / 2).await;
    for i in 0..count {
        let (_, payload) = recv(&bob, sid).await.unwrap_or_else(|e| panic!("message {i}: {e:?}"));
        assert_eq!(payload, i.to_be_bytes(), "in order, none lost");
    }
    match recv(&bob, sid).await {
        Err(SlimError::PeerLost { peer, .. }) => assert_eq!(peer, alice_name),
        other => panic!("expected PeerLost, got {other:?}"),
    }
}

/// The other direction of an anycast session: the server streams replies to its client while the
/// client's reader pauses for 2.5 bounds. The server's pings wait behind that stream; the client
/// keeps answering on its own (`answer_beat`), so the server does not take it for gone, and the
/// client then reads every reply, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anycast_client_whose_reader_pauses_is_not_taken_for_gone() {
    let (_hub, alice, bob) = pair("alice", "bob").await;
    let sid = alice.create_session(anycast(false)).await.unwrap();
    alice.publish(sid, to(&name("bob"), b"hello")).await.unwrap();
    let (first, _) = recv_new(&bob).await;
    assert_eq!(recv(&bob, sid).await.unwrap().1, b"hello");
    // The server watches the client from here on: one round of heartbeats before the stream.
    tokio::time::timeout(BOUND, alice.recv_session(sid)).await.expect_err("nothing for alice yet");
    let count = 40_000u32;
    let sender = {
        let b = bob.clone();
        tokio::spawn(async move {
            for i in 0..count {
                b.publish(sid, reply(&first, &i.to_be_bytes())).await?;
            }
            Ok::<_, SlimError>(())
        })
    };
    tokio::time::sleep(BOUND * 5 / 2).await;
    for i in 0..count {
        let (_, payload) = recv(&alice, sid).await.unwrap_or_else(|e| panic!("message {i}: {e:?}"));
        assert_eq!(payload, i.to_be_bytes(), "in order, none lost");
    }
    tokio::time::timeout(WAIT, sender).await.expect("the stream ends").unwrap().expect("every reply taken");
    quiet_for_two_bounds(&bob, sid).await;
    assert_eq!(bob.open_sessions(), 1, "the server kept its session");
}

/// The moderator's reader stops for two and a half bounds while a member streams to the group:
/// its pings wait in its held session task, but its heartbeat task keeps greeting the members,
/// so no member takes it for gone (`ModeratorLost`), it does not drop the member either, and it
/// then reads every message, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderator_whose_reader_pauses_is_not_taken_for_gone() {
    a_group_reader_pauses(true).await;
}

/// The moderator removes a member in the middle of its stream: every publish the member's
/// `publish` accepted either reached the moderator's reader (in order, with nothing after it)
/// or is counted in the `PeerClosed` the member's reader gets, those still waiting in the
/// session's command channel included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_publish_of_a_removed_member_is_delivered_or_counted() {
    let (_hub, moderator, members, sid) = group_of(1, false).await;
    let publisher = {
        let m = members[0].clone();
        tokio::spawn(async move {
            let mut accepted = 0u32;
            for i in 0..200_000u32 {
                if m.publish(sid, to(&name("live-chat"), &i.to_be_bytes())).await.is_err() {
                    break;
                }
                accepted += 1;
            }
            accepted
        })
    };
    // The moderator reads all along (a full queue would make it report losses of its own).
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let reader = {
        let m = moderator.clone();
        tokio::spawn(async move {
            while let Ok(Ok((_, payload))) = tokio::time::timeout(WAIT, m.recv_session(sid)).await {
                let Ok(bytes) = <[u8; 4]>::try_from(payload.as_slice()) else { break };
                if seen_tx.send(u32::from_be_bytes(bytes)).is_err() {
                    break;
                }
            }
        })
    };
    let mut got: Vec<u32> = Vec::new();
    while got.len() < 2_000 {
        got.push(tokio::time::timeout(WAIT, seen.recv()).await.expect("the member's stream").expect("read"));
    }
    let removal = {
        let (m, member) = (moderator.clone(), members[0].name());
        tokio::spawn(async move { m.remove(sid, &member).await })
    };
    let end = match recv(&members[0], sid).await {
        Err(e) => e,
        Ok((_, p)) => panic!("a member does not get its own messages: {p:?}"),
    };
    let accepted = tokio::time::timeout(WAIT, publisher).await.expect("publishing ends with the session").unwrap();
    assert!(accepted < 200_000, "the removal came in the middle of the stream");
    let undelivered = match end {
        SlimError::PeerClosed { undelivered, .. } => undelivered as u32,
        other => panic!("expected PeerClosed, got {other:?}"),
    };
    let reached = accepted - undelivered;
    while (got.len() as u32) < reached {
        got.push(
            tokio::time::timeout(WAIT, seen.recv()).await.expect("what the member sent before it left").expect("read"),
        );
    }
    tokio::time::timeout(WAIT, removal).await.expect("the removal ends").unwrap().expect("removed");
    assert!(got.iter().copied().eq(0..reached), "every message that left, in order, and only those");
    reader.abort();
    assert!(seen.try_recv().is_err(), "nothing past what was counted as sent");
}

/// A member dies just before the moderator invites a newcomer: the moderator asks every member
/// where its stream starts for the newcomer, and the dead one never answers. It is left out once
/// it is found dead (within the bound), so the invite completes then, not after the control
/// retries (a minute); the newcomer reads the live member's stream from where it started for it.
/// (With MLS the dead member is found dead while the commit adding the newcomer waits for it, and
/// is then not asked at all.)
async fn a_member_that_dies_during_an_invite_does_not_hold_it_up(mls: bool) {
    let moderator = app("mod", "secret").await;
    let members = apps("m", 3).await;
    let refs: Vec<&App> = members.iter().collect();
    let _hub = hub_with(&moderator, &refs).await;
    let sid = moderator.create_session(group(true, mls)).await.unwrap();
    for m in &members[..2] {
        moderator.invite_within(sid, &m.name().without_id(), Some(WAIT)).await.unwrap().joined().await.unwrap();
    }
    members[1].node().shutdown().await;
    let died = Instant::now();
    let invite = moderator.invite_within(sid, &members[2].name().without_id(), Some(WAIT)).await.unwrap();
    tokio::time::timeout(BOUND + SLACK, invite.joined())
        .await
        .expect("the invite is done once the dead member is found dead")
        .expect("invited");
    assert!(died.elapsed() < BOUND + SLACK, "{:?}", died.elapsed());
    for i in 0..10u32 {
        members[0].publish(sid, to(&name("live-chat"), &i.to_le_bytes())).await.unwrap();
    }
    let (first, _) = recv_new(&members[2]).await;
    assert_eq!(first.session_id, sid);
    for i in 0..10u32 {
        let (info, p) = recv(&members[2], sid).await.unwrap();
        assert_eq!((agents(vec![info.source]), p), (vec!["m0".to_string()], i.to_le_bytes().to_vec()));
    }
    participants_until(&moderator, sid, BOUND + SLACK, |names| names == &["m0", "m2", "mod"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_dies_during_an_invite_does_not_hold_it_up_plain() {
    a_member_that_dies_during_an_invite_does_not_hold_it_up(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_dies_during_an_invite_does_not_hold_it_up_mls() {
    a_member_that_dies_during_an_invite_does_not_hold_it_up(true).await;
}
