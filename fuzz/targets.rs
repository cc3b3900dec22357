//! The fuzz targets: one function per decoder that reads bytes from the network, plus seed inputs
//! made from real messages.
//!
//! Shared by the libFuzzer binaries in `fuzz/fuzz_targets/` (coverage-guided, `task fuzz`) and by
//! `tests/fuzz_smoke.rs` (corpus replay plus seconds of random mutation in `cargo test`). Each
//! target takes arbitrary bytes and must return without panicking; the checks inside (round
//! trips) panic on a real bug, which is what both drivers report. See `fuzz/README.md`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prost::Message as _;
use slim_bindings::auth::transport::ServerAuth;
use slim_bindings::auth::{
    Algorithm, JwtSigner, JwtVerifier, JwtVerifierConfig, Key, KeyFormat, SharedSecret, TokenProvider, TokenVerifier,
};
use slim_bindings::mls::{MlsState, batch};
use slim_bindings::wire::builders::{self, Flags, PublishSpec};
use slim_bindings::wire::payload::{self, JoinMessagePayload, MlsProposalMessagePayload};
use slim_bindings::wire::{Message, Name, SessionMessageType, SessionType};

/// A fuzz target: decodes untrusted bytes, must never panic.
pub type Target = fn(&[u8]);

/// Every target, by name (the names of the libFuzzer binaries and of the corpus folders).
pub const TARGETS: &[(&str, Target)] = &[
    ("frame", frame),
    ("control_payload", control_payload),
    ("mls_message", mls_message),
    ("mls_batch", mls_batch),
    ("identity_token", identity_token),
];

// ---------------------------------------------------------------------------------------------
// gRPC frames

/// A gRPC frame body as the node's codec decodes it (`Message`), then everything the node and the
/// session layer read from a decoded message before trusting it: validation, header and session
/// fields, names (OriginalName strings are hashed), and the re-encoding a node does to forward it;
/// and the routing view a node reads of a message it only passes on, which must agree with that.
pub fn frame(data: &[u8]) {
    // What a node reads of a message it only passes on must agree with the full decode.
    slim_bindings::node::check_route_view(data);
    // So must the one-pass decoding a receiving app uses.
    slim_bindings::wire::check_quick_decode(data);
    let Ok(msg) = Message::decode(data) else { return };
    let valid = msg.validate().is_ok();
    let _ = msg.session_message_type();
    let _ = (msg.resolved_source(), msg.resolved_destination(), msg.incoming_conn(), msg.blob().len());
    if valid {
        assert!(msg.slim_header().is_some());
    }
    // Forwarding re-encodes: what comes out must decode to the same message.
    let again = msg.encode_to_vec();
    let back = Message::decode(again.as_slice()).expect("a re-encoded message decodes");
    assert_eq!(back, msg, "re-encoding changed the message");
}

// ---------------------------------------------------------------------------------------------
// bincode control payloads

/// The bincode-2 control payloads (a name alone, CHANNEL_JOIN_REQUEST, CHANNEL_MLS_PROPOSAL):
/// the first byte picks the decoder. What decodes must re-encode to something that decodes to the
/// same value (the encoding is canonical; the input need not be).
pub fn control_payload(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else { return };
    match which % 3 {
        0 => {
            if let Ok(n) = payload::decode_name(rest) {
                let back = payload::decode_name(&payload::encode_name(&n)).expect("re-encoded name decodes");
                assert_eq!(back, n);
                assert_eq!(back.strings(), n.strings());
            }
        }
        1 => {
            if let Ok(j) = JoinMessagePayload::decode(rest) {
                assert_eq!(JoinMessagePayload::decode(&j.encode()).as_ref(), Ok(&j));
            }
        }
        _ => {
            if let Ok(p) = MlsProposalMessagePayload::decode(rest) {
                assert!(p.mls_msg.len() <= rest.len());
                assert_eq!(MlsProposalMessagePayload::decode(&p.encode()).as_ref(), Ok(&p));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// MLS batches

/// The plaintext of an MLS batch (after decryption, so any member of the group can craft one).
pub fn mls_batch(data: &[u8]) {
    let Ok(items) = batch::decode(data) else { return };
    assert!(!items.is_empty() && items.len() <= batch::MAX_BATCH_ITEMS);
    let total: usize = items.iter().map(batch::BatchItem::encoded_len).sum();
    assert!(total < data.len(), "decoded items larger than their input");
    let again = batch::encode(&items).expect("decoded items re-encode");
    assert_eq!(batch::decode(&again).expect("re-encoded batch decodes"), items);
}

// ---------------------------------------------------------------------------------------------
// MLS messages

/// One member's view of a small group, with a valid message of every kind a peer sends it.
struct MlsFixture {
    /// The moderator: processes key packages (JOIN_REPLY).
    moderator: MlsState,
    /// A member at the moderator's previous epoch: processes commits, application messages and
    /// update proposals.
    member: MlsState,
    /// Made a key package, not in the group yet: processes welcomes.
    joiner: MlsState,
    /// Valid inputs, indexed like [`MlsOp`].
    templates: [Vec<u8>; 5],
}

#[derive(Clone, Copy)]
enum MlsOp {
    Welcome,
    Commit,
    Decrypt,
    KeyPackage,
    Proposal,
}

const MLS_OPS: [MlsOp; 5] = [MlsOp::Welcome, MlsOp::Commit, MlsOp::Decrypt, MlsOp::KeyPackage, MlsOp::Proposal];

fn mls_member(name: &str) -> MlsState {
    let id = Arc::new(SharedSecret::new(name, "fuzz").expect("identity"));
    MlsState::new(id.clone(), id).expect("mls state")
}

impl MlsFixture {
    fn new() -> Self {
        let mut moderator = mls_member("moderator");
        let mut member = mls_member("member");
        let mut proposer = mls_member("proposer");
        let mut joiner = mls_member("joiner");
        let mut late = mls_member("late");
        moderator.create_group().expect("group");
        let added = moderator.add_member(&member.key_package().expect("kp")).expect("add member");
        member.process_welcome(&added.welcome).expect("member joins");
        let added = moderator.add_member(&proposer.key_package().expect("kp")).expect("add proposer");
        member.process_commit(&added.commit).expect("member follows");
        proposer.process_welcome(&added.welcome).expect("proposer joins");
        // All three at one epoch: an application message and an update proposal for the member.
        let application = moderator.encrypt(b"fuzz template").expect("encrypt");
        let proposal = proposer.propose_update().expect("proposal");
        // The moderator moves on (adds the joiner): the commit is for the member, which stays at
        // the previous epoch, so the message and the proposal above remain valid for it.
        let joined = moderator.add_member(&joiner.key_package().expect("kp")).expect("add joiner");
        let key_package = late.key_package().expect("kp");
        let templates = [joined.welcome, joined.commit, application, key_package, proposal];
        Self { moderator, member, joiner, templates }
    }

    /// Applies one input; true if it changed the state.
    fn apply(&mut self, op: MlsOp, bytes: &[u8]) -> bool {
        match op {
            MlsOp::Welcome => self.joiner.process_welcome(bytes).is_ok(),
            MlsOp::Commit => self.member.process_commit(bytes).is_ok(),
            MlsOp::Decrypt => self.member.decrypt(bytes).is_ok(),
            MlsOp::KeyPackage => self.moderator.add_member(bytes).is_ok(),
            MlsOp::Proposal => self.member.process_proposal(bytes).is_ok(),
        }
    }
}

/// The fixture, whether an input changed its state, and inputs since it was built.
type FixtureSlot = (Option<MlsFixture>, bool, u32);

fn mls_fixture() -> &'static Mutex<FixtureSlot> {
    static FIXTURE: OnceLock<Mutex<FixtureSlot>> = OnceLock::new();
    FIXTURE.get_or_init(|| Mutex::new((None, false, 0)))
}

/// A fixture whose state an input changed is rebuilt, at most once per this many inputs (building
/// one costs as much as hundreds of inputs; in between, the changed parts answer more shallowly).
const REBUILD_EVERY: u32 = 256;

/// An MLSMessage as a member receives it: a Welcome (CHANNEL_MLS_WELCOME), a Commit
/// (CHANNEL_MLS_COMMIT), an application PrivateMessage (group data), a KeyPackage (JOIN_REPLY, at
/// the moderator) or an Update proposal (CHANNEL_MLS_PROPOSAL). First byte: low bits pick the
/// kind; the high bit set means "XOR the rest over a valid message of that kind" (so mutations
/// reach signature and decryption checks), clear means "the rest is the message".
pub fn mls_message(data: &[u8]) {
    let Some((&head, rest)) = data.split_first() else { return };
    let op = MLS_OPS[usize::from(head & 0x7f) % MLS_OPS.len()];
    let mut guard = mls_fixture().lock().unwrap_or_else(|p| p.into_inner());
    let (slot, changed, since) = &mut *guard;
    *since += 1;
    if *changed && *since >= REBUILD_EVERY {
        *slot = None;
    }
    if slot.is_none() {
        (*changed, *since) = (false, 0);
    }
    let fixture = slot.get_or_insert_with(MlsFixture::new);
    let bytes = if head & 0x80 != 0 {
        let mut t = fixture.templates[op as usize].clone();
        for (i, b) in rest.iter().enumerate() {
            match t.get_mut(i) {
                Some(slot) => *slot ^= b,
                None => t.push(*b),
            }
        }
        t
    } else {
        rest.to_vec()
    };
    if fixture.apply(op, &bytes) {
        *changed = true;
    }
}

/// Seeds for [`mls_message`]: every template unchanged, and every template raw.
fn mls_seeds() -> Vec<Vec<u8>> {
    let fixture = MlsFixture::new();
    let mut out = Vec::new();
    for (i, t) in fixture.templates.iter().enumerate() {
        out.push(vec![0x80 | i as u8]);
        let mut raw = vec![i as u8];
        raw.extend_from_slice(t);
        out.push(raw);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Identity tokens and transport credentials

const EC256_PUB: &str = include_str!("../tests/data/jwt/ec256_a.pub.pem");
const EC256_KEY: &str = include_str!("../tests/data/jwt/ec256_a.key");

struct Verifiers {
    shared: SharedSecret,
    jwt_static: JwtVerifier,
    jwt_hmac: JwtVerifier,
    jwt_autoresolve: JwtVerifier,
    basic: ServerAuth,
    bearer: ServerAuth,
}

fn verifiers() -> &'static Verifiers {
    static V: OnceLock<Verifiers> = OnceLock::new();
    V.get_or_init(|| Verifiers {
        shared: SharedSecret::new("fuzz", "secret").expect("identity"),
        jwt_static: JwtVerifier::new(JwtVerifierConfig {
            public_key: Some(Key::from_content(Algorithm::ES256, KeyFormat::Pem, EC256_PUB)),
            issuer: Some("fuzz-issuer".into()),
            audience: Some(vec!["fuzz-audience".into()]),
            require_iss: true,
            require_aud: true,
            ..JwtVerifierConfig::default()
        })
        .expect("ES256 verifier"),
        jwt_hmac: JwtVerifier::new(JwtVerifierConfig::with_key(Key::from_content(
            Algorithm::HS256,
            KeyFormat::Pem,
            "fuzz-hmac-secret",
        )))
        .expect("HS256 verifier"),
        jwt_autoresolve: JwtVerifier::new(JwtVerifierConfig {
            autoresolve: true,
            issuer: Some("fuzz-issuer".into()),
            ..JwtVerifierConfig::default()
        })
        .expect("autoresolve verifier"),
        basic: ServerAuth::basic("user", "pass").expect("basic"),
        bearer: ServerAuth::bearer("token").expect("bearer"),
    })
}

/// An identity token (`SLIM_IDENTITY` metadata, MLS credentials) through every verifier kind
/// (shared secret, JWT with a static ES256 key, JWT with an HMAC key, JWT whose keys would be
/// resolved from its issuer: header and claims are parsed before any fetch), and the same bytes as
/// an `authorization` header for Basic and Bearer transport auth.
pub fn identity_token(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let v = verifiers();
    let _ = v.shared.try_verify(token);
    let _ = v.jwt_static.try_verify(token);
    let _ = v.jwt_static.try_verify_credential(token);
    let _ = v.jwt_hmac.try_verify(token);
    let _ = v.jwt_autoresolve.try_verify(token);
    let _ = v.basic.check(Some(token));
    let _ = v.bearer.check(Some(token));
}

fn identity_seeds() -> Vec<Vec<u8>> {
    let signer = JwtSigner::new(
        Key::from_content(Algorithm::ES256, KeyFormat::Pem, EC256_KEY),
        Duration::from_secs(3600),
        Some("fuzz-issuer".into()),
        Some(vec!["fuzz-audience".into()]),
        Some("fuzz-subject".into()),
    )
    .expect("signer");
    let jwt = signer.get_token().expect("token");
    let hmac = JwtSigner::new(
        Key::from_content(Algorithm::HS256, KeyFormat::Pem, "fuzz-hmac-secret"),
        Duration::from_secs(3600),
        None,
        None,
        None,
    )
    .expect("hmac signer")
    .get_token()
    .expect("token");
    vec![
        jwt.into_bytes(),
        hmac.into_bytes(),
        b"secret:fuzz".to_vec(),
        slim_bindings::auth::transport::basic_header_value("user", "pass").into_bytes(),
        slim_bindings::auth::transport::bearer_header_value("token").into_bytes(),
    ]
}

// ---------------------------------------------------------------------------------------------
// Seeds

fn frame_seeds() -> Vec<Vec<u8>> {
    let a = Name::new("org", "ns", "alice", Some(7));
    let g = Name::new("org", "ns", "group", None);
    let mut meta = HashMap::new();
    meta.insert("SLIM_IDENTITY".to_string(), "secret:alice".to_string());
    meta.insert("traceparent".to_string(), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_string());
    let mut out = vec![
        builders::subscribe(&a, &a, Flags::one()).encode_to_vec(),
        builders::unsubscribe(&a, &g, Flags::all(2).recv_from(3)).encode_to_vec(),
    ];
    for (t, st, originals) in [
        (SessionMessageType::P2PReliable, SessionType::SessionPointToPoint, true),
        (SessionMessageType::MulticastMsg, SessionType::SessionMulticast, true),
        (SessionMessageType::ChannelJoinRequest, SessionType::SessionMulticast, false),
        (SessionMessageType::RtxRequest, SessionType::SessionMulticast, false),
    ] {
        let spec = PublishSpec {
            source: &a,
            destination: &g,
            flags: Flags::all(50).forward_to(Some(9)).error(),
            session_type: st,
            message_type: t,
            session_id: 12345,
            message_id: 67,
            original_names: originals,
            content_type: "msg",
        };
        out.push(builders::publish(&spec, b"payload bytes".to_vec(), meta.clone()).encode_to_vec());
    }
    out
}

fn control_seeds() -> Vec<Vec<u8>> {
    let a = Name::new("org", "ns", "alice", Some(7));
    let b = Name::from_components([1, 2, 3, u64::MAX]);
    let mut name = vec![0u8];
    name.extend(payload::encode_name(&a));
    let mut join = vec![1u8];
    join.extend(JoinMessagePayload { channel_name: b.clone(), moderator_name: a.clone() }.encode());
    let mut proposal = vec![2u8];
    proposal.extend(MlsProposalMessagePayload { source_name: a, mls_msg: vec![1, 2, 3, 4] }.encode());
    vec![name, join, proposal]
}

fn batch_seeds() -> Vec<Vec<u8>> {
    let item = |i: u8| batch::BatchItem {
        payload_type: "msg".into(),
        metadata: HashMap::from([("k".to_string(), format!("v{i}"))]),
        blob: vec![i; 5],
    };
    vec![
        batch::encode(&[item(1)]).expect("batch"),
        batch::encode(&[item(1), item(2), batch::BatchItem::default()]).expect("batch"),
    ]
}

/// Valid inputs for `target` made from real messages (written to the corpus by `task fuzz`,
/// replayed by the CI test).
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "frame" => frame_seeds(),
        "control_payload" => control_seeds(),
        "mls_message" => mls_seeds(),
        "mls_batch" => batch_seeds(),
        "identity_token" => identity_seeds(),
        _ => Vec::new(),
    }
}
