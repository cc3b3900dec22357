//! Raw local connections of a node (no app, no session layer): P2P publishes built by hand, bounded
//! receives, where a node has a name subscribed, and two nodes talking through a third.

use std::collections::HashMap;
use std::net::SocketAddr;

use slim_bindings::node::{ClientConfig, LocalConnection, LocalDelivery, Node};
use slim_bindings::wire::builders::{self, Flags, PublishSpec};
use slim_bindings::wire::{Message, Name, SessionMessageType, SessionType};

use super::WAIT;

/// A P2P_MSG publish from `src` to `dst` carrying `body`, with `flags` (fanout, forwardTo).
pub fn p2p_publish(src: &Name, dst: &Name, flags: Flags, body: &[u8]) -> Message {
    builders::publish(
        &PublishSpec {
            source: src,
            destination: dst,
            flags,
            session_type: SessionType::SessionPointToPoint,
            message_type: SessionMessageType::P2PMsg,
            session_id: 1,
            message_id: 0,
            original_names: true,
            content_type: "msg",
        },
        body.to_vec(),
        HashMap::new(),
    )
}

/// The next delivery on `app`, bounded by [`WAIT`].
pub async fn recv_delivery(app: &mut LocalConnection) -> LocalDelivery {
    tokio::time::timeout(WAIT, app.rx.recv()).await.expect("timed out waiting for a delivery").expect("channel closed")
}

/// The next delivery on `app`, which must be a message (not an error report).
pub async fn recv_msg(app: &mut LocalConnection) -> Message {
    match recv_delivery(app).await {
        LocalDelivery::Message(m) => m,
        LocalDelivery::Error(e) => panic!("unexpected error delivery: {e}"),
    }
}

/// The connection of `node` that has `n` subscribed, if any.
pub fn conn_with(node: &Node, n: &Name) -> Option<u64> {
    node.connection_ids().into_iter().find(|c| node.subscriptions_of(*c).contains(n))
}

/// Two nodes linked to the node at `addr`, each with a raw local app (see [`ends_through`]).
pub struct Ends {
    /// The node whose app is subscribed.
    pub a: Node,
    /// The node whose app routes toward `addr`.
    pub b: Node,
    /// `a`'s app.
    pub app_a: LocalConnection,
    /// `b`'s app.
    pub app_b: LocalConnection,
}

/// Two nodes linked to the node at `addr`: on `a`, an app subscribes `name_a` (forwarded to that
/// node); on `b`, an app named `name_b` routes each name of `routes` (any instance) to it.
pub async fn ends_through(addr: SocketAddr, name_a: &Name, name_b: &Name, routes: &[&Name]) -> Ends {
    let a = Node::new("a");
    let b = Node::new("b");
    let conn_a = a.connect(ClientConfig::insecure(format!("http://{addr}"))).await.expect("a connects");
    let conn_b = b.connect(ClientConfig::insecure(format!("http://{addr}"))).await.expect("b connects");
    let app_a = a.register_local();
    let app_b = b.register_local();
    app_a.tx.send(builders::subscribe(name_a, name_a, Flags::one().forward_to(Some(conn_a)))).await.expect("a's node");
    for n in routes {
        app_b
            .tx
            .send(builders::subscribe(name_b, &n.without_id(), Flags::one().recv_from(conn_b)))
            .await
            .expect("b's node");
    }
    Ends { a, b, app_a, app_b }
}
