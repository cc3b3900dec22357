//! RFC 9420 interop between our openmls wrapper and mls-rs (the library slim-bindings 0.6.0
//! peers use), with the settings of docs/protocol.md "MLS": ciphersuite 0x0001, Basic credential = token,
//! ratchet tree in the Welcome, PublicMessage handshakes, PrivateMessage application data.
//! Both directions: an mls-rs moderator with our participants, our moderator with mls-rs ones.
#![cfg(all(feature = "mls-rs", feature = "mls-rs-crypto-rustcrypto"))]

use std::sync::Arc;

use mls_rs::client_builder::MlsConfig;
use mls_rs::group::ReceivedMessage;
use mls_rs::identity::SigningIdentity;
use mls_rs::identity::basic::{BasicCredential, BasicIdentityProvider};
use mls_rs::{CipherSuite, CipherSuiteProvider, Client, CryptoProvider, ExtensionList, Group, MlsMessage};
use mls_rs_crypto_rustcrypto::RustCryptoProvider;
use slim_bindings::auth::SharedSecret;
use slim_bindings::mls::{CommitOutcome, MlsError, MlsState};

const SECRET: &str = "interop-secret";

fn ours(name: &str) -> MlsState {
    let id = Arc::new(SharedSecret::new(name, SECRET).unwrap());
    MlsState::new(id.clone(), id).unwrap()
}

fn theirs(name: &str) -> Client<impl MlsConfig> {
    let crypto = RustCryptoProvider::default();
    let suite = CipherSuite::CURVE25519_AES128;
    let (secret, public) = crypto.cipher_suite_provider(suite).unwrap().signature_key_generate().unwrap();
    let token = format!("{SECRET}:{name}").into_bytes();
    let identity = SigningIdentity::new(BasicCredential::new(token).into_credential(), public);
    Client::builder()
        .identity_provider(BasicIdentityProvider::new())
        .crypto_provider(crypto)
        .signing_identity(identity, secret, suite)
        .build()
}

fn msg(bytes: &[u8]) -> MlsMessage {
    MlsMessage::from_bytes(bytes).unwrap()
}

fn their_decrypt<C: MlsConfig>(group: &mut Group<C>, bytes: &[u8]) -> Vec<u8> {
    match group.process_incoming_message(msg(bytes)).unwrap() {
        ReceivedMessage::ApplicationMessage(m) => m.data().to_vec(),
        _ => panic!("expected an application message"),
    }
}

fn their_commit<C: MlsConfig>(group: &mut Group<C>, bytes: &[u8]) {
    match group.process_incoming_message(msg(bytes)).unwrap() {
        ReceivedMessage::Commit(_) => {}
        _ => panic!("expected a commit"),
    }
}

#[test]
fn mls_rs_moderator_with_our_participants() {
    let moderator = theirs("moderator");
    let mut group = moderator.create_group(ExtensionList::default(), ExtensionList::default(), None).unwrap();
    let mut a = ours("a");
    let mut b = ours("b");

    // a joins: our key package, their commit + Welcome (ratchet tree inside).
    let out = group.commit_builder().add_member(msg(&a.key_package().unwrap())).unwrap().build().unwrap();
    group.apply_pending_commit().unwrap();
    a.process_welcome(&out.welcome_messages[0].to_bytes().unwrap()).unwrap();
    assert_eq!(a.epoch(), group.current_epoch());

    // b joins; a applies their commit.
    let out = group.commit_builder().add_member(msg(&b.key_package().unwrap())).unwrap().build().unwrap();
    group.apply_pending_commit().unwrap();
    b.process_welcome(&out.welcome_messages[0].to_bytes().unwrap()).unwrap();
    assert_eq!(a.process_commit(&out.commit_message.to_bytes().unwrap()).unwrap(), CommitOutcome::Applied);
    assert_eq!(a.members(), b.members());
    assert_eq!(a.members().len(), 3);

    // Application data every way.
    let c = group.encrypt_application_message(b"from mls-rs", vec![]).unwrap().to_bytes().unwrap();
    assert_eq!(a.decrypt(&c).unwrap(), b"from mls-rs");
    assert_eq!(b.decrypt(&c).unwrap(), b"from mls-rs");
    let c = a.encrypt(b"from openmls a").unwrap();
    assert_eq!(their_decrypt(&mut group, &c), b"from openmls a");
    assert_eq!(b.decrypt(&c).unwrap(), b"from openmls a");

    // Removal by identity, as the reference does it (member_with_identity).
    let leaf = group.member_with_identity(format!("{SECRET}:b").as_bytes()).unwrap().index;
    let out = group.commit_builder().remove_member(leaf).unwrap().build().unwrap();
    group.apply_pending_commit().unwrap();
    let commit = out.commit_message.to_bytes().unwrap();
    assert_eq!(a.process_commit(&commit).unwrap(), CommitOutcome::Applied);
    assert_eq!(b.process_commit(&commit).unwrap(), CommitOutcome::Removed);
    let c = group.encrypt_application_message(b"after b left", vec![]).unwrap().to_bytes().unwrap();
    assert_eq!(a.decrypt(&c).unwrap(), b"after b left");
    assert_eq!(b.decrypt(&c), Err(MlsError::Removed));

    // Our participant's key rotation proposal, committed by the mls-rs moderator.
    let proposal = a.propose_update().unwrap();
    match group.process_incoming_message(msg(&proposal)).unwrap() {
        ReceivedMessage::Proposal(_) => {}
        _ => panic!("expected a proposal"),
    }
    let out = group.commit_builder().build().unwrap();
    group.apply_pending_commit().unwrap();
    assert_eq!(a.process_commit(&out.commit_message.to_bytes().unwrap()).unwrap(), CommitOutcome::Applied);
    let c = a.encrypt(b"after rotation").unwrap();
    assert_eq!(their_decrypt(&mut group, &c), b"after rotation");
}

#[test]
fn our_moderator_with_mls_rs_participants() {
    let mut moderator = ours("moderator");
    moderator.create_group().unwrap();
    let x = theirs("x");
    let y = theirs("y");

    let kp = x.generate_key_package_message(ExtensionList::default(), ExtensionList::default(), None).unwrap();
    let added = moderator.add_member(&kp.to_bytes().unwrap()).unwrap();
    assert_eq!(added.member_identity, format!("{SECRET}:x").into_bytes());
    let (mut gx, _) = x.join_group(None, &msg(&added.welcome), None).unwrap();
    assert_eq!(gx.current_epoch(), moderator.epoch());

    let kp = y.generate_key_package_message(ExtensionList::default(), ExtensionList::default(), None).unwrap();
    let added = moderator.add_member(&kp.to_bytes().unwrap()).unwrap();
    let (mut gy, _) = y.join_group(None, &msg(&added.welcome), None).unwrap();
    their_commit(&mut gx, &added.commit);

    let c = moderator.encrypt(b"from openmls").unwrap();
    assert_eq!(their_decrypt(&mut gx, &c), b"from openmls");
    assert_eq!(their_decrypt(&mut gy, &c), b"from openmls");
    let c = gx.encrypt_application_message(b"from mls-rs x", vec![]).unwrap().to_bytes().unwrap();
    assert_eq!(moderator.decrypt(&c).unwrap(), b"from mls-rs x");
    assert_eq!(their_decrypt(&mut gy, &c), b"from mls-rs x");

    // An mls-rs participant's Update proposal (what the reference sends on key rotation),
    // relayed and committed by our moderator.
    let proposal = gx.propose_update(vec![]).unwrap().to_bytes().unwrap();
    moderator.process_proposal(&proposal).unwrap();
    match gy.process_incoming_message(msg(&proposal)).unwrap() {
        ReceivedMessage::Proposal(_) => {}
        _ => panic!("expected a proposal"),
    }
    let commit = moderator.commit_pending_proposals().unwrap();
    their_commit(&mut gx, &commit);
    their_commit(&mut gy, &commit);

    let commit = moderator.remove_member(&format!("{SECRET}:y").into_bytes()).unwrap();
    their_commit(&mut gx, &commit);
    let c = moderator.encrypt(b"only x").unwrap();
    assert_eq!(their_decrypt(&mut gx, &c), b"only x");
    assert_eq!(moderator.members().len(), 2);
    assert_eq!(gx.current_epoch(), moderator.epoch());
}
