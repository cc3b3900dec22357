//! Where streams start for a newcomer (docs/protocol.md "Where streams start for a newcomer").
//!
//! A receiver's reorder window for a producer has to start at the producer's first message meant
//! for it: one that starts at the first message that happens to arrive cannot see that messages
//! before it were lost on the way (a lossy link, or a route to the newcomer still being set up
//! through a mesh), and they would go unreported. Once a newcomer is in (joined, and with MLS
//! every member at the epoch that added it), the moderator asks every member of this
//! implementation for the id of its next data message and tells it where the newcomer's stream
//! starts (GROUP_STREAM_QUERY / GROUP_STREAM_ACK), then gives the newcomer the answers
//! (GROUP_STREAM_STARTS). Until then the newcomer holds its own publishes and keeps what other
//! members sent it aside; the invite completes when the newcomer acknowledged.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use super::moderator::{Current, ModTask};
use super::{MulticastRole, MulticastTask};
use crate::error::SlimError;
use crate::session::buffers::ReceiverBuffer;
use crate::session::channel;
use crate::session::context::Stats;
use crate::session::entry::Done;
use crate::wire::payload::{decode_names, encode_names};
use crate::wire::{META_FIRST_ID, META_FIRST_IDS, Message, Name, SessionMessageType};

/// What other members sent a newcomer before it knew where their streams start: kept aside (up to
/// this many messages, and [`MAX_EARLY_BYTES`] of payload), then fed to the reorder windows once
/// it knows.
pub(super) const MAX_EARLY: usize = 4096;
/// See [`MAX_EARLY`].
pub(super) const MAX_EARLY_BYTES: usize = 8 * 1024 * 1024;

/// The decimal id under [`META_FIRST_ID`], if any.
pub(super) fn first_id(msg: &Message) -> Option<u32> {
    msg.metadata.get(META_FIRST_ID).and_then(|v| v.parse().ok())
}

/// Decodes a GROUP_STREAM_STARTS (its blob, its [`META_FIRST_IDS`]): the members it lists, each
/// with the first id of its stream; `None` when the two do not match.
fn decode_starts(blob: &[u8], ids: Option<&str>) -> Option<Vec<(Name, u32)>> {
    let names = decode_names(blob).ok()?;
    let ids: Vec<u32> = match ids {
        None | Some("") => Vec::new(),
        Some(v) => v.split(',').map(|id| id.parse().ok()).collect::<Option<_>>()?,
    };
    (ids.len() == names.len()).then(|| names.into_iter().zip(ids).collect())
}

impl MulticastTask {
    /// Moderator: `invitee` is in (joined; with MLS, every member acknowledged the commit that
    /// added it). When its JOIN_REPLY said where its stream starts (`first`), every member that
    /// takes part is asked for its position; otherwise (a 0.6.0 member) the invite is done.
    pub(super) async fn position_newcomer(&mut self, invitee: Name, first: Option<u32>, done: Done) {
        let Some(first) = first else {
            let _ = done.send(Ok(()));
            return;
        };
        // Members already found dead (their removal is queued) will never answer.
        let others: Vec<Name> =
            self.positioned.iter().filter(|m| **m != invitee && !self.removal_queued_as_dead(m)).cloned().collect();
        let mut queries = HashMap::new();
        for member in others {
            let query_id = channel::nonce();
            let mut query = self.to_member(
                &member,
                SessionMessageType::GroupStreamQuery,
                query_id,
                encode_names(std::slice::from_ref(&invitee)),
            );
            query.metadata.insert(META_FIRST_ID.to_string(), first.to_string());
            self.io.send_control(query_id, query).await;
            queries.insert(query_id, member);
        }
        self.current = Some(Current::Positioning { queries, starts: Vec::new(), invitee, done });
        self.announce_when_answered().await;
    }

    /// Moderator: once every query is answered (or given up), the newcomer gets the positions.
    async fn announce_when_answered(&mut self) {
        let Some(Current::Positioning { queries, starts, invitee, done }) = self.current.take() else { return };
        if !queries.is_empty() {
            self.current = Some(Current::Positioning { queries, starts, invitee, done });
            return;
        }
        let names: Vec<Name> = starts.iter().map(|(n, _)| n.clone()).collect();
        let ids: Vec<String> = starts.iter().map(|(_, id)| id.to_string()).collect();
        let request_id = channel::nonce();
        let mut msg = self.to_member(&invitee, SessionMessageType::GroupStreamStarts, request_id, encode_names(&names));
        msg.metadata.insert(META_FIRST_IDS.to_string(), ids.join(","));
        self.io.send_control(request_id, msg).await;
        self.current = Some(Current::Announcing { request_id, invitee, done });
    }

    /// Moderator: a member answered a query, or the newcomer acknowledged its positions.
    pub(super) async fn on_stream_ack(&mut self, mid: u32, source: Name, msg: &Message) {
        match self.current.take() {
            Some(Current::Positioning { mut queries, mut starts, invitee, done })
                if queries.get(&mid) == Some(&source) =>
            {
                self.io.stop_control(mid);
                queries.remove(&mid);
                if let Some(next) = first_id(msg) {
                    starts.push((source, next));
                }
                self.current = Some(Current::Positioning { queries, starts, invitee, done });
                self.announce_when_answered().await;
            }
            Some(Current::Announcing { request_id, invitee, done }) if request_id == mid && source == invitee => {
                self.io.stop_control(mid);
                self.positioned.insert(invitee);
                let _ = done.send(Ok(()));
                self.start_next_task().await;
            }
            other => {
                // A copy of an answer already taken (its first copy was slow): nothing to do.
                self.current = other;
                Stats::bump(&self.io.app.stats.unhandled_control);
            }
        }
    }

    /// Moderator: `member` will not answer (its query's retries ran out, or it went silent). A
    /// queried member is left out: the newcomer's window for it starts at the first message it
    /// sees, as with a 0.6.0 member. A newcomer still to acknowledge its positions fails the
    /// invite (liveness removes it). True when `member` (or the control message `mid`) was awaited.
    pub(super) async fn position_given_up(&mut self, mid: Option<u32>, member: Option<&Name>) -> bool {
        match self.current.as_mut() {
            Some(Current::Positioning { queries, .. }) => {
                let found = queries.iter().find(|(q, m)| Some(**q) == mid || Some(*m) == member).map(|(q, _)| *q);
                let Some(q) = found else { return false };
                queries.remove(&q);
                self.io.stop_control(q);
                self.announce_when_answered().await;
                true
            }
            Some(Current::Announcing { request_id, invitee, .. }) if member == Some(&*invitee) => {
                self.io.stop_control(*request_id);
                if let Some(cur) = self.current.take() {
                    cur.finish(Err(SlimError::Invite("the participant stopped answering while it joined".into())));
                }
                true
            }
            _ => false,
        }
    }

    /// Moderator: the newcomer never acknowledged its positions (control message `mid`): the
    /// invite fails, and the newcomer is asked to leave, so that its session ends (its held
    /// publishes REPORTED in the `PeerClosed` it gets) rather than wait for positions forever.
    /// True when `mid` was that message.
    pub(super) fn announcement_failed(&mut self, mid: u32) -> bool {
        let Some(Current::Announcing { request_id, .. }) = &self.current else { return false };
        if *request_id != mid {
            return false;
        }
        let Some(Current::Announcing { invitee, done, .. }) = self.current.take() else { return false };
        let _ = done.send(Err(SlimError::Invite("no answer from the participant".into())));
        let (done, _) = tokio::sync::oneshot::channel();
        self.tasks.push_back(ModTask::Remove { name: invitee, done, dead: false });
        true
    }

    /// Member: the moderator asks where this member's stream starts for a newcomer, and says where
    /// the newcomer's starts. The answer is the id this member's next data message gets: ids are
    /// given as messages leave this task, so every one from it on leaves after the newcomer is in.
    pub(super) async fn on_stream_query(&mut self, msg: &Message) {
        let newcomer = decode_names(msg.blob()).ok().and_then(|names| names.into_iter().next());
        let Some(newcomer) = newcomer else {
            Stats::bump(&self.io.app.stats.invalid);
            return;
        };
        if let Some(first) = first_id(msg) {
            // A window this member still has for the name is from an earlier membership (the
            // newcomer holds its publishes until every query is answered): released first, its
            // holes REPORTED (MessageLost), then started anew where the newcomer's stream starts.
            if self.receivers.get(&newcomer).is_some_and(|rb| !rb.untouched()) {
                self.release_window(&newcomer).await;
            }
            self.receivers.insert(newcomer, ReceiverBuffer::starting_at(first));
        }
        if let Some(mut ack) = channel::reply_to(&self.io.app, msg, SessionMessageType::GroupStreamAck, Vec::new()) {
            let next = self.io.entry.next_id.load(Ordering::Relaxed);
            ack.metadata.insert(META_FIRST_ID.to_string(), next.to_string());
            self.io.send(ack).await;
        }
    }

    /// Newcomer: where the other members' streams start. Their windows start there, what they
    /// sent meanwhile is fed to them, and this member's held publishes may go.
    pub(super) async fn on_stream_starts(&mut self, msg: &Message) {
        let Some(starts) = decode_starts(msg.blob(), msg.metadata.get(META_FIRST_IDS).map(String::as_str)) else {
            // Not acknowledged: the moderator's retries run out and its invite fails.
            Stats::bump(&self.io.app.stats.invalid);
            return;
        };
        if self.starts_pending {
            // Not a drop point: what a member sent below where its stream starts here left before
            // this member was in (not meant for it); its window takes those ids for already
            // released and drops them as duplicates (counted, `duplicates`).
            for (producer, first) in starts {
                if producer != self.io.app.name && self.receivers.get(&producer).is_none_or(ReceiverBuffer::untouched) {
                    self.receivers.insert(producer, ReceiverBuffer::starting_at(first));
                }
            }
            self.release_early().await;
        }
        // Every copy is acknowledged: a re-sent one means the acknowledgement was lost.
        if let Some(ack) = channel::reply_to(&self.io.app, msg, SessionMessageType::GroupStreamAck, Vec::new()) {
            self.io.send(ack).await;
        }
        self.flush_held().await;
    }

    /// Newcomer: true when a data message or beacon (`kind`) of `source` is to be kept aside,
    /// because where that member's stream starts is not known yet ([`Self::keep_early`]).
    pub(super) fn keeps_early(&self, source: &Name, kind: SessionMessageType) -> bool {
        self.starts_pending
            && matches!(kind, SessionMessageType::MulticastMsg | SessionMessageType::BeaconMulticast)
            && self.moderator.as_ref() != Some(source)
            && self.role == MulticastRole::Member
    }

    /// Newcomer: keeps `msg` aside until the positions come.
    pub(super) fn keep_early(&mut self, msg: Message) {
        let bytes = msg.blob().len();
        if self.early.len() < MAX_EARLY && self.early_bytes + bytes <= MAX_EARLY_BYTES {
            self.early_bytes += bytes;
            self.early.push(msg);
        } else {
            // Drop point: more arrived than is kept aside; counted (`out_of_window`) and
            // RECOVERED: once the windows start, its id is a hole (a later message or beacon
            // shows it) and is asked for again, or REPORTED as MessageLost if it cannot be.
            Stats::bump(&self.io.app.stats.out_of_window);
        }
    }

    /// Newcomer: the positions came (or the session ends without them: then each window starts at
    /// the first message it sees): what was kept aside goes to the reorder windows, in arrival
    /// order.
    pub(super) async fn release_early(&mut self) {
        self.starts_pending = false;
        self.early_bytes = 0;
        for msg in std::mem::take(&mut self.early) {
            let (Some(sh), Some(source)) = (msg.session_header(), msg.source_name()) else { continue };
            let (kind, mid) = (msg.session_message_type(), sh.message_id);
            self.on_data(kind, source, mid, msg).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_read_in_order_and_refused_when_they_do_not_match_the_names() {
        let (a, b) = (Name::new("o", "n", "a", Some(1)), Name::new("o", "n", "b", None));
        let two = encode_names(&[a.clone(), b.clone()]);
        let one = encode_names(std::slice::from_ref(&a));
        let none = encode_names(&[]);
        assert_eq!(decode_starts(&two, Some("7,0")), Some(vec![(a, 7), (b, 0)]));
        assert_eq!(decode_starts(&none, None), Some(vec![]));
        assert_eq!(decode_starts(&none, Some("")), Some(vec![]));
        assert_eq!(decode_starts(&one, Some("1,2")), None, "more ids than names");
        assert_eq!(decode_starts(&two, Some("1")), None, "fewer ids than names");
        assert_eq!(decode_starts(&one, None), None, "no ids");
        assert_eq!(decode_starts(&one, Some("x")), None, "not a number");
        assert_eq!(decode_starts(&one, Some("4294967296")), None, "beyond u32");
        assert_eq!(decode_starts(b"\xff", Some("1")), None, "not a name list");
    }
}
