//! JavaScript plugins: componentize-js (from npm, into `toolchains/js`) embeds the plugin's
//! one `*.js` module in the SpiderMonkey-based StarlingMonkey runtime and makes a component of
//! the `message-handler` world (about 12 MB).
//!
//! Every WASI feature componentize-js knows is disabled (`-d stdio random clocks http
//! fetch-event`), so the component imports nothing but `weir:plugin/*`, as weir requires:
//! `console.log` goes nowhere, `Math.random` is not seeded from the host, and there is no
//! `fetch` (see docs/languages.md).

use std::path::Path;

use anyhow::Result;

use crate::install::{self, Pinned, run, single_file};
use crate::toolchain::clean_command;
use crate::{Options, Plugin};

/// The pinned componentize-js.
pub(crate) const COMPONENTIZE_JS: &str = "@bytecodealliance/componentize-js@0.23.0";

/// Builds a JavaScript plugin's component into `out`.
pub(crate) fn build(opts: &Options, plugin: &Plugin, out: &Path) -> Result<()> {
    let source = single_file(&plugin.dir, "js")?;
    let prefix = install::toolchains_dir(opts).join("js");
    Pinned {
        dir: prefix.clone(),
        spec: COMPONENTIZE_JS,
        purpose: "JavaScript plugins",
    }
    .npm_install(opts)?;
    let mut cmd = clean_command("node");
    cmd.arg(prefix.join("node_modules/@bytecodealliance/componentize-js/src/cli.js"))
        .arg("--wit")
        .arg(&opts.wit_dir)
        .args(["--world-name", "message-handler"])
        .args(["-d", "stdio", "random", "clocks", "http", "fetch-event"])
        .arg("-o")
        .arg(out)
        .arg(&source)
        .current_dir(&plugin.dir);
    run(opts, cmd, "componentize-js")
}
