//! `PySessionInfo`: a session id plus what is known about the last message received on it.

use std::collections::HashMap;
use std::sync::Arc;

use pyo3::prelude::*;

use super::name::PyName;
use crate::session::MessageInfo;

/// A session handle: `id` always, message fields when it came from `receive`.
#[pyclass(name = "PySessionInfo", module = "slim_bindings._slim_bindings", frozen, from_py_object)]
#[derive(Clone)]
pub struct PySessionInfo {
    pub(crate) info: Arc<MessageInfo>,
    /// False for infos built from an id alone (no message to reply to).
    pub(crate) from_message: bool,
}

impl PySessionInfo {
    /// Info for a received message.
    pub fn from_message(info: Arc<MessageInfo>) -> Self {
        Self { info, from_message: true }
    }

    /// Info holding only a session id.
    pub fn for_session(id: u32) -> Self {
        Self { info: Arc::new(MessageInfo::for_session(id)), from_message: false }
    }

    /// The message to reply to, if this info came from one (shared, not copied).
    pub fn reply_target(&self) -> Option<Arc<MessageInfo>> {
        self.from_message.then(|| self.info.clone())
    }
}

#[pymethods]
impl PySessionInfo {
    /// An info with only the session id set.
    #[new]
    fn new(session_id: u32) -> Self {
        Self::for_session(session_id)
    }

    /// The session id.
    #[getter]
    fn id(&self) -> u32 {
        self.info.session_id
    }

    /// The sender of the message, with its instance id.
    #[getter]
    fn source_name(&self) -> PyName {
        PyName::from_name(self.info.source.clone())
    }

    /// The name the message was addressed to.
    #[getter]
    fn destination_name(&self) -> PyName {
        PyName::from_name(self.info.destination.clone())
    }

    /// The message's id within the session (per producer in a group): what a
    /// `MessageLostError.message_id` refers to. 0 for an info built from an id alone.
    #[getter]
    fn message_id(&self) -> u32 {
        self.info.message_id
    }

    /// The payload content type (`"msg"` unless the sender chose another).
    #[getter]
    fn payload_type(&self) -> &str {
        &self.info.payload_type
    }

    /// The sender's metadata (user keys only).
    #[getter]
    fn metadata(&self) -> HashMap<String, String> {
        self.info.metadata.clone()
    }

    fn __repr__(&self) -> String {
        format!(
            "PySessionInfo(id={}, source_name={}, destination_name={}, payload_type={:?})",
            self.info.session_id,
            self.info.source.short(),
            self.info.destination.short(),
            self.info.payload_type
        )
    }
}
