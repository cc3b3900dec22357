//! Most Rust integration tests, as modules of one test binary (Cargo.toml: `autotests = false`,
//! `[[test]] integration`). Each module is a file of `tests/`, as it would be on its own; one
//! binary means one crate to compile and link instead of one per file, and the shared helpers
//! (`common`) built once. `cargo test --test integration node_tls::` runs one file's tests.
//!
//! Binaries of their own (listed in Cargo.toml): `telemetry_otlp` (it installs the process's
//! global tracing subscriber and OpenTelemetry providers), `node_fuzz_frames` (it counts every
//! panic of its process with a panic hook), `fuzz_smoke` and `mls_interop` (run by name, the
//! latter only with its features).

mod common;

mod architecture;
mod auth_jwks_resolve;
mod auth_jwt_matrix;
mod auth_mls_expiry;
mod docs_references;
mod mesh_exactly_once;
mod mesh_healing;
mod mesh_routing;
mod mls_batch;
mod mls_flow;
mod mls_session_multicast;
mod node_reconnect;
mod node_robustness;
mod node_routing;
mod node_standalone;
mod node_tls;
mod session_anycast;
mod session_flow;
mod session_group_loss;
mod session_group_race;
mod session_group_restart;
mod session_group_robustness;
mod session_handover;
mod session_liveness;
mod session_lossy;
mod session_mls;
mod session_multicast;
mod session_send_budget;
mod session_unicast;
mod telemetry_metrics;
