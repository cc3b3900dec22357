//! slim-bindings: a SLIM node, its session layer, and (behind the `python` feature) the PyO3 module
//! `slim_bindings._slim_bindings`.
//!
//! # Layout
//!
//! The flow of a message: Python call → [`python`] conversion → [`app`] → [`session`] → local
//! connection → [`node`] → gRPC → [`node`] → local connection → [`session`] → [`app`] → Python.
//!
//! Layers, bottom to top. A module imports only from layers below its own; `tests/architecture.rs`
//! checks it on every `cargo test`.
//!
//! 0. [`wire`]: the `dataplane.proto.v1` types, [`wire::Name`] and its interop hash, bincode
//!    control payloads, and builders for every message the session layer sends.
//!    [`telemetry`]: logging set-up (`init_tracing`), trace-context propagation helpers
//!    ([`telemetry::otel::hop`]) and the metric exporters (`/metrics` text, OTLP), which read
//!    whatever [`telemetry::metrics::MetricSource`] they are handed and know nothing of the node.
//! 1. [`auth`]: identity tokens (shared secret, JWT, JWKS): providers and verifiers.
//! 2. [`node`]: the router. Connection table, subscription table, forwarding, gRPC server and client
//!    (h2c, TLS, mTLS), reconnect, configuration dicts, and its metric catalogue
//!    ([`node::metrics`]). [`node::local`] is the local-connection contract: the only part of the
//!    node the session layer knows.
//!    [`mls`]: the openmls group wrapper used by sessions with `mls_enabled`.
//! 3. [`error`]: [`error::SlimError`], the one error type of the session and app layers.
//! 4. [`session`]: point-to-point and multicast sessions, timers, buffers, the moderator/participant
//!    channel protocol.
//! 5. [`app`]: one application: name, identity, sessions, and its local connection to its embedded
//!    node.
//! 6. [`python`]: the PyO3 layer (feature `python`): one file per Python concept.
//!    `bin/slim.rs`: the standalone node (a node, its configuration and both metric exporters).

// Internals are `pub(crate)` (or private), so the compiler reports what nothing uses; see the
// `[lints]` table of Cargo.toml for the other lints.
#![warn(unreachable_pub)]

/// Every Rust allocation of the Python extension (its apps and embedded nodes). A message's trip
/// through the library allocates and frees a few dozen small blocks (headers, names, metadata,
/// futures); glibc's malloc spent ~19% of all CPU of a loaded stream on them (`malloc_consolidate`,
/// `_int_malloc`, `unlink_chunk`: benches/README.md). Python's own objects keep the interpreter's
/// allocator. The standalone `slim` binary and the Rust tests keep the system allocator: mimalloc's
/// per-thread segments would take an idle node past its memory budget (tests/node_standalone.rs).
///
/// Built without transparent huge pages (the crate's `no_thp` feature: no `madvise(MADV_HUGEPAGE)`
/// on its regions). With them, a 64 KiB stream spent ~40% of a node's CPU in page faults that each
/// zeroed a whole 2 MiB page: a payload buffer that lands on memory mimalloc gave back to the OS
/// (or never touched) faults in a huge page, not the 16 small ones it needs (benches/README.md,
/// "Large messages").
#[cfg(feature = "python")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod app;
pub mod auth;
pub mod error;
pub mod mls;
pub mod node;
pub mod session;
pub mod telemetry;
pub mod wire;

#[cfg(feature = "python")]
pub mod python;

#[cfg(test)]
mod testing;
