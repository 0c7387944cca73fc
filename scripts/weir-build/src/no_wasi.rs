//! weir's WASI-free preview 1 adapter (`no_wasi.wat`): answers a core module's
//! `wasi_snapshot_preview1` imports with weir's own clock and log imports, so a guest whose
//! runtime calls WASI (Go's, or C's libc) still becomes a component that imports only
//! `weir:plugin/*`: `printf` and `fmt.Println` become weir log lines.

use std::path::Path;

use anyhow::{Context, Result};

/// The adapter's text.
const WAT: &str = include_str!("no_wasi.wat");

/// The world whose imports the adapter may use.
const WORLD: &str = "host-capabilities";

/// The adapter as a core module carrying its `component-type` section, ready for
/// `ComponentEncoder::adapter("wasi_snapshot_preview1", ..)`.
pub(crate) fn adapter(wit_dir: &Path) -> Result<Vec<u8>> {
    let mut module = wat::parse_str(WAT).context("parsing the WASI-free adapter (no_wasi.wat)")?;
    crate::component::embed_world(&mut module, wit_dir, WORLD)?;
    Ok(module)
}
