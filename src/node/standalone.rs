//! Configuration of the standalone `slim` node (its YAML file, see README "The standalone node"):
//! `tracing`, `runtime`, `services`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::Node;
use super::config::{ClientConfig, ConfigError, ServerConfig, de_duration};
use super::mesh::MeshConfig;
use crate::telemetry::TracingConfig;

/// `runtime:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Threads that route: 0 (the default) = one worker per core (at most 4); N > 1 = N workers;
    /// 1 = one thread does everything (a tokio current-thread runtime). One thread wakes once per
    /// message it forwards, where workers also wake each other: half the context switches, less
    /// CPU per message and a shorter hop, but one core's worth of routing and a smaller share of
    /// a busy machine; measured in docs/mesh.md ("Runtime").
    #[serde(default)]
    pub n_cores: usize,
    /// Name of the runtime's threads.
    #[serde(default = "default_thread_name")]
    pub thread_name: String,
    /// How long shutdown may take before the process exits anyway.
    #[serde(default, deserialize_with = "de_duration")]
    pub drain_timeout: Option<Duration>,
}

fn default_thread_name() -> String {
    "slim".into()
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self { n_cores: 0, thread_name: default_thread_name(), drain_timeout: None }
    }
}

impl RuntimeConfig {
    /// The drain timeout with its default (10 s).
    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout.unwrap_or(Duration::from_secs(10))
    }
}

/// `dataplane:` of a service.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataplaneConfig {
    /// Servers to start.
    #[serde(default)]
    pub servers: Vec<ServerConfig>,
    /// Nodes to dial at start.
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
}

/// One `services.slim/<name>` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Overrides the node id (default: the `<name>` of the key).
    pub node_id: Option<String>,
    /// Accepted, informational.
    pub group_name: Option<String>,
    /// Data-plane servers and clients.
    #[serde(default)]
    pub dataplane: DataplaneConfig,
    /// Control-plane API: accepted, not served by this node.
    pub controller: Option<serde_json::Value>,
    /// Routing with the other nodes it links to (docs/mesh.md); on unless `enabled: false`.
    #[serde(default)]
    pub mesh: MeshConfig,
}

/// The whole YAML file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandaloneConfig {
    /// Logging.
    #[serde(default)]
    pub tracing: TracingConfig,
    /// Runtime sizing and drain.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Services keyed `slim/<name>`.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceConfig>,
    /// Plain-text counters endpoint (`GET /metrics`), off when absent.
    #[serde(default)]
    pub metrics: Option<crate::telemetry::metrics::MetricsConfig>,
}

/// Replaces `${env:VAR}` and `${file:/path}` in the raw text.
pub fn substitute(text: &str) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| ConfigError::Invalid("unterminated `${` in config".into()))?;
        let expr = &after[..end];
        let value = if let Some(var) = expr.strip_prefix("env:") {
            std::env::var(var).map_err(|_| ConfigError::Invalid(format!("environment variable `{var}` is not set")))?
        } else if let Some(path) = expr.strip_prefix("file:") {
            std::fs::read_to_string(path)
                .map_err(|e| ConfigError::Invalid(format!("cannot read `{path}`: {e}")))?
                .trim_end()
                .to_string()
        } else {
            return Err(ConfigError::Invalid(format!("unknown substitution `${{{expr}}}`")));
        };
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl StandaloneConfig {
    /// Parses YAML text (after substitutions) and checks it.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let text = substitute(text)?;
        // Through JSON so enums read as one-key maps (`auth: {basic: ...}`) exactly like Python dicts.
        let value: serde_json::Value = yaml_serde::from_str(&text).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let value = if value.is_null() { serde_json::json!({}) } else { value };
        let cfg: Self = serde_json::from_value(value).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        cfg.check()?;
        Ok(cfg)
    }

    /// One service with one plaintext server (`slim --endpoint`).
    pub fn single_server(endpoint: &str) -> Result<Self, ConfigError> {
        let server = ServerConfig::insecure(endpoint);
        server.socket_addr()?;
        let service = ServiceConfig {
            dataplane: DataplaneConfig { servers: vec![server], clients: vec![] },
            ..Default::default()
        };
        Ok(Self { services: BTreeMap::from([("slim/0".to_string(), service)]), ..Default::default() })
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.services.is_empty() {
            return Err(ConfigError::Invalid("no services configured".into()));
        }
        for (key, svc) in &self.services {
            let name = key.strip_prefix("slim/").filter(|n| !n.is_empty());
            if name.is_none() {
                return Err(ConfigError::Invalid(format!("service key `{key}` must be `slim/<name>`")));
            }
            if svc.dataplane.servers.is_empty() && svc.dataplane.clients.is_empty() {
                return Err(ConfigError::Invalid(format!("service `{key}` has no dataplane server or client")));
            }
            for s in &svc.dataplane.servers {
                s.socket_addr()?;
            }
            for c in &svc.dataplane.clients {
                c.check()?;
            }
        }
        Ok(())
    }
}

/// The node id of a service: `node_id`, else the `<name>` of `slim/<name>`.
pub fn service_node_id(key: &str, svc: &ServiceConfig) -> String {
    svc.node_id.clone().unwrap_or_else(|| key.strip_prefix("slim/").unwrap_or(key).to_string())
}

/// The nodes of a configuration, running: servers listening, clients dialed, metrics served.
/// Shared by the `slim` binary and `python -m slim_bindings node`.
#[derive(Debug)]
pub struct RunningNodes {
    /// One node per service.
    pub nodes: Vec<Node>,
    /// Every data-plane address bound, with its service key.
    pub listening: Vec<(String, std::net::SocketAddr)>,
    /// The metrics endpoint, when configured.
    pub metrics: Option<crate::telemetry::metrics::MetricsServer>,
}

impl RunningNodes {
    /// Starts every service of `cfg`: servers first (so that nodes of one file can link to each
    /// other), then clients. Must be called inside a tokio runtime. Tracing is not initialised here.
    pub async fn start(cfg: &StandaloneConfig) -> Result<RunningNodes, String> {
        let mut nodes = Vec::new();
        let mut listening = Vec::new();
        for (key, svc) in &cfg.services {
            let node = Node::new(&service_node_id(key, svc));
            node.enable_mesh(&svc.mesh);
            nodes.push(node.clone());
            for server in &svc.dataplane.servers {
                let addr = node.run_server(server.clone()).await.map_err(|e| format!("{key}: {e}"))?;
                listening.push((key.clone(), addr));
            }
        }
        for ((key, svc), node) in cfg.services.iter().zip(&nodes) {
            for client in &svc.dataplane.clients {
                node.connect(client.clone()).await.map_err(|e| format!("{key}: {e}"))?;
            }
        }
        // The nodes hand their figures to both exporters; OTLP metrics flow only while the
        // `tracing.opentelemetry` block enables export.
        let source = super::metrics::source(&nodes);
        crate::telemetry::otel::export_metrics(source.clone());
        let metrics = match &cfg.metrics {
            Some(m) => Some(crate::telemetry::metrics::serve(&m.endpoint, source).await.map_err(|e| e.to_string())?),
            None => None,
        };
        Ok(RunningNodes { nodes, listening, metrics })
    }

    /// Stops every node (each within `drain`); false when one did not finish in time.
    pub async fn stop(self, drain: std::time::Duration) -> bool {
        drop(self.metrics);
        let mut clean = true;
        for node in self.nodes {
            clean &= tokio::time::timeout(drain, node.shutdown()).await.is_ok();
        }
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
tracing:
  log_level: info
  display_thread_names: true
  display_thread_ids: true
runtime:
  n_cores: 0
  thread_name: "slim-data-plane"
  drain_timeout: 10s
services:
  slim/0:
    node_id: ${env:SLIM_TEST_NODE_ID}
    dataplane:
      servers:
        - endpoint: "0.0.0.0:46357"
          tls:
            insecure: true
          auth:
            basic:
              username: u
              password: p
      clients:
        - endpoint: "http://127.0.0.1:46358"
          tls: {insecure: true}
          auth: none
    controller:
      servers: []
"#;

    #[test]
    fn reference_shaped_yaml_parses() {
        // SAFETY: single-threaded use of a variable only this test reads.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("SLIM_TEST_NODE_ID", "node-from-env")
        };
        let cfg = StandaloneConfig::from_yaml(SAMPLE).unwrap();
        assert_eq!(cfg.runtime.drain_timeout(), Duration::from_secs(10));
        assert_eq!(cfg.runtime.thread_name, "slim-data-plane");
        assert_eq!(cfg.runtime.n_cores, 0);
        let svc = &cfg.services["slim/0"];
        assert_eq!(service_node_id("slim/0", svc), "node-from-env");
        assert_eq!(svc.dataplane.servers[0].socket_addr().unwrap().port(), 46357);
        assert!(matches!(svc.dataplane.servers[0].auth, crate::node::ServerAuthConfig::Basic(_)));
        assert_eq!(svc.dataplane.clients[0].auth, crate::node::ClientAuthConfig::None);
    }

    #[test]
    fn bad_files_are_rejected_with_the_reason() {
        let e = StandaloneConfig::from_yaml("services: {}\nextra: 1\n").unwrap_err();
        assert!(e.to_string().contains("extra"), "{e}");
        let e = StandaloneConfig::from_yaml(
            "services:\n  other/0:\n    dataplane: {servers: [{endpoint: '127.0.0.1:1'}]}\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("slim/<name>"), "{e}");
        let e = StandaloneConfig::from_yaml("services:\n  slim/0:\n    dataplane: {}\n").unwrap_err();
        assert!(e.to_string().contains("no dataplane"), "{e}");
        let e = StandaloneConfig::from_yaml("services:\n  slim/0:\n    node_id: ${env:SLIM_TEST_SURELY_UNSET_VAR}\n")
            .unwrap_err();
        assert!(e.to_string().contains("SLIM_TEST_SURELY_UNSET_VAR"), "{e}");
        let e = StandaloneConfig::from_yaml("services:\n  slim/0:\n    dataplane: {servers: [{endpoint: '127.0.0.1:1', tls: {insecure: true, typo: 1}}]}\n").unwrap_err();
        assert!(e.to_string().contains("typo"), "{e}");
    }

    #[test]
    fn single_server_shortcut() {
        let cfg = StandaloneConfig::single_server("127.0.0.1:0").unwrap();
        assert!(cfg.services["slim/0"].dataplane.servers[0].tls.insecure);
        assert!(StandaloneConfig::single_server("nope").is_err());
    }
}
