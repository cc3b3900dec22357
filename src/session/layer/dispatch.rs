//! The app's dispatcher: everything its embedded node delivers (messages, and error reports for
//! messages this app sent), handed to the sessions in batches (docs/protocol.md "How a message
//! finds its session").

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{DISPATCH_BATCH, SessionLayer};
use crate::node::local::{LocalDelivery, Overflow, RouteError};
use crate::session::context::Stats;
use crate::session::entry::SessionEntry;
use crate::wire::SessionMessageType;

impl SessionLayer {
    /// Reads everything the embedded node delivers until shutdown: its queue, and the error
    /// reports that found that queue full (`overflow`, taken after each batch and whenever one
    /// arrives while the queue is empty).
    pub async fn run_dispatcher(self: Arc<Self>, mut rx: mpsc::Receiver<LocalDelivery>, overflow: Arc<Overflow>) {
        let mut batch = Vec::with_capacity(DISPATCH_BATCH);
        // Sessions owing acknowledgements for what this batch delivered (`SessionEntry::on_inbound`).
        let mut acks: Vec<Arc<SessionEntry>> = Vec::new();
        loop {
            let n = tokio::select! {
                biased;
                _ = self.core.shutdown.cancelled() => break,
                n = rx.recv_many(&mut batch, DISPATCH_BATCH) => n,
                _ = overflow.wakeup.notified() => {
                    self.take_overflow(&overflow);
                    continue;
                }
            };
            if n == 0 {
                break;
            }
            // Odd while the batch is handled: a heartbeat task that finds the dispatcher held in
            // one batch does not take a peer's silence for its death (`DispatchProgress`).
            self.core.dispatch.step();
            for d in batch.drain(..) {
                match d {
                    LocalDelivery::Message(m) => self.on_message(m, &mut acks).await,
                    LocalDelivery::Error(e) => self.on_route_error(*e, 1),
                }
            }
            for entry in acks.drain(..) {
                entry.flush_acks(&self.core).await;
            }
            self.take_overflow(&overflow);
            self.core.dispatch.step();
        }
        self.close_all();
    }

    /// The error reports the node merged while this app's queue was full: one per session, with
    /// how many it stands for (REPORTED). Those it could only count (no session, or past its
    /// bound of sessions) are counted here with the reports for sessions that are gone.
    fn take_overflow(&self, overflow: &Overflow) {
        let (merged, unsorted) = overflow.take();
        for m in merged {
            self.on_route_error(m.report, m.count);
        }
        if unsorted > 0 {
            self.core.stats.orphan_route_errors.fetch_add(unsorted as u64, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(unsorted, "route errors merged past the overflow's bound: counted only");
        }
    }

    /// `count` reports of messages of this app that could not be routed (`e` is the first; more
    /// than one: merged while the app's queue was full): its session gets `NoRoute` (counted when
    /// it has none).
    fn on_route_error(&self, e: RouteError, count: usize) {
        if matches!(e.message.session_message_type(), SessionMessageType::GroupPing | SessionMessageType::GroupPong) {
            // A heartbeat to a peer that is gone: liveness itself reports it (the member is
            // dropped, or the session closed with `ModeratorLost`); counted, not a session event.
            // (Never merged with others: the node's `Overflow` only counts these.)
            Stats::bump(&self.core.stats.orphan_route_errors);
            return;
        }
        let sid = e.message.session_header().map(|s| s.session_id);
        match sid.and_then(|s| self.sessions.get(s)) {
            Some(entry) if count == 1 => entry.report_no_route(&e.message, e.error.to_string()),
            // A summary, deduplicated as a lone report is: by the newest reliable message among
            // those merged (a session whose merged reports are all retries of messages already
            // reported raises nothing). The count may include retransmissions of one message.
            Some(entry) => entry.report_no_route(
                &e.message,
                format!(
                    "{} (and {} more reports of messages of this session the node could not route)",
                    e.error,
                    count - 1
                ),
            ),
            None => {
                // Drop point: errors for a session that no longer exists; counted.
                self.core.stats.orphan_route_errors.fetch_add(count as u64, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(error = %e.error, count, "route error for a message without a live session");
            }
        }
    }
}
