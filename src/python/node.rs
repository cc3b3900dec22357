//! `python -m slim_bindings node` and `node-info`: the standalone node (the same code and YAML as
//! the `slim` binary) inside this process, and the client of the inspection API.

use std::time::Duration;

use parking_lot::Mutex;
use pyo3::prelude::*;

use super::args::ConfigDict;
use super::errors::{config_error, to_py};
use super::runtime::{dedicated, server_handle, spawned, spawned_on};
use crate::node::ClientConfig;
use crate::node::standalone::{RunningNodes, StandaloneConfig};

/// Nodes started by [`start_node`]; `stop_node` stops them.
#[pyclass(name = "NodeRunner", module = "slim_bindings._slim_bindings", frozen)]
pub struct PyNodeRunner {
    running: Mutex<Option<RunningNodes>>,
    listening: Vec<String>,
    metrics: Option<String>,
    drain: Duration,
    /// Where the node runs: the servers' runtime, or its own (`runtime.n_cores`).
    runtime: tokio::runtime::Handle,
}

#[pymethods]
impl PyNodeRunner {
    /// Every data-plane address bound (`ip:port`).
    #[getter]
    fn listening(&self) -> Vec<String> {
        self.listening.clone()
    }

    /// The metrics address (`ip:port`), when metrics are served.
    #[getter]
    fn metrics_endpoint(&self) -> Option<String> {
        self.metrics.clone()
    }
}

/// Starts the nodes of a `slim` YAML configuration (`config_yaml`, the file's text), or one
/// plaintext node on `endpoint`. `metrics` (`ip:port`) overrides the YAML's `metrics:`. Logging
/// follows the YAML's `tracing:` section (stderr) unless the process already set it up.
#[pyfunction]
#[pyo3(signature = (config_yaml = None, endpoint = None, metrics = None))]
pub(super) async fn start_node(
    config_yaml: Option<String>,
    endpoint: Option<String>,
    metrics: Option<String>,
) -> PyResult<PyNodeRunner> {
    let mut cfg = match (config_yaml, endpoint) {
        (Some(text), _) => {
            let cfg = StandaloneConfig::from_yaml(&text).map_err(|e| config_error(e.to_string()))?;
            if let Err(e @ crate::telemetry::TelemetryError::Config(_)) = crate::telemetry::init_tracing(&cfg.tracing) {
                return Err(config_error(e.to_string()));
            }
            cfg
        }
        (None, Some(ep)) => StandaloneConfig::single_server(&ep).map_err(|e| config_error(e.to_string()))?,
        (None, None) => return Err(config_error("one of config_yaml or endpoint is required")),
    };
    if let Some(m) = metrics {
        cfg.metrics = Some(crate::telemetry::metrics::MetricsConfig { endpoint: m });
    }
    let drain = cfg.runtime.drain_timeout();
    // `runtime.n_cores` as the `slim` binary reads it (docs/mesh.md "Runtime"): N > 0 gives this
    // node a runtime of its own with N workers (threads named `runtime.thread_name`); 0, the
    // default, shares the servers' runtime (one worker per core, or TOKIO_WORKER_THREADS).
    let runtime = match cfg.runtime.n_cores {
        0 => server_handle()?.clone(),
        n => dedicated(&cfg.runtime.thread_name, n)?,
    };
    let running = spawned_on(&runtime, async move { RunningNodes::start(&cfg).await.map_err(config_error) }).await?;
    let listening = running.listening.iter().map(|(_, a)| a.to_string()).collect();
    let metrics = running.metrics.as_ref().map(|m| m.local_addr().to_string());
    Ok(PyNodeRunner { running: Mutex::new(Some(running)), listening, metrics, drain, runtime })
}

/// Stops the nodes (each within the configuration's drain timeout). A second call does nothing.
#[pyfunction]
pub(super) async fn stop_node(runner: Py<PyNodeRunner>) -> PyResult<bool> {
    let (running, drain, runtime) = {
        let r = runner.get();
        (r.running.lock().take(), r.drain, r.runtime.clone())
    };
    match running {
        Some(running) => spawned_on(&runtime, async move { Ok(running.stop(drain).await) }).await,
        None => Ok(true),
    }
}

/// What the node at `config` (a client dict: endpoint, TLS, auth) knows, as a JSON text: its
/// links, routes (at most `max_routes`, names containing `name_filter`), mesh nodes, counters.
#[pyfunction]
#[pyo3(signature = (config, max_routes = 1000, name_filter = String::new()))]
pub(super) async fn node_info(config: ConfigDict, max_routes: u32, name_filter: String) -> PyResult<String> {
    let cfg = ClientConfig::from_json(config.0).map_err(|e| config_error(e.to_string()))?;
    spawned(async move {
        let reply =
            crate::node::mesh::inspect::fetch(cfg, max_routes, &name_filter).await.map_err(|e| to_py(e.into()))?;
        Ok(crate::node::mesh::inspect::to_json(&reply).to_string())
    })
    .await
}
