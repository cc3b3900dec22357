//! Issue 10 item 1, the silent loss in fast MLS groups, over a real hub on loopback: a moderator
//! publishes 100-byte messages as fast as it can to 4 MLS members.
//!
//! - Every member that keeps reading gets every message exactly once (200,000 messages).
//! - A member that stops reading first slows the group down (back-pressure, bounded by the
//!   5 s delivery bound), then loses what its queue cannot hold past that bound: each such message
//!   is reported to it as `MessageLost` with its id, in its place in the stream, and counted; the
//!   other members still get everything. Nothing is ever missing without a report.
//!
//! Messages are counted by their payload number (4 bytes, then padding to 100 bytes): the id a
//! message carries is the moderator's, which these tests also check.

use crate::common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use slim_bindings::app::App;
use slim_bindings::error::SlimError;
use slim_bindings::session::{PublishRequest, SessionConfig};
use slim_bindings::wire::Name;

/// What one member read: every message id once, every lost id once.
#[derive(Debug, Default)]
struct Tally {
    got: BTreeSet<u32>,
    lost: BTreeSet<u32>,
    duplicates: u64,
}

/// A moderator, 4 members (MLS on) and the session id, all through one hub.
async fn group(tag: &str) -> (App, Vec<App>, Name, u32) {
    let channel = name(&format!("{tag}-chat"));
    let moderator = app(&format!("{tag}-mod"), "secret").await;
    let members = apps(&format!("{tag}-m"), 4).await;
    let _hub = hub_with(&moderator, &members.iter().collect::<Vec<_>>()).await;
    let cfg = SessionConfig::Multicast {
        topic: channel.clone(),
        moderator: true,
        max_retries: 5,
        timeout: Duration::from_secs(1),
        mls_enabled: true,
        liveness: None,
    };
    let sid = moderator.create_session(cfg).await.unwrap();
    for a in &members {
        moderator.invite(sid, &a.name().without_id()).await.unwrap().joined().await.unwrap();
    }
    (moderator, members, channel, sid)
}

/// Publishes the numbered 100-byte messages `ids` as fast as the session takes them.
async fn publish_all(moderator: &App, sid: u32, channel: &Name, ids: std::ops::Range<u32>) -> Duration {
    let t0 = Instant::now();
    for i in ids {
        let mut blob = vec![0u8; 100];
        blob[..4].copy_from_slice(&i.to_be_bytes());
        let req = PublishRequest { dest: Some(channel.clone()), blob: blob.into(), fanout: 1, ..Default::default() };
        moderator.publish(sid, req).await.unwrap();
    }
    t0.elapsed()
}

/// How a member reads.
#[derive(Clone, Copy)]
enum Pace {
    /// Everything waiting, as fast as it can.
    Fast,
    /// At most 100 messages every `0` (a reader slower than the group publishes).
    Throttled(Duration),
}

/// Reads session `sid` until every id of `ids` was delivered or reported lost; fails when
/// nothing arrives for 30 s (a message missing without a report would end here).
async fn read_all(member: App, sid: u32, ids: std::ops::Range<u32>, pace: Pace) -> Tally {
    let idle = Duration::from_secs(30);
    let expected = ids.len();
    let mut t = Tally::default();
    let mut batch = Vec::with_capacity(4096);
    while (t.got.len() + t.lost.len()) < expected {
        batch.clear();
        let max = match pace {
            Pace::Fast => 4096,
            Pace::Throttled(pause) => {
                tokio::time::sleep(pause).await;
                100
            }
        };
        match member.try_recv_session_batch(sid, &mut batch, max) {
            Ok(0) => match tokio::time::timeout(idle, member.recv_session(sid)).await {
                Err(_) => panic!(
                    "{}: nothing for {idle:?} with {} delivered and {} reported lost of {expected}",
                    member.name(),
                    t.got.len(),
                    t.lost.len()
                ),
                Ok(Ok(m)) => batch.push(m),
                Ok(Err(e)) => note_error(&mut t, e),
            },
            Ok(_) => {}
            Err(e) => note_error(&mut t, e),
        }
        for (info, blob) in batch.drain(..) {
            let n = u32::from_be_bytes(blob[..4].try_into().unwrap());
            assert_eq!(info.message_id, n, "the moderator's ids count from 0");
            assert!(ids.contains(&n) && blob.len() == 100);
            if !t.got.insert(n) || t.lost.contains(&n) {
                t.duplicates += 1;
            }
        }
    }
    t
}

fn note_error(t: &mut Tally, e: SlimError) {
    match e {
        SlimError::MessageLost { message_id, .. } => {
            if !t.lost.insert(message_id) || t.got.contains(&message_id) {
                t.duplicates += 1;
            }
        }
        other => panic!("unexpected session error: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mls_group_stream_reaches_every_member_exactly_once() {
    let total: u32 = std::env::var("SLIM_LOSS_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let (moderator, members, channel, sid) = group("fast").await;
    let readers: Vec<_> =
        members.iter().map(|a| tokio::spawn(read_all(a.clone(), sid, 0..total, Pace::Fast))).collect();
    let took = publish_all(&moderator, sid, &channel, 0..total).await;
    eprintln!("published {total} in {took:?}");
    for (r, a) in readers.into_iter().zip(&members) {
        let t = r.await.unwrap();
        assert_eq!(t.got.len(), total as usize, "{}: {} lost", a.name(), t.lost.len());
        assert_eq!(t.duplicates, 0, "{}", a.name());
        assert_eq!(counter(a, "session_queue_dropped"), 0, "{}", a.name());
        assert_eq!(counter(a, "messages_lost_reported"), 0, "{}", a.name());
        assert_eq!(counter(a, "mls_failures"), 0, "{}", a.name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_member_is_waited_for_and_a_stopped_one_gets_every_loss_reported() {
    const SLOW: u32 = 20_000;
    const STOPPED: u32 = 50_000;
    let (moderator, members, channel, sid) = group("slow").await;
    let slow = members[0].clone();

    // 1. The slow member reads at most 2,000 messages/s: the group waits for it (its queue
    //    fills, then the node's queues, then the moderator), and it loses nothing.
    let mut readers: Vec<_> =
        members[1..].iter().map(|a| tokio::spawn(read_all(a.clone(), sid, 0..SLOW + STOPPED, Pace::Fast))).collect();
    let slow_reader = tokio::spawn(read_all(slow.clone(), sid, 0..SLOW, Pace::Throttled(Duration::from_millis(50))));
    publish_all(&moderator, sid, &channel, 0..SLOW).await;
    let t = slow_reader.await.unwrap();
    assert_eq!((t.got.len(), t.lost.len(), t.duplicates), (SLOW as usize, 0, 0), "the slow member lost nothing");

    // 2. Now it reads nothing while the moderator publishes: after the 5 s delivery bound its
    //    queue drops, each message reported, and the group goes on at full speed.
    let took = publish_all(&moderator, sid, &channel, SLOW..SLOW + STOPPED).await;
    eprintln!("published {STOPPED} past a stopped member in {took:?}");
    for (r, a) in readers.drain(..).zip(&members[1..]) {
        let t = r.await.unwrap();
        assert_eq!(t.got.len(), (SLOW + STOPPED) as usize, "{}: a member that reads loses nothing", a.name());
        assert_eq!(t.duplicates, 0);
    }
    // It starts reading again once its queue has dropped (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(60);
    while slow.session_queue_drops(sid).unwrap() == 0 {
        assert!(Instant::now() < deadline, "the stopped member's queue never dropped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = read_all(slow.clone(), sid, SLOW..SLOW + STOPPED, Pace::Fast).await;
    eprintln!("stopped member: {} delivered, {} reported lost", t.got.len(), t.lost.len());
    assert_eq!(t.duplicates, 0, "each id once, as a message or as a loss");
    assert!(t.got.len() >= 16_384, "its queue was full before anything was dropped");
    assert!(!t.lost.is_empty(), "past the bound it drops");
    let lost = t.lost.len() as u64;
    assert_eq!(counter(&slow, "session_queue_dropped"), lost);
    assert_eq!(counter(&slow, "messages_lost_reported"), lost);
    assert_eq!(slow.session_queue_drops(sid).unwrap(), lost);
    // The same counters are shown with the node's (what `/metrics` and `node_stats()` read).
    let shown = slow.node().attached_counters();
    assert!(shown.contains(&("session_queue_dropped", lost)), "{shown:?}");
}
