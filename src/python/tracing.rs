//! `init_tracing(config)`: logging for the whole process.

use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::convert::to_json;
use super::errors::config_error;
use crate::telemetry::{TracingConfig, init_tracing as core_init};

static SHUTDOWN_REGISTERED: AtomicBool = AtomicBool::new(false);

/// Sends the last spans and stops OTLP export (registered with `atexit` once export is on).
#[pyfunction]
fn shutdown_tracing(py: Python<'_>) {
    py.detach(crate::telemetry::otel::shutdown);
}

/// Configures logging. `{"python_logging": True}` sends Rust records to the Python logger
/// `slim_bindings` (levels mapped; TRACE = 5) instead of stderr. The work happens now; the
/// result is also awaitable (resolving to None) so both `init_tracing(cfg)` and `await init_tracing(cfg)` work.
///
/// `{"opentelemetry": {"enabled": True, "grpc": {"endpoint": "http://localhost:4317"}, "service_name": ...,
/// "sampling_ratio": 0.01, "metrics_interval_secs": 60}}` exports spans (batched) over OTLP/gRPC.
/// `sampling_ratio` is the share of publishes that start a new trace (default 0.01; 1.0 = all); a
/// message that carries a `traceparent` follows that context's sampled flag. The W3C
/// `traceparent` is user-visible metadata by design: receivers see it (to continue the trace in
/// their own instrumentation) and senders may set it (to put the publish into their trace).
#[pyfunction]
#[pyo3(signature = (config = None))]
pub(super) fn init_tracing<'py>(py: Python<'py>, config: Option<&Bound<'py, PyDict>>) -> PyResult<Bound<'py, PyAny>> {
    let cfg = match config {
        Some(d) => TracingConfig::from_json(to_json(d.as_any())?).map_err(|e| config_error(e.to_string()))?,
        None => TracingConfig::default(),
    };
    // A subscriber installed by the embedding program is not an error worth failing over.
    if let Err(e @ crate::telemetry::TelemetryError::Config(_)) = core_init(&cfg) {
        return Err(config_error(e.to_string()));
    }
    if cfg.python_logging {
        super::log_bridge::start(py)?;
    }
    if crate::telemetry::otel::active() && !SHUTDOWN_REGISTERED.swap(true, Ordering::Relaxed) {
        py.import("atexit")?.call_method1("register", (wrap_pyfunction!(shutdown_tracing, py)?,))?;
    }
    super::runtime::ready_none(py)
}
