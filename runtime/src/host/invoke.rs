//! One invocation of a plugin: take a warm instance, apply limits, call `handle`, classify the
//! result, and hand back the buffered effects.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use wasmtime::Trap;

use super::bindings;
use super::bindings::Exports;
use super::plugin::{Instance, Plugin};
use crate::names::{Attempt, DestinationName};
use crate::storage::{Record, Stored};

/// A message ready to hand to a plugin (already in the shape the guest receives, so that
/// redeliveries and benchmarks do not rebuild it).
#[derive(Clone)]
pub struct Message(pub(super) bindings::Message);

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("id", &self.0.id)
            .field("source", &self.0.source)
            .field("offset", &self.0.offset)
            .field("attempt", &self.0.attempt)
            .finish_non_exhaustive()
    }
}

impl Message {
    /// The message for delivery attempt `attempt` of a stored record.
    pub fn new(source: &DestinationName, stored: &Stored, attempt: Attempt) -> Message {
        let r: &Record = &stored.record;
        Message(bindings::Message {
            id: r.id.clone(),
            source: source.as_str().to_owned(),
            key: r.key.clone(),
            headers: r.headers.clone(),
            payload: r.payload.clone(),
            offset: stored.offset.0,
            attempt: attempt.get(),
            timestamp_ms: r.timestamp_ms,
            reply_to: r.reply_to.clone(),
            correlation_id: r.correlation_id.clone(),
        })
    }

    /// Sets the attempt number.
    pub fn set_attempt(&mut self, attempt: Attempt) {
        self.0.attempt = attempt.get();
    }

    /// The message id.
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// The message key.
    pub fn key(&self) -> Option<&str> {
        self.0.key.as_deref()
    }

    /// The message offset in its source.
    pub fn offset(&self) -> u64 {
        self.0.offset
    }

    /// The message payload.
    pub fn payload(&self) -> &[u8] {
        &self.0.payload
    }

    /// The delivery attempt, from 1.
    pub fn attempt(&self) -> u32 {
        self.0.attempt
    }
}

/// What a handler asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledge.
    Ack,
    /// Deliver again after a delay.
    Retry(Duration),
    /// Dead-letter, with a reason.
    DeadLetter(String),
    /// Reply with bytes, then acknowledge.
    Reply(Vec<u8>),
}

/// Why an invocation failed, counted apart in stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureClass {
    /// The handler returned an error.
    HandlerError,
    /// The guest trapped (panic, unreachable, bad memory access, ...).
    Trap,
    /// The invocation ran past its time limit.
    Timeout,
    /// The guest asked for more memory than its limit.
    OutOfMemory,
    /// The invocation used up its fuel.
    OutOfFuel,
    /// No instance could be created to run it.
    Instantiation,
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureClass::HandlerError => "handler-error",
            FailureClass::Trap => "trap",
            FailureClass::Timeout => "timeout",
            FailureClass::OutOfMemory => "out-of-memory",
            FailureClass::OutOfFuel => "out-of-fuel",
            FailureClass::Instantiation => "instantiation",
        })
    }
}

/// A failed invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The class of failure.
    pub class: FailureClass,
    /// What happened.
    pub message: String,
    /// Whether delivering the message again may succeed.
    pub retryable: bool,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class, self.message)
    }
}

/// Effects an invocation buffered: applied only if it succeeds.
#[derive(Debug, Default)]
pub struct Effects {
    /// Key-value writes (`None` deletes), last write per key wins.
    pub kv: BTreeMap<String, Option<Vec<u8>>>,
    /// Messages published, in order.
    pub publishes: Vec<(DestinationName, Record)>,
}

/// The result of one invocation.
#[derive(Debug)]
pub struct Invocation {
    /// The handler's outcome, or why it failed.
    pub result: Result<Outcome, Failure>,
    /// Buffered effects; empty when the invocation failed.
    pub effects: Effects,
    /// The plugin's key-value gate, when the invocation touched its state and succeeded: hold
    /// it until the effects are submitted to storage, so commits follow the order in which
    /// invocations read and wrote.
    pub kv_guard: Option<super::KvGuard>,
    /// Ran by a plugin version still being judged after a deploy: a failure does not use up
    /// one of the message's attempts (the version may be rolled back, and the message then
    /// runs on the restored one).
    pub on_probation: bool,
}

impl Invocation {
    /// An invocation result without a key-value gate (handlers other than plugins, tests).
    pub fn new(result: Result<Outcome, Failure>, effects: Effects) -> Invocation {
        Invocation {
            result,
            effects,
            kv_guard: None,
            on_probation: false,
        }
    }
}

impl Plugin {
    /// Runs the handler on one message, on the calling thread. Blocks for at most the plugin's
    /// time limit (plus one epoch tick).
    pub fn invoke(&self, message: &Message) -> Invocation {
        self.invoke_with(message, self.deadline_ticks)
    }

    /// Like [`Plugin::invoke`], with a shorter time limit (a binding's own `timeout`); a longer
    /// one is cut to the plugin's.
    pub fn invoke_within(&self, message: &Message, timeout: Duration) -> Invocation {
        let ticks = self.host.deadline_ticks(timeout).min(self.deadline_ticks);
        self.invoke_with(message, ticks)
    }

    fn invoke_with(&self, message: &Message, deadline_ticks: u64) -> Invocation {
        let mut instance = match self.take_instance() {
            Ok(i) => i,
            Err(e) => {
                return failed(
                    FailureClass::Instantiation,
                    format!("cannot instantiate plugin `{}`: {e:#}", self.name()),
                    true,
                );
            }
        };
        let result = self.call(&mut instance, message, deadline_ticks);
        match result {
            Ok(Ok(outcome)) => {
                let data = instance.store.data_mut();
                let limit = data.grants.max_message_size;
                if let bindings::Outcome::Reply(bytes) = &outcome
                    && bytes.len() > limit
                {
                    // Refused like a publish of that size: this invocation fails, no effects.
                    let size = bytes.len();
                    data.effects = Effects::default();
                    data.kv_guard = None;
                    self.put_instance(instance);
                    return failed(
                        FailureClass::HandlerError,
                        format!(
                            "the reply is {size} bytes; the limit is {limit} (server.max_message_size)"
                        ),
                        false,
                    );
                }
                let effects = std::mem::take(&mut data.effects);
                let outcome = outcome_from(outcome);
                // Only an acknowledging outcome commits effects; the others release the gate.
                let kv_guard = data
                    .kv_guard
                    .take()
                    .filter(|_| matches!(outcome, Outcome::Ack | Outcome::Reply(_)));
                self.put_instance(instance);
                Invocation {
                    result: Ok(outcome),
                    effects,
                    kv_guard,
                    on_probation: false,
                }
            }
            Ok(Err(e)) => {
                instance.store.data_mut().kv_guard = None;
                self.put_instance(instance);
                failed(FailureClass::HandlerError, e.message, e.retryable)
            }
            Err(e) => {
                // The instance may be in any state after a trap: drop it.
                let oom = instance.store.data().memory_exceeded;
                drop(instance);
                let (class, message) = classify(&e, oom);
                failed(class, message, true)
            }
        }
    }

    fn call(
        &self,
        instance: &mut Instance,
        message: &Message,
        deadline_ticks: u64,
    ) -> wasmtime::Result<Result<bindings::Outcome, bindings::HandlerError>> {
        instance.store.data_mut().begin(&message.0);
        instance.store.set_epoch_deadline(deadline_ticks);
        if let Some(fuel) = self.limits().fuel {
            instance.store.set_fuel(fuel)?;
        }
        match &instance.exports {
            Exports::Handler(h) => h
                .weir_plugin_handler()
                .call_handle(&mut instance.store, &message.0),
            Exports::Projection(p) => {
                let event = match recorded_event(&message.0) {
                    Ok(Some(e)) => e,
                    // A delete marker: not an event; nothing to project.
                    Ok(None) => return Ok(Ok(bindings::Outcome::Ack)),
                    Err(message) => {
                        return Ok(Err(bindings::HandlerError {
                            message,
                            retryable: false,
                        }));
                    }
                };
                Ok(p.weir_plugin_projector()
                    .call_project(&mut instance.store, &event)?
                    .map(|()| bindings::Outcome::Ack))
            }
        }
    }
}

/// The event a stream store's record carries, for a projection; `None` for a delete marker.
fn recorded_event(
    m: &bindings::Message,
) -> Result<Option<bindings::projection::weir::plugin::es_types::RecordedEvent>, String> {
    use crate::es::store::{CAUSATION, MARKER, REVISION, SCHEMA, TYPE};
    let header = |name: &str| {
        m.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    if header(MARKER).is_some() {
        return Ok(None);
    }
    let not_an_event = || {
        format!(
            "message `{}` of `{}` is not an event of a stream store: a projection consumes only stream stores ([streams.<name>])",
            m.id, m.source
        )
    };
    let revision = header(REVISION)
        .and_then(|r| r.parse().ok())
        .ok_or_else(not_an_event)?;
    let event_type = header(TYPE).ok_or_else(not_an_event)?.to_owned();
    let stream_name = m.key.clone().ok_or_else(not_an_event)?;
    Ok(Some(
        bindings::projection::weir::plugin::es_types::RecordedEvent {
            stream_name,
            revision,
            position: m.offset,
            event_id: m.id.clone(),
            event_type,
            schema_version: header(SCHEMA).and_then(|s| s.parse().ok()).unwrap_or(1),
            headers: m
                .headers
                .iter()
                .filter(|(n, _)| !crate::es::store::is_reserved(n))
                .cloned()
                .collect(),
            payload: m.payload.clone(),
            timestamp_ms: m.timestamp_ms,
            correlation_id: m.correlation_id.clone(),
            causation_id: header(CAUSATION).map(str::to_owned),
        },
    ))
}

/// A failed invocation; its text (often the guest's) is cut to [`crate::validate::MAX_REASON`].
fn failed(class: FailureClass, message: String, retryable: bool) -> Invocation {
    Invocation::new(
        Err(Failure {
            class,
            message: crate::validate::truncate(message, crate::validate::MAX_REASON),
            retryable,
        }),
        Effects::default(),
    )
}

fn outcome_from(o: bindings::Outcome) -> Outcome {
    match o {
        bindings::Outcome::Ack => Outcome::Ack,
        bindings::Outcome::Retry(ms) => Outcome::Retry(Duration::from_millis(ms)),
        bindings::Outcome::DeadLetter(reason) => Outcome::DeadLetter(crate::validate::truncate(
            reason,
            crate::validate::MAX_REASON,
        )),
        bindings::Outcome::Reply(bytes) => Outcome::Reply(bytes),
    }
}

pub(super) fn classify(e: &wasmtime::Error, memory_exceeded: bool) -> (FailureClass, String) {
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => (
            FailureClass::Timeout,
            "invocation exceeded its time limit".to_owned(),
        ),
        Some(Trap::OutOfFuel) => (
            FailureClass::OutOfFuel,
            "invocation ran out of fuel".to_owned(),
        ),
        _ if memory_exceeded => (
            FailureClass::OutOfMemory,
            format!(
                "plugin exceeded its memory limit and then failed: {}",
                trap_message(e)
            ),
        ),
        Some(_) | None => (FailureClass::Trap, trap_message(e)),
    }
}

/// The trap itself ("wasm trap: wasm `unreachable` instruction executed"), then the innermost
/// named wasm function, without the full backtrace.
fn trap_message(e: &wasmtime::Error) -> String {
    let what = match e.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => e.root_cause().to_string(),
    };
    let frame = e
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .and_then(|bt| bt.frames().iter().find_map(|f| f.func_name()));
    match frame {
        Some(func) => format!("{what} (in {func})"),
        None => what,
    }
}
