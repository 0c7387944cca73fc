//! Zig plugins: Zig from the `ziglang` package of PyPI (into a venv under `toolchains/zig`)
//! compiles the plugin's one `*.zig` file together with the C bindings that `wit-bindgen-c`
//! generates (see [`crate::c`]); the Zig code sees them as the module `message_handler`,
//! the header translated by `zig translate-c`. Output: a core module without WASI imports
//! (`-mexec-model=reactor -fno-entry`, libc for `malloc` only), componentized like C's.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::install::{self, Pinned, run, single_file};
use crate::toolchain::clean_command;
use crate::{Options, Plugin};

/// The pinned Zig toolchain.
pub(crate) const ZIGLANG: &str = "ziglang==0.17.1";

/// Builds a Zig plugin's core module, given the generated C bindings in `gen_dir` (the
/// `.c` and `_component_type.o` files in `generated`).
pub(crate) fn build(
    opts: &Options,
    plugin: &Plugin,
    gen_dir: &Path,
    generated: &[PathBuf],
    build_dir: &Path,
) -> Result<Vec<u8>> {
    let root = single_file(&plugin.dir, "zig")?;
    let tools = install::toolchains_dir(opts);
    let venv = tools.join("zig");
    Pinned {
        dir: venv.clone(),
        spec: ZIGLANG,
        purpose: "Zig plugins",
    }
    .pip_install(opts)?;
    let zig = || {
        let mut cmd = clean_command(venv.join("bin/python"));
        cmd.args(["-m", "ziglang"]);
        cmd
    };
    let global_cache = tools.join("zig-cache");

    // The header as a Zig module (regenerated each build: a second or two once cached).
    let header = gen_dir.join("message_handler.h");
    let bindings = build_dir.join("message_handler.zig");
    let mut translate = zig();
    translate
        .args(["translate-c", "-target", "wasm32-wasi", "-lc"])
        .arg("--global-cache-dir")
        .arg(&global_cache)
        .arg(&header);
    let out = translate.output().context("starting zig translate-c")?;
    if !out.status.success() {
        anyhow::bail!(
            "zig translate-c failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    crate::component::write_if_changed(&bindings, &out.stdout)?;

    let core = build_dir.join(format!("{}.core.wasm", plugin.name));
    let mut cmd = zig();
    cmd.args([
        "build-exe",
        "-target",
        "wasm32-wasi",
        "-mexec-model=reactor",
        "-fno-entry",
    ])
    .args(["-lc", "-O", "ReleaseSmall", "-fstrip"])
    .arg(format!("-femit-bin={}", core.display()))
    .arg("--cache-dir")
    .arg(build_dir.join("zig-cache"))
    .arg("--global-cache-dir")
    .arg(&global_cache)
    // Per-module arguments come before the module they belong to.
    .args(["--dep", "message_handler"])
    .args(generated)
    .arg("-I")
    .arg(gen_dir)
    .arg(format!("-Mroot={}", root.display()))
    .arg(format!("-Mmessage_handler={}", bindings.display()))
    .current_dir(&plugin.dir);
    run(opts, cmd, "zig build-exe")?;
    std::fs::read(&core).with_context(|| format!("reading {}", core.display()))
}
