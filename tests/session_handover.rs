//! The hand-over of a reliable stream between the app's dispatcher and its session task
//! (src/session/inbound.rs): while the task's reorder window is idle the dispatcher delivers data
//! in order itself; anything else (an id out of order, a duplicate, a full application queue)
//! goes to the task, which takes the stream back, and lends it again once idle. Here a reliable
//! unicast stream crosses a link that reorders and duplicates its data and acknowledgements, and
//! the reader stops until the session queue is full and the task has waited for room past its
//! bound (the dispatcher must not deliver into the full queue meanwhile), then drains:
//! every message arrives exactly once, in order, nothing is reported lost, and the dispatcher
//! delivered both before the queue filled and again (a tail published after the drain) after the
//! task had the stream.

use crate::common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use slim_bindings::session::SessionConfig;

/// More than a session queue holds (16,384), so the stopped reader's queue fills.
const MESSAGES: u32 = 24_000;
/// Published once the reader has drained the first [`MESSAGES`] (the task idle again).
const TAIL: u32 = 2_000;
/// Upper bound for the stopped reader's queue to fill.
const FILL_BOUND: Duration = Duration::from_secs(120);
/// Upper bound of the whole run.
const RUN_BOUND: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliable_stream_handed_between_dispatcher_and_task_is_exactly_once_in_order() {
    let (hub, endpoint) = hub().await;
    // Per mille, both ways, data and acknowledgements: none dropped (a hole keeps the window busy
    // until its retransmission, half a second here, so drops would leave the dispatcher almost
    // nothing to deliver; tests/session_lossy.rs covers them), 60 held back behind the next one,
    // 40 sent twice.
    let proxy = lossy_proxy::start_duplicating(&endpoint, 0, 60, 40, 0x4A4D).await;
    let alice = app("handover-a", "secret").await;
    let bob = app("handover-b", "secret").await;
    let ca = connect(&alice, &proxy.endpoint).await;
    let cb = connect(&bob, &endpoint).await;
    alice.set_route(&name("handover-b"), ca).await.unwrap();
    bob.set_route(&name("handover-a"), cb).await.unwrap();
    wait_subscribed(&hub, &alice.name()).await;
    wait_subscribed(&hub, &bob.name()).await;

    // Retries outlast the stopped reader (a message not admitted is retransmitted every 500 ms).
    let cfg = SessionConfig::Unicast {
        timeout: Some(Duration::from_millis(500)),
        max_retries: Some(60),
        mls_enabled: false,
        liveness: None,
    };
    let sid = alice.create_session(cfg).await.unwrap();
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let publisher = {
        let alice = alice.clone();
        let dest = name("handover-b");
        tokio::spawn(async move {
            for i in 0..MESSAGES {
                alice.publish(sid, to(&dest, &i.to_le_bytes())).await.unwrap();
            }
            drained_rx.await.expect("reader drained");
            for i in MESSAGES..MESSAGES + TAIL {
                alice.publish(sid, to(&dest, &i.to_le_bytes())).await.unwrap();
            }
        })
    };
    assert_eq!(counter(&bob, "dispatcher_deliveries"), 0, "fresh app");
    assert_eq!(counter(&bob, "session_queue_full_waits"), 0, "fresh app");
    let run = async {
        let (first, _) = recv_new(&bob).await;
        assert_eq!(first.session_id, sid);
        // Reads nothing until the queue is full and the task waits for room (the dispatcher
        // found it full and handed the stream over) ...
        wait_until_for("the session queue to fill", FILL_BOUND, || counter(&bob, "session_queue_full_waits") > 0).await;
        let by_dispatcher_while_filling = counter(&bob, "dispatcher_deliveries");
        // ... and until the task gave up waiting (the delivery bound, 5 s: that message is not
        // acknowledged, RECOVERED by its retransmission) and lent the stream again: the
        // retransmissions that reach the dispatcher then must go back to the task, the queue
        // being still full (nothing delivered past its bound).
        wait_until_for("the task to stop waiting for room", FILL_BOUND, || counter(&bob, "session_backlog") > 0).await;
        let by_dispatcher_when_full = counter(&bob, "dispatcher_deliveries");
        let relayed = proxy.counters.relayed.load(Ordering::Relaxed);
        wait_until_for("retransmissions to reach the stopped reader", FILL_BOUND, || {
            proxy.counters.relayed.load(Ordering::Relaxed) > relayed + 512
        })
        .await;
        assert_eq!(counter(&bob, "dispatcher_deliveries"), by_dispatcher_when_full, "delivered into a full queue");
        // Then drains at once, and reads a tail published after the drain: the task, once done
        // with what the full queue left it, lends the stream again.
        let mut by_dispatcher_when_drained = 0;
        let mut drained_tx = Some(drained_tx);
        for i in 0..MESSAGES + TAIL {
            if i == MESSAGES {
                by_dispatcher_when_drained = counter(&bob, "dispatcher_deliveries");
                if let Some(tx) = drained_tx.take() {
                    tx.send(()).expect("publisher waits");
                }
            }
            let (info, blob) = recv(&bob, sid).await.unwrap_or_else(|e| panic!("message {i}: {e}"));
            let got = u32::from_le_bytes(blob[..].try_into().expect("4-byte payload"));
            assert_eq!(got, i, "out of order, duplicated or lost");
            assert_eq!(info.message_id, i);
        }
        (by_dispatcher_while_filling, by_dispatcher_when_drained)
    };
    let (by_dispatcher_while_filling, by_dispatcher_when_drained) =
        tokio::time::timeout(RUN_BOUND, run).await.expect("stream within the run bound");
    tokio::time::timeout(WAIT, publisher).await.expect("publisher finished").unwrap();
    // Nothing beyond the stream, nothing lost, no error on either side.
    assert!(bob.try_recv_session(sid).is_none(), "nothing beyond the stream");
    assert_eq!(counter(&bob, "messages_lost_reported"), 0);
    assert!(alice.try_recv_session(sid).is_none(), "sender got an error");
    // The hand-over happened both ways: the dispatcher delivered part of what filled the queue,
    // the task delivered the rest (reordered ids, the full queue), and the dispatcher got the
    // stream back after the drain.
    let by_dispatcher = counter(&bob, "dispatcher_deliveries");
    assert!(
        by_dispatcher_while_filling > 0 && by_dispatcher_while_filling < u64::from(MESSAGES),
        "dispatcher delivered {by_dispatcher_while_filling} before the drain"
    );
    assert!(
        by_dispatcher > by_dispatcher_when_drained,
        "the dispatcher never got the stream back after the drain: {by_dispatcher_when_drained} then {by_dispatcher}"
    );
    assert!(by_dispatcher < u64::from(MESSAGES + TAIL), "the task delivered nothing");
    let c = &proxy.counters;
    let (dropped, reordered, duplicated) =
        (c.dropped.load(Ordering::Relaxed), c.reordered.load(Ordering::Relaxed), c.duplicated.load(Ordering::Relaxed));
    assert!(reordered > 50 && duplicated > 50, "{dropped} dropped, {reordered} reordered, {duplicated} duplicated");
    assert_eq!(dropped, 0);
    assert!(counter(&bob, "duplicates") > 0, "the receiver saw no duplicate");
}
