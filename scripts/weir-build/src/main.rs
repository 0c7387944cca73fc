//! `weir-build`: builds weir's plugins into components and prints their paths.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use weir_build::Options;

const USAGE: &str = "\
usage: weir-build [OPTIONS] [PLUGIN...]

Builds every plugin under the plugins directory (or only the named ones) into
WebAssembly components and prints the path of each, one per line.

options:
  --plugins-dir DIR   plugins workspace            [default: <repo>/plugins]
  --wit-dir DIR       WIT package                  [default: <repo>/wit]
  --out-dir DIR       where <name>.wasm lands      [default: <repo>/plugins/target/components]
  -v, --verbose       show the compilers' and installers' output
  -h, --help          print this help";

fn main() {
    if let Err(e) = run() {
        eprintln!("weir-build: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let repo = repo.canonicalize().unwrap_or(repo);
    let mut opts = Options::for_repo(&repo);
    let mut only = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| -> Result<PathBuf> {
            args.next()
                .map(PathBuf::from)
                .with_context(|| format!("expected a directory after {flag}, found nothing"))
        };
        match arg.as_str() {
            "--plugins-dir" => opts.plugins_dir = value(&arg)?,
            "--wit-dir" => opts.wit_dir = value(&arg)?,
            "--out-dir" => opts.out_dir = value(&arg)?,
            "-v" | "--verbose" => opts.verbose = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            flag if flag.starts_with('-') => bail!("unknown option `{flag}`\n\n{USAGE}"),
            name => only.push(name.to_owned()),
        }
    }

    let started = Instant::now();
    let only: Vec<&str> = only.iter().map(String::as_str).collect();
    let report = weir_build::build(&opts, &only)?;
    for component in &report.built {
        println!("{}", component.path.display());
    }
    eprintln!(
        "weir-build: {} components in {} ({:.1}s)",
        report.built.len(),
        opts.out_dir.display(),
        started.elapsed().as_secs_f64()
    );
    for skipped in &report.skipped {
        eprintln!(
            "weir-build: warning: not built: {} ({}), see the reason above",
            skipped.name, skipped.language
        );
    }
    Ok(())
}
