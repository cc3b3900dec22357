//! The codec of the data plane's one RPC: a frame that does not decode as a `Message` is
//! reported as such (the stream carries on, see `transport`), and a message a node forwards
//! unchanged is written as the bytes it was read as, or those bytes and a mesh tag entry (see
//! `Inner::deliver`).

use prost::Message as _;
use prost::bytes::{Buf, BufMut, Bytes};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use super::mesh::tag::TagEntry;
use crate::wire::Message;

/// One decoded frame: a message with its encoding as received, or bytes that are not a `Message`.
// Boxing the common variant would cost an allocation per message to shrink the rare one.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Inbound {
    /// The message, and the frame it was decoded from (shares the receive buffer: no copy).
    Message(Message, Bytes),
    Malformed(prost::DecodeError),
}

/// What a remote connection's outbound queue carries.
// Boxing the common variant would cost an allocation per message to shrink the rare one.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A message to encode.
    Message(Message),
    /// A message forwarded exactly as it was received (its encoding, not re-encoded): a node
    /// passing a message between two remote connections changes nothing in it that is on the
    /// wire (see `Inner::deliver`), so it writes the bytes it read.
    Encoded(Bytes),
    /// A message forwarded as received with a mesh tag entry appended (a node passing a message
    /// on to the next mesh node: see `Inner::deliver` and docs/mesh.md, "The tag on the wire").
    Tagged(Bytes, TagEntry),
}

impl From<Message> for Outbound {
    fn from(m: Message) -> Self {
        Outbound::Message(m)
    }
}

/// Encodes [`Outbound`], decodes [`Inbound`] (never fails on bad bytes).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LenientCodec;

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MessageEncoder;

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LenientDecoder;

impl Codec for LenientCodec {
    type Encode = Outbound;
    type Decode = Inbound;
    type Encoder = MessageEncoder;
    type Decoder = LenientDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        MessageEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        LenientDecoder
    }
}

impl Encoder for MessageEncoder {
    type Item = Outbound;
    type Error = Status;

    fn encode(&mut self, item: Outbound, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {
            Outbound::Message(m) => {
                // One allocation up front: growing the buffer while encoding copies a large
                // payload several times.
                buf.reserve(m.encoded_len());
                m.encode(buf).map_err(|e| Status::internal(format!("encode: {e}")))
            }
            Outbound::Encoded(bytes) => {
                buf.put_slice(&bytes);
                Ok(())
            }
            Outbound::Tagged(bytes, entry) => {
                buf.reserve(bytes.len() + entry.as_bytes().len());
                buf.put_slice(&bytes);
                buf.put_slice(entry.as_bytes());
                Ok(())
            }
        }
    }
}

impl Decoder for LenientDecoder {
    type Item = Inbound;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Inbound>, Status> {
        // The whole frame, split off the receive buffer (no copy); the payload of the decoded
        // message is a slice of it, and a node can forward it as it is.
        let frame = buf.copy_to_bytes(buf.remaining());
        match Message::decode(frame.clone()) {
            Ok(m) => Ok(Some(Inbound::Message(m, frame))),
            Err(e) => Ok(Some(Inbound::Malformed(e))),
        }
    }
}
