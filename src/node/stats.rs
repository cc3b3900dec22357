//! Node counters.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of a node (relaxed atomics; read them with [`NodeStats::snapshot`]).
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Messages read from any connection.
    pub messages_received: AtomicU64,
    /// Messages handed to an outbound connection queue (one per target).
    pub messages_routed: AtomicU64,
    /// Subscribe/Unsubscribe messages applied to the table.
    pub subscriptions_processed: AtomicU64,
    /// Dropped: failed validation.
    pub dropped_invalid: AtomicU64,
    /// Dropped: no matching subscription / unknown `forwardTo` connection.
    pub dropped_no_route: AtomicU64,
    /// Dropped: the target connection closed.
    pub dropped_closed: AtomicU64,
    /// Dropped: a Subscribe/Unsubscribe that could not be applied.
    pub dropped_subscription: AtomicU64,
    /// Dropped: a frame that did not decode as a `Message`.
    pub dropped_malformed: AtomicU64,
    /// Error notifications that found a local app's queue full: merged into its `Overflow`, which the
    /// app takes when it can (see `local::Overflow`).
    pub error_reports_deferred: AtomicU64,
    /// Connections opened since start.
    pub connections_opened: AtomicU64,
    /// Connections closed since start.
    pub connections_closed: AtomicU64,
    /// Successful reconnects of client connections.
    pub reconnects: AtomicU64,
    /// Frames written into a stream's shared-memory ring instead of its socket (see `shm`).
    pub shared_frames_sent: AtomicU64,
    /// Frames read out of a stream's shared-memory ring (see `shm`).
    pub shared_frames_received: AtomicU64,
}

/// A copy of the counters at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStatsSnapshot {
    /// See [`NodeStats::messages_received`].
    pub messages_received: u64,
    /// See [`NodeStats::messages_routed`].
    pub messages_routed: u64,
    /// See [`NodeStats::subscriptions_processed`].
    pub subscriptions_processed: u64,
    /// See [`NodeStats::dropped_invalid`].
    pub dropped_invalid: u64,
    /// See [`NodeStats::dropped_no_route`].
    pub dropped_no_route: u64,
    /// See [`NodeStats::dropped_closed`].
    pub dropped_closed: u64,
    /// See [`NodeStats::dropped_subscription`].
    pub dropped_subscription: u64,
    /// See [`NodeStats::dropped_malformed`].
    pub dropped_malformed: u64,
    /// See [`NodeStats::error_reports_deferred`].
    pub error_reports_deferred: u64,
    /// See [`NodeStats::connections_opened`].
    pub connections_opened: u64,
    /// See [`NodeStats::connections_closed`].
    pub connections_closed: u64,
    /// Currently open connections.
    pub active_connections: u64,
    /// See [`NodeStats::reconnects`].
    pub reconnects: u64,
    /// See [`NodeStats::shared_frames_sent`].
    pub shared_frames_sent: u64,
    /// See [`NodeStats::shared_frames_received`].
    pub shared_frames_received: u64,
}

impl NodeStatsSnapshot {
    /// Every figure by its field name (what Python's `PyService.node_stats()` returns).
    pub fn fields(&self) -> [(&'static str, u64); 15] {
        [
            ("messages_received", self.messages_received),
            ("messages_routed", self.messages_routed),
            ("subscriptions_processed", self.subscriptions_processed),
            ("dropped_invalid", self.dropped_invalid),
            ("dropped_no_route", self.dropped_no_route),
            ("dropped_closed", self.dropped_closed),
            ("dropped_subscription", self.dropped_subscription),
            ("dropped_malformed", self.dropped_malformed),
            ("error_reports_deferred", self.error_reports_deferred),
            ("connections_opened", self.connections_opened),
            ("connections_closed", self.connections_closed),
            ("active_connections", self.active_connections),
            ("reconnects", self.reconnects),
            ("shared_frames_sent", self.shared_frames_sent),
            ("shared_frames_received", self.shared_frames_received),
        ]
    }
}

impl NodeStats {
    pub(crate) fn connection_opened(&self) {
        self.connections_opened.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.connections_closed.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> NodeStatsSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let opened = r(&self.connections_opened);
        let closed = r(&self.connections_closed);
        NodeStatsSnapshot {
            messages_received: r(&self.messages_received),
            messages_routed: r(&self.messages_routed),
            subscriptions_processed: r(&self.subscriptions_processed),
            dropped_invalid: r(&self.dropped_invalid),
            dropped_no_route: r(&self.dropped_no_route),
            dropped_closed: r(&self.dropped_closed),
            dropped_subscription: r(&self.dropped_subscription),
            dropped_malformed: r(&self.dropped_malformed),
            error_reports_deferred: r(&self.error_reports_deferred),
            connections_opened: opened,
            connections_closed: closed,
            active_connections: opened.saturating_sub(closed),
            reconnects: r(&self.reconnects),
            shared_frames_sent: r(&self.shared_frames_sent),
            shared_frames_received: r(&self.shared_frames_received),
        }
    }
}
