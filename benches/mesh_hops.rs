//! Round trip through a chain of 1, 2 and 3 standalone `slim` nodes with no Python and no session
//! layer: what each extra node adds (docs/mesh.md, "Runtime").
//!
//!     requester ── node 1 ── node 2 ── node 3 ── responder     (node k+1 dials node k)
//!
//! The requester and the responder are raw local connections of two embedded nodes in this process
//! (one thread); every `slim` is its own process, the binary cargo built with this bench. For each
//! runtime variant (`runtime.n_cores` of every node: `MESH_HOPS_CORES`, default "0,1" = one worker
//! per core (at most 4) against one thread) and chain length, rounds are interleaved
//! (`MESH_HOPS_ROUNDS`, default 5) with `MESH_HOPS_TRIPS` sequential 100-byte round trips each
//! (default 2000), `MESH_HOPS_GAP_US` µs apart (default 0: back to back; Python apps leave a few
//! hundred between a reply and the next request); `MESH_HOPS_LENGTHS` (default "1,2,3") picks the chain lengths. Printed: median over rounds of the p50 and p90 round trip, the p50 added per
//! extra node, and per node and round trip its CPU µs and voluntary context switches (from
//! /proc/<pid>/task/*/schedstat and status). Every wait is bounded.
//!
//! `cargo bench --bench mesh_hops`

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use slim_bindings::node::{ClientConfig, LocalConnection, LocalDelivery, Node};
use slim_bindings::wire::builders::{self, Flags};
use slim_bindings::wire::{Message, Name};

// The integration tests' helpers: the `slim` binary as a process, P2P publishes built by hand.
#[allow(dead_code)]
#[path = "../tests/common/local.rs"]
mod local;
#[allow(dead_code)]
#[path = "../tests/common/slim_process.rs"]
mod slim_process;

use local::p2p_publish;
use slim_process::SlimProcess;

/// Bound on any single wait of this bench (also `local`'s).
const WAIT: Duration = Duration::from_secs(10);

/// A `slim` process (killed when dropped) and its config file (removed when dropped).
struct Slim {
    process: SlimProcess,
    addr: SocketAddr,
    config: PathBuf,
}

impl Slim {
    fn start(dir: &Path, label: &str, cores: usize, dial: Option<SocketAddr>) -> Slim {
        let mut yaml = format!(
            "tracing: {{log_level: info}}\nruntime: {{n_cores: {cores}}}\nservices:\n  slim/0:\n    node_id: {label}\n    dataplane:\n      servers: [{{endpoint: \"127.0.0.1:0\", tls: {{insecure: true}}}}]\n"
        );
        if let Some(a) = dial {
            yaml.push_str(&format!("      clients: [{{endpoint: \"http://{a}\", tls: {{insecure: true}}}}]\n"));
        }
        let config = dir.join(format!("{label}.yaml"));
        std::fs::write(&config, yaml).expect("write a node config");
        let mut process = SlimProcess::spawn(&["--config", config.to_str().expect("utf-8 path")]);
        let addr = process.listening_addr();
        Slim { process, addr, config }
    }

    /// (CPU seconds, voluntary context switches) of all its threads so far.
    fn sched(&self) -> (f64, u64) {
        let (mut cpu, mut switches) = (0.0, 0);
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.process.id())) else { return (cpu, switches) };
        for t in tasks.flatten() {
            let p = t.path();
            if let Ok(s) = std::fs::read_to_string(p.join("schedstat")) {
                cpu += s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 1e9;
            }
            if let Ok(s) = std::fs::read_to_string(p.join("status")) {
                switches += s
                    .lines()
                    .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        (cpu, switches)
    }
}

impl Drop for Slim {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
    }
}

fn publish(src: &Name, dst: &Name, body: &[u8]) -> Message {
    p2p_publish(src, dst, Flags::one(), body)
}

async fn next_message(app: &mut LocalConnection, within: Duration) -> Option<Message> {
    match tokio::time::timeout(within, app.rx.recv()).await {
        Ok(Some(LocalDelivery::Message(m))) => Some(m),
        _ => None,
    }
}

struct Outcome {
    p50_us: f64,
    p90_us: f64,
    node_cpu_us: f64,
    node_switches: f64,
}

/// One chain of `length` nodes with `cores` each: `trips` round trips after a bounded warm-up.
async fn run_chain(dir: &Path, length: usize, cores: usize, trips: usize, gap: Duration) -> Outcome {
    let mut nodes: Vec<Slim> = Vec::new();
    for i in 0..length {
        let dial = nodes.last().map(|n| n.addr);
        nodes.push(Slim::start(dir, &format!("n{}-{length}-{cores}", i + 1), cores, dial));
    }
    let (q, r) = (Name::new("org", "hops", "requester", Some(1)), Name::new("org", "hops", "responder", Some(2)));
    let (req, resp) = (Node::new("requester"), Node::new("responder"));
    let head = nodes.first().expect("a node").addr;
    let tail = nodes.last().expect("a node").addr;
    let cq = req.connect(ClientConfig::insecure(format!("http://{head}"))).await.expect("requester connects");
    let cr = resp.connect(ClientConfig::insecure(format!("http://{tail}"))).await.expect("responder connects");
    let mut app_q = req.register_local();
    let mut app_r = resp.register_local();
    // Each app announces its name and routes the other's toward its node.
    app_q.tx.send(builders::subscribe(&q, &q, Flags::one().forward_to(Some(cq)))).await.expect("requester's node");
    app_q
        .tx
        .send(builders::subscribe(&q, &r.without_id(), Flags::one().recv_from(cq)))
        .await
        .expect("requester's node");
    app_r.tx.send(builders::subscribe(&r, &r, Flags::one().forward_to(Some(cr)))).await.expect("responder's node");
    app_r
        .tx
        .send(builders::subscribe(&r, &q.without_id(), Flags::one().recv_from(cr)))
        .await
        .expect("responder's node");

    let echo = tokio::spawn(async move {
        let (rq, rr) = (Name::new("org", "hops", "requester", Some(1)), Name::new("org", "hops", "responder", Some(2)));
        while let Some(m) = next_message(&mut app_r, WAIT * 3).await {
            if app_r.tx.send(publish(&rr, &rq, m.blob())).await.is_err() {
                break;
            }
        }
        app_r
    });

    // Warm-up: both names propagate through the chain; probe until a reply comes back (bounded).
    let mut warm = false;
    for _ in 0..100 {
        app_q.tx.send(publish(&q, &r, b"warm")).await.expect("requester's node");
        if next_message(&mut app_q, Duration::from_millis(100)).await.is_some() {
            warm = true;
            break;
        }
    }
    assert!(warm, "no reply through {length} node(s) within 10 s");
    // Late replies to probes sent before the route was up.
    while next_message(&mut app_q, Duration::from_millis(50)).await.is_some() {}

    let before: Vec<(f64, u64)> = nodes.iter().map(Slim::sched).collect();
    let mut samples = Vec::with_capacity(trips);
    let body = [7u8; 100];
    for _ in 0..trips {
        if !gap.is_zero() {
            // Idle time between round trips, as an app's own work would leave (blocking on purpose:
            // nothing in this process has anything to do meanwhile).
            std::thread::sleep(gap);
        }
        let t0 = Instant::now();
        app_q.tx.send(publish(&q, &r, &body)).await.expect("requester's node");
        next_message(&mut app_q, WAIT).await.expect("a reply within 10 s");
        samples.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    let (mut cpu, mut switches) = (0.0, 0u64);
    for (n, b) in nodes.iter().zip(&before) {
        let (c, s) = n.sched();
        cpu += c - b.0;
        switches += s - b.1;
    }
    samples.sort_by(f64::total_cmp);
    let per = (length * trips) as f64;
    drop(app_q);
    req.shutdown().await;
    resp.shutdown().await;
    echo.abort();
    Outcome {
        p50_us: samples[samples.len() / 2],
        p90_us: samples[samples.len() * 9 / 10],
        node_cpu_us: cpu * 1e6 / per,
        node_switches: switches as f64 / per,
    }
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is read from the command line.
    let cores: Vec<usize> = std::env::var("MESH_HOPS_CORES")
        .unwrap_or_else(|_| "0,1".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let rounds: usize = env_or("MESH_HOPS_ROUNDS", 5);
    let trips: usize = env_or("MESH_HOPS_TRIPS", 2000);
    let gap = Duration::from_micros(env_or("MESH_HOPS_GAP_US", 0u64).min(100_000));
    let lengths: Vec<usize> = std::env::var("MESH_HOPS_LENGTHS")
        .unwrap_or_else(|_| "1,2,3".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let dir = std::env::temp_dir().join(format!("slim-mesh-hops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let mut results: HashMap<(usize, usize), Vec<Outcome>> = HashMap::new();
    for round in 1..=rounds {
        for &length in &lengths {
            for &c in &cores {
                let o = rt.block_on(run_chain(&dir, length, c, trips, gap));
                println!(
                    "round {round}, n_cores {c}, {length} node(s): p50 {:.0} us, p90 {:.0} us; per node and round trip: {:.1} CPU us, {:.2} switches",
                    o.p50_us, o.p90_us, o.node_cpu_us, o.node_switches
                );
                results.entry((c, length)).or_default().push(o);
            }
        }
    }
    println!("\nmedians of {rounds} interleaved rounds, {trips} round trips of 100 bytes each");
    println!(
        "{:>8}{:>7}{:>9}{:>9}{:>17}{:>18}{:>16}",
        "n_cores", "nodes", "p50 us", "p90 us", "+p50/extra node", "node CPU us/rtt", "switches/rtt"
    );
    for &c in &cores {
        let mut base = 0.0;
        for &length in &lengths {
            let runs = &results[&(c, length)];
            let p50 = median(&mut runs.iter().map(|o| o.p50_us).collect::<Vec<_>>());
            let p90 = median(&mut runs.iter().map(|o| o.p90_us).collect::<Vec<_>>());
            let cpu = median(&mut runs.iter().map(|o| o.node_cpu_us).collect::<Vec<_>>());
            let sw = median(&mut runs.iter().map(|o| o.node_switches).collect::<Vec<_>>());
            if length == lengths[0] {
                base = p50;
            }
            let extra = if length > lengths[0] { (p50 - base) / (length - lengths[0]) as f64 } else { 0.0 };
            println!("{c:>8}{length:>7}{p50:>9.0}{p90:>9.0}{extra:>17.0}{cpu:>18.1}{sw:>16.2}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
