//! The interpreter's heap under large payloads (glibc only).
//!
//! Every received payload becomes a Python `bytes`, allocated by the interpreter with the C
//! library's `malloc` (our own allocations go to mimalloc). With glibc's defaults a 64 KiB stream
//! handed over a batch at a time frees a few MiB at the top of the heap, glibc gives it back to
//! the OS at once (free memory at the top above `M_TRIM_THRESHOLD`, 128 KiB, is trimmed) and the
//! next batch faults it in again, page by page: ~15-20% of a receiving app's CPU
//! (benches/README.md, "Large messages"). At module load we raise the two thresholds to values
//! glibc's own dynamic tuning may reach anyway (it moves `M_MMAP_THRESHOLD` up to 32 MiB and
//! trims at twice that): blocks under 8 MiB (every payload: at most 4 MiB) come from the heap,
//! and up to 16 MiB of free memory stays at its top for the next batch instead of going back to
//! the OS. Bounded: at most 16 MiB more than in use stays mapped. A process that set glibc's
//! malloc variables itself (`MALLOC_*_` or `GLIBC_TUNABLES`) keeps them: nothing is changed.

/// Blocks smaller than this come from the heap, not from a mapping of their own (glibc `M_MMAP_THRESHOLD`).
pub(super) const MMAP_THRESHOLD: i32 = 8 << 20;
/// Free memory kept at the top of the heap (glibc `M_TRIM_THRESHOLD`): twice [`MMAP_THRESHOLD`],
/// glibc's own ratio.
pub(super) const TRIM_THRESHOLD: i32 = 16 << 20;

/// Whether the process already tunes glibc's malloc (then it is left alone).
fn tuned_by_environment() -> bool {
    std::env::vars_os().any(|(k, v)| {
        let k = k.to_string_lossy();
        (k.starts_with("MALLOC_") && k.ends_with('_'))
            || (k == "GLIBC_TUNABLES" && v.to_string_lossy().contains("glibc.malloc."))
    })
}

/// Applies the thresholds above (glibc on Linux; elsewhere nothing).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(super) fn keep_payload_memory() {
    use std::os::raw::c_int;
    // glibc's <malloc.h>.
    const M_TRIM_THRESHOLD: c_int = -1;
    const M_MMAP_THRESHOLD: c_int = -3;
    #[allow(unsafe_code)]
    unsafe extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }
    if tuned_by_environment() {
        return;
    }
    // SAFETY: mallopt only sets the allocator's parameters (it takes glibc's arena lock); the
    // values are in the range glibc documents for both.
    #[allow(unsafe_code)]
    unsafe {
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Applies the thresholds above (glibc on Linux; elsewhere nothing).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(super) fn keep_payload_memory() {
    let _ = tuned_by_environment;
}
