//! Background compilation: deploys while traffic flows compile on a pool of threads running at
//! a lower scheduling priority, so that Cranelift (which uses every core it is given) takes
//! the CPU the delivery engine leaves idle instead of stalling invocations.
//!
//! Tried and dropped (`weir bench swap`, 2 cores): `SCHED_IDLE` starved compiles for over
//! 30 s on a busy machine, so a deploy could not finish; compiling in a child process at nice
//! 19 made compiling swaps 3x slower (p99 over 250 ms) without lowering event latency, which
//! during compiling swaps is dominated by the disk (the new artifact and cache files are
//! flushed with the logs' journal commits: on tmpfs the event p99 ratio while compiling was
//! 2.1, on this disk 5-10).
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
