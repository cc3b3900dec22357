//! Sticky (unicast) and reliable point-to-point sessions over real loopback gRPC.

use crate::common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use slim_bindings::app::App;
use slim_bindings::error::SlimError;
use slim_bindings::node::{ClientConfig, LocalDelivery, Node};
use slim_bindings::session::SessionConfig;
use slim_bindings::wire::builders::{self, Flags, PublishSpec};
use slim_bindings::wire::payload::JoinMessagePayload;
use slim_bindings::wire::{Message, Name, SessionMessageType, SessionType};

fn unicast(timeout_ms: Option<u64>, retries: u32) -> SessionConfig {
    SessionConfig::Unicast {
        timeout: timeout_ms.map(Duration::from_millis),
        max_retries: Some(retries),
        mls_enabled: false,
        liveness: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliable_unicast_delivers_in_order_both_ways() {
    let (_hub, alice, bob) = pair("alice", "bob").await;
    let sid = alice.create_session(unicast(Some(200), 5)).await.unwrap();
    assert_eq!(alice.get_session_config(sid).unwrap(), unicast(Some(200), 5));
    const N: u32 = 1000;
    for i in 0..N {
        alice.publish(sid, to(&name("bob"), &i.to_le_bytes())).await.unwrap();
    }
    let (first, _) = recv_new(&bob).await;
    assert_eq!(first.session_id, sid);
    for i in 0..N {
        let (info, p) = recv(&bob, sid).await.unwrap();
        assert_eq!(p, i.to_le_bytes(), "message {i} out of order");
        assert_eq!(info.message_id, i);
        assert_eq!(info.source, alice.name());
    }
    // Created by a join: the responder is reliable with the remote defaults.
    assert_eq!(
        bob.get_session_config(sid).unwrap(),
        SessionConfig::Unicast {
            timeout: Some(Duration::from_secs(5)),
            max_retries: Some(5),
            mls_enabled: false,
            liveness: None
        }
    );
    for i in 0..10u32 {
        bob.publish(sid, reply(&first, &i.to_le_bytes())).await.unwrap();
    }
    for i in 0..10u32 {
        let (info, p) = recv(&alice, sid).await.unwrap();
        assert_eq!(p, i.to_le_bytes());
        assert_eq!(info.source, bob.name());
    }
    // Config round trip.
    let changed = unicast(Some(300), 2);
    alice.set_session_config(sid, changed.clone()).unwrap();
    assert_eq!(alice.get_session_config(sid).unwrap(), changed);
    let wrong = SessionConfig::Anycast { timeout: None, max_retries: None, mls_enabled: false, liveness: None };
    assert!(matches!(alice.set_session_config(sid, wrong), Err(SlimError::Config(_))));
    assert!(alice.try_recv_session(sid).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_session_reaches_exactly_one_instance() {
    let (hub, endpoint) = hub().await;
    let alice = app("alice", "secret").await;
    let ca = connect(&alice, &endpoint).await;
    alice.set_route(&name("bob"), ca).await.unwrap();
    let mut bobs = Vec::new();
    for _ in 0..3 {
        let b = app("bob", "secret").await;
        connect(&b, &endpoint).await;
        wait_subscribed(&hub, &b.name()).await;
        bobs.push(b);
    }
    wait_subscribed(&hub, &alice.name()).await;
    let sid = alice.create_session(unicast(None, 5)).await.unwrap();
    const N: u32 = 200;
    for i in 0..N {
        alice.publish(sid, to(&name("bob"), &i.to_le_bytes())).await.unwrap();
    }
    // Whoever got the session gets every message, in order.
    let (winner, _) = tokio::time::timeout(WAIT, async {
        loop {
            for (k, b) in bobs.iter().enumerate() {
                if let Some(first) = b.try_recv_new_session() {
                    return (k, first);
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("one instance gets the session");
    for i in 0..N {
        let (_, p) = recv(&bobs[winner], sid).await.unwrap();
        assert_eq!(p, i.to_le_bytes());
    }
    for (k, b) in bobs.iter().enumerate() {
        if k != winner {
            assert!(b.try_recv_new_session().is_none(), "instance {k} also got the session");
            assert!(b.try_recv_any().is_none(), "instance {k} got messages");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_peer_times_out_and_a_new_session_finds_another_instance() {
    let (hub, endpoint) = hub().await;
    let alice = app("alice", "secret").await;
    let ca = connect(&alice, &endpoint).await;
    alice.set_route(&name("bob"), ca).await.unwrap();
    let b1 = app("bob", "secret").await;
    let b2 = app("bob", "secret").await;
    connect(&b1, &endpoint).await;
    connect(&b2, &endpoint).await;
    wait_subscribed(&hub, &b1.name()).await;
    wait_subscribed(&hub, &b2.name()).await;
    wait_subscribed(&hub, &alice.name()).await;

    let sid = alice.create_session(unicast(Some(100), 3)).await.unwrap();
    alice.publish(sid, to(&name("bob"), b"first")).await.unwrap();
    let (pinned, other) = tokio::time::timeout(WAIT, async {
        loop {
            if b1.try_recv_new_session().is_some() {
                return (b1.clone(), b2.clone());
            }
            if b2.try_recv_new_session().is_some() {
                return (b2.clone(), b1.clone());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("session reaches one bob");
    // Its acknowledgement back first: an instance that vanishes before it acknowledged would
    // (rightly) make the first message time out instead.
    let a = alice.clone();
    wait_until("the first message is acknowledged", move || a.session_send_buffer(sid).is_ok_and(|(now, _)| now == 0))
        .await;
    let pinned_name = pinned.name();
    pinned.node().shutdown().await;
    drop(pinned);
    let hub2 = hub.clone();
    wait_until("hub forgets the vanished instance", move || {
        !hub2.connection_ids().into_iter().any(|c| hub2.subscriptions_of(c).contains(&pinned_name))
    })
    .await;
    // Drain the acknowledged first message's queue state on alice's side (nothing to read).
    assert!(alice.try_recv_session(sid).is_none());

    let started = Instant::now();
    alice.publish(sid, to(&name("bob"), b"lost")).await.unwrap();
    match recv(&alice, sid).await {
        Err(SlimError::Timeout { session_id, message_id }) => {
            assert_eq!((session_id, message_id), (sid, 1));
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(380), "timeout came too early: {elapsed:?}");
    assert!(elapsed < Duration::from_millis(2000), "timeout came too late: {elapsed:?}");

    // The session stays usable, and a new session finds the remaining instance.
    assert!(alice.get_session_config(sid).is_ok());
    let sid2 = alice.create_session(unicast(Some(100), 3)).await.unwrap();
    alice.publish(sid2, to(&name("bob"), b"again")).await.unwrap();
    let (info, p) = recv_new(&other).await;
    assert_eq!((info.session_id, p.as_slice()), (sid2, b"again".as_slice()));
}

/// The bound a reliable session's failure must respect: `timeout × (max_retries + 1)` plus a
/// margin for a loaded machine.
fn failure_bound(timeout: Duration, retries: u32) -> (Duration, Duration) {
    let nominal = timeout * (retries + 1);
    (nominal, nominal + Duration::from_millis(1500))
}

/// Awaits the next timeout of `sid` and returns when it came. Route-error notices (`NoRoute`: the
/// hub tells the sender it had no subscriber for the discovery) may come first; nothing else may.
async fn expect_timeout(app: &App, sid: u32) -> Instant {
    for _ in 0..4 {
        match recv(app, sid).await {
            Err(SlimError::Timeout { session_id, .. }) => {
                assert_eq!(session_id, sid);
                return Instant::now();
            }
            Err(SlimError::NoRoute(_)) => continue,
            other => panic!("expected a Timeout, got {other:?}"),
        }
    }
    panic!("no Timeout after several route errors");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliable_session_to_a_routed_name_nobody_serves_fails_within_its_bound() {
    let (hub, endpoint) = hub().await;
    let alice = app("alice", "secret").await;
    let ca = connect(&alice, &endpoint).await;
    wait_subscribed(&hub, &alice.name()).await;
    // Routed through the hub, which has no subscriber for it (it sends back a route-error notice).
    alice.set_route(&name("nobody"), ca).await.unwrap();
    let (timeout, retries) = (Duration::from_millis(250), 3);
    let (nominal, latest) = failure_bound(timeout, retries);
    let sid = alice.create_session(unicast(Some(250), retries)).await.unwrap();
    let started = Instant::now();
    alice.publish(sid, to(&name("nobody"), b"one")).await.unwrap();
    alice.publish(sid, to(&name("nobody"), b"two")).await.unwrap();
    for _ in 0..2 {
        let elapsed = expect_timeout(&alice, sid).await - started;
        assert!(elapsed >= nominal, "failed before the session's bound: {elapsed:?}");
        assert!(elapsed < latest, "failed after timeout x (max_retries + 1) + margin: {elapsed:?}");
    }
    while let Some(item) = alice.try_recv_session(sid) {
        assert!(matches!(item, Err(SlimError::NoRoute(_))), "one timeout per publish, nothing more: {item:?}");
    }

    // The session is usable again: a later publish starts discovery anew (and fails the same way).
    let again = Instant::now();
    alice.publish(sid, to(&name("nobody"), b"three")).await.unwrap();
    let elapsed = expect_timeout(&alice, sid).await - again;
    assert!(elapsed >= nominal && elapsed < latest, "second attempt: {elapsed:?}");
    while let Some(item) = alice.try_recv_session(sid) {
        assert!(matches!(item, Err(SlimError::NoRoute(_))), "{item:?}");
    }

    // A subscriber that never answers (what a node that drops without a notice looks like from
    // here): no notice at all, the same bound.
    let _silent = RawPeer::routing(&endpoint, &hub, &alice.name()).await;
    alice.set_route(&name("raw"), ca).await.unwrap();
    let sid = alice.create_session(unicast(Some(250), retries)).await.unwrap();
    let started = Instant::now();
    alice.publish(sid, to(&name("raw"), b"anyone?")).await.unwrap();
    match recv(&alice, sid).await {
        Err(SlimError::Timeout { session_id, .. }) => assert_eq!(session_id, sid),
        other => panic!("expected a Timeout, got {other:?}"),
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= nominal && elapsed < latest, "silent subscriber: {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliable_session_whose_peer_dies_during_discovery_fails_within_its_bound() {
    let (hub, endpoint) = hub().await;
    let alice = app("alice", "secret").await;
    let ca = connect(&alice, &endpoint).await;
    wait_subscribed(&hub, &alice.name()).await;
    let mut raw = RawPeer::routing(&endpoint, &hub, &alice.name()).await;
    alice.set_route(&name("raw"), ca).await.unwrap();
    let (timeout, retries) = (Duration::from_millis(300), 2);
    let (nominal, latest) = failure_bound(timeout, retries);
    let sid = alice.create_session(unicast(Some(300), retries)).await.unwrap();
    let started = Instant::now();
    alice.publish(sid, to(&name("raw"), b"hello")).await.unwrap();

    // The peer answers discovery, then dies before the join.
    let discovery = raw.expect(SessionMessageType::ChannelDiscoveryRequest).await;
    let sh = discovery.session_header().unwrap();
    raw.send(SessionMessageType::ChannelDiscoveryReply, &alice.name(), sh.session_id, sh.message_id, Vec::new(), false)
        .await;
    raw.expect(SessionMessageType::ChannelJoinRequest).await;
    let raw_name = raw.name.clone();
    raw._node.shutdown().await;
    drop(raw);
    let hub2 = hub.clone();
    wait_until("hub forgets the dead peer", move || {
        !hub2.connection_ids().into_iter().any(|c| hub2.subscriptions_of(c).contains(&raw_name))
    })
    .await;

    let elapsed = expect_timeout(&alice, sid).await - started;
    assert!(elapsed >= nominal, "failed before the session's bound: {elapsed:?}");
    assert!(elapsed < latest, "failed after timeout x (max_retries + 1) + margin: {elapsed:?}");
    assert!(alice.try_recv_session(sid).is_none());
}

/// A hub, the app "bob" on it, and a hand-driven peer whose node sends traffic for "bob" there.
async fn bob_and_raw_peer() -> (Node, App, RawPeer) {
    let (hub, endpoint) = hub().await;
    let bob = app("bob", "secret").await;
    connect(&bob, &endpoint).await;
    wait_subscribed(&hub, &bob.name()).await;
    let raw = RawPeer::new(&endpoint, &hub).await;
    (hub, bob, raw)
}

/// A hand-driven peer: a bare node with a local connection, so the test can send any message.
struct RawPeer {
    name: Name,
    tx: tokio::sync::mpsc::Sender<Message>,
    rx: tokio::sync::mpsc::Receiver<LocalDelivery>,
    _node: Node,
}

impl RawPeer {
    async fn new(endpoint: &str, hub: &Node) -> RawPeer {
        Self::routing(endpoint, hub, &name("bob")).await
    }

    /// A raw peer whose node sends traffic for `route` to the hub.
    async fn routing(endpoint: &str, hub: &Node, route: &Name) -> RawPeer {
        let node = Node::new("raw");
        let lc = node.register_local();
        let conn = node.connect(ClientConfig::insecure(endpoint)).await.unwrap();
        let me = Name::new("org", "ns", "raw", Some(42));
        lc.tx.send(builders::subscribe(&me, &me, Flags::one())).await.unwrap();
        lc.tx.send(builders::subscribe(&me, &me, Flags::one().forward_to(Some(conn)))).await.unwrap();
        lc.tx.send(builders::subscribe(&me, route, Flags::one().recv_from(conn))).await.unwrap();
        wait_subscribed(hub, &me).await;
        RawPeer { name: me, tx: lc.tx, rx: lc.rx, _node: node }
    }

    async fn send(&self, kind: SessionMessageType, to: &Name, sid: u32, mid: u32, blob: Vec<u8>, error: bool) {
        self.send_meta(kind, to, sid, mid, blob, error, &[]).await;
    }

    /// [`Self::send`] with extra metadata.
    #[allow(clippy::too_many_arguments)]
    async fn send_meta(
        &self,
        kind: SessionMessageType,
        to: &Name,
        sid: u32,
        mid: u32,
        blob: Vec<u8>,
        error: bool,
        extra: &[(&str, &str)],
    ) {
        let mut flags = Flags::one();
        if error {
            flags = flags.error();
        }
        let spec = PublishSpec {
            source: &self.name,
            destination: to,
            flags,
            session_type: SessionType::SessionPointToPoint,
            message_type: kind,
            session_id: sid,
            message_id: mid,
            original_names: true,
            content_type: "msg",
        };
        let mut meta = HashMap::from([("SLIM_IDENTITY".to_string(), "secret:raw".to_string())]);
        meta.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.tx.send(builders::publish(&spec, blob, meta)).await.unwrap();
    }

    /// Next publish of `kind` (others are skipped), bounded.
    async fn expect(&mut self, kind: SessionMessageType) -> Message {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(LocalDelivery::Message(m)) = self.rx.recv().await
                    && m.session_message_type() == kind
                {
                    return m;
                }
            }
        })
        .await
        .expect("expected message arrives")
    }
}

/// A reliable stream its initiator ends while the responder still waits for a hole: the responder
/// releases what it held behind the hole, reports the hole (`MessageLost`), then `PeerClosed`.
/// Nothing that arrived goes with the session unsaid (docs/reliability.md, "When the peer ends a
/// session"). The initiator is driven by hand so that id 1 is never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_close_releases_what_waited_behind_a_hole_and_reports_the_hole() {
    let (_hub, bob, raw) = bob_and_raw_peer().await;
    let (sid, bob_any) = (4242, name("bob"));
    // A sticky session (joined first): its responder keeps the stream in order behind holes.
    raw.send(SessionMessageType::ChannelJoinRequest, &bob_any, sid, 7, Vec::new(), false).await;
    for mid in [0u32, 2, 3] {
        raw.send(SessionMessageType::P2PReliable, &bob_any, sid, mid, vec![mid as u8], false).await;
    }
    raw.send(SessionMessageType::SessionClose, &bob_any, sid, 99, Vec::new(), false).await;

    assert_eq!(recv_new(&bob).await.0.session_id, sid);
    assert_eq!(recv(&bob, sid).await.unwrap().1, vec![0]);
    match recv(&bob, sid).await {
        Err(SlimError::MessageLost { message_id: 1, .. }) => {}
        other => panic!("expected id 1 reported lost, got {other:?}"),
    }
    assert_eq!(recv(&bob, sid).await.unwrap().1, vec![2]);
    assert_eq!(recv(&bob, sid).await.unwrap().1, vec![3]);
    match recv(&bob, sid).await {
        Err(SlimError::PeerClosed { peer, .. }) => assert_eq!(peer, raw.name),
        other => panic!("expected PeerClosed, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reliability_input_is_counted_not_fatal() {
    let (_hub, bob, mut raw) = bob_and_raw_peer().await;
    let sid = 4242;
    let join = JoinMessagePayload { channel_name: raw.name.clone(), moderator_name: raw.name.clone() };
    raw.send(SessionMessageType::ChannelJoinRequest, &name("bob"), sid, 9, join.encode(), false).await;
    let reply = raw.expect(SessionMessageType::ChannelJoinReply).await;
    let bob_id = reply.source_name().unwrap();
    assert_eq!(bob_id, bob.name());

    use SessionMessageType::*;
    raw.send(P2PReliable, &bob_id, sid, 0, b"m0".to_vec(), false).await;
    assert_eq!(raw.expect(P2PAck).await.session_header().unwrap().message_id, 0);
    raw.send(P2PReliable, &bob_id, sid, 0, b"dup".to_vec(), false).await; // duplicate
    assert_eq!(raw.expect(P2PAck).await.session_header().unwrap().message_id, 0);
    raw.send(P2PReliable, &bob_id, sid, 1 << 30, b"far".to_vec(), false).await; // out of window (ids wrap: u32::MAX is just behind 0)
    raw.send(P2PAck, &bob_id, sid, 77, Vec::new(), false).await; // ACK for nothing
    raw.send(RtxRequest, &bob_id, sid, 999, Vec::new(), false).await; // nothing buffered
    let rtx = raw.expect(RtxReply).await;
    assert_eq!(rtx.slim_header().unwrap().error, Some(true));
    raw.send(RtxReply, &bob_id, sid, 5, b"unasked".to_vec(), false).await; // nobody asked
    raw.send(P2PReliable, &bob_id, sid, 1, b"m1".to_vec(), false).await;
    assert_eq!(raw.expect(P2PAck).await.session_header().unwrap().message_id, 1);

    let got: Vec<Vec<u8>> = vec![recv(&bob, sid).await.unwrap().1, recv(&bob, sid).await.unwrap().1];
    assert_eq!(got, vec![b"m0".to_vec(), b"m1".to_vec()]);
    let s = bob.stats().snapshot();
    assert_eq!(s["duplicates"], 1, "{s:?}");
    assert_eq!(s["out_of_window"], 1, "{s:?}");
    assert_eq!(s["unknown_acks"], 1, "{s:?}");
    assert_eq!(s["rtx_unavailable"], 1, "{s:?}");
    assert_eq!(s["unexpected_rtx_replies"], 1, "{s:?}");
    assert!(bob.try_recv_session(sid).is_none());

    // A gap is requested with RTX_REQUEST after the timeout; an error reply marks it lost.
    bob.set_session_config(
        sid,
        SessionConfig::Unicast {
            timeout: Some(Duration::from_millis(50)),
            max_retries: Some(5),
            mls_enabled: false,
            liveness: None,
        },
    )
    .unwrap();
    raw.send(P2PReliable, &bob_id, sid, 3, b"m3".to_vec(), false).await;
    let req = raw.expect(RtxRequest).await;
    assert_eq!(req.session_header().unwrap().message_id, 2);
    raw.send(RtxReply, &bob_id, sid, 2, Vec::new(), true).await;
    assert!(
        matches!(recv(&bob, sid).await, Err(SlimError::MessageLost { session_id, message_id: 2, producer: Some(_) }) if session_id == sid)
    );
    assert_eq!(recv(&bob, sid).await.unwrap().1, b"m3");
}

/// A peer that offers range acknowledgements in its JOIN_REQUEST gets the offer echoed, and then
/// acknowledgements that cover every id it sent exactly once, in order, in runs of at most 64; a
/// lone message is acknowledged on its own. The plain form (a peer that does not offer, as 0.6.0)
/// is `bad_reliability_input_is_counted_not_fatal` above: one ACK per id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_acks_cover_every_id_once_when_offered() {
    let (hub, endpoint) = hub().await;
    let bob = app("bob", "secret").await;
    connect(&bob, &endpoint).await;
    wait_subscribed(&hub, &bob.name()).await;
    let mut raw = RawPeer::new(&endpoint, &hub).await;
    let sid = 4343;
    let join = JoinMessagePayload { channel_name: raw.name.clone(), moderator_name: raw.name.clone() };
    let offer = [("SLIM_ACK_RANGES", "1")];
    raw.send_meta(SessionMessageType::ChannelJoinRequest, &name("bob"), sid, 9, join.encode(), false, &offer).await;
    let reply = raw.expect(SessionMessageType::ChannelJoinReply).await;
    assert_eq!(reply.metadata.get("SLIM_ACK_RANGES").map(String::as_str), Some("1"), "offer accepted");
    let bob_id = reply.source_name().unwrap();

    use SessionMessageType::*;
    const N: u32 = 1000;
    for mid in 0..N {
        raw.send(P2PReliable, &bob_id, sid, mid, mid.to_le_bytes().to_vec(), false).await;
    }
    let (mut next, mut acks) = (0u32, 0u32);
    while next < N {
        let ack = raw.expect(P2PAck).await;
        let to = ack.session_header().unwrap().message_id;
        let from = ack.metadata.get("SLIM_ACK_FROM").map_or(to, |f| f.parse::<u32>().expect("decimal id"));
        assert_eq!(from, next, "runs are consecutive and in order (ack {from}..={to})");
        assert!(to >= from && to - from < 64, "a run covers 1 to 64 ids: {from}..={to}");
        next = to + 1;
        acks += 1;
    }
    assert_eq!(next, N);
    for mid in 0..N {
        let (_, p) = recv(&bob, sid).await.unwrap();
        assert_eq!(p, mid.to_le_bytes(), "in order, exactly once");
    }
    // A lone message (a request) is acknowledged on its own, as soon as it was admitted.
    raw.send(P2PReliable, &bob_id, sid, N, b"lone".to_vec(), false).await;
    let ack = raw.expect(P2PAck).await;
    assert_eq!(ack.session_header().unwrap().message_id, N);
    assert!(!ack.metadata.contains_key("SLIM_ACK_FROM"));
    assert_eq!(recv(&bob, sid).await.unwrap().1, b"lone");
    assert!(bob.try_recv_session(sid).is_none());
    eprintln!("{N} messages acknowledged by {acks} P_2_P_ACKs");
}
