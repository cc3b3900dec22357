//! slim-bindings: a SLIM node, its session layer, and (behind the `python` feature) the PyO3 module
//! `slim_bindings._slim_bindings`.
//!
//! # Layout
//!
//! The flow of a message: Python call → [`python`] conversion → [`app`] → [`session`] → local
//! connection → [`node`] → gRPC → [`node`] → local connection → [`session`] → [`app`] → Python.
//! Each layer talks only to its neighbours.
//!
//! - [`wire`]: the `dataplane.proto.v1` types, [`wire::Name`] and its interop hash, bincode control
//!   payloads, and builders for every message the session layer sends.
//! - [`node`]: the router. Connection table, subscription table, forwarding, gRPC server and client
//!   (h2c, TLS, mTLS), reconnect, configuration dicts.
//! - [`auth`]: identity tokens (shared secret, JWT, JWKS): providers and verifiers.
//! - [`mls`]: the openmls group wrapper used by sessions with `mls_enabled`.
//! - [`session`]: point-to-point and multicast sessions, timers, buffers, the moderator/participant
//!   channel protocol.
//! - [`app`]: one application: name, identity, sessions, and its local connection to its embedded node.
//! - [`telemetry`]: logging set-up (`init_tracing`), re-callable to change the level.
//! - [`python`]: the PyO3 layer (feature `python`): one file per Python concept.
//! - `bin/slim.rs`: the standalone node.

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
