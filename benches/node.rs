//! Node hot paths: subscription-table lookups, the protobuf codec of a 100-byte publish, and one
//! message routed between two local connections of a node.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message as _;
use slim_bindings::node::{LocalDelivery, Node, SubscriptionTable};
use slim_bindings::wire::builders::{self, Flags, PublishSpec};
use slim_bindings::wire::{Message, Name, SessionMessageType, SessionType};

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

fn table(c: &mut Criterion) {
    // 1000 types, 4 ids each, spread over 16 remote and 4 local connections
    let mut t = SubscriptionTable::new();
    for ty in 0..1000u64 {
        for id in 0..4u64 {
            let n = Name::new("org", "ns", &format!("svc-{ty}"), Some(id));
            t.add(&n, (ty + id) % 16, false);
            if id == 0 {
                t.add(&n, 100 + ty % 4, true);
            }
        }
    }
    let exact = Name::new("org", "ns", "svc-500", Some(2));
    let exact_local = Name::new("org", "ns", "svc-500", Some(0));
    let any = Name::new("org", "ns", "svc-500", None);
    let missing = Name::new("org", "ns", "nobody", None);
    let mut g = c.benchmark_group("subscription_table");
    g.throughput(Throughput::Elements(1));
    g.bench_function("match_one_exact_id", |b| b.iter(|| t.match_one(black_box(&exact), 999)));
    g.bench_function("match_one_exact_id_local_first", |b| b.iter(|| t.match_one(black_box(&exact_local), 999)));
    g.bench_function("match_one_any_id", |b| b.iter(|| t.match_one(black_box(&any), 999)));
    let mut out = Vec::with_capacity(32);
    g.bench_function("match_all_any_id", |b| b.iter(|| t.match_all(black_box(&any), 999, &mut out).map(|_| out.len())));
    g.bench_function("no_match", |b| b.iter(|| t.match_one(black_box(&missing), 999)));
    g.finish();
}

fn codec(c: &mut Criterion) {
    let src = Name::new("org", "ns", "sender", Some(1));
    let dst = Name::new("org", "ns", "receiver", Some(2));
    let msg = publish_100(&src, &dst);
    let bytes = msg.encode_to_vec();
    let mut g = c.benchmark_group("codec_publish_100B");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    let mut buf = Vec::with_capacity(bytes.len());
    g.bench_function("encode", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&msg).encode(&mut buf).map(|_| buf.len())
        })
    });
    g.bench_function("decode", |b| b.iter(|| Message::decode(black_box(bytes.as_slice()))));
    g.bench_function("clone", |b| b.iter_batched(|| (), |_| black_box(&msg).clone(), BatchSize::SmallInput));
    g.finish();
}

fn routing(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let node = Node::new("bench");
    let src = Name::new("org", "ns", "sender", Some(1));
    let dst = Name::new("org", "ns", "receiver", Some(2));
    let (sender, mut receiver) = rt.block_on(async {
        let sender = node.register_local();
        let receiver = node.register_local();
        // installed through the sender's own connection (recvFrom) so it is ordered before the publishes
        let route = builders::subscribe(&dst, &dst, Flags::one().recv_from(receiver.conn_id));
        sender.tx.send(route).await.unwrap();
        (sender, receiver)
    });
    let msg = publish_100(&src, &dst);
    // make sure the subscription is in before timing
    rt.block_on(async {
        sender.tx.send(msg.clone()).await.unwrap();
        receiver.rx.recv().await.unwrap();
    });
    let mut g = c.benchmark_group("node_routing");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("local_to_local_publish", |b| {
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
                    match receiver.rx.recv().await {
                        Some(LocalDelivery::Message(m)) => {
                            black_box(m);
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
                producer.await.unwrap();
                start.elapsed()
            })
        })
    });
    g.finish();
}

/// The benchmarks `criterion_main!` runs.
mod group {
    // criterion_group! writes its `pub fn` without a doc comment: in this private module it is not
    // public, so the missing_docs lint (Cargo.toml) does not ask for one.
    use super::*;
    criterion_group!(benches, table, codec, routing);
}
criterion_main!(group::benches);
