//! Argument types extracted at call time, so native coroutines get owned, `Send` values and bad
//! arguments fail at the call, not later inside a task.

use std::sync::Arc;

use pyo3::Borrowed;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyInt, PyString};

use super::convert::to_json;
use super::session_info::PySessionInfo;
use crate::session::{Bytes, MessageInfo};

/// A session given either as a `PySessionInfo` or as a plain int id.
pub(super) struct SessionArg {
    /// The session id.
    pub id: u32,
    /// The received message this info describes (for replies), if any.
    pub reply_to: Option<Arc<MessageInfo>>,
}

impl<'a, 'py> FromPyObject<'a, 'py> for SessionArg {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(info) = obj.cast::<PySessionInfo>() {
            let info = info.get();
            return Ok(SessionArg { id: info.info.session_id, reply_to: info.reply_target() });
        }
        if obj.cast::<PyInt>().is_ok() {
            let id: u32 = obj.extract()?;
            return Ok(SessionArg { id, reply_to: None });
        }
        Err(PyTypeError::new_err("session must be a PySessionInfo or an int session id"))
    }
}

/// A payload: `bytes` (shared, not copied), `bytearray`, `memoryview` or a sequence of ints
/// (copied once; not `str`).
pub(super) struct Blob(pub Bytes);

/// A Python `bytes` object lent to the core as a payload. `bytes` objects are immutable and the
/// strong reference keeps the buffer alive, so the core reads it without the interpreter; the
/// reference is released (deferred to the next time Python is attached) when the payload is dropped.
struct SharedPyBytes {
    _owner: Py<PyBytes>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the pointed-to buffer belongs to an immutable `bytes` object that `_owner` keeps alive;
// it is only ever read, from any thread.
#[allow(unsafe_code)]
unsafe impl Send for SharedPyBytes {}

impl AsRef<[u8]> for SharedPyBytes {
    #[allow(unsafe_code)]
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see the `Send` impl: valid for `len` bytes while `_owner` lives (as long as self).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// Below this size a copy is cheaper than sharing the Python object.
const SHARE_FROM: usize = 4096;

impl<'a, 'py> FromPyObject<'a, 'py> for Blob {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(b) = obj.cast::<PyBytes>() {
            let data = b.as_bytes();
            if data.len() < SHARE_FROM {
                return Ok(Blob(Bytes::copy_from_slice(data)));
            }
            let (ptr, len) = (data.as_ptr(), data.len());
            return Ok(Blob(Bytes::from_owner(SharedPyBytes { _owner: b.to_owned().unbind(), ptr, len })));
        }
        if let Ok(b) = obj.cast::<PyByteArray>() {
            return Ok(Blob(b.to_vec().into()));
        }
        if obj.cast::<PyString>().is_ok() {
            return Err(PyTypeError::new_err("payload must be bytes, not str (encode it first)"));
        }
        let bytes_type = obj.py().get_type::<PyBytes>();
        if let Ok(b) = bytes_type.call1((obj,))
            && let Ok(b) = b.cast::<PyBytes>()
        {
            return Ok(Blob(Bytes::copy_from_slice(b.as_bytes())));
        }
        Err(PyTypeError::new_err("payload must be bytes, bytearray or a sequence of ints in 0..256"))
    }
}

/// A configuration dict, converted to JSON at call time (errors name the key).
pub(super) struct ConfigDict(pub serde_json::Value);

impl<'a, 'py> FromPyObject<'a, 'py> for ConfigDict {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if obj.cast::<PyDict>().is_err() {
            return Err(PyTypeError::new_err("configuration must be a dict"));
        }
        Ok(ConfigDict(to_json(&obj)?))
    }
}

/// A time bound given as a `datetime.timedelta` or a number of seconds (`int` or `float`, > 0).
pub(super) struct TimeBound(pub std::time::Duration);

impl<'a, 'py> FromPyObject<'a, 'py> for TimeBound {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let bound = match obj.extract::<std::time::Duration>() {
            Ok(d) => d,
            Err(_) => {
                let secs: f64 = obj
                    .extract()
                    .map_err(|_| PyTypeError::new_err("timeout must be a datetime.timedelta or a number of seconds"))?;
                if !secs.is_finite() || secs <= 0.0 {
                    return Err(pyo3::exceptions::PyValueError::new_err("timeout must be greater than zero"));
                }
                std::time::Duration::try_from_secs_f64(secs)
                    .map_err(|_| pyo3::exceptions::PyValueError::new_err("timeout out of range"))?
            }
        };
        if bound.is_zero() {
            return Err(pyo3::exceptions::PyValueError::new_err("timeout must be greater than zero"));
        }
        Ok(TimeBound(bound))
    }
}
