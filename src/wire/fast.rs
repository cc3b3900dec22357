//! Two messages of proto/dataplane.proto written by hand instead of generated (build.rs maps the
//! proto types here), for the cost of every data message (issue 12, benches/README.md):
//!
//! - [`Name`] (`uint64 component_0..3 = 1..4`), the SLIM header's source and destination: its four
//!   components are mostly hashes, ten bytes each as varints, and prost writes a varint one byte
//!   at a time with a capacity check each; here a name is written into a stack array and handed
//!   to the buffer at once (on a sending app, a third of the encoding's CPU).
//! - [`Content`] (`string content_type = 1; bytes blob = 2`): its content type is a [`Text`] (held
//!   in the value when short, a slice of the received frame, or static), not a `String` allocated
//!   per message on both sides.
//!
//! On the wire nothing changes: the encoding is the one prost generates for these messages (proto3:
//! a zero or empty field is not written; an unknown field is skipped; a repeated field keeps its
//! last value), which the tests below check against prost's own generated code.

use prost::DecodeError;
use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType, encoded_len_varint};

use super::original::{Text, merge_text};

/// `Name { uint64 component_0..3 = 1..4; }`: the three hashed components of a name and its
/// instance id, as the SLIM header carries them.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Debug)]
pub struct Name {
    /// First component (hashed organization).
    pub component_0: u64,
    /// Second component (hashed namespace).
    pub component_1: u64,
    /// Third component (hashed application).
    pub component_2: u64,
    /// Instance id.
    pub component_3: u64,
}

/// Most bytes a `Name` takes: four one-byte keys and four ten-byte varints.
const NAME_MAX: usize = 4 * 11;

/// Writes `v` as a varint at `out[at..]` (room for ten bytes), returning the position after it.
#[inline]
fn put_varint(out: &mut [u8; NAME_MAX], mut at: usize, mut v: u64) -> usize {
    while v >= 0x80 {
        out[at] = (v as u8) | 0x80;
        v >>= 7;
        at += 1;
    }
    out[at] = v as u8;
    at + 1
}

/// Writes a `uint64` field with number `tag` (1..=15) and value `v` (not zero) in one piece, as
/// `encoding::uint64::encode` would byte by byte.
#[inline]
pub(super) fn put_u64_field(tag: u8, v: u64, buf: &mut impl BufMut) {
    let mut out = [0u8; NAME_MAX];
    out[0] = tag << 3;
    let at = put_varint(&mut out, 1, v);
    buf.put_slice(&out[..at]);
}

impl Name {
    fn fields(&self) -> [u64; 4] {
        [self.component_0, self.component_1, self.component_2, self.component_3]
    }
}

impl prost::Message for Name {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        let mut out = [0u8; NAME_MAX];
        let mut at = 0;
        for (tag, v) in (1u8..).zip(self.fields()) {
            if v != 0 {
                // Key: field number << 3 | wire type 0 (varint); one byte for fields 1..=15.
                out[at] = tag << 3;
                at = put_varint(&mut out, at + 1, v);
            }
        }
        buf.put_slice(&out[..at]);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::uint64::merge(wire_type, &mut self.component_0, buf, ctx),
            2 => encoding::uint64::merge(wire_type, &mut self.component_1, buf, ctx),
            3 => encoding::uint64::merge(wire_type, &mut self.component_2, buf, ctx),
            4 => encoding::uint64::merge(wire_type, &mut self.component_3, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        self.fields().into_iter().filter(|v| *v != 0).map(|v| 1 + encoded_len_varint(v)).sum()
    }

    fn clear(&mut self) {
        *self = Name::default();
    }
}

/// `Content { string content_type = 1; bytes blob = 2; }`: a publish's payload and its type.
#[derive(Clone, Default, PartialEq, Eq, Hash, Debug)]
pub struct Content {
    /// What the payload is (`msg` for application data, [`Content::MSG`]).
    pub content_type: Text,
    /// The payload (a slice of the received frame; shared, never copied, when sent).
    pub blob: Bytes,
}

impl Content {
    /// The content type of application data.
    pub const MSG: &'static str = "msg";

    /// A content type as a [`Text`]: the common ones (empty, [`Content::MSG`]) without allocating.
    pub fn type_text(content_type: &str) -> Text {
        match content_type {
            "" => Text::default(),
            Content::MSG => Text::from_static(Content::MSG),
            other => Text::from(other),
        }
    }
}

impl prost::Message for Content {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if !self.content_type.is_empty() {
            self.content_type.encode_field(1, buf);
        }
        if !self.blob.is_empty() {
            // As `encoding::bytes::encode` writes it, without its clone of the `Bytes` (a reference
            // count taken and dropped, and for a payload made from a `Vec` a shared header
            // allocated on its first clone: ~5% of a sending app's CPU).
            encoding::encode_key(2, WireType::LengthDelimited, buf);
            encoding::encode_varint(self.blob.len() as u64, buf);
            buf.put_slice(&self.blob);
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
            1 => merge_text(&mut self.content_type, wire_type, buf, ctx),
            2 => encoding::bytes::merge(wire_type, &mut self.blob, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let ty = if self.content_type.is_empty() { 0 } else { self.content_type.encoded_field_len(1) };
        let blob = if self.blob.is_empty() { 0 } else { encoding::bytes::encoded_len(2, &self.blob) };
        ty + blob
    }

    fn clear(&mut self) {
        *self = Content::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    /// What prost generates for the same messages (the reference encoding and decoding).
    #[derive(Clone, PartialEq, prost::Message)]
    struct GeneratedName {
        #[prost(uint64, tag = "1")]
        component_0: u64,
        #[prost(uint64, tag = "2")]
        component_1: u64,
        #[prost(uint64, tag = "3")]
        component_2: u64,
        #[prost(uint64, tag = "4")]
        component_3: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct GeneratedContent {
        #[prost(string, tag = "1")]
        content_type: String,
        #[prost(bytes = "bytes", tag = "2")]
        blob: Bytes,
    }

    #[test]
    fn names_encode_and_decode_as_prost_generated_code_does() {
        let values = [0, 1, 127, 128, 300, 1 << 35, 0x873e580376ea963b, u64::MAX - 1, u64::MAX];
        for (i, a) in values.iter().enumerate() {
            for b in values.iter().skip(i % 3) {
                let [c0, c1, c2, c3] = [*a, *b, a ^ b, a.wrapping_add(*b)];
                let ours = Name { component_0: c0, component_1: c1, component_2: c2, component_3: c3 };
                let generated = GeneratedName { component_0: c0, component_1: c1, component_2: c2, component_3: c3 };
                assert_eq!(ours.encode_to_vec(), generated.encode_to_vec());
                assert_eq!(ours.encoded_len(), generated.encoded_len());
                assert_eq!(Name::decode(generated.encode_to_vec().as_slice()).expect("decodes"), ours);
            }
        }
    }

    #[test]
    fn names_skip_unknown_fields_and_refuse_garbage() {
        let mut frame = GeneratedName { component_0: 5, component_3: 9, ..Default::default() }.encode_to_vec();
        encoding::string::encode(9, &"x".to_string(), &mut frame);
        encoding::uint64::encode(1, &6, &mut frame);
        let ours = Name::decode(frame.as_slice()).expect("decodes");
        assert_eq!((ours.component_0, ours.component_3), (6, 9));
        // A varint that never ends, a field cut short.
        assert!(Name::decode(&[0x08, 0xff, 0xff][..]).is_err());
        assert!(Name::decode(&[0x12, 0x05, 0x01][..]).is_err());
    }

    #[test]
    fn content_encodes_and_decodes_as_prost_generated_code_does() {
        for (ty, blob) in [("msg", &b"hello"[..]), ("", &b""[..]), ("text/ü", &b"\0\x01"[..]), ("x", &b""[..])] {
            let ours = Content { content_type: Content::type_text(ty), blob: Bytes::copy_from_slice(blob) };
            let generated = GeneratedContent { content_type: ty.into(), blob: Bytes::copy_from_slice(blob) };
            assert_eq!(ours.encode_to_vec(), generated.encode_to_vec());
            assert_eq!(ours.encoded_len(), generated.encoded_len());
            let frame = Bytes::from(generated.encode_to_vec());
            let back = Content::decode(frame.clone()).expect("decodes");
            assert_eq!(back, ours);
            assert_eq!(&*back.content_type, ty);
        }
        // Not UTF-8: both refuse it.
        const BAD: &[u8] = &[0x0a, 0x02, 0xff, 0xfe];
        assert!(GeneratedContent::decode(BAD).is_err());
        assert!(Content::decode(Bytes::from_static(BAD)).is_err());
    }

    #[test]
    fn content_type_and_payload_are_slices_of_the_frame() {
        // A content type longer than a `Text` holds in itself (a short one is copied into it).
        let generated =
            GeneratedContent { content_type: "application/vnd.example+json".into(), blob: Bytes::from_static(b"{}") };
        let frame = Bytes::from(generated.encode_to_vec());
        let within = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        let back = Content::decode(frame.clone()).expect("decodes");
        assert!(within.contains(&(back.content_type.as_ptr() as usize)));
        assert!(within.contains(&(back.blob.as_ptr() as usize)));
        assert_eq!(back.content_type, "application/vnd.example+json");
    }
}
