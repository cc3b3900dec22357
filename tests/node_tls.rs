//! TLS, mTLS and transport auth between two real nodes over loopback. Certificates are generated
//! per test with rcgen.

use std::collections::HashMap;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{Value, json};
use slim_bindings::node::{ClientConfig, LocalDelivery, Node, NodeError, ServerConfig};
use slim_bindings::wire::builders::{self, Flags, PublishSpec};
use slim_bindings::wire::{Name, SessionMessageType, SessionType};

struct Ca(CertifiedIssuer<'static, KeyPair>);

impl Ca {
    fn new(cn: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        Ca(CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap())
    }

    fn pem(&self) -> String {
        self.0.pem()
    }

    /// (cert PEM, key PEM) for 127.0.0.1/localhost.
    fn leaf(&self, cn: &str, client: bool) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages =
            vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
        let cert = p.signed_by(&key, &self.0).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn server(v: Value) -> ServerConfig {
    ServerConfig::from_json(v).unwrap()
}

fn client(v: Value) -> ClientConfig {
    ClientConfig::from_json(v).unwrap()
}

/// Proves traffic flows from A's app to B's app over `conn`.
async fn exchange(a: &Node, b: &Node, conn: u64) {
    let (na, nb) = (Name::new("org", "ns", "a", Some(1)), Name::new("org", "ns", "b", Some(2)));
    let mut app_b = b.register_local();
    app_b.tx.send(builders::subscribe(&nb, &nb, Flags::one())).await.unwrap();
    let app_a = a.register_local();
    app_a.tx.send(builders::subscribe(&na, &nb.without_id(), Flags::one().recv_from(conn))).await.unwrap();
    let spec = PublishSpec {
        source: &na,
        destination: &nb,
        flags: Flags::one(),
        session_type: SessionType::SessionPointToPoint,
        message_type: SessionMessageType::P2PMsg,
        session_id: 5,
        message_id: 0,
        original_names: true,
        content_type: "msg",
    };
    app_a.tx.send(builders::publish(&spec, b"secure".to_vec(), HashMap::new())).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), app_b.rx.recv()).await.expect("timed out").expect("closed") {
        LocalDelivery::Message(m) => assert_eq!(m.blob(), b"secure"),
        LocalDelivery::Error(e) => panic!("{e}"),
    }
}

async fn refused(a: &Node, cfg: ClientConfig) -> String {
    let started = std::time::Instant::now();
    let err = a.connect(cfg).await.expect_err("connection must be refused");
    assert!(started.elapsed() < Duration::from_secs(4), "refusal took {:?}", started.elapsed());
    assert!(matches!(err, NodeError::ConnectFailed { .. }), "{err}");
    eprintln!("refused after {:?}: {err}", started.elapsed());
    err.to_string()
}

#[tokio::test]
async fn tls_between_two_nodes_works_and_a_wrong_ca_is_refused() {
    let ca = Ca::new("test-ca");
    let (cert, key) = ca.leaf("server", false);
    let b = Node::new("b");
    let addr = b
        .run_server(server(json!({"endpoint": "127.0.0.1:0", "tls": {"cert_pem": cert, "key_pem": key}})))
        .await
        .unwrap();
    let a = Node::new("a");
    let conn = a
        .connect(client(json!({"endpoint": format!("https://{addr}"), "tls": {"ca_pem": ca.pem(), "include_system_ca_certs_pool": false}})))
        .await
        .expect("TLS connect");
    exchange(&a, &b, conn).await;

    let other = Ca::new("other-ca");
    let reason = refused(
        &a,
        client(json!({"endpoint": format!("https://{addr}"), "tls": {"ca_pem": other.pem()}, "connect_timeout": "3s"})),
    )
    .await;
    assert!(reason.contains("certificate"), "{reason}");
    // a plaintext client cannot talk to a TLS server either
    refused(
        &a,
        client(json!({"endpoint": format!("http://{addr}"), "tls": {"insecure": true}, "connect_timeout": "1s"})),
    )
    .await;
    // skipping verification is an explicit opt-in
    let skip = a
        .connect(client(json!({"endpoint": format!("https://{addr}"), "tls": {"insecure_skip_verify": true}})))
        .await
        .expect("insecure_skip_verify connects");
    assert_ne!(skip, conn);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_from_the_trusted_ca() {
    let ca = Ca::new("test-ca");
    let (cert, key) = ca.leaf("server", false);
    let dir = std::env::temp_dir().join(format!("slim-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_file, key_file, ca_file) = (dir.join("server.pem"), dir.join("server.key"), dir.join("ca.pem"));
    std::fs::write(&cert_file, &cert).unwrap();
    std::fs::write(&key_file, &key).unwrap();
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let b = Node::new("b");
    let addr = b
        .run_server(server(json!({"endpoint": "127.0.0.1:0", "tls": {
            "cert_file": cert_file, "key_file": key_file, "client_ca_file": ca_file, "tls_version": "tls1.2"
        }})))
        .await
        .unwrap();
    let a = Node::new("a");
    let endpoint = format!("https://{addr}");
    refused(&a, client(json!({"endpoint": endpoint, "tls": {"ca_file": ca_file, "tls_version": "tls1.2"}, "connect_timeout": "3s"}))).await;

    let rogue = Ca::new("rogue");
    let (rc, rk) = rogue.leaf("intruder", true);
    refused(&a, client(json!({"endpoint": endpoint, "tls": {"ca_file": ca_file, "cert_pem": rc, "key_pem": rk, "tls_version": "tls1.2"}, "connect_timeout": "3s"}))).await;

    let (cc, ck) = ca.leaf("client", true);
    let conn = a
        .connect(client(json!({"endpoint": endpoint, "tls": {"ca_file": ca_file, "cert_pem": cc, "key_pem": ck, "tls_version": "tls1.2"}})))
        .await
        .expect("mTLS connect");
    exchange(&a, &b, conn).await;
    a.shutdown().await;
    b.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn bad_tls_material_is_a_typed_error() {
    let b = Node::new("b");
    let e = b.run_server(server(json!({"endpoint": "127.0.0.1:0", "tls": {}}))).await.unwrap_err();
    assert!(matches!(e, NodeError::Tls(_)), "{e}");
    let e = b
        .run_server(server(json!({"endpoint": "127.0.0.1:0", "tls": {"cert_pem": "junk", "key_pem": "junk"}})))
        .await
        .unwrap_err();
    assert!(matches!(e, NodeError::Tls(_)), "{e}");
    let a = Node::new("a");
    let e = a.connect(client(json!({"endpoint": "https://127.0.0.1:1", "tls": {"cert_pem": "x"}}))).await.unwrap_err();
    assert!(matches!(e, NodeError::Tls(_)), "{e}");
}

#[tokio::test]
async fn transport_basic_and_bearer_auth_are_enforced() {
    let b = Node::new("b");
    let basic = b
        .run_server(server(json!({"endpoint": "127.0.0.1:0", "tls": {"insecure": true}, "auth": {"basic": {"username": "u", "password": "p"}}})))
        .await
        .unwrap();
    let a = Node::new("a");
    let url = format!("http://{basic}");
    let reason = refused(&a, client(json!({"endpoint": url, "tls": {"insecure": true}}))).await;
    assert!(reason.contains("rejected"), "{reason}");
    refused(&a, client(json!({"endpoint": url, "tls": {"insecure": true}, "auth": {"basic": {"username": "u", "password": "wrong"}}}))).await;
    let conn = a
        .connect(client(
            json!({"endpoint": url, "tls": {"insecure": true}, "auth": {"basic": {"username": "u", "password": "p"}}}),
        ))
        .await
        .expect("right credentials");
    exchange(&a, &b, conn).await;

    let c = Node::new("c");
    let bearer = c
        .run_server(server(
            json!({"endpoint": "127.0.0.1:0", "tls": {"insecure": true}, "auth": {"bearer": {"token": "s3cret"}}}),
        ))
        .await
        .unwrap();
    let url = format!("http://{bearer}");
    refused(&a, client(json!({"endpoint": url, "tls": {"insecure": true}, "auth": {"bearer": {"token": "nope"}}})))
        .await;
    a.connect(client(json!({"endpoint": url, "tls": {"insecure": true}, "auth": {"bearer": {"token": "s3cret"}},
        "keepalive": {"http2_keepalive": "1s", "timeout": "1s"}})))
        .await
        .expect("right token");
    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test]
async fn transport_jwt_auth_is_enforced() {
    let claims = json!({"issuer": "slim-tests", "audience": "slim", "subject": "node-a"});
    let b = Node::new("b");
    let addr = b
        .run_server(server(json!({"endpoint": "127.0.0.1:0", "tls": {"insecure": true}, "auth": {"jwt": {
            "claims": claims, "key": {"decoding": {"algorithm": "HS256", "str": "shared-hmac-secret"}}
        }}})))
        .await
        .unwrap();
    let a = Node::new("a");
    let url = format!("http://{addr}");
    let signed_with = |secret: &str| {
        client(json!({"endpoint": url, "tls": {"insecure": true}, "auth": {"jwt": {
            "claims": claims, "duration": "1h", "key": {"encoding": {"algorithm": "HS256", "str": secret}}
        }}}))
    };
    refused(&a, signed_with("some-other-secret")).await;
    refused(&a, client(json!({"endpoint": url, "tls": {"insecure": true}}))).await;
    let conn = a.connect(signed_with("shared-hmac-secret")).await.expect("valid JWT");
    exchange(&a, &b, conn).await;
    a.shutdown().await;
    b.shutdown().await;
}
