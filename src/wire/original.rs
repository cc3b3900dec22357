//! The session header's `OriginalName` (proto/dataplane.proto), written by hand instead of
//! generated (build.rs maps the proto type here): its three strings are kept as [`Text`]s (UTF-8
//! checked, as prost checks a `string`; short ones held in the value, longer ones slices of the
//! received frame), not copied into three `String`s. A receiving app compares them with the names
//! of the previous message of the same stream (`session::context::into_delivery`) and copies them
//! only for a name it has not seen: six allocations and frees fewer per received data message. On
//! the wire nothing changes: the encoding is the one prost generates for the message (proto3: an
//! empty string and a zero id are not written; an unknown field is skipped; a repeated field keeps
//! its last value).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use prost::DecodeError;
use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};

use super::name::Strings;

/// A UTF-8 string: up to [`INLINE`] bytes held in the value itself (a name's components, a
/// content type: no reference count taken and dropped per message, and nothing of the frame kept
/// alive by them), longer ones as shared bytes (a slice of the frame they were decoded from, or
/// the bytes of a `String`: a token, an MLS key package).
#[derive(Clone)]
pub struct Text(Repr);

/// The longest string a [`Text`] holds in itself.
pub const INLINE: usize = 22;

#[derive(Clone)]
enum Repr {
    /// `bytes[..len]`, `len <= INLINE`. What follows `len` is not part of the string and is never
    /// read: zeros, or the frame bytes that followed the string (see [`Text::slice_of`]).
    Inline {
        len: u8,
        bytes: [u8; INLINE],
    },
    Shared(Bytes),
}

impl Default for Text {
    fn default() -> Self {
        Text(Repr::Inline { len: 0, bytes: [0; INLINE] })
    }
}

impl Text {
    /// The string.
    pub fn as_str(&self) -> &str {
        // SAFETY: a `Text` is made only from a `String`, a `&str`, or bytes checked to be UTF-8
        // (`Text::slice_of`, `merge_text`), and its bytes never change.
        #[allow(unsafe_code)]
        unsafe {
            std::str::from_utf8_unchecked(self.as_bytes())
        }
    }

    /// The string's bytes.
    fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            // `len <= INLINE` by construction: never the empty fallback.
            Repr::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            Repr::Shared(b) => b,
        }
    }

    /// A static string, without allocating.
    pub fn from_static(s: &'static str) -> Self {
        Text(Repr::Shared(Bytes::from_static(s.as_bytes())))
    }

    /// `bytes` (UTF-8) held in the value, when they are short enough.
    fn inline(bytes: &[u8]) -> Option<Text> {
        let mut inline = [0; INLINE];
        inline.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(Text(Repr::Inline { len: bytes.len() as u8, bytes: inline }))
    }

    /// `bytes`, a slice of `frame`, as a `Text` (held in the value, or sharing `frame`), when
    /// they are UTF-8.
    pub(super) fn slice_of(frame: &Bytes, bytes: &[u8]) -> Option<Text> {
        super::scan::utf8(bytes).ok()?;
        if bytes.len() > INLINE {
            return Some(Text(Repr::Shared(frame.slice_ref(bytes))));
        }
        // A whole block of INLINE bytes from where the string starts, when the frame has that
        // many: copying the string's own length into the array and then moving the value (read
        // with wide loads right after narrow writes) stalled the CPU on every string (store
        // forwarding fails): ~70% of this path's time in a receiving app's profile.
        let start = (bytes.as_ptr() as usize).wrapping_sub(frame.as_ptr() as usize);
        if let Some(block) = frame.get(start..).and_then(|rest| rest.first_chunk::<INLINE>()) {
            return Some(Text(Repr::Inline { len: bytes.len() as u8, bytes: *block }));
        }
        Text::inline(bytes)
    }

    /// Writes the string as field `tag` of a message (as prost writes a `string` or `bytes`).
    pub(super) fn encode_field(&self, tag: u32, buf: &mut impl BufMut) {
        let bytes = self.as_bytes();
        encoding::encode_key(tag, WireType::LengthDelimited, buf);
        encoding::encode_varint(bytes.len() as u64, buf);
        buf.put_slice(bytes);
    }

    /// Length of [`Text::encode_field`]'s output.
    pub(super) fn encoded_field_len(&self, tag: u32) -> usize {
        encoding::key_len(tag) + encoding::encoded_len_varint(self.len() as u64) + self.len()
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Text {}

impl Hash for Text {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
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
        Text::inline(s.as_bytes()).unwrap_or_else(move || Text(Repr::Shared(Bytes::from(s))))
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text::inline(s.as_bytes()).unwrap_or_else(|| Text(Repr::Shared(Bytes::copy_from_slice(s.as_bytes()))))
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
            if !text.is_empty() {
                text.encode_field(tag, buf);
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
        let texts: usize =
            self.tagged().filter(|(_, text)| !text.is_empty()).map(|(tag, text)| text.encoded_field_len(tag)).sum();
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
    *value = Text::inline(&bytes).unwrap_or_else(move || Text(Repr::Shared(bytes)));
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
    fn decoded_strings_are_held_in_the_value_when_short_and_slices_of_the_frame_when_long() {
        let long = "a".repeat(INLINE + 1);
        let short = "b".repeat(INLINE);
        let (_, generated) = pair(&long, "ns", &short, 7);
        let frame = Bytes::from(generated.encode_to_vec());
        let within =
            |p: *const u8| (frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len()).contains(&(p as usize));
        let back = OriginalName::decode(frame.clone()).expect("decodes");
        assert!(within(back.texts()[0].as_ptr()), "a long string shares the frame");
        assert!(!within(back.texts()[1].as_ptr()) && !within(back.texts()[2].as_ptr()), "short ones do not");
        assert_eq!((&*back.texts()[0], &*back.texts()[1], &*back.texts()[2]), (long.as_str(), "ns", short.as_str()));
    }

    #[test]
    fn texts_compare_hash_and_encode_by_their_string_whatever_holds_them() {
        use std::collections::hash_map::DefaultHasher;
        let hash = |t: &Text| {
            let mut h = DefaultHasher::new();
            t.hash(&mut h);
            h.finish()
        };
        for s in ["", "x", &"y".repeat(INLINE), &"z".repeat(INLINE + 1), "ünïcode"] {
            let owned = Text::from(s.to_string());
            let frame = Bytes::copy_from_slice(s.as_bytes());
            let sliced = Text::slice_of(&frame, &frame).expect("UTF-8");
            // Within a longer frame: a short one is copied as a whole block, bytes after it too.
            let longer = Bytes::from([s.as_bytes(), &[b'#'; 2 * INLINE][..]].concat());
            let within = Text::slice_of(&longer, &longer[..s.len()]).expect("UTF-8");
            let shared = Text(Repr::Shared(Bytes::copy_from_slice(s.as_bytes())));
            for t in [&owned, &sliced, &within, &shared] {
                assert_eq!(t.as_str(), s);
                assert_eq!(*t, shared);
                assert_eq!(hash(t), hash(&shared));
                let mut field = Vec::new();
                t.encode_field(3, &mut field);
                let mut expected = Vec::new();
                encoding::string::encode(3, &s.to_string(), &mut expected);
                assert_eq!(field, expected);
                assert_eq!(t.encoded_field_len(3), expected.len());
            }
        }
        assert!(Text::slice_of(&Bytes::from_static(&[0xff]), &[0xff]).is_none());
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
