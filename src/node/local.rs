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

/// Sessions the [`Overflow`] keeps apart; reports for any further ones are only counted (see
/// there), so its memory stays bounded whatever session ids reports carry.
pub const MAX_OVERFLOW_SESSIONS: usize = 4096;

/// The reports of one session merged in an [`Overflow`].
#[derive(Debug)]
pub struct Merged {
    /// The report that stands for them: the newest message (highest id) among reliable ones,
    /// which is what a reliable session's reports are deduplicated by; else the first.
    pub report: RouteError,
    /// How many reports were merged.
    pub count: usize,
}

/// Error reports for a local app that found its queue full. The node never waits for room
/// there for an error (an app blocked sending into the node must not deadlock against its own
/// error); it merges it here, per session, and the app takes them when it can ([`Self::take`],
/// woken by [`Self::wakeup`]): the session gets one report that says how many it stands for.
/// Memory is bounded: at most [`MAX_OVERFLOW_SESSIONS`] sessions; a report for a further one,
/// for a message of no session, or for a heartbeat, is only counted (`unsorted`: the app counts
/// it with the reports for sessions it no longer has, as it counts any heartbeat's report).
#[derive(Debug, Default)]
pub struct Overflow {
    pending: AtomicBool,
    state: Mutex<OverflowState>,
    /// Notified on every report merged here.
    pub wakeup: Notify,
}

#[derive(Debug, Default)]
struct OverflowState {
    sessions: HashMap<u32, Merged>,
    unsorted: usize,
}

impl Overflow {
    /// Merges `report` into its session's entry.
    pub(crate) fn add(&self, report: RouteError) {
        {
            let mut st = self.state.lock();
            // A heartbeat's report is only counted: the app does not act on those (its liveness
            // reports a peer that is gone).
            let heartbeat = matches!(
                report.message.session_message_type(),
                crate::wire::SessionMessageType::GroupPing | crate::wire::SessionMessageType::GroupPong
            );
            let sid = report.message.session_header().map(|h| h.session_id).filter(|_| !heartbeat);
            let room = st.sessions.len() < MAX_OVERFLOW_SESSIONS;
            match sid {
                Some(sid) if room || st.sessions.contains_key(&sid) => match st.sessions.get_mut(&sid) {
                    Some(m) => {
                        m.count += 1;
                        if newer_reliable(&report.message, &m.report.message) {
                            m.report = report;
                        }
                    }
                    None => {
                        st.sessions.insert(sid, Merged { report, count: 1 });
                    }
                },
                _ => st.unsorted += 1,
            }
        }
        self.pending.store(true, Ordering::Release);
        self.wakeup.notify_one();
    }

    /// Every merged report (one per session), and how many were only counted.
    pub fn take(&self) -> (Vec<Merged>, usize) {
        if !self.pending.swap(false, Ordering::AcqRel) {
            return (Vec::new(), 0);
        }
        let mut st = self.state.lock();
        let unsorted = std::mem::take(&mut st.unsorted);
        (st.sessions.drain().map(|(_, m)| m).collect(), unsorted)
    }
}

/// True when `a` is a reliable message with a newer id than `b` (ids grow by one per message).
fn newer_reliable(a: &Message, b: &Message) -> bool {
    let reliable = |m: &Message| m.session_message_type() == crate::wire::SessionMessageType::P2PReliable;
    let id = |m: &Message| m.session_header().map_or(0, |h| h.message_id);
    reliable(a) && (!reliable(b) || (id(a).wrapping_sub(id(b)) as i32) > 0)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::builders::{Flags, PublishSpec, publish};
    use crate::wire::{Name, SessionMessageType, SessionType};

    fn report(session_id: u32, kind: SessionMessageType, message_id: u32) -> RouteError {
        let (source, destination) = (Name::new("org", "ns", "me", Some(1)), Name::new("org", "ns", "you", None));
        let spec = PublishSpec {
            source: &source,
            destination: &destination,
            flags: Flags::one(),
            session_type: SessionType::SessionPointToPoint,
            message_type: kind,
            session_id,
            message_id,
            original_names: false,
            content_type: "msg",
        };
        RouteError { message: publish(&spec, Vec::new(), HashMap::new()), error: NodeError::ConnectionClosed(1) }
    }

    fn id(m: &Merged) -> u32 {
        m.report.message.session_header().map_or(u32::MAX, |h| h.message_id)
    }

    #[test]
    fn reports_merge_per_session_under_the_newest_reliable_message() {
        let o = Overflow::default();
        for mid in [5, 7, 6, 7] {
            o.add(report(1, SessionMessageType::P2PReliable, mid));
        }
        o.add(report(2, SessionMessageType::P2PMsg, 3));
        o.add(report(2, SessionMessageType::P2PMsg, 4));
        o.add(report(1, SessionMessageType::GroupPing, 9));
        let (mut merged, unsorted) = o.take();
        merged.sort_by_key(|m| m.report.message.session_header().map(|h| h.session_id));
        assert_eq!(merged.iter().map(|m| (id(m), m.count)).collect::<Vec<_>>(), vec![(7, 4), (3, 2)]);
        assert_eq!(unsorted, 1, "a heartbeat's report is only counted");
        assert!(o.take().0.is_empty(), "taken once");
    }

    #[test]
    fn past_its_bound_of_sessions_a_report_is_only_counted() {
        let o = Overflow::default();
        for sid in 0..MAX_OVERFLOW_SESSIONS as u32 + 3 {
            o.add(report(sid, SessionMessageType::P2PMsg, 0));
        }
        o.add(report(0, SessionMessageType::P2PMsg, 1));
        let (merged, unsorted) = o.take();
        assert_eq!((merged.len(), unsorted), (MAX_OVERFLOW_SESSIONS, 3));
        assert_eq!(merged.iter().map(|m| m.count).sum::<usize>(), MAX_OVERFLOW_SESSIONS + 1);
    }
}
