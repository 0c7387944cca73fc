//! Finding the compilers, and running them in a clean environment.
//!
//! Rust plugins need a standard library for `wasm32-unknown-unknown`. A rustup toolchain that
//! has one installed (`rustup target add wasm32-unknown-unknown`) is used as is. Otherwise,
//! on machines where rustup cannot download targets, Debian's `rustc-web` (which ships the std
//! sources) builds std itself: `/usr/bin/cargo` with `RUSTC_BOOTSTRAP=1` and
//! `-Zbuild-std=std,panic_abort`. C plugins need clang 19 with wasi-libc.
//!
//! Inside a build script, the environment is full of settings meant for the outer build
//! (`RUSTC`, `RUSTFLAGS`, `CARGO_TARGET_DIR`, a jobserver, `RUSTUP_TOOLCHAIN`, ...). Every
//! command here starts from the environment with those removed.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Result, bail};

/// The apt packages that provide Debian's Rust toolchain for wasm guests.
pub const RUST_APT_PACKAGES: &str = "rustc-web cargo-web rust-web-src lld-22";
/// The apt packages that provide clang for C guests.
pub const C_APT_PACKAGES: &str = "clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32";

/// The core-module target Rust plugins are compiled for.
pub const RUST_TARGET: &str = "wasm32-unknown-unknown";

/// Where Debian's `rust-web-src` puts the standard library sources.
const DEBIAN_STD_SOURCES: &str = "/usr/lib/rustlib/src/rust/library";

/// Which Rust toolchain compiles the plugins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RustToolchain {
    /// The `cargo` on `PATH` (normally rustup's), whose toolchain has the
    /// `wasm32-unknown-unknown` standard library installed.
    Installed,
    /// Debian's cargo and rustc, building std from source with `-Zbuild-std`.
    DebianBuildStd,
}

impl RustToolchain {
    /// Picks the toolchain as described in the [module docs](self); `plugins_dir` is where
    /// cargo will run (a `rust-toolchain` file there selects rustup's toolchain).
    pub fn detect(plugins_dir: &Path) -> Result<Self> {
        if installed_has_wasm_std(plugins_dir) {
            return Ok(Self::Installed);
        }
        let needed = ["/usr/bin/cargo", "/usr/bin/rustc", "/usr/bin/rust-lld"];
        let missing: Vec<&str> = needed
            .into_iter()
            .chain([DEBIAN_STD_SOURCES])
            .filter(|p| !Path::new(p).exists())
            .collect();
        if !missing.is_empty() {
            bail!(
                "no Rust toolchain can build for {RUST_TARGET}: the default toolchain has no \
                 {RUST_TARGET} standard library and Debian's rustc-web is missing {}; \
                 install it with `apt-get install -y {RUST_APT_PACKAGES}` \
                 (or, with internet access, `rustup target add {RUST_TARGET}`)",
                missing.join(", ")
            );
        }
        Ok(Self::DebianBuildStd)
    }

    /// A `cargo` command in a clean environment, with the flags that build std when needed.
    /// Append the subcommand's own arguments after these.
    pub fn cargo(&self, subcommand: &str) -> Command {
        match self {
            Self::Installed => {
                let mut cmd = clean_command("cargo");
                cmd.arg(subcommand);
                cmd
            }
            Self::DebianBuildStd => {
                let mut cmd = clean_command("/usr/bin/cargo");
                cmd.arg(subcommand)
                    .arg("-Zbuild-std=std,panic_abort")
                    .env("RUSTC", "/usr/bin/rustc")
                    .env("RUSTDOC", "/usr/bin/rustdoc")
                    .env("RUSTC_BOOTSTRAP", "1")
                    .env("PATH", path_with_usr_bin_first());
                cmd
            }
        }
    }
}

/// Whether `rustc` on `PATH` has a `wasm32-unknown-unknown` standard library in its sysroot.
fn installed_has_wasm_std(plugins_dir: &Path) -> bool {
    let Ok(out) = clean_command("rustc")
        .args(["--print", "sysroot"])
        .current_dir(plugins_dir)
        .stderr(Stdio::null())
        .output()
    else {
        return false;
    };
    if !out.status.success() {
        return false;
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let lib = sysroot.join("lib/rustlib").join(RUST_TARGET).join("lib");
    std::fs::read_dir(lib).is_ok_and(|mut entries| {
        entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libstd-")))
    })
}

/// `PATH` with `/usr/bin` first, so Debian's cargo finds Debian's `rustc` and `rust-lld`
/// rather than rustup's proxies.
fn path_with_usr_bin_first() -> std::ffi::OsString {
    let rest = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![PathBuf::from("/usr/bin")];
    dirs.extend(std::env::split_paths(&rest).filter(|d| d != Path::new("/usr/bin")));
    std::env::join_paths(dirs).unwrap_or(rest)
}

/// Finds clang 19 (`clang-19` on `PATH`, or LLVM 19's own directory).
pub fn clang() -> Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("clang-19"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let candidates = on_path
        .into_iter()
        .chain([PathBuf::from("/usr/lib/llvm-19/bin/clang")]);
    for candidate in candidates {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "C plugins need clang-19, found none on PATH or in /usr/lib/llvm-19/bin; \
         install it with `apt-get install -y {C_APT_PACKAGES}`"
    )
}

/// A command whose environment lacks everything cargo sets for build scripts and rustc, and
/// everything that would redirect or reconfigure a nested build.
pub fn clean_command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(inherited_from_outer_build) {
            cmd.env_remove(&key);
        }
    }
    cmd
}

/// Whether an environment variable belongs to an outer cargo build (or configures a build in
/// a way a nested build must not inherit). Registry, network and terminal settings are kept.
fn inherited_from_outer_build(key: &str) -> bool {
    const KEEP: &[&str] = &[
        "CARGO_HOME",
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
        "CARGO_TERM_",
    ];
    const DROP: &[&str] = &[
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_LINKER",
        "RUSTC_BOOTSTRAP",
        "RUSTDOC",
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "RUSTUP_TOOLCHAIN",
        "MAKEFLAGS",
        "MFLAGS",
        "CLIPPY_ARGS",
        "TARGET",
        "HOST",
        "OUT_DIR",
        "OPT_LEVEL",
        "PROFILE",
        "DEBUG",
        "NUM_JOBS",
    ];
    if key == "CARGO"
        || DROP.contains(&key)
        || key.starts_with("DEP_")
        || key.starts_with("__CARGO")
    {
        return true;
    }
    key.starts_with("CARGO_") && !KEEP.iter().any(|k| key.starts_with(k))
}

#[cfg(test)]
mod tests {
    use super::inherited_from_outer_build as dropped;

    #[test]
    fn drops_outer_build_settings_keeps_registry_settings() {
        for key in [
            "CARGO",
            "CARGO_TARGET_DIR",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_MAKEFLAGS",
            "CARGO_BUILD_TARGET",
            "CARGO_CFG_TARGET_ARCH",
            "CARGO_PKG_NAME",
            "CARGO_MANIFEST_DIR",
            "RUSTC_WRAPPER",
            "RUSTUP_TOOLCHAIN",
            "MAKEFLAGS",
            "DEP_Z_INCLUDE",
        ] {
            assert!(dropped(key), "{key} should be dropped");
        }
        for key in [
            "CARGO_HOME",
            "CARGO_NET_OFFLINE",
            "CARGO_HTTP_TIMEOUT",
            "PATH",
            "HOME",
        ] {
            assert!(!dropped(key), "{key} should be kept");
        }
    }
}
