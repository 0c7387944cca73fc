//! Compiling the C plugins: C bindings generated from the WIT package with `wit-bindgen-c`,
//! then clang 19 for `wasm32-wasi` without libc start files, so a plugin that does not call
//! WASI functions imports nothing but `weir:plugin/*`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use wit_bindgen_core::wit_parser::Resolve;

use crate::component::{write_atomically, write_if_changed};
use crate::toolchain::{C_APT_PACKAGES, clang, clean_command};
use crate::{Options, Plugin};

/// The world C plugins implement.
const WORLD: &str = "message-handler";

/// Builds each C plugin; returns `(plugin name, core module)` pairs.
pub(crate) fn build(opts: &Options, plugins: &[&Plugin]) -> Result<Vec<(String, Vec<u8>)>> {
    let clang = clang()?;
    let gen_dir = opts.target_dir().join("c-gen");
    let generated = generate_bindings(&opts.wit_dir, &gen_dir)?;
    let build_dir = opts.target_dir().join("c-build");
    std::fs::create_dir_all(&build_dir)
        .with_context(|| format!("creating {}", build_dir.display()))?;
    plugins
        .iter()
        .map(|plugin| {
            let core = compile(opts, &clang, plugin, &gen_dir, &generated, &build_dir)?;
            Ok((plugin.name.clone(), core))
        })
        .collect()
}

/// Writes the C bindings of [`WORLD`] (`.c`, `.h` and the `_component_type.o` object carrying
/// the component-type section) into `gen_dir`; returns the files to compile and link.
pub(crate) fn generate_bindings(wit_dir: &Path, gen_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut resolve = Resolve::new();
    let (package, _) = resolve
        .push_dir(wit_dir)
        .with_context(|| format!("parsing the WIT package in {}", wit_dir.display()))?;
    let world = resolve.select_world(&[package], Some(WORLD))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)
        .context("generating C bindings")?;
    std::fs::create_dir_all(gen_dir).with_context(|| format!("creating {}", gen_dir.display()))?;
    let mut inputs = Vec::new();
    for (name, bytes) in files.iter() {
        let path = gen_dir.join(name);
        write_if_changed(&path, bytes)?;
        if name.ends_with(".c") || name.ends_with(".o") {
            inputs.push(path);
        }
    }
    Ok(inputs)
}

/// Compiles and links one C plugin into a core module.
fn compile(
    opts: &Options,
    clang: &Path,
    plugin: &Plugin,
    gen_dir: &Path,
    generated: &[PathBuf],
    build_dir: &Path,
) -> Result<Vec<u8>> {
    let sources: Vec<PathBuf> = crate::read_dir_sorted(&plugin.dir)?
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "c"))
        .collect();
    // A per-process output name: concurrent builds must not write into each other's file.
    let tmp = build_dir.join(format!(".{}.{}.core.wasm", plugin.name, std::process::id()));
    let mut cmd = clean_command(clang);
    cmd.args([
        "--target=wasm32-wasi",
        "-nostartfiles",
        "-Wl,--no-entry",
        "-Os",
    ])
    .args(["-Wl,--strip-all", "-Wall", "-Wextra"])
    .arg("-I")
    .arg(gen_dir)
    .arg("-o")
    .arg(&tmp)
    .args(&sources)
    .args(generated)
    .stdin(Stdio::null());
    if opts.verbose {
        eprintln!("weir-build: running {cmd:?}");
    }
    let out = cmd
        .output()
        .with_context(|| format!("starting {}", clang.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        bail!(
            "clang could not build C plugin `{}` ({}); if headers or libraries for \
             wasm32-wasi are missing, install `apt-get install -y {C_APT_PACKAGES}`:\n{stderr}",
            plugin.name,
            out.status
        );
    }
    if opts.verbose && !stderr.is_empty() {
        eprintln!("{stderr}");
    }
    let core = std::fs::read(&tmp).with_context(|| format!("reading {}", tmp.display()))?;
    let _ = std::fs::remove_file(&tmp);
    // Kept for inspection; not read back.
    write_atomically(&build_dir.join(format!("{}.core.wasm", plugin.name)), &core)?;
    Ok(core)
}
