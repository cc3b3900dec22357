//! Version and build facts exposed as module attributes.

/// The package version (PEP 440), the same as `pyproject.toml`'s.
pub(super) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `"debug"` or `"release"`.
pub(super) fn profile() -> &'static str {
    if cfg!(debug_assertions) { "debug" } else { "release" }
}

/// Four tab-separated lines: version, build date, git SHA, profile. Date and SHA come from the
/// build environment when it provides them (`SLIM_BUILD_DATE`, `SLIM_GIT_SHA`).
pub(super) fn summary() -> String {
    let date = option_env!("SLIM_BUILD_DATE").unwrap_or("unknown");
    let sha = option_env!("SLIM_GIT_SHA").unwrap_or("unknown");
    format!("Version:\t{VERSION}\nBuild Date:\t{date}\nGit SHA:\t{sha}\nProfile:\t{}", profile())
}
