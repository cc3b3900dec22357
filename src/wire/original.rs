//! The session header's `OriginalName` (proto/dataplane.proto), written by hand instead of
//! generated (build.rs maps the proto type here): its three strings are kept as slices of the
//! received frame ([`Text`]: UTF-8 checked, as prost checks a `string`), not copied into three
//! `String`s. A receiving app compares them with the names of the previous message of the same
//! stream (`session::context::into_delivery`) and copies them only for a name it has not seen:
//! six allocations and frees fewer per received data message. On the wire nothing changes: the
//! encoding is the one prost generates for the message (proto3: an empty string and a zero id
//! are not written; an unknown field is skipped; a repeated field keeps its last value).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use prost::DecodeError;
use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};

use super::name::Strings;

/// A UTF-8 string held as shared bytes (a slice of the frame it was decoded from, or the bytes of
/// a `String`).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Text(Bytes);

impl Text {
    /// The string.
    pub fn as_str(&self) -> &str {
        // SAFETY: a `Text` is made only from a `String`, a `&str`, or bytes checked to be UTF-8
        // (`Text::slice_of`, `merge_text`), and its bytes never change.
        #[allow(unsafe_code)]
        unsafe {
            std::str::from_utf8_unchecked(&self.0)
        }
    }

    /// A static string, without allocating.
    pub fn from_static(s: &'static str) -> Self {
        Text(Bytes::from_static(s.as_bytes()))
    }

    /// `bytes`, a slice of `frame`, as a `Text` sharing `frame`, when they are UTF-8.
    pub(super) fn slice_of(frame: &Bytes, bytes: &[u8]) -> Option<Text> {
        super::scan::utf8(bytes).ok()?;
        Some(Text(frame.slice_ref(bytes)))
    }

    /// The bytes of the string, shared.
    pub(super) fn as_bytes_shared(&self) -> &Bytes {
        &self.0
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Text(Bytes::from(s))
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// `OriginalName { string component_0..2 = 1..3; uint64 component_3 = 4; }`: a name's three
/// strings and its instance id.
#[derive(Clone, Default)]
pub struct OriginalName {
    texts: Texts,
    /// Instance id.
    pub component_3: u64,
}

/// The three strings of an [`OriginalName`]: its own (decoded from a frame), or those of a
/// [`super::Name`], shared: a sender's every data message carries its source and destination
/// strings, and a clone of them is then one reference count, not three (nor three drops, on
/// another thread: the message is encoded and dropped where the connection's writer runs).
#[derive(Clone)]
enum Texts {
    Own([Text; 3]),
    Shared(Arc<Strings>),
}

impl Default for Texts {
    fn default() -> Self {
        Texts::Own(Default::default())
    }
}

impl OriginalName {
    /// From its three strings and id.
    pub fn new(component_0: Text, component_1: Text, component_2: Text, component_3: u64) -> Self {
        OriginalName { texts: Texts::Own([component_0, component_1, component_2]), component_3 }
    }

    /// Sharing the strings of a [`super::Name`].
    pub(super) fn shared(strings: Arc<Strings>, component_3: u64) -> Self {
        OriginalName { texts: Texts::Shared(strings), component_3 }
    }

    /// The three strings (organization, namespace, application).
    pub fn texts(&self) -> &[Text; 3] {
        match &self.texts {
            Texts::Own(t) => t,
            Texts::Shared(s) => &s.text,
        }
    }

    /// Sets string `i` (0..3), making the strings this name's own first if they were shared.
    fn set_text(&mut self, i: usize, text: Text) {
        if let Texts::Shared(s) = &self.texts {
            self.texts = Texts::Own(s.text.clone());
        }
        if let Texts::Own(texts) = &mut self.texts
            && let Some(slot) = texts.get_mut(i)
        {
            *slot = text;
        }
    }

    fn tagged(&self) -> impl Iterator<Item = (u32, &Text)> {
        (1u32..).zip(self.texts().iter())
    }
}

impl PartialEq for OriginalName {
    fn eq(&self, other: &Self) -> bool {
        self.component_3 == other.component_3 && self.texts() == other.texts()
    }
}

impl Eq for OriginalName {}

impl Hash for OriginalName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.texts().hash(state);
        self.component_3.hash(state);
    }
}

impl fmt::Debug for OriginalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [c0, c1, c2] = self.texts();
        f.debug_struct("OriginalName")
            .field("component_0", c0)
            .field("component_1", c1)
            .field("component_2", c2)
            .field("component_3", &self.component_3)
            .finish()
    }
}

impl prost::Message for OriginalName {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for (tag, text) in self.tagged() {
            if !text.0.is_empty() {
                encoding::bytes::encode(tag, &text.0, buf);
            }
        }
        if self.component_3 != 0 {
            super::fast::put_u64_field(4, self.component_3, buf);
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
            1..=3 => {
                // A string field replaces the value it had (the last one written wins).
                let mut text = Text::default();
                merge_text(&mut text, wire_type, buf, ctx)?;
                self.set_text(tag as usize - 1, text);
                Ok(())
            }
            4 => encoding::uint64::merge(wire_type, &mut self.component_3, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let texts: usize = self
            .tagged()
            .filter(|(_, text)| !text.0.is_empty())
            .map(|(tag, text)| encoding::bytes::encoded_len(tag, &text.0))
            .sum();
        let id = if self.component_3 != 0 { encoding::uint64::encoded_len(4, &self.component_3) } else { 0 };
        texts + id
    }

    fn clear(&mut self) {
        *self = OriginalName::default();
    }
}

/// Reads a `string` field into `value` without copying it out of `buf` (when `buf` is `Bytes`,
/// as a frame being decoded is). Bytes that are not UTF-8 fail with prost's own error for a
/// `string` (the frame is malformed, as before), and `value` is left as it was.
pub(super) fn merge_text(
    value: &mut Text,
    wire_type: WireType,
    buf: &mut impl Buf,
    ctx: DecodeContext,
) -> Result<(), DecodeError> {
    let mut bytes = Bytes::new();
    encoding::bytes::merge(wire_type, &mut bytes, buf, ctx.clone())?;
    if super::scan::utf8(&bytes).is_err() {
        // The same bytes through prost's `string` decoding, for its error.
        let mut field = Vec::with_capacity(bytes.len() + 10);
        encoding::encode_varint(bytes.len() as u64, &mut field);
        field.extend_from_slice(&bytes);
        let mut s = String::new();
        encoding::string::merge(WireType::LengthDelimited, &mut s, &mut field.as_slice(), ctx)?;
        *value = Text::from(s);
        return Ok(());
    }
    *value = Text(bytes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    /// What prost generates for the same message (the reference encoding and decoding).
    #[derive(Clone, PartialEq, prost::Message)]
    struct Generated {
        #[prost(string, tag = "1")]
        component_0: String,
        #[prost(string, tag = "2")]
        component_1: String,
        #[prost(string, tag = "3")]
        component_2: String,
        #[prost(uint64, tag = "4")]
        component_3: u64,
    }

    fn pair(c0: &str, c1: &str, c2: &str, id: u64) -> (OriginalName, Generated) {
        let ours = OriginalName::new(c0.into(), c1.into(), c2.into(), id);
        let generated =
            Generated { component_0: c0.into(), component_1: c1.into(), component_2: c2.into(), component_3: id };
        (ours, generated)
    }

    #[test]
    fn encodes_and_decodes_as_prost_generated_code_does() {
        for (c0, c1, c2, id) in
            [("org", "ns", "app", 42), ("", "ns", "", 0), ("", "", "", 0), ("ü", "ß", "x", u64::MAX)]
        {
            let (ours, generated) = pair(c0, c1, c2, id);
            assert_eq!(ours.encode_to_vec(), generated.encode_to_vec());
            assert_eq!(ours.encoded_len(), generated.encoded_len());
            let back = OriginalName::decode(Bytes::from(generated.encode_to_vec())).expect("decodes");
            assert_eq!(back, ours);
        }
    }

    #[test]
    fn decoded_strings_are_slices_of_the_frame() {
        let (_, generated) = pair("org", "ns", "app", 7);
        let frame = Bytes::from(generated.encode_to_vec());
        let within = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        let back = OriginalName::decode(frame.clone()).expect("decodes");
        assert!(within.contains(&(back.texts()[0].as_ptr() as usize)));
        assert_eq!((back.texts()[0].as_str(), &*back.texts()[2]), ("org", "app"));
    }

    #[test]
    fn repeated_unknown_and_invalid_fields_as_prost() {
        // component_0 twice (the last wins), an unknown field 9 (skipped).
        let mut frame = Generated { component_0: "a".into(), ..Default::default() }.encode_to_vec();
        frame.extend(Generated { component_0: "b".into(), component_3: 3, ..Default::default() }.encode_to_vec());
        encoding::uint64::encode(9, &5, &mut frame);
        let ours = OriginalName::decode(frame.as_slice()).expect("decodes");
        let generated = Generated::decode(frame.as_slice()).expect("decodes");
        assert_eq!((&*ours.texts()[0], ours.component_3), (generated.component_0.as_str(), generated.component_3));
        // Not UTF-8: both refuse it.
        const BAD: &[u8] = &[0x0a, 0x02, 0xff, 0xfe];
        assert!(Generated::decode(BAD).is_err());
        assert!(OriginalName::decode(BAD).is_err());
        assert!(OriginalName::decode(Bytes::from_static(BAD)).is_err());
    }
}
