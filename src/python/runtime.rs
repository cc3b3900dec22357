//! Bridging Rust futures to asyncio.
//!
//! Hot calls (publish/receive) are pyo3 native coroutines: polling them costs ~0.25 µs, against
//! ~115 µs for a `future_into_py` thread hop (DESIGN.md §5). Their futures are polled on the
//! Python thread, so each poll enters the tokio runtime: timers and spawns inside the core work.
//! Calls that do real I/O (connect, servers, creating an app) are spawned onto the runtime and
//! the coroutine only awaits the join handle.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// The tokio runtime shared by every app in the process.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    pyo3_async_runtimes::tokio::get_runtime()
}

/// A future that enters the tokio runtime context on every poll.
pub struct InRuntime<F>(pub Pin<Box<F>>);

impl<F: Future> Future for InRuntime<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _guard = runtime().enter();
        self.0.as_mut().poll(cx)
    }
}

/// Wraps a future so that it can be polled from the Python thread.
pub fn in_runtime<F: Future>(fut: F) -> InRuntime<F> {
    InRuntime(Box::pin(fut))
}

/// Aborts the spawned task when the awaiting coroutine is cancelled (dropped).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `fut` on the runtime's worker threads and waits for it.
pub async fn spawned<F, T>(fut: F) -> PyResult<T>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: Send + 'static,
{
    let mut handle = AbortOnDrop(runtime().spawn(fut));
    match (&mut handle.0).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => Err(PyRuntimeError::new_err("internal error: a SLIM task panicked")),
        Err(_) => Err(PyRuntimeError::new_err("internal error: a SLIM task was cancelled")),
    }
}

/// An awaitable that is already done and resolves to None; plain None when no loop is running.
pub fn ready_none(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    match pyo3_async_runtimes::tokio::future_into_py(py, async { Ok(None::<()>) }) {
        Ok(fut) => Ok(fut),
        Err(_) => Ok(py.None().into_bound(py)),
    }
}
