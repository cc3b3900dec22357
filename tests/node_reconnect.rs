//! Connection lifecycle over real loopback gRPC: reconnect after the server restarts, disconnect and
//! connect again, one peer dying without disturbing the others.

use crate::common;

use std::time::Duration;

use common::local::{conn_with, p2p_publish, recv_msg};
use common::wait_until_for;
use slim_bindings::node::{ClientConfig, LocalConnection, Node, ServerConfig};
use slim_bindings::wire::builders::{self, Flags};
use slim_bindings::wire::proto::data_plane_service_server::{DataPlaneService, DataPlaneServiceServer};
use slim_bindings::wire::{META_IDENTITY, Message, Name};

/// Bound of the waits whose condition the node should meet quickly.
const WAIT: Duration = Duration::from_secs(5);

fn name(t: &str, id: Option<u64>) -> Name {
    Name::new("org", "ns", t, id)
}

fn publish(src: &Name, dst: &Name, forward_to: Option<u64>, body: &[u8]) -> Message {
    p2p_publish(src, dst, Flags::one().forward_to(forward_to), body)
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// An app on `node` with its own name subscribed locally and forwarded on `conn`, plus a route for
/// `peer_type` via `conn`.
async fn app_on(node: &Node, me: &Name, conn: Option<u64>, peer: Option<&Name>) -> LocalConnection {
    let app = node.register_local();
    let mut sub = builders::subscribe(me, me, Flags::one().forward_to(conn));
    sub.metadata.insert(META_IDENTITY.into(), "secret:me".into());
    app.tx.send(sub).await.unwrap();
    if let (Some(conn), Some(peer)) = (conn, peer) {
        app.tx.send(builders::subscribe(me, peer, Flags::one().recv_from(conn))).await.unwrap();
    }
    app
}

#[tokio::test]
async fn client_reconnects_after_server_restart_and_replays_subscriptions() {
    let endpoint = format!("127.0.0.1:{}", free_port());
    let b = Node::new("b");
    b.run_server(ServerConfig::insecure(endpoint.clone())).await.unwrap();
    let name_b = name("b", Some(2));
    let mut app_b = app_on(&b, &name_b, None, None).await;

    let a = Node::new("a");
    let conn = a.connect(ClientConfig::insecure(format!("http://{endpoint}"))).await.unwrap();
    let name_a = name("a", Some(1));
    let mut app_a = app_on(&a, &name_a, Some(conn), Some(&name_b.without_id())).await;
    wait_until_for("B learns A", WAIT, || conn_with(&b, &name_a).is_some()).await;
    let first_b_side = conn_with(&b, &name_a).unwrap();

    b.stop_server(&endpoint).await.unwrap();
    wait_until_for("B forgets A", WAIT, || conn_with(&b, &name_a).is_none()).await;
    // A keeps the connection id and its route while it retries
    assert!(a.connection_ids().contains(&conn));
    assert!(a.subscriptions_of(conn).contains(&name_b.without_id()));

    b.run_server(ServerConfig::insecure(endpoint.clone())).await.unwrap();
    wait_until_for("A's subscription is replayed to the restarted server", Duration::from_secs(10), || {
        conn_with(&b, &name_a).is_some()
    })
    .await;
    let b_side = conn_with(&b, &name_a).unwrap();
    assert_ne!(b_side, first_b_side, "a new server-side connection");
    assert_eq!(a.stats().reconnects, 1);
    let mut expected = vec![conn, app_a.conn_id];
    expected.sort_unstable();
    assert_eq!(a.connection_ids(), expected);

    // traffic resumes in both directions on the same connection id
    app_a.tx.send(publish(&name_a, &name_b, None, b"after-restart")).await.unwrap();
    let got = recv_msg(&mut app_b).await;
    assert_eq!(got.blob(), b"after-restart");
    app_b.tx.send(publish(&name_b, &name_a, got.incoming_conn(), b"reply")).await.unwrap();
    let back = recv_msg(&mut app_a).await;
    assert_eq!(back.incoming_conn(), Some(conn));
    a.shutdown().await;
    b.shutdown().await;
}

async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<(usize, Message)>) -> (usize, Message) {
    tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("timed out").expect("closed")
}

/// A recording peer: ends its first stream after one message so the client must reconnect.
struct Recorder {
    seen: tokio::sync::mpsc::UnboundedSender<(usize, Message)>,
    streams: std::sync::atomic::AtomicUsize,
}

#[tonic::async_trait]
impl DataPlaneService for Recorder {
    type OpenChannelStream = tokio_stream::wrappers::ReceiverStream<Result<Message, tonic::Status>>;

    async fn open_channel(
        &self,
        request: tonic::Request<tonic::Streaming<Message>>,
    ) -> Result<tonic::Response<Self::OpenChannelStream>, tonic::Status> {
        let n = self.streams.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut inbound = request.into_inner();
        let (out_tx, out_rx) = tokio::sync::mpsc::channel(1);
        let seen = self.seen.clone();
        tokio::spawn(async move {
            let _keep_open = out_tx;
            while let Ok(Some(m)) = inbound.message().await {
                let _ = seen.send((n, m));
                if n == 0 {
                    break; // drops out_tx: the response ends, the client sees end-of-stream
                }
            }
        });
        Ok(tonic::Response::new(tokio_stream::wrappers::ReceiverStream::new(out_rx)))
    }
}

#[tokio::test]
async fn replayed_subscription_keeps_its_metadata() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let recorder = Recorder { seen: seen_tx, streams: Default::default() };
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DataPlaneServiceServer::new(recorder))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let a = Node::new("a");
    let conn = a.connect(ClientConfig::insecure(format!("http://{addr}"))).await.unwrap();
    let me = name("meta", Some(9));
    let _app = app_on(&a, &me, Some(conn), None).await;
    let (stream, first) = next(&mut seen_rx).await;
    assert_eq!(stream, 0);
    let (stream, replayed) = next(&mut seen_rx).await;
    assert_eq!(stream, 1, "the subscription is re-sent on the new stream");
    assert_eq!(replayed.message_type, first.message_type);
    assert_eq!(replayed.identity_token(), Some("secret:me"));
    let h = replayed.slim_header().unwrap();
    assert_eq!((h.recv_from, h.forward_to), (None, None));
    assert_eq!(builders::subscription_name(&replayed), Some(me));
    assert_eq!(a.stats().reconnects, 1);
    a.shutdown().await;
    server.abort();
}

#[tokio::test]
async fn disconnect_then_connect_to_the_same_endpoint_works() {
    let b = Node::new("b");
    let addr = b.run_server(ServerConfig::insecure("127.0.0.1:0")).await.unwrap();
    let a = Node::new("a");
    let cfg = ClientConfig::insecure(format!("http://{addr}"));
    let first = a.connect(cfg.clone()).await.unwrap();
    a.disconnect(first).await.unwrap();
    let second = a.connect(cfg).await.expect("second connect to the same endpoint");
    assert_ne!(first, second, "connection ids are never reused");
    let name_b = name("b", Some(2));
    let mut app_b = app_on(&b, &name_b, None, None).await;
    let name_a = name("a", Some(1));
    let _app_a = {
        let app = app_on(&a, &name_a, Some(second), Some(&name_b.without_id())).await;
        app.tx.send(publish(&name_a, &name_b, None, b"second")).await.unwrap();
        app
    };
    assert_eq!(recv_msg(&mut app_b).await.blob(), b"second");
    wait_until_for("B has only the live connection", WAIT, || b.stats().active_connections == 2).await;
    assert_eq!(a.stats().reconnects, 0, "a disconnected connection is not reconnected");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_dying_peer_does_not_disturb_the_others() {
    let b = Node::new("b");
    let addr = b.run_server(ServerConfig::insecure("127.0.0.1:0")).await.unwrap();
    let name_b = name("b", Some(2));
    let mut app_b = app_on(&b, &name_b, None, None).await;

    // the victim lives in its own runtime on its own thread; dropping the runtime kills it abruptly
    let victim_name = name("victim", Some(3));
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
    let vn = victim_name.clone();
    let victim = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let node = Node::new("victim");
            let conn = node.connect(ClientConfig::insecure(format!("http://{addr}"))).await.unwrap();
            let _app = app_on(&node, &vn, Some(conn), None).await;
            ready_tx.send(()).unwrap();
            let _ = kill_rx.await;
        });
        drop(rt);
    });

    let a = Node::new("a");
    let conn = a.connect(ClientConfig::insecure(format!("http://{addr}"))).await.unwrap();
    let name_a = name("a", Some(1));
    let mut app_a = app_on(&a, &name_a, Some(conn), Some(&name_b.without_id())).await;
    tokio::time::timeout(WAIT, ready_rx).await.unwrap().unwrap();
    wait_until_for("B knows both peers", WAIT, || {
        conn_with(&b, &victim_name).is_some() && conn_with(&b, &name_a).is_some()
    })
    .await;

    kill_tx.send(()).unwrap();
    tokio::task::spawn_blocking(move || victim.join().unwrap()).await.unwrap();
    wait_until_for("B drops the dead peer", WAIT, || conn_with(&b, &victim_name).is_none()).await;

    for i in 0..10u8 {
        app_a.tx.send(publish(&name_a, &name_b, None, &[i])).await.unwrap();
        let got = recv_msg(&mut app_b).await;
        assert_eq!(got.blob(), &[i]);
        app_b.tx.send(publish(&name_b, &name_a, got.incoming_conn(), &[i])).await.unwrap();
        assert_eq!(recv_msg(&mut app_a).await.blob(), &[i]);
    }
    assert!(conn_with(&b, &name_a).is_some());
    a.shutdown().await;
    b.shutdown().await;
}
