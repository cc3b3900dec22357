//! `PyName`: a SLIM name (three hashed string components plus an instance id).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use pyo3::IntoPyObjectExt;
use pyo3::basic::CompareOp;
use pyo3::prelude::*;

use crate::wire::Name;

/// A SLIM name as seen from Python.
#[pyclass(name = "PyName", module = "slim_bindings._slim_bindings", from_py_object)]
#[derive(Clone, Debug)]
pub struct PyName {
    pub(crate) inner: Name,
}

impl PyName {
    /// Wraps a core name.
    pub fn from_name(inner: Name) -> Self {
        Self { inner }
    }

    /// The core name.
    pub fn name(&self) -> &Name {
        &self.inner
    }
}

/// Same four integer components (what routing compares).
impl PartialEq for PyName {
    fn eq(&self, other: &Self) -> bool {
        self.inner.components() == other.inner.components()
    }
}

impl From<Name> for PyName {
    fn from(inner: Name) -> Self {
        Self { inner }
    }
}

#[pymethods]
impl PyName {
    /// Hashes the three strings; `id=None` leaves the id unset (u64::MAX).
    #[new]
    #[pyo3(signature = (component0, component1, component2, id = None))]
    fn new(component0: &str, component1: &str, component2: &str, id: Option<u64>) -> Self {
        Self { inner: Name::new(component0, component1, component2, id) }
    }

    /// The instance id (u64::MAX when unset).
    #[getter]
    fn get_id(&self) -> u64 {
        self.inner.id()
    }

    /// Changes the instance id in place.
    #[setter]
    fn set_id(&mut self, id: u64) {
        self.inner.set_id(id);
    }

    /// All four integer components: three hashes and the id.
    fn components(&self) -> Vec<u64> {
        self.inner.components().to_vec()
    }

    /// The three original strings (empty strings for names that came off the wire).
    fn components_strings(&self) -> Vec<String> {
        self.inner.strings_or_empty().to_vec()
    }

    /// True when the three hashed components match, whatever the ids.
    fn equal_without_id(&self, other: PyRef<'_, PyName>) -> bool {
        self.inner.equal_without_id(&other.inner)
    }

    /// Equality over all four components (the id matters).
    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let Ok(other) = other.cast::<PyName>() else {
            return Ok(py.NotImplemented());
        };
        let equal = self.inner.components() == other.borrow().inner.components();
        match op {
            CompareOp::Eq => equal.into_py_any(py),
            CompareOp::Ne => (!equal).into_py_any(py),
            _ => Ok(py.NotImplemented()),
        }
    }

    fn __hash__(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.inner.components().hash(&mut h);
        h.finish()
    }

    fn __str__(&self) -> String {
        display(&self.inner)
    }

    fn __repr__(&self) -> String {
        display(&self.inner)
    }
}

/// `c0/c1/c2/id` in hex, then the strings in parentheses when known.
pub(crate) fn display(n: &Name) -> String {
    let [c0, c1, c2, id] = n.components();
    match n.strings() {
        Some([s0, s1, s2]) => format!("{c0:x}/{c1:x}/{c2:x}/{id:x} ({s0}/{s1}/{s2}/{id:x})"),
        None => format!("{c0:x}/{c1:x}/{c2:x}/{id:x}"),
    }
}
