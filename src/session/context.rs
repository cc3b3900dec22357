//! What every session task shares with its app: own name, identity, the sender into the
//! embedded node, the inbox, counters; plus the message builders all session kinds use.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::liveness::DispatchProgress;
use super::queue::Inbox;
use super::{MessageInfo, PublishRequest};
use crate::auth::{Provider, Verifier};
use crate::error::SlimError;
use crate::wire::builders::{self, Flags, PublishSpec};
use crate::wire::{self, Message, Name, SessionMessageType, SessionType};

/// Counters of everything the session layer drops or rejects (never silent).
#[derive(Debug, Default)]
pub struct Stats {
    /// Inbound publishes whose `SLIM_IDENTITY` was missing or rejected.
    pub identity_rejected: AtomicU64,
    /// Inbound messages that were not publishes, or were malformed.
    pub invalid: AtomicU64,
    /// Publishes for unknown sessions that do not create one (late ACKs, replies, ...).
    pub unknown_session: AtomicU64,
    /// Inbound messages dropped because a session task's queue was full.
    pub session_backlog: AtomicU64,
    /// Messages from a source that is not the pinned peer.
    pub wrong_peer: AtomicU64,
    /// Duplicate reliable messages (acknowledged again, not delivered).
    pub duplicates: AtomicU64,
    /// Reliable messages too far ahead of the receive window.
    pub out_of_window: AtomicU64,
    /// ACKs for ids that are not waiting for one.
    pub unknown_acks: AtomicU64,
    /// RTX requests for ids no longer buffered (answered with the error flag).
    pub rtx_unavailable: AtomicU64,
    /// RTX replies nobody asked for.
    pub unexpected_rtx_replies: AtomicU64,
    /// Route errors for messages without a live session.
    pub orphan_route_errors: AtomicU64,
    /// Control messages of a kind the session does not handle.
    pub unhandled_control: AtomicU64,
    /// Messages addressed to another instance of this app's name (a node's fallback routing).
    pub misdirected: AtomicU64,
    /// MLS messages that could not be applied or decrypted.
    pub mls_failures: AtomicU64,
    /// Outgoing messages not sent because this app's own identity token could not be produced
    /// (expired or unreadable token file).
    pub identity_send_refused: AtomicU64,
    /// Publishes a deleted session's task still held when the delete stopped waiting for them
    /// (past `layer::DELETE_LINGER`: a peer that no longer acknowledges, a discovery nobody
    /// answers); a `publish_many` batch not yet taken by the task counts once. Also logged.
    pub delete_discarded: AtomicU64,
    /// Reliable data delivered in order by the dispatcher itself, the session task having lent it
    /// the stream (`session::inbound`; not a drop: shows the hand-over at work).
    pub dispatcher_deliveries: AtomicU64,
}

impl Stats {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot by name (for tests and diagnostics).
    pub fn snapshot(&self) -> HashMap<&'static str, u64> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        HashMap::from([
            ("identity_rejected", get(&self.identity_rejected)),
            ("invalid", get(&self.invalid)),
            ("unknown_session", get(&self.unknown_session)),
            ("session_backlog", get(&self.session_backlog)),
            ("wrong_peer", get(&self.wrong_peer)),
            ("duplicates", get(&self.duplicates)),
            ("out_of_window", get(&self.out_of_window)),
            ("unknown_acks", get(&self.unknown_acks)),
            ("rtx_unavailable", get(&self.rtx_unavailable)),
            ("unexpected_rtx_replies", get(&self.unexpected_rtx_replies)),
            ("orphan_route_errors", get(&self.orphan_route_errors)),
            ("unhandled_control", get(&self.unhandled_control)),
            ("misdirected", get(&self.misdirected)),
            ("mls_failures", get(&self.mls_failures)),
            ("identity_send_refused", get(&self.identity_send_refused)),
            ("session_delete_discarded", get(&self.delete_discarded)),
            ("dispatcher_deliveries", get(&self.dispatcher_deliveries)),
        ])
    }
}

/// App-wide state a session needs. Shared (`Arc`) by the app, the dispatcher and every session task.
#[derive(Debug)]
pub struct AppCore {
    /// This app's name with its instance id.
    pub name: Name,
    /// Makes `SLIM_IDENTITY` tokens.
    pub provider: Provider,
    /// Checks peers' tokens.
    pub verifier: Verifier,
    /// Into the embedded node (the app's local connection).
    pub node_tx: mpsc::Sender<Message>,
    /// Delivery queues the application reads.
    pub inbox: Arc<Inbox>,
    /// Drop/reject counters.
    pub stats: Stats,
    /// Cancelled when the last `App` handle goes away.
    pub shutdown: CancellationToken,
    /// How far the dispatcher got (read by point-to-point heartbeat tasks).
    pub dispatch: DispatchProgress,
}

impl AppCore {
    /// Attaches this app's identity token ([`Message::identity`]: shared, not copied per message).
    pub fn stamp_identity(&self, msg: &mut Message) -> Result<(), SlimError> {
        msg.identity = Some(self.provider.get_token_text()?);
        if !msg.metadata.is_empty() {
            // The token attached replaces any the map holds: one entry on the wire, written
            // before the map's other entries (src/wire/envelope.rs, `encode_raw`).
            msg.metadata.remove(wire::META_IDENTITY);
        }
        Ok(())
    }

    /// Stamps the identity and hands `msg` to the embedded node (waits if the node is busy).
    pub async fn send(&self, mut msg: Message) -> Result<(), SlimError> {
        self.stamp_identity(&mut msg)?;
        let permit = crate::node::local::room(&self.node_tx).await.ok_or(SlimError::Closed)?;
        permit.send(msg);
        Ok(())
    }

    /// The answer `kind` to `request`: to its source, through the connection it came in on, with
    /// its session and message ids; `None` when `request` has no session header or source.
    pub fn reply(&self, request: &Message, kind: SessionMessageType, blob: Vec<u8>) -> Option<Message> {
        let sh = request.session_header()?;
        let requester = request.source_name()?;
        let session_type = SessionType::try_from(sh.session_type).unwrap_or(SessionType::SessionUnknown);
        Some(self.control(
            &requester,
            Flags::one().forward_to(request.incoming_conn()),
            session_type,
            kind,
            sh.session_id,
            sh.message_id,
            blob,
        ))
    }

    /// Builds a control publish from this app (no OriginalNames, content type "").
    #[allow(clippy::too_many_arguments)]
    pub fn control(
        &self,
        destination: &Name,
        flags: Flags,
        session_type: SessionType,
        message_type: SessionMessageType,
        session_id: u32,
        message_id: u32,
        blob: Vec<u8>,
    ) -> Message {
        let spec = PublishSpec {
            source: &self.name,
            destination,
            flags,
            session_type,
            message_type,
            session_id,
            message_id,
            original_names: false,
            content_type: "",
        };
        builders::publish(&spec, blob, HashMap::new())
    }
}

/// Where a publish goes: its destination name and, for replies or pinned peers, the connection
/// that bypasses the node's lookup.
#[derive(Debug, Clone)]
pub struct Target {
    /// SLIM-header destination.
    pub name: Name,
    /// `forwardTo`.
    pub forward_to: Option<u64>,
}

impl Target {
    /// Resolves `dest` / `reply_to` of a publish request.
    pub fn of(req: &PublishRequest) -> Result<Target, SlimError> {
        if let Some(name) = &req.dest {
            return Ok(Target { name: name.clone(), forward_to: None });
        }
        match &req.reply_to {
            Some(info) => Ok(Target { name: info.source.clone(), forward_to: info.input_connection }),
            None => Err(SlimError::Config("no destination name specified".into())),
        }
    }
}

/// Builds an application data publish (OriginalNames included so 0.6.0 peers see the strings).
#[allow(clippy::too_many_arguments)]
pub fn data_message(
    source: &Name,
    target: &Target,
    fanout: u32,
    session_type: SessionType,
    message_type: SessionMessageType,
    session_id: u32,
    message_id: u32,
    req: PublishRequest,
) -> Message {
    let ids = (session_type, message_type, session_id, message_id);
    data_message_of(source, target, fanout, ids, req.blob, req.payload_type.as_deref(), req.metadata)
}

/// [`data_message`] from the parts of a request (`ids`: session type, message type, session id,
/// message id): what `publish_many` sends, without a request built per message.
pub fn data_message_of(
    source: &Name,
    target: &Target,
    fanout: u32,
    ids: (SessionType, SessionMessageType, u32, u32),
    blob: super::Bytes,
    payload_type: Option<&str>,
    metadata: Option<HashMap<String, String>>,
) -> Message {
    let (session_type, message_type, session_id, message_id) = ids;
    let spec = PublishSpec {
        source,
        destination: &target.name,
        flags: Flags { fanout, recv_from: None, forward_to: target.forward_to, error: None },
        session_type,
        message_type,
        session_id,
        message_id,
        original_names: true,
        content_type: payload_type.unwrap_or("msg"),
    };
    // No map allocated when the caller gives none: the identity token is stamped apart from it.
    let metadata = metadata.unwrap_or_default();
    let mut msg = builders::publish(&spec, blob, metadata);
    if crate::telemetry::otel::active() {
        crate::telemetry::otel::hop(crate::telemetry::otel::Hop::Publish, &mut msg.metadata, "");
    }
    msg
}

/// Turns a received publish into what the application sees, without copying the payload.
/// Protocol metadata keys are removed. `last` holds the source and destination names of the
/// session's previous delivery: a message between the same two names (a stream's every message)
/// shares them instead of allocating its own (two allocations and frees per message fewer on a
/// receiving app, benches/README.md).
pub fn into_delivery(session_id: u32, msg: Message, last: &mut Option<(Name, Name)>) -> (MessageInfo, super::Bytes) {
    let input_connection = msg.incoming_conn();
    let mut metadata = msg.metadata;
    if crate::telemetry::otel::active() {
        crate::telemetry::otel::hop(crate::telemetry::otel::Hop::Receive, &mut metadata, "");
    }
    metadata.retain(|k, _| !wire::INTERNAL_METADATA_KEYS.contains(&k.as_str()));
    // Empty names only where the message has none (a name built from strings is hashed and
    // allocated: two per message here would be wasted on every message that has both).
    let (mut source, mut destination) = (None, None);
    let mut payload_type = wire::original::Text::default();
    let mut blob = super::Bytes::new();
    let mut message_id = 0;
    if let Some(wire::proto::message::MessageType::Publish(p)) = msg.message_type {
        let sh = p.session.unwrap_or_default();
        message_id = sh.message_id;
        if let Some(h) = p.header {
            let (last_source, last_destination) = match last.as_ref() {
                Some((s, d)) => (Some(s), Some(d)),
                None => (None, None),
            };
            let s = h.source.map_or_else(empty_name, |s| shared_or_new(&s, sh.source, last_source));
            let d = h.destination.map_or_else(empty_name, |d| shared_or_new(&d, sh.destination, last_destination));
            *last = Some((s.clone(), d.clone()));
            (source, destination) = (Some(s), Some(d));
        }
        if let Some(c) = p.msg {
            // A copy only for a type other than the usual ones (not a slice of the frame: an info
            // kept by the application would keep the whole frame alive).
            payload_type = wire::Content::type_text(&c.content_type);
            blob = c.blob;
        }
    }
    let (source, destination) = (source.unwrap_or_else(empty_name), destination.unwrap_or_else(empty_name));
    let info = MessageInfo { session_id, source, destination, payload_type, metadata, input_connection, message_id };
    (info, blob)
}

/// The name a delivery shows for one its message does not carry.
fn empty_name() -> Name {
    Name::new("", "", "", None)
}

/// [`with_strings`], or a clone of `last` (a shared handle) when it is the same name with the same
/// strings.
fn shared_or_new(n: &wire::proto::Name, original: Option<wire::OriginalName>, last: Option<&Name>) -> Name {
    if let Some(l) = last
        && l.components() == [n.component_0, n.component_1, n.component_2, n.component_3]
        && match (l.strings(), &original) {
            (Some([a, b, c]), Some(o)) => {
                let [oa, ob, oc] = o.texts();
                same_text(a, oa) && same_text(b, ob) && same_text(c, oc)
            }
            (None, None) => true,
            _ => false,
        }
    {
        return l.clone();
    }
    with_strings(n, original)
}

/// `a == b`, without comparing the bytes of two empty strings. An empty string's pointer is
/// dangling (no allocation), and the C library's compare of short strings reads them with a
/// masked load that the CPU handles slowly (a fault-suppression assist) on an unmapped address,
/// even for zero bytes: with the empty destination strings of a sticky session's every message
/// (its peer is pinned by its numeric name), that was 6.5% of a receiving app's CPU
/// (benches/README.md).
fn same_text(a: &str, b: &str) -> bool {
    a.len() == b.len() && (a.is_empty() || a == b)
}

/// The source of a publish with the strings its session header carries (when it does).
pub(super) fn source_with_strings(msg: &Message) -> Option<Name> {
    let Some(wire::proto::message::MessageType::Publish(p)) = &msg.message_type else { return None };
    let original = p.session.as_ref().and_then(|s| s.source.clone());
    p.header.as_ref()?.source.as_ref().map(|n| with_strings(n, original))
}

/// The header's integer name, carrying the OriginalName strings when present (no re-hashing).
fn with_strings(n: &wire::proto::Name, original: Option<wire::OriginalName>) -> Name {
    let comps = [n.component_0, n.component_1, n.component_2, n.component_3];
    match original {
        Some(o) => Name::from_parts(comps, Some(o.texts().each_ref().map(|t| t.to_string()))),
        None => Name::from_components(comps),
    }
}

/// Refuses a publish no node would carry (`wire::MAX_PAYLOAD_SIZE`): reported to the caller, never
/// sent. A node ends a connection that delivers a frame above `wire::MAX_MESSAGE_SIZE`, which would
/// cost every other session on it its messages in flight.
pub(super) fn check_size(req: &PublishRequest) -> Result<(), SlimError> {
    check_len(req.blob.len() + metadata_size(req))
}

/// Bytes of a request's user metadata (keys and values).
pub(super) fn metadata_size(req: &PublishRequest) -> usize {
    req.metadata.as_ref().map_or(0, |m| m.iter().map(|(k, v)| k.len() + v.len()).sum())
}

/// [`check_size`] of a payload plus metadata of `size` bytes.
pub(super) fn check_len(size: usize) -> Result<(), SlimError> {
    if size > wire::MAX_PAYLOAD_SIZE {
        return Err(SlimError::MessageTooLarge { size, limit: wire::MAX_PAYLOAD_SIZE });
    }
    Ok(())
}
