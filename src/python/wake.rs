//! Awaitables whose wake-up never takes the interpreter lock on the waking thread.
//!
//! pyo3's native coroutines complete the asyncio future they hand the event loop from the thread
//! that wakes them: the tokio worker that delivered a message takes the interpreter lock and calls
//! `loop.call_soon_threadsafe`, and the Python thread, woken by that call, then waits for the
//! worker to give the lock back (docs/python-boundary.md). [`SlimAwaitable`] is a coroutine of
//! the same shape with another waker: a wake only records which waiter woke and, if nothing was
//! recorded since the loop last looked, writes one byte to a socket pair the loop watches
//! (`loop.add_reader`, one [`Bell`] per event loop). The loop thread then resolves the asyncio
//! futures of every waiter recorded since, under the lock it holds anyway: a burst of wakes costs
//! one byte and one loop callback, and no thread but the loop's touches Python.

use std::future::Future;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Wake, Waker};

use parking_lot::Mutex;
use pyo3::exceptions::{PyBaseException, PyRuntimeError, PyStopIteration};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::{IntoPyObjectExt, intern};

use super::runtime::entered;

type BoxedCall = Pin<Box<dyn Future<Output = PyResult<Py<PyAny>>> + Send>>;

/// Where an event loop learns that awaitables polled on it were woken: the socket pair it
/// watches and the waiters woken since it last looked.
struct Bell {
    /// Written (one byte) by the first wake after the loop last looked; non-blocking.
    tx: UnixStream,
    /// Watched by the loop with `add_reader`; drained by [`LoopBell::ring`]; non-blocking.
    rx: UnixStream,
    woken: Mutex<Vec<Arc<Waiter>>>,
}

impl Bell {
    fn new() -> std::io::Result<Self> {
        let (tx, rx) = UnixStream::pair()?;
        tx.set_nonblocking(true)?;
        rx.set_nonblocking(true)?;
        Ok(Self { tx, rx, woken: Mutex::new(Vec::new()) })
    }

    /// Records `waiter` for the loop; writes the byte only when the list was empty (the loop has
    /// been told already otherwise).
    fn push(&self, waiter: Arc<Waiter>) {
        let first = {
            let mut woken = self.woken.lock();
            woken.push(waiter);
            woken.len() == 1
        };
        if first {
            // WouldBlock: the pair's buffer is full of unread bytes, so the loop is woken anyway.
            // Any other error means the loop's end is gone: nobody is left to wake. Nothing is
            // lost either way (the message stays in its queue for the next poll).
            let _ = (&self.tx).write(&[1]);
        }
    }
}

/// The event loop's side of a [`Bell`]: kept on the loop (attribute, or a weak-keyed map for
/// loops that take no attributes), its `ring` method registered with `loop.add_reader`.
#[pyclass(module = "slim_bindings._slim_bindings", frozen)]
pub(super) struct LoopBell {
    bell: Arc<Bell>,
}

#[pymethods]
impl LoopBell {
    /// The descriptor the loop watches (readable while a wake waits for [`LoopBell::ring`]).
    fn fileno(&self) -> i32 {
        self.bell.rx.as_raw_fd()
    }

    /// The reader callback: resolves the asyncio future of every waiter woken since the last call.
    fn ring(&self, py: Python<'_>) -> PyResult<()> {
        // Drain the bytes before taking the list: a wake after the take writes a new byte (it
        // finds the list empty), so none is missed; a byte left for an entry already taken only
        // costs one empty callback.
        let mut buf = [0u8; 64];
        while let Ok(n) = (&self.bell.rx).read(&mut buf) {
            if n < buf.len() {
                break;
            }
        }
        let woken = std::mem::take(&mut *self.bell.woken.lock());
        let mut first_error = None;
        for waiter in woken {
            let future = waiter.state.lock().future.take();
            if let Some(future) = future
                && let Err(e) = resolve(future.bind(py))
            {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// `future.set_result(None)` unless it is done already (cancelled by its task, say).
fn resolve(future: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = future.py();
    if !future.call_method0(intern!(py, "done"))?.is_truthy()? {
        future.call_method1(intern!(py, "set_result"), (py.None(),))?;
    }
    Ok(())
}

/// The bell of `event_loop`, made and registered with the loop on first use.
fn bell_of(event_loop: &Bound<'_, PyAny>) -> PyResult<Arc<Bell>> {
    let py = event_loop.py();
    let attr = intern!(py, "_slim_bindings_bell");
    if let Ok(found) = event_loop.getattr(attr)
        && let Ok(bell) = found.cast::<LoopBell>()
    {
        return Ok(bell.get().bell.clone());
    }
    // Loops without attributes (uvloop's): a map that forgets a loop with the loop.
    static BY_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let by_loop = BY_LOOP
        .get_or_try_init(py, || py.import("weakref")?.getattr("WeakKeyDictionary")?.call0().map(Bound::unbind))?;
    let by_loop = by_loop.bind(py);
    if let Ok(found) = by_loop.get_item(event_loop)
        && let Ok(bell) = found.cast::<LoopBell>()
    {
        return Ok(bell.get().bell.clone());
    }
    let bell =
        Arc::new(Bell::new().map_err(|e| PyRuntimeError::new_err(format!("cannot create a wake-up pipe: {e}")))?);
    let handle = Bound::new(py, LoopBell { bell: bell.clone() })?;
    event_loop.call_method1(intern!(py, "add_reader"), (bell.rx.as_raw_fd(), handle.getattr(intern!(py, "ring"))?))?;
    if event_loop.setattr(attr, &handle).is_err() {
        by_loop.set_item(event_loop, &handle)?;
    }
    Ok(bell)
}

/// One pending poll of a [`SlimAwaitable`]: its waker.
struct Waiter {
    state: Mutex<WaiterState>,
}

#[derive(Default)]
struct WaiterState {
    woken: bool,
    /// Set once the poll returned pending: the loop to ring. A wake before that only sets `woken`,
    /// which the poller checks after setting this (both under the same lock).
    bell: Option<Weak<Bell>>,
    /// The asyncio future the coroutine yielded, resolved on the loop thread by [`LoopBell::ring`].
    future: Option<Py<PyAny>>,
}

impl Wake for Waiter {
    fn wake(self: Arc<Self>) {
        let bell = {
            let mut state = self.state.lock();
            if state.woken {
                return;
            }
            state.woken = true;
            state.bell.as_ref().and_then(Weak::upgrade)
        };
        // No bell: still inside the poll (the poller sees `woken`), or the loop is gone.
        if let Some(bell) = bell {
            bell.push(self);
        }
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.clone().wake();
    }
}

/// A coroutine over a Rust future, for asyncio (`await`, `create_task`, `wait_for`): each step
/// polls the future on the loop's thread inside the tokio runtime; while it is pending the step
/// yields an asyncio future that the loop resolves itself when the Rust side wakes (see the module
/// comment). Throwing into it or closing it (a cancelled task) drops the Rust future, which is how
/// a pending call is cancelled. A panic in the future is a `RuntimeError`, never a crash.
#[pyclass(module = "slim_bindings._slim_bindings", frozen)]
pub(super) struct SlimAwaitable {
    call: Mutex<Call>,
}

/// The Rust future until it finishes, is thrown into or closed, and the waiter of its last poll.
struct Call {
    future: Option<BoxedCall>,
    waiter: Option<Arc<Waiter>>,
}

impl Call {
    /// Ends the last poll's wait: its asyncio future is let go here, on the loop's thread, rather
    /// than wherever the Rust side drops the waker.
    fn forget_waiter(&mut self) {
        if let Some(waiter) = self.waiter.take() {
            drop(waiter.state.lock().future.take());
        }
    }
}

/// `fut` as a [`SlimAwaitable`]; its output becomes the coroutine's result.
pub(super) fn awaitable<F, T>(fut: F) -> SlimAwaitable
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'py> IntoPyObject<'py> + Send + 'static,
{
    let future: BoxedCall = Box::pin(async move {
        let value = fut.await?;
        // Polled on the loop's thread, which holds the interpreter lock: attaching is free.
        Python::attach(|py| value.into_py_any(py))
    });
    SlimAwaitable { call: Mutex::new(Call { future: Some(future), waiter: None }) }
}

impl SlimAwaitable {
    fn step(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut call = self.call.try_lock().ok_or_else(busy)?;
        call.forget_waiter();
        let Some(future) = call.future.as_mut() else {
            return Err(PyRuntimeError::new_err("cannot reuse an already awaited SLIM call"));
        };
        let waiter = Arc::new(Waiter { state: Mutex::new(WaiterState::default()) });
        let waker = Waker::from(waiter.clone());
        let polled =
            entered(|| catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut Context::from_waker(&waker)))));
        let result = match polled {
            Ok(Poll::Pending) => None,
            Ok(Poll::Ready(result)) => Some(result),
            Err(_) => Some(Err(PyRuntimeError::new_err("internal error: a SLIM call panicked"))),
        };
        if let Some(result) = result {
            let finished = call.future.take();
            drop(call);
            entered(|| drop(finished));
            // The value goes in a 1-tuple: StopIteration(*args) would unpack a tuple result.
            return Err(PyStopIteration::new_err((result?,)));
        }
        let event_loop = running_loop(py)?;
        let bell = bell_of(&event_loop)?;
        let asyncio_future = event_loop.call_method0(intern!(py, "create_future"))?;
        {
            let mut state = waiter.state.lock();
            if state.woken {
                // Woken during the poll: poll again on the loop's next round (a bare yield).
                return Ok(py.None());
            }
            state.bell = Some(Arc::downgrade(&bell));
            state.future = Some(asyncio_future.clone().unbind());
        }
        call.waiter = Some(waiter);
        drop(call);
        // What `await future` does: asyncio's tasks accept only futures marked as awaited.
        asyncio_future.setattr(intern!(py, "_asyncio_future_blocking"), true)?;
        Ok(asyncio_future.unbind())
    }

    fn finish(&self) -> PyResult<()> {
        let finished = {
            let mut call = self.call.try_lock().ok_or_else(busy)?;
            call.forget_waiter();
            call.future.take()
        };
        entered(|| drop(finished));
        Ok(())
    }
}

/// Two threads stepping one awaitable at once (never asyncio's doing): refused rather than
/// blocking a thread that holds the interpreter lock.
fn busy() -> PyErr {
    PyRuntimeError::new_err("this SLIM call is being awaited by another thread")
}

fn running_loop(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let get = GET_RUNNING_LOOP
        .get_or_try_init(py, || py.import("asyncio")?.getattr("get_running_loop").map(Bound::unbind))?;
    get.bind(py).call0()
}

#[pymethods]
impl SlimAwaitable {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.step(py)
    }

    fn send(&self, py: Python<'_>, _value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.step(py)
    }

    /// Drops the Rust future (cancelling the call) and raises the exception thrown in.
    /// Accepts `throw(exception)` and the older `throw(type, value, traceback)`.
    #[pyo3(signature = (exc, value = None, _traceback = None))]
    fn throw(
        &self,
        exc: Bound<'_, PyAny>,
        value: Option<Bound<'_, PyAny>>,
        _traceback: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.finish()?;
        let exc = match value {
            Some(value) if value.is_instance_of::<PyBaseException>() => value,
            _ => exc,
        };
        Err(PyErr::from_value(exc))
    }

    /// Drops the Rust future (cancelling the call).
    fn close(&self) -> PyResult<()> {
        self.finish()
    }
}
