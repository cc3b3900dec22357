//! `PyService` (one app with its own embedded node) and the module functions that act on it.
//!
//! Calls that do network I/O run on the tokio runtime ([`spawned`]); session calls are polled in
//! place on the loop's thread: the hot ones (`publish`, `publish_many`, the `receive` family) as
//! [`SlimAwaitable`]s, whose wake-up never takes the interpreter lock on a tokio thread
//! (`wake.rs`), the others as pyo3 native coroutines ([`in_runtime`]). Each first tries the app's
//! queues without waiting at all.

use std::collections::HashMap;
use std::future::Future;
use std::mem::ManuallyDrop;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use super::args::{Blob, ConfigDict, SessionArg, TimeBound};
use super::errors::{config_error, to_py, to_py_with};
use super::identity::{PyIdentityProvider, PyIdentityVerifier};
use super::name::PyName;
use super::runtime::{entered, handle, in_runtime, server_spawned, spawned};
use super::session_config::PySessionConfiguration;
use super::session_info::PySessionInfo;
use super::wake::{SlimAwaitable, awaitable};
use crate::app::App;
use crate::node::{ClientConfig, ServerConfig};
use crate::session::{Bytes, PublishRequest, RawMessage, SessionConfig};

/// One local app: a name with a random instance id, an identity, sessions, and its own node.
#[pyclass(name = "PyService", module = "slim_bindings._slim_bindings", frozen)]
pub struct PyService {
    pub(crate) app: ManuallyDrop<App>,
}

impl Drop for PyService {
    fn drop(&mut self) {
        // The last handle stops the app's tasks and node, which needs the runtime context; the
        // Python thread that collects this object has none of its own.
        let _guard = handle().ok().map(|h| h.enter());
        // SAFETY: `app` is never used again; this is the only place it is dropped.
        #[allow(unsafe_code)]
        unsafe {
            ManuallyDrop::drop(&mut self.app)
        };
    }
}

#[pymethods]
impl PyService {
    /// The random instance id of this app.
    #[getter]
    fn id(&self) -> u64 {
        self.app.id()
    }

    /// This app's name, with `id` set.
    #[getter]
    fn name(&self) -> PyName {
        PyName::from_name(self.app.name())
    }

    /// Names subscribed on this app's node, over all its connections (diagnostics and tests).
    fn subscribed_names(&self) -> Vec<PyName> {
        let node = self.app.node();
        node.connection_ids().into_iter().flat_map(|conn| node.subscriptions_of(conn)).map(PyName::from_name).collect()
    }

    /// Counters of this app's node (messages routed, drops by reason, connections) and of its
    /// session layer (every drop, loss report and rejection; docs/reliability.md).
    fn node_stats(&self) -> HashMap<&'static str, u64> {
        let node = self.app.node();
        let mut out = HashMap::from(node.stats().fields());
        out.extend(node.mesh_stats().drops());
        out.extend(node.attached_counters());
        out
    }

    fn __repr__(&self) -> String {
        format!("PyService(name={}, id={})", self.app.name().short(), self.app.id())
    }
}

fn app_of(svc: &Py<PyService>) -> App {
    (*svc.get().app).clone()
}

/// A received message, handed to Python as `(PySessionInfo, bytes)` (the payload copied once).
///
/// Neither the tuple nor the info is tracked by Python's cyclic garbage collector: neither can be
/// part of a cycle (the info holds no Python object, the tuple holds the info and a `bytes`), and a
/// batch of thousands of them would otherwise be walked by every young-generation collection the
/// batch's own allocations set off (CPython's collector untracks such a tuple itself, at its
/// first collection; benches/README.md).
pub(super) struct Received(RawMessage);

impl<'py> IntoPyObject<'py> for Received {
    type Target = PyTuple;
    type Output = Bound<'py, PyTuple>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Self::Output> {
        let (info, blob) = self.0;
        let info = Bound::new(py, PySessionInfo::from_message(info))?.into_any();
        untrack(&info);
        let tuple = PyTuple::new(py, [info, PyBytes::new(py, &blob).into_any()])?;
        untrack(tuple.as_any());
        Ok(tuple)
    }
}

/// Takes `obj` (of a type the collector tracks) out of the cyclic garbage collector's lists.
fn untrack(obj: &Bound<'_, PyAny>) {
    // SAFETY: `obj` is a live object of a garbage-collected type (a pyclass or a tuple), and the
    // interpreter is attached; untracking an object is always allowed (its deallocation checks).
    #[allow(unsafe_code)]
    unsafe {
        pyo3::ffi::PyObject_GC_UnTrack(obj.as_ptr().cast())
    }
}

fn received(r: RawMessage) -> Received {
    Received(r)
}

/// Creates an app named `name` with its own node. Resolves to a `PyService`.
#[pyfunction]
pub(super) async fn create_pyservice(
    name: PyName,
    provider: PyIdentityProvider,
    verifier: PyIdentityVerifier,
) -> PyResult<PyService> {
    let provider = provider.to_provider()?;
    let verifier = verifier.to_verifier()?;
    let app = spawned(async move { App::new(name.inner, provider, verifier).await.map_err(to_py) }).await?;
    Ok(PyService { app: ManuallyDrop::new(app) })
}

/// Starts a server on `config["endpoint"]` (`host:port`, port 0 picks one); returns once listening.
#[pyfunction]
pub(super) async fn run_server(svc: Py<PyService>, config: ConfigDict) -> PyResult<()> {
    let cfg = ServerConfig::from_json(config.0).map_err(|e| config_error(e.to_string()))?;
    let app = app_of(&svc);
    server_spawned(async move { app.run_server(cfg).await.map(|_| ()).map_err(to_py) }).await
}

/// Like `run_server`, but resolves to the bound address `"host:port"` (useful with port 0).
#[pyfunction]
pub(super) async fn run_server_bound(svc: Py<PyService>, config: ConfigDict) -> PyResult<String> {
    let cfg = ServerConfig::from_json(config.0).map_err(|e| config_error(e.to_string()))?;
    let app = app_of(&svc);
    server_spawned(async move { app.run_server(cfg).await.map(|a| a.to_string()).map_err(to_py) }).await
}

/// Stops the server started with exactly this endpoint string.
#[pyfunction]
pub(super) async fn stop_server(svc: Py<PyService>, endpoint: String) -> PyResult<()> {
    let app = app_of(&svc);
    server_spawned(async move { app.stop_server(&endpoint).await.map_err(to_py) }).await
}

/// Connects to a remote node (`config["endpoint"]` with a scheme). Resolves to the connection id.
#[pyfunction]
pub(super) async fn connect(svc: Py<PyService>, config: ConfigDict) -> PyResult<u64> {
    let cfg = ClientConfig::from_json(config.0).map_err(|e| config_error(e.to_string()))?;
    let app = app_of(&svc);
    spawned(async move { app.connect(cfg).await.map_err(to_py) }).await
}

/// Closes a connection made by `connect`.
#[pyfunction]
pub(super) async fn disconnect(svc: Py<PyService>, conn: u64) -> PyResult<()> {
    let app = app_of(&svc);
    spawned(async move { app.disconnect(conn).await.map_err(to_py) }).await
}

/// Asks the node behind `conn` to deliver `name` to this app.
#[pyfunction]
pub(super) async fn subscribe(svc: Py<PyService>, conn: u64, name: PyName) -> PyResult<()> {
    let app = app_of(&svc);
    in_runtime(async move { app.subscribe(&name.inner, Some(conn)).await.map_err(to_py) }).await
}

/// Withdraws a subscription made with `subscribe`.
#[pyfunction]
pub(super) async fn unsubscribe(svc: Py<PyService>, conn: u64, name: PyName) -> PyResult<()> {
    let app = app_of(&svc);
    in_runtime(async move { app.unsubscribe(&name.inner, Some(conn)).await.map_err(to_py) }).await
}

/// Routes traffic for `name` out through `conn`.
#[pyfunction]
pub(super) async fn set_route(svc: Py<PyService>, conn: u64, name: PyName) -> PyResult<()> {
    let app = app_of(&svc);
    in_runtime(async move { app.set_route(&name.inner, conn).await.map_err(to_py) }).await
}

/// Removes a route set with `set_route`.
#[pyfunction]
pub(super) async fn remove_route(svc: Py<PyService>, conn: u64, name: PyName) -> PyResult<()> {
    let app = app_of(&svc);
    in_runtime(async move { app.remove_route(&name.inner, conn).await.map_err(to_py) }).await
}

/// Creates a session. Resolves to a `PySessionInfo` with only `id` set.
///
/// Bounds: a point-to-point session holds at most 16 MiB for sending (publishes waiting plus
/// reliable messages not yet acknowledged); its receive queue holds 16,384 messages or 4 MiB of
/// payload, whichever fills first (see `publish` and `receive_session` for what happens when full).
#[pyfunction]
pub(super) async fn create_session(svc: Py<PyService>, config: PySessionConfiguration) -> PyResult<PySessionInfo> {
    let app = app_of(&svc);
    let cfg = SessionConfig::from(&config);
    let id = in_runtime(async move { app.create_session(cfg).await.map_err(to_py) }).await?;
    Ok(PySessionInfo::for_session(id))
}

/// Deletes a session (an id or a `PySessionInfo`) once what was published on it has left, bounded
/// by 2 s (`session::layer::DELETE_LINGER`; docs/reliability.md, "Deleting a session").
#[pyfunction]
pub(super) async fn delete_session(svc: Py<PyService>, session: SessionArg) -> PyResult<()> {
    let app = app_of(&svc);
    in_runtime(async move { app.delete_session(session.id).await.map_err(to_py) }).await
}

/// The configuration of a session.
#[pyfunction]
pub(super) async fn get_session_config(svc: Py<PyService>, session: SessionArg) -> PyResult<PySessionConfiguration> {
    entered(|| app_of(&svc).get_session_config(session.id)).map(PySessionConfiguration::from).map_err(to_py)
}

/// Changes the configuration of a session (same family: point-to-point or multicast).
#[pyfunction]
pub(super) async fn set_session_config(
    svc: Py<PyService>,
    session: SessionArg,
    config: PySessionConfiguration,
) -> PyResult<()> {
    entered(|| app_of(&svc).set_session_config(session.id, SessionConfig::from(&config))).map_err(to_py)
}

/// Sets the configuration used for sessions created on reception.
#[pyfunction]
pub(super) async fn set_default_session_config(svc: Py<PyService>, config: PySessionConfiguration) -> PyResult<()> {
    entered(|| app_of(&svc).set_default_session_config(SessionConfig::from(&config))).map_err(to_py)
}

/// Publishes `blob` on a session, to `name`, or (name=None) back to the sender of `session_info`.
///
/// Point to point: the payload counts against the session's 16 MiB send buffer until it is sent
/// (unreliable) or acknowledged or timed out (reliable). When the buffer is full the call waits
/// for room, up to 5 s or `timeout * (max_retries + 1)` when that is longer, then raises
/// `SendBufferFullError` (a `TimeoutError`; the message was not sent). Nothing is dropped.
/// A payload plus metadata over `wire::MAX_PAYLOAD_SIZE` raises `MessageTooLargeError` at once.
#[pyfunction]
#[pyo3(signature = (svc, session_info, fanout, blob, name = None, payload_type = None, metadata = None))]
#[allow(clippy::too_many_arguments)]
pub(super) fn publish(
    svc: Py<PyService>,
    session_info: SessionArg,
    fanout: u32,
    blob: Blob,
    name: Option<PyName>,
    payload_type: Option<String>,
    metadata: Option<HashMap<String, String>>,
) -> SlimAwaitable {
    let app = app_of(&svc);
    let req = PublishRequest {
        dest: name.map(|n| n.inner),
        reply_to: session_info.reply_to,
        blob: blob.0,
        payload_type,
        metadata,
        fanout,
    };
    let id = session_info.id;
    awaitable(async move {
        // Handed over at once when there is room: the nested publish futures are built only when
        // the call must wait (moving them was a quarter of a streaming sender's CPU,
        // benches/README.md).
        let Some(req) = app.try_publish(id, req).map_err(to_py)? else { return Ok(()) };
        Box::pin(app.publish(id, req)).await.map_err(to_py)
    })
}

/// Publishes every payload of `blobs`, in order, as `publish` would one by one, in one call: the
/// messages there is room for are handed over without awaiting; the call waits (as `publish`
/// does) only when the session's send buffer or the node's queue is full. On an error, the
/// messages before the failing one were sent and the rest were not; the exception's `sent`
/// attribute says how many were sent.
#[pyfunction]
#[pyo3(signature = (svc, session_info, fanout, blobs, name = None, payload_type = None, metadata = None))]
#[allow(clippy::too_many_arguments)]
pub(super) fn publish_many(
    svc: Py<PyService>,
    session_info: SessionArg,
    fanout: u32,
    blobs: Vec<Blob>,
    name: Option<PyName>,
    payload_type: Option<String>,
    metadata: Option<HashMap<String, String>>,
) -> SlimAwaitable {
    let app = app_of(&svc);
    let id = session_info.id;
    let template = PublishRequest {
        dest: name.map(|n| n.inner),
        reply_to: session_info.reply_to,
        blob: Bytes::new(),
        payload_type,
        metadata,
        fanout,
    };
    let mut blobs = blobs.into_iter().map(|b| b.0);
    // Hands over every message there is room for, what is common to them done once per call
    // (`SessionLayer::try_publish_many`); returns the first that found none.
    let mut hand_over = move |app: &App, sent: &mut usize| -> PyResult<Option<PublishRequest>> {
        app.try_publish_many(id, &template, &mut blobs, sent).map_err(|e| with_sent(e, *sent))
    };
    awaitable(async move {
        let mut sent = 0usize;
        let mut next = hand_over(&app, &mut sent)?;
        while let Some(req) = next.take() {
            Box::pin(app.publish(id, req)).await.map_err(|e| with_sent(e, sent))?;
            sent += 1;
            next = hand_over(&app, &mut sent)?;
        }
        Ok(())
    })
}

/// The Python exception for `e`, with `sent` (messages of the batch already handed over) set.
fn with_sent(e: crate::error::SlimError, sent: usize) -> PyErr {
    Python::attach(|py| {
        let err = to_py_with(py, e);
        let _ = err.value(py).setattr("sent", sent);
        err
    })
}

/// Invites `name` into a multicast session (moderator only). Resolves once the request is sent;
/// with `wait=True`, once the member has joined (and, with MLS, can decrypt). `timeout` (a
/// `timedelta` or seconds; only with `wait=True`) bounds that wait: past it, `InviteError`.
#[pyfunction]
#[pyo3(signature = (svc, session_info, name, wait = false, timeout = None))]
pub(super) async fn invite(
    svc: Py<PyService>,
    session_info: SessionArg,
    name: PyName,
    wait: bool,
    timeout: Option<TimeBound>,
) -> PyResult<()> {
    if timeout.is_some() && !wait {
        return Err(pyo3::exceptions::PyValueError::new_err("timeout bounds the wait: it needs wait=True"));
    }
    let app = app_of(&svc);
    spawned(async move {
        let bound = timeout.map(|b| b.0);
        let handle = app.invite_within(session_info.id, &name.inner, bound).await.map_err(to_py)?;
        if wait {
            handle.joined_within(bound).await.map_err(to_py)?;
        }
        Ok(())
    })
    .await
}

/// The members of a multicast session: on the moderator, itself and every member it holds; on a
/// member, the list the moderator's last heartbeat carried (docs/liveness.md).
#[pyfunction]
pub(super) async fn participants(svc: Py<PyService>, session_info: SessionArg) -> PyResult<Vec<PyName>> {
    let app = app_of(&svc);
    in_runtime(async move {
        let names = app.participants(session_info.id).await.map_err(to_py)?;
        Ok(names.into_iter().map(PyName::from_name).collect())
    })
    .await
}

/// Removes `name` from a multicast session (moderator only).
#[pyfunction]
pub(super) async fn remove(svc: Py<PyService>, session_info: SessionArg, name: PyName) -> PyResult<()> {
    let app = app_of(&svc);
    in_runtime(async move { app.remove(session_info.id, &name.inner).await.map_err(to_py) }).await
}

/// The next message of any session, in arrival order: `(PySessionInfo, bytes)`.
#[pyfunction]
pub(super) fn receive(svc: Py<PyService>) -> SlimAwaitable {
    let app = app_of(&svc);
    awaitable(async move {
        if let Some(ready) = app.try_recv_any_raw() {
            return ready.map(received).map_err(to_py);
        }
        app.recv_any_raw().await.map(received).map_err(to_py)
    })
}

/// The first message of the next session this app did not create: `(PySessionInfo, bytes)`.
/// That message is also the first item of the session's own queue. `timeout`: see [`within`].
#[pyfunction]
#[pyo3(signature = (svc, timeout = None))]
pub(super) fn receive_new_session(svc: Py<PyService>, timeout: Option<TimeBound>) -> SlimAwaitable {
    let app = app_of(&svc);
    awaitable(async move {
        if let Some(ready) = app.try_recv_new_session_raw() {
            return Ok(received(ready));
        }
        within(timeout, async { app.recv_new_session_raw().await.map(received).map_err(to_py) }).await
    })
}

/// The next message of one session; errors for that session (timeouts, lost messages, no
/// route) are raised here as typed exceptions. `timeout`: see [`within`].
#[pyfunction]
#[pyo3(signature = (svc, session, timeout = None))]
pub(super) fn receive_session(svc: Py<PyService>, session: SessionArg, timeout: Option<TimeBound>) -> SlimAwaitable {
    let app = app_of(&svc);
    awaitable(async move {
        if let Some(ready) = app.try_recv_session_raw(session.id) {
            return ready.map(received).map_err(to_py);
        }
        within(timeout, async { app.recv_session_raw(session.id).await.map(received).map_err(to_py) }).await
    })
}

/// A receive's wait bounded by `timeout` (none: unbounded), on the runtime's timer: no asyncio
/// task or timer handle per call, as `asyncio.wait_for` would add. Past it, Python's
/// `TimeoutError`; nothing was taken from a queue (a receive gives up a message only by
/// returning it, docs/reliability.md).
async fn within<T>(timeout: Option<TimeBound>, receive: impl Future<Output = PyResult<T>>) -> PyResult<T> {
    let Some(TimeBound(bound)) = timeout else { return receive.await };
    match tokio::time::timeout(bound, receive).await {
        Ok(out) => out,
        Err(_) => Err(pyo3::exceptions::PyTimeoutError::new_err(format!(
            "nothing received within {:.3} s",
            bound.as_secs_f64()
        ))),
    }
}

/// Messages per `receive_session_many` call unless the caller asks for another limit.
const RECEIVE_MANY_DEFAULT: usize = 4096;

/// Every message of one session already waiting (at least one: waits for the first), up to
/// `max_messages`, as a list of `(PySessionInfo, bytes)`. An error for the session is raised in
/// its place in the stream: after the messages queued before it were returned. `timeout` bounds
/// the wait for the first (see [`within`]).
#[pyfunction]
#[pyo3(signature = (svc, session, max_messages = RECEIVE_MANY_DEFAULT, timeout = None))]
pub(super) fn receive_session_many(
    svc: Py<PyService>,
    session: SessionArg,
    max_messages: usize,
    timeout: Option<TimeBound>,
) -> SlimAwaitable {
    let app = app_of(&svc);
    let max = max_messages.max(1);
    awaitable(async move {
        let mut batch = Vec::new();
        app.try_recv_session_batch_raw(session.id, &mut batch, max).map_err(to_py)?;
        if batch.is_empty() {
            let first = within(timeout, async { app.recv_session_raw(session.id).await.map_err(to_py) }).await?;
            batch.push(first);
            // An error queued behind the first message stays for the next call.
            let _ = app.try_recv_session_batch_raw(session.id, &mut batch, max - 1);
        }
        Ok(batch.into_iter().map(received).collect::<Vec<_>>())
    })
}

/// A message of one session if one is already queued, else None (never waits).
#[pyfunction]
pub(super) fn try_receive_session(svc: Py<PyService>, session: SessionArg) -> PyResult<Option<Received>> {
    match entered(|| app_of(&svc).try_recv_session_raw(session.id)) {
        None => Ok(None),
        Some(r) => r.map(|r| Some(received(r))).map_err(to_py),
    }
}
