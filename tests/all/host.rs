//! The wasm host through the library API: outcomes, effects, state, failure classes, refusals
//! and the precompiled cache, each against a real plugin built from source.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use weir::config::Limits;
use weir::host::{
    FailureClass, Host, HostOptions, LoadError, LoadedFrom, Message, Outcome, Plugin, PluginSpec,
};
use weir::names::{Attempt, DestinationName, Offset, PluginName};
use weir::storage::{Commit, MemoryStorage, Record, Storage, Stored};

use crate::support::plugin;

fn dest(s: &str) -> DestinationName {
    DestinationName::new(s).unwrap()
}

fn storage() -> Arc<dyn Storage> {
    let s = MemoryStorage::new();
    for name in ["in", "orders.enriched"] {
        s.open_log(&dest(name)).unwrap();
    }
    Arc::new(s)
}

fn host() -> Arc<Host> {
    Host::new(HostOptions::default().max_instances(16)).unwrap()
}

fn spec(name: &str, limits: Limits) -> PluginSpec {
    PluginSpec {
        name: PluginName::new(name).unwrap(),
        path: plugin(name),
        limits,
        publish: BTreeSet::from([dest("orders.enriched")]),
        max_message_size: 1 << 20,
        instances: 2,
    }
}

fn load(host: &Arc<Host>, storage: &Arc<dyn Storage>, name: &str, limits: Limits) -> Plugin {
    host.load(spec(name, limits), Arc::clone(storage))
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

fn message(payload: &str, key: Option<&str>, headers: &[(&str, &str)]) -> Message {
    let record = Record {
        id: format!("id-{payload}"),
        key: key.map(str::to_owned),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        payload: payload.as_bytes().to_vec(),
        timestamp_ms: 1,
        reply_to: None,
        correlation_id: None,
    };
    Message::new(
        &dest("in"),
        &Stored {
            offset: Offset(7),
            record: Arc::new(record),
        },
        Attempt::FIRST,
    )
}

/// Invokes and commits the effects, as the delivery loop does on ack.
fn invoke_and_commit(p: &Plugin, storage: &Arc<dyn Storage>, m: &Message) -> Outcome {
    let inv = p.invoke(m);
    let outcome = inv
        .result
        .unwrap_or_else(|f| panic!("{} failed: {f}", p.name()));
    let kv = Some((p.name().clone(), inv.effects.kv.into_iter().collect()));
    storage
        .commit(Commit {
            kv,
            publishes: inv.effects.publishes,
            ..Commit::default()
        })
        .unwrap();
    outcome
}

fn counter_value(storage: &Arc<dyn Storage>, plugin: &str, key: &str) -> Option<u64> {
    let v = storage.kv_get(&PluginName::new(plugin).unwrap(), key)?;
    Some(u64::from_le_bytes(v.try_into().expect("8-byte counter")))
}

#[test]
fn enrich_transforms_and_publishes_onward() {
    let (host, storage) = (host(), storage());
    let enrich = load(&host, &storage, "enrich", Limits::default());
    let inv = enrich.invoke(&message("order 1", Some("c-1"), &[]));
    assert_eq!(inv.result, Ok(Outcome::Ack));
    assert_eq!(inv.effects.publishes.len(), 1);
    let (to, record) = &inv.effects.publishes[0];
    assert_eq!(to.as_str(), "orders.enriched");
    assert_eq!(record.payload, b"ORDER 1");
    assert_eq!(record.key.as_deref(), Some("c-1"));
    assert!(
        record
            .headers
            .contains(&("enriched-by".to_owned(), "enrich".to_owned())),
        "{:?}",
        record.headers
    );
    assert!(
        storage
            .read(&dest("orders.enriched"), Offset(0), 10)
            .unwrap()
            .is_empty(),
        "effects are only buffered"
    );
}

#[test]
fn publishing_to_an_ungranted_destination_fails_the_handler() {
    let (host, storage) = (host(), storage());
    let enrich = load(&host, &storage, "enrich", Limits::default());
    // `in` exists but is not in the plugin's publish grant.
    let inv = enrich.invoke(&message("x", None, &[("forward-to", "in")]));
    let failure = inv.result.unwrap_err();
    assert_eq!(failure.class, FailureClass::HandlerError);
    assert!(failure.retryable);
    assert!(inv.effects.publishes.is_empty());
}

#[test]
fn key_value_state_persists_across_invocations() {
    let (host, storage) = (host(), storage());
    let counter = load(&host, &storage, "counter", Limits::default());
    for i in 0..3 {
        assert_eq!(
            invoke_and_commit(
                &counter,
                &storage,
                &message(&format!("m{i}"), Some("alice"), &[])
            ),
            Outcome::Ack
        );
    }
    invoke_and_commit(&counter, &storage, &message("m3", Some("bob"), &[]));
    assert_eq!(counter_value(&storage, "counter", "count"), Some(4));
    assert_eq!(counter_value(&storage, "counter", "count/alice"), Some(3));
    assert_eq!(counter_value(&storage, "counter", "count/bob"), Some(1));
    let reply = invoke_and_commit(&counter, &storage, &message("m4", None, &[("reply", "")]));
    assert_eq!(reply, Outcome::Reply(b"5".to_vec()));
}

#[test]
fn c_plugin_counts_and_refuses() {
    let (host, storage) = (host(), storage());
    let tally = load(&host, &storage, "c-tally", Limits::default());
    for i in 0..2 {
        assert_eq!(
            invoke_and_commit(&tally, &storage, &message(&format!("m{i}"), None, &[])),
            Outcome::Ack
        );
    }
    assert_eq!(counter_value(&storage, "c-tally", "tally"), Some(2));
    let failure = tally
        .invoke(&message("boom", None, &[]))
        .result
        .unwrap_err();
    assert_eq!(failure.class, FailureClass::HandlerError);
    assert_eq!(failure.message, "c-tally refuses boom");
    assert!(!failure.retryable);
}

#[test]
fn each_misbehaving_plugin_fails_only_its_own_invocation() {
    let (host, storage) = (host(), storage());
    let counter = load(&host, &storage, "counter", Limits::default());
    let short = Limits {
        timeout: Duration::from_millis(50),
        ..Limits::default()
    };
    let fuel = Limits {
        fuel: Some(5_000_000),
        timeout: Duration::from_secs(30),
        ..Limits::default()
    };
    let small = Limits {
        memory_bytes: 16 << 20,
        ..Limits::default()
    };
    let cases = [
        ("trap", Limits::default(), FailureClass::Trap),
        ("spin", short, FailureClass::Timeout),
        ("spin", fuel, FailureClass::OutOfFuel),
        ("hog", small, FailureClass::OutOfMemory),
        ("fail", Limits::default(), FailureClass::HandlerError),
    ];
    let mut handled = 0;
    for (name, limits, class) in cases {
        let bad = load(&host, &storage, name, limits);
        // Twice: a trapped instance is replaced and fails the same way, not worse.
        for _ in 0..2 {
            let failure = bad.invoke(&message("x", None, &[])).result.unwrap_err();
            assert_eq!(failure.class, class, "{name}: {failure}");
            invoke_and_commit(&counter, &storage, &message("ok", None, &[]));
            handled += 1;
        }
    }
    assert_eq!(counter_value(&storage, "counter", "count"), Some(handled));
}

#[test]
fn handler_errors_carry_retryability() {
    let (host, storage) = (host(), storage());
    let fail = load(&host, &storage, "fail", Limits::default());
    let f = fail
        .invoke(&message("x", None, &[("retryable", "true")]))
        .result
        .unwrap_err();
    assert_eq!(
        (f.class, f.retryable, f.message.as_str()),
        (FailureClass::HandlerError, true, "fail plugin always fails")
    );
    let f = fail.invoke(&message("x", None, &[])).result.unwrap_err();
    assert!(!f.retryable);
}

#[test]
fn a_component_importing_something_not_granted_is_refused() {
    let (host, storage) = (host(), storage());
    let err = host
        .load(spec("sneaky", Limits::default()), storage)
        .unwrap_err();
    assert!(
        matches!(&err, LoadError::ForbiddenImport { import, .. } if import == "wasi:cli/environment@0.2.0"),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with(
            "plugin `sneaky` imports `wasi:cli/environment@0.2.0`, which weir does not grant"
        ),
        "{text}"
    );
}

#[test]
fn invalid_and_truncated_files_are_refused() {
    let (host, storage) = (host(), storage());
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(plugin("noop")).unwrap();
    let cases: [(&str, Vec<u8>, &str); 5] = [
        (
            "truncated",
            good[..good.len() / 2].to_vec(),
            "is not a valid WebAssembly component: ",
        ),
        (
            "garbage",
            b"hello, world".to_vec(),
            "is not a WebAssembly file: it starts with 68 65 6c 6c 6f 2c 20 77 instead of 00 61 73 6d",
        ),
        ("empty", Vec::new(), "is empty, not a WebAssembly component"),
        (
            "core",
            b"\0asm\x01\0\0\0".to_vec(),
            "is a core WebAssembly module, not a component",
        ),
        (
            "header-only",
            b"\0asm\x0d\0\x01\0".to_vec(),
            "does not export a compatible `weir:plugin/handler` (0.1.x)",
        ),
    ];
    for (name, bytes, expect) in cases {
        let path = dir.path().join(format!("{name}.wasm"));
        std::fs::write(&path, &bytes).unwrap();
        let spec = PluginSpec {
            path: path.clone(),
            ..spec("noop", Limits::default())
        };
        let err = host.load(spec, Arc::clone(&storage)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(expect), "{name}: {text}");
        assert!(
            text.contains(&path.display().to_string()),
            "{name}: names the file: {text}"
        );
    }
    let missing = PluginSpec {
        path: dir.path().join("missing.wasm"),
        ..spec("noop", Limits::default())
    };
    assert!(matches!(
        host.load(missing, storage).unwrap_err(),
        LoadError::Read { .. }
    ));
}

#[test]
fn a_second_start_loads_from_the_precompiled_cache() {
    let storage = storage();
    let cache = tempfile::tempdir().unwrap();
    let options = || {
        HostOptions::default()
            .max_instances(8)
            .cache_dir(cache.path())
    };
    let first = Host::new(options())
        .unwrap()
        .load(spec("counter", Limits::default()), Arc::clone(&storage))
        .unwrap();
    assert_eq!(first.loaded_from(), LoadedFrom::Compiled);
    let second = Host::new(options())
        .unwrap()
        .load(spec("counter", Limits::default()), Arc::clone(&storage))
        .unwrap();
    assert_eq!(second.loaded_from(), LoadedFrom::Cache);
    assert_eq!(
        invoke_and_commit(&second, &storage, &message("x", None, &[])),
        Outcome::Ack
    );

    // A damaged cache entry is detected and the plugin compiled again, not loaded.
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    let third = Host::new(options())
        .unwrap()
        .load(spec("counter", Limits::default()), Arc::clone(&storage))
        .unwrap();
    assert_eq!(third.loaded_from(), LoadedFrom::Compiled);
    assert_eq!(
        invoke_and_commit(&third, &storage, &message("y", None, &[])),
        Outcome::Ack
    );
}

#[test]
fn loading_again_takes_the_compiled_component_from_memory() {
    let storage = storage();
    let cache = tempfile::tempdir().unwrap();
    let host = Host::new(
        HostOptions::default()
            .max_instances(16)
            .cache_dir(cache.path()),
    )
    .unwrap();
    let first = load(&host, &storage, "counter", Limits::default());
    assert_eq!(first.loaded_from(), LoadedFrom::Compiled);
    let again = load(&host, &storage, "counter", Limits::default());
    assert_eq!(again.loaded_from(), LoadedFrom::Memory);
    assert_eq!(again.hash(), first.hash());
    assert_eq!(
        invoke_and_commit(&again, &storage, &message("x", None, &[])),
        Outcome::Ack
    );

    // The fuel-metered engine is another engine: its code is not the plain one's.
    let fuel = Limits {
        fuel: Some(5_000_000),
        ..Limits::default()
    };
    let metered = load(&host, &storage, "counter", fuel);
    assert_ne!(metered.loaded_from(), LoadedFrom::Memory);
    assert_eq!(
        invoke_and_commit(&metered, &storage, &message("y", None, &[])),
        Outcome::Ack
    );
    assert_eq!(
        load(&host, &storage, "counter", fuel).loaded_from(),
        LoadedFrom::Memory
    );

    // With the memory tier off, loading again reads the precompiled file.
    let host = Host::new(
        HostOptions::default()
            .max_instances(16)
            .cache_dir(cache.path())
            .memory_cache_bytes(0),
    )
    .unwrap();
    assert_eq!(
        load(&host, &storage, "counter", Limits::default()).loaded_from(),
        LoadedFrom::Cache
    );
    assert_eq!(
        load(&host, &storage, "counter", Limits::default()).loaded_from(),
        LoadedFrom::Cache
    );
}

#[test]
fn a_plugin_built_for_the_first_version_of_the_package_still_loads_and_runs() {
    // `legacy-noop` is built against `weir:plugin@0.1.0` as first shipped; the host serves 0.1.1.
    let (host, storage) = (host(), storage());
    let p = load(&host, &storage, "legacy-noop", Limits::default());
    let outcome = p.invoke(&message("x", None, &[])).result.unwrap();
    assert_eq!(outcome, Outcome::Reply(b"legacy".to_vec()));
}
