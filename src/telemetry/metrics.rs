//! A plain-text metrics endpoint for the standalone node: `GET /metrics` in the Prometheus text
//! format, built from [`Node::stats`](crate::node::Node::stats) at each request.
//!
//! The server is a deliberately small HTTP/1.x responder (one request per connection, bounded
//! request size and time): it serves people with curl and scrapers, nothing else.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::node::Node;

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
    #[error("invalid metrics address `{0}` (expected ip:port)")]
    Address(String),
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
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

/// Starts serving `GET /metrics` on `addr` (`ip:port`, port 0 = any) for these nodes.
pub async fn serve(addr: &str, nodes: Vec<Node>) -> Result<MetricsServer, MetricsError> {
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
            let nodes = nodes.clone();
            tokio::spawn(async move {
                if let Err(e) = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &nodes)).await {
                    tracing::debug!("metrics client timed out: {e}");
                }
            });
        }
    });
    Ok(MetricsServer { addr: bound, task })
}

async fn answer(mut stream: TcpStream, nodes: &[Node]) {
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
        ("GET", "/metrics") => respond(&mut stream, "200 OK", &render(nodes)).await,
        ("GET", _) => respond(&mut stream, "404 Not Found", "try GET /metrics\n").await,
        _ => respond(&mut stream, "405 Method Not Allowed", "only GET is served\n").await,
    };
}

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

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The Prometheus text exposition of every node's counters.
pub fn render(nodes: &[Node]) -> String {
    let rows: Vec<(String, crate::node::NodeStatsSnapshot, u64)> = nodes
        .iter()
        .map(|n| {
            let subs = n.connection_ids().into_iter().map(|c| n.subscriptions_of(c).len() as u64).sum();
            (escape(n.node_id()), n.stats(), subs)
        })
        .collect();
    let queues: Vec<Vec<crate::node::ConnectionQueue>> = nodes.iter().map(|n| n.queue_depths()).collect();
    let mut out = String::with_capacity(2048);
    type Pick = fn(&crate::node::NodeStatsSnapshot, u64) -> u64;
    let simple: [(&str, &str, &str, Pick); 9] = [
        ("slim_messages_received_total", "counter", "Messages read from any connection.", |s, _| s.messages_received),
        (
            "slim_messages_routed_total",
            "counter",
            "Messages handed to an outbound connection (one per target).",
            |s, _| s.messages_routed,
        ),
        ("slim_subscriptions_processed_total", "counter", "Subscribe/Unsubscribe messages applied.", |s, _| {
            s.subscriptions_processed
        }),
        ("slim_subscriptions", "gauge", "Subscriptions currently in the table (per connection entry).", |_, subs| subs),
        ("slim_connections_opened_total", "counter", "Connections opened since start.", |s, _| s.connections_opened),
        ("slim_connections_closed_total", "counter", "Connections closed since start.", |s, _| s.connections_closed),
        ("slim_connections_active", "gauge", "Connections open now.", |s, _| s.active_connections),
        ("slim_reconnects_total", "counter", "Successful reconnects of client connections.", |s, _| s.reconnects),
        ("slim_error_reports_dropped_total", "counter", "Error notifications a local app could not take.", |s, _| {
            s.error_reports_dropped
        }),
    ];
    for (name, kind, help, pick) in simple {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (node, stats, subs) in &rows {
            let _ = writeln!(out, "{name}{{node=\"{node}\"}} {}", pick(stats, *subs));
        }
    }
    let _ = writeln!(
        out,
        "# HELP slim_messages_dropped_total Messages dropped, by reason.\n# TYPE slim_messages_dropped_total counter"
    );
    for (node, s, _) in &rows {
        for (reason, v) in [
            ("invalid", s.dropped_invalid),
            ("no_route", s.dropped_no_route),
            ("connection_closed", s.dropped_closed),
            ("bad_subscription", s.dropped_subscription),
            ("malformed", s.dropped_malformed),
        ] {
            let _ = writeln!(out, "slim_messages_dropped_total{{node=\"{node}\",reason=\"{reason}\"}} {v}");
        }
    }
    let _ = writeln!(
        out,
        "# HELP slim_queue_depth Messages waiting in all outbound connection queues.\n# TYPE slim_queue_depth gauge"
    );
    for ((node, _, _), qs) in rows.iter().zip(&queues) {
        let _ = writeln!(out, "slim_queue_depth{{node=\"{node}\"}} {}", qs.iter().map(|q| q.depth).sum::<usize>());
    }
    let _ = writeln!(
        out,
        "# HELP slim_connection_queue_depth Messages waiting in one connection's outbound queue (bound {}).\n\
         # TYPE slim_connection_queue_depth gauge",
        crate::node::QUEUE_CAPACITY
    );
    for ((node, _, _), qs) in rows.iter().zip(&queues) {
        for q in qs {
            let kind = if q.local { "local" } else { "remote" };
            let _ = writeln!(
                out,
                "slim_connection_queue_depth{{node=\"{node}\",conn=\"{}\",kind=\"{kind}\"}} {}",
                q.conn, q.depth
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_help_type_and_labelled_samples() {
        let text = render(&[Node::new("n\"1")]);
        assert!(text.contains("# TYPE slim_messages_routed_total counter"), "{text}");
        assert!(text.contains("slim_messages_routed_total{node=\"n\\\"1\"} 0"), "{text}");
        assert!(text.contains("slim_messages_dropped_total{node=\"n\\\"1\",reason=\"no_route\"} 0"), "{text}");
        assert!(text.contains("# TYPE slim_queue_depth gauge"), "{text}");
        assert!(text.contains("slim_queue_depth{node=\"n\\\"1\"} 0"), "{text}");
    }
}
