//! The `slim` binary: starts, logs one listening line with the bound address, routes between two
//! nodes, stays small, and exits 0 on SIGTERM/SIGINT.

mod common;

use std::process::Command;
use std::time::Duration;

use common::local::{Ends, ends_through, p2p_publish};
use common::slim_process::{BIN, SlimProcess};
use slim_bindings::node::LocalDelivery;
use slim_bindings::wire::Name;
use slim_bindings::wire::builders::Flags;

fn name(t: &str, id: u64) -> Name {
    Name::new("org", "ns", t, Some(id))
}

#[tokio::test]
async fn slim_routes_between_two_nodes_and_exits_cleanly_on_sigterm() {
    let mut slim = SlimProcess::spawn(&["--endpoint", "127.0.0.1:0"]);
    let addr = slim.listening_addr();
    assert_ne!(addr.port(), 0);
    // The idle resident size of the release binary is measured by `task bench:mesh` (a test
    // build maps its debug info); the node's own (anonymous) memory is checked below, in every build.

    let (name_a, name_b) = (name("a", 1), name("b", 2));
    let Ends { a, b, mut app_a, app_b } = ends_through(addr, &name_a, &name_b, &[&name_a]).await;

    // the forwarded subscription reaches slim asynchronously: retry the publish until it routes
    let msg = p2p_publish(&name_b, &name_a, Flags::one(), b"through slim");
    let mut delivered = false;
    for _ in 0..50 {
        app_b.tx.send(msg.clone()).await.unwrap();
        if let Ok(Some(LocalDelivery::Message(m))) =
            tokio::time::timeout(Duration::from_millis(100), app_a.rx.recv()).await
        {
            assert_eq!(m.blob(), b"through slim");
            delivered = true;
            break;
        }
    }
    assert!(delivered, "no message through slim within 5 s");

    let anon = slim.status_kib("RssAnon:");
    assert!(anon < 8 * 1024, "slim's own memory after traffic: {anon} KiB");

    a.shutdown().await;
    b.shutdown().await;
    slim.signal("-TERM");
    let (code, lines) = tokio::task::spawn_blocking(move || slim.wait_exit()).await.unwrap();
    assert_eq!(code, 0, "output: {lines:?}");
    let listening = lines.iter().filter(|l| l.contains("listening")).count();
    assert_eq!(listening, 1, "exactly one listening line: {lines:?}");
}

#[test]
fn slim_reads_a_yaml_config_and_exits_on_sigint() {
    let dir = std::env::temp_dir().join(format!("slim-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("node.yaml");
    std::fs::write(
        &path,
        "tracing:\n  log_level: info\nruntime:\n  n_cores: 1\n  drain_timeout: 2s\nservices:\n  slim/0:\n    dataplane:\n      servers:\n        - endpoint: \"127.0.0.1:0\"\n          tls:\n            insecure: true\n",
    )
    .unwrap();
    let mut slim = SlimProcess::spawn(&["--config", path.to_str().unwrap()]);
    let addr = slim.listening_addr();
    assert!(std::net::TcpStream::connect(addr).is_ok());
    slim.signal("-INT");
    let (code, lines) = slim.wait_exit();
    assert_eq!(code, 0, "output: {lines:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn slim_rejects_a_bad_config_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("slim-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "services:\n  slim/0:\n    dataplane:\n      servers: [{endpoint: '127.0.0.1:0', tlz: {}}]\n",
    )
    .unwrap();
    let out = Command::new(BIN).args(["--config", path.to_str().unwrap()]).env_remove("CONFIG").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tlz"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(BIN).env_remove("CONFIG").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).ok();
}
