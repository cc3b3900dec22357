//! The PyO3 layer: the native module `slim_bindings._slim_bindings`.
//!
//! One file per Python concept; each is thin (conversions and error mapping only). Core errors
//! become Python exceptions in one place, [`errors`]. The Python package `slim_bindings`
//! (python/slim_bindings) wraps this module.

mod args;
mod build_info;
mod convert;
mod errors;
mod heap;
mod identity;
mod log_bridge;
mod name;
mod node;
mod runtime;
mod service;
mod session_config;
mod session_info;
mod tracing;
mod wake;

use pyo3::prelude::*;

pub use identity::{PyAlgorithm, PyIdentityProvider, PyIdentityVerifier, PyKey, PyKeyData, PyKeyFormat};
pub use name::PyName;
pub use service::PyService;
pub use session_config::{PySessionConfiguration, PySessionType};
pub use session_info::PySessionInfo;

/// The native module. Its public names are re-exported by `slim_bindings/__init__.py`.
#[pymodule]
#[pyo3(name = "_slim_bindings")]
fn slim_bindings_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    heap::keep_payload_memory();
    m.add_class::<PyName>()?;
    m.add_class::<PyService>()?;
    m.add_class::<PySessionInfo>()?;
    m.add_class::<PySessionType>()?;
    m.add_class::<PySessionConfiguration>()?;
    m.add_class::<PyAlgorithm>()?;
    m.add_class::<PyKeyFormat>()?;
    m.add_class::<PyKeyData>()?;
    m.add_class::<PyKey>()?;
    m.add_class::<PyIdentityProvider>()?;
    m.add_class::<PyIdentityVerifier>()?;
    m.add_class::<node::PyNodeRunner>()?;

    m.add_function(wrap_pyfunction!(service::create_pyservice, m)?)?;
    m.add_function(wrap_pyfunction!(service::receive_session_many, m)?)?;
    m.add_function(wrap_pyfunction!(service::run_server, m)?)?;
    m.add_function(wrap_pyfunction!(service::run_server_bound, m)?)?;
    m.add_function(wrap_pyfunction!(service::stop_server, m)?)?;
    m.add_function(wrap_pyfunction!(service::connect, m)?)?;
    m.add_function(wrap_pyfunction!(service::disconnect, m)?)?;
    m.add_function(wrap_pyfunction!(service::subscribe, m)?)?;
    m.add_function(wrap_pyfunction!(service::unsubscribe, m)?)?;
    m.add_function(wrap_pyfunction!(service::set_route, m)?)?;
    m.add_function(wrap_pyfunction!(service::remove_route, m)?)?;
    m.add_function(wrap_pyfunction!(service::create_session, m)?)?;
    m.add_function(wrap_pyfunction!(service::delete_session, m)?)?;
    m.add_function(wrap_pyfunction!(service::get_session_config, m)?)?;
    m.add_function(wrap_pyfunction!(service::set_session_config, m)?)?;
    m.add_function(wrap_pyfunction!(service::set_default_session_config, m)?)?;
    m.add_function(wrap_pyfunction!(service::publish, m)?)?;
    m.add_function(wrap_pyfunction!(service::publish_many, m)?)?;
    m.add_function(wrap_pyfunction!(service::invite, m)?)?;
    m.add_function(wrap_pyfunction!(service::remove, m)?)?;
    m.add_function(wrap_pyfunction!(service::participants, m)?)?;
    m.add_function(wrap_pyfunction!(service::receive, m)?)?;
    m.add_function(wrap_pyfunction!(service::receive_new_session, m)?)?;
    m.add_function(wrap_pyfunction!(service::receive_session, m)?)?;
    m.add_function(wrap_pyfunction!(service::try_receive_session, m)?)?;
    m.add_function(wrap_pyfunction!(tracing::init_tracing, m)?)?;
    m.add_function(wrap_pyfunction!(runtime::shutdown_runtime, m)?)?;
    m.add_function(wrap_pyfunction!(node::start_node, m)?)?;
    m.add_function(wrap_pyfunction!(node::stop_node, m)?)?;
    m.add_function(wrap_pyfunction!(node::node_info, m)?)?;
    m.add_function(wrap_pyfunction!(errors::error_samples, m)?)?;

    m.add("SESSION_UNSPECIFIED", u32::MAX)?;
    m.add("__version__", build_info::VERSION)?;
    m.add("build_profile", build_info::profile())?;
    m.add("build_info", build_info::summary())?;
    Ok(())
}
