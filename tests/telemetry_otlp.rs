//! OpenTelemetry: a publish, the hub node it crosses and the receiving app form one trace,
//! exported over OTLP/gRPC to a collector on loopback (a real tonic server in this test).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use slim_bindings::session::SessionConfig;
use slim_bindings::telemetry::{OpenTelemetryConfig, TracingConfig, init_tracing, otel};
use tokio_stream::wrappers::TcpListenerStream;

/// One span as the collector received it.
#[derive(Clone)]
struct Span {
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
    name: String,
    service: String,
}

/// Every span received.
type Received = Arc<Mutex<Vec<Span>>>;

#[derive(Clone, Default)]
struct Collector {
    spans: Received,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.push(Span {
                        trace: s.trace_id,
                        id: s.span_id,
                        parent: s.parent_span_id,
                        name: s.name,
                        service: service.clone(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

async fn start_collector() -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let collector = Collector::default();
    let spans = collector.spans.clone();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (format!("http://{addr}"), spans)
}

fn otel_config(endpoint: &str) -> TracingConfig {
    TracingConfig {
        log_level: "warn".into(),
        opentelemetry: Some(OpenTelemetryConfig {
            enabled: true,
            grpc: Some(serde_json::json!({ "endpoint": endpoint })),
            service_name: Some("slim-otlp-test".into()),
            // Every message, so the one traced publish below is certainly recorded.
            sampling_ratio: Some(1.0),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn unicast() -> SessionConfig {
    SessionConfig::Unicast {
        timeout: Some(Duration::from_millis(500)),
        max_retries: Some(5),
        mls_enabled: false,
        liveness: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_route_and_receive_share_one_trace_and_a_dead_collector_breaks_nothing() {
    // Off: nothing is added to messages.
    assert!(!otel::active());
    let alice = app("alice", "secret").await;
    let bob = app("bob", "secret").await;
    let _hub = hub_with(&alice, &[&bob]).await;

    let sid = alice.create_session(unicast()).await.unwrap();
    alice.publish(sid, to(&name("bob"), b"untraced")).await.unwrap();
    let (first, _) = recv_new(&bob).await;
    assert!(!first.metadata.contains_key("traceparent"), "{:?}", first.metadata);
    recv(&bob, sid).await.unwrap();

    // On, towards a collector on loopback.
    let (collector, spans) = start_collector().await;
    init_tracing(&otel_config(&collector)).unwrap();
    assert!(otel::active());
    let mut req = to(&name("bob"), b"traced");
    req.metadata = Some(HashMap::from([("k".to_string(), "v".to_string())]));
    alice.publish(sid, req).await.unwrap();
    let (info, payload) = recv(&bob, sid).await.unwrap();
    assert_eq!(payload, b"traced");
    assert_eq!(info.metadata.get("k").map(String::as_str), Some("v"));
    let traceparent = info.metadata.get("traceparent").expect("traceparent reaches the receiver").clone();
    let trace_hex = traceparent.split('-').nth(1).expect("W3C traceparent").to_string();

    tokio::task::spawn_blocking(otel::flush).await.unwrap().unwrap();
    let wanted = |spans: &Received| {
        let spans = spans.lock().unwrap();
        let in_trace: Vec<&Span> = spans.iter().filter(|s| hex(&s.trace) == trace_hex).collect();
        // From the receive span up its parents: publish at alice, a route span at alice's node, at
        // the hub and at bob's node, receive at bob. Each node passes the trace context on with
        // its own hop written into it (the hub therefore re-encodes the message: were it to
        // forward the frame it received, bob's node's span would hang under alice's node's).
        in_trace.iter().filter(|s| s.name == "slim.receive").any(|receive| {
            let mut chain = vec![receive.name.as_str()];
            let mut parent = &receive.parent;
            while let Some(p) = in_trace.iter().find(|s| &s.id == parent) {
                chain.push(p.name.as_str());
                parent = &p.parent;
                if chain.len() > 8 {
                    break;
                }
            }
            chain == ["slim.receive", "slim.route", "slim.route", "slim.route", "slim.publish"]
        })
    };
    let s = spans.clone();
    wait_until("publish, three routes and receive chained in one trace", move || wanted(&s)).await;
    assert!(spans.lock().unwrap().iter().all(|s| s.service.contains("slim-otlp-test")));

    // A collector nobody listens on: messaging goes on unaffected.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    init_tracing(&otel_config(&dead)).unwrap();
    for i in 0..200u32 {
        alice.publish(sid, to(&name("bob"), &i.to_le_bytes())).await.unwrap();
    }
    for i in 0..200u32 {
        let (_, p) = recv(&bob, sid).await.unwrap();
        assert_eq!(p, i.to_le_bytes());
    }

    // sampling_ratio 0: no new traces, but a sampled context the app supplies is continued.
    let mut unsampled = otel_config(&collector);
    if let Some(o) = unsampled.opentelemetry.as_mut() {
        o.sampling_ratio = Some(0.0);
    }
    init_tracing(&unsampled).unwrap();
    alice.publish(sid, to(&name("bob"), b"not sampled")).await.unwrap();
    let (info, _) = recv(&bob, sid).await.unwrap();
    assert!(!info.metadata.contains_key("traceparent"), "{:?}", info.metadata);
    let theirs = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut req = to(&name("bob"), b"theirs");
    req.metadata = Some(HashMap::from([("traceparent".to_string(), theirs.to_string())]));
    alice.publish(sid, req).await.unwrap();
    let (info, _) = recv(&bob, sid).await.unwrap();
    let continued = info.metadata.get("traceparent").expect("the app's trace is continued");
    assert!(continued.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && continued != theirs, "{continued}");
    let mut bad = unsampled.clone();
    if let Some(o) = bad.opentelemetry.as_mut() {
        o.sampling_ratio = Some(1.5);
    }
    assert!(init_tracing(&bad).unwrap_err().to_string().contains("sampling_ratio"));

    // Off again (a second init_tracing): no more trace context on messages.
    init_tracing(&TracingConfig { log_level: "warn".into(), ..Default::default() }).unwrap();
    assert!(!otel::active());
    alice.publish(sid, to(&name("bob"), b"quiet")).await.unwrap();
    let (info, _) = recv(&bob, sid).await.unwrap();
    assert!(!info.metadata.contains_key("traceparent"));
    tokio::task::spawn_blocking(otel::shutdown).await.unwrap();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
