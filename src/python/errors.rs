//! The one place where core errors become Python exceptions.
//!
//! The exception classes live in `slim_bindings/errors.py` (so they can derive from the right
//! builtins and carry fields); they are looked up once and cached. If that module cannot be
//! imported (the native module used on its own), a `RuntimeError` carries the same message.

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;

use crate::error::SlimError;

static ERRORS_MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

fn errors_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    ERRORS_MODULE.get_or_try_init(py, || py.import("slim_bindings.errors").map(Bound::unbind)).map(|m| m.bind(py))
}

/// Instantiates `slim_bindings.errors.<class>(*args)` as a `PyErr`.
fn raise<'py, A>(py: Python<'py>, class: &str, args: A, fallback: &str) -> PyErr
where
    A: pyo3::call::PyCallArgs<'py>,
{
    let made = errors_module(py).and_then(|m| m.getattr(class)).and_then(|cls| cls.call1(args));
    match made {
        Ok(exc) => PyErr::from_value(exc),
        Err(_) => PyRuntimeError::new_err(fallback.to_string()),
    }
}

/// Maps a core error to its Python exception.
pub fn to_py(e: SlimError) -> PyErr {
    Python::attach(|py| to_py_with(py, e))
}

/// [`to_py`] when the caller is already attached.
pub fn to_py_with(py: Python<'_>, e: SlimError) -> PyErr {
    let msg = e.to_string();
    match e {
        SlimError::SessionNotFound(id) => raise(py, "SessionNotFoundError", (msg.as_str(), id), &msg),
        SlimError::SessionClosed | SlimError::Closed => raise(py, "SessionClosedError", (msg.as_str(),), &msg),
        SlimError::Timeout { session_id, message_id } => raise(py, "SLIMTimeoutError", (message_id, session_id), &msg),
        SlimError::MessageLost { session_id, message_id, producer } => {
            let source = producer.map(super::name::PyName::from_name);
            raise(py, "MessageLostError", (msg.as_str(), session_id, message_id, source), &msg)
        }
        SlimError::NoRoute(_) => raise(py, "NoRouteError", (msg.as_str(),), &msg),
        SlimError::Connection(_) => raise(py, "SlimConnectionError", (msg.as_str(),), &msg),
        SlimError::Config(_) => raise(py, "ConfigurationError", (msg.as_str(),), &msg),
        SlimError::Auth(_) => raise(py, "AuthenticationError", (msg.as_str(),), &msg),
        SlimError::Mls(_) => raise(py, "MlsError", (msg.as_str(),), &msg),
        SlimError::Invite(_) => raise(py, "InviteError", (msg.as_str(),), &msg),
        SlimError::SendBufferFull { session_id, .. } => {
            raise(py, "SendBufferFullError", (msg.as_str(), session_id), &msg)
        }
        #[allow(unreachable_patterns)]
        _ => raise(py, "SlimError", (msg.as_str(),), &msg),
    }
}

/// A `ConfigurationError` (a `ValueError`) for a bad argument detected in this layer.
pub fn config_error(msg: impl Into<String>) -> PyErr {
    let msg = msg.into();
    Python::attach(|py| {
        let made =
            errors_module(py).and_then(|m| m.getattr("ConfigurationError")).and_then(|c| c.call1((msg.as_str(),)));
        match made {
            Ok(exc) => PyErr::from_value(exc),
            Err(_) => PyValueError::new_err(msg),
        }
    })
}
