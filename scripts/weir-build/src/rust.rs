//! Compiling the Rust plugins (members of the plugins cargo workspace) to core modules.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail};

use crate::toolchain::{RUST_TARGET, RustToolchain};
use crate::{Options, Plugin};

/// Builds `plugins` in one cargo invocation; returns `(plugin name, core module)` pairs.
pub(crate) fn build(opts: &Options, plugins: &[&Plugin]) -> Result<Vec<(String, Vec<u8>)>> {
    let toolchain = RustToolchain::detect(&opts.plugins_dir)?;
    let crates = plugins
        .iter()
        .map(|p| CrateNames::read(&p.dir))
        .collect::<Result<Vec<_>>>()?;

    let target_dir = opts.target_dir();
    let mut cmd = toolchain.cargo("build");
    cmd.args(["--release", "--target", RUST_TARGET])
        .arg("--manifest-path")
        .arg(opts.plugins_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&opts.plugins_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if opts.offline {
        cmd.arg("--offline");
    }
    for names in &crates {
        cmd.args(["-p", &names.package]);
    }
    if opts.verbose {
        eprintln!("weir-build: running {cmd:?}");
        cmd.stderr(Stdio::inherit());
    } else {
        cmd.stderr(Stdio::piped());
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting cargo ({toolchain:?}) to build the plugins"))?;
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut stderr)
            .context("reading cargo's output")?;
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        bail!("cargo could not build the Rust plugins ({status}):\n{stderr}");
    }

    let out_dir = target_dir.join(RUST_TARGET).join("release");
    plugins
        .iter()
        .zip(&crates)
        .map(|(plugin, names)| {
            let path = out_dir.join(format!("{}.wasm", names.lib));
            let core = std::fs::read(&path).with_context(|| {
                format!(
                    "reading the core module of plugin `{}` at {}; is its crate a `cdylib`?",
                    plugin.name,
                    path.display()
                )
            })?;
            Ok((plugin.name.clone(), core))
        })
        .collect()
}

/// A plugin crate's package name and library (artifact) name.
struct CrateNames {
    package: String,
    lib: String,
}

impl CrateNames {
    /// Reads `[package] name` and `[lib] name` from the crate's `Cargo.toml`. A line scan, not
    /// a TOML parser: enough for plugin manifests, which write `name = "..."` on one line.
    fn read(dir: &Path) -> Result<Self> {
        let manifest: PathBuf = dir.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest)
            .with_context(|| format!("reading {}", manifest.display()))?;
        let (mut section, mut package, mut lib) = ("", None, None);
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line;
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            if key.trim() != "name" {
                continue;
            }
            let value = value.trim().trim_matches('"').to_owned();
            match section {
                "[package]" => package = Some(value),
                "[lib]" => lib = Some(value),
                _ => {}
            }
        }
        let package = package.with_context(|| {
            format!(
                "expected `name = \"...\"` in [package] of {}, found none",
                manifest.display()
            )
        })?;
        let lib = lib.unwrap_or_else(|| package.replace('-', "_"));
        Ok(Self { package, lib })
    }
}
