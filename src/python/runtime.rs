//! Bridging Rust futures to asyncio.
//!
//! Hot calls (publish/receive) are pyo3 native coroutines: polling them costs ~0.25 µs, against
//! ~115 µs for a `future_into_py` thread hop (measured when the boundary was designed;
//! docs/python-boundary.md says why the boundary is built this way). Their futures are polled on
//! the Python thread, so each poll enters the tokio runtime: timers and spawns inside the core work.
//! Calls that do real I/O (connect, servers, creating an app) are spawned onto the runtime and
//! the coroutine only awaits the join handle.
//!
//! Two runtimes belong to this module: the apps' ([`handle`]: their embedded nodes, client
//! connections and session timers), with one worker thread, and the servers' ([`server_handle`]:
//! `run_server` and `start_node`, the connections they accept), with tokio's default of one worker
//! per core, started only in a process that serves. An app's node is busy only with that app's
//! traffic, and a second worker there mostly costs wake-ups (tokio wakes a sibling to look for
//! work whenever a parked worker is notified; benches/README.md). `TOKIO_WORKER_THREADS`, when set,
//! gives both runtimes that many workers.
//!
//! Both are shut down by an `atexit` hook ([`shutdown_runtime`]), after the apps are closed (what
//! they sent leaves first, bounded): worker threads that outlive the interpreter would otherwise
//! touch Python (waking a coroutine) while it finalizes, which aborts the process.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::runtime::{Handle, Runtime};

static HANDLE: OnceLock<Handle> = OnceLock::new();
static SERVER_HANDLE: OnceLock<Handle> = OnceLock::new();
/// The runtimes started (apps', servers'), until [`shutdown_runtime`] takes them.
static RUNTIMES: Mutex<Vec<Runtime>> = Mutex::new(Vec::new());

/// The runtime shared by every app in the process, started on first use: one worker thread
/// (`slim-rt`) unless `TOKIO_WORKER_THREADS` is set.
pub(super) fn handle() -> PyResult<&'static Handle> {
    // Every call into the apps' runtime comes here (each `publish`, each `receive`): once it is
    // started, no environment lookup (`getenv` takes the environment's lock; it was ~1% of a
    // streaming sender's samples, benches/README.md).
    if let Some(h) = HANDLE.get() {
        return Ok(h);
    }
    let workers = if std::env::var_os("TOKIO_WORKER_THREADS").is_some() { None } else { Some(1) };
    start(&HANDLE, "slim-rt", workers)
}

/// The runtime of the servers this process runs (`slim-srv` threads, one per core or
/// `TOKIO_WORKER_THREADS`), started by the first of them.
pub(super) fn server_handle() -> PyResult<&'static Handle> {
    start(&SERVER_HANDLE, "slim-srv", None)
}

/// A runtime of its own with `workers` threads named `name`, for a node whose YAML sets
/// `runtime.n_cores` (`python -m slim_bindings node`, like the `slim` binary). It lives until
/// [`shutdown_runtime`], with the others.
pub(super) fn dedicated(name: &str, workers: usize) -> PyResult<Handle> {
    let mut runtimes = RUNTIMES.lock().map_err(|_| PyRuntimeError::new_err("SLIM runtime lock poisoned"))?;
    let rt = build(name, Some(workers))?;
    let h = rt.handle().clone();
    runtimes.push(rt);
    Ok(h)
}

/// `slot`'s runtime, built on first use; `workers: None` is tokio's default (which reads
/// `TOKIO_WORKER_THREADS`).
fn start(slot: &'static OnceLock<Handle>, name: &str, workers: Option<usize>) -> PyResult<&'static Handle> {
    if let Some(h) = slot.get() {
        return Ok(h);
    }
    let mut runtimes = RUNTIMES.lock().map_err(|_| PyRuntimeError::new_err("SLIM runtime lock poisoned"))?;
    if let Some(h) = slot.get() {
        return Ok(h);
    }
    let rt = build(name, workers)?;
    let h = slot.get_or_init(|| rt.handle().clone());
    runtimes.push(rt);
    Ok(h)
}

fn build(name: &str, workers: Option<usize>) -> PyResult<Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name(name);
    if let Some(n) = workers {
        builder.worker_threads(n.max(1));
    }
    builder.build().map_err(|e| PyRuntimeError::new_err(format!("cannot start the SLIM runtime: {e}")))
}

/// Stops the runtimes' worker threads (bounded), with the interpreter released so that tasks
/// finishing meanwhile can still call into Python. Registered with `atexit`; later calls do nothing.
#[pyfunction]
pub(super) fn shutdown_runtime(py: Python<'_>) {
    // Listening sockets close first and at once, whatever holds their apps.
    crate::node::listener::close_all();
    let runtimes = RUNTIMES.lock().map(|mut all| std::mem::take(&mut *all)).unwrap_or_default();
    if runtimes.is_empty() {
        return; // never started, or stopped by an earlier call
    }
    // Then what the apps already sent leaves the process (bounded by `app::CLOSE_LINGER`;
    // docs/reliability.md, "Closing an app"): the apps still open are closed, and the closes
    // of apps dropped just before are waited for. (Not from inside a runtime, where blocking on
    // one would panic: then the runtimes stop as before.)
    if let Some(h) = HANDLE.get()
        && tokio::runtime::Handle::try_current().is_err()
    {
        py.detach(|| h.block_on(crate::app::close_all()));
    }
    // Each runtime gets its bounded wait, the last started first.
    py.detach(move || runtimes.into_iter().rev().for_each(|rt| rt.shutdown_timeout(Duration::from_secs(2))));
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

/// Runs `fut` on the apps' runtime and waits for it.
pub(super) async fn spawned<F, T>(fut: F) -> PyResult<T>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: Send + 'static,
{
    spawned_on(handle()?, fut).await
}

/// Runs `fut` on the servers' runtime and waits for it: what it spawns (accept loops, accepted
/// connections) runs there too.
pub(super) async fn server_spawned<F, T>(fut: F) -> PyResult<T>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: Send + 'static,
{
    spawned_on(server_handle()?, fut).await
}

/// Runs `fut` on `runtime` and waits for it (aborting it when the awaiting coroutine is dropped).
pub(super) async fn spawned_on<F, T>(runtime: &Handle, fut: F) -> PyResult<T>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: Send + 'static,
{
    let mut task = AbortOnDrop(runtime.spawn(fut));
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
