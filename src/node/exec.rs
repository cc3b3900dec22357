//! The executor hyper spawns our HTTP/2 tasks on (the server's connections and the per-stream
//! tasks that send a response body, the client's connection and request-body tasks), and the
//! wrapper every such task runs in: [`NoSelfWake`]; and [`unless_cancelled`], how a node's read
//! loops wait for a message or their connection's cancellation ([`finish_despite_cancel`]: the
//! message a loop has read is routed even when the cancel comes first).
//!
//! Why: hyper's task that pipes a body into h2 asks h2 for send capacity for every message it
//! sends, and h2, finding the capacity there, wakes the task waiting for it, which is the very task
//! asking (it registered its waker a moment before). tokio takes a task that wakes itself while it
//! runs for a yield: it goes to the back of the run queue and, in a runtime with more than one
//! worker, a parked worker is woken to come and look for work (a futex wake and a context switch
//! per message, for nothing: the sibling finds no work, or steals the task and polls it for
//! nothing on another thread). Measured in a node forwarding a request/reply: 2 context switches
//! per forwarded message instead of 1 (benches/README.md, "Where a request/reply waits").
//! [`NoSelfWake`] polls its future again at once when it was woken during its own poll, so no
//! wake reaches tokio then; wakes from anywhere else reach it as before.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// Polls the future is re-polled at most in one poll of [`NoSelfWake`] when it keeps waking
/// itself (then the wake goes to tokio: a future that yields on purpose, e.g. when its
/// cooperative budget is spent, still yields).
const MAX_REPOLLS: usize = 4;

/// Not being polled.
const IDLE: u8 = 0;
/// Being polled, not woken since the poll began.
const POLLING: u8 = 1;
/// Being polled and woken during it: poll once more.
const WOKEN: u8 = 2;

/// The waker the inner future sees: during a poll it only records the wake; otherwise it wakes the
/// task.
struct Bell {
    state: AtomicU8,
    task: AtomicWaker,
}

impl Wake for Bell {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // A wake during the poll is taken by the poller (it polls again); one between polls wakes
        // the task. The poller ends a poll with POLLING -> IDLE, which fails if a wake got in first.
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            match cur {
                POLLING => match self.state.compare_exchange(POLLING, WOKEN, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return,
                    Err(now) => cur = now,
                },
                WOKEN => return,
                _ => {
                    self.task.wake();
                    return;
                }
            }
        }
    }
}

/// A future whose wakes from inside its own poll are turned into an immediate re-poll (see the
/// module's comment).
pub(crate) struct NoSelfWake<F> {
    inner: Pin<Box<F>>,
    bell: Arc<Bell>,
    waker: Waker,
}

impl<F: Future> NoSelfWake<F> {
    pub(crate) fn new(inner: F) -> Self {
        let bell = Arc::new(Bell { state: AtomicU8::new(IDLE), task: AtomicWaker::new() });
        let waker = Waker::from(bell.clone());
        NoSelfWake { inner: Box::pin(inner), bell, waker }
    }
}

impl<F: Future> Future for NoSelfWake<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        // Registered before the inner poll: a wake after it ends finds the task's waker.
        this.bell.task.register(cx.waker());
        let mut inner_cx = Context::from_waker(&this.waker);
        for _ in 0..MAX_REPOLLS {
            this.bell.state.store(POLLING, Ordering::Release);
            if let Poll::Ready(out) = this.inner.as_mut().poll(&mut inner_cx) {
                this.bell.state.store(IDLE, Ordering::Release);
                return Poll::Ready(out);
            }
            if this.bell.state.compare_exchange(POLLING, IDLE, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                return Poll::Pending;
            }
            // Woken during the poll: poll again (the wake was not passed on).
        }
        // Still waking itself: let tokio schedule it again after the others.
        this.bell.state.store(IDLE, Ordering::Release);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// hyper's executor for our servers and clients: `tokio::spawn` of the task in [`NoSelfWake`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Spawner;

impl<F> hyper::rt::Executor<F> for Spawner
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(NoSelfWake::new(fut));
    }
}

/// `fut`'s output, or `None` once `token` is cancelled. `cancelled` is the token's `cancelled()`
/// future, made once per loop by the caller and kept (pinned) across calls, and polled only when
/// `fut` is not ready: a message read and routed at once costs one look at the token (a lock in
/// tokio-util; the routing does not look again, see [`finish_despite_cancel`]), a message waited
/// for three, where a `select!` on a fresh `cancelled()` per message
/// took three to five per `select!` (look, register, look again, unregister; ~4% of a node's CPU
/// in a stream, two per message). The token is looked at first, as a `biased` select would; when
/// `fut` is polled again after a wake, it goes first (it woke us; a cancel that raced with it is
/// seen at the next call, as one that came a moment later would be). The read loops of a node's
/// connections run on it.
pub(crate) async fn unless_cancelled<F: Future>(
    token: &CancellationToken,
    cancelled: Pin<&mut WaitForCancellationFuture<'_>>,
    fut: F,
) -> Option<F::Output> {
    watch_cancel(token, cancelled, fut, true).await
}

/// [`unless_cancelled`], looking at the token first only when `look_first` (a caller that
/// looked a moment ago skips the look: it costs a lock in tokio-util).
async fn watch_cancel<F: Future>(
    token: &CancellationToken,
    mut cancelled: Pin<&mut WaitForCancellationFuture<'_>>,
    fut: F,
    look_first: bool,
) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut first = look_first;
    std::future::poll_fn(move |cx| {
        if std::mem::take(&mut first) && token.is_cancelled() {
            return Poll::Ready(None);
        }
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        cancelled.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// Runs `routing` (the routing of one message a connection's reader has taken) to its end, and
/// says whether the connection is still open (`Some`) or was cancelled (`None`: the reader stops).
/// A cancel that comes while the message waits for room at its target does not drop it: the
/// message waits on like any other (back-pressure, docs/reliability.md "Queue policies") and
/// reaches its target, unless that target's connection ends too (the drop point of
/// `Inner::deliver`, `dropped_closed`) or the node stops (`node_stopping`, its root token): then
/// it goes with the node, as everything still queued in it does (RECOVERED for reliable sessions
/// by retransmission through another path or after a restart; docs/reliability.md).
///
/// `routing` is pinned by the caller where it was made (`std::pin::pin!`) and not moved again:
/// a routing future is a few kilobytes (every path a message may take), and taking it by value
/// here copied it twice more per message (memcpy was ~9% of a node's CPU in a stream).
pub(crate) async fn finish_despite_cancel<F: Future<Output = ()>>(
    token: &CancellationToken,
    cancelled: Pin<&mut WaitForCancellationFuture<'_>>,
    node_stopping: &CancellationToken,
    mut routing: Pin<&mut F>,
) -> Option<()> {
    // The reader looked at the token when it took the message, a moment ago: no second look
    // (one lock per message less). A cancel since then is seen as one that came a moment later
    // would be: while the routing waits, or by the reader's next look.
    if watch_cancel(token, cancelled, routing.as_mut(), false).await.is_some() {
        return Some(());
    }
    // Until the target takes it; a stopping node takes everything with it (and must not wait
    // here for a peer that reads nothing: its connections end only once their senders are gone).
    let _ = unless_cancelled(node_stopping, std::pin::pin!(node_stopping.cancelled()), routing).await;
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Wakes itself `n` times from inside its poll, then is ready; counts its polls.
    struct SelfWaking {
        left: usize,
        polls: Arc<AtomicUsize>,
    }

    impl Future for SelfWaking {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            if self.left == 0 {
                return Poll::Ready(());
            }
            self.left -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[test]
    fn a_wake_during_the_poll_is_a_repoll_not_a_task_wake() {
        let polls = Arc::new(AtomicUsize::new(0));
        let mut fut = NoSelfWake::new(SelfWaking { left: 2, polls: polls.clone() });
        let counted = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Waker::from(counted.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut fut).poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::Relaxed), 3);
        assert_eq!(counted.0.load(Ordering::Relaxed), 0, "no wake reached the task");
    }

    #[test]
    fn a_future_that_keeps_waking_itself_still_yields() {
        let polls = Arc::new(AtomicUsize::new(0));
        let mut fut = NoSelfWake::new(SelfWaking { left: 100, polls: polls.clone() });
        let counted = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Waker::from(counted.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), MAX_REPOLLS);
        assert_eq!(counted.0.load(Ordering::Relaxed), 1, "the task was woken to run again later");
    }

    #[tokio::test]
    async fn a_wake_between_polls_wakes_the_task() {
        let (tx, rx) = tokio::sync::oneshot::channel::<u8>();
        let task = tokio::spawn(NoSelfWake::new(rx));
        tokio::task::yield_now().await;
        tx.send(7).unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        assert_eq!(got.expect("woken").expect("joined").expect("sent"), 7);
    }

    #[tokio::test]
    async fn unless_cancelled_gives_the_output_or_none_once_cancelled() {
        let token = CancellationToken::new();
        let mut cancelled = std::pin::pin!(token.cancelled());
        assert_eq!(unless_cancelled(&token, cancelled.as_mut(), async { 5 }).await, Some(5));
        let (tx, rx) = tokio::sync::oneshot::channel::<u8>();
        let waiting = unless_cancelled(&token, cancelled.as_mut(), rx);
        let cancel = async {
            tokio::task::yield_now().await;
            token.cancel();
        };
        let (got, ()) =
            tokio::time::timeout(std::time::Duration::from_secs(5), async { tokio::join!(waiting, cancel) })
                .await
                .expect("a waiting future ends when the token is cancelled");
        assert!(got.is_none());
        assert_eq!(unless_cancelled(&token, cancelled.as_mut(), async { 5 }).await, None, "cancelled first");
        drop(tx);
    }

    #[tokio::test]
    async fn a_message_taken_is_routed_to_the_end_whatever_the_connection_token_says() {
        let (token, root) = (CancellationToken::new(), CancellationToken::new());
        let mut cancelled = std::pin::pin!(token.cancelled());
        token.cancel();
        // Ready at once: routed, and the reader's next look (below) stops it.
        let routed = std::pin::pin!(async {});
        assert_eq!(finish_despite_cancel(&token, cancelled.as_mut(), &root, routed).await, Some(()));
        assert_eq!(unless_cancelled(&token, cancelled.as_mut(), async { 5 }).await, None);
        // Waiting (for room at its target): it waits on, and the reader is told to stop.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let waiting = std::pin::pin!(async {
            let _ = rx.await;
        });
        let finish = finish_despite_cancel(&token, cancelled.as_mut(), &root, waiting);
        let room = async {
            tokio::task::yield_now().await;
            let _ = tx.send(());
        };
        let (got, ()) = tokio::time::timeout(std::time::Duration::from_secs(5), async { tokio::join!(finish, room) })
            .await
            .expect("the routing ends once its target takes it");
        assert_eq!(got, None);
    }

    #[tokio::test]
    async fn room_is_taken_at_once_waited_for_in_order_and_none_once_closed() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u8>(1);
        super::super::local::room(&tx).await.expect("room").send(1);
        // Full: the next sender waits until the queue has room again.
        let waiting = super::super::local::room(&tx);
        let drain = async {
            tokio::task::yield_now().await;
            rx.recv().await
        };
        let (permit, first) =
            tokio::time::timeout(std::time::Duration::from_secs(5), async { tokio::join!(waiting, drain) })
                .await
                .expect("room once the first message is taken");
        assert_eq!(first, Some(1));
        permit.expect("room").send(2);
        assert_eq!(rx.recv().await, Some(2));
        drop(rx);
        assert!(super::super::local::room(&tx).await.is_none(), "closed");
    }

    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}
