//! JWT identities in a long-lived MLS group: a member's MLS credential holds the token it had
//! when it joined, and that token expires while the group lives on. A later joiner must still
//! accept the group (the Welcome lists the older members' credentials), while every message keeps
//! being checked against the sender's current, unexpired token.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use slim_bindings::app::App;
use slim_bindings::auth::{Algorithm, JwtSigner, JwtVerifier, JwtVerifierConfig, Key, KeyFormat, TokenVerifier};
use slim_bindings::session::SessionConfig;

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "slim.mls.test";
/// Token lifetime: short, so credentials expire during the test.
const LIFETIME: Duration = Duration::from_secs(2);
/// Clock-skew tolerance of the verifiers (the default 30 s would make the test slow).
const LEEWAY: Duration = Duration::from_secs(1);

fn data(file: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/jwt").join(file)
}

fn es256(file: &str) -> Key {
    Key::from_file(Algorithm::ES256, KeyFormat::Pem, data(file))
}

fn verifier() -> JwtVerifier {
    JwtVerifier::new(JwtVerifierConfig {
        public_key: Some(es256("ec256_a.pub.pem")),
        issuer: Some(ISSUER.into()),
        audience: Some(vec![AUDIENCE.into()]),
        require_iss: true,
        require_aud: true,
        require_sub: true,
        ..JwtVerifierConfig::default()
    })
    .expect("verifier")
    .with_leeway(LEEWAY)
}

async fn jwt_app(agent: &str) -> App {
    let signer = JwtSigner::new(
        es256("ec256_a.key"),
        LIFETIME,
        Some(ISSUER.into()),
        Some(vec![AUDIENCE.into()]),
        Some(format!("spiffe://mls.test/{agent}")),
    )
    .expect("signer");
    App::new(name(agent), Arc::new(signer), Arc::new(verifier())).await.expect("app")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_accepts_members_whose_credential_tokens_expired() {
    let moderator = jwt_app("mod").await;
    let p1 = jwt_app("p1").await;
    let p2 = jwt_app("p2").await;
    let _hub = hub_with(&moderator, &[&p1, &p2]).await;
    let cfg = SessionConfig::Multicast {
        topic: name("chat"),
        moderator: true,
        max_retries: 5,
        timeout: Duration::from_millis(500),
        mls_enabled: true,
        liveness: None,
    };
    let sid = moderator.create_session(cfg).await.unwrap();
    moderator.invite(sid, &name("p1")).await.unwrap().joined().await.unwrap();
    let formed = Instant::now();

    // Past the lifetime plus the leeway (plus a second of `exp` rounding): the tokens in the
    // moderator's and p1's credentials are now expired for any verifier.
    tokio::time::sleep(LIFETIME + LEEWAY + Duration::from_millis(1500)).await;
    assert!(formed.elapsed() > LIFETIME + LEEWAY + Duration::from_secs(1));

    tokio::time::timeout(WAIT, async { moderator.invite(sid, &name("p2")).await.unwrap().joined().await })
        .await
        .expect("invite within the wait bound")
        .expect("a late joiner accepts members whose credential tokens expired since they joined");

    moderator.publish(sid, to(&name("chat"), b"after expiry")).await.unwrap();
    for p in [&p1, &p2] {
        let (info, payload) = recv_new(p).await;
        assert_eq!((info.session_id, payload.as_slice()), (sid, b"after expiry".as_slice()));
    }
    p2.publish(sid, to(&name("chat"), b"from p2")).await.unwrap();
    let (_, payload) = recv(&moderator, sid).await.unwrap();
    assert_eq!(payload, b"from p2");
}

#[test]
fn credential_check_ignores_only_expiry() {
    let v = verifier();
    let sign = |key: &str, exp_offset: i64| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let claims = serde_json::json!({"iss": ISSUER, "aud": [AUDIENCE], "sub": "x", "iat": now - 3600,
            "exp": now + exp_offset});
        let pem = std::fs::read(data(key)).unwrap();
        let enc = jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap();
        jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256), &claims, &enc).unwrap()
    };
    let expired = sign("ec256_a.key", -600);
    assert!(v.try_verify(&expired).is_err(), "messages still need a live token");
    assert_eq!(v.try_verify_credential(&expired), Ok(()));
    // Everything else is still checked: the signing key, and the claims.
    assert!(v.try_verify_credential(&sign("ec256_b.key", -600)).is_err());
    assert!(v.try_verify_credential(&sign("ec256_b.key", 600)).is_err());
    let other_audience = JwtVerifier::new(JwtVerifierConfig {
        public_key: Some(es256("ec256_a.pub.pem")),
        issuer: Some(ISSUER.into()),
        audience: Some(vec!["another.audience".into()]),
        ..JwtVerifierConfig::default()
    })
    .unwrap();
    assert!(other_audience.try_verify_credential(&expired).is_err());
    // A credential check does not let an expired token into the per-message cache.
    assert!(v.try_verify(&expired).is_err());
    assert_eq!(v.try_verify(&sign("ec256_a.key", 600)), Ok(()));
}
