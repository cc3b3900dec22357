//! The one place where core errors become Python exceptions.
//!
//! The exception classes live in `slim_bindings/errors.py` (so they can derive from the right
//! builtins and carry fields); they are looked up once per process. Every [`SlimError`] variant is
//! matched explicitly (a new variant does not compile until it is given a class), and
//! `tests/python/test_errors.py` checks every variant's class and fields through
//! [`error_samples`].
//!
//! Should an exception class not accept what this module passes it (a bug that test catches),
//! the error still arrives typed: a plain `slim_bindings.SlimError` with the same message, whose
//! `__cause__` says what went wrong. Only when `slim_bindings.errors` cannot be imported at all
//! (the native module used on its own) is it a `RuntimeError` (or a `ValueError` for bad input).

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::error::SlimError;

/// The classes of `slim_bindings.errors`, resolved once.
struct Classes {
    base: Py<PyAny>,
    session_not_found: Py<PyAny>,
    session_closed: Py<PyAny>,
    moderator_lost: Py<PyAny>,
    peer_closed: Py<PyAny>,
    peer_lost: Py<PyAny>,
    timeout: Py<PyAny>,
    message_lost: Py<PyAny>,
    no_route: Py<PyAny>,
    connection: Py<PyAny>,
    configuration: Py<PyAny>,
    authentication: Py<PyAny>,
    mls: Py<PyAny>,
    invite: Py<PyAny>,
    send_buffer_full: Py<PyAny>,
    message_too_large: Py<PyAny>,
}

static CLASSES: PyOnceLock<Classes> = PyOnceLock::new();

fn classes(py: Python<'_>) -> PyResult<&Classes> {
    CLASSES.get_or_try_init(py, || {
        let m = py.import("slim_bindings.errors")?;
        let get = |name: &str| m.getattr(name).map(Bound::unbind);
        Ok::<_, PyErr>(Classes {
            base: get("SlimError")?,
            session_not_found: get("SessionNotFoundError")?,
            session_closed: get("SessionClosedError")?,
            moderator_lost: get("ModeratorLostError")?,
            peer_closed: get("PeerClosedError")?,
            peer_lost: get("PeerLostError")?,
            timeout: get("SLIMTimeoutError")?,
            message_lost: get("MessageLostError")?,
            no_route: get("NoRouteError")?,
            connection: get("SlimConnectionError")?,
            configuration: get("ConfigurationError")?,
            authentication: get("AuthenticationError")?,
            mls: get("MlsError")?,
            invite: get("InviteError")?,
            send_buffer_full: get("SendBufferFullError")?,
            message_too_large: get("MessageTooLargeError")?,
        })
    })
}

/// Maps a core error to its Python exception.
pub(super) fn to_py(e: SlimError) -> PyErr {
    Python::attach(|py| to_py_with(py, e))
}

/// [`to_py`] when the caller is already attached.
pub(super) fn to_py_with(py: Python<'_>, e: SlimError) -> PyErr {
    let msg = e.to_string();
    let made = classes(py).and_then(|c| {
        let text = msg.as_str();
        match e {
            SlimError::SessionNotFound(id) => c.session_not_found.call1(py, (text, id)),
            SlimError::SessionClosed => c.session_closed.call1(py, (text,)),
            // The whole app is gone: every session of it is closed too.
            SlimError::Closed => c.session_closed.call1(py, (text,)),
            SlimError::ModeratorLost { session_id, moderator, silent_ms, undelivered } => {
                let moderator = super::name::PyName::from_name(moderator);
                c.moderator_lost.call1(py, (text, session_id, moderator, silent_ms, undelivered))
            }
            SlimError::PeerClosed { session_id, peer, undelivered } => {
                let peer = super::name::PyName::from_name(peer);
                c.peer_closed.call1(py, (text, session_id, peer, undelivered))
            }
            SlimError::PeerLost { session_id, peer, silent_ms, undelivered } => {
                let peer = super::name::PyName::from_name(peer);
                c.peer_lost.call1(py, (text, session_id, peer, silent_ms, undelivered))
            }
            SlimError::Timeout { session_id, message_id } => c.timeout.call1(py, (message_id, session_id)),
            SlimError::MessageLost { session_id, message_id, producer } => {
                let source = producer.map(super::name::PyName::from_name);
                c.message_lost.call1(py, (text, session_id, message_id, source))
            }
            SlimError::NoRoute(_) => c.no_route.call1(py, (text,)),
            SlimError::Connection(_) => c.connection.call1(py, (text,)),
            SlimError::Config(_) => c.configuration.call1(py, (text,)),
            SlimError::Auth(_) => c.authentication.call1(py, (text,)),
            SlimError::Mls(_) => c.mls.call1(py, (text,)),
            SlimError::Invite(_) => c.invite.call1(py, (text,)),
            SlimError::SendBufferFull { session_id, .. } => c.send_buffer_full.call1(py, (text, session_id)),
            SlimError::MessageTooLarge { size, limit } => c.message_too_large.call1(py, (text, size, limit)),
            // A bug or an unexpected state: the root class, nothing more specific is true.
            SlimError::Internal(_) => c.base.call1(py, (text,)),
        }
    });
    match made {
        Ok(exc) => PyErr::from_value(exc.into_bound(py)),
        Err(failure) => untyped(py, &msg, failure, |m| PyRuntimeError::new_err(m.to_string())),
    }
}

/// The error for `msg` when its class could not be instantiated (`failure` says why): the root
/// `SlimError` if that works, else `last_resort(msg)`; `failure` is its `__cause__` either way.
fn untyped(py: Python<'_>, msg: &str, failure: PyErr, last_resort: impl FnOnce(&str) -> PyErr) -> PyErr {
    let err = match classes(py).and_then(|c| c.base.call1(py, (msg,))) {
        Ok(exc) => PyErr::from_value(exc.into_bound(py)),
        Err(_) => last_resort(msg),
    };
    err.set_cause(py, Some(failure));
    err
}

/// A `ConfigurationError` (a `ValueError`) for a bad argument detected in this layer.
pub(super) fn config_error(msg: impl Into<String>) -> PyErr {
    let msg = msg.into();
    Python::attach(|py| match classes(py).and_then(|c| c.configuration.call1(py, (msg.as_str(),))) {
        Ok(exc) => PyErr::from_value(exc.into_bound(py)),
        Err(failure) => untyped(py, &msg, failure, |m| PyValueError::new_err(m.to_string())),
    })
}

/// One exception per [`SlimError`] variant, as `(variant name, exception)`: what
/// `tests/python/test_errors.py` checks the mapping against. Not part of the API.
#[pyfunction(name = "_error_samples")]
pub(super) fn error_samples(py: Python<'_>) -> Vec<(&'static str, Py<PyAny>)> {
    SlimError::samples()
        .into_iter()
        .map(|e| {
            let variant = e.variant_name();
            (variant, to_py_with(py, e).into_value(py).into_any())
        })
        .collect()
}
