//! Rust log records → Python `logging` (logger `slim_bindings`).
//!
//! The tracing layer only copies records into a bounded channel (`crate::telemetry`); this
//! module's thread drains it and takes the GIL once per batch to call `Logger.log`. Logging code
//! therefore never waits for the GIL, so a thread holding the GIL while Rust logs cannot deadlock,
//! and nothing touches Python when a level is disabled (the filter stops the event first).
//! An `atexit` hook stops and joins the thread before the interpreter finalizes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::telemetry::{ForwardedRecord, take_forwarded_records};

/// The Python logger that receives Rust records.
const LOGGER: &str = "slim_bindings";
/// Most records delivered under one GIL acquisition.
const BATCH: usize = 256;
/// How often the thread looks at its stop flag while idle.
const POLL: Duration = Duration::from_millis(100);

struct Bridge {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

static BRIDGE: Mutex<Option<Bridge>> = Mutex::new(None);

/// Starts the delivery thread once per process (later calls do nothing).
pub(super) fn start(py: Python<'_>) -> PyResult<()> {
    let mut slot = BRIDGE.lock().map_err(|_| pyo3::exceptions::PyRuntimeError::new_err("log bridge lock poisoned"))?;
    if slot.is_some() {
        return Ok(());
    }
    let Some(rx) = take_forwarded_records() else {
        // Consumed by an earlier bridge that has since been stopped (interpreter exit).
        return Ok(());
    };
    py.import("atexit")?.call_method1("register", (wrap_pyfunction!(stop_log_bridge, py)?,))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("slim-log".into())
        .spawn(move || run(rx, &flag))
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(format!("cannot start the log thread: {e}")))?;
    *slot = Some(Bridge { stop, thread });
    Ok(())
}

/// Stops the delivery thread (registered with `atexit`; later calls do nothing).
#[pyfunction]
pub(super) fn stop_log_bridge(py: Python<'_>) {
    let bridge = BRIDGE.lock().ok().and_then(|mut slot| slot.take());
    if let Some(bridge) = bridge {
        bridge.stop.store(true, Ordering::Relaxed);
        // Released so the thread can finish a batch that is waiting for the GIL.
        py.detach(move || {
            let _ = bridge.thread.join();
        });
    }
}

fn run(rx: Receiver<ForwardedRecord>, stop: &AtomicBool) {
    let mut batch = Vec::with_capacity(BATCH);
    while !stop.load(Ordering::Relaxed) {
        match rx.recv_timeout(POLL) {
            Ok(first) => batch.push(first),
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        }
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        Python::attach(|py| {
            // A broken handler is the application's business; losing a log batch is all it costs here.
            let _ = deliver(py, &batch);
        });
        batch.clear();
    }
}

/// `logging` levels for tracing levels (TRACE has no stdlib name: 5, below DEBUG).
fn python_level(level: tracing::Level) -> u32 {
    match level {
        tracing::Level::ERROR => 40,
        tracing::Level::WARN => 30,
        tracing::Level::INFO => 20,
        tracing::Level::DEBUG => 10,
        tracing::Level::TRACE => 5,
    }
}

fn deliver(py: Python<'_>, batch: &[ForwardedRecord]) -> PyResult<()> {
    let logger = py.import("logging")?.call_method1("getLogger", (LOGGER,))?;
    for record in batch {
        let level = python_level(record.level);
        if !logger.call_method1("isEnabledFor", (level,))?.is_truthy()? {
            continue;
        }
        let extra = PyDict::new(py);
        extra.set_item("rust_target", &record.target)?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("extra", extra)?;
        logger.call_method("log", (level, "%s", &record.message), Some(&kwargs))?;
    }
    Ok(())
}
