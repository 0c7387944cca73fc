//! Python plugins: componentize-py (from PyPI, into a venv under `toolchains/python`) turns
//! the plugin's `app.py` (and any modules next to it) into a component of the
//! `message-handler` world, or of the world named in the plugin's `world` file (e.g.
//! `aggregate`). It bundles CPython, so the component is large (about 18 MB).
//!
//! `--stub-wasi` replaces every WASI import with a trap, so the component imports nothing
//! but `weir:plugin/*`, as weir requires; the interpreter's start-up already ran at build
//! time. The price: a Python handler cannot read files, the environment or a real random
//! source (see docs/languages.md).

use std::path::Path;

use anyhow::{Result, bail};

use crate::install::{self, Pinned, run};
use crate::toolchain::clean_command;
use crate::{Options, Plugin};

/// The pinned componentize-py.
pub(crate) const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

/// The module componentize-py loads: `app.py` in the plugin's directory.
const APP: &str = "app";

/// Builds a Python plugin's component into `out`.
pub(crate) fn build(opts: &Options, plugin: &Plugin, out: &Path) -> Result<()> {
    if !plugin.dir.join(format!("{APP}.py")).is_file() {
        bail!(
            "expected {APP}.py in {} (the module componentize-py loads)",
            plugin.dir.display()
        );
    }
    let venv = install::toolchains_dir(opts).join("python");
    Pinned {
        dir: venv.clone(),
        spec: COMPONENTIZE_PY,
        purpose: "Python plugins",
    }
    .pip_install(opts)?;
    let world = match std::fs::read_to_string(plugin.dir.join("world")) {
        Ok(w) => w.trim().to_owned(),
        Err(_) => "message-handler".to_owned(),
    };
    let mut cmd = clean_command(venv.join("bin/componentize-py"));
    cmd.arg("-d")
        .arg(&opts.wit_dir)
        .args(["-w", world.as_str(), "componentize", "--stub-wasi"])
        .arg("-p")
        .arg(&plugin.dir)
        .arg(APP)
        .arg("-o")
        .arg(out)
        // Keep the plugin directory free of __pycache__.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(&plugin.dir);
    run(opts, cmd, "componentize-py")
}
