//! What the Python, JavaScript, Go and Zig builds share: installing a pinned toolchain from
//! its package registry into `plugins/target/toolchains/`, running tools with their output
//! kept for error messages, a lock per language, and fingerprints that skip unchanged builds.
//!
//! Every toolchain is installed once, idempotently: a `.installed` marker holding the pinned
//! version is written only after the install succeeded, so an interrupted install is redone.

use std::fs::File;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::Options;
use crate::toolchain::clean_command;

/// Where the guest toolchains are installed.
pub(crate) fn toolchains_dir(opts: &Options) -> PathBuf {
    opts.target_dir().join("toolchains")
}

/// Holds a language's lock file until dropped, so two builds never install or write the
/// same toolchain or outputs at once.
pub(crate) struct Lock {
    _file: File,
}

/// Takes the lock `<toolchains>/<name>.lock`, waiting for another build that holds it.
pub(crate) fn lock(opts: &Options, name: &str) -> Result<Lock> {
    let dir = toolchains_dir(opts);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}.lock"));
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    file.lock()
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(Lock { _file: file })
}

/// A pinned package of a registry, installed into its own directory.
pub(crate) struct Pinned<'a> {
    /// Directory of the install (a Python venv, or an npm prefix).
    pub dir: PathBuf,
    /// `name==version` for pip, `name@version` for npm.
    pub spec: &'a str,
    /// For messages: what the package is for.
    pub purpose: &'a str,
}

impl Pinned<'_> {
    fn marker(&self) -> PathBuf {
        self.dir.join(".installed")
    }

    fn is_installed(&self) -> bool {
        std::fs::read_to_string(self.marker()).is_ok_and(|s| s.trim() == self.spec)
    }

    /// Installs the package into a Python venv at `dir` with pip, unless already there.
    pub fn pip_install(&self, opts: &Options) -> Result<()> {
        if self.is_installed() {
            return Ok(());
        }
        if opts.offline {
            bail!(
                "{} ({}) is not installed and this build does not download anything; install it with `scripts/build-plugins` (the test command runs it first)",
                self.spec,
                self.purpose
            );
        }
        eprintln!(
            "weir-build: installing {} ({}) into {} with pip; once, up to a minute",
            self.spec,
            self.purpose,
            self.dir.display()
        );
        let _ = std::fs::remove_dir_all(&self.dir);
        let mut venv = clean_command("python3");
        venv.args(["-m", "venv"]).arg(&self.dir);
        run(opts, venv, "python3 -m venv").context(
            "creating a Python virtual environment; Python 3 with its venv module is needed \
             (Debian: `apt-get install -y python3-venv`)",
        )?;
        let mut pip = clean_command(self.dir.join("bin/pip"));
        pip.args([
            "install",
            "--disable-pip-version-check",
            "--quiet",
            self.spec,
        ]);
        run(opts, pip, &format!("pip install {}", self.spec))?;
        self.mark()
    }

    /// Installs the package with npm into the prefix `dir`, unless already there.
    pub fn npm_install(&self, opts: &Options) -> Result<()> {
        if self.is_installed() {
            return Ok(());
        }
        if opts.offline {
            bail!(
                "{} ({}) is not installed and this build does not download anything; install it with `scripts/build-plugins` (the test command runs it first)",
                self.spec,
                self.purpose
            );
        }
        eprintln!(
            "weir-build: installing {} ({}) into {} with npm; once, up to a minute",
            self.spec,
            self.purpose,
            self.dir.display()
        );
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let mut npm = clean_command("npm");
        npm.args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
            .arg("--prefix")
            .arg(&self.dir)
            .arg(self.spec);
        run(opts, npm, &format!("npm install {}", self.spec))
            .context("Node.js with npm is needed (Debian: `apt-get install -y nodejs npm`)")?;
        self.mark()
    }

    fn mark(&self) -> Result<()> {
        std::fs::write(self.marker(), self.spec)
            .with_context(|| format!("writing {}", self.marker().display()))
    }
}

/// Runs `cmd`; on failure the error carries what it printed. With `opts.verbose` the command
/// line and its output are shown as it runs.
pub(crate) fn run(opts: &Options, mut cmd: Command, what: &str) -> Result<()> {
    cmd.stdin(Stdio::null());
    if opts.verbose {
        eprintln!("weir-build: running {cmd:?}");
        cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        let status = cmd.status().with_context(|| format!("starting {what}"))?;
        if !status.success() {
            bail!("{what} failed ({status})");
        }
        return Ok(());
    }
    let out = cmd.output().with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        let text = text.trim();
        // The end of the output is where the error is.
        let tail: String = if text.len() > 4000 {
            let cut = text.len() - 4000;
            let cut = (cut..text.len())
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(cut);
            format!("...{}", &text[cut..])
        } else {
            text.to_owned()
        };
        bail!("{what} failed ({}):\n{tail}", out.status);
    }
    Ok(())
}

/// A fingerprint of everything a plugin's build reads: its files, the WIT package, and the
/// `extra` strings (toolchain versions, the build's own settings). Stored next to the
/// component after a successful build; an equal fingerprint means nothing needs rebuilding.
pub(crate) struct Fingerprint {
    value: String,
    path: PathBuf,
}

impl Fingerprint {
    pub fn of(opts: &Options, name: &str, dirs: &[&Path], extra: &[&str]) -> Result<Self> {
        let mut h = DefaultHasher::new();
        env!("CARGO_PKG_VERSION").hash(&mut h);
        extra.hash(&mut h);
        for dir in dirs.iter().copied().chain([opts.wit_dir.as_path()]) {
            hash_tree(dir, dir, &mut h)?;
        }
        Ok(Self {
            value: format!("{:016x}", h.finish()),
            path: opts.target_dir().join("stamps").join(name),
        })
    }

    /// Whether the last build had this fingerprint and its `output` is still there.
    pub fn is_current(&self, output: &Path) -> bool {
        output.is_file()
            && std::fs::read_to_string(&self.path).is_ok_and(|old| old.trim() == self.value)
    }

    /// Records a successful build.
    pub fn save(&self) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&self.path, &self.value)
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

/// Hashes the names and contents of the files under `dir`, in order, skipping `target` and
/// hidden entries (build outputs, caches).
fn hash_tree(root: &Path, dir: &Path, h: &mut DefaultHasher) -> Result<()> {
    for entry in crate::read_dir_sorted(dir)? {
        let name = entry.file_name().map(|n| n.to_string_lossy().into_owned());
        if name
            .as_deref()
            .is_none_or(|n| n == "target" || n.starts_with('.') || n == "__pycache__")
        {
            continue;
        }
        if entry.is_dir() {
            hash_tree(root, &entry, h)?;
        } else {
            entry.strip_prefix(root).unwrap_or(&entry).hash(h);
            std::fs::read(&entry)
                .with_context(|| format!("reading {}", entry.display()))?
                .hash(h);
        }
    }
    Ok(())
}

/// The one file in `dir` with extension `ext`.
pub(crate) fn single_file(dir: &Path, ext: &str) -> Result<PathBuf> {
    let files: Vec<PathBuf> = crate::read_dir_sorted(dir)?
        .into_iter()
        .filter(|f| f.is_file() && f.extension().is_some_and(|e| e == ext))
        .collect();
    match files.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one *.{ext} file in {} (the plugin's entry), found {}",
            dir.display(),
            files.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_follows_sources_not_outputs() {
        let root = std::env::temp_dir().join(format!("weir-build-fp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let plugin = root.join("plugins/p");
        let wit = root.join("wit");
        std::fs::create_dir_all(plugin.join("target")).unwrap();
        std::fs::create_dir_all(&wit).unwrap();
        std::fs::write(plugin.join("app.py"), "one").unwrap();
        std::fs::write(wit.join("a.wit"), "package a:b;").unwrap();
        let mut opts = Options::for_repo(&root);
        opts.wit_dir = wit.clone();
        let output = root.join("p.wasm");
        std::fs::write(&output, "component").unwrap();
        let fp = |extra: &str| Fingerprint::of(&opts, "p", &[&plugin], &[extra]).unwrap();

        let first = fp("v1");
        assert!(!first.is_current(&output), "never built");
        first.save().unwrap();
        assert!(fp("v1").is_current(&output));

        // Outputs, caches and hidden files are not sources.
        std::fs::write(plugin.join("target/out"), "x").unwrap();
        std::fs::write(plugin.join(".hidden"), "x").unwrap();
        assert!(fp("v1").is_current(&output));

        // A source, the WIT, the recipe, or a missing output: rebuild.
        std::fs::write(plugin.join("app.py"), "two").unwrap();
        assert!(!fp("v1").is_current(&output));
        fp("v1").save().unwrap();
        std::fs::write(wit.join("a.wit"), "package a:c;").unwrap();
        assert!(!fp("v1").is_current(&output));
        fp("v1").save().unwrap();
        assert!(!fp("v2").is_current(&output));
        std::fs::remove_file(&output).unwrap();
        assert!(!fp("v1").is_current(&output));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
