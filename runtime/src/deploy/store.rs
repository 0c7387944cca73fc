//! A plugin's versions on disk: `<data_dir>/plugins/<plugin>/`, one `<sha256>.wasm` per
//! version (content-addressed: deploying the same bytes again reactivates that version) and
//! `versions.json`, the manifest: every version's sequence number, hash, origin and history,
//! which one is active, the hash of the last content taken from the plugin's configured
//! file, and the latest refused deploys. Every write is atomic (temporary file, fsync, rename, fsync of the directory), and a
//! version's artifact is durable before the manifest names it.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ids::now_ms;

/// Versions kept on disk per plugin; older ones that are neither active nor the active one's
/// previous version are removed.
pub(super) const KEEP_VERSIONS: usize = 16;

/// Refused deploys remembered per plugin (the newest).
pub(super) const KEEP_REFUSALS: usize = 8;

const MANIFEST: &str = "versions.json";
const FORMAT: u32 = 1;

/// Where a version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// The plugin's configured component file (at startup or when it changed).
    File,
    /// Uploaded through the API (`weir plugin deploy`).
    Upload,
}

/// One version, as recorded in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct VersionRecord {
    pub seq: u64,
    pub sha256: String,
    pub size: u64,
    pub origin: Origin,
    /// When it was first stored (ms since the Unix epoch).
    pub created_ms: u64,
    /// When it last became active.
    #[serde(default)]
    pub activated_ms: Option<u64>,
    /// The version that was active when this one was last deployed: what a rollback restores.
    #[serde(default)]
    pub previous: Option<u64>,
    /// Set when it was rolled back (until it is deployed again).
    #[serde(default)]
    pub rolled_back: Option<RolledBack>,
}

/// A rollback away from a version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct RolledBack {
    pub at_ms: u64,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    next_seq: u64,
    active: Option<u64>,
    /// SHA-256 of the last content read from the configured file, loaded or refused.
    file_sha256: Option<String>,
    versions: Vec<VersionRecord>,
    /// The latest refused deploys, oldest first.
    #[serde(default)]
    refusals: Vec<super::Refusal>,
    /// A shadow rebuild's swap recorded the active version but may not have copied the
    /// rebuilt key-value state from the shadow namespace yet: the copy is redone before any
    /// binding starts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    copy_pending: bool,
}

/// Why the version store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing failed.
    #[error("plugin versions in {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The manifest cannot be parsed.
    #[error("the plugin version manifest {} is damaged ({reason}); move it away to start from the configured component files (the stored versions next to it stay untouched)", path.display())]
    Damaged {
        /// The manifest.
        path: PathBuf,
        /// The parse error.
        reason: String,
    },
}

/// One plugin's version store.
#[derive(Debug)]
pub(super) struct VersionStore {
    /// `None`: kept in memory only (`weir check`).
    dir: Option<PathBuf>,
    manifest: Manifest,
    /// The manifest changed since it was last written (a deferred save).
    dirty: bool,
}

impl VersionStore {
    /// Opens (creating) the store in `dir`.
    pub fn open(dir: PathBuf) -> Result<VersionStore, StoreError> {
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(MANIFEST);
        let manifest = match std::fs::read(&path) {
            Ok(bytes) => {
                let m: Manifest =
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::Damaged {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                if m.format != FORMAT {
                    return Err(StoreError::Damaged {
                        path,
                        reason: format!("format {} is not the {FORMAT} this weir reads", m.format),
                    });
                }
                m
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Manifest {
                format: FORMAT,
                next_seq: 1,
                ..Manifest::default()
            },
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        Ok(VersionStore {
            dir: Some(dir),
            manifest,
            dirty: false,
        })
    }

    /// A store that writes nothing (for validating a config without touching its data).
    pub fn ephemeral() -> VersionStore {
        VersionStore {
            dir: None,
            manifest: Manifest {
                format: FORMAT,
                next_seq: 1,
                ..Manifest::default()
            },
            dirty: false,
        }
    }

    /// Every version, oldest first.
    pub fn versions(&self) -> &[VersionRecord] {
        &self.manifest.versions
    }

    pub fn get(&self, seq: u64) -> Option<&VersionRecord> {
        self.manifest.versions.iter().find(|v| v.seq == seq)
    }

    pub fn by_hash(&self, sha256: &str) -> Option<&VersionRecord> {
        self.manifest.versions.iter().find(|v| v.sha256 == sha256)
    }

    /// The sequence number `sha256` has, or would get if deployed now.
    pub fn seq_for(&self, sha256: &str) -> u64 {
        self.by_hash(sha256)
            .map_or(self.manifest.next_seq, |v| v.seq)
    }

    pub fn active(&self) -> Option<&VersionRecord> {
        self.manifest.active.and_then(|seq| self.get(seq))
    }

    /// The hash of the last content taken from the configured file.
    pub fn file_sha256(&self) -> Option<&str> {
        self.manifest.file_sha256.as_deref()
    }

    /// The stored component of a version.
    pub fn artifact(&self, sha256: &str) -> PathBuf {
        let file = format!("{sha256}.wasm");
        match &self.dir {
            Some(dir) => dir.join(file),
            None => PathBuf::from(file),
        }
    }

    pub fn read_artifact(&self, v: &VersionRecord) -> Result<Vec<u8>, StoreError> {
        let path = self.artifact(&v.sha256);
        std::fs::read(&path).map_err(|source| StoreError::Io { path, source })
    }

    /// Records the content of the configured file as taken (it is the active version's), so
    /// it is not taken again after a restart.
    pub fn saw_file(&mut self, sha256: &str) -> Result<(), StoreError> {
        if self.manifest.file_sha256.as_deref() == Some(sha256) {
            return Ok(());
        }
        self.manifest.file_sha256 = Some(sha256.to_owned());
        self.save()
    }

    /// The latest refused deploys, oldest first.
    pub fn refusals(&self) -> &[super::Refusal] {
        &self.manifest.refusals
    }

    /// Records a refused deploy (the newest [`KEEP_REFUSALS`]); a refused configured file is
    /// also recorded as seen, so it is not taken again after a restart.
    pub fn refuse(&mut self, refusal: super::Refusal) -> Result<(), StoreError> {
        if refusal.origin == Origin::File {
            self.manifest.file_sha256 = Some(refusal.sha256.clone());
        }
        let r = &mut self.manifest.refusals;
        r.push(refusal);
        if r.len() > KEEP_REFUSALS {
            r.remove(0);
        }
        self.save()
    }

    /// Writes a stored version's artifact again (it was found damaged) from its bytes.
    pub fn restore_artifact(&self, bytes: &[u8], sha256: &str) -> Result<(), StoreError> {
        if self.dir.is_some() {
            write_file(&self.artifact(sha256), bytes, true)?;
        }
        Ok(())
    }

    /// Makes `bytes` the active version: a new version (its artifact stored durably first), or
    /// the existing one with the same content. The version active before becomes its
    /// `previous`. With `defer`, the manifest is written by a later [`VersionStore::flush`]
    /// (for changes of the configured file: if the process dies first, the restart takes the
    /// file again).
    pub fn deploy(
        &mut self,
        bytes: &[u8],
        sha256: &str,
        origin: Origin,
        defer: bool,
    ) -> Result<VersionRecord, StoreError> {
        let previous = self.manifest.active;
        let now = now_ms();
        let seq = match self.by_hash(sha256) {
            Some(v) => v.seq,
            None => {
                if self.dir.is_some() {
                    // Its directory is fsynced with the manifest's rename just below.
                    write_file(&self.artifact(sha256), bytes, false)?;
                }
                let seq = self.manifest.next_seq;
                self.manifest.next_seq += 1;
                self.manifest.versions.push(VersionRecord {
                    seq,
                    sha256: sha256.to_owned(),
                    size: bytes.len() as u64,
                    origin,
                    created_ms: now,
                    activated_ms: None,
                    previous: None,
                    rolled_back: None,
                });
                seq
            }
        };
        if let Some(v) = self.version_mut(seq) {
            if previous != Some(seq) {
                v.previous = previous;
            }
            v.activated_ms = Some(now);
            v.rolled_back = None;
        }
        self.manifest.active = Some(seq);
        if origin == Origin::File {
            self.manifest.file_sha256 = Some(sha256.to_owned());
        }
        self.prune();
        if defer {
            self.dirty = true;
        } else {
            self.save()?;
        }
        Ok(self.get(seq).cloned().expect("just recorded"))
    }

    /// Whether a shadow rebuild's copy of its key-value state is still due.
    pub fn copy_pending(&self) -> bool {
        self.manifest.copy_pending
    }

    /// Makes `bytes` the active version as a shadow rebuild's result, recording (in the same
    /// manifest write) that its key-value state is still to be copied from the shadow
    /// namespace.
    pub fn deploy_rebuilt(
        &mut self,
        bytes: &[u8],
        sha256: &str,
        origin: Origin,
    ) -> Result<VersionRecord, StoreError> {
        self.manifest.copy_pending = true;
        let deployed = self.deploy(bytes, sha256, origin, false);
        if deployed.is_err() {
            self.manifest.copy_pending = false;
        }
        deployed
    }

    /// Records that a rebuild's copy is done.
    pub fn copy_done(&mut self) -> Result<(), StoreError> {
        if !self.manifest.copy_pending {
            return Ok(());
        }
        self.manifest.copy_pending = false;
        self.save()
    }

    /// Makes `to` active again after a rollback away from the active version.
    pub fn roll_back(&mut self, to: u64, reason: &str) -> Result<VersionRecord, StoreError> {
        let now = now_ms();
        if let Some(from) = self.manifest.active.filter(|a| *a != to)
            && let Some(v) = self.version_mut(from)
        {
            v.rolled_back = Some(RolledBack {
                at_ms: now,
                reason: reason.to_owned(),
            });
        }
        if let Some(v) = self.version_mut(to) {
            v.activated_ms = Some(now);
            v.rolled_back = None;
        }
        self.manifest.active = Some(to);
        self.save()?;
        Ok(self.get(to).cloned().expect("rollback targets are stored"))
    }

    fn version_mut(&mut self, seq: u64) -> Option<&mut VersionRecord> {
        self.manifest.versions.iter_mut().find(|v| v.seq == seq)
    }

    /// Drops the oldest versions beyond [`KEEP_VERSIONS`], except the active one and its
    /// previous (their artifacts are removed after the manifest no longer names them).
    fn prune(&mut self) {
        let active = self.manifest.active;
        let previous = self.active().and_then(|v| v.previous);
        while self.manifest.versions.len() > KEEP_VERSIONS {
            let Some(i) = self
                .manifest
                .versions
                .iter()
                .position(|v| Some(v.seq) != active && Some(v.seq) != previous)
            else {
                break;
            };
            let gone = self.manifest.versions.remove(i);
            // Removed only from the manifest now; the file goes after the manifest is saved.
            let _ = std::fs::remove_file(self.artifact(&gone.sha256));
            tracing::info!(version = gone.seq, "removed an old plugin version");
        }
    }

    /// Writes the manifest if a deferred change is pending.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        if self.dirty {
            self.save()?;
        }
        Ok(())
    }

    fn save(&mut self) -> Result<(), StoreError> {
        self.dirty = false;
        let Some(dir) = &self.dir else { return Ok(()) };
        let bytes = serde_json::to_vec_pretty(&self.manifest).expect("the manifest serializes");
        write_file(&dir.join(MANIFEST), &bytes, true)
    }
}

/// Writes a file so that it is either absent or complete after a crash: a temporary file,
/// fsynced, renamed over the target, then (with `sync_dir`) the directory fsynced, which makes
/// every rename in it so far durable.
fn write_file(path: &Path, bytes: &[u8], sync_dir: bool) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_data().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    if sync_dir && let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_rollback_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = VersionStore::open(dir.path().join("p")).unwrap();
        let a = s.deploy(b"a", "ha", Origin::File, false).unwrap();
        let b = s.deploy(b"b", "hb", Origin::Upload, true).unwrap();
        assert_eq!((a.seq, b.seq, b.previous), (1, 2, Some(1)));
        // The same content again is the same version.
        let a2 = s.deploy(b"a", "ha", Origin::File, false).unwrap();
        assert_eq!((a2.seq, a2.previous), (1, Some(2)));
        let back = s.roll_back(2, "by command").unwrap();
        assert_eq!(back.seq, 2);
        assert!(s.get(1).unwrap().rolled_back.is_some());
        s.refuse(crate::deploy::Refusal {
            at_ms: 1,
            sha256: "hx".into(),
            origin: Origin::File,
            error: "not a component".into(),
        })
        .unwrap();
        let s = VersionStore::open(dir.path().join("p")).unwrap();
        assert_eq!(s.active().unwrap().seq, 2);
        assert_eq!(s.file_sha256(), Some("hx"), "a refused file counts as seen");
        assert_eq!(s.refusals()[0].error, "not a component");
        assert_eq!(s.read_artifact(s.get(1).unwrap()).unwrap(), b"a");
    }

    #[test]
    fn old_versions_are_pruned_but_not_the_active_or_previous() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = VersionStore::open(dir.path().to_owned()).unwrap();
        for i in 0..KEEP_VERSIONS + 5 {
            s.deploy(
                i.to_string().as_bytes(),
                &format!("h{i}"),
                Origin::Upload,
                false,
            )
            .unwrap();
        }
        assert_eq!(s.versions().len(), KEEP_VERSIONS);
        assert!(!s.artifact("h0").exists());
        assert!(s.artifact(&format!("h{}", KEEP_VERSIONS + 4)).exists());
    }

    #[test]
    fn a_damaged_manifest_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST), b"{not json").unwrap();
        let err = VersionStore::open(dir.path().to_owned()).unwrap_err();
        assert!(err.to_string().contains("move it away"), "{err}");
    }
}
