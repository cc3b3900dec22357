//! What a member sends to its group: the hold policy, single messages and MLS batches, the ring
//! of sent messages kept for retransmission, and the answers to RTX requests.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{BEACON_INITIAL, BEACON_MAX, McTimer, MulticastRole, MulticastTask};
use crate::error::{MlsFailure, SlimError};
use crate::mls::batch::{self, BatchItem, MAX_BATCH_BYTES, MAX_BATCH_ITEMS, META_MLS_BATCH};
use crate::mls::{MlsState, interceptor};
use crate::session::PublishRequest;
use crate::session::buffers::PRODUCER_BUFFER_SLOTS;
use crate::session::context::{Stats, Target, data_message};
use crate::session::entry::Command;
use crate::session::timer::TimerPolicy;
use crate::wire::builders::{self, Flags, PublishSpec};
use crate::wire::{self, FANOUT_MULTICAST, Message, Name, SessionMessageType, SessionType};

/// How recent a message of an earlier MLS epoch must be for its RTX_REPLY to be re-encrypted at
/// the current epoch rather than resent as stored. Members added since it was sent then read it:
/// what was published while their invites were in flight (a 0.6.0 moderator lets its app publish
/// then and sends its invites back to back; its members ask after their WELCOME, prompted by the
/// producer's beacon, and 0.6.0 producers re-encrypt every retransmission). Older messages keep
/// the epoch they were sent in, unreadable to anyone who joined since.
pub const RTX_REENCRYPT_WINDOW: Duration = Duration::from_secs(10);

/// Whether the retransmission of a message encrypted at `sent_epoch`, `age` ago, is encrypted
/// again at `current_epoch`. Within the same epoch always: receivers decrypt on arrival and keep
/// the keys of only the last few hundred generations of a sender, so the stored ciphertext of an
/// older message would no longer open; a fresh encryption is readable by exactly the same
/// members. Across epochs only within [`RTX_REENCRYPT_WINDOW`].
fn reencrypt_for_rtx(sent_epoch: u64, current_epoch: u64, age: Duration) -> bool {
    sent_epoch == current_epoch || (sent_epoch < current_epoch && age <= RTX_REENCRYPT_WINDOW)
}

/// A published message kept for retransmission.
pub(super) struct Produced {
    /// As sent (MLS groups: encrypted).
    msg: Message,
    /// MLS groups: the epoch the message was encrypted in, and its plaintext blob.
    clear: Option<(u64, Vec<u8>)>,
    sent_at: Instant,
}

/// The last [`PRODUCER_BUFFER_SLOTS`] data messages this member sent, kept for retransmission.
/// One slot per wire message: an MLS batch holds all of its ids in one slot, so batching does not
/// shorten how far back (in ids) a loss can be repaired.
pub(super) struct SentRing {
    /// (first id, id count, message), oldest first.
    slots: VecDeque<(u32, u32, Produced)>,
}

impl SentRing {
    /// An empty ring.
    pub(super) fn new() -> Self {
        SentRing { slots: VecDeque::with_capacity(PRODUCER_BUFFER_SLOTS) }
    }

    /// Keeps the wire message that carried ids `first .. first + count`, dropping the oldest when
    /// full.
    fn push(&mut self, first: u32, count: u32, msg: Produced) {
        if self.slots.len() >= PRODUCER_BUFFER_SLOTS {
            self.slots.pop_front();
        }
        self.slots.push_back((first, count, msg));
    }

    /// The wire message that carried `id`, if still kept (newest first: RTX asks for recent ids).
    fn get(&self, id: u32) -> Option<&Produced> {
        self.slots.iter().rev().find(|(first, count, _)| id.wrapping_sub(*first) < *count).map(|(_, _, m)| m)
    }
}

impl MulticastTask {
    /// Whether an application publish may go out now, or must wait in `held`.
    ///
    /// Hold policy (what a caller of `invite` then `publish` expects: the message reaches every
    /// participant invited before it, even without waiting for the joins):
    /// - Moderator: holds while it has nobody to send to (channel not joined yet), while MLS is
    ///   not up, and while any invite is queued or in progress. With MLS every add moves the group
    ///   to a new epoch, and a member that joins at a later epoch cannot decrypt what was
    ///   encrypted before; without MLS a member that subscribes late only recovers the last
    ///   message through the beacon. It also holds while an MLS removal COMMIT is unacknowledged,
    ///   so no member gets ciphertext of an epoch it has not reached yet. The held messages go
    ///   out, in order, as soon as the queue of invites drains. A failing invite bounds the hold:
    ///   its control timer gives up after [`crate::session::CONTROL_MAX_RETRIES`] retries and the queue moves on.
    /// - Other members: hold only until they joined (MLS: until their WELCOME is applied), and,
    ///   invited by a moderator of this implementation, until they know where the other members'
    ///   streams start ([`super::starts`]). They cannot see the moderator's queue, so what they
    ///   publish while an invite is in flight is encrypted at their current epoch. A newcomer
    ///   does not ask for it: their streams start for it at the id they gave once every member
    ///   was at the new epoch. Where no position came (a 0.6.0 member), a newcomer that sees
    ///   such a message first cannot read it and asks for it again: the retransmission is
    ///   re-encrypted while recent ([`RTX_REENCRYPT_WINDOW`]).
    pub(super) fn can_publish(&self) -> bool {
        (self.role != MulticastRole::Moderator || (self.joined_channel && !self.membership_changing()))
            && self.keys.carries_traffic()
            && !self.starts_pending
    }

    /// Sends what the hold policy now lets out, in order; consecutive publishes to one destination
    /// go as MLS batches when the group reads them.
    pub(super) async fn flush_held(&mut self) {
        while self.can_publish() {
            let Some(req) = self.held.pop_front() else { break };
            let Some(dest) = req.dest.clone().filter(|_| self.group_reads_batches()) else {
                self.publish(req).await;
                continue;
            };
            let mut bytes = req.blob.len();
            let mut reqs = vec![req];
            while reqs.len() < MAX_BATCH_ITEMS
                && bytes < MAX_BATCH_BYTES
                && self.held.front().is_some_and(|next| next.dest.as_ref() == Some(&dest))
            {
                let Some(next) = self.held.pop_front() else { break };
                bytes += next.blob.len();
                reqs.push(next);
            }
            if reqs.len() == 1 {
                for req in reqs {
                    self.publish(req).await;
                }
            } else {
                self.publish_batch(dest, reqs).await;
            }
        }
    }

    /// True when publishes may go out now as MLS batches: nothing is held back and every
    /// member of the group's current epoch reads batches.
    pub(super) fn batching(&mut self) -> bool {
        self.held.is_empty() && self.can_publish() && self.group_reads_batches()
    }

    /// True when this is an MLS group whose every member (current epoch) reads batches.
    pub(super) fn group_reads_batches(&mut self) -> bool {
        self.keys.state_mut().is_some_and(MlsState::group_reads_batches)
    }

    /// Publishes `first` together with the group publishes already waiting behind it (never
    /// waiting for more): one MLS batch when there are several. Returns the command that ended
    /// the batch, for the caller to handle next.
    pub(super) async fn publish_queued(
        &mut self,
        first: PublishRequest,
        commands: &mut mpsc::Receiver<Command>,
    ) -> Option<Command> {
        let Some(dest) = first.dest.clone() else {
            self.publish(first).await;
            return None;
        };
        let mut bytes = first.blob.len();
        let mut reqs = vec![first];
        let mut follow = None;
        while reqs.len() < MAX_BATCH_ITEMS && bytes < MAX_BATCH_BYTES {
            match commands.try_recv() {
                Ok(Command::Publish(req)) if req.dest.as_ref() == Some(&dest) => {
                    bytes += req.blob.len();
                    reqs.push(req);
                }
                Ok(other) => {
                    follow = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        if reqs.len() == 1 {
            for req in reqs {
                self.publish(req).await;
            }
        } else {
            self.publish_batch(dest, reqs).await;
        }
        follow
    }

    /// Sends `reqs` (2 ..= [`MAX_BATCH_ITEMS`] group publishes to `dest`) as one MLS batch
    /// carrying consecutive message ids.
    pub(super) async fn publish_batch(&mut self, dest: Name, reqs: Vec<PublishRequest>) {
        let count = reqs.len() as u32;
        let first = self.io.entry.next_id.fetch_add(count, Ordering::Relaxed);
        let items: Vec<BatchItem> = reqs
            .into_iter()
            .map(|req| {
                let mut metadata = req.metadata.unwrap_or_default();
                if crate::telemetry::otel::active() {
                    crate::telemetry::otel::hop(crate::telemetry::otel::Hop::Publish, &mut metadata, "");
                }
                BatchItem {
                    payload_type: req.payload_type.unwrap_or_else(|| "msg".into()),
                    metadata,
                    blob: Vec::from(req.blob),
                }
            })
            .collect();
        let plaintext = match batch::encode(&items) {
            Ok(p) => p,
            Err(e) => {
                self.io.entry.deliver_error(SlimError::from(e));
                return;
            }
        };
        let spec = PublishSpec {
            source: &self.io.app.name,
            destination: &dest,
            flags: Flags { fanout: FANOUT_MULTICAST, recv_from: None, forward_to: None, error: None },
            session_type: SessionType::SessionMulticast,
            message_type: SessionMessageType::MulticastMsg,
            session_id: self.io.id,
            message_id: first,
            original_names: true,
            content_type: "msg",
        };
        let meta = HashMap::from([(META_MLS_BATCH.to_string(), count.to_string())]);
        let mut msg = builders::publish(&spec, plaintext, meta);
        let Some(mls) = self.keys.state_mut() else {
            self.io.entry.deliver_error(SlimError::Mls(MlsFailure::NoGroup));
            return;
        };
        let epoch = mls.epoch();
        let plain = msg.blob().to_vec();
        if let Err(e) = interceptor::encrypt_outbound(mls, &mut msg) {
            self.io.entry.deliver_error(SlimError::from(e));
            return;
        }
        self.producer.push(
            first,
            count,
            Produced { msg: msg.clone(), clear: Some((epoch, plain)), sent_at: Instant::now() },
        );
        self.io.start_timer(McTimer::Beacon, TimerPolicy::exponential(BEACON_INITIAL, BEACON_MAX), Instant::now());
        self.io.send(msg).await;
    }

    /// Sends one application publish (encrypted in an MLS group), keeps it for retransmission and
    /// restarts the beacon.
    pub(super) async fn publish(&mut self, req: PublishRequest) {
        let (target, fanout) = match &req.dest {
            Some(dest) => (Target { name: dest.clone(), forward_to: None }, FANOUT_MULTICAST),
            None => match Target::of(&req) {
                Ok(t) => (t, 1),
                Err(e) => {
                    self.io.entry.deliver_error(e);
                    return;
                }
            },
        };
        let mid = self.io.entry.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = data_message(
            &self.io.app.name,
            &target,
            fanout,
            SessionType::SessionMulticast,
            SessionMessageType::MulticastMsg,
            self.io.id,
            mid,
            req,
        );
        let mut clear = None;
        if let Some(mls) = self.keys.state_mut() {
            let epoch = mls.epoch();
            let plain = msg.blob().to_vec();
            if let Err(e) = interceptor::encrypt_outbound(mls, &mut msg) {
                self.io.entry.deliver_error(SlimError::from(e));
                return;
            }
            clear = Some((epoch, plain));
        }
        self.producer.push(mid, 1, Produced { msg: msg.clone(), clear, sent_at: Instant::now() });
        self.io.start_timer(McTimer::Beacon, TimerPolicy::exponential(BEACON_INITIAL, BEACON_MAX), Instant::now());
        self.io.send(msg).await;
    }

    /// Answers an RTX_REQUEST with the kept message (re-encrypted at the current epoch while
    /// recent, see [`reencrypt_for_rtx`]), or with the error flag when it is gone.
    pub(super) async fn on_rtx_request(&mut self, mid: u32, request: &Message) {
        let Some(requester) = request.source_name() else { return };
        let flags = Flags::one().forward_to(request.incoming_conn());
        let reads_batches = self.group_reads_batches();
        let reply = match self.producer.get(mid) {
            Some(Produced { msg: original, clear, sent_at }) => {
                // A batch is resent whole, under its first id (the one its header carries).
                let reply_id = original.session_header().map_or(mid, |h| h.message_id);
                let destination = original.destination_name().unwrap_or_else(|| self.channel.clone());
                let spec = PublishSpec {
                    source: &self.io.app.name,
                    destination: &requester,
                    flags,
                    session_type: SessionType::SessionMulticast,
                    message_type: SessionMessageType::RtxReply,
                    session_id: self.io.id,
                    message_id: reply_id,
                    original_names: true,
                    content_type: original
                        .publish()
                        .and_then(|p| p.msg.as_ref())
                        .map_or("", |c| c.content_type.as_str()),
                };
                let mut meta = original.metadata.clone();
                meta.remove(wire::META_IDENTITY);
                let reencrypt = match (clear, self.keys.state()) {
                    (Some((epoch, plain)), Some(mls))
                        if mls.is_ready() && reencrypt_for_rtx(*epoch, mls.epoch(), sent_at.elapsed()) =>
                    {
                        Some(plain.clone())
                    }
                    _ => None,
                };
                tracing::debug!(
                    session = self.io.id,
                    %requester,
                    mid,
                    sent_epoch = clear.as_ref().map(|c| c.0),
                    epoch = self.keys.state().map(|m| m.epoch()),
                    reencrypted = reencrypt.is_some(),
                    "retransmission"
                );
                let mut reply = match reencrypt {
                    Some(plain) if meta.contains_key(META_MLS_BATCH) && !reads_batches => {
                        // A batch, but a member added since cannot read batches:
                        // only the message asked for goes back, on its own.
                        let Some(item) = batch::decode(&plain)
                            .ok()
                            .and_then(|items| items.into_iter().nth(mid.wrapping_sub(reply_id) as usize))
                        else {
                            Stats::bump(&self.io.app.stats.mls_failures);
                            return;
                        };
                        let single = PublishSpec { message_id: mid, content_type: &item.payload_type, ..spec };
                        builders::publish(&single, item.blob, item.metadata)
                    }
                    Some(plain) => {
                        meta.remove(wire::META_MLS_ENCRYPTED);
                        builders::publish(&spec, plain, meta)
                    }
                    None => builders::publish(&spec, original.blob().to_vec(), meta),
                };
                builders::set_session_destination(&mut reply, &destination);
                if let Some(mls) = self.keys.state_mut()
                    && let Err(e) = interceptor::encrypt_outbound(mls, &mut reply)
                {
                    Stats::bump(&self.io.app.stats.mls_failures);
                    tracing::debug!(session = self.io.id, error = %e, "retransmission could not be re-encrypted");
                    return;
                }
                reply
            }
            None => {
                Stats::bump(&self.io.app.stats.rtx_unavailable);
                self.io.app.control(
                    &requester,
                    flags.error(),
                    SessionType::SessionMulticast,
                    SessionMessageType::RtxReply,
                    self.io.id,
                    mid,
                    Vec::new(),
                )
            }
        };
        self.io.send(reply).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtx_reencryption_is_bounded() {
        let recent = Duration::from_millis(50);
        assert!(reencrypt_for_rtx(1, 2, recent));
        assert!(reencrypt_for_rtx(1, 4, recent));
        assert!(reencrypt_for_rtx(2, 2, Duration::from_secs(3600)), "same epoch: a fresh generation, same readers");
        assert!(!reencrypt_for_rtx(1, 2, RTX_REENCRYPT_WINDOW + Duration::from_millis(1)), "too old");
    }
}
