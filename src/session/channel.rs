//! Channel control messages shared by sticky point-to-point and multicast sessions:
//! discovery, join, leave and the route subscriptions an endpoint installs (docs/protocol.md
//! "Session messages", "Sticky handshake", "Joining the channel").

use std::collections::HashMap;

use super::context::{AppCore, Target};
use crate::wire::builders::{self, Flags, PublishSpec};
use crate::wire::payload::{JoinMessagePayload, encode_name};
use crate::wire::{self, Message, Name, SessionMessageType, SessionType};

/// Content type of the point-to-point discovery probe (as slim-bindings 0.6.0 sends it).
pub const P2P_DISCOVERY_CONTENT_TYPE: &str = "p2p_session_discovery";

/// The stateless answer any app gives to a CHANNEL_DISCOVERY_REQUEST (docs/protocol.md
/// "How a message finds its session"): source = the requested name with this app's id, so the
/// requester learns which instance answered.
pub fn discovery_reply(core: &AppCore, request: &Message) -> Option<Message> {
    let sh = request.session_header()?;
    let asked = request.resolved_destination()?;
    let requester = request.source_name()?;
    let source = asked.with_id(core.name.id());
    let session_type = SessionType::try_from(sh.session_type).unwrap_or(SessionType::SessionUnknown);
    let spec = PublishSpec {
        source: &source,
        destination: &requester,
        flags: Flags::one().forward_to(request.incoming_conn()),
        session_type,
        message_type: SessionMessageType::ChannelDiscoveryReply,
        session_id: sh.session_id,
        message_id: sh.message_id,
        original_names: false,
        content_type: "",
    };
    Some(builders::publish(&spec, Vec::new(), HashMap::new()))
}

/// The point-to-point discovery probe toward any instance of `dest`.
pub fn p2p_discovery_request(core: &AppCore, session_id: u32, message_id: u32, dest: &Name) -> Message {
    let spec = PublishSpec {
        source: &core.name,
        destination: dest,
        flags: Flags::one(),
        session_type: SessionType::SessionPointToPoint,
        message_type: SessionMessageType::ChannelDiscoveryRequest,
        session_id,
        message_id,
        original_names: true,
        content_type: P2P_DISCOVERY_CONTENT_TYPE,
    };
    builders::publish(&spec, encode_name(&core.name), HashMap::new())
}

/// SESSION_CLOSE to `target` (docs/protocol.md "Closing"): names with their strings, so the
/// other side's `PeerClosedError` can say who closed. Fanout 1, as the session's data: it follows
/// the path the data took to the instance it reaches, so it never overtakes that data (a
/// broadcast follows a mesh's shared tree, another path, and could close the session before
/// unreliable data still on its way arrived).
pub fn session_close(core: &AppCore, session_id: u32, target: &Target) -> Message {
    let spec = PublishSpec {
        source: &core.name,
        destination: &target.name,
        flags: Flags::one().forward_to(target.forward_to),
        session_type: SessionType::SessionPointToPoint,
        message_type: SessionMessageType::SessionClose,
        session_id,
        message_id: nonce(),
        original_names: true,
        content_type: "",
    };
    builders::publish(&spec, Vec::new(), HashMap::new())
}

/// CHANNEL_JOIN_REQUEST to the discovered instance (session-header destination = channel, as
/// slim-bindings 0.6.0 expects).
#[allow(clippy::too_many_arguments)]
pub fn join_request(
    core: &AppCore,
    session_type: SessionType,
    session_id: u32,
    message_id: u32,
    invitee: &Name,
    forward_to: Option<u64>,
    channel: &Name,
    mls_enabled: bool,
) -> Message {
    let payload = JoinMessagePayload { channel_name: channel.clone(), moderator_name: core.name.clone() };
    let mut msg = core.control(
        invitee,
        Flags::one().forward_to(forward_to),
        session_type,
        SessionMessageType::ChannelJoinRequest,
        session_id,
        message_id,
        payload.encode(),
    );
    builders::set_session_destination(&mut msg, channel);
    if mls_enabled {
        msg.metadata.insert(wire::META_MLS_ENABLED.to_string(), "true".to_string());
    }
    msg
}

/// A reply of `kind` to a control `request` (same session and message id), sent back through
/// the connection it came in on.
pub fn reply_to(core: &AppCore, request: &Message, kind: SessionMessageType, blob: Vec<u8>) -> Option<Message> {
    core.reply(request, kind, blob)
}

/// Local route: "send traffic for `name` out through `conn`" (`Subscribe` with `recvFrom`).
pub fn set_route(core: &AppCore, name: &Name, conn: u64) -> Message {
    builders::subscribe(&core.name, name, Flags::one().recv_from(conn))
}

/// Removes a local route (`Unsubscribe` with `recvFrom`).
pub fn remove_route(core: &AppCore, name: &Name, conn: u64) -> Message {
    builders::unsubscribe(&core.name, name, Flags::one().recv_from(conn))
}

/// A random control message id (nonce).
pub fn nonce() -> u32 {
    rand::random::<u32>()
}
