//! The standalone `slim` binary as a child process, its stderr lines read on a thread.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_slim");

/// A running `slim`; killed when dropped.
pub struct SlimProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every stderr line read so far.
    pub seen: Vec<String>,
}

impl SlimProcess {
    /// Starts `slim` with `args` (no `CONFIG` or `RUST_LOG` from the environment).
    pub fn spawn(args: &[&str]) -> SlimProcess {
        let mut child = Command::new(BIN)
            .args(args)
            .env_remove("CONFIG")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn slim");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        SlimProcess { child, lines, seen: Vec::new() }
    }

    /// The address that follows `marker` in the first stderr line (from now on) containing it;
    /// panics after 10 s.
    pub fn addr_after(&mut self, marker: &str) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.lines.recv_timeout(left) else { break };
            self.seen.push(line.clone());
            if let Some(pos) = line.find(marker) {
                let addr: String = line[pos + marker.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect();
                return addr.parse().unwrap_or_else(|_| panic!("bad address in `{line}`"));
            }
        }
        panic!("no `{marker}` line within 10 s; output: {:?}", self.seen);
    }

    /// The data-plane address from the "listening on <addr>" line.
    pub fn listening_addr(&mut self) -> SocketAddr {
        self.addr_after("listening on ")
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// A `/proc/<pid>/status` field in KiB (`VmRSS`, `RssAnon`, ...).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("proc status");
        let line = status.lines().find(|l| l.starts_with(field)).expect("status field");
        line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("a number of KiB")
    }

    /// Sends a signal (`-TERM`, `-INT`, ...) with `kill`.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().expect("kill").success();
        assert!(ok, "kill {sig} failed");
    }

    /// Waits (at most 10 s) for the exit code, then collects the remaining stderr.
    pub fn wait_exit(mut self) -> (i32, Vec<String>) {
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
                    self.seen.push(line);
                }
                return (status.code().unwrap_or(-1), std::mem::take(&mut self.seen));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("slim did not exit within 10 s; output: {:?}", self.seen);
    }
}

impl Drop for SlimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
