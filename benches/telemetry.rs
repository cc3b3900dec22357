//! Cost of OpenTelemetry on the hot path: one publish routed between two local connections of a
//! node with export off (the hook is one atomic load) and on (a span per hop, `traceparent`
//! extracted and re-injected), plus the bare per-hop span cost. Export goes to a loopback port
//! nobody listens on, so only the in-process cost is measured.
//!
//! `cargo bench --bench telemetry`. Measured here (2 shared cores, noisy): routing 3.8 µs/msg off,
//! 7.0 µs/msg on; the hook while off ≈ 9 ns (an empty map included), one span hop ≈ 0.8 µs.
//! "On" here means a sampled message (`sampling_ratio` 1.0, a sampled `traceparent` on the
//! message); `hop_on_untraced` is the common case under the default 1% sampling: a node hop on a
//! message without trace context (no span, nothing added). End to end: `task bench:otel`.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use slim_bindings::node::{LocalDelivery, Node};
use slim_bindings::telemetry::otel::{self, Hop};
use slim_bindings::telemetry::{OpenTelemetryConfig, TracingConfig, init_tracing};
use slim_bindings::wire::builders::{self, Flags, PublishSpec};
use slim_bindings::wire::{Message, Name, SessionMessageType, SessionType};

/// A sampled W3C context, as a traced publish carries it.
const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn publish_100(src: &Name, dst: &Name) -> Message {
    builders::publish(
        &PublishSpec {
            source: src,
            destination: dst,
            flags: Flags::one(),
            session_type: SessionType::SessionPointToPoint,
            message_type: SessionMessageType::P2PMsg,
            session_id: 12345,
            message_id: 42,
            original_names: true,
            content_type: "msg",
        },
        vec![0xAB; 100],
        HashMap::from([("SLIM_IDENTITY".to_string(), "secret:org/ns/app".to_string())]),
    )
}

fn set_otel(on: bool) {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).unwrap();
    let cfg = TracingConfig {
        log_level: "error".into(),
        opentelemetry: Some(OpenTelemetryConfig {
            enabled: on,
            grpc: Some(serde_json::json!({ "endpoint": format!("http://{dead}") })),
            sampling_ratio: Some(1.0),
            ..Default::default()
        }),
        ..Default::default()
    };
    init_tracing(&cfg).unwrap();
    assert_eq!(otel::active(), on);
}

fn routing(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let node = Node::new("bench");
    let src = Name::new("org", "ns", "sender", Some(1));
    let dst = Name::new("org", "ns", "receiver", Some(2));
    let (sender, mut receiver) = rt.block_on(async {
        let sender = node.register_local();
        let receiver = node.register_local();
        let route = builders::subscribe(&dst, &dst, Flags::one().recv_from(receiver.conn_id));
        sender.tx.send(route).await.unwrap();
        (sender, receiver)
    });
    let untraced = publish_100(&src, &dst);
    let mut traced = untraced.clone();
    traced.metadata.insert(otel::TRACEPARENT.to_string(), SAMPLED.to_string());
    rt.block_on(async {
        sender.tx.send(untraced.clone()).await.unwrap();
        receiver.rx.recv().await.unwrap();
    });
    let mut g = c.benchmark_group("otel_routing");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(5));
    for on in [false, true] {
        set_otel(on);
        let msg = if on { &traced } else { &untraced };
        g.bench_function(if on { "local_publish_otel_on" } else { "local_publish_otel_off" }, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    let tx = sender.tx.clone();
                    let m = msg.clone();
                    let producer = tokio::spawn(async move {
                        for _ in 0..iters {
                            if tx.send(m.clone()).await.is_err() {
                                break;
                            }
                        }
                    });
                    for _ in 0..iters {
                        if let Some(LocalDelivery::Message(m)) = receiver.rx.recv().await {
                            black_box(m);
                        }
                    }
                    let _ = producer.await;
                    start.elapsed()
                })
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("otel_hop");
    g.bench_function("hook_off", |b| {
        set_otel(false);
        b.iter(|| {
            let mut m: HashMap<String, String> = HashMap::new();
            if otel::active() {
                otel::hop(Hop::Route, &mut m, "bench");
            }
            black_box(m)
        })
    });
    g.bench_function("hop_on", |b| {
        set_otel(true);
        b.iter(|| {
            let mut m: HashMap<String, String> = HashMap::from([(otel::TRACEPARENT.to_string(), SAMPLED.to_string())]);
            otel::hop(Hop::Route, &mut m, "bench");
            black_box(m)
        })
    });
    g.bench_function("hop_on_untraced", |b| {
        set_otel(true);
        b.iter(|| {
            let mut m: HashMap<String, String> = HashMap::new();
            otel::hop(Hop::Route, &mut m, "bench");
            black_box(m)
        })
    });
    g.finish();
    set_otel(false);
}

/// The benchmarks `criterion_main!` runs.
mod group {
    // criterion_group! writes its `pub fn` without a doc comment: in this private module it is not
    // public, so the missing_docs lint (Cargo.toml) does not ask for one.
    use super::*;
    criterion_group!(benches, routing);
}
criterion_main!(group::benches);
