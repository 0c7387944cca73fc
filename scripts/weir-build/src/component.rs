//! Turning a core module into a component, and writing files atomically.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use wit_component::{ComponentEncoder, StringEncoding};
use wit_parser::Resolve;

/// The module name under which core modules import WASI preview 1.
const WASI_P1: &str = "wasi_snapshot_preview1";

/// Wraps a core module into a component. The module must carry the `component-type` custom
/// section that `wit-bindgen` (Rust or C) emits, or [`embed_world`] adds, naming the world it
/// implements.
///
/// A module that imports `wasi_snapshot_preview1` (C using libc's stdio or `strtod`, Go's
/// runtime) gets weir's WASI-free adapter ([`crate::no_wasi`]) rather than WASI's own, whose
/// imports weir would refuse: the component then imports only `weir:plugin/*`. Only such a
/// module: `wit-component` merges an offered adapter's WIT into the component's imports even
/// when unused.
pub(crate) fn componentize(core: &[u8], wit_dir: &Path) -> Result<Vec<u8>> {
    let mut encoder = ComponentEncoder::default();
    encoder.validate(true).module(core)?;
    if imports_module(core, WASI_P1)? {
        encoder.adapter(WASI_P1, &crate::no_wasi::adapter(wit_dir)?)?;
    }
    encoder.encode()
}

/// Appends to a core module the `component-type` section naming `world` of the WIT package in
/// `wit_dir`, as a binding generator would: for guests built without one (Go), and for adapters.
pub(crate) fn embed_world(core: &mut Vec<u8>, wit_dir: &Path, world: &str) -> Result<()> {
    let mut resolve = Resolve::new();
    let (package, _) = resolve
        .push_dir(wit_dir)
        .with_context(|| format!("parsing the WIT package in {}", wit_dir.display()))?;
    let world = resolve.select_world(&[package], Some(world))?;
    wit_component::embed_component_metadata(core, &resolve, world, StringEncoding::UTF8, false)
}

/// Whether the core module `core` imports anything from module `name`.
fn imports_module(core: &[u8], name: &str) -> Result<bool> {
    for payload in wasmparser::Parser::new(0).parse_all(core) {
        if let wasmparser::Payload::ImportSection(imports) = payload? {
            for import in imports.into_imports() {
                if import?.module == name {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

/// Writes `bytes` to `path` unless it already holds exactly them. The new content goes to a
/// temp file in the same directory, which is then renamed over `path`: readers see the old
/// file or the new one, never a partial one.
pub(crate) fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    write_atomically(path, bytes)
}

/// Writes `bytes` to a temp file next to `path`, then renames it to `path`.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let file_name = path
        .file_name()
        .with_context(|| format!("expected a file path, found {}", path.display()))?;
    let tmp = path.with_file_name(format!(
        ".{}.{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_keeps_unchanged_files() {
        let dir = std::env::temp_dir().join(format!("weir-build-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.wasm");
        write_if_changed(&path, b"one").unwrap();
        let first = fs::metadata(&path).unwrap().modified().unwrap();
        write_if_changed(&path, b"one").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), first);
        write_if_changed(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        // No temp files are left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
