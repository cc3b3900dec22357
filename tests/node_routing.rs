//! Routing between two real nodes over loopback gRPC: node A (client) ↔ node B (server), with local
//! app connections on each.

use crate::common;

use std::time::Duration;

use common::local::{conn_with, p2p_publish, recv_delivery, recv_msg};
use common::{WAIT, wait_until};
use slim_bindings::node::{ClientConfig, LocalConnection, LocalDelivery, Node, NodeError, ServerConfig};
use slim_bindings::wire::builders::{self, Flags};
use slim_bindings::wire::{Message, Name};

fn name(t: &str, id: Option<u64>) -> Name {
    Name::new("org", "ns", t, id)
}

fn publish(src: &Name, dst: &Name, fanout: u32, forward_to: Option<u64>, body: &[u8]) -> Message {
    p2p_publish(src, dst, Flags::all(fanout).forward_to(forward_to), body)
}

async fn send(app: &LocalConnection, m: Message) {
    app.tx.send(m).await.expect("node gone");
}

/// Node B serving on a free loopback port, node A connected to it.
async fn pair() -> (Node, Node, u64, std::net::SocketAddr) {
    let b = Node::new("b");
    let addr = b.run_server(ServerConfig::insecure("127.0.0.1:0")).await.expect("server");
    assert_ne!(addr.port(), 0);
    let a = Node::new("a");
    let conn = a.connect(ClientConfig::insecure(format!("http://{addr}"))).await.expect("connect");
    (a, b, conn, addr)
}

#[tokio::test]
async fn publish_both_directions_with_forward_to_and_set_route() {
    let (a, b, conn, _) = pair().await;
    let name_a = name("app-a", Some(11));
    let name_b = name("app-b", Some(22));
    let mut app_a = a.register_local();
    let mut app_b = b.register_local();
    send(&app_b, builders::subscribe(&name_b, &name_b, Flags::one())).await;
    send(&app_a, builders::subscribe(&name_a, &name_a, Flags::one())).await;
    // subscribe(name_a, conn): local + forwarded upstream
    send(&app_a, builders::subscribe(&name_a, &name_a, Flags::one().forward_to(Some(conn)))).await;
    // set_route(app-b/*, conn)
    send(&app_a, builders::subscribe(&name_a, &name_b.without_id(), Flags::one().recv_from(conn))).await;
    wait_until("B learns A's name on its server connection", || conn_with(&b, &name_a).is_some()).await;
    wait_until("A has the route", || a.subscriptions_of(conn).contains(&name_b.without_id())).await;
    let b_side = conn_with(&b, &name_a).unwrap();
    assert!(!b.subscriptions_of(b_side).contains(&name_b.without_id()), "recvFrom must not be forwarded");

    send(&app_a, publish(&name_a, &name_b, 1, None, b"ping")).await;
    let got = recv_msg(&mut app_b).await;
    assert_eq!(got.blob(), b"ping");
    let h = got.slim_header().unwrap();
    assert_eq!(h.incoming_conn, Some(b_side));
    assert_eq!(h.recv_from, None);
    assert_eq!(h.forward_to, None);
    assert_eq!(got.resolved_source(), Some(name_a.clone()));

    // reply the way publish_to does: forwardTo = incomingConn
    send(&app_b, publish(&name_b, &name_a, 1, h.incoming_conn, b"pong")).await;
    let back = recv_msg(&mut app_a).await;
    assert_eq!(back.blob(), b"pong");
    assert_eq!(back.incoming_conn(), Some(conn));
    assert_eq!(back.slim_header().unwrap().forward_to, None);

    // and by table lookup on B (A's forwarded subscription)
    send(&app_b, publish(&name_b, &name_a, 1, None, b"lookup")).await;
    assert_eq!(recv_msg(&mut app_a).await.blob(), b"lookup");

    // the unknown exact id falls back to the single route of the type (set_route without id)
    send(&app_a, publish(&name_a, &name_b.with_id(22), 1, None, b"exact")).await;
    assert_eq!(recv_msg(&mut app_b).await.blob(), b"exact");
    let s = b.stats();
    assert!(s.messages_routed >= 3, "{s:?}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn unroutable_publish_is_reported_to_the_local_sender() {
    let (a, b, conn, _) = pair().await;
    let me = name("me", Some(1));
    let mut app = a.register_local();
    let nowhere = name("nowhere", None);
    let sent = publish(&me, &nowhere, 1, None, b"lost");
    send(&app, sent.clone()).await;
    match recv_delivery(&mut app).await {
        LocalDelivery::Error(e) => {
            assert!(matches!(e.error, NodeError::NoMatch(_)));
            let text = e.to_string();
            assert!(text.contains("no matching found for"), "{text}");
            assert!(text.contains("org/ns/nowhere"), "{text}");
            assert_eq!(e.message.blob(), sent.blob());
        }
        LocalDelivery::Message(m) => panic!("unexpected message {m:?}"),
    }
    assert_eq!(a.stats().dropped_no_route, 1);

    // routed to B, where nothing matches: B only counts it, nobody is notified
    let far = name("far", None);
    send(&app, builders::subscribe(&me, &far, Flags::one().recv_from(conn))).await;
    send(&app, publish(&me, &far, 1, None, b"to-b")).await;
    wait_until("B drops the publish", || b.stats().dropped_no_route == 1).await;

    // invalid message (publish without session header) → error to the sender
    let mut bad = publish(&me, &far, 1, None, b"bad");
    bad.publish_mut().unwrap().session = None;
    send(&app, bad).await;
    match recv_delivery(&mut app).await {
        LocalDelivery::Error(e) => assert!(matches!(e.error, NodeError::InvalidMessage(_)), "{e}"),
        LocalDelivery::Message(m) => panic!("unexpected message {m:?}"),
    }
    // unknown forwardTo connection
    send(&app, publish(&me, &far, 1, Some(9999), b"x")).await;
    match recv_delivery(&mut app).await {
        LocalDelivery::Error(e) => assert!(matches!(e.error, NodeError::ConnectionNotFound(9999)), "{e}"),
        LocalDelivery::Message(m) => panic!("unexpected message {m:?}"),
    }
    assert!(app.rx.try_recv().is_err());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn fanout_one_picks_one_local_first_and_broadcast_reaches_all() {
    let (a, b, conn, _) = pair().await;
    let group = name("group", None);
    let mut remote_member = a.register_local();
    let ra = name("member-a", Some(1));
    send(&remote_member, builders::subscribe(&ra, &group, Flags::one().forward_to(Some(conn)))).await;
    let mut members = Vec::new();
    for i in 0..3u64 {
        let app = b.register_local();
        send(&app, builders::subscribe(&name("member-b", Some(i)), &group, Flags::one())).await;
        members.push(app);
    }
    let local_ids: Vec<u64> = members.iter().map(|m| m.conn_id).collect();
    let [m0, m1, m2] = members.as_mut_slice() else { unreachable!() };
    wait_until("B has all four members", || {
        local_ids.iter().all(|c| b.subscriptions_of(*c).contains(&group))
            && conn_with(&b, &group).is_some_and(|c| !local_ids.contains(&c))
    })
    .await;

    // broadcast from member 0: the two other local members AND the remote member, never the sender
    let sender = name("member-b", Some(0));
    let before = b.stats().messages_routed;
    send(m0, publish(&sender, &group, 50, None, b"all")).await;
    assert_eq!(recv_msg(m1).await.blob(), b"all");
    assert_eq!(recv_msg(m2).await.blob(), b"all");
    assert_eq!(recv_msg(&mut remote_member).await.blob(), b"all");
    wait_until("three copies routed", || b.stats().messages_routed == before + 3).await;
    assert!(m0.rx.try_recv().is_err(), "no reflection to the sender");

    // fanout 1: exactly one local member each time (local first), chosen among both candidates
    let rounds = 60;
    for i in 0..rounds {
        send(m0, publish(&sender, &group, 1, None, format!("one-{i}").as_bytes())).await;
    }
    let mut counts = [0usize; 2];
    for _ in 0..rounds {
        tokio::select! {
            m = m1.rx.recv() => { assert!(matches!(m, Some(LocalDelivery::Message(_)))); counts[0] += 1 }
            m = m2.rx.recv() => { assert!(matches!(m, Some(LocalDelivery::Message(_)))); counts[1] += 1 }
            _ = tokio::time::sleep(WAIT) => panic!("timed out after {counts:?}"),
        }
    }
    assert_eq!(counts[0] + counts[1], rounds);
    assert!(counts[0] > 0 && counts[1] > 0, "both local candidates must be used: {counts:?}");
    assert!(remote_member.rx.try_recv().is_err(), "fanout 1 prefers local subscribers");
    assert!(m0.rx.try_recv().is_err());

    // fanout 1 arriving from the remote side goes to one local member (A needs a route towards B:
    // its own subscription is on the sender's connection, which is excluded)
    send(&remote_member, builders::subscribe(&ra, &group, Flags::one().recv_from(conn))).await;
    send(&remote_member, publish(&ra, &group, 1, None, b"from-a")).await;
    let got = tokio::select! {
        m = m1.rx.recv() => m,
        m = m2.rx.recv() => m,
        m = m0.rx.recv() => m,
        _ = tokio::time::sleep(WAIT) => None,
    };
    assert!(matches!(got, Some(LocalDelivery::Message(m)) if m.blob() == b"from-a"));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn disconnect_and_dropped_apps_clean_up_their_subscriptions() {
    let (a, b, conn, _) = pair().await;
    let n = name("leaver", Some(5));
    let app = a.register_local();
    send(&app, builders::subscribe(&n, &n, Flags::one().forward_to(Some(conn)))).await;
    wait_until("B learns the name", || conn_with(&b, &n).is_some()).await;
    a.disconnect(conn).await.expect("disconnect");
    assert!(a.subscriptions_of(conn).is_empty());
    wait_until("B removes the closed connection's subscriptions", || conn_with(&b, &n).is_none()).await;
    assert!(matches!(a.disconnect(conn).await, Err(NodeError::ConnectionNotFound(_))));

    let local = b.register_local();
    let id = local.conn_id;
    send(&local, builders::subscribe(&n, &n, Flags::one())).await;
    wait_until("local subscription installed", || b.subscriptions_of(id).contains(&n)).await;
    drop(local);
    wait_until("dropped app cleaned up", || !b.connection_ids().contains(&id)).await;
    assert!(b.subscriptions_of(id).is_empty());

    // unsubscribe removes; an unknown unsubscribe is reported
    let mut app2 = b.register_local();
    send(&app2, builders::subscribe(&n, &n, Flags::one())).await;
    send(&app2, builders::unsubscribe(&n, &n, Flags::one())).await;
    send(&app2, builders::unsubscribe(&n, &n, Flags::one())).await;
    match recv_delivery(&mut app2).await {
        LocalDelivery::Error(e) => assert!(matches!(e.error, NodeError::Subscription(_)), "{e}"),
        LocalDelivery::Message(m) => panic!("unexpected {m:?}"),
    }
    assert!(b.subscriptions_of(app2.conn_id).is_empty());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn connect_to_nothing_fails_in_bounded_time_and_servers_stop() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let a = Node::new("a");
    let cfg = ClientConfig::from_json(serde_json::json!({
        "endpoint": format!("http://127.0.0.1:{port}"),
        "tls": {"insecure": true},
        "connect_timeout": "1s"
    }))
    .unwrap();
    let started = std::time::Instant::now();
    let err = a.connect(cfg).await.expect_err("nobody listens");
    assert!(matches!(err, NodeError::ConnectFailed { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());

    let b = Node::new("b");
    let endpoint = "127.0.0.1:0";
    let addr = b.run_server(ServerConfig::insecure(endpoint)).await.unwrap();
    assert!(matches!(b.run_server(ServerConfig::insecure(endpoint)).await, Err(NodeError::ServerAlreadyRunning(_))));
    let conn = a.connect(ClientConfig::insecure(format!("http://{addr}"))).await.unwrap();
    wait_until("B sees the connection", || b.stats().active_connections == 1).await;
    b.stop_server(endpoint).await.expect("stop");
    wait_until("B dropped the accepted connection", || b.stats().active_connections == 0).await;
    assert!(matches!(b.stop_server(endpoint).await, Err(NodeError::ServerNotFound(_))));
    let quick = ClientConfig::from_json(serde_json::json!({
        "endpoint": format!("http://{addr}"), "tls": {"insecure": true}, "connect_timeout": "500ms"
    }))
    .unwrap();
    assert!(a.connect(quick).await.is_err(), "server is gone");
    a.disconnect(conn).await.ok();
    a.shutdown().await;
}

/// Node A dialed to B (`conn`), a raw app on A that reads nothing, and B streaming to it until
/// A's queue to the app is full and A's reader of `conn` holds one more message, waiting for room.
struct Stuck {
    a: Node,
    b: Node,
    conn: u64,
    reader: LocalConnection,
    /// Messages A received but has not routed before the stream.
    before: u64,
    flood: tokio::task::JoinHandle<()>,
}

fn unrouted(n: &Node) -> u64 {
    let s = n.stats();
    s.messages_received - s.messages_routed
}

async fn stuck_reader() -> Stuck {
    let (a, b, conn, _) = pair().await;
    let name_a = name("slow-reader", Some(7));
    let name_b = name("streamer", Some(8));
    let reader = a.register_local();
    send(&reader, builders::subscribe(&name_a, &name_a, Flags::one().forward_to(Some(conn)))).await;
    wait_until("B learns the reader's name", || conn_with(&b, &name_a).is_some()).await;
    let before = unrouted(&a);
    let streamer = b.register_local();
    let full = reader.rx.max_capacity();
    let flood = tokio::spawn(async move {
        for i in 0..4 * full as u32 {
            let m = publish(&name_b, &name_a, 1, None, &i.to_be_bytes());
            if streamer.tx.send(m).await.is_err() {
                break;
            }
        }
    });
    wait_until("A's reader waits for room at the reader", || reader.rx.len() == full && unrouted(&a) == before + 1)
        .await;
    Stuck { a, b, conn, reader, before, flood }
}

/// A message the node has read from a connection still reaches its target when that connection
/// is closed while the message waits for room there (docs/reliability.md, "Queue policies"):
/// closing a connection stops its reader after the message, it does not drop it.
#[tokio::test]
async fn a_message_waiting_for_room_survives_its_connection_closing() {
    let Stuck { a, b, conn, mut reader, before, flood } = stuck_reader().await;
    let full = reader.rx.max_capacity();
    a.disconnect(conn).await.expect("disconnect");
    // The cancel has woken A's reader; let it run (this runtime has one thread) before any room
    // appears, so that it sees the cancel while its message still waits.
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
    assert_eq!(unrouted(&a), before + 1, "the waiting message is neither routed nor counted as dropped");
    // Everything A read arrives, in order: the queued messages and then the one that waited.
    for i in 0..=full as u32 {
        let m = recv_msg(&mut reader).await;
        assert_eq!(m.blob(), i.to_be_bytes(), "message {i}");
    }
    wait_until("A routed every message it read", || unrouted(&a) == before).await;
    flood.abort();
    a.shutdown().await;
    b.shutdown().await;
}

/// A node that stops does not wait for a target that reads nothing: the message that waited for
/// room goes with the node, and nothing of the node holds the target's queue any more.
#[tokio::test]
async fn a_stopping_node_lets_go_of_a_message_waiting_for_room() {
    let Stuck { a, b, mut reader, flood, .. } = stuck_reader().await;
    let full = reader.rx.max_capacity();
    a.shutdown().await;
    wait_until("A lets go of the reader's queue", || reader.rx.is_closed()).await;
    // What was queued before is still there to read.
    for i in 0..full as u32 {
        assert_eq!(recv_msg(&mut reader).await.blob(), i.to_be_bytes(), "message {i}");
    }
    assert!(reader.rx.recv().await.is_none());
    flood.abort();
    b.shutdown().await;
}
