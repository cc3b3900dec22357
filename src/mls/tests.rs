use std::sync::Arc;

use super::*;
use crate::auth::SharedSecret;

const SECRET: &str = "group-secret";

fn member(name: &str) -> MlsState {
    member_with_secret(name, SECRET)
}

fn member_with_secret(name: &str, secret: &str) -> MlsState {
    let id = Arc::new(SharedSecret::new(name, secret).unwrap());
    MlsState::new(id.clone(), id).unwrap()
}

/// Moderator `m` adds `joiner`; every member in `existing` applies the commit.
fn add(m: &mut MlsState, joiner: &mut MlsState, existing: &mut [&mut MlsState]) -> AddResult {
    let kp = joiner.key_package().unwrap();
    let r = m.add_member(&kp).unwrap();
    joiner.process_welcome(&r.welcome).unwrap();
    for e in existing.iter_mut() {
        assert_eq!(e.process_commit(&r.commit).unwrap(), CommitOutcome::Applied);
    }
    r
}

/// Every member encrypts and every other member decrypts it.
#[allow(clippy::needless_range_loop)]
fn assert_all_talk(members: &mut [&mut MlsState]) {
    let epoch = members[0].epoch();
    for m in members.iter() {
        assert_eq!(m.epoch(), epoch, "epochs must be synchronized");
        assert_eq!(m.members().len(), members.len());
    }
    for i in 0..members.len() {
        let text = format!("from member {i} at epoch {epoch}");
        let c = members[i].encrypt(text.as_bytes()).unwrap();
        assert!(!c.windows(text.len()).any(|w| w == text.as_bytes()), "ciphertext leaks plaintext");
        for j in 0..members.len() {
            if i != j {
                assert_eq!(members[j].decrypt(&c).unwrap(), text.as_bytes(), "{j} decrypting {i}");
            }
        }
    }
}

#[test]
fn state_is_send() {
    fn is_send<T: Send>() {}
    is_send::<MlsState>();
}

#[test]
fn two_member_group() {
    let mut m = member("moderator");
    let mut p = member("p1");
    assert!(!m.is_ready());
    assert_eq!(m.encrypt(b"x"), Err(MlsError::NoGroup));
    m.create_group().unwrap();
    assert!(m.is_ready());
    assert_eq!(m.epoch(), 0);
    assert_eq!(m.create_group(), Err(MlsError::AlreadyInGroup));

    let r = add(&mut m, &mut p, &mut []);
    assert_eq!(r.member_identity, b"group-secret:p1");
    assert!(p.is_ready());
    assert_eq!(m.epoch(), 1);
    assert_eq!(p.epoch(), 1);
    assert_eq!(p.members(), m.members());
    assert!(m.members().contains(&b"group-secret:moderator".to_vec()));
    assert_all_talk(&mut [&mut m, &mut p]);
    // A second Welcome for an active member is refused, state unchanged.
    assert_eq!(p.process_welcome(&r.welcome), Err(MlsError::AlreadyInGroup));
}

#[test]
fn four_member_group_and_removal() {
    let mut m = member("moderator");
    let mut a = member("a");
    let mut b = member("b");
    let mut c = member("c");
    m.create_group().unwrap();
    add(&mut m, &mut a, &mut []);
    add(&mut m, &mut b, &mut [&mut a]);
    let rc = add(&mut m, &mut c, &mut [&mut a, &mut b]);
    assert_eq!(m.epoch(), 3);
    assert_all_talk(&mut [&mut m, &mut a, &mut b, &mut c]);

    // Remove b: b learns it was removed; the others keep talking; b cannot read new traffic.
    let commit = m.remove_member(b"group-secret:b").unwrap();
    assert_eq!(a.process_commit(&commit).unwrap(), CommitOutcome::Applied);
    assert_eq!(c.process_commit(&commit).unwrap(), CommitOutcome::Applied);
    assert_eq!(b.process_commit(&commit).unwrap(), CommitOutcome::Removed);
    assert!(!b.is_ready());
    assert!(b.members().is_empty());
    assert_eq!(b.encrypt(b"still here?"), Err(MlsError::Removed));
    assert_all_talk(&mut [&mut m, &mut a, &mut c]);
    let secret = m.encrypt(b"after b left").unwrap();
    assert_eq!(b.decrypt(&secret), Err(MlsError::Removed));

    // Remove c by leaf; c never sees the commit, yet it cannot decrypt the new epoch's traffic.
    let commit = m.remove_member_at(rc.member_leaf).unwrap();
    assert_eq!(a.process_commit(&commit).unwrap(), CommitOutcome::Applied);
    let secret = a.encrypt(b"only m and a").unwrap();
    assert!(matches!(c.decrypt(&secret), Err(MlsError::Decrypt(_))), "{:?}", c.decrypt(&secret));
    assert_eq!(m.decrypt(&secret).unwrap(), b"only m and a");
    assert_eq!(m.members().len(), 2);

    assert_eq!(m.remove_member(b"group-secret:b"), Err(MlsError::MemberNotFound));
    assert_eq!(m.remove_member(b"group-secret:moderator"), Err(MlsError::CannotRemoveSelf));
    assert_eq!(m.remove_member_at(99), Err(MlsError::MemberNotFound));
}

#[test]
fn late_joiner_cannot_read_earlier_messages() {
    let mut m = member("moderator");
    let mut a = member("a");
    let mut late = member("late");
    m.create_group().unwrap();
    add(&mut m, &mut a, &mut []);
    let before = m.encrypt(b"before late joined").unwrap();
    let before_a = a.encrypt(b"a before late joined").unwrap();
    add(&mut m, &mut late, &mut [&mut a]);
    assert!(late.decrypt(&before).is_err());
    assert!(late.decrypt(&before_a).is_err());
    // Old-epoch messages still decrypt for those who were there (kept past epochs).
    assert_eq!(a.decrypt(&before).unwrap(), b"before late joined");
    assert_all_talk(&mut [&mut m, &mut a, &mut late]);
}

#[test]
fn out_of_order_application_messages_decrypt() {
    let mut m = member("moderator");
    let mut a = member("a");
    m.create_group().unwrap();
    add(&mut m, &mut a, &mut []);
    let msgs: Vec<Vec<u8>> = (0..50).map(|i| m.encrypt(format!("m{i}").as_bytes()).unwrap()).collect();
    for i in (0..50).rev() {
        assert_eq!(a.decrypt(&msgs[i]).unwrap(), format!("m{i}").as_bytes());
    }
    // A replayed application message is refused (its key was consumed).
    assert!(matches!(a.decrypt(&msgs[3]), Err(MlsError::Decrypt(_))));
}

#[test]
fn bad_input_gives_typed_errors() {
    let mut m = member("moderator");
    let mut a = member("a");
    let mut b = member("b");
    // Before any group.
    assert_eq!(a.decrypt(b"whatever"), Err(MlsError::NoGroup));
    assert_eq!(a.process_commit(b"whatever"), Err(MlsError::NoGroup));
    assert!(matches!(a.process_welcome(b""), Err(MlsError::Malformed(_))));
    assert!(matches!(a.process_welcome(&[0xff; 64]), Err(MlsError::Malformed(_))));
    m.create_group().unwrap();
    assert!(matches!(m.add_member(b"\x00\x01garbage"), Err(MlsError::Malformed(_))));
    assert!(matches!(m.add_member(&[]), Err(MlsError::Malformed(_))));

    let r1 = add(&mut m, &mut a, &mut []);
    let kp_b = b.key_package().unwrap();
    let r2 = m.add_member(&kp_b).unwrap();
    b.process_welcome(&r2.welcome).unwrap();

    // Wrong kinds of message.
    assert!(matches!(m.add_member(&r2.welcome), Err(MlsError::UnexpectedMessage { expected: "KeyPackage", .. })));
    assert!(matches!(a.process_commit(&r2.welcome), Err(MlsError::UnexpectedMessage { .. })));
    assert!(matches!(a.decrypt(&r2.commit), Err(MlsError::UnexpectedMessage { .. })));
    let app = m.encrypt(b"hello").unwrap();
    assert!(matches!(a.process_commit(&app), Err(MlsError::UnexpectedMessage { .. })));
    assert!(matches!(a.process_welcome(&kp_b), Err(MlsError::AlreadyInGroup)));
    let mut fresh = member("fresh");
    assert!(matches!(fresh.process_welcome(&kp_b), Err(MlsError::UnexpectedMessage { .. })));
    // A Welcome meant for someone else.
    assert!(matches!(fresh.process_welcome(&r2.welcome), Err(MlsError::Welcome(_))));

    // Out-of-order commit (a is at epoch 1, r2.commit at epoch 1 is fine; hold a later one first).
    let r3_commit = m.remove_member(b"group-secret:b").unwrap(); // epoch 2 → 3
    assert_eq!(a.process_commit(&r3_commit), Err(MlsError::WrongEpoch { message: 2, group: 1 }));
    assert_eq!(a.process_commit(&r2.commit).unwrap(), CommitOutcome::Applied);
    assert_eq!(a.process_commit(&r3_commit).unwrap(), CommitOutcome::Applied);
    // Replayed commits.
    assert_eq!(a.process_commit(&r3_commit), Err(MlsError::WrongEpoch { message: 2, group: 3 }));
    assert_eq!(a.process_commit(&r1.commit), Err(MlsError::WrongEpoch { message: 0, group: 3 }));

    // Corrupted ciphertext: flip bytes at several positions.
    let good = m.encrypt(b"integrity").unwrap();
    for pos in [good.len() - 1, good.len() / 2, 30.min(good.len() - 1)] {
        let mut bad = good.clone();
        bad[pos] ^= 0x5a;
        assert!(a.decrypt(&bad).is_err(), "flip at {pos} must fail");
    }
    // Truncated and garbage.
    assert!(matches!(a.decrypt(&good[..good.len() - 3]), Err(MlsError::Malformed(_))));
    assert!(matches!(a.decrypt(&[0u8; 200]), Err(MlsError::Malformed(_))));
    assert_eq!(a.decrypt(&good).unwrap(), b"integrity");

    // Corrupted commit: signature / membership tag fails.
    let mut c = member("c");
    let kp_c = c.key_package().unwrap();
    let r4 = m.add_member(&kp_c).unwrap();
    c.process_welcome(&r4.welcome).unwrap();
    let mut bad = r4.commit.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(matches!(a.process_commit(&bad), Err(MlsError::Handshake(_))));
    assert_eq!(a.process_commit(&r4.commit).unwrap(), CommitOutcome::Applied);

    // Random garbage of many lengths never panics.
    for len in 0..300usize {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
        let _ = a.decrypt(&bytes);
        let _ = a.process_commit(&bytes);
        let _ = a.process_proposal(&bytes);
        let _ = m.add_member(&bytes);
        let _ = fresh.process_welcome(&bytes);
    }
    assert_all_talk(&mut [&mut m, &mut a, &mut c]);
}

#[test]
fn key_package_from_other_secret_is_rejected() {
    let mut m = member("moderator");
    m.create_group().unwrap();
    let mut intruder = member_with_secret("intruder", "other-secret");
    let kp = intruder.key_package().unwrap();
    assert!(matches!(m.add_member(&kp), Err(MlsError::CredentialRejected(_))));
    assert_eq!(m.epoch(), 0);
    assert_eq!(m.members().len(), 1);
}

#[test]
fn welcome_and_commit_with_unverifiable_members_are_rejected() {
    // The moderator trusts everyone; the joiners only trust SECRET.
    #[derive(Debug)]
    struct TrustAll;
    impl crate::auth::TokenVerifier for TrustAll {
        fn try_verify(&self, _token: &str) -> Result<(), AuthError> {
            Ok(())
        }
    }
    let mod_id = Arc::new(SharedSecret::new("moderator", SECRET).unwrap());
    let mut m = MlsState::new(mod_id, Arc::new(TrustAll)).unwrap();
    m.create_group().unwrap();
    let mut a = member("a");
    add(&mut m, &mut a, &mut []);

    // An outsider gets added by the lax moderator: a refuses the commit and stays where it was.
    let mut outsider = member_with_secret("outsider", "other-secret");
    let r = m.add_member(&outsider.key_package().unwrap()).unwrap();
    assert!(matches!(a.process_commit(&r.commit), Err(MlsError::CredentialRejected(_))));
    assert_eq!(a.epoch(), 1);
    // The outsider (who trusts only its own secret) refuses the group full of SECRET members.
    assert!(matches!(outsider.process_welcome(&r.welcome), Err(MlsError::CredentialRejected(_))));
    assert!(!outsider.is_ready());
    // A joiner that trusts SECRET refuses a group that contains the outsider.
    let mut b = member("b");
    let r = m.add_member(&b.key_package().unwrap()).unwrap();
    assert!(matches!(b.process_welcome(&r.welcome), Err(MlsError::CredentialRejected(_))));
}

#[test]
fn token_provider_failure_is_typed() {
    #[derive(Debug)]
    struct Broken;
    impl crate::auth::TokenProvider for Broken {
        fn get_token(&self) -> Result<String, AuthError> {
            Err(AuthError::Token("no key".into()))
        }
    }
    let v = Arc::new(SharedSecret::new("x", SECRET).unwrap());
    assert!(matches!(MlsState::new(Arc::new(Broken), v), Err(MlsError::Identity(_))));
}

#[test]
fn key_rotation_by_proposal_and_by_commit() {
    let mut m = member("moderator");
    let mut a = member("a");
    let mut b = member("b");
    m.create_group().unwrap();
    add(&mut m, &mut a, &mut []);
    add(&mut m, &mut b, &mut [&mut a]);

    // Participant a proposes an update; moderator relays it to b; moderator commits.
    let proposal = a.propose_update().unwrap();
    assert_eq!(a.encrypt(b"blocked"), Err(MlsError::PendingProposals));
    m.process_proposal(&proposal).unwrap();
    b.process_proposal(&proposal).unwrap();
    let commit = m.commit_pending_proposals().unwrap();
    assert_eq!(a.process_commit(&commit).unwrap(), CommitOutcome::Applied);
    assert_eq!(b.process_commit(&commit).unwrap(), CommitOutcome::Applied);
    assert_all_talk(&mut [&mut m, &mut a, &mut b]);
    // a now signs with its new key: another round of traffic and a commit still verify.
    let commit = m.rotate_own_keys().unwrap();
    assert_eq!(a.process_commit(&commit).unwrap(), CommitOutcome::Applied);
    assert_eq!(b.process_commit(&commit).unwrap(), CommitOutcome::Applied);
    assert_all_talk(&mut [&mut m, &mut a, &mut b]);
    assert_eq!(m.epoch(), 4);

    // A stale proposal (older epoch) and a non-proposal are refused.
    assert!(matches!(m.process_proposal(&proposal), Err(MlsError::WrongEpoch { .. })));
    assert!(matches!(m.process_proposal(&commit), Err(MlsError::UnexpectedMessage { .. })));
    let app = m.encrypt(b"x").unwrap();
    assert!(matches!(a.process_proposal(&app), Err(MlsError::UnexpectedMessage { .. })));
}

#[test]
fn update_with_rejected_token_is_refused() {
    #[derive(Debug)]
    struct Switchable(std::sync::Mutex<String>);
    impl crate::auth::TokenProvider for Switchable {
        fn get_token(&self) -> Result<String, AuthError> {
            Ok(self.0.lock().unwrap().clone())
        }
    }
    let tokens = Arc::new(Switchable(std::sync::Mutex::new(format!("{SECRET}:a"))));
    let verifier = Arc::new(SharedSecret::new("a", SECRET).unwrap());
    let mut a = MlsState::new(tokens.clone(), verifier).unwrap();
    let mut m = member("moderator");
    m.create_group().unwrap();
    add(&mut m, &mut a, &mut []);
    *tokens.0.lock().unwrap() = "other-secret:a".into();
    let proposal = a.propose_update().unwrap();
    assert!(matches!(m.process_proposal(&proposal), Err(MlsError::CredentialRejected(_))));
    assert_eq!(m.epoch(), 1);
    // Same through a self-update commit by a member whose new token is bad.
    let tokens_c = Arc::new(Switchable(std::sync::Mutex::new(format!("{SECRET}:c"))));
    let mut c = MlsState::new(tokens_c.clone(), Arc::new(SharedSecret::new("c", SECRET).unwrap())).unwrap();
    add(&mut m, &mut c, &mut []);
    *tokens_c.0.lock().unwrap() = "other-secret:c".into();
    let commit = c.rotate_own_keys().unwrap();
    assert!(matches!(m.process_commit(&commit), Err(MlsError::CredentialRejected(_))));
    assert_eq!(m.epoch(), 2);
}

/// Timing note for the report: `cargo test --release --lib mls::tests::timing -- --ignored --nocapture`.
#[test]
#[ignore]
fn timing() {
    use std::time::Instant;
    let mut m = member("moderator");
    let mut a = member("a");
    m.create_group().unwrap();
    add(&mut m, &mut a, &mut []);
    let payload = [7u8; 100];
    let n = 20_000;
    let t = Instant::now();
    let mut cts = Vec::with_capacity(n);
    for _ in 0..n {
        cts.push(m.encrypt(&payload).unwrap());
    }
    let enc = t.elapsed();
    let t = Instant::now();
    for c in &cts {
        a.decrypt(c).unwrap();
    }
    let dec = t.elapsed();
    println!(
        "100-byte payload, {n} msgs: encrypt {:.1} µs/op, decrypt {:.1} µs/op, ciphertext {} bytes",
        enc.as_secs_f64() * 1e6 / n as f64,
        dec.as_secs_f64() * 1e6 / n as f64,
        cts[0].len()
    );

    let t = Instant::now();
    let mut members = Vec::new();
    let mut others: Vec<MlsState> = Vec::new();
    for i in 0..8 {
        let mut j = member(&format!("j{i}"));
        let kp = j.key_package().unwrap();
        let r = m.add_member(&kp).unwrap();
        j.process_welcome(&r.welcome).unwrap();
        a.process_commit(&r.commit).unwrap();
        for o in others.iter_mut() {
            o.process_commit(&r.commit).unwrap();
        }
        others.push(j);
        members.push(r);
    }
    println!(
        "add member (key package + add + welcome + commit to all), 8 adds: {:.2} ms/add",
        t.elapsed().as_secs_f64() * 1e3 / 8.0
    );
}

#[test]
fn same_key_package_twice_is_refused_and_state_stays_usable() {
    let mut m = member("moderator");
    let mut a = member("a");
    m.create_group().unwrap();
    let kp = a.key_package().unwrap();
    let r = m.add_member(&kp).unwrap();
    a.process_welcome(&r.welcome).unwrap();
    let again = m.add_member(&kp);
    assert!(again.is_err(), "{again:?}");
    assert_eq!(m.epoch(), 1);
    assert_eq!(m.members().len(), 2);
    let mut b = member("b");
    add(&mut m, &mut b, &mut [&mut a]);
    assert_all_talk(&mut [&mut m, &mut a, &mut b]);
}
