//! Tests of publish dedup through the public API: original offsets, duplicates inside one call,
//! across segment rolls and reopens, concurrent appenders, rebuilt `.ids` files and forced hash
//! collisions.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

use super::*;

fn rec(id: &str, payload: &str) -> Record {
    Record {
        id: id.into(),
        key: None,
        headers: Vec::new(),
        payload: payload.as_bytes().to_vec(),
        timestamp_ms: 1_000,
        reply_to: None,
        correlation_id: None,
    }
}

fn dedup(log: &Log, records: &[Record]) -> Vec<(u64, bool)> {
    log.append_dedup(records)
        .wait()
        .unwrap()
        .into_iter()
        .map(|d| (d.offset.0, d.duplicate))
        .collect()
}

fn small() -> LogOptions {
    LogOptions::new().segment_bytes(1024)
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

fn payloads(log: &Log) -> Vec<(u64, String, String)> {
    log.read(log.start(), usize::MAX, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| {
            let p = String::from_utf8(e.record.payload).unwrap();
            (e.offset.0, e.record.id, p)
        })
        .collect()
}

#[test]
fn a_duplicate_gets_the_original_offset_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), LogOptions::new()).unwrap();
    log.append(&[rec("a", "1"), rec("b", "1")]).wait().unwrap();
    assert_eq!(
        dedup(&log, &[rec("a", "2"), rec("c", "1")]),
        [(0, true), (2, false)]
    );
    assert_eq!(dedup(&log, &[rec("c", "2")]), [(2, true)]);
    assert_eq!(log.end(), Offset(3));
    let stored = payloads(&log);
    assert_eq!(stored[0], (0, "a".into(), "1".into()), "the original stays");
    assert_eq!(log.append_dedup(&[]).wait().unwrap(), []);
}

#[test]
fn duplicates_inside_one_call_collapse() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), LogOptions::new()).unwrap();
    log.append(&[rec("z", "")]).wait().unwrap();
    let out = dedup(
        &log,
        &[rec("x", "1"), rec("y", "1"), rec("x", "2"), rec("z", "")],
    );
    assert_eq!(out, [(1, false), (2, false), (1, true), (0, true)]);
    assert_eq!(log.end(), Offset(3));
}

#[test]
fn dedup_across_segment_rolls_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), small()).unwrap();
    for i in 0..200 {
        let id = format!("id-{i}");
        assert_eq!(dedup(&log, &[rec(&id, "first")]), [(i, false)]);
    }
    assert!(files(dir.path(), "ids").len() > 5, "segments rolled");
    for i in (0..200).step_by(7) {
        assert_eq!(
            dedup(&log, &[rec(&format!("id-{i}"), "again")]),
            [(i, true)]
        );
    }
    assert_eq!(log.end(), Offset(200));
    log.close().unwrap();
    let (log, _) = Log::open(dir.path(), small()).unwrap();
    for i in (0..200).step_by(3) {
        assert_eq!(
            dedup(&log, &[rec(&format!("id-{i}"), "after")]),
            [(i, true)]
        );
    }
    assert_eq!(dedup(&log, &[rec("new", "")]), [(200, false)]);
    assert!(
        payloads(&log)
            .iter()
            .all(|(_, _, p)| p == "first" || p.is_empty())
    );
}

#[test]
fn concurrent_appenders_of_the_same_ids_store_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), small()).unwrap();
    let log = Arc::new(log);
    let threads = 12;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (log, barrier) = (log.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut seen = Vec::new();
                for round in 0..60 {
                    // Every thread appends the same ids, in a different grouping.
                    let ids: Vec<_> = (0..1 + (t + round) % 3)
                        .map(|k| rec(&format!("id-{}", (round + k) % 60), &t.to_string()))
                        .collect();
                    for (r, d) in ids.iter().zip(log.append_dedup(&ids).wait().unwrap()) {
                        seen.push((r.id.clone(), d.offset.0));
                    }
                }
                seen
            })
        })
        .collect();
    let mut offset_of = std::collections::HashMap::new();
    for h in handles {
        for (id, offset) in h.join().unwrap() {
            assert_eq!(
                *offset_of.entry(id.clone()).or_insert(offset),
                offset,
                "{id}"
            );
        }
    }
    let stored = payloads(&log);
    assert_eq!(stored.len(), 60, "each id stored exactly once");
    for (offset, id, _) in stored {
        assert_eq!(offset_of[&id], offset);
    }
}

#[test]
fn deleted_or_damaged_ids_files_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), small()).unwrap();
    for i in 0..100 {
        log.append(&[rec(&format!("id-{i}"), "p")]).wait().unwrap();
    }
    log.close().unwrap();
    let ids = files(dir.path(), "ids");
    assert!(ids.len() > 2);
    std::fs::remove_file(&ids[0]).unwrap();
    let mut damaged = std::fs::read(&ids[1]).unwrap();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    std::fs::write(&ids[1], damaged).unwrap();
    let (log, report) = Log::open(dir.path(), small()).unwrap();
    assert!(report.rebuilt_indexes.contains(&ids[0]), "{report:?}");
    assert!(report.rebuilt_indexes.contains(&ids[1]), "{report:?}");
    assert_eq!(files(dir.path(), "ids"), ids);
    for i in 0..100 {
        assert_eq!(dedup(&log, &[rec(&format!("id-{i}"), "x")]), [(i, true)]);
    }
}

#[test]
fn colliding_hashes_are_told_apart_by_the_whole_id() {
    let dir = tempfile::tempdir().unwrap();
    // Four possible hashes: nearly every id collides with many others.
    let opts = || small().hash_mask(0b11);
    let (log, _) = Log::open(dir.path(), opts()).unwrap();
    for i in 0..80 {
        let id = format!("id-{i}");
        assert_eq!(dedup(&log, &[rec(&id, "1")]), [(i, false)], "{id}");
    }
    log.append(&[rec("plain", "")]).wait().unwrap();
    log.close().unwrap();
    let (log, _) = Log::open(dir.path(), opts()).unwrap();
    for i in (0..80).rev() {
        assert_eq!(dedup(&log, &[rec(&format!("id-{i}"), "2")]), [(i, true)]);
    }
    assert_eq!(dedup(&log, &[rec("plain", "2")]), [(80, true)]);
    assert_eq!(dedup(&log, &[rec("id-80", "")]), [(81, false)]);
}

#[test]
fn retention_removes_ids_files_and_a_log_without_dedup_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), small()).unwrap();
    for i in 0..100 {
        log.append(&[rec(&format!("id-{i}"), "p")]).wait().unwrap();
    }
    let before = files(dir.path(), "ids").len();
    let freed = log.delete_before(Offset(50)).unwrap();
    assert_eq!(files(dir.path(), "ids").len(), before - freed.segments);
    assert_eq!(files(dir.path(), "keys").len(), before - freed.segments);
    let start = log.start().0;
    assert_eq!(
        dedup(&log, &[rec(&format!("id-{start}"), "")]),
        [(start, true)]
    );
    let other = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(other.path(), LogOptions::new().dedup(false)).unwrap();
    assert!(matches!(
        log.append_dedup(&[rec("a", "")]).wait(),
        Err(LogError::DedupOff)
    ));
}

#[test]
fn awaiting_a_dedup_ticket() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), LogOptions::new()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let first = log.append_dedup(&[rec("a", "")]).await.unwrap();
        let again = log.append_dedup(&[rec("a", "")]).await.unwrap();
        assert_eq!(first[0].offset, again[0].offset);
        assert!(!first[0].duplicate && again[0].duplicate);
    });
}
