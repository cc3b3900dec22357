//! OpenTelemetry: spans exported over OTLP/gRPC and a W3C `traceparent` carried in message
//! metadata, so a publish, every node it crosses and the receiving app form one trace.
//!
//! Off by default. While off, every hook is one relaxed atomic load ([`active`]): no allocation,
//! no metadata work. Export runs on the SDK's batch thread over a dedicated one-thread tokio
//! runtime, so an unreachable collector only loses spans (bounded queue), never delays messaging.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use parking_lot::{Mutex, RwLock};

use super::{OpenTelemetryConfig, TelemetryError};

/// Used when the `opentelemetry` block has no `grpc.endpoint` (the reference's default).
pub const DEFAULT_ENDPOINT: &str = "http://localhost:4317";
const DEFAULT_SERVICE: &str = "slim-data-plane";

static ACTIVE: AtomicBool = AtomicBool::new(false);
static TRACER: RwLock<Option<SdkTracer>> = RwLock::new(None);
static PROVIDER: Mutex<Option<(String, SdkTracerProvider)>> = Mutex::new(None);
static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// Where a message is when a span is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// An app publishes (span `slim.publish`, a new trace unless the metadata carries one).
    Publish,
    /// A node routes (span `slim.route`).
    Route,
    /// An app hands a message to its user (span `slim.receive`).
    Receive,
}

/// Whether spans are being recorded; every hook checks this first.
#[inline]
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

fn endpoint_of(cfg: &OpenTelemetryConfig) -> String {
    cfg.grpc
        .as_ref()
        .and_then(|g| g.get("endpoint"))
        .and_then(|e| e.as_str())
        .filter(|e| !e.is_empty())
        .unwrap_or(DEFAULT_ENDPOINT)
        .to_string()
}

/// Applies the `opentelemetry` block: starts (or retargets) export, or pauses it.
pub(super) fn configure(cfg: Option<&OpenTelemetryConfig>) -> Result<(), TelemetryError> {
    let Some(cfg) = cfg.filter(|c| c.enabled) else {
        ACTIVE.store(false, Ordering::Relaxed);
        return Ok(());
    };
    let endpoint = endpoint_of(cfg);
    let service = cfg.service_name.clone().unwrap_or_else(|| DEFAULT_SERVICE.to_string());
    let key = format!("{endpoint}\n{service}\n{:?}\n{:?}", cfg.service_version, cfg.environment);
    let mut slot = PROVIDER.lock();
    if slot.as_ref().is_some_and(|(k, _)| *k == key) {
        ACTIVE.store(true, Ordering::Relaxed);
        return Ok(());
    }
    let runtime = match RUNTIME.get() {
        Some(rt) => rt,
        None => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("slim-otel")
                .enable_all()
                .build()
                .map_err(|e| TelemetryError::Install(format!("cannot start the OTLP runtime: {e}")))?;
            RUNTIME.get_or_init(|| rt)
        }
    };
    // tonic's lazy channel spawns its connection task on the runtime current at build time.
    let exporter = {
        let _guard = runtime.enter();
        SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|e| TelemetryError::Config(format!("opentelemetry.grpc.endpoint `{endpoint}`: {e}")))?
    };
    let mut resource = Resource::builder().with_service_name(service).with_attribute(KeyValue::new(
        "service.version",
        cfg.service_version.clone().unwrap_or_else(|| "v0.1.0".into()),
    ));
    resource = resource.with_attribute(KeyValue::new(
        "deployment.environment.name",
        cfg.environment.clone().unwrap_or_else(|| "development".into()),
    ));
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
    *TRACER.write() = Some(provider.tracer("slim-bindings"));
    if let Some((_, old)) = slot.replace((key, provider)) {
        // Shutting down blocks until the old batch is flushed (or times out): not on this thread.
        let _ = std::thread::Builder::new().name("slim-otel-stop".into()).spawn(move || {
            let _ = old.shutdown();
        });
    }
    ACTIVE.store(true, Ordering::Relaxed);
    tracing::info!(endpoint = %endpoint, "exporting spans over OTLP/gRPC");
    Ok(())
}

/// Records one span for `hop`, child of the `traceparent` in `metadata` when there is one, and
/// writes the span's own context back into `metadata` for the next hop.
pub fn hop(hop: Hop, metadata: &mut HashMap<String, String>, instance: &str) {
    let guard = TRACER.read();
    let Some(tracer) = guard.as_ref() else { return };
    let propagator = TraceContextPropagator::new();
    let parent = propagator.extract(metadata);
    let (name, kind) = match hop {
        Hop::Publish => ("slim.publish", SpanKind::Producer),
        Hop::Route => ("slim.route", SpanKind::Internal),
        Hop::Receive => ("slim.receive", SpanKind::Consumer),
    };
    let span = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_attributes([KeyValue::new("slim.instance", instance.to_string())])
        .start_with_context(tracer, &parent);
    let cx = Context::new().with_span(span);
    propagator.inject_context(&cx, metadata);
    cx.span().end();
}

/// Sends every finished span now (blocking; call from a plain thread or `spawn_blocking`).
pub fn flush() -> Result<(), TelemetryError> {
    let provider = PROVIDER.lock().as_ref().map(|(_, p)| p.clone());
    match provider {
        Some(p) => p.force_flush().map_err(|e| TelemetryError::Install(format!("span flush failed: {e}"))),
        None => Ok(()),
    }
}

/// Flushes and stops export (blocking; call from a plain thread or `spawn_blocking`).
pub fn shutdown() {
    ACTIVE.store(false, Ordering::Relaxed);
    TRACER.write().take();
    if let Some((_, p)) = PROVIDER.lock().take() {
        // Bounded, so an unreachable collector cannot hold up process exit.
        let _ = p.shutdown_with_timeout(std::time::Duration::from_secs(3));
    }
}
