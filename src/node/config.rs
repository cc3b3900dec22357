//! Client and server configuration dicts: the argument of `connect` / `run_server` and the
//! `clients:` / `servers:` entries of the standalone node's YAML (docs/protocol.md "Transport").
//!
//! Every struct denies unknown keys so a typo in a Python dict or YAML file is an error that names
//! the key instead of a silently ignored setting.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub use crate::auth::transport::{ClientAuthConfig, ServerAuthConfig};

/// A configuration that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The dict does not match the schema (unknown or missing key, wrong type); serde names the key.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Parses `"500ms"`, `"10s"`, `"1m"`, `"1h"`, `"1d"` (or a bare number of seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("invalid duration `{s}`"))?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "us" => value / 1_000_000.0,
        "ns" => value / 1_000_000_000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        other => return Err(format!("invalid duration unit `{other}` in `{s}`")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration `{s}`"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Text(String),
    Seconds(f64),
}

pub(crate) fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    match Option::<RawDuration>::deserialize(d)? {
        None => Ok(None),
        Some(RawDuration::Text(s)) => parse_duration(&s).map(Some).map_err(serde::de::Error::custom),
        Some(RawDuration::Seconds(v)) if v.is_finite() && v >= 0.0 => Ok(Some(Duration::from_secs_f64(v))),
        Some(RawDuration::Seconds(v)) => Err(serde::de::Error::custom(format!("invalid duration {v}"))),
    }
}

/// TLS protocol version selection (only the selected version is enabled).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.3 (default).
    #[default]
    #[serde(rename = "tls1.3")]
    Tls13,
    /// TLS 1.2.
    #[serde(rename = "tls1.2")]
    Tls12,
}

/// Client-side TLS settings (`tls` of a client dict).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// Plaintext h2c when true and no CA is configured.
    #[serde(default)]
    pub insecure: bool,
    /// Accept any server certificate.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// CA bundle file for verifying the server.
    pub ca_file: Option<String>,
    /// CA bundle as PEM text.
    pub ca_pem: Option<String>,
    /// Also trust the system roots (accepted; this build ships no system root store).
    pub include_system_ca_certs_pool: Option<bool>,
    /// Client certificate file (mTLS).
    pub cert_file: Option<String>,
    /// Client certificate PEM (mTLS).
    pub cert_pem: Option<String>,
    /// Client key file (mTLS).
    pub key_file: Option<String>,
    /// Client key PEM (mTLS).
    pub key_pem: Option<String>,
    /// Enabled TLS version.
    #[serde(default)]
    pub tls_version: TlsVersion,
    /// Certificate reload interval (accepted, unused).
    #[serde(default, deserialize_with = "de_duration")]
    pub reload_interval: Option<Duration>,
}

impl ClientTlsConfig {
    /// True when the client should speak plaintext h2c.
    pub fn is_plaintext(&self) -> bool {
        self.insecure && self.ca_file.is_none() && self.ca_pem.is_none()
    }
}

/// Server-side TLS settings (`tls` of a server dict).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// Plaintext h2c when true.
    #[serde(default)]
    pub insecure: bool,
    /// CA for verifying client certificates (enables mTLS).
    pub client_ca_file: Option<String>,
    /// CA PEM for verifying client certificates (enables mTLS).
    pub client_ca_pem: Option<String>,
    /// Accepted, unused.
    pub reload_client_ca_file: Option<bool>,
    /// Accepted for symmetry with the client (unused by the server).
    pub ca_file: Option<String>,
    /// Accepted for symmetry with the client (unused by the server).
    pub ca_pem: Option<String>,
    /// Accepted, unused.
    pub include_system_ca_certs_pool: Option<bool>,
    /// Server certificate file.
    pub cert_file: Option<String>,
    /// Server certificate PEM.
    pub cert_pem: Option<String>,
    /// Server key file.
    pub key_file: Option<String>,
    /// Server key PEM.
    pub key_pem: Option<String>,
    /// Enabled TLS version.
    #[serde(default)]
    pub tls_version: TlsVersion,
    /// Accepted, unused.
    #[serde(default, deserialize_with = "de_duration")]
    pub reload_interval: Option<Duration>,
}

/// Client keepalive (present = enabled).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientKeepalive {
    /// TCP keepalive (default 60 s).
    #[serde(default, deserialize_with = "de_duration")]
    pub tcp_keepalive: Option<Duration>,
    /// HTTP/2 PING interval (default 60 s).
    #[serde(default, deserialize_with = "de_duration")]
    pub http2_keepalive: Option<Duration>,
    /// PING ack timeout (default 10 s).
    #[serde(default, deserialize_with = "de_duration")]
    pub timeout: Option<Duration>,
    /// Send PINGs while idle.
    #[serde(default)]
    pub keep_alive_while_idle: bool,
}

/// Server keepalive.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerKeepalive {
    /// Accepted, unused.
    #[serde(default, deserialize_with = "de_duration")]
    pub max_connection_idle: Option<Duration>,
    /// Accepted; not applied (recycling healthy connections at a fixed age would only break
    /// long-lived streams).
    #[serde(default, deserialize_with = "de_duration")]
    pub max_connection_age: Option<Duration>,
    /// Accepted, unused.
    #[serde(default, deserialize_with = "de_duration")]
    pub max_connection_age_grace: Option<Duration>,
    /// HTTP/2 PING interval (default 120 s).
    #[serde(default, deserialize_with = "de_duration")]
    pub time: Option<Duration>,
    /// PING ack timeout (default 20 s).
    #[serde(default, deserialize_with = "de_duration")]
    pub timeout: Option<Duration>,
}

/// `connect(config)` / `dataplane.clients[]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// `http://host:port` or `https://host:port`.
    pub endpoint: String,
    /// HTTP origin override.
    pub origin: Option<String>,
    /// Accepted, not implemented.
    pub compression: Option<serde_json::Value>,
    /// Accepted, not implemented.
    pub rate_limit: Option<String>,
    /// TLS settings.
    #[serde(default)]
    pub tls: ClientTlsConfig,
    /// Keepalive settings; absent = none configured.
    pub keepalive: Option<ClientKeepalive>,
    /// Accepted, not implemented (no proxy support).
    pub proxy: Option<serde_json::Value>,
    /// Bound on the whole connect (all attempts); default a few seconds.
    #[serde(default, deserialize_with = "de_duration")]
    pub connect_timeout: Option<Duration>,
    /// Accepted; never applied to the long-lived stream.
    #[serde(default, deserialize_with = "de_duration")]
    pub request_timeout: Option<Duration>,
    /// Accepted, unused.
    pub buffer_size: Option<usize>,
    /// Static headers on the stream request.
    #[serde(default)]
    pub headers: HashMap<String, String>,
    /// Transport auth (`"none"`, basic, bearer, static_jwt, jwt).
    #[serde(default)]
    pub auth: ClientAuthConfig,
    /// Offer a loopback server shared memory for large frames (docs/protocol.md, "Shared memory
    /// on one host"); default true.
    pub shared_memory: Option<bool>,
    /// Opaque.
    pub metadata: Option<serde_json::Value>,
}

/// `run_server(config)` / `dataplane.servers[]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `ip:port` (port 0 = any free port).
    pub endpoint: String,
    /// TLS settings.
    #[serde(default)]
    pub tls: ServerTlsConfig,
    /// Accepted (the server always speaks HTTP/2 only).
    pub http2_only: Option<bool>,
    /// HTTP/2 max frame size in MiB.
    pub max_frame_size: Option<u32>,
    /// Per-connection stream limit.
    pub max_concurrent_streams: Option<u32>,
    /// Max header list size.
    pub max_header_list_size: Option<u32>,
    /// Accepted, unused.
    pub read_buffer_size: Option<usize>,
    /// Accepted, unused.
    pub write_buffer_size: Option<usize>,
    /// Keepalive settings.
    pub keepalive: Option<ServerKeepalive>,
    /// Transport auth required from clients (`"none"`, basic, bearer, jwt).
    #[serde(default)]
    pub auth: ServerAuthConfig,
    /// Take loopback clients' offers of shared memory for large frames (docs/protocol.md,
    /// "Shared memory on one host"); default true.
    pub shared_memory: Option<bool>,
    /// Opaque.
    pub metadata: Option<serde_json::Value>,
}

fn from_value<T: for<'de> Deserialize<'de>>(value: serde_json::Value) -> Result<T, ConfigError> {
    serde_json::from_value(value).map_err(|e| ConfigError::Invalid(e.to_string()))
}

impl ClientConfig {
    /// Parses a client dict.
    pub fn from_json(value: serde_json::Value) -> Result<Self, ConfigError> {
        let cfg: Self = from_value(value)?;
        cfg.check()?;
        Ok(cfg)
    }

    /// A plaintext client for `endpoint` (`http://host:port`).
    pub fn insecure(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            tls: ClientTlsConfig { insecure: true, ..Default::default() },
            ..Default::default()
        }
    }

    /// Checks the parts serde cannot.
    pub fn check(&self) -> Result<(), ConfigError> {
        let ep = self.endpoint.as_str();
        let rest = ep
            .strip_prefix("http://")
            .or_else(|| ep.strip_prefix("https://"))
            .ok_or_else(|| ConfigError::Invalid(format!("endpoint `{ep}` must start with http:// or https://")))?;
        if rest.is_empty() || !rest.contains(':') {
            return Err(ConfigError::Invalid(format!("endpoint `{ep}` must be scheme://host:port")));
        }
        Ok(())
    }
}

impl ServerConfig {
    /// Parses a server dict.
    pub fn from_json(value: serde_json::Value) -> Result<Self, ConfigError> {
        let cfg: Self = from_value(value)?;
        cfg.socket_addr()?;
        Ok(cfg)
    }

    /// A plaintext server on `endpoint` (`ip:port`).
    pub fn insecure(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            tls: ServerTlsConfig { insecure: true, ..Default::default() },
            ..Default::default()
        }
    }

    /// The endpoint as a socket address (`localhost` is accepted as 127.0.0.1).
    pub fn socket_addr(&self) -> Result<std::net::SocketAddr, ConfigError> {
        let ep = self.endpoint.trim();
        let ep = ep.strip_prefix("http://").unwrap_or(ep);
        let normalized = match ep.strip_prefix("localhost:") {
            Some(port) => format!("127.0.0.1:{port}"),
            None => ep.to_string(),
        };
        normalized
            .parse()
            .map_err(|_| ConfigError::Invalid(format!("server endpoint `{}` is not ip:port", self.endpoint)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn minimal_dicts_parse() {
        let c =
            ClientConfig::from_json(json!({"endpoint": "http://127.0.0.1:46357", "tls": {"insecure": true}})).unwrap();
        assert!(c.tls.is_plaintext());
        let s = ServerConfig::from_json(json!({"endpoint": "127.0.0.1:0", "tls": {"insecure": true}})).unwrap();
        assert_eq!(s.socket_addr().unwrap().port(), 0);
    }

    #[test]
    fn unknown_and_missing_keys_are_named() {
        let e = ClientConfig::from_json(json!({"endpoint": "http://a:1", "bogus": 1})).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = ServerConfig::from_json(json!({"endpoint": "127.0.0.1:1", "tls": {"insecure": true, "nope": 1}}))
            .unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        let e = ClientConfig::from_json(json!({"tls": {"insecure": true}})).unwrap_err();
        assert!(e.to_string().contains("endpoint"), "{e}");
        assert!(ClientConfig::from_json(json!({"endpoint": "127.0.0.1:1"})).is_err());
        assert!(ServerConfig::from_json(json!({"endpoint": "nothing"})).is_err());
    }

    #[test]
    fn full_client_dict_parses() {
        let c = ClientConfig::from_json(json!({
            "endpoint": "https://127.0.0.1:4000",
            "origin": "http://example",
            "tls": {"insecure": false, "insecure_skip_verify": true, "ca_pem": "x", "tls_version": "tls1.2"},
            "keepalive": {"tcp_keepalive": "60s", "http2_keepalive": "500ms", "timeout": "10s", "keep_alive_while_idle": true},
            "connect_timeout": "2s", "request_timeout": "0s", "headers": {"x-a": "b"},
            "auth": {"basic": {"username": "u", "password": "p"}}, "metadata": {"k": [1]}
        }))
        .unwrap();
        assert_eq!(c.connect_timeout, Some(Duration::from_secs(2)));
        assert_eq!(c.keepalive.unwrap().http2_keepalive, Some(Duration::from_millis(500)));
        assert_eq!(c.tls.tls_version, TlsVersion::Tls12);
        assert!(matches!(c.auth, ClientAuthConfig::Basic(ref b) if b.username == "u" && b.password == "p"));
        let c = ClientConfig::from_json(json!({"endpoint": "http://a:1", "auth": "none"})).unwrap();
        assert_eq!(c.auth, ClientAuthConfig::None);
        let c = ClientConfig::from_json(json!({"endpoint": "http://a:1", "auth": {"bearer": {"token": "t"}}})).unwrap();
        assert!(matches!(c.auth, ClientAuthConfig::Bearer(ref b) if b.token == "t"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("3 parsecs").is_err());
    }
}
