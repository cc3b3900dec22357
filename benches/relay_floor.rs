//! The floor under "what each extra node adds to a round trip" on this machine: a chain of plain
//! TCP relays with no protocol at all, each its own process (docs/mesh.md, "Runtime").
//!
//!     client ── relay 1 ── relay 2 ── relay 3 ── echo
//!
//! A relay reads whatever arrives and writes it on (TCP_NODELAY both ways), one of three ways:
//! `threads` (a blocking thread per direction: the fewest wake-ups there can be), `tokio-ct` (a
//! current-thread tokio runtime: a `slim` node with `runtime.n_cores: 1`), `tokio-mt` (tokio's
//! multi-thread runtime, one worker per core: a `slim` node's default). The client sends 100 bytes
//! and waits for them to come back, `RELAY_FLOOR_TRIPS` times in a row (default 2000), for chain
//! lengths 0..=3 and each kind, rounds interleaved (`RELAY_FLOOR_ROUNDS`, default 3), `RELAY_FLOOR_GAP_US`
//! µs apart (default 0; `MESH_HOPS_GAP_US` is the same knob there). Printed: the
//! median over rounds of each p50 and the p50 each relay adds (slope from 0 to 3 relays), to hold
//! beside `cargo bench --bench mesh_hops` and `benches/mesh.py`. Every wait is bounded.
//!
//! `cargo bench --bench relay_floor`

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// Bound on any single wait, and on a child's whole life.
const WAIT: Duration = Duration::from_secs(10);
const CHILD_LIFE: Duration = Duration::from_secs(300);
const KINDS: [&str; 3] = ["threads", "tokio-ct", "tokio-mt"];
const MAX_RELAYS: usize = 3;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--echo-child") => echo_child(),
        Some("--relay-child") => {
            let (Some(kind), Some(up)) = (args.get(2), args.get(3)) else {
                return Err("usage: --relay-child KIND UPSTREAM_PORT".into());
            };
            relay_child(kind, up.parse()?)
        }
        // cargo bench passes `--bench`; nothing else is taken.
        _ => drive(),
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn drive() -> Res<()> {
    let trips = env_usize("RELAY_FLOOR_TRIPS", 2000).clamp(10, 100_000);
    let rounds = env_usize("RELAY_FLOOR_ROUNDS", 3).clamp(1, 20);
    let gap = Duration::from_micros(env_usize("RELAY_FLOOR_GAP_US", 0).min(100_000) as u64);
    // p50 in µs per (kind, relays), one entry per round.
    let mut p50s = vec![vec![Vec::new(); MAX_RELAYS + 1]; KINDS.len()];
    for round in 1..=rounds {
        for (kind, by_length) in KINDS.iter().zip(p50s.iter_mut()) {
            for (relays, runs) in by_length.iter_mut().enumerate() {
                let p50 = chain(kind, relays, trips, gap)?;
                println!("round {round} {kind:>8}, {relays} relay(s): p50 {p50:.1} µs");
                runs.push(p50);
            }
        }
    }
    println!(
        "\nplain TCP relays, 100-byte round trips {} µs apart, medians of {rounds} interleaved round(s) of {trips}",
        gap.as_micros()
    );
    println!("{:>9} {:>10} {:>10} {:>10} {:>10} {:>16}", "kind", "0 relays", "1", "2", "3", "+p50 per relay");
    for (k, kind) in KINDS.iter().enumerate() {
        let med: Vec<f64> = p50s[k].iter_mut().map(|v| median(v)).collect();
        let slope = (med[MAX_RELAYS] - med[0]) / MAX_RELAYS as f64;
        println!("{kind:>9} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>16.1}", med[0], med[1], med[2], med[3], slope);
    }
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Children of one chain, killed when dropped.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `self --<args>` and reads the port it prints first.
fn spawn(children: &mut Children, args: &[&str]) -> Res<u16> {
    let mut child = Command::new(std::env::current_exe()?).args(args).stdout(Stdio::piped()).spawn()?;
    let out: ChildStdout = child.stdout.take().ok_or("no stdout")?;
    children.0.push(child);
    // The first line is the port; a child that dies first closes its stdout (EOF, an error here).
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    Ok(line.trim().parse()?)
}

/// The p50 round trip in µs through `relays` relays of `kind`.
fn chain(kind: &str, relays: usize, trips: usize, gap: Duration) -> Res<f64> {
    let mut children = Children(Vec::new());
    let mut port = spawn(&mut children, &["--echo-child"])?;
    for _ in 0..relays {
        port = spawn(&mut children, &["--relay-child", kind, &port.to_string()])?;
    }
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(WAIT))?;
    let msg = [7u8; 100];
    let mut back = [0u8; 100];
    let mut samples = Vec::with_capacity(trips);
    // Warm-up: the first trips set up every hop's connection.
    for i in 0..trips + 50 {
        if !gap.is_zero() {
            std::thread::sleep(gap); // idle time between round trips, as apps leave
        }
        let t = Instant::now();
        s.write_all(&msg)?;
        s.read_exact(&mut back)?;
        if i >= 50 {
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    let _ = s.shutdown(Shutdown::Both);
    Ok(median(&mut samples))
}

/// Binds 127.0.0.1:0, prints the port, accepts one connection (bounded).
fn listen_one() -> Res<TcpStream> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    println!("{}", l.local_addr()?.port());
    std::io::stdout().flush()?;
    l.set_nonblocking(true)?;
    let until = Instant::now() + WAIT;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)?;
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Exits the process after [`CHILD_LIFE`], whatever it is doing (a child never outlives a run).
fn bound_life() {
    std::thread::spawn(|| {
        std::thread::sleep(CHILD_LIFE);
        std::process::exit(3);
    });
}

fn echo_child() -> Res<()> {
    bound_life();
    let s = listen_one()?;
    copy(s.try_clone()?, s);
    Ok(())
}

/// Reads from `a` and writes to `b` until either ends.
fn copy(mut a: TcpStream, mut b: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = a.read(&mut buf) {
        if b.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

fn relay_child(kind: &str, upstream: u16) -> Res<()> {
    bound_life();
    let down = listen_one()?;
    let up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.set_nodelay(true)?;
    match kind {
        "threads" => {
            let (d2, u2) = (down.try_clone()?, up.try_clone()?);
            let t = std::thread::spawn(move || copy(d2, u2));
            copy(up, down);
            let _ = t.join();
            Ok(())
        }
        "tokio-ct" | "tokio-mt" => {
            let mut b = if kind == "tokio-ct" {
                tokio::runtime::Builder::new_current_thread()
            } else {
                tokio::runtime::Builder::new_multi_thread()
            };
            b.enable_io().build()?.block_on(async move {
                down.set_nonblocking(true)?;
                up.set_nonblocking(true)?;
                let (dr, dw) = tokio::net::TcpStream::from_std(down)?.into_split();
                let (ur, uw) = tokio::net::TcpStream::from_std(up)?.into_split();
                let t = tokio::spawn(copy_async(dr, uw));
                copy_async(ur, dw).await;
                let _ = t.await;
                Ok(())
            })
        }
        other => Err(format!("unknown relay kind {other}").into()),
    }
}

async fn copy_async(mut a: tokio::net::tcp::OwnedReadHalf, mut b: tokio::net::tcp::OwnedWriteHalf) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = a.read(&mut buf).await {
        if b.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
