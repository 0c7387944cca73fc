//! Background compilation: deploys while traffic flows compile on a pool of half the cores
//! (at least one), so that Cranelift, which uses every thread it is given, leaves the other
//! cores to invocations.
//!
//! Measured with `weir bench swap` on the 2-core machine (10,000 events/s on an exactly-once
//! binding, three runs each):
//! - One compile thread at normal priority: compiling swaps p99 113-127 ms, event p99 while
//!   compiling 0.6-2.4x its baseline. Two threads: 80-96 ms and 1.5-2.7x.
//! - Threads at nice 10 (the previous design) made compiling swaps 146-256 ms without lowering
//!   event latency (2.0-11x): a low-priority thread preempted while it holds the process's
//!   memory-map lock (compiled code is mapped and protected) stalls the invocations that need it.
//!   `SCHED_IDLE` starved compiles for over 30 s on a busy machine; compiling in a child process
//!   at nice 19 made compiling swaps 3x slower.

/// A thread pool for compiling: half the available cores, at least one.
pub(super) fn pool() -> anyhow::Result<rayon::ThreadPool> {
    let threads = std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1));
    Ok(rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("weir-compile-{i}"))
        .build()?)
}
