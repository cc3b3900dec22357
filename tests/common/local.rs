//! Raw local connections of a node (no app, no session layer): P2P publishes built by hand, bounded
//! receives, and where a node has a name subscribed.

use std::collections::HashMap;

use slim_bindings::node::{LocalConnection, LocalDelivery, Node};
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
