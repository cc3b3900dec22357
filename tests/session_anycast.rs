//! Anycast sessions over real loopback gRPC: two apps behind one hub node.

use crate::common;

use std::collections::HashMap;

use common::*;
use slim_bindings::error::SlimError;
use slim_bindings::session::{PublishRequest, SessionConfig};

fn anycast() -> SessionConfig {
    SessionConfig::Anycast { timeout: None, max_retries: None, mls_enabled: false, liveness: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reply_recv_any_and_session_errors() {
    let alice = app("alice", "secret").await;
    let bob = app("bob", "secret").await;
    let _hub = hub_with_pair(&alice, &bob).await;

    let sid = alice.create_session(anycast()).await.unwrap();
    let mut req = to(&name("bob"), b"hello");
    req.metadata = Some(HashMap::from([("k".to_string(), "v".to_string())]));
    alice.publish(sid, req).await.unwrap();

    // Seed semantics: announced as a new session AND first item of the session queue.
    let (info, payload) = recv_new(&bob).await;
    assert_eq!(payload, b"hello");
    assert_eq!(info.session_id, sid);
    assert_eq!(info.source, alice.name());
    assert_eq!(info.payload_type, "msg");
    assert_eq!(info.metadata, HashMap::from([("k".to_string(), "v".to_string())]));
    let (again, payload) = recv(&bob, sid).await.unwrap();
    assert_eq!((again.message_id, payload.as_slice()), (info.message_id, b"hello".as_slice()));
    assert_eq!(bob.get_session_config(sid).unwrap(), SessionConfig::default_p2p());

    // Reply through the connection the message came in on.
    bob.publish(sid, reply(&info, b"world")).await.unwrap();
    let (back, payload) = recv(&alice, sid).await.unwrap();
    assert_eq!(payload, b"world");
    assert_eq!(back.source, bob.name());
    assert!(back.metadata.is_empty(), "internal keys must not leak: {:?}", back.metadata);

    // recv_any: arrival order across sessions.
    let sid2 = alice.create_session(anycast()).await.unwrap();
    alice.publish(sid, to(&name("bob"), b"a")).await.unwrap();
    alice.publish(sid2, to(&name("bob"), b"b")).await.unwrap();
    alice.publish(sid, to(&name("bob"), b"c")).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let (i, p) = tokio::time::timeout(WAIT, bob.recv_any()).await.unwrap().unwrap();
        got.push((i.session_id, p));
    }
    assert_eq!(got, vec![(sid, b"a".to_vec()), (sid2, b"b".to_vec()), (sid, b"c".to_vec())]);
    // sid2 was new for bob: its notification carries the same first message.
    assert_eq!(recv_new(&bob).await.1, b"b");

    // Unroutable destination: a typed NoRoute error on the session's queue.
    alice.publish(sid, to(&name("nobody"), b"x")).await.unwrap();
    match recv(&alice, sid).await {
        Err(SlimError::NoRoute(text)) => assert!(text.contains("no matching found for"), "{text}"),
        other => panic!("expected NoRoute, got {other:?}"),
    }

    // Deleted session: publish fails with SessionNotFound.
    alice.delete_session(sid).await.unwrap();
    assert_eq!(alice.publish(sid, to(&name("bob"), b"late")).await, Err(SlimError::SessionNotFound(sid)));
    assert_eq!(alice.delete_session(sid).await, Err(SlimError::SessionNotFound(sid)));
    assert!(matches!(alice.try_recv_session(sid), Some(Err(SlimError::SessionNotFound(_)))));

    // Reply without a source is a configuration error.
    let sid3 = alice.create_session(anycast()).await.unwrap();
    let bad = PublishRequest { blob: b"x".to_vec().into(), ..Default::default() };
    assert!(matches!(alice.publish(sid3, bad).await, Err(SlimError::Config(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_shared_secret_is_never_delivered() {
    let bob = app("bob", "secret").await;
    let eve = app("eve", "not-the-secret").await;
    let _hub = hub_with_pair(&eve, &bob).await;

    let sid = eve.create_session(anycast()).await.unwrap();
    for _ in 0..3 {
        eve.publish(sid, to(&name("bob"), b"forged")).await.unwrap();
    }
    let stats = bob.stats();
    wait_until("identity rejections", || stats.snapshot()["identity_rejected"] >= 3).await;
    assert!(bob.try_recv_new_session().is_none());
    assert!(bob.try_recv_any().is_none());
    assert!(matches!(bob.try_recv_session(sid), Some(Err(SlimError::SessionNotFound(_)))));
}

/// A reliable session deleted while its peer takes its messages but never acknowledges them: the
/// delete waits for them for its bound (`DELETE_LINGER`), then drops them with the session,
/// counted (docs/reliability.md, "Deleting a session"). A reliable session whose peer does
/// acknowledge is deleted as soon as it has: nothing is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_waits_for_acknowledgements_then_counts_what_it_drops() {
    use slim_bindings::node::{ClientConfig, Node};
    use slim_bindings::session::layer::DELETE_LINGER;
    use slim_bindings::wire::Name;
    use slim_bindings::wire::builders::{self, Flags};

    let reliable = SessionConfig::Anycast {
        timeout: Some(std::time::Duration::from_secs(1)),
        max_retries: Some(5),
        mls_enabled: false,
        liveness: None,
    };
    let (hub, alice, bob) = pair("alice", "bob").await;

    // Acknowledged: every message arrives and the delete returns well inside its bound.
    let sid = alice.create_session(reliable.clone()).await.unwrap();
    for i in 0..20u8 {
        alice.publish(sid, to(&name("bob"), &[i])).await.unwrap();
    }
    let started = tokio::time::Instant::now();
    alice.delete_session(sid).await.unwrap();
    let took = started.elapsed();
    // The first message is announced as a new session and is also the session queue's first.
    assert_eq!(recv_new(&bob).await.1, vec![0]);
    let mut got = Vec::new();
    while got.len() < 20 {
        got.push(recv(&bob, sid).await.unwrap().1);
    }
    assert_eq!(got, (0..20u8).map(|i| vec![i]).collect::<Vec<_>>());
    assert!(took < DELETE_LINGER, "a delete whose messages were acknowledged waited {took:?}");
    assert_eq!(counter(&alice, "session_delete_discarded"), 0);

    // A mute peer: subscribed at the hub through a bare node, it never answers.
    let mute_node = Node::new("mute");
    let mute = mute_node.register_local();
    let conn = mute_node.connect(ClientConfig::insecure(&hub.endpoint)).await.unwrap();
    let me = Name::new("org", "ns", "mute", Some(7));
    mute.tx.send(builders::subscribe(&me, &me, Flags::one())).await.unwrap();
    mute.tx.send(builders::subscribe(&me, &me, Flags::one().forward_to(Some(conn)))).await.unwrap();
    wait_subscribed(&hub.node, &me).await;
    alice.set_route(&name("mute"), hub.conn).await.unwrap();

    let sid = alice.create_session(reliable).await.unwrap();
    for i in 0..3u8 {
        alice.publish(sid, to(&name("mute"), &[i])).await.unwrap();
    }
    let started = tokio::time::Instant::now();
    alice.delete_session(sid).await.unwrap();
    let took = started.elapsed();
    assert!(took >= DELETE_LINGER, "the delete gave up after {took:?}, before its bound");
    assert!(took < DELETE_LINGER + WAIT, "the delete took {took:?}");
    assert_eq!(counter(&alice, "session_delete_discarded"), 3);
    assert_eq!(alice.publish(sid, to(&name("mute"), b"late")).await, Err(SlimError::SessionNotFound(sid)));
    drop(mute);
}

/// The initiator's delete tells the other side (SESSION_CLOSE, docs/protocol.md "Closing"): its
/// reader gets every message that arrived, then `PeerClosed` naming the initiator, and the session
/// is gone from its app; publishing on it is refused. Anycast, reliable anycast, sticky reliable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_initiators_delete_closes_the_other_side_once_its_reader_drained_it() {
    let reliable = |sticky: bool| {
        let (timeout, max_retries) = (Some(std::time::Duration::from_secs(1)), Some(5));
        if sticky {
            SessionConfig::Unicast { timeout, max_retries, mls_enabled: false, liveness: None }
        } else {
            SessionConfig::Anycast { timeout, max_retries, mls_enabled: false, liveness: None }
        }
    };
    for cfg in [anycast(), reliable(false), reliable(true)] {
        let (_hub, alice, bob) = pair("alice", "bob").await;
        let sid = alice.create_session(cfg.clone()).await.unwrap();
        for i in 0..5u8 {
            alice.publish(sid, to(&name("bob"), &[i])).await.unwrap();
        }
        assert_eq!(recv_new(&bob).await.1, vec![0], "{cfg:?}");
        assert_eq!(bob.open_sessions(), 1);
        alice.delete_session(sid).await.unwrap();
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(recv(&bob, sid).await.unwrap().1);
        }
        assert_eq!(got, (0..5u8).map(|i| vec![i]).collect::<Vec<_>>(), "{cfg:?}");
        match recv(&bob, sid).await {
            Err(SlimError::PeerClosed { session_id, peer, undelivered: 0 }) => {
                assert_eq!((session_id, peer), (sid, alice.name()), "{cfg:?}");
            }
            other => panic!("{cfg:?}: expected PeerClosed, got {other:?}"),
        }
        assert_eq!(recv(&bob, sid).await.map(|_| ()), Err(SlimError::SessionClosed), "{cfg:?}");
        // Gone from the table once drained (the last pop and the removal are not one step).
        wait_until("the drained session leaves bob's table", || bob.open_sessions() == 0).await;
        assert_eq!(bob.publish(sid, to(&name("alice"), b"late")).await, Err(SlimError::SessionClosed));
        assert_eq!(bob.delete_session(sid).await, Ok(()), "nothing left to delete: no error");
        // The responder's own delete tells nobody: the initiator's next session is unaffected.
        let sid2 = alice.create_session(cfg.clone()).await.unwrap();
        alice.publish(sid2, to(&name("bob"), b"again")).await.unwrap();
        let (info, _) = recv_new(&bob).await;
        bob.publish(sid2, reply(&info, b"answer")).await.unwrap();
        assert_eq!(recv(&alice, sid2).await.unwrap().1, b"answer");
        bob.delete_session(sid2).await.unwrap();
        alice.publish(sid2, to(&name("bob"), b"still open")).await.unwrap();
        assert_eq!(counter(&bob, "unknown_session"), 0, "{cfg:?}");
    }
}

/// An anycast session spread over two instances of one name (the node picks one per message): the
/// initiator's delete tells one instance, with fanout 1 like its data, so the notice follows the path
/// its data to that instance took and never overtakes it (a broadcast follows the mesh's shared
/// tree, which may be another path). That instance reads what it got, then `PeerClosed`; the other
/// keeps its session (docs/protocol.md "Closing").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_initiators_delete_tells_one_instance_on_the_path_of_its_data() {
    let alice = app("alice", "secret").await;
    let bobs = [app("bob", "secret").await, app("bob", "secret").await];
    let _hub = hub_with(&alice, &[&bobs[0], &bobs[1]]).await;
    let sid = alice.create_session(anycast()).await.unwrap();
    // Each message goes to one instance picked at random: both get some (both missing odds: 2^-63).
    for i in 0..64u8 {
        alice.publish(sid, to(&name("bob"), &[i])).await.unwrap();
    }
    alice.delete_session(sid).await.unwrap();
    let (mut got, mut ended) = (Vec::new(), [false, false]);
    wait_until("all 64 messages, and one instance told", || {
        for (k, bob) in bobs.iter().enumerate() {
            while let Some(item) = bob.try_recv_session(sid) {
                match item {
                    Ok((_, payload)) => got.extend(payload),
                    Err(SlimError::PeerClosed { peer, .. }) if peer == alice.name() => ended[k] = true,
                    // Not created yet, or told and drained.
                    Err(SlimError::SessionNotFound(_) | SlimError::SessionClosed) => break,
                    Err(e) => panic!("expected the messages then PeerClosed, got {e:?}"),
                }
            }
        }
        got.len() == 64 && ended.contains(&true)
    })
    .await;
    got.sort_unstable();
    assert_eq!(got, (0..64u8).collect::<Vec<_>>());
    let untold = ended.iter().position(|e| !e).expect("one notice, one instance told");
    assert_eq!(bobs[untold].open_sessions(), 1, "the other instance keeps its session");
}
