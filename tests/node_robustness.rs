//! Bad input over a raw gRPC stream: frames that are not a `Message` and messages without a header
//! are dropped and counted; the connection keeps working.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use common::{raw_peer, wait_until};
use prost::Message as _;
use slim_bindings::node::{LocalDelivery, Node, ServerConfig};
use slim_bindings::wire::builders::{self, Flags, PublishSpec};
use slim_bindings::wire::{Message, MessageType, Name, SessionMessageType, SessionType};

#[tokio::test]
async fn malformed_frames_and_headerless_messages_are_dropped_and_the_stream_survives() {
    let node = Node::new("b");
    let addr = node.run_server(ServerConfig::insecure("127.0.0.1:0")).await.unwrap();
    let mut app = node.register_local();
    let app_name = Name::new("org", "ns", "app", Some(1));
    app.tx.send(builders::subscribe(&app_name, &app_name, Flags::one())).await.unwrap();

    let (tx, mut inbound) = raw_peer::open(&format!("http://{addr}")).await;

    // field 1 with wire type 7: not protobuf
    tx.send(vec![0x0f, 0x01, 0x02]).await.unwrap();
    // a Publish without any header
    let headerless =
        Message { message_type: Some(MessageType::Publish(Box::default())), metadata: HashMap::new(), identity: None };
    tx.send(headerless.encode_to_vec()).await.unwrap();
    // an empty message (no type at all)
    tx.send(Vec::new()).await.unwrap();
    // then a valid subscription on the same stream
    let raw_name = Name::new("org", "ns", "raw", Some(7));
    tx.send(builders::subscribe(&raw_name, &raw_name, Flags::one()).encode_to_vec()).await.unwrap();

    wait_until("the valid subscription after the bad frames is applied", || {
        node.connection_ids().into_iter().any(|c| node.subscriptions_of(c).contains(&raw_name))
    })
    .await;
    let s = node.stats();
    assert_eq!(s.dropped_malformed, 1, "{s:?}");
    assert_eq!(s.dropped_invalid, 2, "{s:?}");

    // and the stream still carries traffic towards the raw peer
    let m = builders::publish(
        &PublishSpec {
            source: &app_name,
            destination: &raw_name,
            flags: Flags::one(),
            session_type: SessionType::SessionPointToPoint,
            message_type: SessionMessageType::P2PMsg,
            session_id: 3,
            message_id: 0,
            original_names: false,
            content_type: "msg",
        },
        b"still here".to_vec(),
        HashMap::new(),
    );
    app.tx.send(m).await.unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(5), inbound.message()).await.unwrap().unwrap().unwrap();
    let got = Message::decode(frame.as_slice()).unwrap();
    assert_eq!(got.blob(), b"still here");
    let h = got.slim_header().unwrap();
    assert_eq!((h.recv_from, h.forward_to, h.incoming_conn), (None, None, None), "node-local flags cleared on egress");
    assert!(!matches!(app.rx.try_recv(), Ok(LocalDelivery::Error(_))), "remote garbage is not the app's error");
    node.shutdown().await;
}

#[tokio::test]
async fn node_local_control_flags_from_a_remote_peer_are_ignored() {
    // recvFrom/forwardTo name connections of the node that reads them; a remote peer that sends
    // them could otherwise remove another connection's subscriptions or write into it directly.
    let node = Node::new("b");
    let addr = node.run_server(ServerConfig::insecure("127.0.0.1:0")).await.unwrap();
    let mut victim = node.register_local();
    let victim_name = Name::new("org", "ns", "victim", Some(1));
    victim.tx.send(builders::subscribe(&victim_name, &victim_name, Flags::one())).await.unwrap();
    let vconn = victim.conn_id;
    wait_until("the victim's subscription", || node.subscriptions_of(vconn).contains(&victim_name)).await;

    let (tx, _inbound) = raw_peer::open(&format!("http://{addr}")).await;

    let raw = Name::new("org", "ns", "raw", Some(7));
    let other = Name::new("org", "ns", "other", Some(2));
    let nobody = Name::new("org", "ns", "nobody", Some(3));
    tx.send(builders::unsubscribe(&raw, &victim_name, Flags::one().recv_from(vconn)).encode_to_vec()).await.unwrap();
    tx.send(builders::subscribe(&raw, &other, Flags::one().recv_from(vconn)).encode_to_vec()).await.unwrap();
    let injected = builders::publish(
        &PublishSpec {
            source: &raw,
            destination: &nobody,
            flags: Flags::one().forward_to(Some(vconn)),
            session_type: SessionType::SessionPointToPoint,
            message_type: SessionMessageType::P2PMsg,
            session_id: 3,
            message_id: 0,
            original_names: false,
            content_type: "msg",
        },
        b"injected".to_vec(),
        HashMap::new(),
    );
    tx.send(injected.encode_to_vec()).await.unwrap();
    // Frames of one stream are processed in order: once this lands, the ones above are done.
    tx.send(builders::subscribe(&raw, &raw, Flags::one()).encode_to_vec()).await.unwrap();
    let raw_conn = || node.connection_ids().into_iter().find(|&c| node.subscriptions_of(c).contains(&raw));
    wait_until("the raw peer's own subscription", || raw_conn().is_some()).await;

    assert_eq!(node.subscriptions_of(vconn), vec![victim_name], "the victim's subscriptions changed");
    let raw_subs = node.subscriptions_of(raw_conn().unwrap());
    assert!(raw_subs.contains(&other), "the flagged subscription belongs to its own connection: {raw_subs:?}");
    assert!(victim.rx.try_recv().is_err(), "a message was injected into the victim's connection");
    assert_eq!(node.stats().dropped_no_route, 1, "the publish was routed by name (nobody serves it)");
    node.shutdown().await;
}

#[tokio::test]
async fn an_oversized_frame_ends_only_its_stream_and_the_peer_is_told_why() {
    // gRPC cannot skip a frame over the node's limit (4 MiB): the node drops it and ends that
    // stream, with an OUT_OF_RANGE status saying why, instead of a clean end of stream. Other
    // connections are untouched, and the peer can open a new stream at once.
    let node = Node::new("b");
    let addr = node.run_server(ServerConfig::insecure("127.0.0.1:0")).await.unwrap();
    let endpoint = format!("http://{addr}");
    let (bystander_tx, _bystander_in) = raw_peer::open(&endpoint).await;
    let bystander = Name::new("org", "ns", "bystander", Some(1));
    bystander_tx.send(builders::subscribe(&bystander, &bystander, Flags::one()).encode_to_vec()).await.unwrap();

    let (tx, mut inbound) = raw_peer::open(&endpoint).await;
    tx.send(vec![0u8; slim_bindings::wire::MAX_MESSAGE_SIZE + 1]).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), inbound.message()).await.expect("the stream ends");
    let status = ended.expect_err("an error status, not a clean end of stream");
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("message too large"), "{status:?}");
    assert!(status.message().contains(&slim_bindings::wire::MAX_MESSAGE_SIZE.to_string()), "{status:?}");

    // The bystander's connection and subscription survive; a new stream from the same peer works.
    wait_until("the bystander's subscription", || {
        node.connection_ids().into_iter().any(|c| node.subscriptions_of(c).contains(&bystander))
    })
    .await;
    wait_until("the oversized stream's connection removed", || node.connection_ids().len() == 1).await;
    let (again_tx, _again_in) = raw_peer::open(&endpoint).await;
    let again = Name::new("org", "ns", "again", Some(2));
    again_tx.send(builders::subscribe(&again, &again, Flags::one()).encode_to_vec()).await.unwrap();
    wait_until("a new stream's subscription", || {
        node.connection_ids().into_iter().any(|c| node.subscriptions_of(c).contains(&again))
    })
    .await;
    node.shutdown().await;
}

#[tokio::test]
async fn a_message_between_two_remote_connections_leaves_as_it_came() {
    // A node reads a message's header to route it and changes nothing of it on the wire: it
    // forwards the bytes it received (no re-encoding), so even a field it does not know arrives.
    let node = Node::new("b");
    let addr = node.run_server(ServerConfig::insecure("127.0.0.1:0")).await.unwrap();
    let endpoint = format!("http://{addr}");
    let (a_tx, _a_in) = raw_peer::open(&endpoint).await;
    let (b_tx, mut b_in) = raw_peer::open(&endpoint).await;
    let a = Name::new("org", "ns", "a", Some(1));
    let b = Name::new("org", "ns", "b", Some(2));
    b_tx.send(builders::subscribe(&b, &b, Flags::one()).encode_to_vec()).await.unwrap();
    wait_until("b's subscription", || node.connection_ids().into_iter().any(|c| node.subscriptions_of(c).contains(&b)))
        .await;
    let msg = builders::publish(
        &PublishSpec {
            source: &a,
            destination: &b,
            flags: Flags::one(),
            session_type: SessionType::SessionPointToPoint,
            message_type: SessionMessageType::P2PMsg,
            session_id: 3,
            message_id: 9,
            original_names: true,
            content_type: "msg",
        },
        b"as it came".to_vec(),
        HashMap::from([("k".to_string(), "v".to_string())]),
    );
    let mut frame = msg.encode_to_vec();
    // Field 1000 (varint 42), unknown to this version: decoding skips it, so it reaches b only if
    // the node sends what it read.
    frame.extend_from_slice(&[0xc0, 0x3e, 42]);
    a_tx.send(frame.clone()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), b_in.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(got, frame, "forwarded byte for byte");

    // With a node-local field set the node does change the message: encoded again, field cleared.
    let mut flagged = msg.clone();
    flagged.slim_header_mut().unwrap().incoming_conn = Some(99);
    a_tx.send(flagged.encode_to_vec()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), b_in.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(Message::decode(got.as_slice()).unwrap(), msg, "incomingConn cleared on egress");
    assert_eq!(node.stats().messages_routed, 2);
    node.shutdown().await;
}
