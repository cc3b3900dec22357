//! Decoding a data message off its frame in one pass over the bytes, for the shape every publish
//! of this protocol has (docs/protocol.md, "Message framing"): a receiving app decodes each
//! message it gets, and prost's generic decoding (a `Buf` checked per varint, a nested call per
//! field, a length check per nested message) was a sixth of its CPU in a 100-byte stream
//! (benches/README.md, "A data message decoded in one pass").
//!
//! [`decode`] reads a `Message` that is a `Publish` with its metadata entries, each field of the
//! publish and of its headers given at most once, every field one the schema knows with its wire
//! type: what this implementation, slim-bindings 0.6.0 and the reference write. It gives exactly
//! what prost's decoding gives for the same bytes (the tests below and the `frame` fuzz target
//! check it), with the payload and any string over 22 bytes (a token) as slices of the frame and
//! shorter strings held in their values ([`Text`]). Anything else (a subscription, a repeated or
//! unknown field, a group, bytes that are not a message) is not read here: [`decode_frame`] hands
//! it to prost, which accepts or refuses it as before.

use prost::Message as _;
use prost::bytes::Bytes;

use super::META_IDENTITY;
use super::envelope::message::MessageType;
use super::original::Text;
use super::proto::{Content, Name as ProtoName, Publish, SessionHeader, SlimHeader};
use super::scan::{DELIMITED, NotRead, Res, VARINT, delimited, expect, key, message, once, read_varint, varint};
use super::{Message, OriginalName};

/// `frame` decoded as a `Message`: in one pass when it has the common shape (see the module
/// doc), else by prost.
pub(crate) fn decode_frame(frame: Bytes) -> Result<Message, prost::DecodeError> {
    match decode(&frame) {
        Some(m) => Ok(m),
        None => Message::decode(frame),
    }
}

/// `frame` decoded in one pass, or `None` when it does not have the common shape (see the module
/// doc). `Some` is what prost decodes from the same bytes.
pub(crate) fn decode(frame: &Bytes) -> Option<Message> {
    Quick { frame }.message(frame).ok()
}

/// Checks [`decode`] against prost on `frame` (tests and the `frame` fuzz target): panics when it
/// reads a frame prost refuses, or reads it differently. True when it read the frame.
pub(crate) fn check_against_prost(frame: &[u8]) -> bool {
    let frame = Bytes::copy_from_slice(frame);
    let Some(quick) = decode(&frame) else { return false };
    match Message::decode(frame.clone()) {
        Ok(m) => assert_eq!(quick, m, "the one-pass decode differs from prost's: {frame:?}"),
        Err(e) => panic!("the one-pass decode read a frame prost refuses ({e}): {frame:?}"),
    }
    true
}

/// Field numbers of proto/dataplane.proto's `Message`.
const MSG_PUBLISH: u32 = 3;
const MSG_METADATA: u32 = 4;
/// The field number of `SessionHeader.liveness_ms` (an extension, past the `once` bitmask's range).
const SESSION_LIVENESS_MS: u32 = 1001;

/// The frame being read: the payload and long strings are slices of it.
struct Quick<'a> {
    frame: &'a Bytes,
}

impl Quick<'_> {
    /// A `string` field's bytes as a [`Text`]: held in the value when short, else sharing the frame
    /// (`bytes` always lie within it: every slice read here is cut from the frame).
    fn text(&self, bytes: &[u8]) -> Res<Text> {
        Text::slice_of(self.frame, bytes).ok_or(NotRead)
    }

    /// `Message { oneof messageType { …; Publish publish = 3; } map<string, string> metadata = 4; }`
    fn message(&self, mut buf: &[u8]) -> Res<Message> {
        let mut m = Message::default();
        let mut seen = 0;
        while !buf.is_empty() {
            let (field, wire) = key(&mut buf)?;
            let body = message(wire, &mut buf)?;
            match field {
                MSG_PUBLISH => {
                    once(&mut seen, field)?;
                    // Filled where it lies: a publish is ~450 bytes, not moved through returns.
                    let mut p = Box::<Publish>::default();
                    self.publish(body, &mut p)?;
                    m.message_type = Some(MessageType::Publish(p));
                }
                MSG_METADATA => {
                    // An entry replaces an earlier one with the same key, as prost's map does.
                    let (k, v) = self.entry(body)?;
                    if k == *META_IDENTITY {
                        m.identity = Some(v);
                    } else {
                        m.metadata.insert(k.as_str().to_owned(), v.as_str().to_owned());
                    }
                }
                _ => return Err(NotRead),
            }
        }
        Ok(m)
    }

    /// One `metadata` entry: `{ string key = 1; string value = 2; }` (an absent one is empty).
    fn entry(&self, mut buf: &[u8]) -> Res<(Text, Text)> {
        let (mut k, mut v) = (Text::default(), Text::default());
        let mut seen = 0;
        while !buf.is_empty() {
            let (field, wire) = key(&mut buf)?;
            once(&mut seen, field)?;
            expect(wire, DELIMITED)?;
            let bytes = delimited(&mut buf)?;
            match field {
                1 => k = self.text(bytes)?,
                2 => v = self.text(bytes)?,
                _ => return Err(NotRead),
            }
        }
        Ok((k, v))
    }

    /// `Publish { SLIMHeader header = 1; SessionHeader session = 2; Content msg = 3; }`
    fn publish(&self, mut buf: &[u8], p: &mut Publish) -> Res<()> {
        let mut seen = 0;
        while !buf.is_empty() {
            let (field, wire) = key(&mut buf)?;
            once(&mut seen, field)?;
            let body = message(wire, &mut buf)?;
            match field {
                1 => slim_header(body, p.header.insert(SlimHeader::default()))?,
                2 => self.session_header(body, p.session.insert(SessionHeader::default()))?,
                3 => self.content(body, p.msg.insert(Content::default()))?,
                _ => return Err(NotRead),
            }
        }
        Ok(())
    }

    /// `SessionHeader { SessionType session_type = 1; SessionMessageType session_message_type = 2;
    /// uint32 session_id = 3; uint32 message_id = 4; optional OriginalName source = 5;
    /// optional OriginalName destination = 6; optional uint32 liveness_ms = 1001; }`
    fn session_header(&self, mut buf: &[u8], s: &mut SessionHeader) -> Res<()> {
        let mut seen = 0;
        while !buf.is_empty() {
            let (field, wire) = key(&mut buf)?;
            if field == SESSION_LIVENESS_MS {
                // Every data message of an anycast initiator carries it (docs/liveness.md): read
                // here, not left to prost. Twice in one header is left to prost (it keeps the last).
                if s.liveness_ms.is_some() {
                    return Err(NotRead);
                }
                s.liveness_ms = Some(varint(wire, &mut buf)? as u32);
                continue;
            }
            once(&mut seen, field)?;
            // Enumerations are int32s, the ids uint32s: prost keeps the varint's low 32 bits.
            match field {
                1 => s.session_type = varint(wire, &mut buf)? as i32,
                2 => s.session_message_type = varint(wire, &mut buf)? as i32,
                3 => s.session_id = varint(wire, &mut buf)? as u32,
                4 => s.message_id = varint(wire, &mut buf)? as u32,
                5 => s.source = Some(self.original_name(message(wire, &mut buf)?)?),
                6 => s.destination = Some(self.original_name(message(wire, &mut buf)?)?),
                _ => return Err(NotRead),
            }
        }
        Ok(())
    }

    /// `OriginalName { string component_0..2 = 1..3; uint64 component_3 = 4; }`
    fn original_name(&self, mut buf: &[u8]) -> Res<OriginalName> {
        let mut texts: [Text; 3] = Default::default();
        let mut id = 0;
        let mut seen = 0;
        while !buf.is_empty() {
            let (field, wire) = key(&mut buf)?;
            once(&mut seen, field)?;
            match field {
                1..=3 => {
                    let bytes = message(wire, &mut buf)?;
                    texts[field as usize - 1] = self.text(bytes)?;
                }
                4 => id = varint(wire, &mut buf)?,
                _ => return Err(NotRead),
            }
        }
        let [c0, c1, c2] = texts;
        Ok(OriginalName::new(c0, c1, c2, id))
    }

    /// `Content { string content_type = 1; bytes blob = 2; }`
    fn content(&self, mut buf: &[u8], c: &mut Content) -> Res<()> {
        let mut seen = 0;
        while !buf.is_empty() {
            let (field, wire) = key(&mut buf)?;
            once(&mut seen, field)?;
            let bytes = message(wire, &mut buf)?;
            match field {
                // The content type of application data without a reference to the frame.
                1 if bytes == Content::MSG.as_bytes() => c.content_type = Text::from_static(Content::MSG),
                1 => c.content_type = self.text(bytes)?,
                2 => c.blob = self.frame.slice_ref(bytes),
                _ => return Err(NotRead),
            }
        }
        Ok(())
    }
}

/// `SLIMHeader { Name source = 1; Name destination = 2; uint32 fanout = 3; optional uint64
/// recvFrom = 4; optional uint64 forwardTo = 5; optional uint64 incomingConn = 6; optional bool
/// error = 7; }`
fn slim_header(mut buf: &[u8], h: &mut SlimHeader) -> Res<()> {
    let mut seen = 0;
    while !buf.is_empty() {
        let (field, wire) = key(&mut buf)?;
        once(&mut seen, field)?;
        match field {
            1 => h.source = Some(name(message(wire, &mut buf)?)?),
            2 => h.destination = Some(name(message(wire, &mut buf)?)?),
            3 => h.fanout = varint(wire, &mut buf)? as u32,
            4 => h.recv_from = Some(varint(wire, &mut buf)?),
            5 => h.forward_to = Some(varint(wire, &mut buf)?),
            6 => h.incoming_conn = Some(varint(wire, &mut buf)?),
            7 => h.error = Some(varint(wire, &mut buf)? != 0),
            _ => return Err(NotRead),
        }
    }
    Ok(())
}

/// `Name { uint64 component_0..3 = 1..4; }`: four varints, mostly ten bytes each (hashes).
fn name(mut buf: &[u8]) -> Res<ProtoName> {
    let mut c = [0u64; 4];
    let mut seen = 0;
    while !buf.is_empty() {
        let (field, wire) = key(&mut buf)?;
        once(&mut seen, field)?;
        expect(wire, VARINT)?;
        let slot = c.get_mut(field as usize - 1).ok_or(NotRead)?;
        *slot = read_varint(&mut buf)?;
    }
    Ok(ProtoName { component_0: c[0], component_1: c[1], component_2: c[2], component_3: c[3] })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::mesh::tag::{Tag, TagEntry, Target};
    use crate::testing::Rng;
    use crate::wire::builders::{Flags, PublishSpec, publish, subscribe};
    use crate::wire::{Name, SessionMessageType, SessionType};
    use std::collections::HashMap;

    /// Real messages: data with and without original names, a notice, MLS-style metadata, an
    /// empty payload, a long token, an ack.
    fn samples() -> Vec<Vec<u8>> {
        let (a, b) = (Name::new("org", "ns", "alice", Some(1)), Name::new("org", "ns", "bob", None));
        let mut out = Vec::new();
        for i in 0..6usize {
            let mut meta = HashMap::new();
            if i != 3 {
                meta.insert(META_IDENTITY.to_string(), "token.".repeat(1 + 40 * i));
            }
            if i == 1 {
                meta.insert("MLS_ENCRYPTED".to_string(), "true".to_string());
                meta.insert("ünïcode".to_string(), String::new());
            }
            let flags = match i {
                2 => Flags::one().forward_to(Some(3)),
                4 => Flags::one().recv_from(2),
                _ => Flags::one(),
            };
            let spec = PublishSpec {
                source: &a,
                destination: &b,
                session_type: if i == 5 { SessionType::SessionMulticast } else { SessionType::SessionPointToPoint },
                message_type: if i == 5 { SessionMessageType::P2PAck } else { SessionMessageType::P2PReliable },
                session_id: 7 + i as u32 * 800_000_000,
                message_id: u32::MAX - i as u32,
                flags,
                original_names: i != 2,
                content_type: if i == 4 { "text/plain" } else { Content::MSG },
            };
            let payload = if i == 3 { Vec::new() } else { vec![0xab; 40 * i] };
            let mut m = publish(&spec, payload, meta);
            if i == 4 {
                m.slim_header_mut().unwrap().error = Some(true);
            }
            if i == 0 {
                // An anycast initiator's data message: its liveness offer.
                m.session_header_mut().unwrap().liveness_ms = Some(10_000);
            }
            out.push(m.encode_to_vec());
        }
        out
    }

    #[test]
    fn real_messages_are_read_as_prost_decodes_them() {
        for f in samples() {
            assert!(check_against_prost(&f), "a real message is read in one pass: {f:?}");
        }
        // The token and the payload are slices of the frame; the names' short strings are held
        // in their values.
        let frame = Bytes::from(samples().swap_remove(1));
        let m = decode(&frame).unwrap();
        let within =
            |p: *const u8| (frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len()).contains(&(p as usize));
        assert!(within(m.blob().as_ptr()));
        assert!(within(m.identity.as_ref().unwrap().as_ptr()));
        assert!(!within(m.session_header().unwrap().source.as_ref().unwrap().texts()[2].as_ptr()));
    }

    #[test]
    fn other_shapes_are_left_to_prost() {
        let s = samples();
        let (a, b) = (Name::new("org", "ns", "alice", Some(1)), Name::new("org", "ns", "bob", None));
        let tag = TagEntry::new(&Tag { target: Target::Node(0xab), hops: 3 });
        // Read here: a mesh tag appended (one more metadata entry); a tag over a tag (the last wins).
        for f in [[&s[0][..], tag.as_bytes()].concat(), [&s[0][..], tag.as_bytes(), tag.as_bytes()].concat()] {
            assert!(check_against_prost(&f));
        }
        let left: Vec<Vec<u8>> = vec![
            subscribe(&a, &b, Flags::one()).encode_to_vec(),
            // The same publish twice (prost merges them), a publish then an unknown field.
            [&s[0][..], &s[0][..]].concat(),
            [&s[0][..], &[0x28, 1][..]].concat(),
            // A group (field 9, start and end): prost skips it.
            [&s[0][..], &[0x4b, 0x4c][..]].concat(),
            // Field 3 as a varint: prost refuses it.
            vec![0x18, 1],
        ];
        for f in &left {
            assert!(!check_against_prost(f), "left to prost: {f:?}");
            let _ = decode_frame(Bytes::copy_from_slice(f));
        }
        assert!(decode_frame(Bytes::from_static(&[0x18, 1])).is_err());
        assert!(decode_frame(Bytes::from(left[1].clone())).is_ok());
        assert!(check_against_prost(&[]), "the empty message");
    }

    #[test]
    fn damaged_frames_are_read_only_as_prost_reads_them() {
        // Bytes changed, flipped, inserted, cut: whatever is read in one pass must be what prost
        // decodes (check_against_prost panics otherwise), and both sides must be exercised.
        let n_read = Rng(0x9e37_79b9_7f4a_7c15).count_read(&samples(), 30_000, check_against_prost);
        assert!(n_read > 1_000 && n_read < 29_000, "{n_read} of 30000 read");
    }

    #[test]
    fn varint_values_at_every_width_are_read_as_prost_reads_them() {
        // Header and session fields with values of every varint length, including the widths
        // that uint32 and int32 fields truncate.
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        let (a, b) = (Name::new("o", "n", "a", Some(1)), Name::new("o", "n", "b", Some(2)));
        for _ in 0..2_000 {
            let spec = PublishSpec {
                source: &a,
                destination: &b,
                session_type: SessionType::SessionPointToPoint,
                message_type: SessionMessageType::P2PMsg,
                session_id: (rng.next() >> rng.below(64)) as u32,
                message_id: (rng.next() >> rng.below(64)) as u32,
                flags: Flags::one(),
                original_names: true,
                content_type: "",
            };
            let mut m = publish(&spec, vec![1, 2, 3], HashMap::new());
            let h = m.slim_header_mut().unwrap();
            h.fanout = (rng.next() >> rng.below(64)) as u32;
            h.incoming_conn = Some(rng.next() >> rng.below(64));
            let dst = h.destination.as_mut().unwrap();
            dst.component_1 = rng.next() >> rng.below(64);
            dst.component_3 = 0;
            assert!(check_against_prost(&m.encode_to_vec()));
        }
    }
}
