//! Tests of per-key reads: across segments, after reopen, with forced hash collisions, from an
//! offset and with a limit.

use super::*;

fn rec(i: u64, key: Option<String>) -> Record {
    Record {
        id: format!("id-{i}"),
        key,
        headers: Vec::new(),
        payload: i.to_le_bytes().to_vec(),
        timestamp_ms: 1_000 + i,
        reply_to: None,
        correlation_id: None,
    }
}

/// Record `i` has key `k{i % 5}`, except every fourth, which has none.
fn key_of(i: u64) -> Option<String> {
    (!i.is_multiple_of(4)).then(|| format!("k{}", i % 5))
}

fn offsets(log: &Log, key: &str, from: u64, max: usize) -> Vec<u64> {
    let entries = log.read_key(key, Offset(from), max).unwrap();
    for e in &entries {
        assert_eq!(e.record.key.as_deref(), Some(key));
        assert_eq!(e.record, rec(e.offset.0, key_of(e.offset.0)));
    }
    entries.iter().map(|e| e.offset.0).collect()
}

fn want(key: &str, from: u64, n: u64) -> Vec<u64> {
    (from..n)
        .filter(|&i| key_of(i).as_deref() == Some(key))
        .collect()
}

fn check_all(log: &Log, n: u64) {
    for k in 0..5 {
        let key = format!("k{k}");
        assert_eq!(offsets(log, &key, 0, usize::MAX), want(&key, 0, n), "{key}");
        assert_eq!(offsets(log, &key, n / 2, usize::MAX), want(&key, n / 2, n));
        let first3: Vec<_> = want(&key, 7, n).into_iter().take(3).collect();
        assert_eq!(offsets(log, &key, 7, 3), first3);
    }
    assert!(offsets(log, "absent", 0, usize::MAX).is_empty());
}

fn append_all(log: &Log, n: u64) {
    for i in 0..n {
        log.append(&[rec(i, key_of(i))]).wait().unwrap();
    }
}

#[test]
fn per_key_reads_across_segments_and_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || LogOptions::new().segment_bytes(1024);
    let (log, _) = Log::open(dir.path(), opts()).unwrap();
    append_all(&log, 300);
    check_all(&log, 300);
    log.close().unwrap();
    let (log, report) = Log::open(dir.path(), opts()).unwrap();
    assert!(report.segments > 10, "{report:?}");
    check_all(&log, 300);
    log.delete_before(Offset(100)).unwrap();
    let start = log.start().0;
    assert!(matches!(
        log.read_key("k1", Offset(0), 10),
        Err(LogError::Removed { .. })
    ));
    assert_eq!(
        offsets(&log, "k1", start, usize::MAX),
        want("k1", start, 300)
    );
}

#[test]
fn colliding_key_hashes_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    // Two possible hashes: the five keys collide.
    let opts = || LogOptions::new().segment_bytes(1024).hash_mask(1);
    let (log, _) = Log::open(dir.path(), opts()).unwrap();
    append_all(&log, 200);
    check_all(&log, 200);
    log.close().unwrap();
    let keys: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "keys"))
        .collect();
    std::fs::remove_file(&keys[0]).unwrap();
    let (log, report) = Log::open(dir.path(), opts()).unwrap();
    assert!(report.rebuilt_indexes.contains(&keys[0]));
    check_all(&log, 200);
}
