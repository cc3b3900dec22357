//! Flow control under a slow reader over real loopback gRPC: 50,000 messages from one app to
//! another through a node. The reader first reads nothing until the session queue is full and a
//! producer waits for room (`session_queue_full_waits`), so back-pressure is exercised in every
//! run, then reads with regular pauses. Nothing may be lost: reliable sessions admit only what the
//! application queue has room for (the rest is retransmitted), unreliable ones back-pressure the
//! sender.

use crate::common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use slim_bindings::session::SessionConfig;

const MESSAGES: u32 = 50_000;
/// The reader pauses this long ...
const READER_PAUSE: Duration = Duration::from_millis(1);
/// ... after every this many messages (a bounded consumer delay: ~5 s over the whole stream).
const READER_PAUSE_EVERY: u32 = 10;
/// Upper bound of one whole run.
const RUN_BOUND: Duration = Duration::from_secs(240);
/// Upper bound for the stopped reader's queue to fill (16,384 messages through the node).
const FILL_BOUND: Duration = Duration::from_secs(120);

/// Streams [`MESSAGES`] on a new session with `cfg` and checks they all arrive, once, in order.
async fn stream_to_slow_reader(cfg: SessionConfig, a: &str, b: &str) {
    let (_hub, sender, receiver) = pair(a, b).await;
    let sid = sender.create_session(cfg).await.unwrap();
    let dest = name(b);
    let publisher = {
        let sender = sender.clone();
        tokio::spawn(async move {
            for i in 0..MESSAGES {
                let mut blob = vec![0u8; 100];
                blob[..4].copy_from_slice(&i.to_le_bytes());
                sender.publish(sid, to(&dest, &blob)).await.unwrap();
            }
        })
    };
    let run = async {
        let (first, _) = recv_new(&receiver).await;
        assert_eq!(first.session_id, sid);
        // Reads nothing until the queue is full and its producer waits for room, then reads at
        // once (the producer waits up to the 5 s delivery bound before it stops waiting).
        assert_eq!(counter(&receiver, "session_queue_full_waits"), 0, "fresh app");
        wait_until_for("the session queue to fill", FILL_BOUND, || counter(&receiver, "session_queue_full_waits") > 0)
            .await;
        for i in 0..MESSAGES {
            let (info, blob) = recv(&receiver, sid).await.unwrap_or_else(|e| panic!("message {i}: {e}"));
            assert_eq!(blob[..4], i.to_le_bytes(), "message {i} missing or out of order");
            assert_eq!(info.message_id, i);
            if i % READER_PAUSE_EVERY == 0 {
                tokio::time::sleep(READER_PAUSE).await;
            }
        }
    };
    tokio::time::timeout(RUN_BOUND, run).await.expect("stream delivered within the run bound");
    tokio::time::timeout(WAIT, publisher).await.expect("publisher finished").unwrap();
    assert!(receiver.try_recv_session(sid).is_none(), "nothing beyond the stream");
    assert!(counter(&receiver, "session_queue_full_waits") > 0, "back-pressure was applied");
    assert_eq!(receiver.session_queue_drops(sid).unwrap(), 0, "nothing dropped");
    assert_eq!(receiver.stats().session_backlog.load(Ordering::Relaxed), 0);
    // The sender saw no error either (a timeout would be queued on its session).
    assert!(sender.try_recv_session(sid).is_none(), "sender got an error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliable_unicast_stream_to_a_slow_reader_is_complete_and_ordered() {
    let cfg = SessionConfig::Unicast {
        timeout: Some(Duration::from_millis(500)),
        max_retries: Some(10),
        mls_enabled: false,
        liveness: None,
    };
    stream_to_slow_reader(cfg, "flow-ru-a", "flow-ru-b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliable_anycast_stream_to_a_slow_reader_is_complete_and_ordered() {
    let cfg = SessionConfig::Anycast {
        timeout: Some(Duration::from_millis(500)),
        max_retries: Some(10),
        mls_enabled: false,
        liveness: None,
    };
    stream_to_slow_reader(cfg, "flow-ra-a", "flow-ra-b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreliable_stream_to_a_slow_reader_is_back_pressured_not_dropped() {
    let cfg = SessionConfig::Anycast { timeout: None, max_retries: None, mls_enabled: false, liveness: None };
    stream_to_slow_reader(cfg, "flow-un-a", "flow-un-b").await;
}

/// An app's reader pauses while a peer streams to it, so its node's queue toward it fills up;
/// meanwhile it sends messages to a name nobody has. The node never waits for room to report
/// an error (the app could be blocked sending), and no longer drops the report either: it
/// merges the reports per session, and once the reader moves on the session gets every one, as
/// `NoRoute` errors that together count each failed message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_reports_that_find_the_apps_queue_full_are_merged_not_dropped() {
    let (_hub, alice, bob) = pair("alice", "bob").await;
    let unreliable = SessionConfig::Anycast { timeout: None, max_retries: None, mls_enabled: false, liveness: None };
    let stream = bob.create_session(unreliable.clone()).await.unwrap();
    let streamer = {
        let (b, dest) = (bob.clone(), alice.name().without_id());
        tokio::spawn(async move {
            for i in 0..60_000u32 {
                if b.publish(stream, to(&dest, &i.to_be_bytes())).await.is_err() {
                    break;
                }
            }
        })
    };
    let sid = alice.create_session(unreliable).await.unwrap();
    let deferred = || alice.node().stats().error_reports_deferred;
    let mut sent = 0usize;
    let deadline = std::time::Instant::now() + WAIT;
    // The stream fills alice's session queue, then her node's queue toward her: from then on
    // the reports of her failed sends are deferred. Polled: nothing to await for "queue full".
    while deferred() == 0 {
        assert!(std::time::Instant::now() < deadline, "alice's node queue never filled");
        alice.publish(sid, to(&name("nobody"), b"anyone?")).await.unwrap();
        sent += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for _ in 0..20 {
        alice.publish(sid, to(&name("nobody"), b"anyone?")).await.unwrap();
        sent += 1;
    }
    // The reader moves on: the stream drains, and every report reaches the other session.
    let drain = {
        let a = alice.clone();
        // Until the stream stops: its own losses past the delivery bound (a loaded machine) are
        // errors on its session, read past like the messages.
        tokio::spawn(async move {
            while let Ok(Ok(_) | Err(slim_bindings::error::SlimError::MessageLost { .. })) =
                tokio::time::timeout(WAIT, a.recv_session(stream)).await
            {}
        })
    };
    let (mut reported, mut merged) = (0usize, 0usize);
    while reported < sent {
        match recv(&alice, sid).await {
            Err(slim_bindings::error::SlimError::NoRoute(text)) => {
                let more = text
                    .split("(and ")
                    .nth(1)
                    .and_then(|rest| rest.split(' ').next())
                    .map_or(0, |n| n.parse::<usize>().expect("a count"));
                reported += 1 + more;
                merged += usize::from(more > 0);
            }
            other => panic!("expected NoRoute, got {other:?}"),
        }
    }
    assert_eq!(reported, sent, "every failed message reported once");
    assert!(merged > 0, "the reports deferred while the queue was full came as a summary");
    assert!(alice.try_recv_session(sid).is_none(), "nothing more");
    streamer.abort();
    drain.abort();
}
