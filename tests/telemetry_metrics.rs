//! `slim --metrics`: the standalone node serves its counters as Prometheus text over HTTP, and
//! exports them as OTLP metrics to a collector (a loopback tonic server here) when
//! `tracing.opentelemetry` is enabled.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::local::{Ends, ends_through, p2p_publish};
use common::slim_process::SlimProcess;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use slim_bindings::node::metrics::source;
use slim_bindings::node::{LocalDelivery, Node};
use slim_bindings::telemetry::metrics::render;
use slim_bindings::wire::Name;
use slim_bindings::wire::builders::{self, Flags};

/// `GET path` over a fresh connection: (status line, body).
fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// The value of the sample line that starts with `series` (name + labels).
fn sample(body: &str, series: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no `{series}` in:\n{body}"))
}

fn name(t: &str, id: u64) -> Name {
    Name::new("org", "ns", t, Some(id))
}

fn publish(from: &Name, to: &Name) -> slim_bindings::wire::Message {
    p2p_publish(from, to, Flags::one(), b"counted")
}

#[tokio::test]
async fn metrics_endpoint_counts_routed_and_dropped_messages() {
    let mut slim = SlimProcess::spawn(&["--endpoint", "127.0.0.1:0", "--metrics", "127.0.0.1:0"]);
    let addr = slim.addr_after("listening on ");
    let metrics = slim.addr_after("serving metrics at http://");

    let (status, body) = tokio::task::spawn_blocking(move || http_get(metrics, "/metrics")).await.unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(sample(&body, "slim_messages_routed_total{node=\"0\"}"), 0);
    assert!(body.contains("# TYPE slim_messages_dropped_total counter"), "{body}");

    let (name_a, name_b, nobody) = (name("a", 1), name("b", 2), name("nobody", 3));
    // b routes both names to slim; only `a` has a subscriber there.
    let Ends { a, b, mut app_a, app_b } = ends_through(addr, &name_a, &name_b, &[&name_a, &nobody]).await;

    // The forwarded subscription reaches slim asynchronously: resend until it routes (bounded).
    let mut delivered = false;
    for _ in 0..50 {
        app_b.tx.send(publish(&name_b, &name_a)).await.unwrap();
        if let Ok(Some(LocalDelivery::Message(_))) =
            tokio::time::timeout(Duration::from_millis(100), app_a.rx.recv()).await
        {
            delivered = true;
            break;
        }
    }
    assert!(delivered, "no message through slim within 5 s");
    app_b.tx.send(publish(&name_b, &nobody)).await.unwrap();

    // Counters live in another process: poll the endpoint until the drop shows (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (_, body) = tokio::task::spawn_blocking(move || http_get(metrics, "/metrics")).await.unwrap();
        if sample(&body, "slim_messages_dropped_total{node=\"0\",reason=\"no_route\"}") >= 1
            || Instant::now() > deadline
        {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(sample(&body, "slim_messages_dropped_total{node=\"0\",reason=\"no_route\"}") >= 1, "{body}");
    assert!(sample(&body, "slim_messages_routed_total{node=\"0\"}") >= 1, "{body}");
    assert!(sample(&body, "slim_messages_received_total{node=\"0\"}") >= 3, "{body}");
    assert_eq!(sample(&body, "slim_connections_active{node=\"0\"}"), 2, "{body}");
    assert_eq!(sample(&body, "slim_subscriptions{node=\"0\"}"), 1, "{body}");
    assert!(sample(&body, "slim_subscriptions_processed_total{node=\"0\"}") >= 1, "{body}");

    let (status, _) = tokio::task::spawn_blocking(move || http_get(metrics, "/other")).await.unwrap();
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    a.shutdown().await;
    b.shutdown().await;
}

#[test]
fn metrics_key_in_the_yaml_config_starts_the_endpoint() {
    let dir = std::env::temp_dir().join(format!("slim-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("node.yaml");
    std::fs::write(
        &path,
        "metrics:\n  endpoint: \"127.0.0.1:0\"\nservices:\n  slim/edge:\n    dataplane:\n      servers:\n        - endpoint: \"127.0.0.1:0\"\n          tls:\n            insecure: true\n",
    )
    .unwrap();
    let mut slim = SlimProcess::spawn(&["--config", path.to_str().unwrap()]);
    let metrics = slim.addr_after("serving metrics at http://");
    let (status, body) = http_get(metrics, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(sample(&body, "slim_connections_active{node=\"edge\"}"), 0);
    std::fs::remove_dir_all(&dir).ok();
}

/// One data point received by the test collector: (metric, attributes as `k=v`, value).
type Point = (String, Vec<String>, i64);

/// A loopback OTLP collector that keeps every metric data point it is sent.
#[derive(Clone, Default)]
struct MetricsCollector {
    points: std::sync::Arc<std::sync::Mutex<Vec<Point>>>,
}

#[tonic::async_trait]
impl MetricsService for MetricsCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        use opentelemetry_proto::tonic::metrics::v1::metric::Data;
        use opentelemetry_proto::tonic::metrics::v1::number_data_point;
        let mut points = self.points.lock().unwrap();
        for rm in request.into_inner().resource_metrics {
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    let dps = match m.data {
                        Some(Data::Sum(s)) => s.data_points,
                        Some(Data::Gauge(g)) => g.data_points,
                        _ => continue,
                    };
                    for dp in dps {
                        let attrs = dp
                            .attributes
                            .iter()
                            .map(|kv| {
                                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                                    Some(Value::StringValue(s)) => s.clone(),
                                    Some(Value::IntValue(i)) => i.to_string(),
                                    other => format!("{other:?}"),
                                };
                                format!("{}={v}", kv.key)
                            })
                            .collect();
                        let value = match dp.value {
                            Some(number_data_point::Value::AsInt(i)) => i,
                            Some(number_data_point::Value::AsDouble(d)) => d as i64,
                            None => continue,
                        };
                        points.push((m.name.clone(), attrs, value));
                    }
                }
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}

impl MetricsCollector {
    /// The latest value of `metric` whose attributes include every one of `attrs`.
    fn latest(&self, metric: &str, attrs: &[&str]) -> Option<i64> {
        let points = self.points.lock().unwrap();
        points
            .iter()
            .rev()
            .find(|(name, have, _)| name == metric && attrs.iter().all(|a| have.iter().any(|h| h == a)))
            .map(|(_, _, v)| *v)
    }
}

async fn start_metrics_collector() -> (SocketAddr, MetricsCollector) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let collector = MetricsCollector::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MetricsServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, collector)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_counters_are_exported_as_otlp_metrics() {
    let (collector_addr, collector) = start_metrics_collector().await;
    let dir = std::env::temp_dir().join(format!("slim-otlp-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("node.yaml");
    std::fs::write(
        &path,
        format!(
            "tracing:\n  log_level: info\n  opentelemetry:\n    enabled: true\n    service_name: slim-node-test\n    \
             metrics_interval_secs: 1\n    grpc:\n      endpoint: \"http://{collector_addr}\"\n\
             metrics:\n  endpoint: \"127.0.0.1:0\"\n\
             services:\n  slim/hub:\n    dataplane:\n      servers:\n        - endpoint: \"127.0.0.1:0\"\n          tls:\n            insecure: true\n"
        ),
    )
    .unwrap();
    let mut slim = SlimProcess::spawn(&["--config", path.to_str().unwrap()]);
    let addr = slim.addr_after("listening on ");
    let metrics = slim.addr_after("serving metrics at http://");

    let (name_a, name_b, nobody) = (name("a", 1), name("b", 2), name("nobody", 3));
    let Ends { a, b, mut app_a, app_b } = ends_through(addr, &name_a, &name_b, &[&name_a, &nobody]).await;
    let mut delivered = 0;
    for _ in 0..200 {
        app_b.tx.send(publish(&name_b, &name_a)).await.unwrap();
        if let Ok(Some(LocalDelivery::Message(_))) =
            tokio::time::timeout(Duration::from_millis(100), app_a.rx.recv()).await
        {
            delivered += 1;
            if delivered == 20 {
                break;
            }
        }
    }
    assert_eq!(delivered, 20, "messages through the hub");
    app_b.tx.send(publish(&name_b, &nobody)).await.unwrap();

    // Exports come every second: wait (bounded) for one that has seen all the traffic.
    let node = "node=hub";
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let routed = collector.latest("slim.messages.routed", &[node]).unwrap_or(0);
        let no_route = collector.latest("slim.messages.dropped", &[node, "reason=no_route"]).unwrap_or(0);
        // Each instrument is read at its own instant: wait until every one has caught up.
        let received = collector.latest("slim.messages.received", &[node]).unwrap_or(0);
        if (routed >= 20 && no_route >= 1 && received >= 22) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let get = |m: &str, attrs: &[&str]| {
        collector
            .latest(m, attrs)
            .unwrap_or_else(|| panic!("no {m} {attrs:?} in {:?}", collector.points.lock().unwrap()))
    };
    assert!(get("slim.messages.routed", &[node]) >= 20);
    // Publishes sent before the forwarded subscription reached the hub count here too.
    assert!(get("slim.messages.dropped", &[node, "reason=no_route"]) >= 1);
    assert_eq!(get("slim.messages.dropped", &[node, "reason=invalid"]), 0);
    // 20 delivered, the one for nobody, and a's forwarded subscription.
    assert!(get("slim.messages.received", &[node]) >= 22);
    assert_eq!(get("slim.connections.active", &[node]), 2);
    assert_eq!(get("slim.connections.opened", &[node]), 2);
    assert_eq!(get("slim.subscriptions", &[node]), 1);
    assert!(get("slim.subscriptions.processed", &[node]) >= 1);
    // Both peers read promptly: nothing (or next to nothing, if sampled mid-send) is waiting.
    let cap = slim_bindings::node::QUEUE_CAPACITY as i64;
    assert!((0..cap).contains(&get("slim.queue.depth", &[node])));
    assert!((0..cap).contains(&get("slim.connection.queue.depth", &[node, "kind=remote"])));

    // The text endpoint shows the same queue gauges.
    let (_, body) = tokio::task::spawn_blocking(move || http_get(metrics, "/metrics")).await.unwrap();
    assert!(body.contains("# TYPE slim_queue_depth gauge"), "{body}");
    assert_eq!(sample(&body, "slim_queue_depth{node=\"hub\"}"), 0);
    assert_eq!(body.lines().filter(|l| l.starts_with("slim_connection_queue_depth{node=\"hub\"")).count(), 2, "{body}");
    a.shutdown().await;
    b.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn queue_depth_gauges_show_messages_an_app_has_not_taken() {
    let node = Node::new("q");
    let reader = node.register_local();
    let writer = node.register_local();
    let (me, peer) = (name("reader", 1), name("writer", 2));
    writer.tx.send(builders::subscribe(&me, &me, Flags::one().recv_from(reader.conn_id))).await.unwrap();
    for _ in 0..5 {
        writer.tx.send(publish(&peer, &me)).await.unwrap();
    }
    let series = format!("slim_connection_queue_depth{{node=\"q\",conn=\"{}\",kind=\"local\"}}", reader.conn_id);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut text = render(&source(std::slice::from_ref(&node)));
    while sample(&text, &series) < 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        text = render(&source(std::slice::from_ref(&node)));
    }
    assert_eq!(sample(&text, &series), 5, "{text}");
    assert_eq!(sample(&text, "slim_queue_depth{node=\"q\"}"), 5, "{text}");
    let q = node.queue_depths().into_iter().find(|q| q.conn == reader.conn_id).unwrap();
    assert_eq!((q.depth, q.capacity, q.local), (5, slim_bindings::node::QUEUE_CAPACITY, true));
    let mut reader = reader;
    for _ in 0..5 {
        reader.rx.recv().await.unwrap();
    }
    assert_eq!(sample(&render(&source(std::slice::from_ref(&node))), &series), 0);
    node.shutdown().await;
}
