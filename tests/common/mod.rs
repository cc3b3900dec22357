//! Shared helpers for the session integration tests: a hub node on a loopback port, apps with
//! shared-secret identities, bounded waits on conditions.
#![allow(dead_code)]

pub mod lossy_proxy;
pub mod raw_peer;
pub mod shadow;

use std::sync::Arc;
use std::time::Duration;

use slim_bindings::app::App;
use slim_bindings::auth::SharedSecret;
use slim_bindings::error::SlimError;
use slim_bindings::node::{ClientConfig, Node, ServerConfig};
use slim_bindings::session::{MessageInfo, PublishRequest};
use slim_bindings::wire::Name;

/// Upper bound for any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// A standalone node serving on 127.0.0.1 with a free port; returns it and its client endpoint.
pub async fn hub() -> (Node, String) {
    let node = Node::new("hub");
    let addr = node.run_server(ServerConfig::insecure("127.0.0.1:0")).await.expect("hub serves");
    (node, format!("http://{addr}"))
}

/// A name in the test organisation.
pub fn name(agent: &str) -> Name {
    Name::new("org", "ns", agent, None)
}

/// An app named `agent` whose identity uses `secret`.
pub async fn app(agent: &str, secret: &str) -> App {
    let id = Arc::new(SharedSecret::new(agent, secret).expect("identity"));
    App::new(name(agent), id.clone(), id).await.expect("app")
}

/// Connects `app` to the node at `endpoint`.
pub async fn connect(app: &App, endpoint: &str) -> u64 {
    app.connect(ClientConfig::insecure(endpoint)).await.expect("connect")
}

/// Polls `cond` every 2 ms until it holds; panics after [`WAIT`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until `node` has a subscription for `name` (exact id) on some connection.
pub async fn wait_subscribed(node: &Node, name: &Name) {
    let node = node.clone();
    let name = name.clone();
    wait_until(&format!("subscription {name}"), move || {
        node.connection_ids().into_iter().any(|c| node.subscriptions_of(c).contains(&name))
    })
    .await;
}

/// A publish to `dest`.
pub fn to(dest: &Name, blob: &[u8]) -> PublishRequest {
    PublishRequest { dest: Some(dest.clone()), blob: blob.to_vec().into(), fanout: 1, ..Default::default() }
}

/// A reply to `info`.
pub fn reply(info: &MessageInfo, blob: &[u8]) -> PublishRequest {
    PublishRequest { reply_to: Some(info.clone()), blob: blob.to_vec().into(), fanout: 1, ..Default::default() }
}

/// Next item of session `sid`, bounded by [`WAIT`].
pub async fn recv(app: &App, sid: u32) -> Result<(MessageInfo, Vec<u8>), SlimError> {
    tokio::time::timeout(WAIT, app.recv_session(sid)).await.expect("receive within the wait bound")
}

/// Next new-session notification, bounded by [`WAIT`].
pub async fn recv_new(app: &App) -> (MessageInfo, Vec<u8>) {
    tokio::time::timeout(WAIT, app.recv_new_session())
        .await
        .expect("new session within the wait bound")
        .expect("new session")
}

/// A mesh node (docs/mesh.md) serving on a free loopback port; returns it and its client endpoint.
pub async fn mesh_node(label: &str) -> (Node, String) {
    let node = Node::new(label);
    node.enable_mesh(&slim_bindings::node::MeshConfig::default());
    let addr = node.run_server(ServerConfig::insecure("127.0.0.1:0")).await.expect("mesh node serves");
    (node, format!("http://{addr}"))
}

/// Links `from` to the node at `endpoint` (a `clients:` entry); returns the connection id.
pub async fn link(from: &Node, endpoint: &str) -> u64 {
    from.connect(ClientConfig::insecure(endpoint)).await.expect("link")
}

/// Waits until `node` can route a one-instance message to `name`.
pub async fn wait_route(node: &Node, name: &Name) {
    let node = node.clone();
    let name = name.clone();
    wait_until(&format!("a route to {name} at {}", node.node_id()), move || node.can_route(&name)).await;
}
