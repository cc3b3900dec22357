//! What a node knows about each of its connections: kind (an app in this process, a leaf peer, a
//! mesh node), direction, state, the peer's hello, and per-link message counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::mesh::Hello;

/// What is at the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// An app in this process.
    Local,
    /// A gRPC peer that does not route for others here: an app's embedded node, a 0.6.0 node.
    Leaf,
    /// A node of the mesh (both ends said so): link state flows, routes go through it.
    Mesh,
}

impl LinkKind {
    /// `local`, `leaf` or `mesh`.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::Local => "local",
            LinkKind::Leaf => "leaf",
            LinkKind::Mesh => "mesh",
        }
    }
}

/// Who opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// An app in this process.
    Local,
    /// This node dialed (a `clients:` entry or `connect`).
    Out,
    /// The peer dialed this node's server.
    In,
}

impl Direction {
    /// `local`, `out` or `in`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Local => "local",
            Direction::Out => "out",
            Direction::In => "in",
        }
    }
}

/// Messages that crossed one link.
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// Messages read from the link.
    pub messages_in: AtomicU64,
    /// Messages queued on the link.
    pub messages_out: AtomicU64,
}

/// Link facts that change when a client link reconnects.
#[derive(Debug, Clone)]
pub(crate) struct LinkMeta {
    pub kind: LinkKind,
    pub direction: Direction,
    /// False while a client link is reconnecting.
    pub up: bool,
    /// What the peer said about itself (None: it said nothing, e.g. a 0.6.0 node).
    pub hello: Option<Hello>,
    /// Bumped on every (re)connection.
    pub generation: u64,
}

impl LinkMeta {
    /// An app in this process.
    pub(crate) fn local() -> Self {
        Self { kind: LinkKind::Local, direction: Direction::Local, up: true, hello: None, generation: 0 }
    }

    /// A gRPC link: mesh when both ends take part in the mesh (and it is not a link to ourselves).
    pub(crate) fn remote(direction: Direction, hello: Option<Hello>, mesh_here: bool, me: u64) -> Self {
        let mesh = mesh_here && hello.as_ref().is_some_and(|h| h.mesh && h.node != me);
        let kind = if mesh { LinkKind::Mesh } else { LinkKind::Leaf };
        Self { kind, direction, up: true, hello, generation: 0 }
    }

    /// The peer understands route-error notices.
    pub(crate) fn notify(&self) -> bool {
        self.hello.as_ref().is_some_and(|h| h.notify)
    }
}

/// The connection a message came in on, as the forwarding path needs it.
#[derive(Debug, Clone)]
pub(crate) struct Ingress {
    pub conn: u64,
    pub kind: LinkKind,
    pub notify: bool,
    pub counters: Arc<LinkCounters>,
}

impl Ingress {
    pub(crate) fn new(conn: u64, meta: &LinkMeta, counters: Arc<LinkCounters>) -> Self {
        Self { conn, kind: meta.kind, notify: meta.notify(), counters }
    }

    pub(crate) fn is_local(&self) -> bool {
        self.kind == LinkKind::Local
    }

    pub(crate) fn is_mesh(&self) -> bool {
        self.kind == LinkKind::Mesh
    }

    /// Counts one message read from this connection.
    pub(crate) fn count_in(&self) {
        self.counters.messages_in.fetch_add(1, Ordering::Relaxed);
    }
}

/// One connection as [`Node::links`](super::Node::links) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Connection id.
    pub conn: u64,
    /// What is at the other end.
    pub kind: LinkKind,
    /// Who opened it.
    pub direction: Direction,
    /// The endpoint dialed or the peer's address (`local` for apps).
    pub peer: String,
    /// False while a client link is reconnecting.
    pub up: bool,
    /// The peer node's id, when it said.
    pub peer_node: Option<u64>,
    /// The peer node's label, when it said.
    pub peer_label: Option<String>,
    /// Messages read from the link.
    pub messages_in: u64,
    /// Messages queued on the link.
    pub messages_out: u64,
}
