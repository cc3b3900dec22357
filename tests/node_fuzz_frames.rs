//! A client that sends random and mutated frames on its own connection never disturbs the sessions
//! of other connections: a real node on a loopback port, a reliable point-to-point session and an
//! MLS group between apps on other connections, and one raw gRPC stream that sends random bytes and
//! mutations of real messages (subscriptions with node-local control flags naming other
//! connections, publishes to the apps with valid and invalid identities, group control messages).
//! Every session message still arrives exactly once and in order, no session reports an error, and
//! nothing panics.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use prost::Message as _;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use slim_bindings::app::App;
use slim_bindings::session::SessionConfig;
use slim_bindings::wire::builders::{self, Flags, PublishSpec};
use slim_bindings::wire::{Name, SessionMessageType, SessionType};

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Real messages the attacker mutates: subscriptions with node-local control flags naming small
/// connection ids (the node numbers its connections from 0), publishes to the victims' full names
/// and to the group channel, with the group's secret and without.
///
/// Subscriptions never name a victim's exact name: subscribing to another app's full name is not
/// garbage but a deliberate takeover of its traffic (anycast picks one subscriber), which names
/// that no random mutation reaches (three 64-bit hashes and an id) make a separate matter.
fn templates(victims: &[Name]) -> Vec<Vec<u8>> {
    let me = Name::new("org", "ns", "mallory", Some(66));
    let mut sub_names = vec![me.clone(), name("chat"), name("bob"), name("m1")];
    sub_names.extend(["alice", "bob", "mod", "m1", "m2"].map(|a| Name::new("org", "ns", a, Some(66))));
    let mut out = Vec::new();
    for conn in 0..10u64 {
        for t in &sub_names {
            out.push(builders::subscribe(&me, t, Flags::one().recv_from(conn)).encode_to_vec());
            out.push(builders::unsubscribe(&me, t, Flags::one().recv_from(conn)).encode_to_vec());
            out.push(builders::subscribe(&me, t, Flags::one().forward_to(Some(conn))).encode_to_vec());
            out.push(builders::unsubscribe(&me, t, Flags::one().forward_to(Some(conn))).encode_to_vec());
        }
    }
    let mut targets = victims.to_vec();
    targets.push(name("chat"));
    let kinds = [
        (SessionMessageType::P2PMsg, SessionType::SessionPointToPoint),
        (SessionMessageType::P2PReliable, SessionType::SessionPointToPoint),
        (SessionMessageType::P2PAck, SessionType::SessionPointToPoint),
        (SessionMessageType::ChannelDiscoveryRequest, SessionType::SessionPointToPoint),
        (SessionMessageType::MulticastMsg, SessionType::SessionMulticast),
        (SessionMessageType::RtxRequest, SessionType::SessionMulticast),
        (SessionMessageType::ChannelJoinRequest, SessionType::SessionMulticast),
        (SessionMessageType::ChannelLeaveRequest, SessionType::SessionMulticast),
        (SessionMessageType::ChannelMlsCommit, SessionType::SessionMulticast),
        (SessionMessageType::ChannelJoinReply, SessionType::SessionPointToPoint),
        (SessionMessageType::ChannelMlsWelcome, SessionType::SessionMulticast),
        (SessionMessageType::RtxReply, SessionType::SessionMulticast),
        (SessionMessageType::BeaconMulticast, SessionType::SessionMulticast),
    ];
    for (i, t) in targets.iter().enumerate() {
        for (k, (message_type, session_type)) in kinds.iter().enumerate() {
            for secret in ["secret", "wrong"] {
                let spec = PublishSpec {
                    source: &me,
                    destination: t,
                    flags: if k % 2 == 0 { Flags::all(50) } else { Flags::one().forward_to(Some(i as u64)) },
                    session_type: *session_type,
                    message_type: *message_type,
                    session_id: 1000 + k as u32,
                    message_id: k as u32,
                    original_names: k % 3 != 0,
                    content_type: "msg",
                };
                let meta = HashMap::from([
                    ("SLIM_IDENTITY".to_string(), format!("{secret}:mallory")),
                    ("MLS_ENCRYPTED".to_string(), "true".to_string()),
                    ("SLIM_MLS_BATCH".to_string(), "3".to_string()),
                    ("MLS_INIT_COMMIT_ID".to_string(), "7".to_string()),
                ]);
                out.push(builders::publish(&spec, vec![k as u8; 40], meta).encode_to_vec());
            }
        }
    }
    out
}

fn mutate(rng: &mut StdRng, frame: &mut Vec<u8>) {
    for _ in 0..rng.random_range(0..4u32) {
        let len = frame.len();
        match rng.random_range(0..5u8) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                frame[i] ^= 1 << rng.random_range(0..8u32);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                frame[i] = rng.random();
            }
            2 if len > 0 => frame.truncate(rng.random_range(0..len)),
            3 => {
                let i = rng.random_range(0..=len);
                frame.insert(i, rng.random());
            }
            _ => {}
        }
    }
}

async fn attack(endpoint: &str, victims: &[Name], frames: usize, seconds: u64, seed: u64) -> usize {
    let (tx, mut inbound) = raw_peer::open(endpoint).await;
    // Whatever the node sends back is read and ignored, so the node never blocks on this client.
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
    let templates = templates(victims);
    let mut rng = StdRng::seed_from_u64(seed);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut sent = 0;
    while sent < frames && Instant::now() < deadline {
        let frame = if rng.random_range(0..4u8) == 0 {
            let n = rng.random_range(0..256usize);
            (0..n).map(|_| rng.random()).collect()
        } else {
            let mut f = templates[rng.random_range(0..templates.len())].clone();
            mutate(&mut rng, &mut f);
            f
        };
        if tx.send(frame).await.is_err() {
            break;
        }
        sent += 1;
        if sent % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    drop(tx);
    drain.abort();
    sent
}

fn group(moderator: bool) -> SessionConfig {
    SessionConfig::Multicast {
        topic: name("chat"),
        moderator,
        max_retries: 10,
        timeout: Duration::from_millis(200),
        mls_enabled: true,
        liveness: None,
    }
}

/// Sends `n` numbered messages on `sid` to `dest` while the attack runs.
async fn send_numbered(app: &App, sid: u32, dest: &Name, n: u32) {
    for i in 0..n {
        app.publish(sid, to(dest, &i.to_le_bytes())).await.expect("publish");
        if i % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Reads `n` numbered messages on `sid`: each once, in order, no error.
async fn expect_numbered(app: &App, sid: u32, n: u32, who: &str) {
    for i in 0..n {
        let (_, p) = recv(app, sid).await.unwrap_or_else(|e| panic!("{who}: message {i}: {e}"));
        assert_eq!(p, i.to_le_bytes(), "{who}: message {i} out of order or duplicated");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_mutated_frames_on_one_connection_never_disturb_other_sessions() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
    let seed: u64 = std::env::var("SLIM_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("SLIM_FUZZ_SEED={seed}");

    let (hub, endpoint) = hub().await;
    let (alice, bob) = (app("alice", "secret").await, app("bob", "secret").await);
    let (moderator, m1, m2) = (app("mod", "secret").await, app("m1", "secret").await, app("m2", "secret").await);
    let ca = connect(&alice, &endpoint).await;
    let cm = connect(&moderator, &endpoint).await;
    for a in [&bob, &m1, &m2] {
        connect(a, &endpoint).await;
        wait_subscribed(&hub, &a.name()).await;
    }
    alice.set_route(&name("bob"), ca).await.unwrap();
    moderator.set_route(&name("m1"), cm).await.unwrap();
    moderator.set_route(&name("m2"), cm).await.unwrap();

    let p2p = alice
        .create_session(SessionConfig::Unicast {
            timeout: Some(Duration::from_millis(200)),
            max_retries: Some(10),
            mls_enabled: false,
            liveness: None,
        })
        .await
        .unwrap();
    alice.publish(p2p, to(&name("bob"), b"hello")).await.unwrap();
    let (first, _) = recv_new(&bob).await;
    assert_eq!(first.session_id, p2p);
    // The notification carries the first message, which the session also delivers.
    assert_eq!(recv(&bob, p2p).await.unwrap().1, b"hello");
    let gid = moderator.create_session(group(true)).await.unwrap();
    for m in ["m1", "m2"] {
        moderator.invite(gid, &name(m)).await.unwrap().joined().await.unwrap();
    }
    // Members hear of the session with its first message.
    moderator.publish(gid, to(&name("chat"), b"start")).await.unwrap();
    for m in [&m1, &m2] {
        let (info, p) = recv_new(m).await;
        assert_eq!((info.session_id, p.as_slice()), (gid, b"start".as_slice()));
        assert_eq!(recv(m, gid).await.unwrap().1, b"start");
    }

    const N: u32 = 300;
    // The attacker knows every victim's full name (with its instance id).
    let victims: Vec<Name> = [&alice, &bob, &moderator, &m1, &m2].iter().map(|a| a.name()).collect();
    let attacker = tokio::spawn({
        let endpoint = endpoint.clone();
        async move { attack(&endpoint, &victims, 40_000, 4, seed).await }
    });
    let (bob_name, chat) = (name("bob"), name("chat"));
    tokio::join!(
        send_numbered(&alice, p2p, &bob_name, N),
        send_numbered(&moderator, gid, &chat, N),
        expect_numbered(&bob, p2p, N, "bob"),
        expect_numbered(&m1, gid, N, "m1"),
        expect_numbered(&m2, gid, N, "m2"),
    );
    let sent = attacker.await.expect("attacker task");
    // After the attack the sessions still work both ways.
    bob.publish(p2p, reply(&first, b"still here")).await.unwrap();
    assert_eq!(recv(&alice, p2p).await.unwrap().1, b"still here");
    m1.publish(gid, to(&name("chat"), b"from m1")).await.unwrap();
    assert_eq!(recv(&m2, gid).await.unwrap().1, b"from m1");
    assert_eq!(recv(&moderator, gid).await.unwrap().1, b"from m1");

    let stats = hub.stats();
    eprintln!("attacker sent {sent} frames; node stats {stats:?}");
    assert!(sent > 1000, "the attack sent only {sent} frames");
    assert!(stats.dropped_malformed > 0, "no malformed frame reached the node: {stats:?}");
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "something panicked");
}
