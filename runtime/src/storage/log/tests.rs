//! Tests of the engine through its public API: round trips, group commit, recovery, faults,
//! segment roll, reads by timestamp, tail following and retention.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;

fn rec(i: u64) -> Record {
    Record {
        id: format!("id-{i}"),
        key: i.is_multiple_of(3).then(|| format!("key-{}", i % 7)),
        headers: vec![("n".into(), i.to_string())],
        payload: vec![(i % 251) as u8; (i % 50) as usize + 10],
        timestamp_ms: 1_000 + i * 10,
        reply_to: None,
        correlation_id: i.is_multiple_of(5).then(|| "c".into()),
    }
}

fn open(dir: &Path, opts: LogOptions) -> (Log, RecoveryReport) {
    Log::open(dir, opts).unwrap()
}

fn append_each(log: &Log, range: std::ops::Range<u64>) {
    for i in range {
        let a = log.append(&[rec(i)]).wait().unwrap();
        assert_eq!(a.first, Offset(i));
    }
}

fn read_all(log: &Log) -> Vec<Entry> {
    log.read(log.start(), usize::MAX, usize::MAX).unwrap()
}

fn assert_records(log: &Log, range: std::ops::Range<u64>) {
    let all = read_all(log);
    let want: Vec<_> = range
        .map(|i| Entry {
            offset: Offset(i),
            record: rec(i),
        })
        .collect();
    assert_eq!(all, want);
}

fn segment_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

#[test]
fn round_trip_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (log, report) = open(dir.path(), LogOptions::new());
    assert_eq!(report.segments, 0);
    let batch: Vec<_> = (0..5).map(rec).collect();
    assert_eq!(log.append(&batch).wait().unwrap().count, 5);
    append_each(&log, 5..20);
    assert_records(&log, 0..20);
    assert_eq!(log.read(Offset(18), 10, usize::MAX).unwrap().len(), 2);
    assert_eq!(
        log.read(Offset(3), 10, 1).unwrap().len(),
        1,
        "max_bytes still returns one"
    );
    assert!(log.read(Offset(20), 10, usize::MAX).unwrap().is_empty());
    log.close().unwrap();
    let (log, report) = open(dir.path(), LogOptions::new());
    assert_eq!((report.torn_tail, report.repaired), (None, None));
    assert_eq!(log.end(), Offset(20));
    assert_records(&log, 0..20);
    append_each(&log, 20..25);
    assert_records(&log, 0..25);
}

#[test]
fn concurrent_appenders_get_dense_distinct_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogOptions::new().segment_bytes(64 << 10));
    let log = Arc::new(log);
    let threads: Vec<_> = (0..16u64)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..100u64)
                    .map(|i| {
                        let n = (i % 3) + 1;
                        let recs: Vec<_> =
                            (0..n).map(|j| rec(t * 1_000_000 + i * 10 + j)).collect();
                        (recs.clone(), log.append(&recs).wait().unwrap())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut by_offset = std::collections::BTreeMap::new();
    for t in threads {
        for (recs, a) in t.join().unwrap() {
            assert_eq!(a.count, recs.len() as u64);
            for (i, r) in recs.into_iter().enumerate() {
                assert!(by_offset.insert(a.first.0 + i as u64, r).is_none());
            }
        }
    }
    let all = read_all(&log);
    assert_eq!(all.len(), by_offset.len());
    for (i, (e, (offset, r))) in all.iter().zip(&by_offset).enumerate() {
        assert_eq!((e.offset.0, *offset), (i as u64, i as u64), "not dense");
        assert_eq!(&e.record, r);
    }
}

#[test]
fn group_commit_batches_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let io = FaultyIo::new();
    let (log, _) = open(dir.path(), LogOptions::new().io(Arc::new(io.clone())));
    let log = Arc::new(log);
    let before = io.syncs();
    let threads: Vec<_> = (0..64u64)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..20 {
                    log.append(&[rec(t * 100 + i)]).wait().unwrap();
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let syncs = io.syncs() - before;
    assert_eq!(log.end(), Offset(1280));
    // Without group commit: one per append. How many share one depends on the disk and the
    // scheduler (a fast fsync leaves less to share), so the bar is at most half.
    assert!(syncs <= 1280 / 2, "{syncs} fsyncs for 1280 appends");
}

#[test]
fn torn_tail_is_cut_at_every_truncation_point() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogOptions::new());
    append_each(&log, 0..4);
    log.close().unwrap();
    let seg = segment_files(dir.path(), "log").remove(0);
    let full = std::fs::read(&seg).unwrap();
    let last_len = frame::encoded_len(&rec(3)).unwrap();
    let last_start = full.len() - last_len;
    for cut in last_start..full.len() {
        std::fs::write(&seg, &full[..cut]).unwrap();
        let (log, report) = open(dir.path(), LogOptions::new());
        assert_records(&log, 0..3);
        let torn = report.torn_tail.clone();
        if cut == last_start {
            assert_eq!(torn, None);
        } else {
            let torn = torn.unwrap_or_else(|| panic!("cut at {cut} not reported"));
            assert_eq!(
                (torn.position, torn.first_dropped),
                (last_start as u64, Offset(3))
            );
            assert_eq!(torn.dropped_bytes, (cut - last_start) as u64);
        }
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), last_start as u64);
        drop(log);
    }
    // A complete last frame with a bad checksum is a torn tail too.
    let mut bad = full.clone();
    bad[full.len() - 1] ^= 1;
    std::fs::write(&seg, &bad).unwrap();
    let (log, report) = open(dir.path(), LogOptions::new());
    assert!(report.torn_tail.is_some());
    assert_records(&log, 0..3);
}

#[test]
fn a_hole_inside_the_last_write_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogOptions::new());
    append_each(&log, 0..2);
    let batch: Vec<_> = (2..10).map(rec).collect();
    log.append(&batch).wait().unwrap();
    log.close().unwrap();
    let seg = segment_files(dir.path(), "log").remove(0);
    let mut bytes = std::fs::read(&seg).unwrap();
    let at: usize = (0..4).map(|i| frame::encoded_len(&rec(i)).unwrap()).sum();
    bytes[at + 20..at + 40].fill(0);
    std::fs::write(&seg, &bytes).unwrap();
    let (log, report) = open(dir.path(), LogOptions::new());
    // The damaged record's whole append (2..10) goes: appends survive whole or not at all.
    let torn = report.torn_tail.unwrap();
    assert_eq!(torn.first_dropped, Offset(2));
    assert_records(&log, 0..2);
    // The log goes on from there, and the cut append's index entries are gone.
    append_each(&log, 2..4);
    assert_records(&log, 0..4);
}

#[test]
fn an_append_cut_anywhere_is_dropped_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogOptions::new());
    append_each(&log, 0..2);
    let batch: Vec<_> = (2..6).map(rec).collect();
    log.append(&batch).wait().unwrap();
    log.close().unwrap();
    let seg = segment_files(dir.path(), "log").remove(0);
    let full = std::fs::read(&seg).unwrap();
    let kept: usize = (0..2).map(|i| frame::encoded_len(&rec(i)).unwrap()).sum();
    // Every cut inside the append, at frame boundaries too, drops all of it and nothing before.
    for cut in kept + 1..full.len() {
        std::fs::write(&seg, &full[..cut]).unwrap();
        let (log, report) = open(dir.path(), LogOptions::new());
        assert_records(&log, 0..2);
        let torn = report
            .torn_tail
            .unwrap_or_else(|| panic!("cut at {cut} not reported"));
        assert_eq!(
            (torn.position, torn.first_dropped),
            (kept as u64, Offset(2))
        );
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), kept as u64);
        assert_eq!(log.read_key("key-3", Offset(0), 10).unwrap().len(), 0);
        drop(log);
    }
    std::fs::write(&seg, &full).unwrap();
    let (log, report) = open(dir.path(), LogOptions::new());
    assert_eq!(report.torn_tail, None);
    assert_records(&log, 0..6);
}

#[test]
fn mid_log_corruption_is_refused_or_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogOptions::new());
    append_each(&log, 0..10);
    log.close().unwrap();
    let seg = segment_files(dir.path(), "log").remove(0);
    let mut bytes = std::fs::read(&seg).unwrap();
    let at: usize = (0..4).map(|i| frame::encoded_len(&rec(i)).unwrap()).sum();
    bytes[at + 30] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let err = Log::open(dir.path(), LogOptions::new()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&seg.display().to_string()) && msg.contains(&format!("at byte {at}")),
        "{msg}"
    );
    let (log, report) = open(dir.path(), LogOptions::new().recovery(Recovery::Repair));
    let cut = report.repaired.unwrap();
    assert_eq!((cut.position, cut.first_dropped), (at as u64, Offset(4)));
    assert_eq!(cut.dropped_bytes, (bytes.len() - at) as u64);
    assert_records(&log, 0..4);
    append_each(&log, 4..6);
    assert_records(&log, 0..6);
}

#[test]
fn repair_drops_later_segments() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || LogOptions::new().segment_bytes(1024);
    let (log, _) = open(dir.path(), opts());
    append_each(&log, 0..60);
    log.close().unwrap();
    let segs = segment_files(dir.path(), "log");
    assert!(segs.len() >= 3, "{segs:?}");
    let mut bytes = std::fs::read(&segs[1]).unwrap();
    bytes[40] ^= 0xff;
    std::fs::write(&segs[1], &bytes).unwrap();
    let opts_verify = || opts().verify_sealed(true);
    assert!(Log::open(dir.path(), opts_verify()).is_err());
    let (log, report) = open(dir.path(), opts_verify().recovery(Recovery::Repair));
    let cut = report.repaired.unwrap();
    assert_eq!(cut.removed_files, segs[2..].to_vec());
    let kept = cut.first_dropped.0;
    assert_records(&log, 0..kept);
    append_each(&log, kept..kept + 3);
}

#[test]
fn failed_fsync_stops_the_log_and_keeps_acked_records() {
    let dir = tempfile::tempdir().unwrap();
    let io = FaultyIo::new();
    let (log, _) = open(dir.path(), LogOptions::new().io(Arc::new(io.clone())));
    append_each(&log, 0..5);
    io.fail_next_sync();
    let err = log.append(&[rec(5)]).wait().unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("the log is stopped after a failed fsync of ") && msg.contains("injected"),
        "{msg}"
    );
    assert!(matches!(
        log.append(&[rec(6)]).wait(),
        Err(LogError::Stopped { .. })
    ));
    assert!(log.stopped().is_some());
    assert_eq!(log.end(), Offset(5));
    assert_records(&log, 0..5);
    drop(log);
    let (log, _) = open(dir.path(), LogOptions::new());
    let all = read_all(&log);
    assert!(all.len() >= 5);
    assert_eq!(all[..5], read_all(&log)[..5]);
    assert_eq!(all[4].record, rec(4));
}

#[test]
fn failed_write_stops_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let io = FaultyIo::new();
    let (log, _) = open(dir.path(), LogOptions::new().io(Arc::new(io.clone())));
    append_each(&log, 0..3);
    io.fail_next_write();
    let err = log.append(&[rec(3), rec(4)]).wait().unwrap_err();
    assert!(err.to_string().contains("failed write of"), "{err}");
    assert!(log.append(&[rec(5)]).wait().is_err());
    drop(log);
    let (log, report) = open(dir.path(), LogOptions::new());
    assert!(
        report.torn_tail.is_some(),
        "the half-written batch is a torn tail"
    );
    assert_records(&log, 0..3);
}

#[test]
fn segments_roll_and_reopen_scans_only_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || {
        LogOptions::new()
            .segment_bytes(2048)
            .index_interval_bytes(256)
    };
    let (log, _) = open(dir.path(), opts());
    append_each(&log, 0..200);
    assert_records(&log, 0..200);
    let total = log.size_bytes();
    log.close().unwrap();
    let logs = segment_files(dir.path(), "log");
    assert!(logs.len() > 5);
    assert_eq!(segment_files(dir.path(), "index").len(), logs.len() - 1);
    let (log, report) = open(dir.path(), opts());
    assert!(
        report.scanned_bytes < 4096,
        "scanned {} of {total}",
        report.scanned_bytes
    );
    assert!(report.rebuilt_indexes.is_empty());
    assert_records(&log, 0..200);
    for from in [0, 17, 63, 150, 199] {
        let got = log.read(Offset(from), 3, usize::MAX).unwrap();
        assert_eq!(got[0].offset, Offset(from));
        assert_eq!(got[0].record, rec(from));
    }
    // A lost index is rebuilt by a scan.
    std::fs::remove_file(logs[1].with_extension("index")).unwrap();
    drop(log);
    let (log, report) = open(dir.path(), opts());
    assert_eq!(
        report.rebuilt_indexes,
        vec![logs[1].with_extension("index")]
    );
    assert_records(&log, 0..200);
}

#[test]
fn read_by_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(
        dir.path(),
        LogOptions::new()
            .segment_bytes(1024)
            .index_interval_bytes(128),
    );
    append_each(&log, 0..100);
    // rec(i) has timestamp 1000 + 10 i.
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some(Offset(0)));
    assert_eq!(log.offset_for_timestamp(1000).unwrap(), Some(Offset(0)));
    assert_eq!(log.offset_for_timestamp(1001).unwrap(), Some(Offset(1)));
    assert_eq!(log.offset_for_timestamp(1555).unwrap(), Some(Offset(56)));
    assert_eq!(log.offset_for_timestamp(1990).unwrap(), Some(Offset(99)));
    assert_eq!(log.offset_for_timestamp(1991).unwrap(), None);
}

#[test]
fn delete_before_frees_files() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogOptions::new().segment_bytes(1024));
    append_each(&log, 0..100);
    let files = segment_files(dir.path(), "log").len();
    let size = log.size_bytes();
    let freed = log.delete_before(Offset(50)).unwrap();
    assert!(
        freed.segments > 0 && freed.start.0 <= 50 && freed.start.0 > 30,
        "{freed:?}"
    );
    assert_eq!(
        segment_files(dir.path(), "log").len(),
        files - freed.segments
    );
    assert!(log.size_bytes() < size);
    assert_eq!(log.start(), freed.start);
    assert!(matches!(
        log.read(Offset(0), 1, 1),
        Err(LogError::Removed { .. })
    ));
    assert_records(&log, freed.start.0..100);
    let freed = log.delete_to_fit(0).unwrap();
    assert_eq!(segment_files(dir.path(), "log").len(), 1);
    assert!(freed.segments > 0);
    assert_eq!(log.delete_older_than(u64::MAX).unwrap().segments, 0);
    drop(log);
    let (log, _) = open(dir.path(), LogOptions::new().segment_bytes(1024));
    assert_records(&log, log.start().0..100);
}

#[test]
fn following_the_tail_and_awaiting_tickets() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogOptions::new());
    let log = Arc::new(log);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut end = log.watch_end();
        let writer = {
            let log = log.clone();
            tokio::task::spawn_blocking(move || append_each(&log, 0..10))
        };
        let seen = end.wait_for(|e| *e >= Offset(10)).await.unwrap().0;
        assert!(seen >= 10);
        writer.await.unwrap();
        let a = log.append(&[rec(10)]).await.unwrap();
        assert_eq!(a.first, Offset(10));
    });
}

#[test]
fn interval_and_never_acknowledge_after_the_write() {
    for durability in [
        Durability::Interval(std::time::Duration::from_millis(5)),
        Durability::Never,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let opts = || LogOptions::new().durability(durability).segment_bytes(1024);
        let (log, _) = open(dir.path(), opts());
        append_each(&log, 0..50);
        assert_records(&log, 0..50);
        log.close().unwrap();
        let (log, report) = open(dir.path(), opts());
        assert_eq!(report.torn_tail, None);
        assert_records(&log, 0..50);
    }
}
