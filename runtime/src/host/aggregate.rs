//! Event-sourced aggregates: components of world `weir:plugin/aggregate` (the Decider). They
//! import nothing but `log`, so `decide` and `evolve` are deterministic by construction: the
//! same state and events (or command) give the same result, which lets the command path cache
//! states and keep snapshots.
//!
//! **Invariant:** an aggregate reaches only `weir:plugin/log` (and the shared types); a
//! component importing anything else, key-value and clock included, is refused at load.
//!
//! **Invariant:** an instance that trapped or ran out of time is dropped, never reused.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use wasmtime::Store;
use wasmtime::component::{Component, HasSelf, Linker};

use super::engine::Host;
use super::invoke::{Failure, FailureClass};
use super::plugin::{LoadError, content_hash};
use super::state::{Grants, HostState};
use crate::config::Limits;
use crate::es::RecordedEvent;
use crate::names::PluginName;
use crate::storage::Storage;

mod bindings {
    //! Host bindings of world `aggregate`; `log` and the shared types are the handler world's.
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "aggregate",
        with: {
            "weir:plugin/log": crate::host::bindings::weir::plugin::log,
            "weir:plugin/types": crate::host::bindings::weir::plugin::types,
        },
    });
}

use bindings::exports::weir::plugin::decider;

/// `es-types` declares only types: nothing to implement.
impl bindings::weir::plugin::es_types::Host for HostState {}
pub use decider::{Command, Decision, NewEvent as DecidedEvent, Rejection};

/// The imports an aggregate may have.
const AGGREGATE_IMPORTS: &[&str] = &[
    "weir:plugin/types@0.1.1",
    "weir:plugin/log@0.1.1",
    "weir:plugin/es-types@0.1.1",
];

/// What to load as an aggregate.
#[derive(Debug, Clone)]
pub struct AggregateSpec {
    /// The aggregate's name.
    pub name: PluginName,
    /// The component file.
    pub path: PathBuf,
    /// Sandbox limits for each call.
    pub limits: Limits,
}

struct Instance {
    store: Store<HostState>,
    exports: bindings::Aggregate,
}

/// A loaded aggregate component. Calls take warm instances from its pool.
pub struct Aggregate {
    spec: AggregateSpec,
    hash: String,
    host: Arc<Host>,
    metered: bool,
    pre: bindings::AggregatePre<HostState>,
    grants: Arc<Grants>,
    deadline_ticks: u64,
    state_version: u32,
    idle: Mutex<Vec<Instance>>,
}

impl std::fmt::Debug for Aggregate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregate")
            .field("name", &self.spec.name)
            .field("hash", &self.hash)
            .field("state_version", &self.state_version)
            .finish_non_exhaustive()
    }
}

/// The linker of what an aggregate may import: `log` only.
pub(super) fn linker(engine: &wasmtime::Engine) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    bindings::Aggregate::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    Ok(linker)
}

impl Host {
    /// Loads and validates an aggregate component and asks it to describe itself.
    pub fn load_aggregate(
        self: &Arc<Self>,
        spec: AggregateSpec,
        storage: Arc<dyn Storage>,
    ) -> Result<Aggregate, LoadError> {
        let bytes = std::fs::read(&spec.path).map_err(|source| LoadError::Read {
            plugin: spec.name.clone(),
            path: spec.path.clone(),
            source,
        })?;
        self.load_aggregate_bytes(spec, &bytes, storage, false)
    }

    /// Loads an aggregate from the component's bytes (`spec.path` names them in errors); with
    /// `background`, the compile runs on the background pool (a deploy while commands flow).
    pub fn load_aggregate_bytes(
        self: &Arc<Self>,
        spec: AggregateSpec,
        bytes: &[u8],
        storage: Arc<dyn Storage>,
        background: bool,
    ) -> Result<Aggregate, LoadError> {
        let name = spec.name.clone();
        super::plugin::check_header(bytes).map_err(|reason| LoadError::NotAComponent {
            plugin: name.clone(),
            path: spec.path.clone(),
            reason,
        })?;
        let invalid = |reason: String| LoadError::Invalid {
            plugin: name.clone(),
            path: spec.path.clone(),
            reason,
        };
        let metered = spec.limits.fuel.is_some();
        let set = if metered { &self.metered } else { &self.plain };
        let compile = || Component::new(&set.engine, bytes);
        let component = if background {
            self.in_background(compile)
        } else {
            compile()
        }
        .map_err(|e| invalid(format!("{e:#}")))?;
        super::plugin::check_imports_against(&name, &component, &set.engine, AGGREGATE_IMPORTS)?;
        let pre = set
            .aggregate_linker
            .instantiate_pre(&component)
            .and_then(bindings::AggregatePre::new)
            .map_err(|e| LoadError::WrongWorld {
                plugin: name.clone(),
                path: spec.path.clone(),
                reason: format!("not an aggregate (world `weir:plugin/aggregate`): {e:#}"),
            })?;
        let grants = Arc::new(Grants {
            plugin: name.clone(),
            publish: Default::default(),
            max_message_size: 0,
            storage,
            kv_gate: Arc::default(),
        });
        let mut aggregate = Aggregate {
            deadline_ticks: self.deadline_ticks(spec.limits.timeout),
            hash: content_hash(bytes),
            spec,
            host: Arc::clone(self),
            metered,
            pre,
            grants,
            state_version: 0,
            idle: Mutex::new(Vec::new()),
        };
        let info = aggregate
            .call(|e, s| e.weir_plugin_decider().call_describe(s))
            .map_err(|f| LoadError::Instantiate {
                plugin: name,
                reason: f.message,
            })?;
        aggregate.state_version = info.state_version;
        Ok(aggregate)
    }
}

impl Aggregate {
    /// The aggregate's name.
    pub fn name(&self) -> &PluginName {
        &self.spec.name
    }

    /// SHA-256 of the component file, hex: with the state version, what a snapshot is keyed by.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The state version the aggregate declares.
    pub fn state_version(&self) -> u32 {
        self.state_version
    }

    /// Its sandbox limits.
    pub fn limits(&self) -> &Limits {
        &self.spec.limits
    }

    /// The state of a stream with no events.
    pub fn initial_state(&self) -> Result<Vec<u8>, Failure> {
        self.call(|e, s| e.weir_plugin_decider().call_initial_state(s))
    }

    /// Folds `events`, in order, into `state`.
    pub fn evolve(&self, state: Vec<u8>, events: &[RecordedEvent]) -> Result<Vec<u8>, Failure> {
        let events: Vec<decider::RecordedEvent> = events.iter().map(to_wit).collect();
        self.call(|e, s| e.weir_plugin_decider().call_evolve(s, &state, &events))?
            .map_err(|message| Failure {
                class: FailureClass::HandlerError,
                message: format!("evolve failed: {message}"),
                retryable: false,
            })
    }

    /// Decides on `command` against `state`: the events to append, or a rejection.
    pub fn decide(
        &self,
        command: &Command,
        state: Vec<u8>,
    ) -> Result<Result<Decision, Rejection>, Failure> {
        self.call(|e, s| e.weir_plugin_decider().call_decide(s, command, &state))
    }

    /// Whether `state` takes no more commands.
    pub fn is_terminal(&self, state: Vec<u8>) -> Result<bool, Failure> {
        self.call(|e, s| e.weir_plugin_decider().call_is_terminal(s, &state))
    }

    fn call<R>(
        &self,
        f: impl FnOnce(&bindings::Aggregate, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, Failure> {
        let mut instance = self.take_instance().map_err(|e| Failure {
            class: FailureClass::Instantiation,
            message: format!("cannot instantiate aggregate `{}`: {e:#}", self.name()),
            retryable: true,
        })?;
        instance.store.set_epoch_deadline(self.deadline_ticks);
        if let Some(fuel) = self.spec.limits.fuel
            && let Err(e) = instance.store.set_fuel(fuel)
        {
            return Err(Failure {
                class: FailureClass::Instantiation,
                message: format!("{e:#}"),
                retryable: true,
            });
        }
        match f(&instance.exports, &mut instance.store) {
            Ok(r) => {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                if idle.len() < 4 {
                    idle.push(instance);
                }
                Ok(r)
            }
            Err(e) => {
                // The instance may be in any state after a trap: drop it.
                let oom = instance.store.data().memory_exceeded;
                drop(instance);
                let (class, message) = super::invoke::classify(&e, oom);
                Err(Failure {
                    class,
                    message,
                    retryable: false,
                })
            }
        }
    }

    fn take_instance(&self) -> wasmtime::Result<Instance> {
        if let Some(i) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(i);
        }
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
        // Instantiating runs the component's start-up code, under the same limits as a call.
        store.set_epoch_deadline(self.deadline_ticks);
        if let Some(fuel) = self.spec.limits.fuel {
            store.set_fuel(fuel)?;
        }
        let exports = self.pre.instantiate(&mut store)?;
        Ok(Instance { store, exports })
    }
}

fn to_wit(e: &RecordedEvent) -> decider::RecordedEvent {
    decider::RecordedEvent {
        stream_name: e.stream.as_str().to_owned(),
        revision: e.revision,
        position: e.position.0,
        event_id: e.event_id.clone(),
        event_type: e.event_type.clone(),
        schema_version: e.schema_version,
        headers: e.headers.clone(),
        payload: e.payload.clone(),
        timestamp_ms: e.timestamp_ms,
        correlation_id: e.correlation_id.clone(),
        causation_id: e.causation_id.clone(),
    }
}
