//! The moderator/participant MLS flow (docs/protocol.md "Invite", "Remove", "MLS"), driven only through the
//! public `slim_bindings::mls` API the session layer uses: numbered COMMITs delivered to each
//! participant out of order and with duplicates, fed through a `HandshakeSequencer`, keep every
//! member on the same epoch and able to read everyone else.

use std::sync::Arc;

use slim_bindings::auth::SharedSecret;
use slim_bindings::mls::{Admission, CommitOutcome, HandshakeSequencer, MlsError, MlsState};

const SECRET: &str = "flow-secret";

struct Participant {
    name: String,
    mls: MlsState,
    seq: HandshakeSequencer<Vec<u8>>,
    acks: Vec<u32>,
    removed: bool,
}

impl Participant {
    fn new(name: &str) -> Self {
        let id = Arc::new(SharedSecret::new(name, SECRET).unwrap());
        Participant {
            name: name.into(),
            mls: MlsState::new(id.clone(), id).unwrap(),
            seq: HandshakeSequencer::new(64),
            acks: Vec::new(),
            removed: false,
        }
    }

    /// CHANNEL_MLS_WELCOME with MLS_INIT_COMMIT_ID.
    fn on_welcome(&mut self, welcome: &[u8], init_commit_id: u32) {
        if self.seq.last_applied().is_some() {
            return; // later Welcomes are ignored (only the first sets the starting point)
        }
        self.mls.process_welcome(welcome).unwrap();
        self.seq.on_welcome(init_commit_id);
    }

    /// CHANNEL_MLS_COMMIT with its moderator-assigned id.
    fn on_commit(&mut self, id: u32, commit: &[u8]) {
        if self.removed {
            // Its session is closing (LEAVE_REQUEST follows); the group state refuses everything.
            assert_eq!(self.mls.process_commit(commit), Err(MlsError::Removed));
            return;
        }
        match self.seq.offer(id, commit.to_vec()) {
            Admission::Accepted => self.acks.push(id),
            Admission::Stale | Admission::NoWelcomeYet | Admission::Full => return,
        }
        while let Some((_, blob)) = self.seq.next_ready() {
            if self.mls.process_commit(&blob).unwrap() == CommitOutcome::Removed {
                self.removed = true;
                break;
            }
        }
    }
}

/// A deterministic shuffle (no rand dependency in tests): reverse, then interleave.
fn scramble<T: Clone>(items: &[T]) -> Vec<T> {
    let rev: Vec<T> = items.iter().rev().cloned().collect();
    let (a, b) = rev.split_at(rev.len() / 2);
    let mut out = Vec::new();
    for i in 0..a.len().max(b.len()) {
        if let Some(x) = b.get(i) {
            out.push(x.clone());
        }
        if let Some(x) = a.get(i) {
            out.push(x.clone());
        }
    }
    out
}

#[test]
fn invite_remove_with_reordered_commits() {
    let id = Arc::new(SharedSecret::new("moderator", SECRET).unwrap());
    let mut moderator = MlsState::new(id.clone(), id).unwrap();
    moderator.create_group().unwrap();
    let mut mls_seq: u32 = 0;
    let mut participants: Vec<Participant> = Vec::new();
    // Commits each participant has not yet been sent: (id, blob).
    let mut outbox: Vec<Vec<(u32, Vec<u8>)>> = Vec::new();

    for i in 0..6 {
        let mut p = Participant::new(&format!("p{i}"));
        let key_package = p.mls.key_package().unwrap(); // JOIN_REPLY
        let added = moderator.add_member(&key_package).unwrap();
        mls_seq += 1;
        p.on_welcome(&added.welcome, mls_seq);
        for q in outbox.iter_mut() {
            q.push((mls_seq, added.commit.clone()));
        }
        participants.push(p);
        outbox.push(Vec::new());
    }
    // Remove p2 (by identity) and p4 (by leaf), as two numbered commits.
    for name in ["p2", "p4"] {
        let identity = format!("{SECRET}:{name}").into_bytes();
        let commit = moderator.remove_member(&identity).unwrap();
        mls_seq += 1;
        for q in outbox.iter_mut() {
            q.push((mls_seq, commit.clone()));
        }
    }

    // Deliver everything scrambled, every message twice, the second round scrambled again.
    for (p, q) in participants.iter_mut().zip(outbox.iter()) {
        let once = scramble(q);
        for (id, blob) in once.iter().chain(scramble(&once).iter()) {
            p.on_commit(*id, blob);
        }
    }

    for p in &participants {
        let expect_removed = p.name == "p2" || p.name == "p4";
        assert_eq!(p.removed, expect_removed, "{}", p.name);
        if !expect_removed {
            assert_eq!(p.mls.epoch(), moderator.epoch(), "{} epoch", p.name);
            assert_eq!(p.seq.last_applied(), Some(mls_seq));
            assert_eq!(p.seq.waiting(), 0);
        }
    }
    assert_eq!(moderator.members().len(), 5);

    // Everyone still in the group reads everyone else; the removed ones read nothing new.
    let text = b"after the removals".to_vec();
    let from_mod = moderator.encrypt(&text).unwrap();
    for p in participants.iter_mut() {
        let got = p.mls.decrypt(&from_mod);
        if p.removed {
            assert_eq!(got, Err(MlsError::Removed), "{}", p.name);
        } else {
            assert_eq!(got.unwrap(), text, "{}", p.name);
        }
    }
    let live: Vec<usize> = (0..participants.len()).filter(|&i| !participants[i].removed).collect();
    for &i in &live {
        let from = participants[i].name.clone().into_bytes();
        let c = participants[i].mls.encrypt(&from).unwrap();
        assert_eq!(moderator.decrypt(&c).unwrap(), from);
        for &j in &live {
            if i != j {
                assert_eq!(participants[j].mls.decrypt(&c).unwrap(), from);
            }
        }
    }
}
