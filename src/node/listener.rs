//! Listening sockets that close when the node says so, not when a task gets round to it.
//!
//! tonic owns the socket it serves on until its serve task ends, which can be well after
//! `stop_server` or the drop of the last app handle returned: binding the same port again at
//! once then fails with "Address already in use". A [`Listener`] is shared by the node (which
//! closes it) and the accept side (which polls it): [`Listener::close`] drops the socket on the
//! spot, so the port is free when `stop_server`, the drop of the last handle, or the Python
//! interpreter's exit ([`close_all`]) returns.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::Stream;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

/// Pause after a failed accept (out of descriptors and the like): no busy loop.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(20);

/// Every listener of this process that may still be open (closed by [`close_all`]).
static LIVE: Mutex<Vec<Weak<Listener>>> = Mutex::new(Vec::new());

/// A listening socket that any holder can close at once.
#[derive(Debug)]
pub(crate) struct Listener {
    socket: Mutex<Option<TcpListener>>,
    /// The accept side waiting for a connection (woken by [`Listener::close`]).
    waiter: Mutex<Option<Waker>>,
}

impl Listener {
    /// Wraps a bound socket.
    pub(crate) fn new(socket: TcpListener) -> Arc<Self> {
        let listener = Arc::new(Listener { socket: Mutex::new(Some(socket)), waiter: Mutex::new(None) });
        let mut live = LIVE.lock();
        live.retain(|w| w.strong_count() > 0);
        live.push(Arc::downgrade(&listener));
        listener
    }

    /// Closes the socket now (the port is free when this returns); accepting ends.
    pub(crate) fn close(&self) {
        drop(self.socket.lock().take());
        if let Some(w) = self.waiter.lock().take() {
            w.wake();
        }
    }

    /// The next connection; `None` once closed.
    pub(crate) fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<Option<io::Result<(TcpStream, SocketAddr)>>> {
        let socket = self.socket.lock();
        let Some(socket) = socket.as_ref() else { return Poll::Ready(None) };
        match socket.poll_accept(cx) {
            Poll::Ready(r) => Poll::Ready(Some(r)),
            Poll::Pending => {
                *self.waiter.lock() = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Waits for the next connection; `None` once closed.
    pub(crate) async fn accept(&self) -> Option<io::Result<(TcpStream, SocketAddr)>> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }
}

/// Closes every listener of this process (at interpreter exit).
pub fn close_all() {
    let live: Vec<_> = LIVE.lock().drain(..).collect();
    for l in live.iter().filter_map(Weak::upgrade) {
        l.close();
    }
}

/// The plain-TCP connections of a [`Listener`] for tonic, with TCP_NODELAY; ends once closed.
pub(crate) struct Incoming {
    listener: Arc<Listener>,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Incoming {
    pub(crate) fn new(listener: Arc<Listener>) -> Self {
        Incoming { listener, pause: None }
    }
}

impl Stream for Incoming {
    type Item = io::Result<TcpStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(p) = self.pause.as_mut() {
                std::task::ready!(p.as_mut().poll(cx));
                self.pause = None;
            }
            match std::task::ready!(self.listener.poll_accept(cx)) {
                None => return Poll::Ready(None),
                Some(Ok((tcp, _))) => {
                    let _ = tcp.set_nodelay(true);
                    return Poll::Ready(Some(Ok(tcp)));
                }
                Some(Err(e)) => {
                    debug!(error = %e, "accept failed");
                    self.pause = Some(Box::pin(tokio::time::sleep(ACCEPT_ERROR_PAUSE)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn close_frees_the_port_at_once_and_ends_accepting() {
        let listener = Listener::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let addr = listener.socket.lock().as_ref().unwrap().local_addr().unwrap();
        let accepting = {
            let l = listener.clone();
            tokio::spawn(async move { l.accept().await.is_none() })
        };
        // An accepted connection stays open; it does not hold the port for a new listener.
        let _client = TcpStream::connect(addr).await.unwrap();
        listener.close();
        let again = TcpListener::bind(addr).await.expect("port free again");
        drop(again);
        // The accept side took the first connection or saw the close; either way it ends.
        let _ = tokio::time::timeout(Duration::from_secs(5), accepting).await.expect("accepting ended");
        assert!(listener.accept().await.is_none());
    }
}
