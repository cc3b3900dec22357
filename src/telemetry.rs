//! Logging set-up shared by the standalone node and the Python module.
//!
//! `init_tracing` installs one global subscriber the first time and only changes the level on
//! later calls (the reference silently ignored every call after the first).

use std::sync::OnceLock;

use serde::Deserialize;
use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, reload, util::SubscriberInitExt};

/// Why tracing could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid tracing configuration: {0}")]
    Config(String),
    #[error("failed to install the tracing subscriber: {0}")]
    Install(String),
}

/// OpenTelemetry export settings (accepted for compatibility; export is optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenTelemetryConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub grpc: Option<serde_json::Value>,
    #[serde(default)]
    pub service_name: Option<String>,
    #[serde(default)]
    pub service_version: Option<String>,
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default)]
    pub metrics_interval_secs: Option<u64>,
}

/// The `init_tracing` dictionary / the YAML `tracing:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    #[serde(default = "default_level")]
    pub log_level: String,
    #[serde(default = "default_true")]
    pub display_thread_names: bool,
    #[serde(default)]
    pub display_thread_ids: bool,
    #[serde(default)]
    pub filter: Option<String>,
    #[serde(default)]
    pub opentelemetry: Option<OpenTelemetryConfig>,
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

/// Installs the global subscriber (first call) or changes its level (later calls).
pub fn init_tracing(cfg: &TracingConfig) -> Result<(), TelemetryError> {
    let filter = cfg.env_filter()?;
    if let Some(handle) = HANDLE.get() {
        return handle.reload(filter).map_err(|e| TelemetryError::Install(e.to_string()));
    }
    let (layer, handle) = reload::Layer::new(filter);
    let fmt_layer = fmt::layer()
        .with_writer(std::io::stderr)
        .with_thread_names(cfg.display_thread_names)
        .with_thread_ids(cfg.display_thread_ids);
    match tracing_subscriber::registry().with(layer).with(fmt_layer).try_init() {
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

    #[test]
    fn bad_keys_and_levels_are_named() {
        let e = TracingConfig::from_json(serde_json::json!({"log_levle": "info"})).unwrap_err();
        assert!(e.to_string().contains("log_levle"), "{e}");
        let c = TracingConfig::from_json(serde_json::json!({"log_level": "loud"})).unwrap();
        assert!(c.env_filter().unwrap_err().to_string().contains("loud"));
    }

    #[test]
    fn second_call_changes_the_level() {
        init_tracing(&TracingConfig::default()).unwrap();
        let debug = TracingConfig { log_level: "debug".into(), ..Default::default() };
        init_tracing(&debug).unwrap();
        assert!(tracing::enabled!(tracing::Level::DEBUG));
        init_tracing(&TracingConfig { log_level: "warn".into(), ..Default::default() }).unwrap();
        assert!(!tracing::enabled!(tracing::Level::INFO));
    }
}
