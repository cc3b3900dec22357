//! Multicast sessions (no MLS) over real loopback gRPC: invite, group traffic, remove, and
//! recovery of lost group messages through RTX.

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use slim_bindings::app::App;
use slim_bindings::error::SlimError;
use slim_bindings::session::SessionConfig;

fn group(moderator: bool, retries: u32) -> SessionConfig {
    SessionConfig::Multicast {
        topic: name("chat"),
        moderator,
        max_retries: retries,
        timeout: Duration::from_millis(100),
        mls_enabled: false,
        liveness: None,
    }
}

/// A moderator's group that asks for a hole every 200 ms, up to 10 times.
fn recovering_group(mls: bool) -> SessionConfig {
    SessionConfig::Multicast {
        topic: name("chat"),
        moderator: true,
        max_retries: 10,
        timeout: Duration::from_millis(200),
        mls_enabled: mls,
        liveness: None,
    }
}

async fn payloads(app: &App, sid: u32, n: usize) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let (info, p) = recv(app, sid).await.expect("group message");
        out.push((info.source.strings().map(|s| s[2].clone()).unwrap_or_default(), p));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_exchange_and_remove() {
    let moderator = app("mod", "secret").await;
    let p1 = app("p1", "secret").await;
    let p2 = app("p2", "secret").await;
    let _hub = hub_with(&moderator, &[&p1, &p2]).await;

    let sid = moderator.create_session(group(true, 5)).await.unwrap();
    // Published before anyone joined: held, then sent once the first participant is in.
    moderator.publish(sid, to(&name("chat"), b"early")).await.unwrap();
    moderator.invite(sid, &name("p1")).await.unwrap().joined().await.unwrap();
    let (info, first) = recv_new(&p1).await;
    assert_eq!((info.session_id, first.as_slice()), (sid, b"early".as_slice()));
    assert_eq!(info.destination, name("chat"));
    assert_eq!(payloads(&p1, sid, 1).await, vec![("mod".to_string(), b"early".to_vec())]);
    // A participant reports the real channel with the default multicast timers.
    let expected = SessionConfig::Multicast {
        topic: name("chat"),
        moderator: false,
        max_retries: 10,
        timeout: Duration::from_secs(1),
        mls_enabled: false,
        liveness: None,
    };
    assert_eq!(p1.get_session_config(sid).unwrap(), expected);

    moderator.invite(sid, &name("p2")).await.unwrap().joined().await.unwrap();
    moderator.publish(sid, to(&name("chat"), b"m1")).await.unwrap();
    assert_eq!(payloads(&p1, sid, 1).await, vec![("mod".to_string(), b"m1".to_vec())]);
    let (p2_first, _) = recv_new(&p2).await;
    assert_eq!(p2_first.session_id, sid);

    p1.publish(sid, to(&name("chat"), b"from p1")).await.unwrap();
    assert_eq!(payloads(&moderator, sid, 1).await, vec![("p1".to_string(), b"from p1".to_vec())]);
    // p2 joined after "early": depending on timing it may also recover it (beacon + RTX).
    let mut seen = HashSet::new();
    while !(seen.contains(b"m1".as_slice()) && seen.contains(b"from p1".as_slice())) {
        let (_, p) = recv(&p2, sid).await.unwrap();
        assert!(seen.insert(p.clone()), "duplicate delivery of {p:?}");
    }
    // The publisher never gets its own message back.
    assert!(p1.try_recv_session(sid).is_none());

    // Remove p2: its session closes and group traffic no longer reaches it.
    moderator.remove(sid, &name("p2")).await.unwrap();
    let p2c = p2.clone();
    wait_until("p2's session is closed", move || {
        matches!(p2c.try_recv_session(sid), Some(Err(SlimError::SessionClosed)))
    })
    .await;
    moderator.publish(sid, to(&name("chat"), b"m2")).await.unwrap();
    assert_eq!(payloads(&p1, sid, 1).await, vec![("mod".to_string(), b"m2".to_vec())]);
    assert!(matches!(moderator.remove(sid, &name("p2")).await, Err(SlimError::Invite(_))));
    // Only the moderator invites.
    assert!(matches!(p1.invite(sid, &name("p2")).await.unwrap().joined().await, Err(SlimError::Invite(_))));
    // Deleting the moderator's session closes the group for the remaining members.
    moderator.delete_session(sid).await.unwrap();
    let p1c = p1.clone();
    wait_until("p1's session is closed by the moderator", move || {
        matches!(p1c.try_recv_session(sid), Some(Err(SlimError::SessionClosed)))
    })
    .await;
}

/// A hub with the moderator "mod" and the apps named in `direct` on it, and "p1" behind the proxy
/// `proxy` makes in front of it (given the hub's endpoint); "mod" has routes to all of them. A
/// `let Proxied { .. }` binds every field it needs alive: one left to `..` is dropped at the end
/// of the statement (a dropped proxy stops relaying).
struct Proxied {
    _hub: slim_bindings::node::Node,
    proxy: lossy_proxy::LossyProxy,
    moderator: App,
    p1: App,
    direct: Vec<App>,
}

async fn through_proxy<F>(direct: &[&str], proxy: impl FnOnce(String) -> F) -> Proxied
where
    F: std::future::Future<Output = lossy_proxy::LossyProxy>,
{
    let (hub, endpoint) = hub().await;
    let proxy = proxy(endpoint.clone()).await;
    let moderator = app("mod", "secret").await;
    let p1 = app("p1", "secret").await;
    let cm = connect(&moderator, &endpoint).await;
    connect(&p1, &proxy.endpoint).await;
    let mut apps = Vec::new();
    for agent in direct {
        let a = app(agent, "secret").await;
        connect(&a, &endpoint).await;
        apps.push(a);
    }
    for a in std::iter::once(&p1).chain(&apps) {
        wait_subscribed(&hub, &a.name()).await;
        moderator.set_route(&a.name().without_id(), cm).await.unwrap();
    }
    Proxied { _hub: hub, proxy, moderator, p1, direct: apps }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_group_messages_are_recovered_in_order() {
    let Proxied { _hub, proxy, moderator, p1, .. } =
        through_proxy(&[], |up| async move { lossy_proxy::start(&up, 100, 50, 0xC0FFEE).await }).await;

    let sid = moderator.create_session(group(true, 40)).await.unwrap();
    moderator.invite(sid, &name("p1")).await.unwrap().joined().await.unwrap();
    const N: u32 = 500;
    for i in 0..N {
        moderator.publish(sid, to(&name("chat"), &i.to_le_bytes())).await.unwrap();
    }
    let (first, _) = recv_new(&p1).await;
    assert_eq!(first.session_id, sid);
    for i in 0..N {
        let (_, p) = recv(&p1, sid).await.expect("recovered in order");
        assert_eq!(p, i.to_le_bytes());
    }
    assert!(proxy.counters.dropped.load(std::sync::atomic::Ordering::Relaxed) > 10);
}

/// The first group messages a member should get are lost on the way (as when the route to it is
/// still being set up through a mesh when the moderator starts publishing): the member learns at
/// its join where the moderator's stream starts for it, so the later messages or the beacon show
/// the gap, and every message is recovered, in order, from the first.
async fn first_group_messages_lost_on_the_way(mls: bool) {
    let Proxied { _hub, proxy, moderator, p1, .. } =
        through_proxy(&[], |up| async move { lossy_proxy::start_dropping_first_group_messages(&up, 20).await }).await;
    let sid = moderator.create_session(recovering_group(mls)).await.unwrap();
    // Published before the first member: held until one joined, then sent to it.
    moderator.publish(sid, to(&name("chat"), b"before")).await.unwrap();
    moderator.invite(sid, &name("p1")).await.unwrap().joined().await.unwrap();
    const N: u32 = 50;
    for i in 0..N {
        moderator.publish(sid, to(&name("chat"), &i.to_le_bytes())).await.unwrap();
    }
    let (first, p) = recv_new(&p1).await;
    assert_eq!((first.session_id, p.as_slice()), (sid, b"before".as_slice()));
    assert_eq!(recv(&p1, sid).await.expect("the held message").1, b"before");
    for i in 0..N {
        let (_, p) = recv(&p1, sid).await.expect("recovered in order");
        assert_eq!(p, i.to_le_bytes());
    }
    // The first group messages were dropped (MLS sends publishes queued together as one batch).
    let dropped = proxy.counters.dropped.load(std::sync::atomic::Ordering::Relaxed);
    assert!(if mls { (1..=20).contains(&dropped) } else { dropped == 20 }, "{dropped}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_group_messages_lost_on_the_way_are_recovered() {
    first_group_messages_lost_on_the_way(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_group_messages_lost_on_the_way_are_recovered_mls() {
    first_group_messages_lost_on_the_way(true).await;
}

/// A newcomer ("p1", behind a proxy that drops the first 20 group messages each way) and a member
/// invited before it ("p2") start streaming to each other once the invite is done; their first
/// messages are lost on the way, before either saw anything of the other (as when the group's
/// routes to and from a newcomer are still being set up through a mesh). The invite told each
/// where the other's stream starts, so each gap is asked for and every message recovered, in
/// order, from the first: the newcomer's, the member's, and at the moderator both.
async fn a_newcomers_first_exchange_lost_on_the_way(mls: bool) {
    let Proxied { _hub, proxy, moderator, p1, direct } =
        through_proxy(&["p2"], |up| async move { lossy_proxy::start_dropping_first_group_messages(&up, 20).await })
            .await;
    let p2 = &direct[0];
    let sid = moderator.create_session(recovering_group(mls)).await.unwrap();
    moderator.invite(sid, &name("p2")).await.unwrap().joined().await.unwrap();
    moderator.invite(sid, &name("p1")).await.unwrap().joined().await.unwrap();
    const N: u32 = 50;
    for i in 0..N {
        p2.publish(sid, to(&name("chat"), &i.to_le_bytes())).await.unwrap();
        p1.publish(sid, to(&name("chat"), &(1000 + i).to_le_bytes())).await.unwrap();
    }
    // Each side gets the other's stream whole and in order (the notice of the new session
    // carries a copy of the first message).
    for (reader, from, base) in [(&p1, "p2", 0u32), (p2, "p1", 1000)] {
        let (first, _) = recv_new(reader).await;
        assert_eq!(first.session_id, sid);
        for i in 0..N {
            let (info, p) = recv(reader, sid).await.expect("recovered in order");
            assert_eq!(
                (info.source.strings().map(|s| s[2].clone()), p),
                (Some(from.to_string()), (base + i).to_le_bytes().to_vec())
            );
        }
    }
    let mut next = std::collections::HashMap::from([("p1".to_string(), 1000u32), ("p2".to_string(), 0)]);
    for _ in 0..2 * N {
        let (info, p) = recv(&moderator, sid).await.expect("both streams reach the moderator");
        let from = info.source.strings().map(|s| s[2].clone()).unwrap_or_default();
        let expected = next.get_mut(&from).expect("from a member");
        assert_eq!(p, expected.to_le_bytes(), "from {from}");
        *expected += 1;
    }
    let dropped = proxy.counters.dropped.load(std::sync::atomic::Ordering::Relaxed);
    assert!(dropped >= 2, "something was dropped each way: {dropped}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomers_first_exchange_lost_on_the_way_is_recovered() {
    a_newcomers_first_exchange_lost_on_the_way(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomers_first_exchange_lost_on_the_way_is_recovered_mls() {
    a_newcomers_first_exchange_lost_on_the_way(true).await;
}

/// A member ("p2") streams while the moderator invites a newcomer ("p1", behind a proxy that drops
/// the first 20 group messages on their way to it): whatever p2 published after the invite
/// completed reaches p1, with everything in between from where p2's stream starts for it, in
/// order and without a gap (what reached p1 before it knew where that is was kept aside, then
/// ordered).
async fn a_stream_under_way_reaching_a_newcomer(mls: bool) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    let Proxied { _hub, proxy: _proxy, moderator, p1, direct } =
        through_proxy(&["p2"], |up| async move { lossy_proxy::start_dropping_first_group_messages(&up, 20).await })
            .await;
    let p2 = direct[0].clone();
    let sid = moderator.create_session(recovering_group(mls)).await.unwrap();
    moderator.invite(sid, &name("p2")).await.unwrap().joined().await.unwrap();
    // The moderator reads what the group sends it, as an application would (bounded by p2's
    // stream: it ends when the test ends).
    let reader = {
        let moderator = moderator.clone();
        tokio::spawn(async move {
            loop {
                if let Err(SlimError::SessionClosed) = moderator.recv_session(sid).await {
                    return;
                }
            }
        })
    };
    let (published, stop_at) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(u32::MAX)));
    let stream = {
        let (published, stop_at) = (published.clone(), stop_at.clone());
        tokio::spawn(async move {
            // Bounded: at most 200,000 messages (the test sets where to stop once p1 is in).
            for i in 0..200_000u32 {
                if i >= stop_at.load(Ordering::Acquire) {
                    return i;
                }
                p2.publish(sid, to(&name("chat"), &i.to_le_bytes())).await.unwrap();
                published.store(i + 1, Ordering::Release);
            }
            200_000
        })
    };
    wait_until("p2 is streaming", || published.load(Ordering::Acquire) >= 200).await;
    moderator.invite(sid, &name("p1")).await.unwrap().joined().await.unwrap();
    // Every message p2 publishes from `after` on was published after the invite completed (the
    // publish of the one before it may have been under way).
    let after = published.load(Ordering::Acquire) + 1;
    stop_at.store(after + 1000, Ordering::Release);
    let end = tokio::time::timeout(WAIT, stream).await.expect("the stream ends").unwrap();
    assert_eq!(end, after + 1000);
    let (first, _) = recv_new(&p1).await;
    assert_eq!(first.session_id, sid);
    let (_, p) = recv(&p1, sid).await.expect("p2's first message to p1");
    let start = u32::from_le_bytes(p.try_into().unwrap());
    assert!(start <= after, "p2's stream starts for p1 at {start}, after the invite completed at {after}");
    for i in start + 1..end {
        let (_, p) = recv(&p1, sid).await.expect("every later message, in order");
        assert_eq!(p, i.to_le_bytes());
    }
    reader.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_under_way_reaches_a_newcomer_from_its_invite_on() {
    a_stream_under_way_reaching_a_newcomer(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_under_way_reaches_a_newcomer_from_its_invite_on_mls() {
    a_stream_under_way_reaching_a_newcomer(true).await;
}

/// A member streams at its moderator faster than the moderator's application reads (a message a
/// millisecond), so the moderator's session always has something waiting, its queue full. The
/// moderator still publishes: its session task takes the app's commands between batches of what
/// arrives, not only once nothing waits, and the member gets the message while it still streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderator_whose_reader_lags_behind_a_flood_still_publishes() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let moderator = app("mod", "secret").await;
    let p2 = app("p2", "secret").await;
    let _hub = hub_with(&moderator, &[&p2]).await;
    let sid = moderator.create_session(group(true, 5)).await.unwrap();
    moderator.invite(sid, &name("p2")).await.unwrap().joined().await.unwrap();
    let reader = {
        let moderator = moderator.clone();
        tokio::spawn(async move {
            // A slow application: one message a millisecond (ends with the session, or the test).
            while !matches!(moderator.recv_session(sid).await, Err(SlimError::SessionClosed)) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let (published, stop) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicBool::new(false)));
    let stream = {
        let (published, stop, p2) = (published.clone(), stop.clone(), p2.clone());
        tokio::spawn(async move {
            // Bounded: 1,000,000 messages or 2 x WAIT, or until the test saw what it waits for.
            let deadline = tokio::time::Instant::now() + 2 * WAIT;
            for i in 0..1_000_000u32 {
                if stop.load(Ordering::Acquire) || tokio::time::Instant::now() > deadline {
                    return;
                }
                p2.publish(sid, to(&name("chat"), &i.to_le_bytes())).await.unwrap();
                published.store(i + 1, Ordering::Release);
            }
        })
    };
    // More than the moderator's session queue (16,384) and its task's backlog (4,096) hold.
    wait_until("p2 floods the moderator", || published.load(Ordering::Acquire) >= 21_000).await;
    moderator.publish(sid, to(&name("chat"), b"still here")).await.unwrap();
    let (first, p) = recv_new(&p2).await;
    assert_eq!((first.session_id, p.as_slice()), (sid, b"still here".as_slice()));
    let streaming = !stream.is_finished();
    stop.store(true, Ordering::Release);
    stream.await.unwrap();
    reader.abort();
    assert!(streaming, "the moderator's message came while p2 still streamed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mls_group_add_exchange_and_remove() {
    let moderator = app("mod", "secret").await;
    let p1 = app("p1", "secret").await;
    let p2 = app("p2", "secret").await;
    let _hub = hub_with(&moderator, &[&p1, &p2]).await;
    let cfg = SessionConfig::Multicast {
        topic: name("chat"),
        moderator: true,
        max_retries: 5,
        timeout: Duration::from_millis(500),
        mls_enabled: true,
        liveness: None,
    };
    let sid = moderator.create_session(cfg).await.unwrap();
    moderator.invite(sid, &name("p1")).await.unwrap().joined().await.unwrap();
    // The second add sends a COMMIT to p1 and must be acknowledged by it.
    moderator.invite(sid, &name("p2")).await.unwrap().joined().await.unwrap();
    assert!(matches!(p1.get_session_config(sid).unwrap(), SessionConfig::Multicast { mls_enabled: true, .. }));

    moderator.publish(sid, to(&name("chat"), b"m1")).await.unwrap();
    let (info, p) = recv_new(&p1).await;
    assert_eq!((info.session_id, p.as_slice()), (sid, b"m1".as_slice()));
    assert!(info.metadata.is_empty(), "{:?}", info.metadata);
    assert_eq!(recv_new(&p2).await.1, b"m1");
    assert_eq!(payloads(&p1, sid, 1).await, vec![("mod".to_string(), b"m1".to_vec())]);
    assert_eq!(payloads(&p2, sid, 1).await, vec![("mod".to_string(), b"m1".to_vec())]);

    p2.publish(sid, to(&name("chat"), b"from p2")).await.unwrap();
    assert_eq!(payloads(&moderator, sid, 1).await, vec![("p2".to_string(), b"from p2".to_vec())]);
    assert_eq!(payloads(&p1, sid, 1).await, vec![("p2".to_string(), b"from p2".to_vec())]);

    // Removing p1 commits a new epoch (acknowledged by both) and then p1 leaves.
    moderator.remove(sid, &name("p1")).await.unwrap();
    let p1c = p1.clone();
    wait_until("p1's session is closed", move || {
        matches!(p1c.try_recv_session(sid), Some(Err(SlimError::SessionClosed)))
    })
    .await;
    moderator.publish(sid, to(&name("chat"), b"m2")).await.unwrap();
    assert_eq!(payloads(&p2, sid, 1).await, vec![("mod".to_string(), b"m2".to_vec())]);
    assert_eq!(moderator.stats().snapshot()["mls_failures"], 0);
    assert_eq!(p1.stats().snapshot()["mls_failures"], 0);
}
