//! Metrics as data, and the plain-text way out: `GET /metrics` in the Prometheus text format.
//!
//! Telemetry knows nothing of what is measured. A producer (the node, for one)
//! owns the catalogue of its metrics ([`MetricDesc`]) and hands the exporters a [`MetricSource`]
//! that writes the current values as [`Sample`]s each time an exporter reads it: this endpoint
//! at each request, OTLP export ([`super::otel::export_metrics`]) at each period.
//!
//! The server is a deliberately small HTTP/1.x responder (one request per connection, bounded
//! request size and time): it serves people with curl and scrapers, nothing else.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Whether a metric only grows (a counter) or goes up and down (a gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Monotonic since start.
    Counter,
    /// A level at the instant it is read.
    Gauge,
}

/// One metric of a catalogue. `name` is the OTLP name (`slim.messages.routed`); the Prometheus
/// name is derived from it ([`MetricDesc::prometheus_name`]), the way a collector's Prometheus
/// exporter derives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDesc {
    /// OTLP name, dot-separated.
    pub name: &'static str,
    /// Counter or gauge.
    pub kind: MetricKind,
    /// One line for `# HELP` and the OTLP description.
    pub help: &'static str,
}

impl MetricDesc {
    /// A counter.
    pub const fn counter(name: &'static str, help: &'static str) -> Self {
        MetricDesc { name, kind: MetricKind::Counter, help }
    }

    /// A gauge.
    pub const fn gauge(name: &'static str, help: &'static str) -> Self {
        MetricDesc { name, kind: MetricKind::Gauge, help }
    }

    /// `slim.messages.routed` (counter) → `slim_messages_routed_total`; gauges get no suffix.
    pub fn prometheus_name(&self) -> String {
        let base = self.name.replace('.', "_");
        match self.kind {
            MetricKind::Counter => base + "_total",
            MetricKind::Gauge => base,
        }
    }
}

/// The value of one label: text, or an integer (OTLP keeps the type; Prometheus prints both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelValue {
    /// A string attribute.
    Text(String),
    /// An integer attribute.
    Int(i64),
}

impl std::fmt::Display for LabelValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LabelValue::Text(s) => f.write_str(s),
            LabelValue::Int(i) => write!(f, "{i}"),
        }
    }
}

/// One observation of a metric, with its labels (in the order they are printed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// [`MetricDesc::name`] of the metric observed.
    pub metric: &'static str,
    /// Label names and values.
    pub labels: Vec<(&'static str, LabelValue)>,
    /// The value.
    pub value: u64,
}

/// Appends the current samples of a source.
type ReadSamples = dyn Fn(&mut Vec<Sample>) + Send + Sync;

/// What a producer hands to the exporters: its catalogue and a reader of current values.
#[derive(Clone)]
pub struct MetricSource {
    catalogue: Arc<[MetricDesc]>,
    read: Arc<ReadSamples>,
}

impl std::fmt::Debug for MetricSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricSource").field("catalogue", &self.catalogue).finish_non_exhaustive()
    }
}

impl MetricSource {
    /// A source of the metrics in `catalogue`; `read` appends one sample per series, in
    /// catalogue order or not (the exporters group them by metric).
    pub fn new(catalogue: Vec<MetricDesc>, read: impl Fn(&mut Vec<Sample>) + Send + Sync + 'static) -> Self {
        MetricSource { catalogue: catalogue.into(), read: Arc::new(read) }
    }

    /// The metrics this source reports.
    pub fn catalogue(&self) -> &[MetricDesc] {
        &self.catalogue
    }

    /// The current values.
    pub fn read(&self) -> Vec<Sample> {
        let mut out = Vec::new();
        (self.read)(&mut out);
        out
    }
}

/// Longest request head read before answering 400.
const MAX_REQUEST: usize = 8 * 1024;
/// A client that has not sent its request head by then is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The `metrics:` section of the node's YAML (`slim --metrics <ip:port>` sets the same).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `ip:port` to serve `GET /metrics` on (port 0 = any free port).
    pub endpoint: String,
}

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address given is not `ip:port`.
    #[error("invalid metrics address `{0}` (expected ip:port)")]
    Address(String),
    /// The address could not be bound (in use, not local, no permission).
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        /// The address that was asked for.
        addr: String,
        /// What the operating system said.
        source: std::io::Error,
    },
}

/// A running metrics endpoint; dropping it stops the server.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts serving `GET /metrics` on `addr` (`ip:port`, port 0 = any): `source` read at each request.
pub async fn serve(addr: &str, source: MetricSource) -> Result<MetricsServer, MetricsError> {
    let sock: SocketAddr = addr.parse().map_err(|_| MetricsError::Address(addr.to_string()))?;
    let listener =
        TcpListener::bind(sock).await.map_err(|source| MetricsError::Bind { addr: addr.to_string(), source })?;
    let bound = listener.local_addr().map_err(|source| MetricsError::Bind { addr: addr.to_string(), source })?;
    let task = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::debug!("metrics accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let source = source.clone();
            tokio::spawn(async move {
                if let Err(e) = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &source)).await {
                    tracing::debug!("metrics client timed out: {e}");
                }
            });
        }
    });
    Ok(MetricsServer { addr: bound, task })
}

/// Reads one request head and answers it (`GET /metrics` only).
async fn answer(mut stream: TcpStream, source: &MetricSource) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_REQUEST {
            let _ = respond(&mut stream, "400 Bad Request", "request too large\n").await;
            return;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let _ = match (method, path) {
        ("GET", "/metrics") => respond(&mut stream, "200 OK", &render(source)).await,
        ("GET", _) => respond(&mut stream, "404 Not Found", "try GET /metrics\n").await,
        _ => respond(&mut stream, "405 Method Not Allowed", "only GET is served\n").await,
    };
}

/// Writes a whole `Connection: close` response.
async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// A label value as the text format quotes it.
fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The Prometheus text exposition of `source`: `# HELP` / `# TYPE` for every metric of its
/// catalogue, then that metric's samples in the order the source wrote them.
pub fn render(source: &MetricSource) -> String {
    let samples = source.read();
    let mut out = String::with_capacity(2048);
    for desc in source.catalogue() {
        let name = desc.prometheus_name();
        let kind = match desc.kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", desc.help);
        for sample in samples.iter().filter(|s| s.metric == desc.name) {
            out.push_str(&name);
            for (i, (label, value)) in sample.labels.iter().enumerate() {
                let sep = if i == 0 { '{' } else { ',' };
                let _ = write!(out, "{sep}{label}=\"{}\"", escape(&value.to_string()));
            }
            if !sample.labels.is_empty() {
                out.push('}');
            }
            let _ = writeln!(out, " {}", sample.value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_help_type_and_labelled_samples() {
        let catalogue = vec![
            MetricDesc::counter("t.messages.dropped", "Dropped, by reason."),
            MetricDesc::gauge("t.queue.depth", "Waiting now."),
        ];
        let source = MetricSource::new(catalogue, |out| {
            let node = || ("node", LabelValue::Text("n\"1".into()));
            out.push(Sample { metric: "t.queue.depth", labels: vec![node()], value: 3 });
            out.push(Sample {
                metric: "t.messages.dropped",
                labels: vec![node(), ("conn", LabelValue::Int(7))],
                value: 0,
            });
        });
        let text = render(&source);
        assert_eq!(
            text,
            "# HELP t_messages_dropped_total Dropped, by reason.\n# TYPE t_messages_dropped_total counter\n\
             t_messages_dropped_total{node=\"n\\\"1\",conn=\"7\"} 0\n\
             # HELP t_queue_depth Waiting now.\n# TYPE t_queue_depth gauge\n\
             t_queue_depth{node=\"n\\\"1\"} 3\n"
        );
    }
}
