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
#![allow(unsafe_code)]

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::PathBuf;

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
        let mut h = DefaultHasher::new();
        env!("CARGO_PKG_VERSION").hash(&mut h);
        engine.precompile_compatibility_hash().hash(&mut h);
        self.dir
            .join(format!("{content_hash}-{:016x}.cwasm", h.finish()))
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
        std::fs::create_dir_all(&self.dir)?;
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
