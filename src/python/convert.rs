//! Python config dicts → `serde_json::Value`, so the core's serde configs parse them.

use super::errors::config_error as value_error;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};

/// Nesting deeper than this is refused (configs are a few levels deep; this stops cycles).
const MAX_DEPTH: usize = 32;

/// Converts a dict (or any JSON-like value) to JSON. Errors name the key path, e.g. `tls.insecure`.
pub(super) fn to_json(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    convert(obj, "", 0)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

fn where_(path: &str) -> String {
    if path.is_empty() { "the configuration".to_string() } else { format!("key `{path}`") }
}

fn convert(obj: &Bound<'_, PyAny>, path: &str, depth: usize) -> PyResult<Value> {
    if depth > MAX_DEPTH {
        return Err(value_error(format!("{} is nested too deeply", where_(path))));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    // bool before int: Python's bool is an int subclass.
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.cast::<PyInt>().is_ok() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::Number(i.into()));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::Number(u.into()));
        }
        return Err(value_error(format!("{}: integer out of range", where_(path))));
    }
    if obj.cast::<PyFloat>().is_ok() {
        let f: f64 = obj.extract()?;
        return Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| value_error(format!("{}: {f} is not a finite number", where_(path))));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(s.to_str()?.to_string()));
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return String::from_utf8(b.as_bytes().to_vec())
            .map(Value::String)
            .map_err(|_| value_error(format!("{}: bytes are not UTF-8", where_(path))));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return String::from_utf8(b.to_vec())
            .map(Value::String)
            .map_err(|_| value_error(format!("{}: bytes are not UTF-8", where_(path))));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut map = Map::new();
        for (k, v) in d.iter() {
            let key: String = k
                .extract()
                .map_err(|_| value_error(format!("{}: dictionary keys must be strings, got {k}", where_(path))))?;
            let value = convert(&v, &join(path, &key), depth + 1)?;
            map.insert(key, value);
        }
        return Ok(Value::Object(map));
    }
    if obj.cast::<PyList>().is_ok() || obj.cast::<PyTuple>().is_ok() {
        let mut out = Vec::new();
        for (i, item) in obj.try_iter()?.enumerate() {
            out.push(convert(&item?, &format!("{path}[{i}]"), depth + 1)?);
        }
        return Ok(Value::Array(out));
    }
    let type_name = obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
    Err(value_error(format!("{}: unsupported value of type {type_name}", where_(path))))
}
