//! OpenTelemetry: spans exported over OTLP/gRPC and a W3C `traceparent` carried in message
//! metadata, so a publish, every node it crosses and the receiving app form one trace; and the
//! metrics of the sources given to [`export_metrics`] exported as OTLP metrics.
//!
//! Off by default. While off, every hook is one relaxed atomic load ([`active`]): no allocation,
//! no metadata work. Export runs on the SDK's batch and periodic-reader threads over a dedicated
//! one-thread tokio runtime, so an unreachable collector only loses data (bounded queues), never
//! delays messaging.
//!
//! Sampling: a publish without a trace context starts a new trace with probability
//! `sampling_ratio` (default [`DEFAULT_SAMPLING_RATIO`], one message in a hundred). Nodes and
//! receivers never start traces: they only continue a sampled `traceparent`, so unsampled and
//! untraced messages cost one map lookup per hop and carry nothing extra. Why not every message
//! by default: a traced message costs five spans (publish, three routes, receive) and their
//! export, about 20 µs of CPU in all, more than the message itself (benches/e2e.py --otel).
//!
//! `traceparent` is ordinary, user-visible metadata (the W3C convention), not one of the internal
//! keys stripped before delivery: a receiver sees the context of its `slim.receive` span and can
//! continue the trace in its own instrumentation; a sender that sets one puts the publish into
//! its own trace.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::metrics::{AsyncInstrument, Meter, MeterProvider as _};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{MetricExporter, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use parking_lot::{Mutex, RwLock};

use super::metrics::{LabelValue, MetricKind, MetricSource};
use super::{OpenTelemetryConfig, TelemetryError};

/// Used when the `opentelemetry` block has no `grpc.endpoint` (the reference's default).
pub const DEFAULT_ENDPOINT: &str = "http://localhost:4317";
const DEFAULT_SERVICE: &str = "slim-data-plane";

/// Metric export period when `metrics_interval_secs` is not given (the OpenTelemetry default).
pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(60);
/// Share of publishes that start a trace when `sampling_ratio` is not given (1%: keeps the cost of
/// export on a busy path within a few percent; set 1.0 to trace every message).
pub const DEFAULT_SAMPLING_RATIO: f64 = 0.01;
/// The metadata key of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

static ACTIVE: AtomicBool = AtomicBool::new(false);
static TRACER: RwLock<Option<SdkTracer>> = RwLock::new(None);
static PROVIDER: Mutex<Option<Exporters>> = Mutex::new(None);
static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
/// New traces are started when a draw falls below this (`u64::MAX` = always, 0 = never).
static SAMPLE_BELOW: AtomicU64 = AtomicU64::new(u64::MAX);
static SAMPLE_DRAWS: AtomicU64 = AtomicU64::new(0);
/// Sources whose metrics the instrument callbacks read.
static SOURCES: Mutex<Vec<MetricSource>> = Mutex::new(Vec::new());

/// The running export pipelines and the settings they were built from.
struct Exporters {
    key: String,
    tracer: SdkTracerProvider,
    meter: SdkMeterProvider,
    /// Names of the instruments registered on `meter`.
    instruments: Vec<&'static str>,
}

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

/// Applies the `opentelemetry` block: starts (or retargets) export, or stops it.
pub(super) fn configure(cfg: Option<&OpenTelemetryConfig>) -> Result<(), TelemetryError> {
    let Some(cfg) = cfg.filter(|c| c.enabled) else {
        ACTIVE.store(false, Ordering::Relaxed);
        TRACER.write().take();
        if let Some(old) = PROVIDER.lock().take() {
            stop_in_background(old);
        }
        return Ok(());
    };
    let ratio = cfg.sampling_ratio.unwrap_or(DEFAULT_SAMPLING_RATIO);
    if !(0.0..=1.0).contains(&ratio) {
        return Err(TelemetryError::Config(format!("opentelemetry.sampling_ratio {ratio} is not between 0 and 1")));
    }
    let threshold = if ratio >= 1.0 { u64::MAX } else { (ratio * u64::MAX as f64) as u64 };
    SAMPLE_BELOW.store(threshold, Ordering::Relaxed);
    let interval = match cfg.metrics_interval_secs {
        Some(0) => return Err(TelemetryError::Config("opentelemetry.metrics_interval_secs must be at least 1".into())),
        Some(s) => Duration::from_secs(s),
        None => DEFAULT_METRICS_INTERVAL,
    };
    let endpoint = endpoint_of(cfg);
    let service = cfg.service_name.clone().unwrap_or_else(|| DEFAULT_SERVICE.to_string());
    let key = format!("{endpoint}\n{service}\n{:?}\n{:?}\n{interval:?}", cfg.service_version, cfg.environment);
    let mut slot = PROVIDER.lock();
    if slot.as_ref().is_some_and(|e| e.key == key) {
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
    let bad_endpoint =
        |e: &dyn std::fmt::Display| TelemetryError::Config(format!("opentelemetry.grpc.endpoint `{endpoint}`: {e}"));
    // tonic's lazy channel spawns its connection task on the runtime current at build time.
    let (span_exporter, metric_exporter) = {
        let _guard = runtime.enter();
        let spans = SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|e| bad_endpoint(&e))?;
        let metrics = MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|e| bad_endpoint(&e))?;
        (spans, metrics)
    };
    let mut resource = Resource::builder().with_service_name(service).with_attribute(KeyValue::new(
        "service.version",
        cfg.service_version.clone().unwrap_or_else(|| "v0.1.0".into()),
    ));
    resource = resource.with_attribute(KeyValue::new(
        "deployment.environment.name",
        cfg.environment.clone().unwrap_or_else(|| "development".into()),
    ));
    let resource = resource.build();
    let tracer =
        SdkTracerProvider::builder().with_batch_exporter(span_exporter).with_resource(resource.clone()).build();
    let reader = PeriodicReader::builder(metric_exporter).with_interval(interval).build();
    let meter = SdkMeterProvider::builder().with_reader(reader).with_resource(resource).build();
    let mut exporters = Exporters { key, tracer, meter, instruments: Vec::new() };
    let sources: Vec<MetricSource> = SOURCES.lock().clone();
    for source in &sources {
        exporters.register(source);
    }
    *TRACER.write() = Some(exporters.tracer.tracer("slim-bindings"));
    if let Some(old) = slot.replace(exporters) {
        stop_in_background(old);
    }
    ACTIVE.store(true, Ordering::Relaxed);
    tracing::info!(endpoint = %endpoint, "exporting spans and metrics over OTLP/gRPC");
    Ok(())
}

/// Shutting a pipeline down blocks until its last batch is sent (or times out): not on the caller's thread.
fn stop_in_background(old: Exporters) {
    let _ = std::thread::Builder::new().name("slim-otel-stop".into()).spawn(move || {
        let _ = old.tracer.shutdown_with_timeout(Duration::from_secs(3));
        let _ = old.meter.shutdown_with_timeout(Duration::from_secs(3));
    });
}

/// Exports the metrics of `source` as OTLP metrics while OpenTelemetry is on (the same series as
/// the `/metrics` text endpoint). Reading them costs nothing on the message path: the periodic
/// reader reads the source at each export.
pub fn export_metrics(source: MetricSource) {
    SOURCES.lock().push(source.clone());
    if let Some(exporters) = PROVIDER.lock().as_mut() {
        exporters.register(&source);
    }
}

impl Exporters {
    /// Registers one observable instrument per metric of `source` not registered yet; each
    /// reads every source at export time and observes the samples of its metric.
    fn register(&mut self, source: &MetricSource) {
        let meter: Meter = self.meter.meter("slim-bindings");
        for desc in source.catalogue() {
            if self.instruments.contains(&desc.name) {
                continue;
            }
            self.instruments.push(desc.name);
            let name = desc.name;
            let callback = move |obs: &dyn AsyncInstrument<u64>| {
                let sources: Vec<MetricSource> = SOURCES.lock().clone();
                for sample in sources.iter().flat_map(MetricSource::read).filter(|s| s.metric == name) {
                    let attrs: Vec<KeyValue> = sample
                        .labels
                        .into_iter()
                        .map(|(k, v)| match v {
                            LabelValue::Text(t) => KeyValue::new(k, t),
                            LabelValue::Int(i) => KeyValue::new(k, i),
                        })
                        .collect();
                    obs.observe(sample.value, &attrs);
                }
            };
            match desc.kind {
                MetricKind::Counter => {
                    meter.u64_observable_counter(name).with_description(desc.help).with_callback(callback).build();
                }
                MetricKind::Gauge => {
                    meter.u64_observable_gauge(name).with_description(desc.help).with_callback(callback).build();
                }
            }
        }
    }
}

/// Whether a new trace is started for this message (the `sampling_ratio` draw).
fn sample_new_trace() -> bool {
    let below = SAMPLE_BELOW.load(Ordering::Relaxed);
    if below == u64::MAX {
        return true;
    }
    // splitmix64 over a shared counter: uniform enough for a ratio, no lock, no RNG state.
    let mut z = SAMPLE_DRAWS.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) < below
}

/// The sampled flag of a W3C `traceparent` (`00-<trace>-<span>-<flags>`); `None` when malformed.
fn sampled_flag(traceparent: &str) -> Option<bool> {
    let flags = traceparent.as_bytes().get(53..55)?;
    let low = match flags[1] {
        b @ b'0'..=b'9' => b - b'0',
        b @ b'a'..=b'f' => b - b'a' + 10,
        _ => return None,
    };
    (traceparent.len() == 55).then_some(low & 1 == 1)
}

/// Records one span for `hop`, child of the `traceparent` in `metadata` when there is one, and
/// writes the span's own context back into `metadata` for the next hop.
///
/// Only a publish starts a trace (subject to `sampling_ratio`); a route or receive hop records a
/// span only under a sampled `traceparent`. An unsampled context passes through untouched.
pub fn hop(hop: Hop, metadata: &mut HashMap<String, String>, instance: &str) {
    match metadata.get(TRACEPARENT).map(|tp| sampled_flag(tp)) {
        Some(Some(true)) => {}
        Some(Some(false)) => return,
        Some(None) | None => {
            if hop != Hop::Publish || !sample_new_trace() {
                return;
            }
        }
    }
    let guard = TRACER.read();
    let Some(tracer) = guard.as_ref() else { return };
    let propagator = TraceContextPropagator::new();
    let parent = propagator.extract(metadata);
    let (name, kind) = match hop {
        Hop::Publish => ("slim.publish", SpanKind::Producer),
        Hop::Route => ("slim.route", SpanKind::Internal),
        Hop::Receive => ("slim.receive", SpanKind::Consumer),
    };
    let mut builder = tracer.span_builder(name).with_kind(kind);
    if !instance.is_empty() {
        builder = builder.with_attributes([KeyValue::new("slim.instance", instance.to_string())]);
    }
    let span = builder.start_with_context(tracer, &parent);
    let cx = Context::new().with_span(span);
    propagator.inject_context(&cx, metadata);
    cx.span().end();
}

/// Sends every finished span and the current metrics now (blocking; call from a plain thread or
/// `spawn_blocking`).
pub fn flush() -> Result<(), TelemetryError> {
    let providers = PROVIDER.lock().as_ref().map(|e| (e.tracer.clone(), e.meter.clone()));
    match providers {
        Some((tracer, meter)) => {
            tracer.force_flush().map_err(|e| TelemetryError::Install(format!("span flush failed: {e}")))?;
            meter.force_flush().map_err(|e| TelemetryError::Install(format!("metric flush failed: {e}")))
        }
        None => Ok(()),
    }
}

/// Flushes and stops export (blocking; call from a plain thread or `spawn_blocking`).
pub fn shutdown() {
    ACTIVE.store(false, Ordering::Relaxed);
    TRACER.write().take();
    if let Some(e) = PROVIDER.lock().take() {
        // Bounded, so an unreachable collector cannot hold up process exit.
        let _ = e.tracer.shutdown_with_timeout(Duration::from_secs(3));
        let _ = e.meter.shutdown_with_timeout(Duration::from_secs(3));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_flag_reads_the_last_byte() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert_eq!(sampled_flag(tp), Some(true));
        assert_eq!(sampled_flag(&tp.replace("-01", "-00")), Some(false));
        assert_eq!(sampled_flag("00-short"), None);
        assert_eq!(sampled_flag(&format!("{tp}x")), None);
    }

    #[test]
    fn sampling_ratio_is_roughly_honoured() {
        SAMPLE_BELOW.store((0.25 * u64::MAX as f64) as u64, Ordering::Relaxed);
        let hits = (0..40_000).filter(|_| sample_new_trace()).count();
        SAMPLE_BELOW.store(u64::MAX, Ordering::Relaxed);
        assert!((8_000..12_000).contains(&hits), "{hits}");
    }
}
