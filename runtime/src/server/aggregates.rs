//! Where an aggregate's running component lives across restarts: a version deployed over
//! HTTP is kept as `<data_dir>/aggregates/<name>/active.wasm`, beside `from-file.sha256`, the
//! hash of the configured component file when it was deployed. At start the deployed version
//! is loaded as long as the configured file is unchanged; a changed file wins (as for
//! plugins, editing the config's component is a deploy too).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::names::PluginName;

fn dir(data_dir: &Path, name: &PluginName) -> PathBuf {
    data_dir.join("aggregates").join(name.as_str())
}

/// The component file to load at start: the deployed one, or the configured one.
pub(super) fn component_to_load(
    data_dir: Option<&Path>,
    name: &PluginName,
    configured: &Path,
) -> PathBuf {
    let Some(data_dir) = data_dir else {
        return configured.to_owned();
    };
    let dir = dir(data_dir, name);
    let active = dir.join("active.wasm");
    let recorded = std::fs::read_to_string(dir.join("from-file.sha256")).ok();
    let current = std::fs::read(configured)
        .ok()
        .map(|b| crate::host::content_hash(&b));
    match (recorded, current) {
        (Some(r), Some(c)) if r.trim() == c && active.is_file() => active,
        _ => configured.to_owned(),
    }
}

/// Keeps a deployed component so that a restart runs it.
pub(crate) fn keep_deployed(
    data_dir: &Path,
    name: &PluginName,
    configured: &Path,
    bytes: &[u8],
) -> std::io::Result<()> {
    let dir = dir(data_dir, name);
    std::fs::create_dir_all(&dir)?;
    let from_file = std::fs::read(configured).map(|b| crate::host::content_hash(&b))?;
    write_file(&dir.join("active.wasm"), bytes)?;
    write_file(&dir.join("from-file.sha256"), from_file.as_bytes())?;
    std::fs::File::open(&dir)?.sync_all()
}

fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    drop(f);
    std::fs::rename(&tmp, path)
}
