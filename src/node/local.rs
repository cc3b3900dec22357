//! The local-connection contract: what an app in the same process exchanges with its node
//! ([`super::Node::register_local`]). This is all of the node the session layer may know.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

use super::NodeError;
use crate::wire::Message;

/// A message the node could not process, handed back to the local app that sent it.
#[derive(Debug, Clone)]
pub struct RouteError {
    /// The message that could not be routed.
    pub message: Message,
    /// Why.
    pub error: NodeError,
}

impl std::fmt::Display for RouteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "error processing message: {}", self.error)
    }
}

impl std::error::Error for RouteError {}

/// What the node delivers to a local app.
#[derive(Debug, Clone)]
pub enum LocalDelivery {
    /// A message routed to the app.
    Message(Message),
    /// A message the app sent that the node could not process (boxed: the rare variant, kept
    /// from making every delivery as large as itself).
    Error(Box<RouteError>),
}

/// An in-process connection between an app and its node.
#[derive(Debug)]
pub struct LocalConnection {
    /// The connection id (what the node stamps as `incomingConn`).
    pub conn_id: u64,
    /// Messages from the app into the node.
    pub tx: mpsc::Sender<Message>,
    /// Messages and errors from the node to the app.
    pub rx: mpsc::Receiver<LocalDelivery>,
    /// Error reports that found `rx`'s queue full (see [`Overflow`]).
    pub overflow: Arc<Overflow>,
}

/// Sessions the [`Overflow`] keeps apart; the reports of any further ones are merged under no
/// session (`None`), so its memory stays bounded whatever session ids reports carry.
pub const MAX_OVERFLOW_SESSIONS: usize = 4096;

/// Error reports for a local app that found its queue full. The node never waits for room
/// there for an error (an app blocked sending into the node must not deadlock against its own
/// error), and never drops one either: it is merged here, per session (the first report and a
/// count), and the app takes them when it can ([`Self::take`], woken by [`Self::wakeup`]). Memory
/// is bounded: at most [`MAX_OVERFLOW_SESSIONS`] entries.
#[derive(Debug, Default)]
pub struct Overflow {
    pending: AtomicBool,
    /// By session id (`None`: a message without a session header, or past the bound): the first
    /// report, and how many in all.
    reports: Mutex<HashMap<Option<u32>, (RouteError, usize)>>,
    /// Notified on every report merged here.
    pub wakeup: Notify,
}

impl Overflow {
    /// Merges `report` into its session's entry.
    pub(crate) fn add(&self, report: RouteError) {
        let mut sid = report.message.session_header().map(|h| h.session_id);
        {
            let mut reports = self.reports.lock();
            if !reports.contains_key(&sid) && reports.len() >= MAX_OVERFLOW_SESSIONS {
                sid = None;
            }
            reports.entry(sid).or_insert((report, 0)).1 += 1;
        }
        self.pending.store(true, Ordering::Release);
        self.wakeup.notify_one();
    }

    /// Every merged report: per session, the first one and how many there were.
    pub fn take(&self) -> Vec<(RouteError, usize)> {
        if !self.pending.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        self.reports.lock().drain().map(|(_, v)| v).collect()
    }
}

/// Room for one message on a queue (a connection's, an app's way into its node): taken at once
/// when there is some (no future set up and polled), else waited for (back-pressure; waiting
/// senders are served in order, and a sender finds room at once only when nobody waits). `None`:
/// the queue is closed.
pub(crate) async fn room<T>(q: &mpsc::Sender<T>) -> Option<mpsc::Permit<'_, T>> {
    match q.try_reserve() {
        Ok(permit) => Some(permit),
        Err(mpsc::error::TrySendError::Full(())) => q.reserve().await.ok(),
        Err(mpsc::error::TrySendError::Closed(())) => None,
    }
}
