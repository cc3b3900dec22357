//! What a point-to-point session sends: publishes queued, built and handed to the node in
//! batches, reliable ones kept until acknowledged ([`Unacked`]) and retransmitted by the ack timer.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::{MAX_IN_FLIGHT, MIN_IN_FLIGHT, P2pTask, Phase, SEND_BATCH, TimerKey};
use crate::error::SlimError;
use crate::mls::interceptor;
use crate::session::PublishRequest;
use crate::session::context::{Target, data_message};
use crate::session::timer::TimerPolicy;
use crate::wire::builders::{self, Flags, PublishSpec};
use crate::wire::{Message, Name, SessionMessageType, SessionType};

/// A reliable message sent and not acknowledged yet. It keeps what rebuilds the message as it was
/// sent (before the identity stamp), not a copy of it: the payload is shared with the sent message
/// (`Bytes`, a reference count), the names are the session's own handles, and the metadata is
/// usually empty (no allocation). A retransmission or an RTX reply rebuilds the message
/// ([`Unacked::rebuild`]), which costs what building it cost once; an acknowledged message (nearly
/// all of them) costs no copy at all.
#[derive(Debug)]
pub(super) struct Unacked {
    /// Destination and `forwardTo` it was sent with.
    target: Target,
    fanout: u32,
    /// Payload as sent (ciphertext on an MLS session).
    blob: bytes::Bytes,
    /// Metadata as sent, without the identity token (user metadata, the MLS flag, trace context).
    metadata: HashMap<String, String>,
    /// Content type, when not the default `msg`.
    content_type: Option<String>,
    /// What it was charged against the send budget.
    pub(super) charge: usize,
    /// Retransmitted (or, retries spent, failed) at this instant.
    due: Instant,
    /// Retransmissions so far, and the interval and limit of the session when it was sent: with
    /// `max_retries = N` and interval `d` it is sent again at d, 2d, … Nd and fails at (N+1)·d.
    retries: u32,
    every: Duration,
    max_retries: u32,
}

impl Unacked {
    /// When it was sent and its retransmission interval, if it was sent only once (the age of an
    /// acknowledgement for a retransmitted message says nothing).
    pub(super) fn sent_once(&self) -> Option<(Instant, Duration)> {
        if self.retries > 0 {
            return None;
        }
        self.due.checked_sub(self.every).map(|sent| (sent, self.every))
    }

    /// The content type it was sent with.
    fn content_type(&self) -> &str {
        self.content_type.as_deref().unwrap_or("msg")
    }

    /// The message again, as `message_type` (P_2_P_RELIABLE for a retransmission, RTX_REPLY for
    /// the answer to an RTX_REQUEST) from `source` to `destination`: the payload shared, the
    /// metadata as it was sent (the identity token is stamped again when it goes out).
    pub(super) fn rebuild(
        &self,
        source: &Name,
        destination: &Name,
        flags: Flags,
        message_type: SessionMessageType,
        session_id: u32,
        mid: u32,
    ) -> Message {
        let spec = PublishSpec {
            source,
            destination,
            flags,
            session_type: SessionType::SessionPointToPoint,
            message_type,
            session_id,
            message_id: mid,
            original_names: true,
            content_type: self.content_type(),
        };
        builders::publish(&spec, self.blob.clone(), self.metadata.clone())
    }
}

impl P2pTask {
    /// Sends pending publishes in order while the peer is known and the window has room, in
    /// batches of up to [`SEND_BATCH`] messages handed to the node together
    /// ([`TaskCore::send_many`]: one wait for room in its channel per batch).
    pub(super) async fn drain_pending(&mut self) {
        let mut out = std::mem::take(&mut self.outbox);
        let mut sent_charge = 0;
        // One clock read per batch (the deadlines of a batch's messages are the same instant).
        let mut now = Instant::now();
        while self.window_open() {
            let Some(req) = self.pending.pop_front() else { break };
            let charge = self.charge_of(&req);
            if let Some(msg) = self.prepare_data(req, charge, now) {
                out.push(msg);
                if self.timeout.is_none() {
                    sent_charge += charge;
                }
            }
            if out.len() >= SEND_BATCH {
                self.io.send_many(&mut out).await;
                self.give_back(std::mem::take(&mut sent_charge));
                now = Instant::now();
            }
        }
        if !out.is_empty() {
            self.io.send_many(&mut out).await;
        }
        self.give_back(sent_charge);
        self.outbox = out;
    }

    /// Data can go out now: it can be sent at all ([`Self::can_send`]) and, reliable, fewer than
    /// the window's messages wait for their acknowledgement.
    pub(super) fn window_open(&self) -> bool {
        self.can_send() && !(self.timeout.is_some() && self.unacked.len() >= self.window)
    }

    /// Moves the window with the age of the newest message an acknowledgement covered (sent
    /// `age` ago, retransmission interval `every`), `acked` messages in all: an acknowledgement
    /// within a quarter of the interval opens the window by what it acknowledged (up to
    /// [`MAX_IN_FLIGHT`]); one later than half of it closes the window back to [`MIN_IN_FLIGHT`].
    /// So the messages in flight are acknowledged well within the interval, however slowly the
    /// peer's reader takes them, and are not sent again for having waited behind each other.
    pub(super) fn adapt_window(&mut self, age: Duration, every: Duration, acked: usize) {
        if age <= every / 4 {
            self.window = (self.window + acked).min(MAX_IN_FLIGHT);
        } else if age > every / 2 {
            self.window = MIN_IN_FLIGHT;
        }
    }

    /// Sends a publish now, or queues it (discovery, MLS set-up or a full window); the first
    /// publish of a sticky initiator starts discovery.
    pub(super) async fn on_publish(&mut self, req: PublishRequest) {
        if self.needs_discovery() {
            if matches!(self.phase, Phase::Idle) {
                match Target::of(&req) {
                    Ok(target) => self.start_discovery(&target.name).await,
                    Err(e) => {
                        self.give_back(self.charge_of(&req));
                        self.io.entry.deliver_error(e);
                        return;
                    }
                }
            }
            self.pending.push_back(req);
            return;
        }
        if self.pending.is_empty() && self.window_open() {
            let charge = self.charge_of(&req);
            if let Some(msg) = self.prepare_data(req, charge, Instant::now()) {
                self.io.send(msg).await;
                if self.timeout.is_none() {
                    self.give_back(charge);
                }
            }
        } else {
            self.pending.push_back(req);
            self.drain_pending().await;
        }
    }

    /// A batch of publishes (`publish_many`): queued behind what is pending and sent in batches
    /// as the window allows ([`Self::drain_pending`]), in order. Before a sticky initiator has its
    /// peer, each goes through [`Self::on_publish`] (which starts discovery, or reports why it
    /// cannot).
    pub(super) async fn on_publish_batch(&mut self, reqs: Vec<PublishRequest>) {
        if self.needs_discovery() {
            for req in reqs {
                self.on_publish(req).await;
            }
            return;
        }
        self.pending.extend(reqs);
        self.drain_pending().await;
    }

    /// Builds one data message (encrypted with MLS) for `req`, charged `charge` against the send
    /// budget; a reliable one is kept (as [`Unacked`]) until acknowledged, with an ACK timer, its
    /// retransmission deadline counted from `now` (when it is sent). `None`
    /// when it cannot be built (no destination, MLS failure): the error is on the session's queue
    /// and its charge given back. The caller sends the message and, unreliable, gives the charge
    /// back once it is sent.
    fn prepare_data(&mut self, req: PublishRequest, charge: usize, now: Instant) -> Option<Message> {
        let target = match (&self.peer, self.sticky) {
            (Some(p), true) => Target { name: p.name.clone(), forward_to: p.conn },
            _ => match Target::of(&req).inspect(|t| self.io.entry.note_target(t)) {
                Ok(t) => t,
                Err(e) => {
                    self.give_back(charge);
                    self.io.entry.deliver_error(e);
                    return None;
                }
            },
        };
        let mid = self.io.entry.next_id.fetch_add(1, Ordering::Relaxed);
        let kind = if self.timeout.is_some() { SessionMessageType::P2PReliable } else { SessionMessageType::P2PMsg };
        let fanout = req.fanout;
        let mut msg = data_message(
            &self.io.app.name,
            &target,
            fanout,
            SessionType::SessionPointToPoint,
            kind,
            self.io.id,
            mid,
            req,
        );
        self.io.entry.liveness.mark(&mut msg);
        if let Some(mls) = self.mls.as_mut()
            && let Err(e) = interceptor::encrypt_outbound(mls, &mut msg)
        {
            self.give_back(charge);
            self.io.entry.deliver_error(SlimError::from(e));
            return None;
        }
        if let Some(timeout) = self.timeout {
            let content = msg.publish().and_then(|p| p.msg.as_ref());
            let content_type = content.map(|c| c.content_type.as_str()).filter(|t| *t != "msg").map(str::to_string);
            let entry = Unacked {
                target,
                fanout,
                blob: content.map(|c| c.blob.clone()).unwrap_or_default(),
                metadata: msg.metadata.clone(),
                content_type,
                charge,
                due: now + timeout,
                retries: 0,
                every: timeout,
                max_retries: self.max_retries,
            };
            self.unacked.insert(mid, entry);
            if !self.io.timer_running(TimerKey::Acks) {
                self.io.start_timer(TimerKey::Acks, TimerPolicy::constant(timeout, 0), now);
            }
        }
        Some(msg)
    }

    /// The ack timer fired: every unacknowledged message whose deadline passed is sent again, or,
    /// its retries spent, removed and reported (`SLIMTimeoutError` naming its id); the timer is
    /// armed again for the earliest deadline left. (It may fire before any is due, when the message
    /// it was armed for was acknowledged since: then it only re-arms.)
    pub(super) async fn on_acks_due(&mut self) {
        let now = Instant::now();
        let mut due = std::mem::take(&mut self.due);
        due.extend(self.unacked.iter().filter(|(_, u)| u.due <= now).map(|(id, _)| id));
        let mut failed = false;
        for &mid in &due {
            let Some(u) = self.unacked.get_mut(mid) else { continue };
            if u.retries >= u.max_retries {
                if let Some(u) = self.unacked.remove(mid) {
                    self.give_back(u.charge);
                }
                self.io.entry.deliver_error(SlimError::Timeout { session_id: self.io.id, message_id: mid });
                self.window = MIN_IN_FLIGHT;
                failed = true;
            } else {
                u.retries += 1;
                u.due = now + u.every;
                // Late: the window closes back (see `adapt_window`).
                self.window = MIN_IN_FLIGHT;
                let flags = Flags { fanout: u.fanout, recv_from: None, forward_to: u.target.forward_to, error: None };
                let m = u.rebuild(
                    &self.io.app.name,
                    &u.target.name,
                    flags,
                    SessionMessageType::P2PReliable,
                    self.io.id,
                    mid,
                );
                self.io.send(m).await;
            }
        }
        due.clear();
        self.due = due;
        self.arm_acks(now);
        if failed {
            self.drain_pending().await;
        }
    }

    /// Arms the ack timer for the earliest deadline of the unacknowledged messages (none: off).
    fn arm_acks(&mut self, now: Instant) {
        match self.unacked.iter().map(|(_, u)| u.due).min() {
            Some(at) => {
                self.io.start_timer(TimerKey::Acks, TimerPolicy::constant(at.saturating_duration_since(now), 0), now)
            }
            None => {
                self.io.stop_timer(TimerKey::Acks);
            }
        }
    }
}
