//! The `slim` binary: starts, logs one listening line with the bound address, routes between two
//! nodes, stays small, and exits 0 on SIGTERM/SIGINT; two linked `slim` processes with different
//! `runtime.n_cores` route a stream in order.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::local::{Ends, ends_through, p2p_publish, recv_msg};
use common::slim_process::{BIN, SlimProcess};
use slim_bindings::node::{ClientConfig, LocalDelivery, Node};
use slim_bindings::wire::Name;
use slim_bindings::wire::builders;
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

/// A YAML file for one `slim` node: `runtime` (as written, or none), a plaintext server on a free
/// port, and a `clients:` link to `dial` if given.
fn node_yaml(dir: &std::path::Path, label: &str, runtime: Option<&str>, dial: Option<std::net::SocketAddr>) -> String {
    let mut text = String::from("tracing: {log_level: info}\n");
    if let Some(r) = runtime {
        text.push_str(&format!("runtime: {r}\n"));
    }
    text.push_str(&format!(
        "services:\n  slim/0:\n    node_id: {label}\n    dataplane:\n      servers: [{{endpoint: \"127.0.0.1:0\", tls: {{insecure: true}}}}]\n"
    ));
    if let Some(addr) = dial {
        text.push_str(&format!("      clients: [{{endpoint: \"http://{addr}\", tls: {{insecure: true}}}}]\n"));
    }
    let path = dir.join(format!("{label}.yaml"));
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// Threads of process `pid` whose name is `name`.
fn threads_named(pid: u32, name: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the process's threads")
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name))
        .count()
}

#[tokio::test]
async fn linked_nodes_route_in_order_with_either_runtime() {
    // x: `n_cores: 1` (one thread, docs/mesh.md "Runtime"); y: `n_cores: 2` (two workers), y
    // dials x. An app on x and one on y: a stream crosses both nodes (two real sockets and the
    // mesh link) and arrives whole and in order.
    let dir = std::env::temp_dir().join(format!("slim-rt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let x_cfg = node_yaml(&dir, "x", Some("{n_cores: 1, thread_name: slim-rt-test}"), None);
    let mut x = SlimProcess::spawn(&["--config", &x_cfg]);
    let x_addr = x.listening_addr();
    let y_cfg = node_yaml(&dir, "y", Some("{n_cores: 2, thread_name: slim-rt-test}"), Some(x_addr));
    let mut y = SlimProcess::spawn(&["--config", &y_cfg]);
    let y_addr = y.listening_addr();

    let (name_a, name_b) = (name("a", 1), name("b", 2));
    let (a, b) = (Node::new("app-a"), Node::new("app-b"));
    let conn_a = a.connect(ClientConfig::insecure(format!("http://{x_addr}"))).await.expect("a connects to x");
    let conn_b = b.connect(ClientConfig::insecure(format!("http://{y_addr}"))).await.expect("b connects to y");
    let mut app_a = a.register_local();
    let app_b = b.register_local();
    app_a.tx.send(builders::subscribe(&name_a, &name_a, Flags::one().forward_to(Some(conn_a)))).await.unwrap();
    app_b.tx.send(builders::subscribe(&name_b, &name_a.without_id(), Flags::one().recv_from(conn_b))).await.unwrap();

    // a's name reaches y through the mesh asynchronously: probe until one arrives (bounded).
    let probe = p2p_publish(&name_b, &name_a, Flags::one(), b"probe");
    let mut routed = false;
    for _ in 0..100 {
        app_b.tx.send(probe.clone()).await.unwrap();
        if let Ok(Some(LocalDelivery::Message(m))) =
            tokio::time::timeout(Duration::from_millis(100), app_a.rx.recv()).await
        {
            assert_eq!(m.blob(), b"probe");
            routed = true;
            break;
        }
    }
    assert!(routed, "no message from y's app to x's app within 10 s");

    const N: u32 = 2000;
    for i in 0..N {
        app_b.tx.send(p2p_publish(&name_b, &name_a, Flags::one(), &i.to_be_bytes())).await.unwrap();
    }
    let mut next = 0u32;
    while next < N {
        let m = recv_msg(&mut app_a).await;
        if m.blob() == b"probe" {
            continue; // a probe sent before the route was up, delivered late: not part of the stream
        }
        let got = u32::from_be_bytes(m.blob().try_into().expect("a 4-byte sequence number"));
        assert_eq!(got, next, "stream out of order or with a gap");
        next += 1;
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(200), app_a.rx.recv()).await.is_err(),
        "nothing after the stream (no duplicate)"
    );
    // The setting took effect: x routes on its main thread (no runtime threads), y on its
    // workers (plus, possibly, tokio's blocking threads, which carry the same name).
    assert_eq!(threads_named(x.id(), "slim-rt-test"), 0, "x: n_cores 1 is a single-threaded runtime");
    assert!(threads_named(y.id(), "slim-rt-test") >= 2, "y: n_cores 2 runs two workers");

    a.shutdown().await;
    b.shutdown().await;
    for node in [x, y] {
        node.signal("-TERM");
        let (code, lines) = tokio::task::spawn_blocking(move || node.wait_exit()).await.unwrap();
        assert_eq!(code, 0, "output: {lines:?}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
