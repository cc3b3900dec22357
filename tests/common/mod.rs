//! Shared helpers for the integration tests: a hub node on a loopback port, apps with
//! shared-secret identities attached to it, bounded waits on conditions, raw local connections
//! ([`local`]), the `slim` binary as a process ([`slim_process`]), a lossy proxy, a raw gRPC peer and
//! a hand-driven session peer.
#![allow(dead_code)]

pub mod local;
pub mod lossy_proxy;
pub mod raw_peer;
pub mod shadow;
pub mod slim_process;

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

/// `n` apps named `<prefix>0`, `<prefix>1`, ... whose identities use the secret "secret".
pub async fn apps(prefix: &str, n: usize) -> Vec<App> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(app(&format!("{prefix}{i}"), "secret").await);
    }
    out
}

/// Connects `app` to the node at `endpoint`.
pub async fn connect(app: &App, endpoint: &str) -> u64 {
    app.connect(ClientConfig::insecure(endpoint)).await.expect("connect")
}

/// Polls `cond` every 2 ms until it holds; panics after [`WAIT`].
pub async fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    wait_until_for(what, WAIT, cond).await;
}

/// Polls `cond` every 2 ms until it holds; panics after `bound`.
pub async fn wait_until_for(what: &str, bound: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + bound;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out after {bound:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// `app`'s session-layer counter `name` (0 when it has none of that name).
pub fn counter(app: &App, name: &str) -> u64 {
    app.session_counters().into_iter().find(|(n, _)| *n == name).map_or(0, |(_, v)| v)
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

/// A hub with apps attached (see [`hub_with`]).
pub struct Hub {
    /// The hub node.
    pub node: Node,
    /// Its client endpoint.
    pub endpoint: String,
    /// The connection of the first app (the one with routes) to the hub.
    pub conn: u64,
    /// The connections of the other apps, in order.
    pub conns: Vec<u64>,
}

/// Starts a hub and connects `first` and every app of `others` to it. `first` gets a route to
/// each other app's name (any instance) through its connection, so it can open sessions to them
/// (a client calling servers, a moderator inviting members); every app's name is subscribed at
/// the hub before this returns.
pub async fn hub_with(first: &App, others: &[&App]) -> Hub {
    let (node, endpoint) = hub().await;
    let conn = connect(first, &endpoint).await;
    let mut conns = Vec::new();
    for other in others {
        conns.push(connect(other, &endpoint).await);
        first.set_route(&other.name().without_id(), conn).await.expect("route to a member");
    }
    for a in std::iter::once(first).chain(others.iter().copied()) {
        wait_subscribed(&node, &a.name()).await;
    }
    Hub { node, endpoint, conn, conns }
}

/// [`hub_with`] for two apps, each with a route to the other.
pub async fn hub_with_pair(a: &App, b: &App) -> Hub {
    let hub = hub_with(a, &[b]).await;
    b.set_route(&a.name().without_id(), hub.conns[0]).await.expect("route back");
    hub
}

/// Two apps named `a` and `b` (shared secret "secret") on a new hub, each with a route to the other.
pub async fn pair(a: &str, b: &str) -> (Hub, App, App) {
    let x = app(a, "secret").await;
    let y = app(b, "secret").await;
    let hub = hub_with_pair(&x, &y).await;
    (hub, x, y)
}

/// A publish to `dest`.
pub fn to(dest: &Name, blob: &[u8]) -> PublishRequest {
    PublishRequest { dest: Some(dest.clone()), blob: blob.to_vec().into(), fanout: 1, ..Default::default() }
}

/// A reply to `info`.
pub fn reply(info: &MessageInfo, blob: &[u8]) -> PublishRequest {
    PublishRequest {
        reply_to: Some(std::sync::Arc::new(info.clone())),
        blob: blob.to_vec().into(),
        fanout: 1,
        ..Default::default()
    }
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
