//! Where a benchmark writes: a temporary directory `<base>/.weir-bench-<name>-XXXXXX`, removed
//! on every way out. Dropping the [`WorkDir`] removes it (a normal end, an error returned, a
//! panic unwinding through the benchmark); Ctrl-C or SIGTERM, whose default action would leave
//! it behind, removes every directory still open and exits (130 and 143, as a shell reports
//! those signals). The names match `.weir-bench-*/` in `.gitignore`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once, PoisonError};
use std::time::Duration;

use anyhow::Context;

/// Directories of benchmarks in this process, removed by the signal thread.
static OPEN: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A benchmark's temporary directory.
pub(super) struct WorkDir {
    /// `None` once kept.
    dir: Option<tempfile::TempDir>,
}

impl WorkDir {
    /// Creates `<base>/.weir-bench-<name>-XXXXXX` (and `base` if missing).
    pub(super) fn new(name: &str, base: &Path) -> anyhow::Result<WorkDir> {
        watch_signals();
        std::fs::create_dir_all(base)
            .with_context(|| format!("creating the benchmark directory {}", base.display()))?;
        // Registered under the lock that the signal thread takes, so a directory is either
        // seen by it or not yet created.
        let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
        let dir = tempfile::Builder::new()
            .prefix(&format!(".weir-bench-{name}-"))
            .tempdir_in(base)
            .with_context(|| format!("creating a temporary directory in {}", base.display()))?;
        open.push(dir.path().to_owned());
        Ok(WorkDir { dir: Some(dir) })
    }

    pub(super) fn path(&self) -> &Path {
        self.dir.as_ref().expect("not kept").path()
    }

    /// Leaves the directory in place (a signal no longer removes it) and returns its path.
    pub(super) fn keep(mut self) -> PathBuf {
        let dir = self.dir.take().expect("not kept");
        forget(dir.path());
        dir.keep()
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            forget(dir.path());
            // `TempDir`'s own drop ignores errors; say so when the directory stays.
            let path = dir.path().to_owned();
            if let Err(e) = dir.close() {
                eprintln!("could not remove {}: {e}", path.display());
            }
        }
    }
}

fn forget(path: &Path) {
    OPEN.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|p| p != path);
}

/// Starts, once per process, the thread that removes the open directories on Ctrl-C or
/// SIGTERM and exits. The handlers are installed before this returns, so no signal arriving
/// after a directory exists takes the default action.
fn watch_signals() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!(
                    "cannot watch for Ctrl-C ({e}): an interrupted benchmark leaves its directory"
                );
                return;
            }
        };
        let signals = {
            let _entered = rt.enter();
            Signals::install()
        };
        let signals = match signals {
            Ok(s) => s,
            Err(e) => {
                eprintln!(
                    "cannot watch for Ctrl-C ({e}): an interrupted benchmark leaves its directory"
                );
                return;
            }
        };
        let spawned = std::thread::Builder::new()
            .name("weir-bench-signals".into())
            .spawn(move || {
                let code = rt.block_on(signals.next());
                remove_open();
                std::process::exit(code);
            });
        if let Err(e) = spawned {
            eprintln!(
                "cannot watch for Ctrl-C ({e}): an interrupted benchmark leaves its directory"
            );
        }
    });
}

/// Removes every open directory. The benchmark's threads may still be writing into one, so a
/// removal that finds new files is tried again.
fn remove_open() {
    let open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
    for dir in open.iter() {
        let mut tries = 0;
        while let Err(e) = std::fs::remove_dir_all(dir) {
            if e.kind() == std::io::ErrorKind::NotFound {
                break;
            }
            tries += 1;
            if tries == 20 {
                eprintln!("could not remove {}: {e}", dir.display());
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    if !open.is_empty() {
        eprintln!("interrupted: removed the benchmark's directory");
    }
}

#[cfg(unix)]
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    /// Installs the handlers (inside a tokio runtime's context).
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// The exit code of the first signal received.
    async fn next(mut self) -> i32 {
        tokio::select! {
            _ = self.interrupt.recv() => 130,
            _ = self.terminate.recv() => 143,
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals)
    }

    async fn next(self) -> i32 {
        let _ = tokio::signal::ctrl_c().await;
        130
    }
}
