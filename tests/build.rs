//! Builds the example plugins from source (Rust, C, Python, JavaScript, Go and Zig) into
//! components before the tests compile, and exposes their paths as `WEIR_PLUGIN_<NAME>`
//! environment variables, like wasmtime's test-programs. A plugin whose language toolchain
//! could not be installed or whose build failed gets `WEIR_PLUGIN_SKIPPED_<NAME>` with the
//! reason instead, and its tests fail saying so.

use std::path::Path;

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository");
    // Off the network: `cargo check` and editors run this script too. scripts/test (and
    // scripts/build-plugins) install the toolchains and fetch the plugins' crates first.
    let opts = weir_build::Options {
        offline: true,
        ..weir_build::Options::for_repo(root)
    };
    for p in weir_build::input_paths(&opts)? {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let report = weir_build::build_all(&opts)?;
    let var = |name: &str| name.to_uppercase().replace('-', "_");
    for b in report.built {
        println!(
            "cargo:rustc-env=WEIR_PLUGIN_{}={}",
            var(&b.name),
            b.path.display()
        );
    }
    for s in report.skipped {
        let reason = s.reason.replace(['\n', '\r'], " ");
        println!(
            "cargo:warning=plugin {} ({}) was not built: {reason}",
            s.name, s.language
        );
        println!(
            "cargo:rustc-env=WEIR_PLUGIN_SKIPPED_{}={reason}",
            var(&s.name)
        );
    }
    Ok(())
}
