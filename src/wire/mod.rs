//! The wire: generated `dataplane.proto.v1` types, names, control payloads, and message builders.

pub mod builders;
pub mod name;
pub mod payload;

/// Generated protobuf types and the gRPC service (`dataplane.proto.v1`).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("dataplane.proto.v1");
}

pub use name::Name;
pub use proto::{
    Content, Message, OriginalName, Publish, SessionHeader, SessionMessageType, SessionType, SlimHeader, Subscribe,
    Unsubscribe,
};

/// Metadata key carrying the sender's identity token on every message an app emits.
pub const META_IDENTITY: &str = "SLIM_IDENTITY";
/// Metadata key set on CHANNEL_JOIN_REQUEST when the session uses MLS.
pub const META_MLS_ENABLED: &str = "MLS_ENABLED";
/// Metadata key on CHANNEL_MLS_WELCOME: MLS sequence number of the commit that added the member.
pub const META_MLS_INIT_COMMIT_ID: &str = "MLS_INIT_COMMIT_ID";
/// Metadata key on a Publish whose payload is MLS-encrypted.
pub const META_MLS_ENCRYPTED: &str = "MLS_ENCRYPTED";
/// Metadata key on channel Subscribe/Unsubscribe messages.
pub const META_CHANNEL_SUBSCRIPTION: &str = "CHANNEL_SUBSCRIPTION";
/// Metadata key on the moderator's first channel Subscribe.
pub const META_CHANNEL_CREATION: &str = "CHANNEL_CREATION";
/// Metadata keys of slim-bindings 0.6.0's group controller: never sent here, only kept out of
/// user-visible metadata (docs/protocol.md "Metadata keys").
pub const META_IS_MODERATOR: &str = "IS_MODERATOR";
/// See [`META_IS_MODERATOR`].
pub const META_PARTICIPANT_NAME: &str = "PARTICIPANT_NAME";
/// See [`META_IS_MODERATOR`].
pub const META_DELETE_GROUP: &str = "DELETE_GROUP";

/// Keys that belong to the protocol and must never appear in user-visible metadata.
pub const INTERNAL_METADATA_KEYS: &[&str] = &[
    META_IDENTITY,
    META_MLS_ENABLED,
    META_MLS_INIT_COMMIT_ID,
    META_MLS_ENCRYPTED,
    META_CHANNEL_SUBSCRIPTION,
    META_CHANNEL_CREATION,
    META_IS_MODERATOR,
    META_PARTICIPANT_NAME,
    META_DELETE_GROUP,
];

/// Fanout that asks a node for exactly one matching connection.
pub const FANOUT_ONE: u32 = 1;
/// Fanout used by multicast data and beacons (reference value).
pub const FANOUT_MULTICAST: u32 = 50;
/// Fanout used by channel control broadcasts (reference value).
pub const FANOUT_CHANNEL_BROADCAST: u32 = 256;

/// Largest encoded `Message` a peer accepts (tonic's default decoding limit).
pub const MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// Why a received message is not valid (docs/protocol.md "Message framing").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("message has no type")]
    MissingType,
    #[error("message has no SLIM header")]
    MissingHeader,
    #[error("SLIM header has no source")]
    MissingSource,
    #[error("SLIM header has no destination")]
    MissingDestination,
    #[error("publish has no session header")]
    MissingSessionHeader,
}

/// The `messageType` oneof, re-exported under a short name.
pub use proto::message::MessageType;

impl Message {
    /// The SLIM header of whichever variant this message is.
    pub fn slim_header(&self) -> Option<&SlimHeader> {
        match &self.message_type {
            Some(MessageType::Subscribe(s)) => s.header.as_ref(),
            Some(MessageType::Unsubscribe(u)) => u.header.as_ref(),
            Some(MessageType::Publish(p)) => p.header.as_ref(),
            None => None,
        }
    }

    /// Mutable access to the SLIM header.
    pub fn slim_header_mut(&mut self) -> Option<&mut SlimHeader> {
        match &mut self.message_type {
            Some(MessageType::Subscribe(s)) => s.header.as_mut(),
            Some(MessageType::Unsubscribe(u)) => u.header.as_mut(),
            Some(MessageType::Publish(p)) => p.header.as_mut(),
            None => None,
        }
    }

    /// Checks the fields every node requires (docs/protocol.md "Message framing").
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mt = self.message_type.as_ref().ok_or(ValidationError::MissingType)?;
        let h = self.slim_header().ok_or(ValidationError::MissingHeader)?;
        if h.source.is_none() {
            return Err(ValidationError::MissingSource);
        }
        if h.destination.is_none() {
            return Err(ValidationError::MissingDestination);
        }
        if let MessageType::Publish(p) = mt
            && p.session.is_none()
        {
            return Err(ValidationError::MissingSessionHeader);
        }
        Ok(())
    }

    /// The Publish body, if this is a publish.
    pub fn publish(&self) -> Option<&Publish> {
        match &self.message_type {
            Some(MessageType::Publish(p)) => Some(p),
            _ => None,
        }
    }

    /// Mutable Publish body.
    pub fn publish_mut(&mut self) -> Option<&mut Publish> {
        match &mut self.message_type {
            Some(MessageType::Publish(p)) => Some(p),
            _ => None,
        }
    }

    /// The session header of a publish.
    pub fn session_header(&self) -> Option<&SessionHeader> {
        self.publish().and_then(|p| p.session.as_ref())
    }

    /// Mutable session header of a publish.
    pub fn session_header_mut(&mut self) -> Option<&mut SessionHeader> {
        self.publish_mut().and_then(|p| p.session.as_mut())
    }

    /// The session message type of a publish (UNSPECIFIED for anything else or unknown values).
    pub fn session_message_type(&self) -> SessionMessageType {
        self.session_header()
            .and_then(|s| SessionMessageType::try_from(s.session_message_type).ok())
            .unwrap_or(SessionMessageType::Unspecified)
    }

    /// The payload bytes of a publish (empty for anything else).
    pub fn blob(&self) -> &[u8] {
        self.publish().and_then(|p| p.msg.as_ref()).map(|c| &c.blob[..]).unwrap_or(&[])
    }

    /// The payload of a publish, shared (no copy; empty for anything else).
    pub fn blob_shared(&self) -> prost::bytes::Bytes {
        self.publish().and_then(|p| p.msg.as_ref()).map(|c| c.blob.clone()).unwrap_or_default()
    }

    /// The `incomingConn` the receiving node stamped, if any.
    pub fn incoming_conn(&self) -> Option<u64> {
        self.slim_header().and_then(|h| h.incoming_conn)
    }

    /// The SLIM-header source as a [`Name`] (no strings), if present.
    pub fn source_name(&self) -> Option<Name> {
        self.slim_header().and_then(|h| h.source.as_ref()).map(Name::from_proto)
    }

    /// The SLIM-header destination as a [`Name`] (no strings), if present.
    pub fn destination_name(&self) -> Option<Name> {
        self.slim_header().and_then(|h| h.destination.as_ref()).map(Name::from_proto)
    }

    /// The sender name as the reference resolves it: the session header's OriginalName (with its
    /// strings) when present, else the SLIM header source.
    pub fn resolved_source(&self) -> Option<Name> {
        if let Some(on) = self.session_header().and_then(|s| s.source.as_ref()) {
            return Some(Name::from_original(on));
        }
        self.source_name()
    }

    /// The destination as the reference resolves it (OriginalName first).
    pub fn resolved_destination(&self) -> Option<Name> {
        if let Some(on) = self.session_header().and_then(|s| s.destination.as_ref()) {
            return Some(Name::from_original(on));
        }
        self.destination_name()
    }
}
