//! The precompiled-component cache: compiled code serialized to `<dir>/<key>.cwasm`, where the
//! key covers the component's content hash, the wasmtime version and the engine settings, so a
//! restart loads a known plugin without compiling it again.
//!
//! File layout: 32 bytes of SHA-256 over the rest, then wasmtime's serialized component.
//!
//! This is the file tier; `recent.rs` keeps recently loaded components in memory in front of it.
//!
//! The one module that uses `unsafe`: `Component::deserialize` trusts its input to be
//! wasmtime's own output. We make that true by reading only files this module wrote into weir's
//! data directory, named by a key that includes the engine settings, and by verifying the
//! checksum over every byte before deserializing, so a torn or corrupted file is recompiled
//! rather than loaded. wasmtime itself also refuses output of another version or configuration.
//!
//! The checksum detects damage; it does not authenticate. A cache file is native code, so
//! whoever can write the cache directory can make weir run code of their choosing: the directory
//! (and `server.data_dir` around it) must be as trusted as the weir binary. [`ensure_private_dir`]
//! creates it with mode 0700 and refuses one its group or others can write.
#![allow(unsafe_code)]

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of precompiled components.
#[derive(Debug)]
pub(super) struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(dir: PathBuf) -> Cache {
        Cache { dir }
    }

    fn path(&self, engine: &Engine, content_hash: &str) -> PathBuf {
        let key = engine_key(
            env!("CARGO_PKG_VERSION"),
            engine.precompile_compatibility_hash(),
        );
        self.dir.join(format!("{content_hash}-{key}.cwasm"))
    }

    /// The cached compiled form, if present and intact.
    pub fn get(&self, engine: &Engine, content_hash: &str) -> Option<Component> {
        let path = self.path(engine, content_hash);
        let bytes = std::fs::read(&path).ok()?;
        if bytes.len() < 32 || Sha256::digest(&bytes[32..])[..] != bytes[..32] {
            tracing::warn!(path = %path.display(), "precompiled component is damaged; compiling again");
            return None;
        }
        // SAFETY: the bytes are `Component::serialize` output written by `put` below for this
        // engine configuration, verified intact by the checksum above (see the module docs).
        match unsafe { Component::deserialize(engine, &bytes[32..]) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), "precompiled component refused ({e:#}); compiling again");
                None
            }
        }
    }

    /// Stores a compiled component (atomically: temp file, rename). Not fsynced: this is a
    /// cache, a file torn by a crash fails its checksum and is compiled again, and an fsync
    /// here would queue behind (and delay) the logs' own on the same disk.
    pub fn put(
        &self,
        engine: &Engine,
        content_hash: &str,
        component: &Component,
    ) -> anyhow::Result<()> {
        ensure_private_dir(&self.dir)?;
        let code = component.serialize()?;
        let path = self.path(engine, content_hash);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&Sha256::digest(&code))?;
        f.write_all(&code)?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        tracing::debug!(path = %path.display(), "cached precompiled component");
        Ok(())
    }
}

/// The part of a cache file's name that says which engine compiled it: 16 hex digits of
/// SHA-256 over weir's version and what the engine's compatibility hash (wasmtime's version,
/// the compiler settings and features) writes into a hasher. SHA-256, not `DefaultHasher`,
/// whose algorithm may change between Rust releases and would turn every file into a miss.
fn engine_key(weir_version: &str, engine: impl Hash) -> String {
    let mut h = Sha256Hasher(Sha256::new());
    weir_version.hash(&mut h);
    engine.hash(&mut h);
    super::plugin::hex(&h.0.finalize()[..8])
}

/// A [`Hasher`] that feeds every byte it is given to SHA-256.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("SHA-256 has 32 bytes"))
    }
}

/// Makes sure `dir` is a directory only its owner can write: a missing one is created (with
/// its missing parents) with mode 0700; an existing one its group or others can write is
/// refused, since whoever can write there can make weir run native code (a precompiled
/// component). An existing one's read permissions are left as they are (reading lets nobody
/// run code; an operator may share read access on purpose).
pub fn ensure_private_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(std::io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        ))),
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o022 != 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "{} is writable by its group or others (mode {mode:04o}), and whoever can write there can make weir run native code (precompiled plugins are loaded from it); `chmod go-w {}` and start again",
                        dir.display(),
                        dir.display()
                    ),
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_missing_directory_is_created_for_its_owner_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data").join("cache");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&tmp.path().join("data")), 0o700);
        // Again: nothing to do.
        ensure_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn a_directory_others_can_write_is_refused_and_one_they_can_read_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        std::fs::create_dir(&dir).unwrap();
        for refused in [0o770, 0o702, 0o777, 0o1777] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(refused)).unwrap();
            let e = ensure_private_dir(&dir).unwrap_err();
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::PermissionDenied,
                "{refused:o}"
            );
            let text = e.to_string();
            assert!(text.contains("writable by its group or others"), "{text}");
            assert!(
                text.contains(&format!("chmod go-w {}", dir.display())),
                "{text}"
            );
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o755);
        let file = tmp.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(ensure_private_dir(&file).is_err());
    }

    #[test]
    fn the_engine_key_is_sha256_of_what_the_hash_impls_write() {
        // Fixed inputs, a fixed name: the key depends on no toolchain's hasher. The expected
        // value is SHA-256 of the bytes `Hash` writes: the version string and its 0xff
        // terminator, then the tuple's fields (a u32 in native byte order, a string).
        let key = engine_key("0.1.0", (7u32, "cranelift"));
        let mut bytes = b"0.1.0\xff".to_vec();
        bytes.extend_from_slice(&7u32.to_ne_bytes());
        bytes.extend_from_slice(b"cranelift\xff");
        assert_eq!(key, super::super::plugin::hex(&Sha256::digest(&bytes)[..8]));
        assert_eq!(key.len(), 16);
        assert_ne!(key, engine_key("0.1.1", (7u32, "cranelift")));
        assert_ne!(key, engine_key("0.1.0", (8u32, "cranelift")));
    }

    #[test]
    fn a_cache_file_name_is_the_same_for_the_same_engine_and_component() {
        let engine = Engine::default();
        let cache = Cache::new(PathBuf::from("/cache"));
        let a = cache.path(&engine, "abc");
        assert_eq!(
            a,
            Cache::new(PathBuf::from("/cache")).path(&Engine::default(), "abc")
        );
        let name = a.file_name().unwrap().to_str().unwrap();
        let key = name
            .strip_prefix("abc-")
            .and_then(|n| n.strip_suffix(".cwasm"))
            .unwrap();
        assert_eq!(key.len(), 16);
        assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
        let mut other = wasmtime::Config::new();
        other.consume_fuel(true);
        let other = Engine::new(&other).unwrap();
        assert_ne!(
            cache.path(&other, "abc"),
            a,
            "other engine settings, another file"
        );
    }
}
