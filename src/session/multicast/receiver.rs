//! What a member receives from its group: one reorder window per producer, RTX requests for
//! holes, decryption of single messages and MLS batches, and delivery (or loss reports) in order.

use tokio::time::Instant;

use super::{McTimer, MulticastTask};
use crate::mls::batch::{self, BatchItem, MAX_BATCH_ITEMS, META_MLS_BATCH};
use crate::mls::interceptor;
use crate::session::buffers::{Arrival, ReceiverBuffer, Released};
use crate::session::context::Stats;
use crate::session::timer::TimerPolicy;
use crate::wire::builders::Flags;
use crate::wire::{self, Message, Name, SessionMessageType, SessionType};

impl MulticastTask {
    /// A single data message (first copy or retransmission): decrypted on arrival (MLS groups),
    /// then ordered and deduplicated by the producer's reorder window.
    pub(super) async fn on_payload(&mut self, source: Name, mid: u32, mut msg: Message) {
        let conn = msg.incoming_conn();
        let rb = self.receivers.entry(source.clone()).or_insert_with(ReceiverBuffer::from_first_contact);
        if !rb.is_new(mid) {
            // Already released or waiting (a key is used once: never decrypt a copy twice).
            Stats::bump(&self.io.app.stats.duplicates);
            self.io.stop_timer(McTimer::Rtx(source.clone(), mid));
            return;
        }
        if !rb.fits(mid) {
            // Drop point: too far ahead of the reorder window; counted (`out_of_window`) and
            // RECOVERED: once the window moves, the id is a hole and is asked for again.
            Stats::bump(&self.io.app.stats.out_of_window);
            return;
        }
        if !self.open_single(&mut msg) {
            self.unreadable(&source, [mid], conn).await;
            return;
        }
        let rb = self.receivers.entry(source.clone()).or_insert_with(ReceiverBuffer::from_first_contact);
        match rb.on_message(mid, msg, &mut self.io.released, &mut self.io.holes) {
            Arrival::Accepted => {
                self.io.stop_timer(McTimer::Rtx(source.clone(), mid));
            }
            Arrival::Duplicate => Stats::bump(&self.io.app.stats.duplicates),
            Arrival::OutOfWindow => Stats::bump(&self.io.app.stats.out_of_window),
        }
        self.flush_released(&source).await;
        self.request_holes(&source, conn).await;
    }

    /// Decrypts an MLS group's data message in place (no-op without MLS); false when it is not
    /// readable by this member (not encrypted for the group, an epoch or key this member does
    /// not have (yet), tampered).
    pub(super) fn open_single(&mut self, msg: &mut Message) -> bool {
        if !msg.metadata.contains_key(wire::META_MLS_ENCRYPTED) && !self.keys.enabled() {
            return true;
        }
        // An MLS group accepts only what was encrypted for it.
        let result = match self.keys.ready_state_mut() {
            Some(mls) => interceptor::decrypt_inbound(mls, msg),
            None => Err(crate::mls::MlsError::NoGroup),
        };
        let ok = matches!(result, Ok(true));
        if !ok {
            tracing::debug!(session = self.io.id, result = ?result, "group message that cannot be decrypted");
        }
        ok
    }

    /// Drop point: a data message (or batch) this member cannot decrypt; counted
    /// (`mls_failures`) and RECOVERED when possible: its ids become holes whose RTX timers keep
    /// asking (a retransmission is re-encrypted by its producer, and a COMMIT this member had
    /// not applied yet may arrive meanwhile); REPORTED (MessageLost per id) once the retries are
    /// spent.
    pub(super) async fn unreadable(&mut self, source: &Name, ids: impl IntoIterator<Item = u32>, conn: Option<u64>) {
        Stats::bump(&self.io.app.stats.mls_failures);
        let rb = self.receivers.entry(source.clone()).or_insert_with(ReceiverBuffer::from_first_contact);
        for id in ids {
            rb.mark_missing(id, &mut self.io.holes);
        }
        self.request_holes(source, conn).await;
    }

    /// An MLS batch of `count` messages with ids `first ..`: decrypted once, unpacked, and each
    /// message fed to the reorder window under its own id (ordering, duplicates and loss stay
    /// per message). A retransmitted batch counts when any of its ids was asked for.
    pub(super) async fn on_batch(&mut self, source: Name, first: u32, mut msg: Message, retransmitted: bool) {
        let count = msg
            .metadata
            .get(META_MLS_BATCH)
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|c| (1..=MAX_BATCH_ITEMS as u32).contains(c));
        let Some(count) = count else {
            // Drop point: a batch whose size is unreadable; counted (`invalid`) and RECOVERED:
            // its ids are holes once later ids or a beacon arrive, and are asked for again.
            Stats::bump(&self.io.app.stats.invalid);
            return;
        };
        // Ids count up and wrap from u32::MAX to 0 (a batch may straddle the wrap).
        let ids = (0..count).map(move |i| first.wrapping_add(i));
        if retransmitted && !ids.clone().any(|id| self.io.timer_running(McTimer::Rtx(source.clone(), id))) {
            // Not a loss: every id was accepted or already reported lost.
            Stats::bump(&self.io.app.stats.unexpected_rtx_replies);
            return;
        }
        let conn = msg.incoming_conn();
        let rb = self.receivers.entry(source.clone()).or_insert_with(ReceiverBuffer::from_first_contact);
        // A batch is decrypted at most once: all of its ids enter the window together.
        if !ids.clone().any(|id| rb.is_new(id)) {
            Stats::bump(&self.io.app.stats.duplicates);
            for id in ids {
                self.io.stop_timer(McTimer::Rtx(source.clone(), id));
            }
            return;
        }
        if !rb.fits(first.wrapping_add(count - 1)) {
            // Drop point: (partly) beyond the reorder window; counted and RECOVERED (its ids
            // become holes once the window moves, and are asked for again).
            Stats::bump(&self.io.app.stats.out_of_window);
            return;
        }
        let Some(items) = self.open_batch(&mut msg, count) else {
            tracing::debug!(session = self.io.id, "group batch that cannot be decrypted");
            self.unreadable(&source, ids, conn).await;
            return;
        };
        if let Some(c) = msg.publish_mut().and_then(|p| p.msg.as_mut()) {
            c.blob = Default::default();
        }
        msg.metadata.clear();
        let rb = self.receivers.entry(source.clone()).or_insert_with(ReceiverBuffer::from_first_contact);
        for (id, item) in ids.zip(items) {
            let mut one = msg.clone();
            if let Some(h) = one.session_header_mut() {
                h.message_id = id;
            }
            if let Some(c) = one.publish_mut().and_then(|p| p.msg.as_mut()) {
                c.blob = item.blob.into();
                c.content_type = item.payload_type.into();
            }
            one.metadata = item.metadata;
            match rb.on_message(id, one, &mut self.io.released, &mut self.io.holes) {
                Arrival::Accepted => {}
                Arrival::Duplicate => Stats::bump(&self.io.app.stats.duplicates),
                Arrival::OutOfWindow => Stats::bump(&self.io.app.stats.out_of_window),
            }
            self.io.stop_timer(McTimer::Rtx(source.clone(), id));
        }
        self.flush_released(&source).await;
        self.request_holes(&source, conn).await;
    }

    /// Decrypts a batch message in place and decodes its `count` items (None: not for us).
    pub(super) fn open_batch(&mut self, msg: &mut Message, count: u32) -> Option<Vec<BatchItem>> {
        let mls = self.keys.ready_state_mut()?;
        if !matches!(interceptor::decrypt_inbound(mls, msg), Ok(true)) {
            return None;
        }
        let items = batch::decode(msg.blob()).ok()?;
        (items.len() == count as usize).then_some(items)
    }

    /// Multicast asks for every new hole at once, then again on each timer fire (docs/protocol.md
    /// "Data, beacons and retransmission").
    pub(super) async fn request_holes(&mut self, producer: &Name, conn: Option<u64>) {
        if self.io.holes.is_empty() {
            return;
        }
        self.rtx_conn.insert(producer.clone(), conn);
        let now = Instant::now();
        let holes: Vec<u32> = self.io.holes.drain(..).collect();
        for hole in holes {
            let key = McTimer::Rtx(producer.clone(), hole);
            if self.io.timer_running(key.clone()) {
                continue;
            }
            self.io.start_timer(key, TimerPolicy::constant(self.timeout, self.max_retries), now);
            self.io.send(self.rtx_request(producer, hole, conn)).await;
        }
    }

    /// An RTX_REQUEST to `producer` for id `mid`.
    pub(super) fn rtx_request(&self, producer: &Name, mid: u32, conn: Option<u64>) -> Message {
        self.io.app.control(
            producer,
            Flags::one().forward_to(conn),
            SessionType::SessionMulticast,
            SessionMessageType::RtxRequest,
            self.io.id,
            mid,
            Vec::new(),
        )
    }

    /// Hands what the reorder window of `source` released, in order, to the application:
    /// messages wait (bounded) for room in the session queue, lost ids are reported.
    pub(super) async fn flush_released(&mut self, source: &Name) {
        let released: Vec<_> = self.io.released.drain(..).collect();
        for r in released {
            match r {
                // Drop point: the session queue stayed full past the delivery bound -> REPORTED
                // (MessageLost with the id; see SessionQueue::push_wait). Waiting here is the
                // back-pressure: this task stops reading, the dispatcher and the node stop, and
                // the group's sender slows down.
                Released::Message(m) => self.io.entry.deliver_waiting(m).await,
                Released::Lost(id) => self.io.entry.report_lost(Some(source), id),
            }
        }
    }
}
