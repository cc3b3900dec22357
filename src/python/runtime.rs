//! Bridging Rust futures to asyncio.
//!
//! Hot calls (publish/receive) are pyo3 native coroutines: polling them costs ~0.25 µs, against
//! ~115 µs for a `future_into_py` thread hop (measured when the boundary was designed;
//! docs/python-boundary.md says why the boundary is built this way). Their futures are polled on
//! the Python thread, so each poll enters the tokio runtime: timers and spawns inside the core work.
//! Calls that do real I/O (connect, servers, creating an app) are spawned onto the runtime and
//! the coroutine only awaits the join handle.
//!
//! The runtime belongs to this module and is shut down by an `atexit` hook
//! ([`shutdown_runtime`]): worker threads that outlive the interpreter would otherwise touch
//! Python (waking a coroutine) while it finalizes, which aborts the process.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::runtime::{Handle, Runtime};

static HANDLE: OnceLock<Handle> = OnceLock::new();
static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);

/// The runtime shared by every app in the process, started on first use.
pub(super) fn handle() -> PyResult<&'static Handle> {
    if let Some(h) = HANDLE.get() {
        return Ok(h);
    }
    let mut slot = RUNTIME.lock().map_err(|_| PyRuntimeError::new_err("SLIM runtime lock poisoned"))?;
    if let Some(h) = HANDLE.get() {
        return Ok(h);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("slim-rt")
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the SLIM runtime: {e}")))?;
    let h = HANDLE.get_or_init(|| rt.handle().clone());
    *slot = Some(rt);
    Ok(h)
}

/// Stops the runtime's worker threads (bounded), with the interpreter released so that tasks
/// finishing meanwhile can still call into Python. Registered with `atexit`; later calls do nothing.
#[pyfunction]
pub(super) fn shutdown_runtime(py: Python<'_>) {
    // Listening sockets close first and at once, whatever holds their apps.
    crate::node::listener::close_all();
    let rt = RUNTIME.lock().ok().and_then(|mut slot| slot.take());
    if let Some(rt) = rt {
        py.detach(move || rt.shutdown_timeout(Duration::from_secs(2)));
    }
}

/// A future that enters the tokio runtime context on every poll.
pub(super) struct InRuntime<F>(Pin<Box<F>>);

impl<F: Future> Future for InRuntime<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _guard = HANDLE.get().map(Handle::enter);
        self.0.as_mut().poll(cx)
    }
}

/// Wraps a future so that it can be polled from the Python thread.
pub(super) fn in_runtime<F: Future>(fut: F) -> InRuntime<F> {
    // Make sure the runtime exists before the first poll needs it.
    let _ = handle();
    InRuntime(Box::pin(fut))
}

/// Runs `f` inside the runtime context (for synchronous core calls made on the Python thread).
pub(super) fn entered<T>(f: impl FnOnce() -> T) -> T {
    let _guard = handle().ok().map(Handle::enter);
    f()
}

/// Aborts the spawned task when the awaiting coroutine is cancelled (dropped).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `fut` on the runtime's worker threads and waits for it.
pub(super) async fn spawned<F, T>(fut: F) -> PyResult<T>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: Send + 'static,
{
    let mut task = AbortOnDrop(handle()?.spawn(fut));
    match (&mut task.0).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => Err(PyRuntimeError::new_err("internal error: a SLIM task panicked")),
        Err(_) => Err(PyRuntimeError::new_err("SLIM runtime is shut down")),
    }
}

/// An asyncio future that is already done with result None, or plain None when no loop runs.
pub(super) fn ready_none(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let asyncio = py.import("asyncio")?;
    match asyncio.call_method0("get_running_loop") {
        Ok(event_loop) => {
            let fut = event_loop.call_method0("create_future")?;
            fut.call_method1("set_result", (py.None(),))?;
            Ok(fut)
        }
        Err(_) => Ok(py.None().into_bound(py)),
    }
}
