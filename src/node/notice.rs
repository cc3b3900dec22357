//! Route-error notices: how a node tells the sender of a one-instance message it dropped, when
//! that sender is not one of its own apps (docs/mesh.md, "When a message cannot be delivered").
//!
//! A notice is the dropped message itself, its payload emptied, with the SLIM header's `error`
//! flag set and `SLIM_ROUTE_ERROR` (the error text) in its metadata. It travels back by the
//! sender's name: to a local app (which gets `NoRoute` on the session), to a leaf that said in its
//! hello that it reads notices, or over the mesh toward the node that has the sender (each mesh
//! node routes it on by that name, within the mesh hop limit). A 0.6.0 leaf never gets one.
//!
//! When one is sent:
//! - the first node, for a message from a leaf that it has no route for: after [`NOTICE_GRACE`]
//!   (a subscription racing the first message, or a name still propagating, gets that long); a
//!   message its sender retries is then recovered by the retry if the name appeared meanwhile,
//!   and no notice goes;
//! - a node in the mesh, for a message another mesh node sent it and it cannot take further (no
//!   route in transit, the hop limit, the next hop's connection gone), and any node for a message
//!   from a leaf whose next hop's connection went: at once, for a message its sender never sends
//!   again (see [`retried`]). What its sender retries is recovered by the retry (or reported by
//!   the sender's own timeout) and only counted.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::debug;

use super::forward::display_destination;
use super::link::{Ingress, LinkKind};
use super::mesh::tag::{META_MESH, Tag, Target};
use super::{Inner, NodeError, send_to};
use crate::wire::{Message, Name, SessionMessageType};

/// Metadata key of a route-error notice (its value is the error text).
pub(super) const META_ROUTE_ERROR: &str = "SLIM_ROUTE_ERROR";
/// How long a node waits before it tells a leaf that nobody has the name (a subscription that
/// races the first message, or a name still propagating through the mesh, gets this long).
pub(super) const NOTICE_GRACE: Duration = Duration::from_millis(100);
/// Notices waiting for their grace at once; beyond this they are sent without waiting.
const MAX_PENDING_NOTICES: usize = 1024;
/// Notices on their way (not waiting for a grace) that may wait for room on their links
/// together; beyond this a new one is shed ([`Inner::take_slot`]).
const MAX_NOTICES_IN_FLIGHT: u64 = 4096;
/// How long a notice waits for room on its link; then it is shed (a link whose peer does not
/// read must not hold every slot).
const NOTICE_SEND_BOUND: Duration = Duration::from_secs(5);

/// A notice's place among the [`MAX_NOTICES_IN_FLIGHT`]: given back when dropped (sent, shed,
/// or its task ended any other way).
struct Slot(Arc<Inner>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.mesh.stats.notices_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether the sender of `msg` sends it again until it is answered: reliable data, session
/// control, and what only confirms or repeats them (acknowledgements, heartbeats). A drop of
/// such a message is recovered by the retry, or reported by the sender's own timeout. Data of a
/// session without reliability (`P2P_MSG`) is sent once: only a notice can report its drop.
fn retried(msg: &Message) -> bool {
    msg.session_message_type() != SessionMessageType::P2PMsg
}

impl Inner {
    /// A one-instance message from a leaf that understands notices found no route here: a "no
    /// matching found" notice goes back on the leaf's link after [`NOTICE_GRACE`], unless a
    /// route for the name appeared meanwhile and the sender retries the message.
    pub(super) fn schedule_notice(&self, ing: &Ingress, msg: Message, dst: Name) {
        let Some(inner) = self.self_ref.upgrade() else { return };
        let conn = ing.conn;
        if self.pending_notices.fetch_add(1, Ordering::Relaxed) >= MAX_PENDING_NOTICES {
            self.pending_notices.fetch_sub(1, Ordering::Relaxed);
            let Some(slot) = self.take_slot(&dst) else { return };
            tokio::spawn(async move {
                inner.send_notice(conn, msg, dst).await;
                drop(slot);
            });
            return;
        }
        tokio::spawn(async move {
            tokio::time::sleep(NOTICE_GRACE).await;
            inner.pending_notices.fetch_sub(1, Ordering::Relaxed);
            let found = inner.subs.read().match_one(&dst, conn).is_ok()
                || (inner.mesh.enabled() && inner.mesh.routes.read().match_one(&dst, conn).is_some());
            if (!found || !retried(&msg))
                && let Some(slot) = inner.take_slot(&dst)
            {
                inner.send_notice(conn, msg, dst).await;
                drop(slot);
            }
        });
    }

    /// A place among the notices on their way, or `None` when [`MAX_NOTICES_IN_FLIGHT`]
    /// already wait for room. Drop point of a report, not of a message: thousands of notices
    /// already wait toward their senders (a stream of messages sent once into a name that went,
    /// with the way back as full as the way in); this one is shed and counted (`notices_shed`),
    /// and the drop it would report is then counted only.
    fn take_slot(&self, dst: &Name) -> Option<Slot> {
        let inner = self.self_ref.upgrade()?;
        let stats = &self.mesh.stats;
        if stats.notices_in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_NOTICES_IN_FLIGHT {
            stats.notices_in_flight.fetch_sub(1, Ordering::Relaxed);
            stats.notices_shed.fetch_add(1, Ordering::Relaxed);
            debug!(node = %self.node_id, %dst, "notice shed: too many waiting");
            return None;
        }
        Some(Slot(inner))
    }

    /// A one-instance message from a remote sender (a mesh node, or a leaf that understands
    /// notices) is dropped here after it was routed (see the module doc): REPORTED to its sender
    /// by a notice at once when the sender never sends it again; else recovered by the sender's
    /// retry, and only counted by the caller.
    pub(super) fn notice_now(&self, ing: &Ingress, msg: Message, dst: Name) {
        if retried(&msg) || !(ing.is_mesh() || ing.notify) {
            return;
        }
        let Some(inner) = self.self_ref.upgrade() else { return };
        let Some(slot) = self.take_slot(&dst) else { return };
        let conn = ing.conn;
        let mesh = ing.is_mesh();
        tokio::spawn(async move {
            if mesh {
                inner.forward_notice(None, notice_of(msg, dst), 0).await;
            } else {
                inner.send_notice(conn, msg, dst).await;
            }
            drop(slot);
        });
    }

    /// Hands `notice` to `tx`, waiting at most [`NOTICE_SEND_BOUND`] for room; counted as sent,
    /// or as shed when the link stayed full (the drop it reports is then counted only).
    async fn send_notice_on(&self, tx: &super::ConnTx, notice: Message) {
        match tokio::time::timeout(NOTICE_SEND_BOUND, send_to(tx, notice)).await {
            Ok(Ok(())) => {
                self.mesh.stats.notices_sent.fetch_add(1, Ordering::Relaxed);
            }
            // The link closed: it is gone with the way to the sender.
            Ok(Err(_)) => {}
            Err(_) => {
                self.mesh.stats.notices_shed.fetch_add(1, Ordering::Relaxed);
                debug!(node = %self.node_id, "notice shed: its link stayed full");
            }
        }
    }

    /// Sends the notice of `msg` on connection `conn` (the leaf it came from).
    async fn send_notice(&self, conn: u64, msg: Message, dst: Name) {
        let notice = notice_of(msg, dst);
        let Some(tx) = self.sender_of(conn) else { return };
        self.send_notice_on(&tx, notice).await;
    }

    /// A notice read from connection `ing`: on toward its sender.
    pub(super) async fn route_notice(&self, ing: &Ingress, msg: Message) {
        let hops = if ing.is_mesh() {
            msg.metadata.get(META_MESH).and_then(|v| Tag::parse(v)).map_or(0, |t| t.hops)
        } else {
            0
        };
        self.forward_notice(Some(ing.conn), msg, hops).await;
    }

    /// Takes a notice to the sender of the message it reports: the local app that sent it (as an
    /// error on its session), a leaf that understands notices, or the mesh link toward the node
    /// that has the sender's name (not back on `from`, the connection it came in on). A notice
    /// with nowhere to go is counted and logged: it reports a drop, and is not itself a message
    /// of any session.
    async fn forward_notice(&self, from: Option<u64>, mut msg: Message, hops: u32) {
        let Some(src) = msg.source_name() else { return };
        // Connection ids start at 1: `u64::MAX` excludes none.
        let from = from.unwrap_or(u64::MAX);
        msg.metadata.remove(META_MESH);
        let direct = self.subs.read().match_one(&src, from).ok();
        if let Some(conn) = direct {
            let (tx, local, notify) = match self.conns.read().get(&conn) {
                Some(e) => (e.tx.clone(), e.meta.kind == LinkKind::Local, e.meta.notify()),
                None => return,
            };
            if local {
                msg.metadata.remove(META_ROUTE_ERROR);
                if let Some(h) = msg.slim_header_mut() {
                    h.error = None;
                }
                let dst = msg.destination_name().unwrap_or_else(|| src.clone());
                let error = NodeError::NoMatch(display_destination(&msg, dst));
                self.report_to(conn, msg, error);
            } else if notify {
                self.send_notice_on(&tx, msg).await;
            }
            return;
        }
        let toward = if self.mesh.enabled() && hops < self.mesh.max_hops() {
            self.mesh.routes.read().match_one(&src, from).map(|c| c.conn)
        } else {
            None
        };
        let Some(tx) = toward.and_then(|c| self.sender_of(c)) else {
            debug!(node = %self.node_id, %src, hops, "notice for an unknown sender: dropped");
            return;
        };
        let mut tag = String::with_capacity(24);
        Tag { target: Target::Resolve, hops: hops + 1 }.write(&mut tag);
        msg.metadata.insert(META_MESH.to_string(), tag);
        self.send_notice_on(&tx, msg).await;
    }
}

/// The notice of `msg`, which was bound for `dst`: the message without its payload, with the
/// error flag and the error text (module doc).
fn notice_of(mut msg: Message, dst: Name) -> Message {
    let text = NodeError::NoMatch(display_destination(&msg, dst)).to_string();
    msg.metadata.remove(META_MESH);
    msg.metadata.insert(META_ROUTE_ERROR.to_string(), text);
    if let Some(h) = msg.slim_header_mut() {
        h.error = Some(true);
        h.incoming_conn = None;
    }
    if let Some(c) = msg.publish_mut().and_then(|p| p.msg.as_mut()) {
        c.blob = Default::default();
    }
    msg
}
