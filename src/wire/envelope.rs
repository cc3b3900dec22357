//! The top-level `Message` of proto/dataplane.proto, written by hand instead of generated (build.rs
//! maps the proto type here), for the identity token every app message carries (issue 12,
//! benches/README.md "The apps' per-message work"):
//!
//! ```text
//! message Message {
//!   oneof messageType { Subscribe subscribe = 1; Unsubscribe unsubscribe = 2; Publish publish = 3; }
//!   map<string, string> metadata = 4;
//! }
//! ```
//!
//! The `SLIM_IDENTITY` entry of `metadata` is kept apart, in [`Message::identity`], as a [`Text`]:
//! a sending app attaches its token as a shared reference (no key and value `String`s, no map
//! allocated and hashed per message), and a receiving app reads it as a slice of the received frame
//! (or, 22 bytes or shorter, held in the `Text` itself; UTF-8 checked, as prost checks a `string`),
//! not copied into a map. Every other entry stays in
//! `metadata`. On the wire nothing changes: the token is one entry of field 4, encoded as prost
//! encodes a map entry; the tests below compare against prost's own generated code.

use std::collections::HashMap;

use prost::DecodeError;
use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType, encode_key, encode_varint, encoded_len_varint};

use super::META_IDENTITY;
use super::original::{Text, merge_text};

/// The `messageType` oneof, under the module path prost gives nested types.
pub mod message {
    use crate::wire::proto::{Publish, Subscribe, Unsubscribe};

    /// `oneof messageType`: what the message is. The variants are boxed: a `Message` is then a
    /// few words, and the many moves of each message through futures, channels and queues copy a
    /// pointer, not ~450 bytes.
    #[derive(Clone, PartialEq, Eq, Hash, prost::Oneof)]
    pub enum MessageType {
        /// `Subscribe subscribe = 1`.
        #[prost(message, tag = "1")]
        Subscribe(Box<Subscribe>),
        /// `Unsubscribe unsubscribe = 2`.
        #[prost(message, tag = "2")]
        Unsubscribe(Box<Unsubscribe>),
        /// `Publish publish = 3`.
        #[prost(message, tag = "3")]
        Publish(Box<Publish>),
    }
}

/// Field number of `Message.metadata`.
const METADATA_TAG: u32 = 4;

/// The key field of a `SLIM_IDENTITY` map entry: field 1, length-delimited, 13 bytes, the key.
const IDENTITY_KEY_FIELD: &[u8] = b"\x0a\x0dSLIM_IDENTITY";

/// A message of the data plane's stream (docs/protocol.md, "Message framing").
#[derive(Clone, Default, PartialEq, Debug)]
pub struct Message {
    /// The `metadata` map without its `SLIM_IDENTITY` entry (that one is [`Message::identity`]).
    pub metadata: HashMap<String, String>,
    /// The `SLIM_IDENTITY` entry of `metadata`: the sender's identity token. A received message
    /// has it here, never in [`Message::metadata`]; [`Message::identity_token`] also finds a token
    /// a message was built with in its map.
    pub identity: Option<Text>,
    /// Subscribe, Unsubscribe or Publish.
    pub message_type: Option<message::MessageType>,
}

impl Message {
    /// The sender's identity token: [`Message::identity`], else a `SLIM_IDENTITY` entry of
    /// [`Message::metadata`].
    pub fn identity_token(&self) -> Option<&str> {
        match &self.identity {
            Some(token) => Some(token.as_str()),
            None if self.metadata.is_empty() => None,
            None => self.metadata.get(META_IDENTITY).map(String::as_str),
        }
    }

    /// Length of the `SLIM_IDENTITY` entry's body (key and, when not empty, value fields).
    fn identity_entry_len(token: &Text) -> usize {
        let value = if token.is_empty() { 0 } else { 1 + encoded_len_varint(token.len() as u64) + token.len() };
        IDENTITY_KEY_FIELD.len() + value
    }

    /// Writes the `SLIM_IDENTITY` entry of `metadata`, as prost writes a map entry.
    fn encode_identity(token: &Text, buf: &mut impl BufMut) {
        encode_key(METADATA_TAG, WireType::LengthDelimited, buf);
        encode_varint(Message::identity_entry_len(token) as u64, buf);
        buf.put_slice(IDENTITY_KEY_FIELD);
        if !token.is_empty() {
            token.encode_field(2, buf);
        }
    }
}

/// One `metadata` entry as it is decoded: `{ string key = 1; string value = 2; }` (each the last
/// given; an unknown field skipped), both [`Text`]s (slices of the frame, or held in the value
/// when short).
#[derive(Default, Debug)]
struct Entry {
    key: Text,
    value: Text,
}

impl prost::Message for Entry {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for (tag, text) in [(1, &self.key), (2, &self.value)] {
            if !text.is_empty() {
                text.encode_field(tag, buf);
            }
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => merge_text(&mut self.key, wire_type, buf, ctx),
            2 => merge_text(&mut self.value, wire_type, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        [(1, &self.key), (2, &self.value)]
            .into_iter()
            .filter(|(_, text)| !text.is_empty())
            .map(|(tag, text)| text.encoded_field_len(tag))
            .sum()
    }

    fn clear(&mut self) {
        *self = Entry::default();
    }
}

impl prost::Message for Message {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if let Some(kind) = &self.message_type {
            kind.encode(buf);
        }
        // The token before the map's entries: a mesh node that encodes a message puts its mesh
        // tag in the map, and the next mesh node takes the tag off the frame without decoding it
        // only when the tag is the frame's last field (src/node/mesh/tag.rs, `strip`). Should the
        // map hold a key of the same name too (a message built with its token in the map, then
        // stamped), the token goes last instead, so that it is the one a receiver keeps.
        let last = match &self.identity {
            Some(token) if !self.metadata.is_empty() && self.metadata.contains_key(META_IDENTITY) => Some(token),
            Some(token) => {
                Message::encode_identity(token, buf);
                None
            }
            None => None,
        };
        encoding::hash_map::encode(
            encoding::string::encode,
            encoding::string::encoded_len,
            encoding::string::encode,
            encoding::string::encoded_len,
            METADATA_TAG,
            &self.metadata,
            buf,
        );
        if let Some(token) = last {
            Message::encode_identity(token, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1..=3 => message::MessageType::merge(&mut self.message_type, tag, wire_type, buf, ctx).map_err(|mut e| {
                e.push("Message", "message_type");
                e
            }),
            METADATA_TAG => {
                let mut entry = Entry::default();
                encoding::message::merge(wire_type, &mut entry, buf, ctx).map_err(|mut e| {
                    e.push("Message", "metadata");
                    e
                })?;
                if entry.key == META_IDENTITY {
                    self.identity = Some(entry.value);
                } else {
                    self.metadata.insert(entry.key.as_str().to_owned(), entry.value.as_str().to_owned());
                }
                Ok(())
            }
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let kind = self.message_type.as_ref().map_or(0, |k| k.encoded_len());
        let metadata = encoding::hash_map::encoded_len(
            encoding::string::encoded_len,
            encoding::string::encoded_len,
            METADATA_TAG,
            &self.metadata,
        );
        let identity = self.identity.as_ref().map_or(0, |token| {
            let len = Message::identity_entry_len(token);
            1 + encoded_len_varint(len as u64) + len
        });
        kind + metadata + identity
    }

    fn clear(&mut self) {
        self.metadata.clear();
        self.identity = None;
        self.message_type = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::proto::{Content, Publish, SessionHeader, SlimHeader, Subscribe};
    use crate::wire::{Name, builders};
    use prost::Message as _;
    use prost::bytes::Bytes;

    /// What prost generates for the same message (the reference encoding and decoding).
    #[derive(Clone, PartialEq, prost::Message)]
    struct GeneratedMessage {
        #[prost(map = "string, string", tag = "4")]
        metadata: HashMap<String, String>,
        #[prost(oneof = "message::MessageType", tags = "1, 2, 3")]
        message_type: Option<message::MessageType>,
    }

    fn publish() -> message::MessageType {
        let (src, dst) = (Name::new("org", "ns", "sender", Some(7)), Name::new("org", "ns", "receiver", None));
        let spec = builders::PublishSpec {
            source: &src,
            destination: &dst,
            flags: builders::Flags::one(),
            session_type: crate::wire::SessionType::SessionPointToPoint,
            message_type: crate::wire::SessionMessageType::P2PMsg,
            session_id: 42,
            message_id: 300,
            original_names: true,
            content_type: Content::MSG,
        };
        builders::publish(&spec, Bytes::from_static(b"payload"), HashMap::new()).message_type.expect("publish")
    }

    fn kinds() -> Vec<Option<message::MessageType>> {
        let sub = Subscribe { header: Some(SlimHeader::default()), component_0: "a".into(), ..Default::default() };
        vec![
            None,
            Some(publish()),
            Some(message::MessageType::Subscribe(Box::new(sub))),
            Some(message::MessageType::Publish(Box::new(Publish {
                session: Some(SessionHeader::default()),
                ..Default::default()
            }))),
        ]
    }

    #[test]
    fn messages_encode_and_decode_as_prost_generated_code_does() {
        // At most one map entry per message: a map's order on the wire is its iteration order.
        let metas: [&[(&str, &str)]; 5] =
            [&[], &[("SLIM_IDENTITY", "secret:org/ns/app")], &[("SLIM_IDENTITY", "")], &[("k", "v")], &[("", "")]];
        for kind in kinds() {
            for meta in metas {
                let generated = GeneratedMessage {
                    metadata: meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                    message_type: kind.clone(),
                };
                let wire = generated.encode_to_vec();
                // Decoded: the token apart, every other entry in the map.
                let ours = Message::decode(Bytes::from(wire.clone())).expect("decodes");
                assert_eq!(ours.message_type, kind);
                let token = meta.iter().find(|(k, _)| *k == META_IDENTITY).map(|(_, v)| *v);
                assert_eq!(ours.identity.as_deref(), token);
                assert_eq!(ours.identity_token(), token);
                assert_eq!(ours.metadata.len(), meta.len() - usize::from(token.is_some()));
                // Encoded back: the same bytes, whether the token is apart or in the map.
                assert_eq!(ours.encode_to_vec(), wire);
                assert_eq!(ours.encoded_len(), wire.len());
                let in_map =
                    Message { metadata: generated.metadata.clone(), identity: None, message_type: kind.clone() };
                assert_eq!(in_map.encode_to_vec(), wire);
                assert_eq!(in_map.encoded_len(), wire.len());
                assert_eq!(in_map.identity_token(), token);
            }
        }
    }

    #[test]
    fn a_token_beside_other_entries_decodes_as_prost_reads_it() {
        let meta = HashMap::from([
            ("SLIM_IDENTITY".to_string(), "secret:me".to_string()),
            ("traceparent".to_string(), "00-x".to_string()),
            ("user".to_string(), "é".to_string()),
        ]);
        let generated = GeneratedMessage { metadata: meta.clone(), message_type: Some(publish()) };
        let ours = Message::decode(Bytes::from(generated.encode_to_vec())).expect("decodes");
        assert_eq!(ours.identity.as_deref(), Some("secret:me"));
        let mut rest = meta.clone();
        rest.remove(META_IDENTITY);
        assert_eq!(ours.metadata, rest);
        // What prost reads back from ours: the same map, token included.
        let back = GeneratedMessage::decode(ours.encode_to_vec().as_slice()).expect("prost decodes");
        assert_eq!(back.metadata, meta);
        assert_eq!(back.message_type, ours.message_type);
        assert_eq!(ours.encoded_len(), generated.encoded_len());
    }

    #[test]
    fn repeated_entries_and_fields_keep_the_last_as_prost_does() {
        let mut frame = Vec::new();
        for token in ["first", "second"] {
            GeneratedMessage {
                metadata: HashMap::from([("SLIM_IDENTITY".into(), token.into()), ("k".into(), token.into())]),
                message_type: None,
            }
            .encode_raw(&mut frame);
        }
        // An entry whose value comes before its key, with an unknown field, and a repeated key.
        let entry = [0x12, 0x01, b'z', 0x18, 0x05, 0x0a, 0x01, b'q', 0x0a, 0x01, b'k'];
        frame.extend_from_slice(&[0x22, entry.len() as u8]);
        frame.extend_from_slice(&entry);
        // An unknown top-level field.
        encoding::string::encode(9, &"x".to_string(), &mut frame);
        let generated = GeneratedMessage::decode(frame.as_slice()).expect("prost decodes");
        let ours = Message::decode(Bytes::from(frame)).expect("decodes");
        assert_eq!(generated.metadata.get("k").map(String::as_str), Some("z"));
        assert_eq!(ours.identity.as_deref(), generated.metadata.get(META_IDENTITY).map(String::as_str));
        assert_eq!(ours.identity.as_deref(), Some("second"));
        assert_eq!(ours.metadata.get("k"), generated.metadata.get("k"));
        assert_eq!(ours.metadata.len(), 1);
    }

    #[test]
    fn garbage_fails_where_prost_fails() {
        let cases: [&[u8]; 6] = [
            // A token that is not UTF-8.
            &[
                0x22, 0x13, 0x0a, 0x0d, b'S', b'L', b'I', b'M', b'_', b'I', b'D', b'E', b'N', b'T', b'I', b'T', b'Y',
                0x12, 0x02, 0xff, 0xfe,
            ],
            // A key that is not UTF-8.
            &[0x22, 0x04, 0x0a, 0x02, 0xc3, 0x28],
            // An entry cut short, a length past the end.
            &[0x22, 0x05, 0x0a, 0x01],
            &[0x22, 0x7f],
            // An entry of the wrong wire type.
            &[0x20, 0x01],
            // A publish that does not parse.
            &[0x1a, 0x02, 0x0a, 0xff],
        ];
        for case in cases {
            assert!(GeneratedMessage::decode(case).is_err(), "{case:?}");
            assert!(Message::decode(Bytes::copy_from_slice(case)).is_err(), "{case:?}");
        }
    }

    /// The map as a receiver sees it: the token back among the other entries.
    fn as_map(m: &Message) -> HashMap<String, String> {
        let mut map = m.metadata.clone();
        if let Some(token) = &m.identity {
            map.insert(META_IDENTITY.to_string(), token.as_str().to_string());
        }
        map
    }

    #[test]
    fn tokens_of_every_length_class_encode_as_prost_does() {
        // Around the lengths where the value's and the entry's length prefixes grow a byte
        // (the entry is 15 bytes of key and 2-4 of value prefix longer than the token).
        let lengths =
            [0, 1, 109, 110, 111, 112, 113, 126, 127, 128, 129, 16_365, 16_366, 16_367, 16_383, 16_384, 70_000];
        for len in lengths {
            let token: String = (0..len).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            for kind in kinds() {
                let generated = GeneratedMessage {
                    metadata: HashMap::from([(META_IDENTITY.to_string(), token.clone())]),
                    message_type: kind.clone(),
                };
                let wire = generated.encode_to_vec();
                let ours =
                    Message { metadata: HashMap::new(), identity: Some(token.clone().into()), message_type: kind };
                assert_eq!(ours.encode_to_vec(), wire, "token of {len} bytes");
                assert_eq!(ours.encoded_len(), wire.len(), "token of {len} bytes");
                let back = Message::decode(Bytes::from(wire)).expect("decodes");
                assert_eq!(back, ours);
                // Beside other entries (their order on the wire is the map's): lengths and content.
                let mut more = ours.clone();
                more.metadata.insert("k".into(), "v".repeat(len / 2));
                more.metadata.insert("".into(), "".into());
                let wire = more.encode_to_vec();
                assert_eq!(more.encoded_len(), wire.len(), "token of {len} bytes with other entries");
                let by_prost = GeneratedMessage::decode(wire.as_slice()).expect("prost decodes");
                assert_eq!(by_prost.metadata, as_map(&more));
                assert_eq!(by_prost.encoded_len(), wire.len());
            }
        }
    }

    #[test]
    fn a_token_both_in_the_map_and_apart_is_sent_once_as_the_one_apart() {
        let m = Message {
            metadata: HashMap::from([(META_IDENTITY.into(), "stale".into()), ("k".into(), "v".into())]),
            identity: Some("fresh".into()),
            message_type: Some(publish()),
        };
        assert_eq!(m.identity_token(), Some("fresh"));
        let wire = m.encode_to_vec();
        assert_eq!(m.encoded_len(), wire.len());
        // What any protobuf reader keeps (the last entry of a key): the token apart.
        let by_prost = GeneratedMessage::decode(wire.as_slice()).expect("prost decodes");
        assert_eq!(by_prost.metadata.get(META_IDENTITY).map(String::as_str), Some("fresh"));
        let ours = Message::decode(Bytes::from(wire)).expect("decodes");
        assert_eq!(ours.identity_token(), Some("fresh"));
        assert_eq!(ours.metadata, HashMap::from([("k".to_string(), "v".to_string())]));
    }

    #[test]
    fn a_metadata_field_of_another_wire_type_is_read_as_prost_reads_it() {
        // prost's generated code checks a map field's wire type: a metadata field that is not
        // length-delimited is refused by both (a frame one takes, the other takes too).
        let frames: [&[u8]; 6] = [
            &[0x20, 0x00],
            &[0x21, 0x00],
            &[0x25, 0x03, 0x0a, 0x01, b'k'],
            &[0x23, 0x00],
            &[
                0x20, 0x13, 0x0a, 0x0d, b'S', b'L', b'I', b'M', b'_', b'I', b'D', b'E', b'N', b'T', b'I', b'T', b'Y',
                0x12, 0x02, b'o', b'k',
            ],
            &[0x20, 0x01],
        ];
        for frame in frames {
            let by_prost = GeneratedMessage::decode(frame);
            let ours = Message::decode(Bytes::copy_from_slice(frame));
            assert_eq!(by_prost.is_ok(), ours.is_ok(), "{frame:?}: {by_prost:?} / {ours:?}");
            if let (Ok(g), Ok(o)) = (by_prost, ours) {
                assert_eq!(g.metadata, as_map(&o), "{frame:?}");
            }
        }
    }

    use crate::testing::Rng;

    #[test]
    fn damaged_frames_decode_or_fail_as_prost_does() {
        // Frames with tokens, other entries and every message kind, then cut, bytes flipped,
        // bytes inserted, pieces of other frames spliced in: whatever prost makes of a frame,
        // so does this decoder (token or not), and what it decodes encodes back to the same
        // content with the length it announces. Bounded: a fixed number of cases.
        let mut seeds = Vec::new();
        for kind in kinds() {
            for meta in [
                vec![],
                vec![(META_IDENTITY, "secret:org/ns/app")],
                vec![(META_IDENTITY, "")],
                vec![(META_IDENTITY, "t"), ("k", "v"), ("", "x")],
                vec![("SLIM_MESH", "*/1"), ("SLIM_IDENTITY_", "no")],
            ] {
                let g = GeneratedMessage {
                    metadata: meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                    message_type: kind.clone(),
                };
                seeds.push(g.encode_to_vec());
            }
        }
        let mut rng = Rng(0x5851_f42d_4c95_7f2d);
        let (mut decoded, mut refused) = (0, 0);
        for _ in 0..30_000 {
            let mut frame = seeds[rng.below(seeds.len())].clone();
            for _ in 0..=rng.below(3) {
                match rng.below(5) {
                    0 => frame.truncate(rng.below(frame.len() + 1)),
                    1 if !frame.is_empty() => {
                        let i = rng.below(frame.len());
                        frame[i] = rng.next() as u8;
                    }
                    2 => {
                        let i = rng.below(frame.len() + 1);
                        frame.insert(i, [0x00, 0x01, 0x0a, 0x12, 0x20, 0x21, 0x22, 0x23, 0x7f, 0x80][rng.below(10)]);
                    }
                    3 if !frame.is_empty() => {
                        let i = rng.below(frame.len());
                        frame[i] ^= 1 << rng.below(8);
                    }
                    _ => {
                        let other = &seeds[rng.below(seeds.len())];
                        let from = rng.below(other.len() + 1);
                        let to = from + rng.below(other.len() - from + 1);
                        let at = rng.below(frame.len() + 1);
                        frame.splice(at..at, other[from..to].iter().copied());
                    }
                }
            }
            let by_prost = GeneratedMessage::decode(frame.as_slice());
            let ours = Message::decode(Bytes::from(frame.clone()));
            match (by_prost, ours) {
                (Ok(g), Ok(o)) => {
                    decoded += 1;
                    assert_eq!(g.message_type, o.message_type, "{frame:?}");
                    assert_eq!(g.metadata, as_map(&o), "{frame:?}");
                    assert_eq!(g.metadata.get(META_IDENTITY).map(String::as_str), o.identity_token(), "{frame:?}");
                    let again = o.encode_to_vec();
                    assert_eq!(o.encoded_len(), again.len(), "{frame:?}");
                    assert_eq!(GeneratedMessage::decode(again.as_slice()).expect("prost decodes"), g, "{frame:?}");
                }
                (Err(_), Err(_)) => refused += 1,
                (g, o) => panic!("prost {g:?}, ours {o:?}: {frame:?}"),
            }
        }
        // Both outcomes were exercised.
        assert!(decoded > 1_000 && refused > 1_000, "decoded {decoded}, refused {refused}");
    }

    #[test]
    fn a_received_token_is_a_slice_of_the_frame() {
        let generated = GeneratedMessage {
            metadata: HashMap::from([("SLIM_IDENTITY".into(), "secret:org/namespace/application".into())]),
            message_type: Some(publish()),
        };
        let frame = Bytes::from(generated.encode_to_vec());
        let within = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        let ours = Message::decode(frame.clone()).expect("decodes");
        let token = ours.identity.as_ref().expect("token");
        assert!(within.contains(&(token.as_ptr() as usize)));
        assert!(ours.metadata.is_empty());
    }
}
