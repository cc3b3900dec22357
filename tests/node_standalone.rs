//! The `slim` binary: starts, logs one listening line with the bound address, routes between two
//! nodes, stays small, and exits 0 on SIGTERM/SIGINT.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use slim_bindings::node::{ClientConfig, LocalDelivery, Node};
use slim_bindings::wire::builders::{self, Flags, PublishSpec};
use slim_bindings::wire::{Name, SessionMessageType, SessionType};

const BIN: &str = env!("CARGO_BIN_EXE_slim");

/// A running `slim` with its stderr lines forwarded to a channel.
struct Slim {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Slim {
    fn spawn(args: &[&str]) -> Slim {
        let mut child = Command::new(BIN)
            .args(args)
            .env_remove("CONFIG")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn slim");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Slim { child, lines, seen: Vec::new() }
    }

    /// The address from the "listening on <addr>" line.
    fn listening_addr(&mut self) -> std::net::SocketAddr {
        loop {
            let line = self.lines.recv_timeout(Duration::from_secs(10)).expect("no listening line within 10 s");
            self.seen.push(line.clone());
            if let Some(pos) = line.find("listening on ") {
                let addr: String = line[pos + "listening on ".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect();
                return addr.parse().unwrap_or_else(|_| panic!("bad address in `{line}`"));
            }
        }
    }

    /// A `/proc/<pid>/status` field in KiB (`VmRSS`, `RssAnon`, ...).
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill {sig} failed");
    }

    /// Waits (bounded) for the exit code, then collects the remaining stderr.
    fn wait_exit(mut self) -> (i32, Vec<String>) {
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
                    self.seen.push(line);
                }
                return (status.code().unwrap_or(-1), self.seen);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("slim did not exit within 10 s; output: {:?}", self.seen);
    }
}

fn name(t: &str, id: u64) -> Name {
    Name::new("org", "ns", t, Some(id))
}

#[tokio::test]
async fn slim_routes_between_two_nodes_and_exits_cleanly_on_sigterm() {
    let mut slim = Slim::spawn(&["--endpoint", "127.0.0.1:0"]);
    let addr = slim.listening_addr();
    assert_ne!(addr.port(), 0);
    // The debug binary maps ~14 MiB of its own file (debug info); the 15 MiB budget is about the
    // optimized build, the node's own (anonymous) memory is checked in every build.
    if !cfg!(debug_assertions) {
        let rss = slim.status_kib("VmRSS:");
        assert!(rss < 15 * 1024, "idle slim uses {rss} KiB RSS");
    }

    let a = Node::new("a");
    let b = Node::new("b");
    let conn_a = a.connect(ClientConfig::insecure(format!("http://{addr}"))).await.unwrap();
    let conn_b = b.connect(ClientConfig::insecure(format!("http://{addr}"))).await.unwrap();
    let (name_a, name_b) = (name("a", 1), name("b", 2));
    let mut app_a = a.register_local();
    let app_b = b.register_local();
    app_a.tx.send(builders::subscribe(&name_a, &name_a, Flags::one().forward_to(Some(conn_a)))).await.unwrap();
    app_b.tx.send(builders::subscribe(&name_b, &name_a.without_id(), Flags::one().recv_from(conn_b))).await.unwrap();

    // the forwarded subscription reaches slim asynchronously: retry the publish until it routes
    let msg = builders::publish(
        &PublishSpec {
            source: &name_b,
            destination: &name_a,
            flags: Flags::one(),
            session_type: SessionType::SessionPointToPoint,
            message_type: SessionMessageType::P2PMsg,
            session_id: 9,
            message_id: 0,
            original_names: true,
            content_type: "msg",
        },
        b"through slim".to_vec(),
        HashMap::new(),
    );
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
    let mut slim = Slim::spawn(&["--config", path.to_str().unwrap()]);
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
