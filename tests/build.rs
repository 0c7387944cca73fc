//! Builds the example plugins from source (Rust and C) into components before the tests compile,
//! and exposes their paths as `WEIR_PLUGIN_<NAME>` environment variables, like wasmtime's
//! test-programs.

use std::path::Path;

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository");
    let opts = weir_build::Options::for_repo(root);
    for p in weir_build::input_paths(&opts)? {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let built = weir_build::build_all(&opts)?;
    for b in built {
        let var = format!("WEIR_PLUGIN_{}", b.name.to_uppercase().replace('-', "_"));
        println!("cargo:rustc-env={var}={}", b.path.display());
    }
    Ok(())
}
