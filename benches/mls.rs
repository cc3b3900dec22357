//! What MLS costs a group: (1) the bare openmls operations on 100-byte payloads in a group of
//! five (one sender encrypt, one receiver decrypt), (2) group fan-out over a real hub on
//! loopback — a moderator publishing 100-byte messages to 4 members, each member an app with its
//! own node connected to the hub — with MLS off and on, in the same run.
//!
//! `cargo bench --bench mls` (release). Options after `--`: `--messages N` (fan-out messages per
//! run, default 20000), `--rounds R` (fan-out runs per mode, best kept; default 3),
//! `--ops N` (micro-benchmark operations, default 5000). Prints a table.
//!
//! Measured here (2 shared cores, load 6-15, same run, before = main at 30ed590):
//! - encrypt ≈ 52 µs before → ≈ 36 µs with the expanded signing key; decrypt ≈ 60 µs both. Left in
//!   a profile: Ed25519 verify (the sender's key is decompressed on every message) and
//!   openmls_memory_storage serialising the message secrets to JSON on every encrypt/decrypt
//!   (≈ 20% of the CPU).
//! - fan-out MLS off ≈ 28-35 k msgs/s per member both; MLS on 2.6-3.1 k before, 52-86 k after:
//!   with MLS batches (every member advertises them) a burst costs one signature, one AEAD and
//!   one wire message per up to 64 publishes, so MLS on outruns MLS off (which sends one wire
//!   message per publish).

use std::sync::Arc;
use std::time::{Duration, Instant};

use slim_bindings::app::App;
use slim_bindings::auth::SharedSecret;
use slim_bindings::mls::MlsState;
use slim_bindings::node::{ClientConfig, Node, ServerConfig};
use slim_bindings::session::{PublishRequest, SessionConfig};
use slim_bindings::wire::Name;

const MEMBERS: usize = 4;
const PAYLOAD: usize = 100;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn identity(agent: &str) -> Arc<SharedSecret> {
    Arc::new(SharedSecret::new(agent, "bench-secret").expect("identity"))
}

/// Per-operation cost of the openmls calls a 100-byte group message goes through.
fn micro(ops: usize) -> (f64, f64) {
    let id = identity("m");
    let mut moderator = MlsState::new(id.clone(), id).expect("state");
    moderator.create_group().expect("group");
    let mut members: Vec<MlsState> = (0..MEMBERS)
        .map(|i| {
            let id = identity(&format!("p{i}"));
            MlsState::new(id.clone(), id).expect("state")
        })
        .collect();
    for i in 0..MEMBERS {
        let kp = members[i].key_package().expect("key package");
        let added = moderator.add_member(&kp).expect("add");
        for earlier in members.iter_mut().take(i) {
            earlier.process_commit(&added.commit).expect("commit");
        }
        members[i].process_welcome(&added.welcome).expect("welcome");
    }
    let payload = vec![0x5A; PAYLOAD];
    let t = Instant::now();
    let ciphertexts: Vec<Vec<u8>> = (0..ops).map(|_| moderator.encrypt(&payload).expect("encrypt")).collect();
    let enc = t.elapsed().as_secs_f64() * 1e6 / ops as f64;
    let t = Instant::now();
    for c in &ciphertexts {
        std::hint::black_box(members[0].decrypt(c).expect("decrypt"));
    }
    let dec = t.elapsed().as_secs_f64() * 1e6 / ops as f64;
    (enc, dec)
}

async fn app(agent: &str) -> App {
    let id = identity(agent);
    App::new(Name::new("org", "bench", agent, None), id.clone(), id).await.expect("app")
}

/// One fan-out run: seconds from the first publish until every member read every message.
async fn fanout(tag: &str, mls: bool, messages: usize) -> f64 {
    let hub = Node::new("hub");
    let addr = hub.run_server(ServerConfig::insecure("127.0.0.1:0")).await.expect("hub serves");
    let endpoint = format!("http://{addr}");
    let moderator = app(&format!("{tag}-mod")).await;
    let conn = moderator.connect(ClientConfig::insecure(&endpoint)).await.expect("connect");
    let mut members = Vec::new();
    for i in 0..MEMBERS {
        let a = app(&format!("{tag}-m{i}")).await;
        a.connect(ClientConfig::insecure(&endpoint)).await.expect("connect");
        members.push(a);
    }
    // Let the members' subscriptions reach the hub before the discovery requests.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let topic = Name::new("org", "bench", &format!("{tag}-topic"), None);
    let cfg = SessionConfig::Multicast {
        topic: topic.clone(),
        moderator: true,
        max_retries: 10,
        timeout: Duration::from_millis(500),
        mls_enabled: mls,
        liveness: None,
    };
    let sid = moderator.create_session(cfg).await.expect("session");
    for m in &members {
        moderator.set_route(&m.name().without_id(), conn).await.expect("route");
        let handle = moderator.invite(sid, &m.name().without_id()).await.expect("invite");
        handle.joined().await.expect("joined");
    }
    let mut readers = Vec::new();
    for m in members.clone() {
        readers.push(tokio::spawn(async move {
            let (info, _) = tokio::time::timeout(Duration::from_secs(30), m.recv_new_session())
                .await
                .expect("session in time")
                .expect("session");
            let sid = info.session_id;
            let mut got = 0usize;
            let mut batch = Vec::with_capacity(256);
            while got < messages {
                batch.clear();
                match m.try_recv_session_batch(sid, &mut batch, 256) {
                    Ok(0) => {
                        let item = tokio::time::timeout(Duration::from_secs(30), m.recv_session(sid))
                            .await
                            .expect("message in time");
                        match item {
                            Ok((_, blob)) => {
                                assert_eq!(blob.len(), PAYLOAD);
                                got += 1;
                            }
                            Err(e) => panic!("member error: {e}"),
                        }
                    }
                    Ok(n) => got += n,
                    Err(e) => panic!("member error: {e}"),
                }
            }
            Instant::now()
        }));
    }
    let start = Instant::now();
    for i in 0..messages {
        let mut blob = vec![0u8; PAYLOAD];
        blob[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let req = PublishRequest { dest: Some(topic.clone()), blob: blob.into(), fanout: 1, ..Default::default() };
        moderator.publish(sid, req).await.expect("publish");
    }
    let mut last = start;
    for r in readers {
        last = last.max(r.await.expect("reader"));
    }
    let secs = (last - start).as_secs_f64();
    let _ = moderator.delete_session(sid).await;
    hub.shutdown().await;
    secs
}

fn main() {
    let messages = arg("--messages", 20_000);
    let rounds = arg("--rounds", 3);
    let ops = arg("--ops", 5_000);

    let (enc, dec) = micro(ops);
    println!("MLS operations, group of {} members, {PAYLOAD}-byte payload ({ops} ops)", MEMBERS + 1);
    println!("  {:<34} {:>10.1} µs", "encrypt (sender, per message)", enc);
    println!("  {:<34} {:>10.1} µs", "decrypt (each receiver, per message)", dec);

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mut best = [f64::MAX, f64::MAX];
    for round in 0..rounds {
        for (k, mls) in [false, true].into_iter().enumerate() {
            let secs = rt.block_on(fanout(&format!("r{round}{k}"), mls, messages));
            best[k] = best[k].min(secs);
        }
    }
    let rate = |s: f64| messages as f64 / s;
    println!();
    println!(
        "Group fan-out: moderator → {MEMBERS} members over a loopback hub, {messages} × {PAYLOAD} B, best of {rounds}"
    );
    println!("  {:<12} {:>16}", "mode", "msgs/s per member");
    println!("  {:<12} {:>16.0}", "MLS off", rate(best[0]));
    println!("  {:<12} {:>16.0}", "MLS on", rate(best[1]));
    println!("  MLS cost: {:.1}% of throughput", 100.0 * (1.0 - rate(best[1]) / rate(best[0])));
}
