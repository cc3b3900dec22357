//! What a node does with each message it reads: docs/protocol.md "Node routing" and
//! docs/mesh.md "Forwarding".
//!
//! One instance (`fanout == 1`): a local app first, then a connection of this node that holds the
//! name (a leaf's subscription or an explicit route), then the mesh: the first mesh node picks the
//! egress node and tags the message with it; transit nodes forward toward that node. Every
//! instance (`fanout != 1`): local and leaf subscribers, plus the shared tree's branches that lead
//! to subscribers, never back the way the message came.
//!
//! Drops, and what happens to them:
//! - invalid message, no route, closed target, for a message from a local app: reported to that
//!   app (`LocalDelivery::Error`, the session surfaces it);
//! - no route for a one-instance message from a leaf that understands notices: reported by a
//!   "no matching found" notice sent back on the leaf's link (after `NOTICE_GRACE`, unless the
//!   name appeared meanwhile and the sender retries the message: then the retry delivers it);
//! - a one-instance message in transit between mesh nodes (no route while routes change, hop
//!   limit) or whose next hop's connection closed: reported to its sender by a notice routed
//!   back by its name when the sender never sends it again (data without reliability); else
//!   recovered by the sender's retry, and counted (`super::notice` says how);
//! - an off-tree copy of an all-instance message: counted; the group's retransmission recovers it;
//! - from a leaf that does not understand notices (a 0.6.0 node): counted and logged, not
//!   reported (it could not read a notice); reliable sessions recover by retransmission.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prost::bytes::Bytes;
use tokio::sync::mpsc;
use tracing::debug;

use super::codec::Outbound;
use super::header::RouteView;
use super::link::{Ingress, LinkCounters, LinkKind};
use super::mesh::tag::{self, META_MESH, Tag, TagEntry, Target};
use super::notice::META_ROUTE_ERROR;
use super::{ConnTx, Inner, LocalDelivery, NodeError, RouteError, send_to};
use crate::wire::builders::subscription_name;
use crate::wire::{Message, MessageType, Name};

/// Reusable buffers of one connection's reader task (keeps the hot path allocation-free).
#[derive(Default)]
pub(crate) struct Scratch {
    targets: Vec<u64>,
    txs: Vec<OutLink>,
    tag: String,
}

/// One target of a message: connection, its queue, its counters, whether it is a mesh link.
type OutLink = (u64, ConnTx, Arc<LinkCounters>, bool);

/// A publish being routed: decoded, or still only its frame (a publish from a remote connection
/// that the node routes by its [`RouteView`]: see [`Inner::process_routable`]). The frame is
/// decoded only where the message is needed: for a local app, for a target that cannot take the
/// frame as it is, for a notice.
#[derive(Clone)]
enum Pending {
    Decoded(Message),
    /// The frame as received, and the connection it came from (stamped as `incomingConn` when
    /// decoded, as [`Inner::process`] does).
    Encoded(Bytes, u64),
}

impl Pending {
    /// The message. The frame of an `Encoded` passed [`RouteView::parse`], which accepts only
    /// frames prost decodes, so the error is never seen in practice (the caller counts it as
    /// malformed, as a frame that does not decode is).
    fn into_message(self) -> Result<Message, prost::DecodeError> {
        match self {
            Pending::Decoded(m) => Ok(m),
            Pending::Encoded(frame, conn) => {
                let mut m = crate::wire::quick::decode_frame(frame)?;
                if let Some(h) = m.slim_header_mut() {
                    h.incoming_conn = Some(conn);
                }
                Ok(m)
            }
        }
    }
}

/// What a publish is routed by.
struct Route {
    forward_to: Option<u64>,
    fanout: u32,
    /// The SLIM header's `error` flag.
    error: Option<bool>,
    dst: Name,
    /// The mesh tag the message carries (read only for a message from a mesh link).
    tag: Option<Tag>,
}

impl Inner {
    /// Handles one message read from a connection; `frame` is its encoding as received (remote
    /// connections), forwarded as it is where nothing on the wire changes (see [`Self::deliver`]).
    pub(crate) async fn process(&self, ing: &Ingress, mut msg: Message, frame: Option<Bytes>, scratch: &mut Scratch) {
        if let Err(e) = msg.validate() {
            self.stats.messages_received.fetch_add(1, Ordering::Relaxed);
            self.stats.dropped_invalid.fetch_add(1, Ordering::Relaxed);
            self.report(ing, msg, NodeError::InvalidMessage(e));
            return;
        }
        if ing.is_mesh() && super::mesh::is_control(&msg) {
            match super::mesh::decode_control(&msg) {
                Some(m) => self.mesh.control(ing.conn, m).await,
                None => {
                    self.stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
                    debug!(node = %self.node_id, conn = ing.conn, "undecodable mesh control message dropped");
                }
            }
            return;
        }
        // Counters count data and subscriptions, not the mesh's own control traffic.
        self.stats.messages_received.fetch_add(1, Ordering::Relaxed);
        ing.count_in();
        // The received encoding stays valid for the next hop only if this node changes nothing
        // in it: the node-local fields below must have been absent, and no trace hop is added.
        let mut frame = frame;
        if let Some(h) = msg.slim_header_mut() {
            if h.incoming_conn.is_some() || h.recv_from.is_some() || h.forward_to.is_some() {
                frame = None;
            }
            h.incoming_conn = Some(ing.conn);
            // recvFrom/forwardTo are node-local control flags: every node clears them before it
            // transmits, so on a remote connection they can only be forged. Honouring them would
            // let any peer install or remove other connections' subscriptions, or send straight
            // into another connection; the message is routed as if they were absent.
            if !ing.is_local() && (h.recv_from.is_some() || h.forward_to.is_some()) {
                h.recv_from = None;
                h.forward_to = None;
                debug!(node = %self.node_id, conn = ing.conn, "node-local control flags from a remote peer ignored");
            }
        }
        if crate::telemetry::otel::active() && matches!(msg.message_type, Some(MessageType::Publish(_))) {
            crate::telemetry::otel::hop(crate::telemetry::otel::Hop::Route, &mut msg.metadata, &self.node_id);
            frame = None;
        }
        match msg.message_type {
            Some(MessageType::Publish(_)) => self.route_publish(ing, msg, frame, scratch).await,
            Some(MessageType::Subscribe(_)) => self.process_subscription(ing, msg, true).await,
            Some(MessageType::Unsubscribe(_)) => self.process_subscription(ing, msg, false).await,
            None => {}
        }
    }

    /// Handles a publish read from a remote connection that [`RouteView::forwardable`] accepted,
    /// as [`Self::process`] handles the decoded message, without decoding it unless needed:
    /// `validate` would pass (the view checked the same fields), no node-local field is set (so
    /// the frame stays valid for the next hop), and it is no notice. A mesh control message,
    /// or any publish while tracing adds a hop to the metadata, is decoded and processed.
    pub(crate) async fn process_routable(&self, ing: &Ingress, view: RouteView, frame: Bytes, scratch: &mut Scratch) {
        let Some(h) = view.header.as_ref() else { return };
        let Some(dst) = h.destination.as_ref() else { return };
        if (ing.is_mesh() && super::mesh::is_control_destination(dst)) || crate::telemetry::otel::active() {
            match crate::wire::quick::decode_frame(frame.clone()) {
                Ok(m) => self.process(ing, m, Some(frame), scratch).await,
                Err(e) => self.malformed(ing.conn, &e),
            }
            return;
        }
        self.stats.messages_received.fetch_add(1, Ordering::Relaxed);
        ing.count_in();
        let route =
            Route { forward_to: None, fanout: h.fanout, error: h.error, dst: Name::from_proto(dst), tag: view.mesh };
        self.route(ing, Pending::Encoded(frame.clone(), ing.conn), Some(frame), route, scratch).await;
    }

    /// Counts and logs a frame that does not decode as a `Message` (not reported: the sender is
    /// another process, and the frame tells nothing about which session it belonged to).
    pub(crate) fn malformed(&self, conn: u64, e: &prost::DecodeError) {
        self.stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
        debug!(node = %self.node_id, conn, error = %e, "malformed frame dropped");
    }

    async fn route_publish(&self, ing: &Ingress, msg: Message, frame: Option<Bytes>, scratch: &mut Scratch) {
        let Some(h) = msg.slim_header() else { return };
        let (forward_to, fanout, error) = (h.forward_to, h.fanout, h.error);
        let Some(dst) = h.destination.as_ref().map(Name::from_proto) else { return };
        if error == Some(true) && msg.metadata.contains_key(META_ROUTE_ERROR) {
            self.route_notice(ing, msg).await;
            return;
        }
        let tag = if ing.is_mesh() { msg.metadata.get(META_MESH).and_then(|v| Tag::parse(v)) } else { None };
        let route = Route { forward_to, fanout, error, dst, tag };
        self.route(ing, Pending::Decoded(msg), frame, route, scratch).await;
    }

    /// Routes a publish (see the module doc); `frame` as in [`Self::deliver`].
    async fn route(&self, ing: &Ingress, msg: Pending, frame: Option<Bytes>, r: Route, scratch: &mut Scratch) {
        let Route { forward_to, fanout, error, dst, tag } = r;
        let tag = if ing.is_mesh() {
            let t = tag.unwrap_or(Tag { target: Target::Resolve, hops: 0 });
            if t.hops >= self.mesh.max_hops() {
                // Drop point: REPORTED to the sender by a notice when it never sends the message
                // again; else recovered by its retry (`notice_now`). Counted either way.
                self.mesh.stats.dropped_hop_limit.fetch_add(1, Ordering::Relaxed);
                debug!(node = %self.node_id, conn = ing.conn, %dst, hops = t.hops, "mesh hop limit: dropped");
                if fanout == 1
                    && error != Some(true)
                    && let Some(m) = self.open(ing, msg)
                {
                    self.notice_now(ing, m, dst);
                }
                return;
            }
            Some(t)
        } else {
            None
        };
        let hops = tag.map_or(0, |t| t.hops) + 1;
        scratch.txs.clear();
        scratch.targets.clear();
        let out_target;
        if let Some(fwd) = forward_to {
            out_target = Target::Resolve;
            scratch.targets.push(fwd);
            if !self.collect_targets(scratch, usize::MAX, fanout) {
                self.stats.dropped_no_route.fetch_add(1, Ordering::Relaxed);
                self.report_pending(ing, msg, NodeError::ConnectionNotFound(fwd));
                return;
            }
        } else if fanout == 1 {
            match self.pick_one(ing, &dst, tag) {
                Some((conn, t)) => {
                    out_target = t;
                    scratch.targets.push(conn);
                    self.collect_targets(scratch, usize::MAX, fanout);
                }
                None => out_target = Target::Resolve,
            }
        } else {
            out_target = Target::Tree;
            if ing.is_mesh() && !self.mesh.routes.read().is_tree_link(ing.conn) {
                // Routes are changing and the sender's tree is not ours: a copy taken here could
                // duplicate one the tree brings. Not reported; multicast retransmission recovers.
                self.mesh.stats.dropped_off_tree.fetch_add(1, Ordering::Relaxed);
                debug!(node = %self.node_id, conn = ing.conn, %dst, "multicast copy off the tree: dropped");
                return;
            }
            let _ = self.subs.read().match_all(&dst, ing.conn, &mut scratch.targets);
            let direct = scratch.targets.len();
            if self.mesh.enabled() {
                self.mesh.routes.read().tree_targets(&dst, ing.conn, &mut scratch.targets);
            }
            self.collect_targets(scratch, direct, fanout);
        }
        if scratch.txs.is_empty() {
            self.no_route(ing, msg, dst, fanout, error);
            return;
        }
        self.deliver(ing, msg, frame, scratch, tag.is_some(), Tag { target: out_target, hops }).await;
    }

    /// One connection for a one-instance message, and the mesh target it carries on a mesh link.
    fn pick_one(&self, ing: &Ingress, dst: &Name, tag: Option<Tag>) -> Option<(u64, Target)> {
        if let Some(Tag { target: Target::Node(t), .. }) = tag
            && t != self.mesh.node
            && let Some(c) = self.mesh.routes.read().hop_to(t)
            && c != ing.conn
        {
            return Some((c, Target::Node(t)));
        }
        if let Ok(c) = self.subs.read().match_one(dst, ing.conn) {
            return Some((c, Target::Resolve));
        }
        if !self.mesh.enabled() {
            return None;
        }
        self.mesh.routes.read().match_one(dst, ing.conn).map(|c| (c.conn, Target::Node(c.origin)))
    }

    /// Resolves `scratch.targets` to queues. Targets at index `direct` and beyond come from the
    /// mesh tree; before it, an all-instance message skips mesh links (the tree covers them).
    /// False when a target is not a connection (any more).
    fn collect_targets(&self, scratch: &mut Scratch, direct: usize, fanout: u32) -> bool {
        let conns = self.conns.read();
        let mut all_found = true;
        for (i, &t) in scratch.targets.iter().enumerate() {
            match conns.get(&t) {
                Some(e) => {
                    let mesh = e.meta.kind == LinkKind::Mesh;
                    if mesh && fanout != 1 && i < direct && self.mesh.enabled() {
                        continue;
                    }
                    scratch.txs.push((t, e.tx.clone(), e.counters.clone(), mesh));
                }
                None => all_found = false,
            }
        }
        all_found
    }

    /// Sends `msg` to every target in `scratch.txs` (one clone per extra target). On mesh links the
    /// message carries `out` as its mesh tag; elsewhere it carries none. `frame`, when given, is
    /// the message's encoding as received (`tagged`: from a mesh link, with the previous node's
    /// tag): the node-local fields cleared below and on the way out were absent from it (see
    /// [`Self::process`]), so with the received tag taken off (a slice: the tag entries are at
    /// its end) it is what encoding `msg` without a tag would give. A remote connection gets
    /// those bytes, a mesh link with `out`'s entry appended (docs/mesh.md, "The tag on the
    /// wire"); the message is not encoded again. A local app gets `msg`.
    ///
    /// `msg` still `Encoded` is decoded at the first target that needs the message.
    async fn deliver(
        &self,
        ing: &Ingress,
        mut msg: Pending,
        frame: Option<Bytes>,
        scratch: &mut Scratch,
        tagged: bool,
        out: Tag,
    ) {
        // (An `Encoded` one has neither: see `process_routable`.)
        if let Pending::Decoded(m) = &mut msg
            && let Some(h) = m.slim_header_mut()
        {
            h.recv_from = None;
            h.forward_to = None;
        }
        // None when the tag is not where this node puts it: then `msg` is encoded as before.
        let mut frame = if tagged { frame.and_then(|f| tag::strip(&f)) } else { frame };
        let mut entry: Option<TagEntry> = None;
        let n = scratch.txs.len();
        let mut has_tag = tagged;
        let mut msg = Some(msg);
        for (i, (target, tx, counters, mesh)) in scratch.txs.drain(..).enumerate() {
            // The last target takes the frame itself (no reference count taken and dropped).
            let raw = match &tx {
                ConnTx::Remote(_) if i + 1 == n => frame.take(),
                ConnTx::Remote(_) => frame.clone(),
                ConnTx::Local(..) => None,
            };
            let sent = match (&tx, raw) {
                (ConnTx::Remote(q), Some(raw)) => {
                    let item = if mesh {
                        Outbound::Tagged(raw, *entry.get_or_insert_with(|| TagEntry::new(&out)))
                    } else {
                        Outbound::Encoded(raw)
                    };
                    match super::local::room(q).await {
                        Some(permit) => {
                            permit.send(item);
                            Ok(())
                        }
                        // Only for reporting (to a local sender: never the case with a frame).
                        None => Err(msg.clone().unwrap_or(Pending::Decoded(Message::default()))),
                    }
                }
                _ => {
                    if let Some(Pending::Encoded(..)) = &msg {
                        match msg.take().map(Pending::into_message) {
                            Some(Ok(m)) => msg = Some(Pending::Decoded(m)),
                            Some(Err(e)) => {
                                // Never in practice (see `Pending::into_message`): counted as a
                                // malformed frame is, not reported (the sender is remote).
                                self.malformed(ing.conn, &e);
                                break;
                            }
                            None => break,
                        }
                    }
                    if let Some(Pending::Decoded(m)) = msg.as_mut() {
                        if mesh {
                            out.write(&mut scratch.tag);
                            match m.metadata.get_mut(META_MESH) {
                                Some(v) => v.clone_from(&scratch.tag),
                                None => {
                                    m.metadata.insert(META_MESH.to_string(), scratch.tag.clone());
                                }
                            }
                            has_tag = true;
                        } else if has_tag {
                            m.metadata.remove(META_MESH);
                            has_tag = false;
                        }
                    }
                    let m = if i + 1 == n { msg.take() } else { msg.clone() };
                    let Some(Pending::Decoded(m)) = m else { break };
                    send_to(&tx, m).await.map_err(Pending::Decoded)
                }
            };
            if let Err(lost) = sent {
                // Lost with the connection: reported to a local sender, else recovered by the
                // sender's retransmission (reliable sessions) and counted.
                self.stats.dropped_closed.fetch_add(1, Ordering::Relaxed);
                debug!(node = %self.node_id, conn = target, "send failed: connection closed");
                self.report_pending(ing, lost, NodeError::ConnectionClosed(target));
            } else {
                counters.messages_out.fetch_add(1, Ordering::Relaxed);
                self.stats.messages_routed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Nothing takes the message (see the module doc for who hears about it). `error`: the SLIM
    /// header's error flag.
    fn no_route(&self, ing: &Ingress, msg: Pending, dst: Name, fanout: u32, error: Option<bool>) {
        self.stats.dropped_no_route.fetch_add(1, Ordering::Relaxed);
        if ing.is_local() {
            let Some(msg) = self.open(ing, msg) else { return };
            let shown = display_destination(&msg, dst);
            self.report(ing, msg, NodeError::NoMatch(shown));
        } else if ing.is_mesh() {
            // REPORTED by a notice, or recovered by the sender's retry (`notice_now`).
            self.mesh.stats.dropped_transit_no_route.fetch_add(1, Ordering::Relaxed);
            debug!(node = %self.node_id, conn = ing.conn, %dst, "no route in transit: dropped");
            if fanout == 1
                && error != Some(true)
                && let Some(m) = self.open(ing, msg)
            {
                self.notice_now(ing, m, dst);
            }
        } else if fanout == 1 && ing.notify && error != Some(true) {
            let Some(msg) = self.open(ing, msg) else { return };
            self.schedule_notice(ing, msg, dst);
        } else {
            debug!(node = %self.node_id, conn = ing.conn, %dst, "no route for a leaf's message: dropped");
        }
    }

    /// Subscribe (`add`) or Unsubscribe, with `recvFrom` / `forwardTo` as described in
    /// docs/protocol.md "Subscriptions and routes"; names on local and leaf connections feed the mesh.
    async fn process_subscription(&self, ing: &Ingress, msg: Message, add: bool) {
        let Some(h) = msg.slim_header() else { return };
        let Some(name) = subscription_name(&msg) else { return };
        let (conn, fwd) = match (h.recv_from, h.forward_to) {
            (Some(rf), _) => (rf, None),
            (None, Some(ft)) => (ing.conn, Some(ft)),
            (None, None) => (ing.conn, None),
        };
        let source = h.source.as_ref().map(Name::from_proto);
        let (conn_is_local, conn_is_mesh) = match self.conns.read().get(&conn) {
            Some(e) => (e.is_local(), e.is_mesh()),
            None => {
                self.stats.dropped_subscription.fetch_add(1, Ordering::Relaxed);
                self.report(ing, msg, NodeError::ConnectionNotFound(conn));
                return;
            }
        };
        let result = {
            let mut subs = self.subs.write();
            let feeds_mesh = !conn_is_mesh && self.mesh.enabled();
            if add {
                if subs.add(&name, conn, conn_is_local) && feeds_mesh {
                    self.mesh.name_added(&name);
                }
                Ok(())
            } else {
                let r = subs.remove(&name, conn);
                if r.is_ok() && feeds_mesh {
                    self.mesh.name_removed(&name);
                }
                r
            }
        };
        if let Err(e) = result {
            self.stats.dropped_subscription.fetch_add(1, Ordering::Relaxed);
            self.report(ing, msg, e.into());
            return;
        }
        self.stats.subscriptions_processed.fetch_add(1, Ordering::Relaxed);
        let Some(fwd) = fwd else { return };
        let (tx, fwd_is_mesh) = match self.conns.read().get(&fwd) {
            Some(e) => (e.tx.clone(), e.is_mesh()),
            None => {
                self.stats.dropped_subscription.fetch_add(1, Ordering::Relaxed);
                self.report(ing, msg, NodeError::ConnectionNotFound(fwd));
                return;
            }
        };
        if fwd_is_mesh {
            // The mesh announces the name to that node (and to every other) already.
            return;
        }
        let mut out = msg;
        if let Some(h) = out.slim_header_mut() {
            h.recv_from = None;
            h.forward_to = None;
        }
        let record = out.clone();
        match send_to(&tx, out).await {
            Ok(()) => {
                self.stats.messages_routed.fetch_add(1, Ordering::Relaxed);
                if let Some(source) = source {
                    let mut fw = self.forwarded.lock();
                    if add {
                        fw.entry(fwd).or_default().insert((source, name), record);
                    } else if let Some(m) = fw.get_mut(&fwd) {
                        m.remove(&(source, name));
                    }
                }
            }
            Err(lost) => {
                self.stats.dropped_closed.fetch_add(1, Ordering::Relaxed);
                self.report(ing, lost, NodeError::ConnectionClosed(fwd));
            }
        }
    }

    /// The message of `p`, decoding it if needed; `None` (counted as malformed, as a frame that
    /// does not decode is) never happens in practice: see [`Pending::into_message`].
    fn open(&self, ing: &Ingress, p: Pending) -> Option<Message> {
        p.into_message().map_err(|e| self.malformed(ing.conn, &e)).ok()
    }

    /// [`Self::report`] for a message that may not be decoded yet. A remote sender that can read
    /// notices gets one when it never sends the message again (`notice_now`: REPORTED; what it
    /// retries is recovered by the retry); others only get a log line.
    fn report_pending(&self, ing: &Ingress, message: Pending, error: NodeError) {
        if ing.is_local() {
            if let Some(m) = self.open(ing, message) {
                self.report(ing, m, error);
            }
            return;
        }
        debug!(node = %self.node_id, conn = ing.conn, %error, "message dropped");
        if (ing.is_mesh() || ing.notify)
            && let Some(m) = self.open(ing, message)
            && m.slim_header().is_some_and(|h| h.fanout == 1)
            && let Some(dst) = m.destination_name()
        {
            self.notice_now(ing, m, dst);
        }
    }

    /// Hands an error back to the local app that sent `message`; remote senders only get a log line.
    pub(crate) fn report(&self, ing: &Ingress, message: Message, error: NodeError) {
        debug!(node = %self.node_id, conn = ing.conn, %error, "message dropped");
        if ing.is_local() {
            self.report_to(ing.conn, message, error);
        }
    }

    /// Offers an error to local connection `conn` without waiting (an app blocked sending must
    /// not deadlock against its own error). Its queue full: merged into the app's `Overflow`
    /// (REPORTED once the app takes it, with the others of its session counted in), and counted.
    /// Its queue closed: the app is gone, nobody to report to.
    pub(super) fn report_to(&self, conn: u64, message: Message, error: NodeError) {
        let Some(ConnTx::Local(tx, overflow)) = self.sender_of(conn) else { return };
        let report = LocalDelivery::Error(Box::new(RouteError { message, error }));
        if let Err(mpsc::error::TrySendError::Full(LocalDelivery::Error(report))) = tx.try_send(report) {
            self.stats.error_reports_deferred.fetch_add(1, Ordering::Relaxed);
            debug!(node = %self.node_id, conn, "error report deferred: app queue full");
            overflow.add(*report);
        }
    }
}

/// The destination for an error text: the routing name, with the session header's strings when they
/// describe the same name.
pub(super) fn display_destination(msg: &Message, dst: Name) -> Name {
    match msg.resolved_destination() {
        Some(n) if n == dst && n.strings().is_some() => n,
        _ => dst,
    }
}
