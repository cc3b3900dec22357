//! Logging set-up shared by the standalone node and the Python module.
//!
//! `init_tracing` installs one global subscriber the first time and only changes the level on
//! later calls (the reference silently ignored every call after the first).
//!
//! Forwarding (`python_logging: true`): events that pass the level filter are copied into a
//! bounded channel ([`take_forwarded_records`]) instead of being printed; a consumer outside the
//! logging path (the Python layer's log thread) drains it. The layer itself never blocks and never
//! calls out: a full channel drops the record and counts it ([`forwarded_records_dropped`]).

pub mod metrics;
pub mod otel;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Mutex, OnceLock};

use serde::Deserialize;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Metadata, Subscriber, span};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, reload, util::SubscriberInitExt};

/// Why tracing could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A setting is not valid (unknown log level, bad filter, unusable OTLP endpoint); says which.
    #[error("invalid tracing configuration: {0}")]
    Config(String),
    /// The subscriber or the OTLP exporter could not be started (or flushed).
    #[error("failed to install the tracing subscriber: {0}")]
    Install(String),
}

/// OpenTelemetry export settings (`enabled` turns on OTLP/gRPC span export, see [`otel`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenTelemetryConfig {
    /// Export spans and metrics over OTLP/gRPC (off: the block is read but nothing is exported).
    #[serde(default)]
    pub enabled: bool,
    /// The collector's client settings; only `endpoint` is read (default `http://localhost:4317`).
    #[serde(default)]
    pub grpc: Option<serde_json::Value>,
    /// `service.name` of the exported resource (default `slim-data-plane`).
    #[serde(default)]
    pub service_name: Option<String>,
    /// `service.version` of the exported resource.
    #[serde(default)]
    pub service_version: Option<String>,
    /// `deployment.environment.name` of the exported resource (default `development`).
    #[serde(default)]
    pub environment: Option<String>,
    /// Seconds between two OTLP metric exports (default 60).
    #[serde(default)]
    pub metrics_interval_secs: Option<u64>,
    /// Fraction of publishes without a trace context that start a new trace (0..=1, default 0.01).
    #[serde(default)]
    pub sampling_ratio: Option<f64>,
}

/// The `init_tracing` dictionary / the YAML `tracing:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// Least severe level logged: trace, debug, info, warn, error or off (any case).
    #[serde(default = "default_level")]
    pub log_level: String,
    /// Prefix each log line with the name of the thread that wrote it.
    #[serde(default = "default_true")]
    pub display_thread_names: bool,
    /// Prefix each log line with the id of the thread that wrote it.
    #[serde(default)]
    pub display_thread_ids: bool,
    /// Extra `tracing` filter directives (e.g. `h2=warn`) appended to `log_level`.
    #[serde(default)]
    pub filter: Option<String>,
    /// OTLP export of spans and metrics; absent: nothing is exported.
    #[serde(default)]
    pub opentelemetry: Option<OpenTelemetryConfig>,
    /// Send log records to the forwarding channel (Python `logging`) instead of stderr.
    #[serde(default)]
    pub python_logging: bool,
}

fn default_level() -> String {
    "info".into()
}

fn default_true() -> bool {
    true
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            log_level: default_level(),
            display_thread_names: true,
            display_thread_ids: false,
            filter: None,
            opentelemetry: None,
            python_logging: false,
        }
    }
}

impl TracingConfig {
    /// Parses a JSON value (a Python dict converted to JSON); errors name the bad key.
    pub fn from_json(v: serde_json::Value) -> Result<Self, TelemetryError> {
        serde_json::from_value(v).map_err(|e| TelemetryError::Config(e.to_string()))
    }

    fn env_filter(&self) -> Result<EnvFilter, TelemetryError> {
        let level = match self.log_level.to_ascii_lowercase().as_str() {
            l @ ("trace" | "debug" | "info" | "warn" | "error" | "off") => l.to_string(),
            other => return Err(TelemetryError::Config(format!("unknown log_level `{other}`"))),
        };
        let directive = match &self.filter {
            Some(f) if !f.is_empty() => format!("{level},{f}"),
            _ => level,
        };
        EnvFilter::try_new(directive).map_err(|e| TelemetryError::Config(e.to_string()))
    }
}

type ReloadHandle = reload::Handle<EnvFilter, tracing_subscriber::Registry>;

static HANDLE: OnceLock<ReloadHandle> = OnceLock::new();

/// Records waiting for the consumer; beyond this they are dropped and counted.
const FORWARD_CAPACITY: usize = 4096;

static FORWARD_ON: AtomicBool = AtomicBool::new(false);
static FORWARD_DROPPED: AtomicU64 = AtomicU64::new(0);
static FORWARD_TX: OnceLock<SyncSender<ForwardedRecord>> = OnceLock::new();
static FORWARD_RX: Mutex<Option<Receiver<ForwardedRecord>>> = Mutex::new(None);

/// One log event copied for a consumer outside the logging path.
#[derive(Debug, Clone)]
pub struct ForwardedRecord {
    /// The event's level.
    pub level: tracing::Level,
    /// The module path (or explicit target) that emitted it.
    pub target: String,
    /// The `message` field followed by the other fields as ` key=value`.
    pub message: String,
}

fn forward_sender() -> &'static SyncSender<ForwardedRecord> {
    FORWARD_TX.get_or_init(|| {
        let (tx, rx) = sync_channel(FORWARD_CAPACITY);
        if let Ok(mut slot) = FORWARD_RX.lock() {
            *slot = Some(rx);
        }
        tx
    })
}

/// The receiving end of the forwarding channel; `Some` once per process (the single consumer).
pub fn take_forwarded_records() -> Option<Receiver<ForwardedRecord>> {
    forward_sender();
    FORWARD_RX.lock().ok().and_then(|mut slot| slot.take())
}

/// Records dropped because the consumer fell behind.
pub fn forwarded_records_dropped() -> u64 {
    FORWARD_DROPPED.load(Ordering::Relaxed)
}

/// Whether events currently go to the forwarding channel (and not to stderr).
pub fn forwarding_enabled() -> bool {
    FORWARD_ON.load(Ordering::Relaxed)
}

#[derive(Default)]
struct MessageVisitor {
    message: String,
    fields: String,
}

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
}

/// Copies enabled events into the forwarding channel while forwarding is on.
struct ForwardLayer;

impl<S: Subscriber> Layer<S> for ForwardLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if !FORWARD_ON.load(Ordering::Relaxed) {
            return;
        }
        let mut visitor = MessageVisitor::default();
        event.record(&mut visitor);
        visitor.message.push_str(&visitor.fields);
        let meta = event.metadata();
        let record =
            ForwardedRecord { level: *meta.level(), target: meta.target().to_string(), message: visitor.message };
        match forward_sender().try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                FORWARD_DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A layer (the stderr output) that drops events while forwarding is on.
///
/// A gate inside the layer, not a per-layer filter: with a per-layer filter in the stack, the level
/// filter's "never" no longer settles a callsite once, and every disabled `trace!`/`debug!` of
/// h2, hyper and tonic on the message path asks the subscriber at run time (~3% of a node's CPU
/// per forwarded message, docs/mesh.md "Runtime"). Everything but `on_event` is passed through.
struct UnlessForwarding<L>(L);

impl<S: Subscriber, L: Layer<S>> Layer<S> for UnlessForwarding<L> {
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        self.0.on_register_dispatch(subscriber);
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.0.on_layer(subscriber);
    }

    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        self.0.register_callsite(metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.0.enabled(metadata, ctx)
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        self.0.on_new_span(attrs, id, ctx);
    }

    fn on_record(&self, span: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        self.0.on_record(span, values, ctx);
    }

    fn on_follows_from(&self, span: &span::Id, follows: &span::Id, ctx: Context<'_, S>) {
        self.0.on_follows_from(span, follows, ctx);
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        self.0.event_enabled(event, ctx)
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if !FORWARD_ON.load(Ordering::Relaxed) {
            self.0.on_event(event, ctx);
        }
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.0.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.0.on_exit(id, ctx);
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        self.0.on_close(id, ctx);
    }

    fn on_id_change(&self, old: &span::Id, new: &span::Id, ctx: Context<'_, S>) {
        self.0.on_id_change(old, new, ctx);
    }
}

/// Installs the global subscriber (first call) or changes its level (later calls).
pub fn init_tracing(cfg: &TracingConfig) -> Result<(), TelemetryError> {
    let filter = cfg.env_filter()?;
    let result = match HANDLE.get() {
        Some(handle) => handle.reload(filter).map_err(|e| TelemetryError::Install(e.to_string())),
        None => install(cfg, filter),
    };
    FORWARD_ON.store(cfg.python_logging, Ordering::Relaxed);
    otel::configure(cfg.opentelemetry.as_ref())?;
    result
}

fn install(cfg: &TracingConfig, filter: EnvFilter) -> Result<(), TelemetryError> {
    let (layer, handle) = reload::Layer::new(filter);
    // stderr output steps aside while records are forwarded, so nothing is logged twice.
    let fmt_layer = UnlessForwarding(
        fmt::layer()
            .with_writer(std::io::stderr)
            .with_thread_names(cfg.display_thread_names)
            .with_thread_ids(cfg.display_thread_ids),
    );
    match tracing_subscriber::registry().with(layer).with(fmt_layer).with(ForwardLayer).try_init() {
        Ok(()) => {
            let _ = HANDLE.set(handle);
            Ok(())
        }
        // Someone else (an embedding program) installed a subscriber first: respect it.
        Err(e) => Err(TelemetryError::Install(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The subscriber and the forwarding switch are process-wide: one test at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn bad_keys_and_levels_are_named() {
        let e = TracingConfig::from_json(serde_json::json!({"log_levle": "info"})).unwrap_err();
        assert!(e.to_string().contains("log_levle"), "{e}");
        let c = TracingConfig::from_json(serde_json::json!({"log_level": "loud"})).unwrap();
        assert!(c.env_filter().unwrap_err().to_string().contains("loud"));
    }

    #[test]
    fn second_call_changes_the_level() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        init_tracing(&TracingConfig::default()).unwrap();
        let debug = TracingConfig { log_level: "debug".into(), ..Default::default() };
        init_tracing(&debug).unwrap();
        assert!(tracing::enabled!(tracing::Level::DEBUG));
        init_tracing(&TracingConfig { log_level: "warn".into(), ..Default::default() }).unwrap();
        assert!(!tracing::enabled!(tracing::Level::INFO));
    }

    #[test]
    fn forwarded_records_carry_level_target_and_fields() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let rx = take_forwarded_records().expect("first consumer");
        assert!(take_forwarded_records().is_none(), "only one consumer");
        // ERROR passes whatever level the other test in this process set meanwhile.
        init_tracing(&TracingConfig { log_level: "warn".into(), python_logging: true, ..Default::default() }).unwrap();
        tracing::error!(peer = "127.0.0.1:1", "cannot reach the peer");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let record = loop {
            let r = rx.recv_timeout(std::time::Duration::from_secs(5)).expect("a forwarded record");
            if r.message.contains("cannot reach the peer") || std::time::Instant::now() > deadline {
                break r;
            }
        };
        assert_eq!(record.level, tracing::Level::ERROR);
        assert!(record.target.contains("telemetry"), "{}", record.target);
        assert_eq!(record.message, "cannot reach the peer peer=127.0.0.1:1");
        init_tracing(&TracingConfig { log_level: "warn".into(), ..Default::default() }).unwrap();
    }
}
