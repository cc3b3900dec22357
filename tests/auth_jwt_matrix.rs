//! The JWT verification matrix: every algorithm family × key format (PEM, JWK, JWKS with and
//! without `kid`) × claim situation. Each cell states whether the token must be accepted.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};
use slim_bindings::auth::{
    Algorithm, AuthError, JwtSigner, JwtVerifier, JwtVerifierConfig, Key, KeyData, KeyFormat, StaticJwtProvider,
    TokenProvider, TokenVerifier,
};

const ISS: &str = "https://issuer.test";
const AUD: &str = "slim-test";
const SUB: &str = "agntcy/ns/alice";

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/jwt").join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(data(name)).unwrap()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A key pair of one family: `a` is the trusted key, `b` an unrelated one of the same kind.
struct Family {
    label: &'static str,
    algs: &'static [Algorithm],
    /// Private key text (PEM, or the HMAC secret) of keys a, b (untrusted) and c (in JWKS sets).
    private_a: String,
    private_b: String,
    private_c: String,
    /// Verifier key text in PEM form (public PEM, or the HMAC secret) of key a.
    public_pem_a: String,
}

fn families() -> Vec<Family> {
    let pair = |label, algs, stem: &str| Family {
        label,
        algs,
        private_a: read(&format!("{stem}_a.key")),
        private_b: read(&format!("{stem}_b.key")),
        private_c: read(&format!("{stem}_c.key")),
        public_pem_a: read(&format!("{stem}_a.pub.pem")),
    };
    vec![
        Family {
            label: "HS",
            algs: &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
            private_a: "hmac-secret-a-0123456789abcdef".into(),
            private_b: "hmac-secret-b-0123456789abcdef".into(),
            private_c: "hmac-secret-c-0123456789abcdef".into(),
            public_pem_a: "hmac-secret-a-0123456789abcdef".into(),
        },
        pair("RS", &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512], "rsa"),
        pair("PS", &[Algorithm::PS256, Algorithm::PS384, Algorithm::PS512], "rsa"),
        pair("ES256", &[Algorithm::ES256], "ec256"),
        pair("ES384", &[Algorithm::ES384], "ec384"),
        pair("EdDSA", &[Algorithm::EdDSA], "ed25519"),
    ]
}

fn encoding_key(alg: Algorithm, text: &str) -> EncodingKey {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => EncodingKey::from_secret(text.as_bytes()),
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(text.as_bytes()).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(text.as_bytes()).unwrap(),
        _ => EncodingKey::from_rsa_pem(text.as_bytes()).unwrap(),
    }
}

fn jwt_alg(alg: Algorithm) -> jsonwebtoken::Algorithm {
    alg.as_str().parse().unwrap()
}

/// The public JWK of a private key, with an optional kid.
fn public_jwk(alg: Algorithm, private: &str, kid: Option<&str>) -> Value {
    let mut jwk = Jwk::from_encoding_key(&encoding_key(alg, private), jwt_alg(alg)).unwrap();
    jwk.common.key_id = kid.map(str::to_string);
    serde_json::to_value(jwk).unwrap()
}

fn sign(alg: Algorithm, private: &str, kid: Option<&str>, claims: &Value) -> String {
    // RSA signing is slow in debug builds; identical requests (same claims, same second) share a token.
    static MEMO: std::sync::Mutex<Option<std::collections::HashMap<String, String>>> = std::sync::Mutex::new(None);
    let memo_key = format!("{alg}|{private}|{kid:?}|{claims}");
    if let Some(token) = MEMO.lock().unwrap().get_or_insert_default().get(&memo_key) {
        return token.clone();
    }
    let mut header = Header::new(jwt_alg(alg));
    header.kid = kid.map(str::to_string);
    let token = jsonwebtoken::encode(&header, claims, &encoding_key(alg, private)).unwrap();
    MEMO.lock().unwrap().get_or_insert_default().insert(memo_key, token.clone());
    token
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn verifier(key: Key) -> JwtVerifier {
    JwtVerifier::new(JwtVerifierConfig {
        public_key: Some(key),
        issuer: Some(ISS.into()),
        audience: Some(vec![AUD.into()]),
        subject: Some(SUB.into()),
        require_iss: true,
        require_aud: true,
        require_sub: true,
        ..JwtVerifierConfig::default()
    })
    .unwrap()
}

/// The verifier-side key layouts of the matrix.
#[derive(Clone, Copy, Debug)]
enum Layout {
    Pem,
    Jwk,
    JwkWithKid,
    /// JWKS [key c "other", key a "k1"]; tokens carry kid "k1".
    JwksKid,
    /// JWKS [key c, key a] without kids; tokens carry no kid, so every compatible key is tried.
    JwksNoKid,
}

impl Layout {
    const ALL: [Layout; 5] = [Layout::Pem, Layout::Jwk, Layout::JwkWithKid, Layout::JwksKid, Layout::JwksNoKid];

    fn key(self, fam: &Family, alg: Algorithm) -> Key {
        match self {
            Layout::Pem => Key::from_content(alg, KeyFormat::Pem, fam.public_pem_a.clone()),
            Layout::Jwk => Key::from_content(alg, KeyFormat::Jwk, public_jwk(alg, &fam.private_a, None).to_string()),
            Layout::JwkWithKid => {
                Key::from_content(alg, KeyFormat::Jwk, public_jwk(alg, &fam.private_a, Some("k1")).to_string())
            }
            Layout::JwksKid => Key::from_content(
                alg,
                KeyFormat::Jwks,
                json!({"keys": [public_jwk(alg, &fam.private_c, Some("other")), public_jwk(alg, &fam.private_a, Some("k1"))]})
                    .to_string(),
            ),
            Layout::JwksNoKid => Key::from_content(
                alg,
                KeyFormat::Jwks,
                json!({"keys": [public_jwk(alg, &fam.private_c, None), public_jwk(alg, &fam.private_a, None)]})
                    .to_string(),
            ),
        }
    }

    fn kid(self) -> Option<&'static str> {
        match self {
            Layout::JwkWithKid | Layout::JwksKid => Some("k1"),
            _ => None,
        }
    }
}

#[test]
fn verification_matrix() {
    let mut cells = 0;
    let mut failures = Vec::new();
    for fam in families() {
        for &alg in fam.algs {
            // One clock reading per algorithm, so the layouts below share (memoized) tokens.
            let t = now();
            let good_claims = || json!({"iss": ISS, "aud": [AUD], "sub": SUB, "iat": t, "nbf": t, "exp": t + 600});
            for layout in Layout::ALL {
                let v = verifier(layout.key(&fam, alg));
                let kid = layout.kid();
                let cases: Vec<(&str, String, bool)> = vec![
                    ("valid", sign(alg, &fam.private_a, kid, &good_claims()), true),
                    ("wrong aud", sign(alg, &fam.private_a, kid, &with(good_claims(), "aud", json!(["other"]))), false),
                    (
                        "wrong iss",
                        sign(alg, &fam.private_a, kid, &with(good_claims(), "iss", json!("https://evil"))),
                        false,
                    ),
                    ("wrong sub", sign(alg, &fam.private_a, kid, &with(good_claims(), "sub", json!("mallory"))), false),
                    ("expired", sign(alg, &fam.private_a, kid, &with(good_claims(), "exp", json!(t - 120))), false),
                    (
                        "not yet valid",
                        sign(alg, &fam.private_a, kid, &with(good_claims(), "nbf", json!(t + 300))),
                        false,
                    ),
                    (
                        "no exp",
                        sign(alg, &fam.private_a, kid, &{
                            let mut c = good_claims();
                            c.as_object_mut().unwrap().remove("exp");
                            c
                        }),
                        false,
                    ),
                    ("other key", sign(alg, &fam.private_b, kid, &good_claims()), false),
                    ("other key, its kid", sign(alg, &fam.private_b, Some("other"), &good_claims()), false),
                    // Key c is trusted only inside a JWKS, and with a kid only under its own kid.
                    (
                        "JWKS neighbour key",
                        sign(alg, &fam.private_c, kid, &good_claims()),
                        matches!(layout, Layout::JwksNoKid),
                    ),
                    (
                        "JWKS neighbour key, its kid",
                        sign(alg, &fam.private_c, Some("other"), &good_claims()),
                        matches!(layout, Layout::JwksKid | Layout::JwksNoKid),
                    ),
                    // A kid that no configured key has: fine for keys without ids, refused otherwise.
                    (
                        "unknown kid",
                        sign(alg, &fam.private_a, Some("nope"), &good_claims()),
                        !matches!(layout, Layout::JwksKid | Layout::JwkWithKid),
                    ),
                    ("within leeway", sign(alg, &fam.private_a, kid, &with(good_claims(), "exp", json!(t - 5))), true),
                ];
                for (case, token, accept) in cases {
                    cells += 1;
                    let got = v.try_verify(&token);
                    if got.is_ok() != accept {
                        failures.push(format!(
                            "{}/{alg}/{layout:?}/{case}: expected accept={accept}, got {got:?}",
                            fam.label
                        ));
                    }
                    if let Err(e) = &got
                        && !matches!(e, AuthError::Verification(_))
                    {
                        failures.push(format!("{}/{alg}/{layout:?}/{case}: untyped error {e:?}", fam.label));
                    }
                    // A second look answers the same (the first success is cached).
                    if v.try_verify(&token).is_ok() != accept {
                        failures.push(format!("{}/{alg}/{layout:?}/{case}: second check differs", fam.label));
                    }
                }
            }
        }
    }
    println!("verification matrix: {cells} cells, {} failures", failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(cells, 12 * 5 * 13);
}

#[test]
fn algorithm_from_header_must_match_key_family() {
    let t = now();
    let claims = json!({"exp": t + 600});
    let rsa_pub = read("rsa_a.pub.pem");
    let v = JwtVerifier::new(JwtVerifierConfig::with_key(Key::from_content(
        Algorithm::RS256,
        KeyFormat::Pem,
        rsa_pub.clone(),
    )))
    .unwrap();
    // RS key, but a PS/RS sibling algorithm from the header is fine.
    assert_eq!(v.try_verify(&sign(Algorithm::PS512, &read("rsa_a.key"), None, &claims)), Ok(()));
    // The classic confusion attack: HS256 with the RSA public key text as the HMAC secret.
    let forged = sign(Algorithm::HS256, &rsa_pub, None, &claims);
    assert!(matches!(v.try_verify(&forged), Err(AuthError::Verification(_))));
    // An EC token against an RSA key.
    assert!(v.try_verify(&sign(Algorithm::ES256, &read("ec256_a.key"), None, &claims)).is_err());

    // ES256 key: ES384 token (right family, wrong curve) is refused.
    let v = JwtVerifier::new(JwtVerifierConfig::with_key(Key::from_content(
        Algorithm::ES256,
        KeyFormat::Pem,
        read("ec256_a.pub.pem"),
    )))
    .unwrap();
    assert!(v.try_verify(&sign(Algorithm::ES384, &read("ec384_a.key"), None, &claims)).is_err());
    assert_eq!(v.try_verify(&sign(Algorithm::ES256, &read("ec256_a.key"), None, &claims)), Ok(()));

    // A JWK pinned to RS256 refuses PS256 tokens from the same key.
    let mut jwk = public_jwk(Algorithm::RS256, &read("rsa_a.key"), None);
    jwk["alg"] = json!("RS256");
    let v = JwtVerifier::new(JwtVerifierConfig::with_key(Key::from_content(
        Algorithm::RS256,
        KeyFormat::Jwk,
        jwk.to_string(),
    )))
    .unwrap();
    assert_eq!(v.try_verify(&sign(Algorithm::RS256, &read("rsa_a.key"), None, &claims)), Ok(()));
    assert!(v.try_verify(&sign(Algorithm::PS256, &read("rsa_a.key"), None, &claims)).is_err());
}

#[test]
fn configuration_errors_are_synchronous_and_typed() {
    let cfg = |key: Option<Key>, auto: bool| {
        JwtVerifier::new(JwtVerifierConfig { public_key: key, autoresolve: auto, ..JwtVerifierConfig::default() })
    };
    let is_config = |r: Result<JwtVerifier, AuthError>| matches!(r, Err(AuthError::Config(_)));
    assert!(is_config(cfg(None, false)));
    assert!(cfg(None, true).is_ok());
    assert!(is_config(cfg(Some(Key::from_file(Algorithm::RS256, KeyFormat::Pem, data("missing.pem"))), false)));
    assert!(is_config(cfg(Some(Key::from_content(Algorithm::RS256, KeyFormat::Pem, "not a pem")), false)));
    // Key / algorithm mismatches.
    assert!(is_config(cfg(Some(Key::from_file(Algorithm::RS256, KeyFormat::Pem, data("ec256_a.pub.pem"))), false)));
    assert!(is_config(cfg(Some(Key::from_file(Algorithm::ES256, KeyFormat::Pem, data("ec384_a.pub.pem"))), false)));
    assert!(is_config(cfg(Some(Key::from_file(Algorithm::ES384, KeyFormat::Pem, data("ec256_a.pub.pem"))), false)));
    assert!(is_config(cfg(Some(Key::from_file(Algorithm::EdDSA, KeyFormat::Pem, data("rsa_a.pub.pem"))), false)));
    let rsa_jwk = public_jwk(Algorithm::RS256, &read("rsa_a.key"), None).to_string();
    assert!(is_config(cfg(Some(Key::from_content(Algorithm::ES256, KeyFormat::Jwk, rsa_jwk)), false)));
    assert!(is_config(cfg(Some(Key::from_content(Algorithm::HS256, KeyFormat::Pem, "")), false)));
    // JWKS that is not JSON, has no keys, or only unusable keys.
    assert!(is_config(cfg(Some(Key::from_content(Algorithm::RS256, KeyFormat::Jwks, "<html>")), false)));
    assert!(is_config(cfg(Some(Key::from_content(Algorithm::RS256, KeyFormat::Jwks, r#"{"keys": []}"#)), false)));
    assert!(is_config(cfg(
        Some(Key::from_content(Algorithm::RS256, KeyFormat::Jwks, r#"{"keys": [{"kty": "weird"}]}"#)),
        false
    )));
    assert!(is_config(cfg(Some(Key::from_content(Algorithm::RS256, KeyFormat::Jwk, "[1,2]")), false)));
    // Files work the same as inline text.
    assert!(
        cfg(Some(Key::new(Algorithm::EdDSA, KeyFormat::Pem, KeyData::File(data("ed25519_a.pub.pem")))), false).is_ok()
    );

    // Signer: bad keys and key/algorithm mismatches fail at construction.
    let signer = |key: Key| JwtSigner::new(key, Duration::from_secs(60), None, None, None);
    assert!(matches!(
        signer(Key::from_file(Algorithm::ES256, KeyFormat::Pem, data("ec384_a.key"))),
        Err(AuthError::Config(_))
    ));
    assert!(matches!(
        signer(Key::from_file(Algorithm::RS256, KeyFormat::Pem, data("ec256_a.key"))),
        Err(AuthError::Config(_))
    ));
    assert!(matches!(
        signer(Key::from_file(Algorithm::EdDSA, KeyFormat::Pem, data("missing.key"))),
        Err(AuthError::Config(_))
    ));
    assert!(matches!(
        signer(Key::from_file(Algorithm::RS256, KeyFormat::Pem, data("rsa_a.pub.pem"))),
        Err(AuthError::Config(_))
    ));
    assert!(matches!(signer(Key::from_content(Algorithm::HS256, KeyFormat::Pem, "")), Err(AuthError::Config(_))));
    assert!(matches!(
        JwtSigner::new(Key::from_content(Algorithm::HS256, KeyFormat::Pem, "k"), Duration::ZERO, None, None, None),
        Err(AuthError::Config(_))
    ));
    assert!(matches!(
        JwtSigner::new(Key::from_content(Algorithm::HS256, KeyFormat::Pem, "k"), Duration::MAX, None, None, None),
        Err(AuthError::Config(_))
    ));
}

#[test]
fn bad_tokens_are_refused_with_typed_errors() {
    let v = JwtVerifier::new(JwtVerifierConfig::with_key(Key::from_file(
        Algorithm::ES256,
        KeyFormat::Pem,
        data("ec256_a.pub.pem"),
    )))
    .unwrap();
    let valid = sign(Algorithm::ES256, &read("ec256_a.key"), None, &json!({"exp": now() + 600}));
    assert_eq!(v.try_verify(&valid), Ok(()));
    let b64 = |v: &Value| base64_url(v.to_string().as_bytes());
    let none_token = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&json!({"exp": now() + 600})));
    let (head, rest) = valid.split_once('.').unwrap();
    let none_with_sig = format!("{}.{}", b64(&json!({"alg": "none"})), rest);
    let huge = format!("{head}.{}.sig", "A".repeat(1 << 20));
    let tampered = {
        let mut parts: Vec<&str> = valid.split('.').collect();
        let other = b64(&json!({"exp": now() + 600, "sub": "mallory"}));
        parts[1] = &other;
        parts.join(".")
    };
    for (label, token) in [
        ("empty", String::new()),
        ("garbage", "garbage".to_string()),
        ("three garbage parts", "a.b.c".to_string()),
        ("binary", "\u{0}\u{1}.\u{2}.\u{3}".to_string()),
        ("alg none", none_token),
        ("alg none with a real signature", none_with_sig),
        ("1 MB", huge),
        ("tampered claims", tampered),
        ("truncated", valid[..valid.len() - 10].to_string()),
    ] {
        let got = v.try_verify(&token);
        assert!(matches!(got, Err(AuthError::Verification(_))), "{label}: {got:?}");
    }
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn signer_tokens_verify_and_are_cached() {
    for (alg, private, public) in [
        (Algorithm::HS384, None, None),
        (Algorithm::RS256, Some("rsa_a.key"), Some("rsa_a.pub.pem")),
        (Algorithm::PS384, Some("rsa_a.key"), Some("rsa_a.pub.pem")),
        (Algorithm::ES256, Some("ec256_a.key"), Some("ec256_a.pub.pem")),
        (Algorithm::ES384, Some("ec384_a.key"), Some("ec384_a.pub.pem")),
        (Algorithm::EdDSA, Some("ed25519_a.key"), Some("ed25519_a.pub.pem")),
    ] {
        let (sk, pk) = match (private, public) {
            (Some(p), Some(q)) => {
                (Key::from_file(alg, KeyFormat::Pem, data(p)), Key::from_file(alg, KeyFormat::Pem, data(q)))
            }
            _ => (Key::from_content(alg, KeyFormat::Pem, "shh"), Key::from_content(alg, KeyFormat::Pem, "shh")),
        };
        let signer = JwtSigner::new(
            sk,
            Duration::from_secs(3600),
            Some(ISS.into()),
            Some(vec![AUD.into(), "x".into()]),
            Some(SUB.into()),
        )
        .unwrap();
        let token = signer.get_token().unwrap();
        // Cached: the same token until a third of the lifetime remains.
        assert_eq!(signer.get_token().unwrap(), token, "{alg}");
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, jwt_alg(alg));
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(&token).unwrap();
        assert_eq!(claims["aud"], json!([AUD, "x"]));
        assert_eq!(claims["iss"], json!(ISS));
        assert_eq!(claims["sub"], json!(SUB));
        let exp = claims["exp"].as_i64().unwrap();
        assert_eq!(exp - claims["iat"].as_i64().unwrap(), 3600);
        assert_eq!(claims["nbf"], claims["iat"]);
        assert_eq!(verifier(pk.clone()).try_verify(&token), Ok(()), "{alg}");
        let wrong_aud = JwtVerifier::new(JwtVerifierConfig {
            public_key: Some(pk),
            audience: Some(vec!["nope".into()]),
            ..JwtVerifierConfig::default()
        })
        .unwrap();
        assert!(wrong_aud.try_verify(&token).is_err(), "{alg}");
    }
}

#[test]
fn signer_re_signs_near_expiry() {
    // A 3 s lifetime is refreshed after 2 s; bounded polling on the clock, not a fixed sleep.
    let signer = JwtSigner::new(
        Key::from_content(Algorithm::HS256, KeyFormat::Pem, "k"),
        Duration::from_secs(3),
        None,
        None,
        None,
    )
    .unwrap();
    let first = signer.get_token().unwrap();
    let start = std::time::Instant::now();
    let mut second = first.clone();
    while second == first && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
        second = signer.get_token().unwrap();
    }
    assert_ne!(first, second);
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(1900) && waited < Duration::from_secs(3), "{waited:?}");
}

#[test]
fn static_jwt_provider_trims_and_reloads() {
    let dir = std::env::temp_dir().join(format!("slim-auth-static-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("token.jwt");
    std::fs::write(&path, "first.token.value\n").unwrap();
    let provider = StaticJwtProvider::new(&path).unwrap();
    assert_eq!(provider.get_token().unwrap(), "first.token.value");
    std::fs::write(&path, "second.token.value-longer\r\n").unwrap();
    let start = std::time::Instant::now();
    let mut token = provider.get_token().unwrap();
    while token != "second.token.value-longer" && start.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(50));
        token = provider.get_token().unwrap();
    }
    assert_eq!(token, "second.token.value-longer");
    // A broken rewrite keeps the last good token.
    std::fs::write(&path, "   \n").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(provider.get_token().unwrap(), "second.token.value-longer");
    std::fs::remove_file(&path).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(provider.get_token().unwrap(), "second.token.value-longer");
    assert!(matches!(StaticJwtProvider::new(&path), Err(AuthError::Config(_))));
    std::fs::write(&path, "\n").unwrap();
    assert!(matches!(StaticJwtProvider::new(&path), Err(AuthError::Config(_))));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn spire_bundle_feeds_a_verifier() {
    use base64::Engine;
    let dir = std::env::temp_dir().join(format!("slim-auth-spire-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks = json!({"keys": [public_jwk(Algorithm::ES256, &read("ec256_a.key"), Some("spire-1"))]}).to_string();
    let bundle = json!({"example.org": base64::engine::general_purpose::STANDARD.encode(&jwks)});
    let path = dir.join("bundle.json");
    std::fs::write(&path, bundle.to_string()).unwrap();
    let extracted = slim_bindings::auth::jwks_from_spire_bundle(&path).unwrap();
    assert_eq!(extracted, jwks);
    // Like the Python example: the declared algorithm is RS256, the JWKS keys describe themselves.
    let v = JwtVerifier::new(JwtVerifierConfig {
        public_key: Some(Key::from_content(Algorithm::RS256, KeyFormat::Jwks, extracted)),
        audience: Some(vec![AUD.into()]),
        ..JwtVerifierConfig::default()
    })
    .unwrap();
    let token = sign(
        Algorithm::ES256,
        &read("ec256_a.key"),
        Some("spire-1"),
        &json!({"aud": AUD, "sub": "spiffe://example.org/w", "exp": now() + 60}),
    );
    assert_eq!(v.try_verify(&token), Ok(()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn verifier_reloads_a_changed_key_file() {
    let dir = std::env::temp_dir().join(format!("slim-auth-keyfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("verify.pem");
    std::fs::write(&path, read("ed25519_a.pub.pem")).unwrap();
    let v =
        JwtVerifier::new(JwtVerifierConfig::with_key(Key::from_file(Algorithm::EdDSA, KeyFormat::Pem, &path))).unwrap();
    let claims = json!({"exp": now() + 600});
    let by_a = sign(Algorithm::EdDSA, &read("ed25519_a.key"), None, &claims);
    let by_b = sign(Algorithm::EdDSA, &read("ed25519_b.key"), None, &claims);
    assert_eq!(v.try_verify(&by_a), Ok(()));
    assert!(v.try_verify(&by_b).is_err());

    // A half-written file keeps the old key.
    std::fs::write(&path, "-----BEGIN PUBLIC KEY-----\n").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert!(v.try_verify(&by_b).is_err());
    assert_eq!(v.try_verify(&by_a), Ok(()));

    // Rotation to key b: picked up within the check interval; tokens of a are checked again.
    std::fs::write(&path, read("ed25519_b.pub.pem")).unwrap();
    let start = std::time::Instant::now();
    while v.try_verify(&by_b).is_err() && start.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(v.try_verify(&by_b), Ok(()));
    assert!(v.try_verify(&by_a).is_err(), "cached acceptance under the old key must not survive rotation");
    std::fs::remove_dir_all(&dir).unwrap();
}
