//! The `weir` binary.

/// mimalloc instead of glibc's malloc: the request path allocates and frees small buffers on
/// every tokio worker, where glibc's per-arena consolidation showed up in profiles.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    weir::cli::main()
}
