//! What a point-to-point session receives: reliable data admitted, ordered (sticky) or
//! deduplicated (anycast), acknowledged and delivered; RTX requests and replies; decryption.

use std::time::Duration;

use tokio::time::Instant;

use super::{P2pTask, RECENT_IDS, TimerKey};
use crate::mls::interceptor;
use crate::session::buffers::{Arrival, Released};
use crate::session::context::Stats;
use crate::session::inbound;
use crate::session::queue::DELIVERY_WAIT_BOUND;
use crate::session::timer::TimerPolicy;
use crate::wire::builders::Flags;
use crate::wire::{META_ACK_FROM, Message, Name, SessionMessageType, SessionType};

impl P2pTask {
    /// A P_2_P_ACK for id `mid` to `dst`, back through the connection `conn` the data came in on.
    fn ack_to(&self, dst: &Name, conn: Option<u64>, mid: u32) -> Message {
        inbound::ack_message(&self.io.app, self.io.id, dst, conn, mid)
    }

    /// A reliable data message: admitted when the application queue has room, ordered (sticky) or
    /// deduplicated (anycast), delivered and acknowledged.
    pub(super) async fn on_reliable(&mut self, mid: u32, source: Name, msg: Message) {
        let conn = msg.incoming_conn();
        let is_new = match &self.receiver {
            Some(rb) => rb.is_new(mid),
            None => !self.recent.contains(&(source.id(), mid)),
        };
        // Admission: a new message is accepted (and acknowledged) only once the application's
        // queue has room, so nothing acknowledged is ever dropped. Not acknowledged, it is
        // retransmitted by the sender, which reports a timeout if the reader never makes room.
        if is_new && !self.io.entry.queue.has_room() && !self.wait_room().await {
            // Drop point: RECOVERED (not acknowledged: retransmitted by the sender, which raises
            // SLIMTimeoutError for it once its retries are spent); counted (`session_backlog`).
            Stats::bump(&self.io.app.stats.session_backlog);
            tracing::debug!(session = self.io.id, mid, "application queue full: reliable message not acknowledged");
            return;
        }
        if self.receiver.is_some() {
            if self.feed_receiver(mid, msg) == Arrival::OutOfWindow {
                // Drop point: RECOVERED (not acknowledged: the sender retransmits once the
                // window has moved); counted (`out_of_window`).
                return;
            }
        } else {
            let key = (source.id(), mid);
            if self.recent.insert(key) {
                self.recent_order.push_back(key);
                if self.recent_order.len() > RECENT_IDS
                    && let Some(old) = self.recent_order.pop_front()
                {
                    self.recent.remove(&old);
                }
                self.deliver_app(msg);
            } else {
                // A copy of a message already delivered (acknowledged again): not a loss.
                Stats::bump(&self.io.app.stats.duplicates);
            }
        }
        self.ack(source, conn, mid).await;
    }

    /// Waits up to the delivery bound for room in the application's queue; the acknowledgements
    /// held back go out first (the sender must not time out on what was admitted).
    async fn wait_room(&mut self) -> bool {
        self.flush_acks().await;
        self.io.entry.queue.wait_room(DELIVERY_WAIT_BOUND).await
    }

    /// Acknowledges admitted id `mid` of `source` (which it came from through `conn`): at once (a
    /// peer that takes only one id per ACK), or as part of the pending run (a peer that takes range
    /// acknowledgements).
    async fn ack(&mut self, source: Name, conn: Option<u64>, mid: u32) {
        if !self.ack_ranges {
            let ack = self.ack_to(&source, conn, mid);
            self.io.send(ack).await;
            return;
        }
        // The run is shared with the dispatcher (see `session::inbound`).
        let full = self.io.entry.reliable_in.lock().add_to_run(source, conn, mid);
        if let Some(run) = full {
            self.io.send(run.message(&self.io.app, self.io.id)).await;
        }
    }

    /// Sends the pending run of acknowledgements, if any. A run of one id is a plain P_2_P_ACK.
    pub(super) async fn flush_acks(&mut self) {
        let Some(run) = self.io.entry.reliable_in.take_run() else { return };
        self.io.send(run.message(&self.io.app, self.io.id)).await;
    }

    /// A P_2_P_ACK: the id it names (or, with [`META_ACK_FROM`], every id from that one to it) is
    /// delivered; its bytes are free and its retransmissions stop. An ACK for nothing held (a late
    /// or repeated one) or with an unreadable range is counted (`unknown_acks`) and changes
    /// nothing: what it should have acknowledged is retransmitted and acknowledged again.
    pub(super) async fn on_ack(&mut self, mid: u32, msg: &Message) {
        let from = match msg.metadata.get(META_ACK_FROM) {
            None => mid,
            Some(v) => match v.parse::<u32>() {
                Ok(from) if from <= mid => from,
                _ => {
                    Stats::bump(&self.io.app.stats.unknown_acks);
                    return;
                }
            },
        };
        // No timer to stop: the ack timer finds nothing due when it fires, and re-arms.
        let (mut newest, mut count, mut charge) = (None, 0, 0);
        for (_, u) in self.unacked.drain_range(from, mid) {
            charge += u.charge;
            newest = u.sent_once();
            count += 1;
        }
        // One give-back for the whole run (one wake-up of a publisher waiting for room).
        self.give_back(charge);
        if let Some((sent, every)) = newest {
            self.adapt_window(Instant::now().saturating_duration_since(sent), every, count);
        }
        if count > 0 {
            self.drain_pending().await;
        } else {
            Stats::bump(&self.io.app.stats.unknown_acks);
        }
    }

    /// Feeds the reorder buffer, delivers what it releases and starts RTX timers for new holes.
    pub(super) fn feed_receiver(&mut self, mid: u32, msg: Message) -> Arrival {
        let Some(rb) = self.receiver.as_mut() else { return Arrival::Duplicate };
        // Only a hole can have an RTX timer running.
        let was_hole = rb.is_missing(mid);
        let arrival = rb.on_message(mid, msg, &mut self.io.released, &mut self.io.holes);
        match arrival {
            Arrival::Duplicate => Stats::bump(&self.io.app.stats.duplicates),
            Arrival::OutOfWindow => Stats::bump(&self.io.app.stats.out_of_window),
            Arrival::Accepted => {
                if was_hole {
                    self.io.stop_timer(TimerKey::Rtx(mid));
                }
            }
        }
        if !self.io.holes.is_empty() {
            let rtx_every = self.timeout.unwrap_or(Duration::from_secs(1));
            let now = Instant::now();
            let holes: Vec<u32> = self.io.holes.drain(..).collect();
            for hole in holes {
                if !self.io.timer_running(TimerKey::Rtx(hole)) {
                    self.io.start_timer(TimerKey::Rtx(hole), TimerPolicy::constant(rtx_every, self.max_retries), now);
                }
            }
        }
        self.flush_released();
        arrival
    }

    /// Decrypts (MLS sessions) and hands an admitted data message to the application (into a
    /// full queue too: it was admitted, i.e. the queue had room when it was acknowledged).
    pub(super) fn deliver_app(&mut self, msg: Message) {
        if let Some(msg) = self.decrypt(msg) {
            self.io.entry.deliver_admitted(msg);
        }
    }

    /// Decrypts an MLS session's payload. Drop point: a payload that does not belong to the
    /// group -> REPORTED (MessageLost with the id; counted in `mls_failures`), `None`.
    pub(super) fn decrypt(&mut self, mut msg: Message) -> Option<Message> {
        let flagged = msg.metadata.contains_key(crate::wire::META_MLS_ENCRYPTED);
        if flagged || self.mls_enabled {
            // An MLS session accepts only what was encrypted for its group.
            let decrypted = match self.mls.as_mut() {
                Some(mls) => interceptor::decrypt_inbound(mls, &mut msg),
                None => Ok(false),
            };
            if !matches!(decrypted, Ok(true)) {
                Stats::bump(&self.io.app.stats.mls_failures);
                tracing::debug!(session = self.io.id, "message not decryptable by this session's group: reported lost");
                let id = msg.session_header().map_or(0, |h| h.message_id);
                self.io.entry.report_lost(msg.source_name().as_ref(), id);
                return None;
            }
        }
        Some(msg)
    }

    /// Delivers what the reorder buffer released; lost ids are reported.
    pub(super) fn flush_released(&mut self) {
        // Taken and put back (emptied): the scratch vector keeps its allocation.
        let mut released = std::mem::take(&mut self.io.released);
        for r in released.drain(..) {
            match r {
                Released::Message(m) => self.deliver_app(m),
                // Drop point: the retransmission never came or the sender no longer had it ->
                // REPORTED (MessageLost with the id).
                Released::Lost(id) => self.io.entry.report_lost(self.peer.as_ref().map(|p| &p.name), id),
            }
        }
        self.io.released = released;
    }

    /// Answers an RTX_REQUEST with the unacknowledged message, or with the error flag when it is
    /// gone.
    pub(super) async fn on_rtx_request(&mut self, mid: u32, request: &Message) {
        let Some(requester) = request.source_name() else { return };
        let own = request.destination_name().unwrap_or_else(|| self.io.app.name.clone());
        let flags = Flags::one().forward_to(request.incoming_conn());
        let reply = match self.unacked.get(mid) {
            Some(original) => original.rebuild(&own, &requester, flags, SessionMessageType::RtxReply, self.io.id, mid),
            None => {
                Stats::bump(&self.io.app.stats.rtx_unavailable);
                self.io.app.control(
                    &requester,
                    flags.error(),
                    SessionType::SessionPointToPoint,
                    SessionMessageType::RtxReply,
                    self.io.id,
                    mid,
                    Vec::new(),
                )
            }
        };
        self.io.send(reply).await;
    }

    /// A retransmission that was asked for fills its hole; the error flag makes the id lost.
    pub(super) async fn on_rtx_reply(&mut self, mid: u32, msg: Message) {
        if self.receiver.is_none() || !self.io.stop_timer(TimerKey::Rtx(mid)) {
            // Not a loss: the id was delivered or already reported lost.
            Stats::bump(&self.io.app.stats.unexpected_rtx_replies);
            return;
        }
        let failed = msg.slim_header().and_then(|h| h.error).unwrap_or(false);
        if failed {
            if let Some(rb) = self.receiver.as_mut() {
                rb.on_lost(mid, &mut self.io.released);
            }
            self.flush_released();
            return;
        }
        let Some(source) = msg.source_name() else { return };
        let conn = msg.incoming_conn();
        self.feed_receiver(mid, msg);
        self.ack(source, conn, mid).await;
    }
}
