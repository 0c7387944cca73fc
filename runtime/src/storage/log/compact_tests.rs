//! Tests of per-key compaction: the latest record per key survives with its offset, unkeyed
//! records stay, disk is freed, the result survives a reopen, and a reader during compaction sees
//! only whole, correct records.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;

/// Record `i` has key `k{i % 10}` except every seventh, which has none; the payload is large so
/// compaction frees visible bytes.
fn rec(i: u64) -> Record {
    Record {
        id: format!("id-{i}"),
        key: (!i.is_multiple_of(7)).then(|| format!("k{}", i % 10)),
        headers: Vec::new(),
        payload: vec![(i % 251) as u8; 100],
        timestamp_ms: 1_000 + i,
        reply_to: None,
        correlation_id: None,
    }
}

fn opts() -> LogOptions {
    LogOptions::new().segment_bytes(2048)
}

fn disk_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// The offsets that must survive compaction of a log of `n` records whose active segment starts
/// at `active`: everything in the active segment, unkeyed records, the latest of each key, and
/// (allowed, not required) each sealed segment's last record.
fn must_keep(n: u64, active: u64) -> Vec<u64> {
    (0..n)
        .filter(|&i| {
            let latest = (i + 1..n).all(|j| rec(j).key != rec(i).key);
            i >= active || rec(i).key.is_none() || latest
        })
        .collect()
}

fn check(log: &Log, n: u64, active: u64, sealed_ends: &[u64]) {
    let entries = log.read(Offset(0), usize::MAX, usize::MAX).unwrap();
    let offsets: Vec<u64> = entries.iter().map(|e| e.offset.0).collect();
    for e in &entries {
        assert_eq!(e.record, rec(e.offset.0), "offsets keep their records");
    }
    let keep = must_keep(n, active);
    let extra: Vec<_> = offsets.iter().filter(|o| !keep.contains(o)).collect();
    assert!(
        extra.iter().all(|o| sealed_ends.contains(&(**o + 1))),
        "only segment ends are kept beyond the latest per key: {extra:?}"
    );
    assert!(keep.iter().all(|o| offsets.contains(o)));
    for k in 0..10 {
        let key = format!("k{k}");
        let latest = log.read_key(&key, Offset(0), usize::MAX).unwrap();
        let last = (0..n).rev().find(|&i| rec(i).key.as_deref() == Some(&key));
        assert_eq!(latest.last().map(|e| e.offset.0), last);
    }
}

fn sealed_ends(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| segment::parse_name(&e.unwrap().path(), "log"))
        .collect();
    bases.sort_unstable();
    bases.into_iter().skip(1).collect()
}

#[test]
fn compaction_keeps_the_latest_per_key_and_frees_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), opts()).unwrap();
    let n = 400;
    for i in 0..n {
        log.append(&[rec(i)]).wait().unwrap();
    }
    let active = log.shared.read_segments().active.index.summary.base;
    let ends = sealed_ends(dir.path());
    let before = disk_bytes(dir.path());
    let done = log.compact().unwrap();
    assert!(done.segments > 5 && done.records > 200, "{done:?}");
    let after = disk_bytes(dir.path());
    assert_eq!(
        before - after,
        done.bytes,
        "the freed bytes are really gone"
    );
    assert_eq!(log.end(), Offset(n));
    check(&log, n, active, &ends);
    assert_eq!(
        log.compact().unwrap().records,
        0,
        "a second pass finds nothing"
    );
    log.append(&[rec(n)]).wait().unwrap();
    log.close().unwrap();
    let (log, report) = Log::open(dir.path(), opts()).unwrap();
    assert!(report.rebuilt_indexes.is_empty(), "{report:?}");
    check(&log, n + 1, active, &ends);
    log.close().unwrap();
    // Without the indexes, open rebuilds them by scanning the compacted segments (gaps allowed).
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension()
            .is_some_and(|x| x == "index" || x == "keys" || x == "ids")
        {
            std::fs::remove_file(p).unwrap();
        }
    }
    let (log, report) = Log::open(dir.path(), opts()).unwrap();
    assert!(!report.rebuilt_indexes.is_empty());
    check(&log, n + 1, active, &ends);
    let dup = log.append_dedup(&[rec(n - 1)]).wait().unwrap();
    assert!(dup[0].duplicate);
}

#[test]
fn a_reader_during_compaction_sees_consistent_records() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), opts()).unwrap();
    let n = 600;
    let batch: Vec<_> = (0..n).map(rec).collect();
    for chunk in batch.chunks(10) {
        log.append(chunk).wait().unwrap();
    }
    let active = log.shared.read_segments().active.index.summary.base;
    let keep = must_keep(n, active);
    let log = Arc::new(log);
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (log, done) = (log.clone(), done.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !done.load(Ordering::Acquire) || reads < 20 {
                let mut next = Offset(0);
                let mut offsets = Vec::new();
                loop {
                    let got = log.read(next, 7, usize::MAX).unwrap();
                    let Some(last) = got.last() else { break };
                    next = Offset(last.offset.0 + 1);
                    for e in got {
                        assert_eq!(e.record, rec(e.offset.0));
                        offsets.push(e.offset.0);
                    }
                }
                assert!(offsets.windows(2).all(|w| w[0] < w[1]));
                assert!(
                    keep.iter().all(|o| offsets.contains(o)),
                    "a kept record went missing"
                );
                reads += 1;
            }
        })
    };
    let freed = log.compact().unwrap();
    done.store(true, Ordering::Release);
    reader.join().unwrap();
    assert!(freed.records > 0);
}
