//! Builders for the messages apps and sessions send.

use std::collections::HashMap;

use super::name::Name;
use super::proto::{
    self, Content, Message, Publish, SessionHeader, SessionMessageType, SessionType, SlimHeader, Subscribe,
    Unsubscribe, message::MessageType,
};

/// SLIM-header flags of a message (docs/protocol.md "Message framing").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// 1: the node delivers to one matching connection; anything else: to all of them.
    pub fanout: u32,
    /// Subscribe only, for the app's own node: install the subscription on this connection.
    pub recv_from: Option<u64>,
    /// For the app's own node: send straight to this connection (a subscribe is also passed on there).
    pub forward_to: Option<u64>,
    /// Marks an error reply (a failed retransmission, a route-error notice).
    pub error: Option<bool>,
}

impl Flags {
    /// Deliver to one matching connection.
    pub fn one() -> Self {
        Self { fanout: 1, ..Default::default() }
    }

    /// Deliver to all matching connections with this fanout value.
    pub fn all(fanout: u32) -> Self {
        Self { fanout, ..Default::default() }
    }

    /// Sets `recvFrom`.
    pub fn recv_from(mut self, conn: u64) -> Self {
        self.recv_from = Some(conn);
        self
    }

    /// Sets `forwardTo`.
    pub fn forward_to(mut self, conn: Option<u64>) -> Self {
        self.forward_to = conn;
        self
    }

    /// Sets the `error` flag.
    pub fn error(mut self) -> Self {
        self.error = Some(true);
        self
    }
}

fn header(source: &Name, destination: &Name, flags: Flags) -> SlimHeader {
    SlimHeader {
        source: Some(source.to_proto()),
        destination: Some(destination.to_proto()),
        fanout: flags.fanout,
        recv_from: flags.recv_from,
        forward_to: flags.forward_to,
        incoming_conn: None,
        error: flags.error,
    }
}

/// A Subscribe for `name` (strings in fields 2–4, id in the header destination).
pub fn subscribe(source: &Name, name: &Name, flags: Flags) -> Message {
    let [c0, c1, c2] = name.strings_or_empty();
    Message {
        message_type: Some(MessageType::Subscribe(Box::new(Subscribe {
            header: Some(header(source, name, flags)),
            component_0: c0,
            component_1: c1,
            component_2: c2,
        }))),
        metadata: HashMap::new(),
        identity: None,
    }
}

/// An Unsubscribe for `name`, with its string fields filled (as slim-bindings 0.6.0 expects).
pub fn unsubscribe(source: &Name, name: &Name, flags: Flags) -> Message {
    let [c0, c1, c2] = name.strings_or_empty();
    Message {
        message_type: Some(MessageType::Unsubscribe(Box::new(Unsubscribe {
            header: Some(header(source, name, flags)),
            component_0: c0,
            component_1: c1,
            component_2: c2,
        }))),
        metadata: HashMap::new(),
        identity: None,
    }
}

/// Everything that describes one Publish.
#[derive(Debug, Clone)]
pub struct PublishSpec<'a> {
    /// The sender (with its instance id).
    pub source: &'a Name,
    /// Where the node routes it: an app, an app instance, or a multicast channel.
    pub destination: &'a Name,
    /// The SLIM-header flags (fanout, node-local instructions, error mark).
    pub flags: Flags,
    /// Point to point or multicast, as the session header says.
    pub session_type: SessionType,
    /// What the session layer does with it (data, ack, join, MLS, ...).
    pub message_type: SessionMessageType,
    /// The session it belongs to, the same at both ends.
    pub session_id: u32,
    /// The message's sequence number within its session and producer (or the control exchange id).
    pub message_id: u32,
    /// Put OriginalNames (strings + ids) into the session header (data messages do; control
    /// messages mostly do not).
    pub original_names: bool,
    /// The Publish's content-type string (`msg` for data; empty for most control messages).
    pub content_type: &'a str,
}

/// Builds a Publish (`blob`: a `Vec<u8>` or `Bytes`, taken without copying).
pub fn publish(
    spec: &PublishSpec<'_>,
    blob: impl Into<prost::bytes::Bytes>,
    metadata: HashMap<String, String>,
) -> Message {
    let blob = blob.into();
    let (src_on, dst_on) = if spec.original_names {
        (Some(spec.source.to_original()), Some(spec.destination.to_original()))
    } else {
        (None, None)
    };
    Message {
        message_type: Some(MessageType::Publish(Box::new(Publish {
            header: Some(header(spec.source, spec.destination, spec.flags)),
            session: Some(SessionHeader {
                session_type: spec.session_type as i32,
                session_message_type: spec.message_type as i32,
                session_id: spec.session_id,
                message_id: spec.message_id,
                source: src_on,
                destination: dst_on,
                liveness_ms: None,
            }),
            msg: Some(Content { content_type: Content::type_text(spec.content_type), blob }),
        }))),
        metadata,
        identity: None,
    }
}

/// Sets the session-header destination OriginalName (a JOIN_REQUEST carries the channel there,
/// as slim-bindings 0.6.0 expects).
pub fn set_session_destination(msg: &mut Message, name: &Name) {
    if let Some(sh) = msg.session_header_mut() {
        sh.destination = Some(name.to_original());
    }
}

/// The name a Subscribe/Unsubscribe is about: strings hashed + header destination id.
pub fn subscription_name(msg: &Message) -> Option<Name> {
    let (c0, c1, c2, hdr) = match &msg.message_type {
        Some(MessageType::Subscribe(s)) => (&s.component_0, &s.component_1, &s.component_2, s.header.as_ref()?),
        Some(MessageType::Unsubscribe(u)) => (&u.component_0, &u.component_1, &u.component_2, u.header.as_ref()?),
        _ => return None,
    };
    let dst: &proto::Name = hdr.destination.as_ref()?;
    Some(Name::from_subscription(c0, c1, c2, dst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_keeps_flags_and_strings() {
        let src = Name::new("org", "ns", "me", Some(1));
        let dst = Name::new("org", "ns", "you", Some(7));
        let m = subscribe(&src, &dst, Flags::one().recv_from(3));
        m.validate().expect("valid");
        let h = m.slim_header().expect("header");
        assert_eq!(h.recv_from, Some(3));
        assert_eq!(h.forward_to, None);
        assert_eq!(h.incoming_conn, None);
        assert_eq!(subscription_name(&m), Some(dst.clone()));
        let u = unsubscribe(&src, &dst, Flags::one().forward_to(Some(2)));
        assert_eq!(subscription_name(&u), Some(dst));
        assert_eq!(u.slim_header().and_then(|h| h.forward_to), Some(2));
    }

    #[test]
    fn publish_round_trips_through_prost() {
        use prost::Message as _;
        let src = Name::new("org", "ns", "me", Some(1));
        let dst = Name::new("org", "ns", "you", None);
        let spec = PublishSpec {
            source: &src,
            destination: &dst,
            flags: Flags::one(),
            session_type: SessionType::SessionPointToPoint,
            message_type: SessionMessageType::P2PMsg,
            session_id: 42,
            message_id: 0,
            original_names: true,
            content_type: "msg",
        };
        let m = publish(&spec, b"hi".to_vec(), HashMap::new());
        let bytes = m.encode_to_vec();
        let back = Message::decode(bytes.as_slice()).expect("decode");
        assert_eq!(back, m);
        assert_eq!(back.resolved_source(), Some(src.clone()));
        assert_eq!(back.resolved_source().and_then(|n| n.strings().cloned()), src.strings().cloned());
        assert_eq!(back.session_message_type(), SessionMessageType::P2PMsg);
        assert_eq!(back.blob(), b"hi");
    }

    #[test]
    fn validation_catches_missing_parts() {
        let mut m = Message::default();
        assert!(m.validate().is_err());
        m.message_type = Some(MessageType::Publish(Box::default()));
        assert!(m.validate().is_err());
        let src = Name::new("a", "b", "c", None);
        let mut p = publish(
            &PublishSpec {
                source: &src,
                destination: &src,
                flags: Flags::one(),
                session_type: SessionType::SessionPointToPoint,
                message_type: SessionMessageType::P2PMsg,
                session_id: 1,
                message_id: 1,
                original_names: false,
                content_type: "",
            },
            vec![],
            HashMap::new(),
        );
        p.publish_mut().expect("publish").session = None;
        assert_eq!(p.validate(), Err(crate::wire::ValidationError::MissingSessionHeader));
    }
}
