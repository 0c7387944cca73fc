//! Loading a plugin: read the file, check that it is a component, load it from the precompiled
//! cache or compile it, refuse imports that are not granted, check the `handler` export, and
//! keep a pool of warm instances.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::Store;
use wasmtime::component::{Component, types::ComponentItem};

use super::bindings::{Exports, MessageHandlerPre, Pre, projection::ProjectionPre};
use super::engine::{EngineSet, Host};
use super::gate::KvGate;
use super::state::{Grants, HostState};
use crate::config::Limits;
use crate::names::{DestinationName, PluginName};
use crate::storage::Storage;

/// The imports weir grants, in every version of the package it serves (0.1.0 as first shipped,
/// 0.1.1 with the event-sourcing worlds; the interfaces are the same, and wasmtime links a
/// `0.1.0` import to the host's `0.1.1` definition, semver-compatible). Anything else is
/// refused at load.
pub(super) const GRANTED_IMPORTS: &[&str] = &[
    "weir:plugin/types@0.1.0",
    "weir:plugin/log@0.1.0",
    "weir:plugin/publish@0.1.0",
    "weir:plugin/kv@0.1.0",
    "weir:plugin/clock@0.1.0",
    "weir:plugin/types@0.1.1",
    "weir:plugin/log@0.1.1",
    "weir:plugin/publish@0.1.1",
    "weir:plugin/kv@0.1.1",
    "weir:plugin/clock@0.1.1",
    "weir:plugin/es-types@0.1.1",
];

/// What to load.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// The plugin's name.
    pub name: PluginName,
    /// The component file.
    pub path: PathBuf,
    /// Sandbox limits.
    pub limits: Limits,
    /// Destinations it may publish to.
    pub publish: BTreeSet<DestinationName>,
    /// Largest payload it may publish, in bytes.
    pub max_message_size: usize,
    /// Warm instances kept for reuse.
    pub instances: u32,
}

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("plugin `{plugin}`: cannot read `{}`: {source}", path.display())]
    Read {
        /// The plugin.
        plugin: PluginName,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a component.
    #[error("plugin `{plugin}`: `{}` {reason}", path.display())]
    NotAComponent {
        /// The plugin.
        plugin: PluginName,
        /// The file.
        path: PathBuf,
        /// What it is instead.
        reason: String,
    },
    /// The component is malformed or does not compile.
    #[error("plugin `{plugin}`: `{}` is not a valid WebAssembly component: {reason}", path.display())]
    Invalid {
        /// The plugin.
        plugin: PluginName,
        /// The file.
        path: PathBuf,
        /// The validation or compilation error.
        reason: String,
    },
    /// The component imports something weir does not grant.
    #[error(
        "plugin `{plugin}` imports `{import}`, which weir does not grant; a plugin may import only {}",
        GRANTED_IMPORTS.join(", ")
    )]
    ForbiddenImport {
        /// The plugin.
        plugin: PluginName,
        /// The refused import.
        import: String,
    },
    /// The component does not export the handler interface with the expected types.
    #[error("plugin `{plugin}`: `{}` does not export a compatible `weir:plugin/handler` (0.1.x): {reason}", path.display())]
    WrongWorld {
        /// The plugin.
        plugin: PluginName,
        /// The file.
        path: PathBuf,
        /// What did not match.
        reason: String,
    },
    /// The component could not be instantiated.
    #[error("plugin `{plugin}` failed to instantiate: {reason}")]
    Instantiate {
        /// The plugin.
        plugin: PluginName,
        /// The error.
        reason: String,
    },
}

/// Where a loaded plugin's compiled code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadedFrom {
    /// Compiled from the `.wasm` now.
    Compiled,
    /// Read from the precompiled cache's file.
    Cache,
    /// Taken from the precompiled cache's memory tier: loaded by this host lately.
    Memory,
}

impl LoadedFrom {
    /// `compiled`, `cache` or `memory`, as stats and logs show it.
    pub fn as_str(self) -> &'static str {
        match self {
            LoadedFrom::Compiled => "compiled",
            LoadedFrom::Cache => "cache",
            LoadedFrom::Memory => "memory",
        }
    }
}

/// A warm instance: a store and the handler exports in it.
pub(super) struct Instance {
    pub store: Store<HostState>,
    pub exports: Exports,
}

/// A loaded, validated plugin. Invocations take instances from its pool; share it behind an `Arc`.
pub struct Plugin {
    spec: PluginSpec,
    hash: String,
    loaded_from: LoadedFrom,
    load_time: Duration,
    pub(super) host: Arc<Host>,
    metered: bool,
    pre: Pre,
    grants: Arc<Grants>,
    pub(super) deadline_ticks: u64,
    idle: Mutex<Vec<Instance>>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.spec.name)
            .field("hash", &self.hash)
            .field("loaded_from", &self.loaded_from)
            .finish_non_exhaustive()
    }
}

impl Host {
    /// Loads and validates a plugin, and creates its first instance.
    pub fn load(
        self: &Arc<Self>,
        spec: PluginSpec,
        storage: Arc<dyn Storage>,
    ) -> Result<Plugin, LoadError> {
        let bytes = std::fs::read(&spec.path).map_err(|source| LoadError::Read {
            plugin: spec.name.clone(),
            path: spec.path.clone(),
            source,
        })?;
        self.load_bytes(spec, &bytes, storage, Arc::default(), false)
    }

    /// Loads and validates a plugin from the component's bytes (`spec.path` names them in
    /// errors), sharing `kv_gate` with the plugin's other versions, and creates its first
    /// instance. With `background`, a compile (not a precompiled-cache load) runs on the
    /// background pool ([`Host::in_background`]), for deploys while traffic flows.
    pub fn load_bytes(
        self: &Arc<Self>,
        spec: PluginSpec,
        bytes: &[u8],
        storage: Arc<dyn Storage>,
        kv_gate: Arc<KvGate>,
        background: bool,
    ) -> Result<Plugin, LoadError> {
        let started = Instant::now();
        let name = spec.name.clone();
        check_header(bytes).map_err(|reason| LoadError::NotAComponent {
            plugin: name.clone(),
            path: spec.path.clone(),
            reason,
        })?;
        let metered = spec.limits.fuel.is_some();
        let set: &EngineSet = if metered { &self.metered } else { &self.plain };
        let hash = content_hash(bytes);
        let (pre, loaded_from) = match self.recent.get(metered, &hash) {
            Some(pre) => (pre, LoadedFrom::Memory),
            None => {
                let (component, from) =
                    self.compile(set, &hash, bytes, background).map_err(|e| {
                        LoadError::Invalid {
                            plugin: name.clone(),
                            path: spec.path.clone(),
                            reason: format!("{e:#}"),
                        }
                    })?;
                check_imports(&name, &component, &set.engine)?;
                let wrong = |reason: String| LoadError::WrongWorld {
                    plugin: name.clone(),
                    path: spec.path.clone(),
                    reason,
                };
                let instance_pre = set
                    .linker
                    .instantiate_pre(&component)
                    .map_err(|e| wrong(format!("{e:#}")))?;
                // A message handler, or else a projection.
                let pre = match MessageHandlerPre::new(instance_pre.clone()) {
                    Ok(p) => Pre::Handler(p),
                    Err(handler) => match ProjectionPre::new(instance_pre) {
                        Ok(p) => Pre::Projection(p),
                        Err(_) => return Err(wrong(format!("{handler:#}"))),
                    },
                };
                (pre, from)
            }
        };
        let grants = Arc::new(Grants {
            plugin: name.clone(),
            publish: spec.publish.clone(),
            max_message_size: spec.max_message_size,
            storage,
            kv_gate,
        });
        let plugin = Plugin {
            deadline_ticks: self.deadline_ticks(spec.limits.timeout),
            spec,
            hash,
            loaded_from,
            load_time: started.elapsed(),
            host: Arc::clone(self),
            metered,
            pre,
            grants,
            idle: Mutex::new(Vec::new()),
        };
        let first = plugin.instantiate().map_err(|e| LoadError::Instantiate {
            plugin: name,
            reason: format!("{e:#}"),
        })?;
        plugin.put_instance(first);
        if loaded_from != LoadedFrom::Memory {
            self.recent.put(metered, &plugin.hash, &plugin.pre);
        }
        Ok(plugin)
    }

    fn compile(
        &self,
        set: &EngineSet,
        hash: &str,
        bytes: &[u8],
        background: bool,
    ) -> anyhow::Result<(Component, LoadedFrom)> {
        if let Some(c) = self
            .cache
            .as_ref()
            .and_then(|cache| cache.get(&set.engine, hash))
        {
            return Ok((c, LoadedFrom::Cache));
        }
        let compile = || Component::new(&set.engine, bytes);
        let component = if background {
            self.in_background(compile)?
        } else {
            compile()?
        };
        if let Some(Err(e)) = self
            .cache
            .as_ref()
            .map(|cache| cache.put(&set.engine, hash, &component))
        {
            tracing::warn!("cannot write the precompiled cache: {e:#}");
        }
        Ok((component, LoadedFrom::Compiled))
    }
}

impl Plugin {
    /// The plugin's name.
    pub fn name(&self) -> &PluginName {
        &self.spec.name
    }

    /// SHA-256 of the component file, hex.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Where the compiled code came from.
    pub fn loaded_from(&self) -> LoadedFrom {
        self.loaded_from
    }

    /// How long loading took.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// The world it exports: `message-handler` or `projection`.
    pub fn world(&self) -> &'static str {
        match self.pre {
            Pre::Handler(_) => "message-handler",
            Pre::Projection(_) => "projection",
        }
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.spec.path
    }

    /// The plugin's key-value gate, shared by all its versions.
    pub fn kv_gate(&self) -> &Arc<KvGate> {
        &self.grants.kv_gate
    }

    /// Its sandbox limits.
    pub fn limits(&self) -> &Limits {
        &self.spec.limits
    }

    /// A new instance with the plugin's limits.
    pub(super) fn instantiate(&self) -> wasmtime::Result<Instance> {
        let set = if self.metered {
            &self.host.metered
        } else {
            &self.host.plain
        };
        let memory_limit = usize::try_from(self.spec.limits.memory_bytes).unwrap_or(usize::MAX);
        let mut store = Store::new(
            &set.engine,
            HostState::new(Arc::clone(&self.grants), memory_limit),
        );
        store.limiter(|s| s);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.deadline_ticks);
        if let Some(fuel) = self.spec.limits.fuel {
            store.set_fuel(fuel)?;
        }
        let exports = match &self.pre {
            Pre::Handler(p) => Exports::Handler(p.instantiate(&mut store)?),
            Pre::Projection(p) => Exports::Projection(p.instantiate(&mut store)?),
        };
        Ok(Instance { store, exports })
    }

    pub(super) fn take_instance(&self) -> wasmtime::Result<Instance> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(i) => Ok(i),
            None => self.instantiate(),
        }
    }

    pub(super) fn put_instance(&self, instance: Instance) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.spec.instances as usize {
            idle.push(instance);
        }
    }
}

/// Checks the preamble: wasm magic, and the component layer rather than a core module.
pub(super) fn check_header(bytes: &[u8]) -> Result<(), String> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        let shown: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        return Err(if bytes.is_empty() {
            "is empty, not a WebAssembly component".to_owned()
        } else {
            format!(
                "is not a WebAssembly file: it starts with {} instead of 00 61 73 6d",
                shown.join(" ")
            )
        });
    }
    match bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err(
            "is a core WebAssembly module, not a component; turn it into a component (scripts/build-plugins does) against the `weir:plugin/message-handler` world".to_owned(),
        ),
        _ => Err(format!("has an unknown WebAssembly version or layer {:02x?}", &bytes[4..8])),
    }
}

fn check_imports(
    plugin: &PluginName,
    component: &Component,
    engine: &wasmtime::Engine,
) -> Result<(), LoadError> {
    check_imports_against(plugin, component, engine, GRANTED_IMPORTS)
}

/// Refuses a component that imports anything not in `granted`.
pub(super) fn check_imports_against(
    plugin: &PluginName,
    component: &Component,
    engine: &wasmtime::Engine,
    granted: &[&str],
) -> Result<(), LoadError> {
    for (name, item) in component.component_type().imports(engine) {
        let granted =
            granted.contains(&name) && matches!(item.ty, ComponentItem::ComponentInstance(_));
        if !granted {
            return Err(LoadError::ForbiddenImport {
                plugin: plugin.clone(),
                import: name.to_owned(),
            });
        }
    }
    Ok(())
}

/// SHA-256 of a component's bytes, hex: its identity in the precompiled cache and among a
/// plugin's versions.
pub fn content_hash(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
