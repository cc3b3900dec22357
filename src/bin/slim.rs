//! The standalone SLIM node: a router with no session layer.
//!
//! `slim --endpoint 127.0.0.1:46357` serves plaintext h2c; `slim --config node.yaml` reads the
//! reference YAML layout (tracing / runtime / services). Runs until SIGINT or SIGTERM, then drains.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use slim_bindings::node::standalone::{RunningNodes, StandaloneConfig};
use slim_bindings::telemetry::init_tracing;
use tracing::{error, info, warn};

/// Command line.
#[derive(Debug, Parser)]
#[command(name = "slim", version, about = "SLIM data-plane node")]
struct Args {
    /// YAML configuration file (default: env `CONFIG` when `--endpoint` is not given).
    #[arg(long, conflicts_with = "endpoint")]
    config: Option<PathBuf>,
    /// Serve plaintext on this `ip:port` (port 0 = any free port).
    #[arg(long)]
    endpoint: Option<String>,
    /// Serve counters as Prometheus text on `http://<ip:port>/metrics` (overrides YAML `metrics:`).
    #[arg(long, value_name = "IP:PORT")]
    metrics: Option<String>,
}

fn load(args: &Args) -> Result<StandaloneConfig, String> {
    let config = args.config.clone().or_else(|| match &args.endpoint {
        Some(_) => None,
        None => std::env::var_os("CONFIG").map(PathBuf::from),
    });
    match (&config, &args.endpoint) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            StandaloneConfig::from_yaml(&text).map_err(|e| format!("{}: {e}", path.display()))
        }
        (None, Some(endpoint)) => StandaloneConfig::single_server(endpoint).map_err(|e| e.to_string()),
        (None, None) => Err("one of --config <FILE> or --endpoint <IP:PORT> is required".into()),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut cfg = match load(&args) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("slim: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(endpoint) = args.metrics.clone() {
        cfg.metrics = Some(slim_bindings::telemetry::metrics::MetricsConfig { endpoint });
    }
    if let Err(e) = init_tracing(&cfg.tracing) {
        eprintln!("slim: {e}");
        return ExitCode::from(2);
    }
    // `runtime.n_cores` (docs/mesh.md "Runtime"): one worker per core by default, capped (an idle
    // node stays small); 1 = one thread, which wakes once per forwarded message where workers also
    // wake each other (the shortest hop, the least CPU per message, one core of routing).
    let workers = match cfg.runtime.n_cores {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(4),
        n => n,
    };
    let runtime = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name(cfg.runtime.thread_name.clone())
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("slim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cfg));
    // Outside the runtime: shutting span export down blocks until the last batch is sent.
    slim_bindings::telemetry::otel::shutdown();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: StandaloneConfig) -> Result<(), String> {
    // Watch the signals before anything listens, so an early SIGTERM still drains cleanly.
    let signals = shutdown_signal()?;
    let running = RunningNodes::start(&cfg).await?;
    for (key, addr) in &running.listening {
        info!(service = %key, "slim node listening on {addr}");
    }
    if let Some(m) = &running.metrics {
        info!("serving metrics at http://{}/metrics", m.local_addr());
    }
    signals.await;
    let drain = cfg.runtime.drain_timeout();
    if !running.stop(drain).await {
        warn!("drain timeout ({drain:?}) reached; exiting");
    }
    Ok(())
}

/// A future that completes on SIGTERM or SIGINT (handlers are installed when this returns).
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch SIGINT: {e}"))?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
