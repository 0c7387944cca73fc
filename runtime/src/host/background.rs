//! Background compilation: deploys while traffic flows compile on a pool of threads running at
//! a lower scheduling priority, so that Cranelift (which uses every core it is given) takes
//! the CPU the delivery engine leaves idle instead of stalling invocations.
//!
//! Lowering a thread's priority is a `setpriority` call, the one other use of `unsafe` in
//! weir, on Linux only (elsewhere the pool runs at normal priority).
#![allow(unsafe_code)]

/// The nice value of background compile threads (0 is normal, 19 the lowest priority).
const NICE: i32 = 10;

/// A thread pool whose threads run at [`NICE`].
pub(super) fn pool() -> anyhow::Result<rayon::ThreadPool> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    Ok(rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("weir-compile-{i}"))
        .start_handler(|_| lower_priority())
        .build()?)
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // SAFETY: `setpriority` takes plain integers and touches no memory of ours. On Linux,
    // `PRIO_PROCESS` with `who` = 0 applies to the calling thread only.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICE) };
    if rc != 0 {
        tracing::debug!(
            "cannot lower the compile thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}
