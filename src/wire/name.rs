//! SLIM names: three hashed string components plus an instance id.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use twox_hash::XxHash64;

use super::original::{OriginalName, Text};
use super::proto;

/// Instance id meaning "no id / any instance".
pub const ANY_ID: u64 = u64::MAX;

/// Hashes one name component the way the reference does: `XXH64(seed 0, utf8(s) ‖ 0xFF)`
/// (Rust's `Hash for str` appends the `0xFF` terminator).
pub fn hash_component(s: &str) -> u64 {
    let mut h = XxHash64::with_seed(0);
    h.write(s.as_bytes());
    h.write(&[0xFF]);
    h.finish()
}

/// A name: `[c0, c1, c2, id]`, optionally with the three original strings.
///
/// Equality and hashing use only the four integers; the strings ride along for display and for
/// the wire fields that carry them (Subscribe/Unsubscribe components, session-header OriginalName).
#[derive(Clone)]
pub struct Name {
    components: [u64; 4],
    strings: Option<Arc<Strings>>,
}

/// A name's three strings, and the same as the wire text of an `OriginalName`, shared by every
/// message that carries them (a sender's data messages carry their source and destination
/// strings: no copy of them per message).
pub(super) struct Strings {
    strings: [String; 3],
    pub(super) text: [Text; 3],
}

impl Strings {
    fn new(strings: [String; 3]) -> Arc<Strings> {
        let text = strings.each_ref().map(|s| Text::from(s.as_str()));
        Arc::new(Strings { strings, text })
    }
}

impl Name {
    /// Builds a name from three strings and an id (`None` = [`ANY_ID`]).
    pub fn new(c0: &str, c1: &str, c2: &str, id: Option<u64>) -> Self {
        Self {
            components: [hash_component(c0), hash_component(c1), hash_component(c2), id.unwrap_or(ANY_ID)],
            strings: Some(Strings::new([c0.to_string(), c1.to_string(), c2.to_string()])),
        }
    }

    /// Builds a name from raw components only (no strings known).
    pub fn from_components(components: [u64; 4]) -> Self {
        Self { components, strings: None }
    }

    /// Builds a name from raw components and optional strings.
    pub fn from_parts(components: [u64; 4], strings: Option<[String; 3]>) -> Self {
        Self { components, strings: strings.map(Strings::new) }
    }

    /// From a protobuf `Name` (no strings).
    pub fn from_proto(n: &proto::Name) -> Self {
        Self::from_components([n.component_0, n.component_1, n.component_2, n.component_3])
    }

    /// From a session-header `OriginalName`: strings hashed, id kept.
    pub fn from_original(n: &OriginalName) -> Self {
        let [c0, c1, c2] = n.texts();
        Self::new(c0, c1, c2, Some(n.component_3))
    }

    /// From the string fields of a Subscribe/Unsubscribe plus the header destination id.
    /// Falls back to the header hashes when all strings are empty (ccc-era Unsubscribe).
    pub fn from_subscription(c0: &str, c1: &str, c2: &str, header_dst: &proto::Name) -> Self {
        if c0.is_empty() && c1.is_empty() && c2.is_empty() {
            return Self::from_proto(header_dst);
        }
        Self::new(c0, c1, c2, Some(header_dst.component_3))
    }

    /// The protobuf form (integers only).
    pub fn to_proto(&self) -> proto::Name {
        proto::Name {
            component_0: self.components[0],
            component_1: self.components[1],
            component_2: self.components[2],
            component_3: self.components[3],
        }
    }

    /// The `OriginalName` form; empty strings when the strings are unknown.
    pub fn to_original(&self) -> OriginalName {
        match &self.strings {
            Some(s) => OriginalName::shared(s.clone(), self.id()),
            None => OriginalName::new(Text::default(), Text::default(), Text::default(), self.id()),
        }
    }

    /// All four components.
    pub fn components(&self) -> [u64; 4] {
        self.components
    }

    /// The instance id (component 3).
    pub fn id(&self) -> u64 {
        self.components[3]
    }

    /// True when the id is [`ANY_ID`].
    pub fn has_any_id(&self) -> bool {
        self.components[3] == ANY_ID
    }

    /// A copy with another id.
    pub fn with_id(&self, id: u64) -> Self {
        let mut n = self.clone();
        n.components[3] = id;
        n
    }

    /// A copy with the id reset to [`ANY_ID`].
    pub fn without_id(&self) -> Self {
        self.with_id(ANY_ID)
    }

    /// Sets the id in place.
    pub fn set_id(&mut self, id: u64) {
        self.components[3] = id;
    }

    /// The original strings, if known.
    pub fn strings(&self) -> Option<&[String; 3]> {
        self.strings.as_deref().map(|s| &s.strings)
    }

    /// The original strings, or three empty strings.
    pub fn strings_or_empty(&self) -> [String; 3] {
        match self.strings() {
            Some(s) => s.clone(),
            None => [String::new(), String::new(), String::new()],
        }
    }

    /// The "type" key: the three hashed components.
    pub fn type_key(&self) -> (u64, u64, u64) {
        (self.components[0], self.components[1], self.components[2])
    }

    /// Compares the three hashed components only.
    pub fn equal_without_id(&self, other: &Name) -> bool {
        self.type_key() == other.type_key()
    }

    /// `org/ns/app` when strings are known, else the hex form of the three components.
    pub fn short(&self) -> String {
        match self.strings() {
            Some(s) => format!("{}/{}/{}", s[0], s[1], s[2]),
            None => format!("{:x}/{:x}/{:x}", self.components[0], self.components[1], self.components[2]),
        }
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.components == other.components
    }
}

impl Eq for Name {}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.components.hash(state);
    }
}

impl fmt::Display for Name {
    /// `{c0:x}/{c1:x}/{c2:x}/{id:x}` followed by ` (s0/s1/s2/{id:x})` when the strings are known.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [c0, c1, c2, id] = self.components;
        write!(f, "{c0:x}/{c1:x}/{c2:x}/{id:x}")?;
        if let Some(s) = self.strings() {
            write!(f, " ({}/{}/{}/{id:x})", s[0], s[1], s[2])?;
        }
        Ok(())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_vectors_match_the_reference() {
        assert_eq!(hash_component("org"), 0x873e580376ea963b);
        assert_eq!(hash_component("default"), 0x219303c7c93f9668);
        assert_eq!(hash_component("ns"), 0xeef9769a4c6990d1);
        assert_eq!(hash_component("agntcy"), 0x169ca82eb17d6bc2);
        assert_eq!(hash_component(""), 0x95634172a60b7544);
        assert_eq!(hash_component("App_ONE"), 0x60c8635ebb588bbf);
        assert_eq!(hash_component("alice"), 8903823788458029442);
        assert_ne!(hash_component("org"), 0xc38126cd35e92b15, "plain XXH64 would be wrong");
    }

    #[test]
    fn equality_ignores_strings_but_not_id() {
        let a = Name::new("org", "ns", "a", None);
        let b = Name::from_components(a.components());
        assert_eq!(a, b);
        assert_ne!(a, a.with_id(5));
        assert!(a.equal_without_id(&a.with_id(5)));
        assert_eq!(a.id(), ANY_ID);
    }

    #[test]
    fn display_shows_hex_and_strings() {
        let n = Name::new("org", "default", "alice", None);
        assert_eq!(
            n.to_string(),
            "873e580376ea963b/219303c7c93f9668/7b90bc8fa5b6b182/ffffffffffffffff (org/default/alice/ffffffffffffffff)"
        );
        assert_eq!(
            Name::from_components(n.components()).to_string(),
            "873e580376ea963b/219303c7c93f9668/7b90bc8fa5b6b182/ffffffffffffffff"
        );
    }

    #[test]
    fn original_names_share_the_strings_and_encode_as_their_own() {
        use prost::Message as _;
        let n = Name::new("org", "ns", "app", Some(7));
        let shared = n.to_original();
        let own = OriginalName::new("org".into(), "ns".into(), "app".into(), 7);
        assert_eq!(shared, own);
        assert_eq!(shared.encode_to_vec(), own.encode_to_vec());
        assert_eq!(shared.encoded_len(), own.encoded_len());
        assert_eq!(shared.texts()[0].as_ptr(), n.to_original().texts()[0].as_ptr(), "no copy per message");
        // A field decoded into a shared name changes that name only.
        let mut merged = n.to_original();
        let update = OriginalName::new("".into(), "other".into(), "".into(), 0).encode_to_vec();
        merged.merge(update.as_slice()).expect("decodes");
        assert_eq!((&*merged.texts()[0], &*merged.texts()[1], merged.component_3), ("org", "other", 7));
        assert_eq!(&*n.to_original().texts()[1], "ns");
        assert_eq!(Name::from_original(&merged), Name::new("org", "other", "app", Some(7)));
    }

    #[test]
    fn subscription_name_prefers_strings() {
        let hdr = proto::Name { component_0: 1, component_1: 2, component_2: 3, component_3: 9 };
        let n = Name::from_subscription("org", "ns", "a", &hdr);
        assert_eq!(n, Name::new("org", "ns", "a", Some(9)));
        let fallback = Name::from_subscription("", "", "", &hdr);
        assert_eq!(fallback.components(), [1, 2, 3, 9]);
    }
}
