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
mod node_shared_memory;
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

/// Every `tests/*.rs` file is built and run: a module above or a `[[test]]` of Cargo.toml (with
/// `autotests = false`, a file that is neither would never be compiled).
#[test]
fn every_test_file_is_built() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let here = std::fs::read_to_string(root.join("tests/integration.rs")).unwrap();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root.join("tests")).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".rs") else { continue };
        let module = here.lines().any(|l| l.trim() == format!("mod {stem};"));
        let own = manifest.contains(&format!("path = \"tests/{name}\""));
        if !module && !own {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "in tests/ but in no test target (tests/integration.rs, Cargo.toml): {missing:?}");
}
