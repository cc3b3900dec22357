//! The sender's byte bound on a point-to-point session (src/session/budget.rs), over real loopback
//! gRPC through a node: 64 KiB messages to a receiver that stops reading. The bytes the sender holds
//! (publishes waiting + unacknowledged) stay under the bound while the publisher waits, and once
//! the receiver reads again every message arrives, once, in order. A publish that can never get
//! room fails with the typed `SendBufferFull` after its bound.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::*;
use slim_bindings::error::SlimError;
use slim_bindings::session::SessionConfig;
use slim_bindings::session::budget::{MAX_BUFFERED_BYTES, charge_of};
use slim_bindings::session::queue::DEFAULT_SESSION_QUEUE_BYTES;

const SIZE: usize = 64 * 1024;
/// 125 MiB in total: about eight times the bound.
const MESSAGES: u32 = 2000;
/// How long the receiver keeps not reading once the sender's buffer is full.
const STALL: Duration = Duration::from_secs(2);
const RUN_BOUND: Duration = Duration::from_secs(120);

fn payload(i: u32) -> Vec<u8> {
    let mut blob = vec![(i % 251) as u8; SIZE];
    blob[..4].copy_from_slice(&i.to_le_bytes());
    blob
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_buffer_stays_bounded_while_the_receiver_stalls_and_nothing_is_lost() {
    let (_hub, sender, receiver) = pair("budget-a", "budget-b").await;
    // Retries outlast the stall: the receiver's silence must not turn into timeouts.
    let cfg = SessionConfig::Unicast {
        timeout: Some(Duration::from_secs(1)),
        max_retries: Some(60),
        mls_enabled: false,
        liveness: None,
    };
    let sid = sender.create_session(cfg).await.unwrap();
    let dest = name("budget-b");
    let published = Arc::new(AtomicU32::new(0));
    let publisher = {
        let (sender, published) = (sender.clone(), published.clone());
        tokio::spawn(async move {
            for i in 0..MESSAGES {
                sender.publish(sid, to(&dest, &payload(i))).await.unwrap_or_else(|e| panic!("publish {i}: {e}"));
                published.store(i + 1, Ordering::Relaxed);
            }
        })
    };

    // The receiver does not read: its queue fills (by bytes), it stops acknowledging, and the
    // sender's buffer fills up to the bound, where the publisher waits.
    let one = charge_of(SIZE, MAX_BUFFERED_BYTES);
    // Where the publisher stops: the receiver's queue took its share, the send buffer the rest.
    let stop = (DEFAULT_SESSION_QUEUE_BYTES / SIZE + MAX_BUFFERED_BYTES / one) as u32;
    wait_until_for("receiver queue and sender buffer full", Duration::from_secs(60), || {
        sender.session_send_buffer(sid).unwrap().0 + one > MAX_BUFFERED_BYTES
            && published.load(Ordering::Relaxed) >= stop
    })
    .await;
    let blocked_at = published.load(Ordering::Relaxed);
    assert!(blocked_at < MESSAGES, "the publisher must be waiting, not done");
    // Stay stalled a while: the buffer must not grow past the bound, the publisher must not run.
    let stall_end = tokio::time::Instant::now() + STALL;
    while tokio::time::Instant::now() < stall_end {
        let (now, peak) = sender.session_send_buffer(sid).unwrap();
        assert!(now <= MAX_BUFFERED_BYTES && peak <= MAX_BUFFERED_BYTES, "buffered {now}, peak {peak}");
        assert_eq!(published.load(Ordering::Relaxed), blocked_at, "publisher ran while the buffer was full");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The receiver resumes: everything arrives once, in order, intact.
    let run = async {
        let (first, _) = recv_new(&receiver).await;
        assert_eq!(first.session_id, sid);
        for i in 0..MESSAGES {
            let (info, blob) = recv(&receiver, sid).await.unwrap_or_else(|e| panic!("message {i}: {e}"));
            assert_eq!(blob.len(), SIZE, "message {i} size");
            assert_eq!(blob[..4], i.to_le_bytes(), "message {i} missing or out of order");
            assert!(blob[4..].iter().all(|&b| b == (i % 251) as u8), "message {i} corrupted");
            assert_eq!(info.message_id, i);
        }
    };
    tokio::time::timeout(RUN_BOUND, run).await.expect("stream delivered within the run bound");
    tokio::time::timeout(WAIT, publisher).await.expect("publisher finished").unwrap();
    assert!(receiver.try_recv_session(sid).is_none(), "nothing beyond the stream");
    assert!(sender.try_recv_session(sid).is_none(), "sender got an error (timeout?)");
    let (now, peak) = sender.session_send_buffer(sid).unwrap();
    assert!(peak <= MAX_BUFFERED_BYTES, "peak {peak} over the bound");
    assert!(peak + one > MAX_BUFFERED_BYTES, "the bound was reached (peak {peak})");
    // Every charge was given back once acknowledged.
    wait_until("all acknowledged", || sender.session_send_buffer(sid).unwrap().0 == 0).await;
    eprintln!("publisher blocked at {blocked_at} during the stall; buffer now {now}, peak {peak}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_that_never_gets_room_fails_typed_after_its_bound() {
    let (_hub, sender, _receiver) = pair("budget-c", "budget-d").await;
    // Sticky and unreliable: publishes wait in the pending queue until discovery finds a peer,
    // and nobody serves this name, so discovery keeps retrying and nothing leaves.
    let cfg = SessionConfig::Unicast { timeout: None, max_retries: None, mls_enabled: false, liveness: None };
    let sid = sender.create_session(cfg).await.unwrap();
    let nobody = name("budget-nobody");
    let one = charge_of(SIZE, MAX_BUFFERED_BYTES);
    let fits = (MAX_BUFFERED_BYTES / one) as u32;
    for i in 0..fits {
        tokio::time::timeout(WAIT, sender.publish(sid, to(&nobody, &payload(i))))
            .await
            .expect("room left: publish does not wait")
            .unwrap_or_else(|e| panic!("publish {i}: {e}"));
    }
    let (now, _) = sender.session_send_buffer(sid).unwrap();
    assert_eq!(now, fits as usize * one);
    let started = tokio::time::Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(30), sender.publish(sid, to(&nobody, &payload(fits))))
        .await
        .expect("the publish wait is bounded")
        .expect_err("no room ever: the publish fails");
    let waited = started.elapsed();
    assert!(matches!(err, SlimError::SendBufferFull { session_id, .. } if session_id == sid), "{err:?}");
    assert!(waited >= Duration::from_secs(4), "failed after {waited:?}, before its bound");
    assert!(sender.session_send_buffer(sid).unwrap().1 <= MAX_BUFFERED_BYTES);
    // Deleting the session wakes a waiting publisher at once with a typed error. The budget is
    // still full, and `publish` awaits nothing before it waits for room, so a first poll that
    // returns Pending means the publisher is queued on the budget when the session is deleted.
    assert_eq!(sender.session_send_buffer(sid).unwrap().0, fits as usize * one, "still no room");
    let mut waiter = std::pin::pin!(sender.publish(sid, to(&nobody, &payload(0))));
    assert!(futures::poll!(waiter.as_mut()).is_pending(), "no room: the publish waits");
    sender.delete_session(sid).await.unwrap();
    let res = tokio::time::timeout(Duration::from_secs(2), waiter).await.expect("woken by delete");
    assert!(matches!(res, Err(SlimError::SessionNotFound(id)) if id == sid), "{res:?}");
}
