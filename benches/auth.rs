//! Identity-token cost per message: ES256 `verify()` on a token never seen (signature checked)
//! versus one already verified (cache hit), and a cached `JwtSigner` token.
//!
//! `cargo bench --bench auth` (release). Prints one line per figure.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use slim_bindings::auth::{
    Algorithm, JwtSigner, JwtVerifier, JwtVerifierConfig, Key, KeyFormat, TokenProvider, TokenVerifier,
};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/jwt").join(name)
}

fn per_op(start: Instant, n: u32) -> f64 {
    start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(es256_verify_cold_vs_cached());
}

async fn es256_verify_cold_vs_cached() {
    const N: u32 = 2000;
    let key = EncodingKey::from_ec_pem(&std::fs::read(data("ec256_a.key")).unwrap()).unwrap();
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
    let tokens: Vec<String> = (0..N)
        .map(|i| {
            let claims = serde_json::json!({"iss": "bench", "aud": ["slim"], "sub": format!("user-{i}"), "exp": exp});
            jsonwebtoken::encode(&Header::new(jsonwebtoken::Algorithm::ES256), &claims, &key).unwrap()
        })
        .collect();
    let verifier = JwtVerifier::new(JwtVerifierConfig {
        public_key: Some(Key::from_file(Algorithm::ES256, KeyFormat::Pem, data("ec256_a.pub.pem"))),
        issuer: Some("bench".into()),
        audience: Some(vec!["slim".into()]),
        ..JwtVerifierConfig::default()
    })
    .unwrap();

    let start = Instant::now();
    for t in &tokens {
        verifier.verify(t).await.unwrap();
    }
    let cold = per_op(start, N);

    let start = Instant::now();
    for _ in 0..(N * 50) {
        verifier.verify(&tokens[7]).await.unwrap();
    }
    let cached = per_op(start, N * 50);

    let start = Instant::now();
    for _ in 0..(N * 50) {
        verifier.try_verify(&tokens[7]).unwrap();
    }
    let cached_sync = per_op(start, N * 50);

    let signer = JwtSigner::new(
        Key::from_file(Algorithm::ES256, KeyFormat::Pem, data("ec256_a.key")),
        Duration::from_secs(3600),
        Some("bench".into()),
        Some(vec!["slim".into()]),
        Some("me".into()),
    )
    .unwrap();
    let start = Instant::now();
    for _ in 0..(N * 50) {
        signer.get_token().unwrap();
    }
    let signer_cached = per_op(start, N * 50);

    println!("ES256 verify() cold (signature checked): {cold:.2} µs/op");
    println!("ES256 verify() cached token:             {cached:.3} µs/op");
    println!("ES256 try_verify() cached token:         {cached_sync:.3} µs/op");
    println!("ES256 JwtSigner::get_token() cached:     {signer_cached:.3} µs/op");
    println!("token length: {} bytes", tokens[7].len());
}
