//! Node restart under a live group: the node that the moderator and every member use stops and
//! starts again on the same port while the moderator publishes. Once the apps have reconnected
//! (their clients retry and replay their subscriptions), every member has every message exactly
//! once, or a `MessageLost` for each one that is truly gone: never a silent hole, never a copy.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use slim_bindings::app::App;
use slim_bindings::error::SlimError;
use slim_bindings::node::{Node, ServerConfig};
use slim_bindings::session::SessionConfig;

const MEMBERS: usize = 3;
/// Messages published in all; the node goes down after the first third and comes back after the
/// second third has been handed over to the moderator's session.
const TOTAL: u32 = 600;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    l.local_addr().expect("local addr").port()
}

fn group(moderator: bool, mls: bool) -> SessionConfig {
    SessionConfig::Multicast {
        topic: name("restart-chat"),
        moderator,
        max_retries: 10,
        timeout: Duration::from_millis(200),
        mls_enabled: mls,
        liveness: None,
    }
}

/// What one member read: payload indexes delivered (with duplicates counted) and ids reported lost.
#[derive(Debug, Default)]
struct Tally {
    delivered: BTreeSet<u32>,
    duplicates: u32,
    lost: BTreeSet<u32>,
}

/// Reads session `sid` of `member` until every index in `0..TOTAL` is accounted for (delivered or
/// reported lost); panics if nothing comes for [`WAIT`].
async fn read_all(member: App, sid: u32) -> Tally {
    let mut t = Tally::default();
    while (t.delivered.len() + t.lost.len()) < TOTAL as usize {
        match tokio::time::timeout(WAIT, member.recv_session(sid)).await {
            Err(_) => panic!(
                "{}: stuck with {} delivered and {} reported lost of {TOTAL}",
                member.name(),
                t.delivered.len(),
                t.lost.len()
            ),
            Ok(Ok((_, p))) => {
                let i = u32::from_le_bytes(p[..4].try_into().expect("index"));
                if !t.delivered.insert(i) {
                    t.duplicates += 1;
                }
            }
            // Group message ids are the moderator's, starting at 0 with the first publish: the
            // same numbering as the payload indexes.
            Ok(Err(SlimError::MessageLost { message_id, .. })) => {
                assert!(t.lost.insert(message_id), "{}: id {message_id} reported lost twice", member.name());
            }
            Ok(Err(e)) => panic!("{}: unexpected session error {e}", member.name()),
        }
    }
    t
}

async fn restart_under_group(mls: bool) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let endpoint = format!("http://{addr}");
    let hub = Node::new("hub");
    hub.run_server(ServerConfig::insecure(addr.clone())).await.expect("hub serves");

    let moderator = app("mod", "secret").await;
    let cm = connect(&moderator, &endpoint).await;
    let mut members = Vec::new();
    for i in 0..MEMBERS {
        let m = app(&format!("m{i}"), "secret").await;
        connect(&m, &endpoint).await;
        wait_subscribed(&hub, &m.name()).await;
        moderator.set_route(&name(&format!("m{i}")), cm).await.unwrap();
        members.push(m);
    }
    let sid = moderator.create_session(group(true, mls)).await.unwrap();
    for i in 0..MEMBERS {
        moderator.invite(sid, &name(&format!("m{i}"))).await.unwrap().joined().await.unwrap();
    }
    let readers: Vec<_> = members.iter().map(|m| tokio::spawn(read_all(m.clone(), sid))).collect();

    let publish = |i: u32| {
        let moderator = moderator.clone();
        async move {
            moderator.publish(sid, to(&name("restart-chat"), &i.to_le_bytes())).await.expect("publish");
            // A steady stream, not a burst: the outage falls in the middle of it.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    for i in 0..TOTAL / 3 {
        publish(i).await;
    }
    // The node goes away (listener and every connection) while the moderator keeps publishing.
    hub.shutdown().await;
    drop(hub);
    for i in TOTAL / 3..2 * TOTAL / 3 {
        publish(i).await;
    }
    let hub = Node::new("hub-again");
    hub.run_server(ServerConfig::insecure(addr.clone())).await.expect("hub serves again on the same port");
    for app in std::iter::once(&moderator).chain(members.iter()) {
        wait_subscribed(&hub, &app.name()).await;
    }
    for i in 2 * TOTAL / 3..TOTAL {
        publish(i).await;
    }

    for (m, reader) in members.iter().zip(readers) {
        let t = tokio::time::timeout(Duration::from_secs(60), reader)
            .await
            .unwrap_or_else(|_| panic!("{} never accounted for every message", m.name()))
            .expect("reader task");
        assert_eq!(t.duplicates, 0, "{}: duplicates", m.name());
        assert!(t.delivered.is_disjoint(&t.lost), "{}: delivered and reported lost: {t:?}", m.name());
        let all: BTreeSet<u32> = t.delivered.union(&t.lost).copied().collect();
        assert_eq!(all, (0..TOTAL).collect::<BTreeSet<_>>(), "{}: silent holes", m.name());
        eprintln!("{} (mls={mls}): {} delivered, {} reported lost", m.name(), t.delivered.len(), t.lost.len());
        assert!(m.try_recv_session(sid).is_none(), "{}: more than {TOTAL} items", m.name());
    }
    let s = moderator.node().stats();
    eprintln!(
        "moderator's node during the outage (mls={mls}): dropped_closed={} dropped_no_route={} reconnects={}; \
         members' rtx/duplicates: {:?}",
        s.dropped_closed,
        s.dropped_no_route,
        s.reconnects,
        members.iter().map(|m| (counter(m, "unexpected_rtx_replies"), counter(m, "duplicates"))).collect::<Vec<_>>()
    );
    assert!(s.reconnects >= 1, "the moderator's connection never reconnected: {s:?}");
    assert!(s.dropped_closed + s.dropped_no_route > 0, "nothing went missing during the outage: {s:?}");
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_survives_a_node_restart() {
    restart_under_group(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mls_group_survives_a_node_restart() {
    restart_under_group(true).await;
}
