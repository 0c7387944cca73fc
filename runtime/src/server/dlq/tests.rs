use super::*;
use crate::config::Config;
use crate::storage::{EmbeddedOptions, EmbeddedStorage, MemoryStorage};

/// A config with queue `jobs` consumed by plugin `p` (binding `jobs.p`, dead letters to
/// `jobs.p.dlq`).
fn binding() -> BindingConfig {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.wasm"), b"").unwrap();
    let text = "[queues.jobs]\n[plugins.p]\npath = \"p.wasm\"\n[[bindings]]\nsource = \"jobs\"\nplugin = \"p\"\n";
    let config = Config::parse(&dir.path().join("weir.toml"), text).unwrap();
    config.bindings[0].clone()
}

fn open_logs(storage: &dyn Storage) {
    for name in ["jobs", "jobs.p.dlq"] {
        storage.open_log(&dest(name)).unwrap();
    }
}

/// [`binding`] and an in-memory store holding its logs.
fn setup() -> (MemoryStorage, BindingConfig) {
    let storage = MemoryStorage::new();
    open_logs(&storage);
    (storage, binding())
}

fn dest(name: &str) -> DestinationName {
    DestinationName::new(name).unwrap()
}

/// A dead letter as the delivery loop writes it.
fn dead(binding: &str, source_offset: u64, payload: &str) -> Record {
    let mut headers = vec![("trace".to_owned(), payload.to_owned())];
    for (k, v) in [
        ("binding", binding),
        ("source", "jobs"),
        ("offset", &source_offset.to_string()),
        ("attempts", "3"),
        ("class", "handler-error"),
        ("reason", "it broke"),
    ] {
        headers.push((format!("weir-dlq-{k}"), v.to_owned()));
    }
    Record {
        id: format!("id-{payload}"),
        key: Some("k".into()),
        headers,
        payload: payload.as_bytes().to_vec(),
        timestamp_ms: 1,
        reply_to: None,
        correlation_id: None,
    }
}

fn payloads(storage: &dyn Storage, log: &str) -> Vec<String> {
    storage
        .read(&dest(log), Offset(0), 100)
        .unwrap()
        .iter()
        .map(|s| String::from_utf8(s.record.payload.clone()).unwrap())
        .collect()
}

fn listed(page: &DeadLetterPage) -> Vec<(u64, String)> {
    page.dead_letters
        .iter()
        .map(|d| (d.offset.0, String::from_utf8(d.payload.clone()).unwrap()))
        .collect()
}

/// Dead-letter queue `jobs.p.dlq`: a, b (of `jobs.p`), another binding's, a hand-published
/// record, c (of `jobs.p`).
fn fill(storage: &MemoryStorage) {
    let mut by_hand = dead("jobs.p", 9, "by-hand");
    by_hand.headers.clear();
    let records = vec![
        dead("jobs.p", 0, "a"),
        dead("jobs.p", 1, "b"),
        dead("other", 5, "theirs"),
        by_hand,
        dead("jobs.p", 2, "c"),
    ];
    storage.append(&dest("jobs.p.dlq"), records).unwrap();
}

#[test]
fn lists_and_shows_only_the_bindings_dead_letters() {
    let (storage, binding) = setup();
    fill(&storage);
    let page = list(&storage, &binding, None, 100).unwrap();
    assert_eq!(
        listed(&page),
        [(0, "a".into()), (1, "b".into()), (4, "c".into())]
    );
    assert_eq!(
        (page.next, page.end, page.redrive_cursor),
        (Offset(5), Offset(5), Offset(0))
    );
    let a = &page.dead_letters[0];
    assert_eq!(
        (
            a.source_offset,
            a.attempts,
            a.class.as_str(),
            a.reason.as_str()
        ),
        (Some(0), Some(3), "handler-error", "it broke")
    );
    assert_eq!(
        a.headers,
        [("trace".to_owned(), "a".to_owned())],
        "no weir-dlq-*"
    );
    assert_eq!(
        (a.key.as_deref(), a.id.as_str(), a.redriven),
        (Some("k"), "id-a", false)
    );

    // Paging: `limit`, then on from `next`.
    let first = list(&storage, &binding, None, 2).unwrap();
    assert_eq!(listed(&first), [(0, "a".into()), (1, "b".into())]);
    let rest = list(&storage, &binding, Some(first.next), 2).unwrap();
    assert_eq!(listed(&rest), [(4, "c".into())]);

    assert_eq!(
        show(&storage, &binding, Offset(4)).unwrap().class,
        "handler-error"
    );
    for offset in [2, 3, 99] {
        let e = show(&storage, &binding, Offset(offset)).unwrap_err();
        assert_eq!(e.code(), "dead_letter_not_found", "offset {offset}");
    }
}

#[test]
fn redrive_sends_originals_back_once_and_moves_the_cursor() {
    let (storage, binding) = setup();
    fill(&storage);
    let done = redrive(&storage, &binding, Some(1)).unwrap();
    assert_eq!(
        done,
        Redriven {
            source: dest("jobs"),
            redriven: 1,
            redrive_cursor: Offset(1)
        }
    );
    let copies = storage.read(&dest("jobs"), Offset(0), 10).unwrap();
    let copy = &copies[0].record;
    assert_eq!(copy.payload, b"a");
    assert_eq!(copy.key.as_deref(), Some("k"));
    assert_eq!(
        copy.headers,
        [
            ("trace".to_owned(), "a".to_owned()),
            (REDRIVEN_FROM.to_owned(), "jobs.p.dlq@0".to_owned())
        ]
    );
    assert_eq!(
        copy.id, "redrive:jobs.p.dlq@0",
        "a fresh id, derived from its place"
    );
    assert_eq!(
        listed(&list(&storage, &binding, None, 100).unwrap()).len(),
        2
    );
    assert!(show(&storage, &binding, Offset(0)).unwrap().redriven);

    // The rest: skips the other binding's and the hand-published record, but moves past them.
    let done = redrive(&storage, &binding, None).unwrap();
    assert_eq!(
        done,
        Redriven {
            source: dest("jobs"),
            redriven: 2,
            redrive_cursor: Offset(5)
        }
    );
    assert_eq!(payloads(&storage, "jobs"), ["a", "b", "c"]);
    assert!(
        list(&storage, &binding, None, 100)
            .unwrap()
            .dead_letters
            .is_empty()
    );
    assert_eq!(
        payloads(&storage, "jobs.p.dlq").len(),
        5,
        "the queue keeps its records"
    );

    let again = redrive(&storage, &binding, None).unwrap();
    assert_eq!(again.redriven, 0, "nothing is redriven twice");
    assert_eq!(payloads(&storage, "jobs").len(), 3);

    // A message redriven, failed and dead-lettered again carries one `weir-redriven-from`.
    let mut failed_again = dead("jobs.p", 0, "a");
    failed_again
        .headers
        .insert(1, (REDRIVEN_FROM.to_owned(), "jobs.p.dlq@0".to_owned()));
    storage
        .append(&dest("jobs.p.dlq"), vec![failed_again])
        .unwrap();
    assert_eq!(redrive(&storage, &binding, None).unwrap().redriven, 1);
    let last = storage.read(&dest("jobs"), Offset(3), 1).unwrap();
    let from: Vec<_> = last[0]
        .record
        .headers
        .iter()
        .filter(|(k, _)| k == REDRIVEN_FROM)
        .collect();
    assert_eq!(
        from,
        [&(REDRIVEN_FROM.to_owned(), "jobs.p.dlq@5".to_owned())]
    );
}

#[test]
fn a_redrive_that_crashed_before_moving_the_cursor_is_not_doubled() {
    let (storage, binding) = setup();
    fill(&storage);
    // The first batch reached the source, then the process died before the cursor moved.
    let dlq = storage.read(&dest("jobs.p.dlq"), Offset(0), 2).unwrap();
    let copies = dlq
        .iter()
        .map(|s| redriven_copy(&dest("jobs.p.dlq"), s))
        .collect();
    storage.append(&dest("jobs"), copies).unwrap();
    assert_eq!(
        storage.cursor(&binding.name.redrive_cursor(&binding.dead_letter)),
        Offset(0)
    );

    let done = redrive(&storage, &binding, None).unwrap();
    assert_eq!(done.redrive_cursor, Offset(5));
    assert_eq!(
        payloads(&storage, "jobs"),
        ["a", "b", "c"],
        "a and b stored once"
    );
}

#[test]
fn the_redrive_cursor_is_apart_from_the_bindings_cursor() {
    let (storage, binding) = setup();
    fill(&storage);
    redrive(&storage, &binding, None).unwrap();
    assert_eq!(
        storage.cursor(&binding.name),
        Offset(0),
        "the binding still owes nothing"
    );
}

#[test]
fn the_durable_store_redrives_in_batches_and_resumes_after_a_crash_without_doubles() {
    let dir = tempfile::tempdir().unwrap();
    let binding = binding();
    let dlq = dest("jobs.p.dlq");
    let n = 1000;
    {
        let storage = EmbeddedStorage::open(dir.path(), EmbeddedOptions::default()).unwrap();
        open_logs(&storage);
        let letters = (0..n).map(|i| dead("jobs.p", i, &i.to_string())).collect();
        storage.append(&dlq, letters).unwrap();
        // A redrive died after storing the copies of 0..300, before moving its cursor.
        let first = storage.read(&dlq, Offset(0), 300).unwrap();
        let copies = first.iter().map(|s| redriven_copy(&dlq, s)).collect();
        storage.append(&dest("jobs"), copies).unwrap();
    }
    let storage = EmbeddedStorage::open(dir.path(), EmbeddedOptions::default()).unwrap();
    open_logs(&storage);
    let done = redrive(&storage, &binding, None).unwrap();
    assert_eq!((done.redriven, done.redrive_cursor), (n, Offset(n)));
    let mut sent = Vec::new();
    let mut at = Offset(0);
    loop {
        let batch = storage.read(&dest("jobs"), at, 512).unwrap();
        let Some(last) = batch.last() else { break };
        at = last.offset.next();
        sent.extend(
            batch
                .iter()
                .map(|s| String::from_utf8(s.record.payload.clone()).unwrap()),
        );
    }
    let expected: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    assert_eq!(sent, expected, "every dead letter once, in order");
}
