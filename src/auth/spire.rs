//! SPIRE-style trust bundles: a JSON object `{"<trust domain>": "<base64 of a JWKS>"}`.

use std::path::Path;

use base64::Engine;

use super::AuthError;
use super::key::{parse_jwks, read_small_file};

/// A bundle file larger than this is refused.
const MAX_BUNDLE_BYTES: u64 = 4 << 20;

/// Reads the bundle at `path` and returns the JWKS (JSON text) of its first trust domain.
pub fn jwks_from_spire_bundle(path: impl AsRef<Path>) -> Result<String, AuthError> {
    let path = path.as_ref();
    let text = read_small_file(path, MAX_BUNDLE_BYTES)?;
    jwks_from_spire_bundle_str(&text).map_err(|e| AuthError::Config(format!("{}: {e}", path.display())))
}

/// Like [`jwks_from_spire_bundle`], from the bundle's JSON text.
pub fn jwks_from_spire_bundle_str(bundle: &str) -> Result<String, String> {
    let value: serde_json::Value = serde_json::from_str(bundle).map_err(|e| format!("bundle is not JSON: {e}"))?;
    let Some(map) = value.as_object() else {
        return Err("bundle is not a JSON object".into());
    };
    // serde_json keeps insertion order only with `preserve_order`; take the first in file order.
    let Some((domain, encoded)) = first_entry(bundle, map) else {
        return Err("bundle has no trust domain".into());
    };
    let Some(encoded) = encoded.as_str() else {
        return Err(format!("trust domain {domain:?}: value is not a string"));
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded.trim()))
        .map_err(|e| format!("trust domain {domain:?}: not base64: {e}"))?;
    let jwks = String::from_utf8(decoded).map_err(|_| format!("trust domain {domain:?}: JWKS is not UTF-8"))?;
    parse_jwks(&jwks).map_err(|e| format!("trust domain {domain:?}: {e}"))?;
    Ok(jwks)
}

/// The entry whose key appears first in the text (maps from serde_json are sorted by key).
fn first_entry<'a>(
    text: &str,
    map: &'a serde_json::Map<String, serde_json::Value>,
) -> Option<(&'a String, &'a serde_json::Value)> {
    map.iter().min_by_key(|(k, _)| {
        let quoted = serde_json::to_string(k).unwrap_or_default();
        text.find(&quoted).unwrap_or(usize::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_domain_wins_and_bad_input_is_typed() {
        let jwks = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"k1","alg":"HS256"}]}"#;
        let b64 = base64::engine::general_purpose::STANDARD.encode(jwks);
        let bundle = format!(r#"{{"zeta.org": "{b64}", "alpha.org": "bm90IGpzb24="}}"#);
        assert_eq!(jwks_from_spire_bundle_str(&bundle).unwrap(), jwks);
        assert!(jwks_from_spire_bundle_str("{}").is_err());
        assert!(jwks_from_spire_bundle_str("[]").is_err());
        assert!(jwks_from_spire_bundle_str(r#"{"a": "bm90IGpzb24="}"#).is_err());
        assert!(jwks_from_spire_bundle_str(r#"{"a": "%%%"}"#).is_err());
        assert!(matches!(jwks_from_spire_bundle("/nonexistent/bundle.json"), Err(AuthError::Config(_))));
    }
}
