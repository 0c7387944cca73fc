//! The engine against the in-memory store with stand-in handlers, on tokio's paused clock: order
//! under concurrency with injected retries, fifo, backoff timing, parking, guarantees.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::*;
use crate::config::Backoff;
use crate::host::{Effects, FailureClass};
use crate::names::BindingName;
use crate::storage::MemoryStorage;

/// One handled call: offset, key, attempt, and when (virtual time).
type Call = (u64, Option<String>, u32, Instant);

/// How a stand-in handler answers a message.
type Decide = Box<dyn Fn(&Message) -> Result<Outcome, Failure> + Send + Sync>;

/// A handler made of a closure deciding each call's result; it records every call.
struct Stand {
    plugin: PluginName,
    calls: Mutex<Vec<Call>>,
    decide: Decide,
    /// Calls (the first this many) made as a plugin version on probation.
    probation: usize,
}

impl Handler for Stand {
    fn plugin(&self) -> &PluginName {
        &self.plugin
    }

    fn handle(&self, message: &Message, _timeout: Duration) -> Invocation {
        let on_probation = {
            let mut calls = self.calls.lock().unwrap();
            calls.push((
                message.offset(),
                message.key().map(str::to_owned),
                message.attempt(),
                Instant::now(),
            ));
            calls.len() <= self.probation
        };
        let result = (self.decide)(message);
        let mut effects = Effects::default();
        if result.is_ok() {
            let n = String::from_utf8_lossy(message.payload()).into_owned();
            effects.kv.insert(format!("seen/{n}"), Some(vec![1]));
        }
        let mut invocation = Invocation::new(result, effects);
        invocation.on_probation = on_probation && invocation.result.is_err();
        invocation
    }
}

fn stand(
    decide: impl Fn(&Message) -> Result<Outcome, Failure> + Send + Sync + 'static,
) -> Arc<Stand> {
    Arc::new(Stand {
        plugin: PluginName::new("p").unwrap(),
        calls: Mutex::new(Vec::new()),
        decide: Box::new(decide),
        probation: 0,
    })
}

fn failure(class: FailureClass, retryable: bool) -> Failure {
    Failure {
        class,
        message: format!("injected {class}"),
        retryable,
    }
}

fn binding(ordering: Ordering, concurrency: u32) -> BindingConfig {
    BindingConfig {
        name: BindingName::new("q.p").unwrap(),
        source: DestinationName::new("q").unwrap(),
        plugin: PluginName::new("p").unwrap(),
        guarantee: Guarantee::AtLeastOnce,
        ordering,
        concurrency,
        timeout: Duration::from_secs(1),
        max_attempts: 5,
        backoff: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_secs(1),
            multiplier: 2.0,
            jitter: 0.0,
        },
        dead_letter: DestinationName::new("q.p.dlq").unwrap(),
        poison: Poison::DeadLetter,
        max_in_flight: 4096,
    }
}

struct Run {
    storage: Arc<MemoryStorage>,
    stats: Arc<BindingStats>,
    parking: Arc<Parking>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), StorageError>>,
}

/// Publishes `messages` (key, payload) to `q` and starts the binding.
fn start(b: BindingConfig, handler: Arc<Stand>, messages: &[(Option<&str>, String)]) -> Run {
    let storage = Arc::new(MemoryStorage::new());
    for log in [&b.source, &b.dead_letter] {
        storage.open_log(log).unwrap();
    }
    let records = messages
        .iter()
        .map(|(key, payload)| record(*key, payload.as_bytes()))
        .collect();
    storage.append(&b.source, records).unwrap();
    run_on(storage, b, handler)
}

/// A record with a fresh id.
fn record(key: Option<&str>, payload: &[u8]) -> Record {
    Record {
        id: crate::ids::new_message_id(),
        key: key.map(str::to_owned),
        headers: Vec::new(),
        payload: payload.to_vec(),
        timestamp_ms: 0,
        reply_to: None,
        correlation_id: None,
    }
}

/// Starts the binding on a store (again, after a stop).
fn run_on(storage: Arc<MemoryStorage>, b: BindingConfig, handler: Arc<Stand>) -> Run {
    let stats = Arc::new(BindingStats::default());
    let parking = Arc::new(Parking::default());
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(run_binding(
        b,
        handler,
        Arc::clone(&storage) as Arc<dyn Storage>,
        Arc::clone(&stats),
        Arc::clone(&parking),
        rx,
    ));
    Run {
        storage,
        stats,
        parking,
        stop,
        task,
    }
}

impl Run {
    /// Waits (a real-time deadline; virtual time runs ahead freely) until `done` holds.
    async fn until(&self, what: &str, done: impl Fn(&Run) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !done(self) {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn finished(&self) -> u64 {
        self.stats.acked.load(Relaxed) + self.stats.dead_lettered.load(Relaxed)
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

/// The successful calls in the order they happened.
fn successes(h: &Stand, failed: impl Fn(&Call) -> bool) -> Vec<Call> {
    h.calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| !failed(c))
        .cloned()
        .collect()
}

#[tokio::test(start_paused = true)]
async fn key_order_holds_under_concurrency_8_with_retries() {
    // Every 7th message fails its first two attempts: it holds its key while it waits.
    let fails = |offset: u64, attempt: u32| offset.is_multiple_of(7) && attempt <= 2;
    let h = stand(move |m| {
        if fails(m.offset(), m.attempt()) {
            Err(failure(FailureClass::HandlerError, true))
        } else {
            Ok(Outcome::Ack)
        }
    });
    let messages: Vec<_> = (0..800)
        .map(|i| {
            (
                Some(["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"][i % 10]),
                i.to_string(),
            )
        })
        .collect();
    let run = start(binding(Ordering::Key, 8), Arc::clone(&h), &messages);
    run.until("all handled", |r| r.finished() == 800).await;
    let ok = successes(&h, |c| fails(c.0, c.2));
    assert_eq!(ok.len(), 800, "each message handled once");
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for (offset, key, _, _) in &ok {
        let key = key.clone().unwrap();
        if let Some(prev) = last.insert(key.clone(), *offset) {
            assert!(prev < *offset, "key {key}: {offset} handled after {prev}");
        }
    }
    assert_eq!(run.stats.retried.load(Relaxed), 2 * 800u64.div_ceil(7));
    assert_eq!(
        run.storage.cursor(&BindingName::new("q.p").unwrap()),
        Offset(800)
    );
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn failures_on_a_version_on_probation_do_not_use_up_attempts() {
    // The first 6 calls run on a new version on probation, and fail; the version is then
    // rolled back and the calls succeed. With a single attempt allowed, nothing may be
    // dead-lettered for what the rolled-back version did.
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let h = Arc::new(Stand {
        plugin: PluginName::new("p").unwrap(),
        calls: Mutex::new(Vec::new()),
        decide: Box::new(move |_| {
            if calls.fetch_add(1, Relaxed) < 6 {
                Err(failure(FailureClass::Trap, true))
            } else {
                Ok(Outcome::Ack)
            }
        }),
        probation: 6,
    });
    let mut b = binding(Ordering::Key, 4);
    b.max_attempts = 1;
    let messages: Vec<_> = (0..10)
        .map(|i| (Some(["a", "b"][i % 2]), i.to_string()))
        .collect();
    let run = start(b, Arc::clone(&h), &messages);
    run.until("all handled", |r| r.finished() == 10).await;
    assert_eq!(run.stats.acked.load(Relaxed), 10);
    assert_eq!(run.stats.dead_lettered.load(Relaxed), 0);
    assert_eq!(run.stats.retried.load(Relaxed), 6);
    // A forgiven failure gave its attempt back: every call saw attempt 1.
    assert!(h.calls.lock().unwrap().iter().all(|c| c.2 == 1));
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn fifo_handles_the_source_in_order_across_retries() {
    let fails = |offset: u64, attempt: u32| offset % 5 == 3 && attempt == 1;
    let h = stand(move |m| {
        if fails(m.offset(), m.attempt()) {
            Err(failure(FailureClass::Trap, true))
        } else {
            Ok(Outcome::Ack)
        }
    });
    let messages: Vec<_> = (0..200).map(|i| (None, i.to_string())).collect();
    let run = start(binding(Ordering::Fifo, 1), Arc::clone(&h), &messages);
    run.until("all handled", |r| r.finished() == 200).await;
    let order: Vec<u64> = successes(&h, |c| fails(c.0, c.2))
        .iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(order, (0..200).collect::<Vec<_>>());
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_exponentially() {
    // Fails four times, then succeeds: attempts at 0, 10, 30, 70, 150 ms.
    let h = stand(|m| {
        if m.attempt() <= 4 {
            Err(failure(FailureClass::Timeout, true))
        } else {
            Ok(Outcome::Ack)
        }
    });
    let run = start(
        binding(Ordering::Key, 4),
        Arc::clone(&h),
        &[(Some("k"), "x".into())],
    );
    run.until("handled", |r| r.finished() == 1).await;
    let calls = h.calls.lock().unwrap().clone();
    let t0 = calls[0].3;
    let at: Vec<u128> = calls.iter().map(|c| (c.3 - t0).as_millis()).collect();
    assert_eq!(at, [0, 10, 30, 70, 150]);
    assert_eq!(
        calls.iter().map(|c| c.2).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5],
        "attempt numbers"
    );
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_poison_key_is_parked_while_other_keys_flow() {
    let h = stand(|m| {
        if m.payload() == b"poison" {
            Err(failure(FailureClass::HandlerError, false))
        } else {
            Ok(Outcome::Ack)
        }
    });
    let mut b = binding(Ordering::Key, 4);
    b.poison = Poison::Park;
    let messages = [
        (Some("bad"), "1".to_owned()),
        (Some("bad"), "poison".to_owned()),
        (Some("good"), "2".to_owned()),
        (Some("bad"), "3".to_owned()),
        (Some("good"), "4".to_owned()),
    ];
    let run = start(b, Arc::clone(&h), &messages);
    run.until("the other key flows", |r| r.stats.acked.load(Relaxed) == 3)
        .await;
    let handled: Vec<u64> = successes(&h, |c| c.0 == 1).iter().map(|c| c.0).collect();
    assert_eq!(
        handled,
        [0, 2, 4],
        "bad's later message waits behind the parked one"
    );
    assert_eq!(run.stats.parked_keys.load(Relaxed), 1);
    assert_eq!(
        run.stats.dead_lettered.load(Relaxed),
        0,
        "parked, not dead-lettered"
    );
    let binding = BindingName::new("q.p").unwrap();
    assert_eq!(
        run.storage.cursor(&binding),
        Offset(1),
        "the parked message is not acknowledged"
    );
    assert!(!run.storage.is_acked(&binding, Offset(3)));
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_parked_key_stays_parked_across_a_restart_and_unparks_in_order() {
    // `poison` fails (retryably) until the operator has fixed the cause.
    let fixed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let is_fixed = Arc::clone(&fixed);
    let h = stand(move |m| {
        if m.payload() == b"poison" && !is_fixed.load(Relaxed) {
            Err(failure(FailureClass::HandlerError, true))
        } else {
            Ok(Outcome::Ack)
        }
    });
    let mut b = binding(Ordering::Key, 4);
    b.poison = Poison::Park;
    let messages = [
        (Some("bad"), "1".to_owned()),
        (Some("bad"), "poison".to_owned()),
        (Some("good"), "2".to_owned()),
        (Some("bad"), "3".to_owned()),
    ];
    let run = start(b.clone(), Arc::clone(&h), &messages);
    run.until("parked while good flows", |r| {
        r.stats.acked.load(Relaxed) == 2 && r.stats.parked_keys.load(Relaxed) == 1
    })
    .await;
    let storage = Arc::clone(&run.storage);
    run.stop().await;
    let parked = park::parked(&*storage, &b.name, 10);
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(
        (parked[0].key.as_str(), parked[0].offset),
        ("bad", Offset(1))
    );
    assert_eq!(parked[0].attempts, 5);
    assert!(
        parked[0]
            .reason
            .starts_with("attempt 5: handler-error: injected"),
        "{parked:?}"
    );

    // After a restart the key is still parked: nothing of it runs, other keys flow.
    let calls = h.calls.lock().unwrap().len();
    let run = run_on(Arc::clone(&storage), b.clone(), Arc::clone(&h));
    storage
        .append(
            &b.source,
            vec![Record {
                id: "good-4".into(),
                key: Some("good".into()),
                headers: Vec::new(),
                payload: b"4".to_vec(),
                timestamp_ms: 0,
                reply_to: None,
                correlation_id: None,
            }],
        )
        .unwrap();
    run.until("good flows after the restart", |r| {
        r.stats.acked.load(Relaxed) == 1
    })
    .await;
    assert_eq!(
        h.calls.lock().unwrap().len(),
        calls + 1,
        "only good's message ran"
    );
    assert_eq!(run.stats.parked_keys.load(Relaxed), 1);

    // Unparked once fixed: the parked message runs from its first attempt, then bad's next.
    fixed.store(true, Relaxed);
    park::unpark(&*storage, &b.name, b.guarantee, &parked).unwrap();
    run.parking.released();
    run.until("bad's messages ran", |r| r.stats.acked.load(Relaxed) == 3)
        .await;
    let after: Vec<(u64, u32)> = h.calls.lock().unwrap()[calls + 1..]
        .iter()
        .map(|c| (c.0, c.2))
        .collect();
    assert_eq!(after, [(1, 1), (3, 1)], "offset and attempt");
    assert_eq!(run.stats.parked_keys.load(Relaxed), 0);
    assert!(park::parked(&*storage, &b.name, 10).is_empty());
    assert_eq!(
        storage.cursor(&b.name),
        Offset(5),
        "everything acknowledged"
    );
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_message_parks_its_key_under_park() {
    let h = stand(|_| Ok(Outcome::Ack));
    let mut b = binding(Ordering::Key, 1);
    b.poison = Poison::Park;
    b.max_attempts = 2;
    let storage = Arc::new(MemoryStorage::new());
    for log in [&b.source, &b.dead_letter] {
        storage.open_log(log).unwrap();
    }
    let record = |key: &str| Record {
        id: crate::ids::new_message_id(),
        key: Some(key.to_owned()),
        headers: Vec::new(),
        payload: Vec::new(),
        timestamp_ms: 0,
        reply_to: None,
        correlation_id: None,
    };
    storage
        .append(&b.source, vec![record("k"), record("k"), record("j")])
        .unwrap();
    // Delivered twice before, each time without an outcome (the host died).
    for _ in 0..2 {
        storage.begin_deliveries(&b.name, &[Offset(0)]).unwrap();
    }
    let run = run_on(Arc::clone(&storage), b.clone(), Arc::clone(&h));
    run.until("j flows", |r| r.stats.acked.load(Relaxed) == 1)
        .await;
    assert_eq!(run.stats.dead_lettered.load(Relaxed), 0);
    assert_eq!(run.stats.parked_keys.load(Relaxed), 1);
    let parked = park::parked(&*storage, &b.name, 10);
    assert_eq!(parked[0].offset, Offset(0));
    assert!(
        parked[0]
            .reason
            .starts_with("attempt 2: interrupted: delivered 2 times"),
        "{parked:?}"
    );
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn failures_dead_letter_with_class_attempts_and_history() {
    let h = stand(|m| match m.payload() {
        b"trap" => Err(failure(FailureClass::Trap, true)),
        b"fatal" => Err(failure(FailureClass::HandlerError, false)),
        b"asks" => Ok(Outcome::DeadLetter("bad input".into())),
        _ => Ok(Outcome::Retry(Duration::from_millis(5))),
    });
    let mut b = binding(Ordering::None, 2);
    b.max_attempts = 3;
    let messages: Vec<_> = ["trap", "fatal", "asks", "retry"]
        .iter()
        .map(|p| (None, (*p).to_owned()))
        .collect();
    let run = start(b, Arc::clone(&h), &messages);
    run.until("all dead-lettered", |r| {
        r.stats.dead_lettered.load(Relaxed) == 4
    })
    .await;
    let dlq = run
        .storage
        .read(&DestinationName::new("q.p.dlq").unwrap(), Offset(0), 10)
        .unwrap();
    let mut found = BTreeMap::new();
    for d in &dlq {
        let h = |name: &str| {
            d.record
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let payload = String::from_utf8(d.record.payload.clone()).unwrap();
        found.insert(
            payload,
            (
                h("weir-dlq-class"),
                h("weir-dlq-attempts"),
                h("weir-dlq-history"),
            ),
        );
    }
    assert_eq!(found["trap"].0, "trap");
    assert_eq!(found["trap"].1, "3");
    let history: Vec<String> = serde_json::from_str(&found["trap"].2).unwrap();
    assert_eq!(history.len(), 3, "{history:?}");
    assert!(
        history[0].starts_with("attempt 1: trap: injected trap"),
        "{history:?}"
    );
    assert_eq!(
        (found["fatal"].0.as_str(), found["fatal"].1.as_str()),
        ("handler-error", "1")
    );
    assert_eq!(
        (found["asks"].0.as_str(), found["asks"].1.as_str()),
        ("dead-letter", "1")
    );
    assert_eq!(
        (found["retry"].0.as_str(), found["retry"].1.as_str()),
        ("retries-exhausted", "3")
    );
    assert_eq!(run.stats.snapshot().failures["trap"], 3);
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn at_most_once_acknowledges_before_the_handler_runs() {
    let storage_seen = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&storage_seen);
    // The stand-in cannot see the store; it records the offsets and the test checks the
    // acknowledgement preceded the call through the store's delivery counts (none recorded).
    let h = stand(move |m| {
        seen.lock().unwrap().push(m.offset());
        Ok(Outcome::Ack)
    });
    let mut b = binding(Ordering::Key, 2);
    b.guarantee = Guarantee::AtMostOnce;
    let messages: Vec<_> = (0..50).map(|i| (None, i.to_string())).collect();
    let run = start(b, Arc::clone(&h), &messages);
    run.until("all handled", |r| r.finished() == 50).await;
    let binding = BindingName::new("q.p").unwrap();
    assert_eq!(run.storage.cursor(&binding), Offset(50));
    assert_eq!(storage_seen.lock().unwrap().len(), 50);
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_window_bounds_messages_in_flight() {
    // Every message retries for a long time: nothing finishes, the window fills and stays full.
    let h = stand(|_| Ok(Outcome::Retry(Duration::from_secs(3600))));
    let mut b = binding(Ordering::None, 4);
    b.max_in_flight = 32;
    b.max_attempts = 1000;
    let messages: Vec<_> = (0..1000).map(|i| (None, i.to_string())).collect();
    let run = start(b, Arc::clone(&h), &messages);
    run.until("the window fills", |r| {
        r.stats.in_flight.load(Relaxed) == 32
    })
    .await;
    run.until("each in-window message ran once", |_| {
        h.calls.lock().unwrap().len() >= 32
    })
    .await;
    assert_eq!(
        h.calls.lock().unwrap().len(),
        32,
        "nothing beyond the window was read"
    );
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn different_keys_run_in_parallel() {
    // The first call waits (up to 10 s of real time) for a second call to be running at the
    // same time: only parallel lanes can make them meet.
    let met = Arc::new((Mutex::new((0u32, false)), std::sync::Condvar::new()));
    let m = Arc::clone(&met);
    let h = stand(move |_| {
        let (lock, cv) = &*m;
        let mut g = lock.lock().unwrap();
        g.0 += 1;
        if g.0 == 2 {
            g.1 = true;
            cv.notify_all();
        } else if g.0 == 1 {
            let (g2, _) = cv
                .wait_timeout_while(g, Duration::from_secs(10), |g| !g.1)
                .unwrap();
            drop(g2);
        }
        Ok(Outcome::Ack)
    });
    let messages = [(Some("a"), "1".to_owned()), (Some("b"), "2".to_owned())];
    let run = start(binding(Ordering::Key, 2), Arc::clone(&h), &messages);
    run.until("both handled", |r| r.finished() == 2).await;
    assert!(met.0.lock().unwrap().1, "the two keys ran at the same time");
    run.stop().await;
}

/// Publishes each message's payload to the destination the payload names.
struct Forwarder(PluginName);

impl Handler for Forwarder {
    fn plugin(&self) -> &PluginName {
        &self.0
    }

    fn handle(&self, message: &Message, _timeout: Duration) -> Invocation {
        let to = String::from_utf8_lossy(message.payload()).into_owned();
        let mut effects = Effects::default();
        effects.publishes.push((
            DestinationName::new(&to).unwrap(),
            record(None, to.as_bytes()),
        ));
        Invocation::new(Ok(Outcome::Ack), effects)
    }
}

#[tokio::test(start_paused = true)]
async fn a_message_whose_outcome_cannot_be_stored_is_dead_lettered_and_the_binding_goes_on() {
    // The middle message publishes to a destination the store does not have: its commit would
    // be refused (before: the error ended the binding, and the messages after it never ran).
    let b = binding(Ordering::Fifo, 1);
    let storage = Arc::new(MemoryStorage::new());
    let out = DestinationName::new("out").unwrap();
    for log in [&b.source, &b.dead_letter, &out] {
        storage.open_log(log).unwrap();
    }
    let records = ["out", "nowhere", "out", "out"]
        .iter()
        .map(|p| record(None, p.as_bytes()))
        .collect();
    storage.append(&b.source, records).unwrap();
    let stats = Arc::new(BindingStats::default());
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(run_binding(
        b.clone(),
        Arc::new(Forwarder(PluginName::new("p").unwrap())),
        Arc::clone(&storage) as Arc<dyn Storage>,
        Arc::clone(&stats),
        Arc::new(Parking::default()),
        rx,
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while stats.acked.load(Relaxed) + stats.dead_lettered.load(Relaxed) < 4 {
        assert!(!task.is_finished(), "the binding ended: {:?}", task.await);
        assert!(std::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(stats.acked.load(Relaxed), 3);
    assert_eq!(stats.dead_lettered.load(Relaxed), 1);
    assert_eq!(storage.read(&out, Offset(0), 10).unwrap().len(), 3);
    let dlq = storage.read(&b.dead_letter, Offset(0), 10).unwrap();
    assert_eq!(dlq.len(), 1);
    let header = |name: &str| {
        dlq[0]
            .record
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(header("weir-dlq-class"), "uncommittable");
    assert_eq!(header("weir-dlq-offset"), "1");
    assert!(
        header("weir-dlq-reason").contains("no queue or topic named `nowhere`"),
        "{}",
        header("weir-dlq-reason")
    );
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
}

#[test]
fn a_dead_letter_history_keeps_the_last_attempts_only() {
    let failures: Vec<String> = (1..=100).map(|n| format!("attempt {n}")).collect();
    let kept = history(&failures);
    assert_eq!(kept.len(), HISTORY);
    assert_eq!(kept.last().unwrap(), "attempt 100");
    assert_eq!(history(&failures[..3]).len(), 3);
}
