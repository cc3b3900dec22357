//! End-to-end group encryption for sessions with `mls_enabled`: a synchronous wrapper around one
//! openmls group, driven by the session layer (docs/protocol.md "MLS").
//!
//! Settings (fixed, RFC 9420 interop with the reference's mls-rs):
//! - ciphersuite `0x0001` (MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519);
//! - Basic credential whose identity bytes are this app's identity token;
//! - the ratchet tree travels inside the Welcome, so joiners need nothing else;
//! - commits and proposals are PublicMessages, application data PrivateMessages;
//! - every blob in and out is a TLS-serialized `MLSMessage`.
//!
//! Every other member's credential (key packages we add, members listed in a Welcome, leaves
//! changed by a commit or an update proposal) must pass the app's [`Verifier`] on the identity
//! bytes as UTF-8 (`try_verify` for key packages; `try_verify_credential`, which skips expiry, for
//! the rest, since a credential keeps the token its holder joined with), or the operation fails with
//! [`MlsError::CredentialRejected`] and the state is left untouched.
//!
//! State lives in memory only; nothing touches the disk.
//!
//! Typical use (moderator `m`, joiner `j`, existing member `e`):
//! ```text
//! m.create_group()
//! kp = j.key_package()                      // JOIN_REPLY blob
//! r = m.add_member(kp)                      // r.welcome → j (WELCOME), r.commit → channel (COMMIT)
//! j.process_welcome(r.welcome); e.process_commit(r.commit)
//! c = x.encrypt(data); y.decrypt(c)
//! ```

pub mod batch;
pub mod interceptor;
pub mod sequencer;
pub mod signer;

pub use sequencer::{Admission, HandshakeSequencer};
pub use signer::Ed25519Signer;

use openmls::prelude::tls_codec::DeserializeBytes;
use openmls::prelude::{
    BasicCredential, Capabilities, Ciphersuite, ContentType, CreateMessageError, Credential, CredentialType,
    CredentialWithKey, ExtensionType, KeyPackage, LeafNodeIndex, LeafNodeParameters, MlsGroup, MlsGroupJoinConfig,
    MlsGroupStateError, MlsMessageBodyIn, MlsMessageIn, MlsMessageOut, NewSignerBundle, OpenMlsProvider, OpenMlsRand,
    PURE_PLAINTEXT_WIRE_FORMAT_POLICY, ProcessedMessageContent, Proposal, ProtocolMessage, ProtocolVersion,
    SenderRatchetConfiguration, StagedCommit, StagedWelcome,
};
use openmls_rust_crypto::OpenMlsRustCrypto;

use crate::auth::{AuthError, Provider, Verifier};

/// The only ciphersuite used: X25519, AES-128-GCM, SHA-256, Ed25519 (`0x0001`).
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// Private-use extension type (RFC 9420 §17.3 range 0xF000-0xFFFF) a member lists in its leaf
/// capabilities when it can read batches ([`batch`]). It is never sent as an extension, only
/// advertised, so implementations that do not know it (slim-bindings 0.6.0) ignore it.
pub const BATCH_EXTENSION: u16 = 0xF5B1;

/// Epochs whose secrets are kept after a commit, so application messages sent just before a
/// commit (and delivered after it, or retransmitted) still decrypt.
const MAX_PAST_EPOCHS: usize = 3;
/// How far back (in generations of one sender) a late message may be: multicast retransmissions
/// can arrive long after newer messages of the same producer.
const OUT_OF_ORDER_TOLERANCE: u32 = 256;
/// How far ahead of the last seen generation of one sender a message may be (lost messages).
const MAX_FORWARD_DISTANCE: u32 = 10_000;

/// Why an MLS operation failed. Input errors never panic; each has its own variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MlsError {
    /// This app's identity token could not be obtained.
    #[error("mls: cannot get own identity token: {0}")]
    Identity(AuthError),
    /// Key generation or another crypto-provider operation failed.
    #[error("mls: crypto failure: {0}")]
    Crypto(String),
    /// The operation needs a group and there is none yet (no create_group / Welcome).
    #[error("mls: no group yet")]
    NoGroup,
    /// create_group / process_welcome while already an active member of a group.
    #[error("mls: already in a group")]
    AlreadyInGroup,
    /// This member was removed from the group; it can neither send nor read any more.
    #[error("mls: this member was removed from the group")]
    Removed,
    /// The bytes are not a TLS-serialized MLSMessage.
    #[error("mls: malformed message: {0}")]
    Malformed(String),
    /// A well-formed MLSMessage of the wrong kind (e.g. a commit given to `decrypt`).
    #[error("mls: expected {expected}, got {got}")]
    UnexpectedMessage {
        /// What the call expected.
        expected: &'static str,
        /// What the bytes contained.
        got: String,
    },
    /// The message belongs to another group.
    #[error("mls: message for another group")]
    WrongGroup,
    /// A commit or proposal for another epoch: a replayed (older) or out-of-order (newer) one.
    #[error("mls: message for epoch {message}, group is at epoch {group}")]
    WrongEpoch {
        /// Epoch named by the message.
        message: u64,
        /// Current epoch of the local group.
        group: u64,
    },
    /// The key package failed validation (signature, lifetime, version, ciphersuite).
    #[error("mls: invalid key package: {0}")]
    InvalidKeyPackage(String),
    /// A member's credential is not a Basic credential.
    #[error("mls: unsupported credential type {0:?}")]
    UnsupportedCredential(String),
    /// A member's identity token was rejected by the app's verifier.
    #[error("mls: credential rejected: {0}")]
    CredentialRejected(AuthError),
    /// No member has this identity (or this leaf).
    #[error("mls: member not found")]
    MemberNotFound,
    /// Several members share this identity; remove by leaf instead.
    #[error("mls: {0} members share this identity")]
    AmbiguousMember(usize),
    /// A member cannot remove itself with a commit.
    #[error("mls: cannot remove self")]
    CannotRemoveSelf,
    /// The Welcome could not be used (not for us, no ratchet tree, bad signature, ...).
    #[error("mls: cannot join from welcome: {0}")]
    Welcome(String),
    /// openmls rejected a handshake message (bad signature, bad membership tag, invalid commit).
    #[error("mls: cannot process handshake message: {0}")]
    Handshake(String),
    /// An application message could not be decrypted or authenticated.
    #[error("mls: cannot decrypt: {0}")]
    Decrypt(String),
    /// A payload arrived in the clear on a session that requires MLS encryption.
    #[error("mls: payload is not encrypted")]
    NotEncrypted,
    /// A message this member sent itself came back; there is nothing to decrypt.
    #[error("mls: own message")]
    OwnMessage,
    /// Encryption is impossible while proposals wait for a commit (commit or drop them first).
    #[error("mls: pending proposals must be committed first")]
    PendingProposals,
    /// Creating a handshake or application message failed.
    #[error("mls: cannot create message: {0}")]
    Create(String),
}

/// What `add_member` produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddResult {
    /// COMMIT blob for the members that were in the group before the add.
    pub commit: Vec<u8>,
    /// WELCOME blob for the new member.
    pub welcome: Vec<u8>,
    /// The new member's identity (its token bytes), e.g. to remove it later.
    pub member_identity: Vec<u8>,
    /// The new member's leaf index; stable while it stays in the group.
    pub member_leaf: u32,
}

/// What applying a commit did to this member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The group moved to the next epoch and this member is still in it.
    Applied,
    /// The commit removed this member: the state is now unusable for traffic.
    Removed,
}

/// One member's view of one MLS group, plus its own signing identity.
pub struct MlsState {
    provider: OpenMlsRustCrypto,
    token_provider: Provider,
    verifier: Verifier,
    signer: Ed25519Signer,
    credential: CredentialWithKey,
    group: Option<MlsGroup>,
    removed: bool,
    /// New signing key proposed by `propose_update`; used once a commit applies the update.
    pending_signer: Option<(Ed25519Signer, CredentialWithKey)>,
    /// Whether this member's leaf advertises [`BATCH_EXTENSION`] (on unless a test turns it off).
    advertise_batches: bool,
    /// Epoch at which every leaf was last found to advertise [`BATCH_EXTENSION`] (or not).
    batches_checked: Option<(u64, bool)>,
}

impl std::fmt::Debug for MlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MlsState")
            .field("ready", &self.is_ready())
            .field("epoch", &self.epoch())
            .field("removed", &self.removed)
            .finish_non_exhaustive()
    }
}

fn malformed(e: impl std::fmt::Display) -> MlsError {
    MlsError::Malformed(e.to_string())
}

fn parse(bytes: &[u8]) -> Result<MlsMessageBodyIn, MlsError> {
    let msg = MlsMessageIn::tls_deserialize_exact_bytes(bytes).map_err(malformed)?;
    Ok(msg.extract())
}

fn kind(body: &MlsMessageBodyIn) -> String {
    match body {
        MlsMessageBodyIn::PublicMessage(_) => "PublicMessage".into(),
        MlsMessageBodyIn::PrivateMessage(_) => "PrivateMessage".into(),
        MlsMessageBodyIn::Welcome(_) => "Welcome".into(),
        MlsMessageBodyIn::GroupInfo(_) => "GroupInfo".into(),
        MlsMessageBodyIn::KeyPackage(_) => "KeyPackage".into(),
        #[allow(unreachable_patterns)]
        _ => "other MLSMessage".into(),
    }
}

fn to_bytes(msg: &MlsMessageOut) -> Result<Vec<u8>, MlsError> {
    msg.to_bytes().map_err(|e| MlsError::Create(e.to_string()))
}

fn group_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .sender_ratchet_configuration(SenderRatchetConfiguration::new(OUT_OF_ORDER_TOLERANCE, MAX_FORWARD_DISTANCE))
        .build()
}

impl MlsState {
    /// A member with a fresh Ed25519 signing key and a Basic credential holding `provider`'s token.
    pub fn new(provider: Provider, verifier: Verifier) -> Result<Self, MlsError> {
        let crypto = OpenMlsRustCrypto::default();
        let (signer, credential) = Self::fresh_identity(&provider, crypto.rand())?;
        Ok(Self {
            provider: crypto,
            token_provider: provider,
            verifier,
            signer,
            credential,
            group: None,
            removed: false,
            pending_signer: None,
            advertise_batches: true,
            batches_checked: None,
        })
    }

    /// Turns off (or on again) advertising batch support in the leaf this member creates next
    /// (its group or key package). Off makes it look like a member that cannot read batches, as
    /// slim-bindings 0.6.0 is; tests use it.
    pub fn advertise_batches(&mut self, on: bool) {
        self.advertise_batches = on;
    }

    fn capabilities(&self) -> Capabilities {
        let extensions = if self.advertise_batches { vec![ExtensionType::from(BATCH_EXTENSION)] } else { Vec::new() };
        Capabilities::new(None, None, Some(&extensions), None, None)
    }

    /// True when every member of the current epoch (this one included) advertises
    /// [`BATCH_EXTENSION`], so application messages may be sent as batches. Checked once per epoch.
    pub fn group_reads_batches(&mut self) -> bool {
        let Ok(group) = self.active_group() else {
            return false;
        };
        let epoch = group.epoch().as_u64();
        if let Some((checked, all)) = self.batches_checked
            && checked == epoch
        {
            return all;
        }
        let wanted = ExtensionType::from(BATCH_EXTENSION);
        let public = group.public_group();
        let all = group
            .members()
            .all(|m| public.leaf(m.index).is_some_and(|leaf| leaf.capabilities().extensions().contains(&wanted)));
        self.batches_checked = Some((epoch, all));
        all
    }

    fn fresh_identity(
        provider: &Provider,
        rand: &impl OpenMlsRand,
    ) -> Result<(Ed25519Signer, CredentialWithKey), MlsError> {
        let token = provider.get_token().map_err(MlsError::Identity)?;
        let signer = Ed25519Signer::generate(rand)?;
        let credential = CredentialWithKey {
            credential: BasicCredential::new(token.into_bytes()).into(),
            signature_key: signer.public().to_vec().into(),
        };
        Ok((signer, credential))
    }

    /// Starts a new group with this member alone in it (the moderator does this).
    pub fn create_group(&mut self) -> Result<(), MlsError> {
        if self.active_group().is_ok() {
            return Err(MlsError::AlreadyInGroup);
        }
        let cfg = group_config();
        let group = MlsGroup::builder()
            .ciphersuite(CIPHERSUITE)
            .with_wire_format_policy(cfg.wire_format_policy())
            .use_ratchet_tree_extension(true)
            .max_past_epochs(MAX_PAST_EPOCHS)
            .sender_ratchet_configuration(*cfg.sender_ratchet_configuration())
            .with_capabilities(self.capabilities())
            .build(&self.provider, &self.signer, self.credential.clone())
            .map_err(|e| MlsError::Create(e.to_string()))?;
        self.group = Some(group);
        self.batches_checked = None;
        self.removed = false;
        Ok(())
    }

    /// A new key package (MLSMessage bytes) that lets a moderator add this member.
    pub fn key_package(&mut self) -> Result<Vec<u8>, MlsError> {
        let bundle = KeyPackage::builder()
            .leaf_node_capabilities(self.capabilities())
            .build(CIPHERSUITE, &self.provider, &self.signer, self.credential.clone())
            .map_err(|e| MlsError::Create(e.to_string()))?;
        to_bytes(&MlsMessageOut::from(bundle.key_package().clone()))
    }

    /// Adds the owner of `key_package`; the commit is merged locally before returning.
    pub fn add_member(&mut self, key_package: &[u8]) -> Result<AddResult, MlsError> {
        self.active_group()?;
        let body = parse(key_package)?;
        let kp_in = match body {
            MlsMessageBodyIn::KeyPackage(kp) => kp,
            other => {
                return Err(MlsError::UnexpectedMessage { expected: "KeyPackage", got: kind(&other) });
            }
        };
        let kp = kp_in
            .validate(self.provider.crypto(), ProtocolVersion::Mls10)
            .map_err(|e| MlsError::InvalidKeyPackage(e.to_string()))?;
        if kp.ciphersuite() != CIPHERSUITE {
            return Err(MlsError::InvalidKeyPackage(format!("ciphersuite {:?}", kp.ciphersuite())));
        }
        // A joiner's key package is made for this join: its token must be live.
        let member_identity = self.check_credential(kp.leaf_node().credential(), true)?;
        let new_signature_key = kp.leaf_node().signature_key().as_slice().to_vec();

        let (provider, signer) = (&self.provider, &self.signer);
        let group = self.group.as_mut().ok_or(MlsError::NoGroup)?;
        let (commit, welcome, _group_info) =
            group.add_members(provider, signer, &[kp]).map_err(|e| MlsError::Create(e.to_string()))?;
        if let Err(e) = group.merge_pending_commit(provider) {
            let _ = group.clear_pending_commit(provider.storage());
            return Err(MlsError::Create(e.to_string()));
        }
        let member_leaf = group
            .members()
            .find(|m| m.signature_key == new_signature_key)
            .map(|m| m.index.u32())
            .ok_or(MlsError::MemberNotFound)?;
        Ok(AddResult { commit: to_bytes(&commit)?, welcome: to_bytes(&welcome)?, member_identity, member_leaf })
    }

    /// Removes the one member whose identity is `identity`; returns the COMMIT blob (merged locally).
    pub fn remove_member(&mut self, identity: &[u8]) -> Result<Vec<u8>, MlsError> {
        let group = self.active_group()?;
        let matches: Vec<LeafNodeIndex> =
            group.members().filter(|m| m.credential.serialized_content() == identity).map(|m| m.index).collect();
        match matches.as_slice() {
            [] => Err(MlsError::MemberNotFound),
            [leaf] => self.remove_leaf(*leaf),
            many => Err(MlsError::AmbiguousMember(many.len())),
        }
    }

    /// Removes the member at leaf `leaf` (as returned in [`AddResult::member_leaf`]).
    pub fn remove_member_at(&mut self, leaf: u32) -> Result<Vec<u8>, MlsError> {
        let group = self.active_group()?;
        let leaf = LeafNodeIndex::new(leaf);
        if group.member_at(leaf).is_none() {
            return Err(MlsError::MemberNotFound);
        }
        self.remove_leaf(leaf)
    }

    fn remove_leaf(&mut self, leaf: LeafNodeIndex) -> Result<Vec<u8>, MlsError> {
        let (provider, signer) = (&self.provider, &self.signer);
        let group = self.group.as_mut().ok_or(MlsError::NoGroup)?;
        if leaf == group.own_leaf_index() {
            return Err(MlsError::CannotRemoveSelf);
        }
        let (commit, _welcome, _group_info) =
            group.remove_members(provider, signer, &[leaf]).map_err(|e| MlsError::Create(e.to_string()))?;
        if let Err(e) = group.merge_pending_commit(provider) {
            let _ = group.clear_pending_commit(provider.storage());
            return Err(MlsError::Create(e.to_string()));
        }
        to_bytes(&commit)
    }

    /// Joins the group described by a WELCOME blob built from one of our key packages.
    pub fn process_welcome(&mut self, welcome: &[u8]) -> Result<(), MlsError> {
        if self.active_group().is_ok() {
            return Err(MlsError::AlreadyInGroup);
        }
        let welcome = match parse(welcome)? {
            MlsMessageBodyIn::Welcome(w) => w,
            other => {
                return Err(MlsError::UnexpectedMessage { expected: "Welcome", got: kind(&other) });
            }
        };
        if welcome.ciphersuite() != CIPHERSUITE {
            return Err(MlsError::Welcome(format!("ciphersuite {:?}", welcome.ciphersuite())));
        }
        let staged = StagedWelcome::build_from_welcome(&self.provider, &group_config(), welcome)
            .map_err(|e| MlsError::Welcome(e.to_string()))?
            .replace_old_group()
            .build()
            .map_err(|e| MlsError::Welcome(e.to_string()))?;
        for member in staged.members() {
            self.check_credential(&member.credential, false)?;
        }
        let group = staged.into_group(&self.provider).map_err(|e| MlsError::Welcome(e.to_string()))?;
        self.group = Some(group);
        self.batches_checked = None;
        self.removed = false;
        Ok(())
    }

    /// Applies a COMMIT blob from another member; tells whether this member was removed by it.
    pub fn process_commit(&mut self, commit: &[u8]) -> Result<CommitOutcome, MlsError> {
        let message = self.handshake_message(commit, ContentType::Commit, "Commit")?;
        let processed = self.process(message)?;
        match processed {
            ProcessedMessageContent::StagedCommitMessage(staged) => self.merge_checked(*staged),
            other => Err(MlsError::UnexpectedMessage { expected: "Commit", got: content_name(&other) }),
        }
    }

    fn merge_checked(&mut self, staged: StagedCommit) -> Result<CommitOutcome, MlsError> {
        for credential in staged.credentials_to_verify() {
            self.check_credential(credential, false)?;
        }
        let self_removed = staged.self_removed();
        let provider = &self.provider;
        let group = self.group.as_mut().ok_or(MlsError::NoGroup)?;
        group.merge_staged_commit(provider, staged).map_err(|e| MlsError::Handshake(e.to_string()))?;
        if self_removed {
            self.removed = true;
            self.pending_signer = None;
            return Ok(CommitOutcome::Removed);
        }
        self.adopt_pending_signer();
        Ok(CommitOutcome::Applied)
    }

    /// After a commit that applied our own update proposal, sign with the new key from now on.
    fn adopt_pending_signer(&mut self) {
        let Some(group) = self.group.as_ref() else {
            return;
        };
        let Some(own_key) = group.own_leaf_node().map(|l| l.signature_key().as_slice().to_vec()) else {
            return;
        };
        let applied = matches!(&self.pending_signer, Some((signer, _)) if signer.public() == own_key.as_slice());
        if applied && let Some((signer, credential)) = self.pending_signer.take() {
            self.signer = signer;
            self.credential = credential;
        }
    }

    /// Encrypts application data into a PrivateMessage blob for the current epoch.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, MlsError> {
        self.active_group()?;
        let (provider, signer) = (&self.provider, &self.signer);
        let group = self.group.as_mut().ok_or(MlsError::NoGroup)?;
        let out = group.create_message(provider, signer, plaintext).map_err(|e| match e {
            CreateMessageError::GroupStateError(MlsGroupStateError::UseAfterEviction) => MlsError::Removed,
            CreateMessageError::GroupStateError(MlsGroupStateError::PendingProposal) => MlsError::PendingProposals,
            other => MlsError::Create(other.to_string()),
        })?;
        to_bytes(&out)
    }

    /// Decrypts an application PrivateMessage blob; handshake messages are refused.
    pub fn decrypt(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>, MlsError> {
        let group = self.active_group()?;
        let message: ProtocolMessage = match parse(ciphertext)? {
            MlsMessageBodyIn::PrivateMessage(m) => m.into(),
            other => {
                return Err(MlsError::UnexpectedMessage { expected: "application PrivateMessage", got: kind(&other) });
            }
        };
        if message.content_type() != ContentType::Application {
            return Err(MlsError::UnexpectedMessage {
                expected: "application PrivateMessage",
                got: format!("{:?} PrivateMessage", message.content_type()),
            });
        }
        if message.group_id() != group.group_id() {
            return Err(MlsError::WrongGroup);
        }
        let provider = &self.provider;
        let group = self.group.as_mut().ok_or(MlsError::NoGroup)?;
        let processed = group.process_message(provider, message).map_err(|e| MlsError::Decrypt(e.to_string()))?;
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(app) => Ok(app.into_bytes()),
            ProcessedMessageContent::OwnPrivateMessage => Err(MlsError::OwnMessage),
            other => Err(MlsError::UnexpectedMessage { expected: "application message", got: content_name(&other) }),
        }
    }

    /// True once this member is in a group it was not removed from (can encrypt and decrypt).
    pub fn is_ready(&self) -> bool {
        self.active_group().is_ok()
    }

    /// The group's current epoch (0 before any group).
    pub fn epoch(&self) -> u64 {
        self.group.as_ref().map(|g| g.epoch().as_u64()).unwrap_or(0)
    }

    /// Identities (token bytes) of all current members, this one included, in leaf order.
    pub fn members(&self) -> Vec<Vec<u8>> {
        match self.active_group() {
            Ok(g) => g.members().map(|m| m.credential.serialized_content().to_vec()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// This member's own identity (its token bytes as put in its credential).
    pub fn identity(&self) -> &[u8] {
        self.credential.credential.serialized_content()
    }

    /// Proposes replacing this member's signing key and credential (fresh token) with an Update
    /// proposal (PROPOSAL blob). The moderator stores it with `process_proposal` and commits it.
    /// Until that commit arrives, this member cannot encrypt (openmls forbids it with pending
    /// proposals).
    pub fn propose_update(&mut self) -> Result<Vec<u8>, MlsError> {
        self.active_group()?;
        let (new_signer, new_credential) = Self::fresh_identity(&self.token_provider, self.provider.rand())?;
        let (provider, signer) = (&self.provider, &self.signer);
        let group = self.group.as_mut().ok_or(MlsError::NoGroup)?;
        let (msg, _ref) = group
            .propose_self_update_with_new_signer(
                provider,
                signer,
                NewSignerBundle { signer: &new_signer, credential_with_key: new_credential.clone() },
                LeafNodeParameters::default(),
            )
            .map_err(|e| MlsError::Create(e.to_string()))?;
        let bytes = to_bytes(&msg)?;
        self.pending_signer = Some((new_signer, new_credential));
        Ok(bytes)
    }

    /// Verifies and stores another member's Update PROPOSAL blob until a commit covers it.
    pub fn process_proposal(&mut self, proposal: &[u8]) -> Result<(), MlsError> {
        let message = self.handshake_message(proposal, ContentType::Proposal, "Proposal")?;
        let queued = match self.process(message)? {
            ProcessedMessageContent::ProposalMessage(q) => q,
            other => {
                return Err(MlsError::UnexpectedMessage { expected: "Proposal", got: content_name(&other) });
            }
        };
        match queued.proposal() {
            Proposal::Update(update) => {
                self.check_credential(update.leaf_node().credential(), false)?;
            }
            other => {
                return Err(MlsError::UnexpectedMessage {
                    expected: "Update proposal",
                    got: format!("{:?} proposal", other.proposal_type()),
                });
            }
        }
        let provider = &self.provider;
        let group = self.group.as_mut().ok_or(MlsError::NoGroup)?;
        group
            .store_pending_proposal(provider.storage(), *queued)
            .map_err(|e| MlsError::Handshake(format!("cannot store proposal: {e:?}")))
    }

    /// Commits every stored proposal (COMMIT blob for all other members), merged locally.
    pub fn commit_pending_proposals(&mut self) -> Result<Vec<u8>, MlsError> {
        self.active_group()?;
        let (provider, signer) = (&self.provider, &self.signer);
        let group = self.group.as_mut().ok_or(MlsError::NoGroup)?;
        let (commit, _welcome, _group_info) =
            group.commit_to_pending_proposals(provider, signer).map_err(|e| MlsError::Create(e.to_string()))?;
        if let Err(e) = group.merge_pending_commit(provider) {
            let _ = group.clear_pending_commit(provider.storage());
            return Err(MlsError::Create(e.to_string()));
        }
        self.adopt_pending_signer();
        to_bytes(&commit)
    }

    /// Rotates this member's own signing key and credential (fresh token) in one commit
    /// (COMMIT blob for all other members), merged locally. Used by the moderator.
    pub fn rotate_own_keys(&mut self) -> Result<Vec<u8>, MlsError> {
        self.active_group()?;
        let (new_signer, new_credential) = Self::fresh_identity(&self.token_provider, self.provider.rand())?;
        let (provider, signer) = (&self.provider, &self.signer);
        let group = self.group.as_mut().ok_or(MlsError::NoGroup)?;
        let bundle = group
            .self_update_with_new_signer(
                provider,
                signer,
                NewSignerBundle { signer: &new_signer, credential_with_key: new_credential.clone() },
                LeafNodeParameters::default(),
            )
            .map_err(|e| MlsError::Create(e.to_string()))?;
        let commit = to_bytes(bundle.commit())?;
        if let Err(e) = group.merge_pending_commit(provider) {
            let _ = group.clear_pending_commit(provider.storage());
            return Err(MlsError::Create(e.to_string()));
        }
        self.signer = new_signer;
        self.credential = new_credential;
        Ok(commit)
    }

    fn active_group(&self) -> Result<&MlsGroup, MlsError> {
        if self.removed {
            return Err(MlsError::Removed);
        }
        match self.group.as_ref() {
            None => Err(MlsError::NoGroup),
            Some(g) if !g.is_active() => Err(MlsError::Removed),
            Some(g) => Ok(g),
        }
    }

    /// Parses a handshake blob and checks kind, framing, group and epoch before any crypto.
    fn handshake_message(
        &self,
        bytes: &[u8],
        content: ContentType,
        expected: &'static str,
    ) -> Result<ProtocolMessage, MlsError> {
        let group = self.active_group()?;
        let message: ProtocolMessage = match parse(bytes)? {
            MlsMessageBodyIn::PublicMessage(m) => m.into(),
            other => {
                return Err(MlsError::UnexpectedMessage { expected, got: kind(&other) });
            }
        };
        if message.content_type() != content {
            return Err(MlsError::UnexpectedMessage {
                expected,
                got: format!("{:?} PublicMessage", message.content_type()),
            });
        }
        if message.group_id() != group.group_id() {
            return Err(MlsError::WrongGroup);
        }
        let (msg_epoch, group_epoch) = (message.epoch().as_u64(), group.epoch().as_u64());
        if msg_epoch != group_epoch {
            return Err(MlsError::WrongEpoch { message: msg_epoch, group: group_epoch });
        }
        Ok(message)
    }

    fn process(&mut self, message: ProtocolMessage) -> Result<ProcessedMessageContent, MlsError> {
        let provider = &self.provider;
        let group = self.group.as_mut().ok_or(MlsError::NoGroup)?;
        let processed = group.process_message(provider, message).map_err(|e| MlsError::Handshake(e.to_string()))?;
        Ok(processed.into_content())
    }

    /// Checks a member credential with the app's verifier; returns its identity bytes.
    /// `live`: the token must also be unexpired (a key package made for this join). Otherwise
    /// expiry is not checked: a member's credential keeps the token it had when it joined.
    fn check_credential(&self, credential: &Credential, live: bool) -> Result<Vec<u8>, MlsError> {
        if credential.credential_type() != CredentialType::Basic {
            return Err(MlsError::UnsupportedCredential(format!("{:?}", credential.credential_type())));
        }
        let identity = credential.serialized_content();
        let token = std::str::from_utf8(identity)
            .map_err(|_| MlsError::CredentialRejected(AuthError::Verification("identity is not UTF-8".into())))?;
        let checked = if live { self.verifier.try_verify(token) } else { self.verifier.try_verify_credential(token) };
        checked.map_err(MlsError::CredentialRejected)?;
        Ok(identity.to_vec())
    }
}

fn content_name(content: &ProcessedMessageContent) -> String {
    match content {
        ProcessedMessageContent::ApplicationMessage(_) => "application message".into(),
        ProcessedMessageContent::ProposalMessage(_) => "proposal".into(),
        ProcessedMessageContent::ExternalJoinProposalMessage(_) => "external join proposal".into(),
        ProcessedMessageContent::StagedCommitMessage(_) => "commit".into(),
        ProcessedMessageContent::OwnPendingCommit => "own pending commit".into(),
        ProcessedMessageContent::OwnPrivateMessage => "own private message".into(),
        #[allow(unreachable_patterns)]
        _ => "other content".into(),
    }
}

#[cfg(test)]
mod tests;
