use std::sync::Arc;

use super::*;
use crate::storage::log::FaultyIo;

fn dest(s: &str) -> DestinationName {
    DestinationName::new(s).unwrap()
}

fn record(id: &str) -> Record {
    Record {
        id: id.to_owned(),
        key: Some(format!("key-{id}")),
        headers: vec![("h".into(), id.into())],
        payload: id.as_bytes().to_vec(),
        timestamp_ms: 7,
        reply_to: None,
        correlation_id: None,
    }
}

fn open(dir: &Path, options: EmbeddedOptions) -> EmbeddedStorage {
    let s = EmbeddedStorage::open(dir, options).unwrap();
    for name in ["orders", "out"] {
        s.open_log(&dest(name)).unwrap();
    }
    s
}

fn commit(s: &EmbeddedStorage, n: u64) -> Result<Vec<Offset>, StorageError> {
    let plugin = PluginName::new("p").unwrap();
    s.commit(Commit {
        kv: Some((
            plugin,
            vec![
                ("count".into(), Some(n.to_le_bytes().to_vec())),
                (format!("k{n}"), Some(vec![1])),
            ],
        )),
        publishes: vec![(dest("out"), record(&format!("out-{n}")))],
        acks: vec![(BindingName::new("orders.p").unwrap(), Offset(n))],
        dedup: false,
    })
}

#[test]
fn logs_cursors_and_state_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let binding = BindingName::new("orders.p").unwrap();
    let plugin = PluginName::new("p").unwrap();
    {
        let s = open(dir.path(), EmbeddedOptions::default());
        assert_eq!(
            s.append(&dest("orders"), vec![record("a"), record("b")])
                .unwrap(),
            [Offset(0), Offset(1)]
        );
        for n in 0..3 {
            assert_eq!(commit(&s, n).unwrap(), [Offset(n)]);
        }
        s.commit(Commit {
            kv: Some((plugin.clone(), vec![("k1".into(), None)])),
            ..Commit::default()
        })
        .unwrap();
    }
    let s = open(dir.path(), EmbeddedOptions::default());
    let read = s.read(&dest("orders"), Offset(0), 10).unwrap();
    assert_eq!(
        read.iter()
            .map(|r| r.record.as_ref().clone())
            .collect::<Vec<_>>(),
        [record("a"), record("b")]
    );
    assert_eq!(s.read(&dest("out"), Offset(0), 10).unwrap().len(), 3);
    assert_eq!(*s.watch_end(&dest("out")).unwrap().borrow(), Offset(3));
    assert_eq!(s.cursor(&binding), Offset(3));
    assert_eq!(
        s.kv_get(&plugin, "count"),
        Some(2u64.to_le_bytes().to_vec())
    );
    assert_eq!(
        s.kv_list(&plugin, "k", None, 10),
        ["k0", "k2"],
        "the delete survived too"
    );
}

#[test]
fn snapshots_trim_the_journal_and_keep_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        snapshot_bytes: 16 << 10,
        ..EmbeddedOptions::default()
    };
    {
        let s = open(dir.path(), options.clone());
        for n in 0..1000 {
            commit(&s, n).unwrap();
        }
        assert!(
            dir.path().join("state/snapshot").is_file(),
            "a snapshot was written"
        );
        assert!(s.journal.start() > Offset(0) || s.journal.size_bytes() < 16 << 20);
    }
    let s = open(dir.path(), options);
    let plugin = PluginName::new("p").unwrap();
    assert_eq!(
        s.kv_get(&plugin, "count"),
        Some(999u64.to_le_bytes().to_vec())
    );
    assert_eq!(s.kv_list(&plugin, "k", None, 5000).len(), 1000);
    assert_eq!(
        s.cursor(&BindingName::new("orders.p").unwrap()),
        Offset(1000)
    );
}

#[test]
fn a_failed_fsync_stops_the_store_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultyIo::new();
    let options = EmbeddedOptions {
        io: Arc::new(faults.clone()),
        ..EmbeddedOptions::default()
    };
    let acked = {
        let s = open(dir.path(), options);
        let mut acked = 0;
        for n in 0..5 {
            commit(&s, n).unwrap();
            acked += 1;
        }
        faults.fail_next_sync();
        let err = commit(&s, 5).unwrap_err();
        assert!(err.to_string().contains("stopped after a failed"), "{err}");
        // Fail-stop: later writes are refused too, even though the disk would now accept them.
        let again = commit(&s, 6).unwrap_err();
        assert!(
            again.to_string().contains("stopped after a failed"),
            "{again}"
        );
        acked
    };
    let s = open(dir.path(), EmbeddedOptions::default());
    let out = s.read(&dest("out"), Offset(0), 100).unwrap();
    let ids: Vec<String> = out.iter().map(|r| r.record.id.clone()).collect();
    for n in 0..acked {
        assert!(
            ids.contains(&format!("out-{n}")),
            "acknowledged out-{n} survives: {ids:?}"
        );
    }
    let cursor = s.cursor(&BindingName::new("orders.p").unwrap());
    assert!(
        cursor >= Offset(acked),
        "cursor {cursor} covers every acknowledged commit"
    );
}

#[test]
fn a_failed_write_stops_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultyIo::new();
    let s = open(
        dir.path(),
        EmbeddedOptions {
            io: Arc::new(faults.clone()),
            ..EmbeddedOptions::default()
        },
    );
    commit(&s, 0).unwrap();
    faults.fail_next_write();
    assert!(commit(&s, 1).is_err());
    assert!(s.append(&dest("out"), vec![record("late")]).is_err());
}

#[test]
fn damaged_state_is_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(
            dir.path(),
            EmbeddedOptions {
                snapshot_bytes: 1,
                ..EmbeddedOptions::default()
            },
        );
        commit(&s, 0).unwrap();
    }
    let snap = dir.path().join("state/snapshot");
    let mut bytes = std::fs::read(&snap).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&snap, bytes).unwrap();
    let err = EmbeddedStorage::open(dir.path(), EmbeddedOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("damaged snapshot ") && err.contains("state/snapshot: checksum mismatch"),
        "{err}"
    );
}

#[test]
fn one_process_per_store() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path(), EmbeddedOptions::default());
    let err = EmbeddedStorage::open(dir.path(), EmbeddedOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.ends_with("is in use by another weir process"), "{err}");
    drop(first);
    open(dir.path(), EmbeddedOptions::default());
}

#[test]
fn acks_and_delivery_counts_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let b = BindingName::new("orders.p").unwrap();
    let ack = |s: &EmbeddedStorage, n: u64| {
        s.commit(Commit {
            acks: vec![(b.clone(), Offset(n))],
            ..Commit::default()
        })
        .unwrap()
    };
    {
        let s = open(dir.path(), EmbeddedOptions::default());
        for n in 0..5 {
            assert_eq!(s.begin_delivery(&b, Offset(n)).unwrap(), 1);
        }
        assert_eq!(
            s.begin_delivery(&b, Offset(2)).unwrap(),
            2,
            "a redelivery counts"
        );
        // Out of order: 0, 1 and 3; 2 and 4 stay unacknowledged.
        for n in [3, 0, 1] {
            ack(&s, n);
        }
        assert_eq!(s.cursor(&b), Offset(2));
        assert!(s.is_acked(&b, Offset(3)) && !s.is_acked(&b, Offset(2)));
    }
    let s = open(dir.path(), EmbeddedOptions::default());
    assert_eq!(
        s.cursor(&b),
        Offset(2),
        "nothing acknowledged is delivered again"
    );
    assert!(s.is_acked(&b, Offset(1)) && s.is_acked(&b, Offset(3)));
    assert!(
        !s.is_acked(&b, Offset(2)) && !s.is_acked(&b, Offset(4)),
        "nothing unacknowledged is lost"
    );
    assert_eq!(
        s.begin_delivery(&b, Offset(2)).unwrap(),
        3,
        "delivery counts survive"
    );
    assert_eq!(s.begin_delivery(&b, Offset(4)).unwrap(), 2);
    ack(&s, 2);
    assert_eq!(
        s.cursor(&b),
        Offset(4),
        "the cursor moves over 2 and the earlier ack of 3"
    );
    ack(&s, 4);
    drop(s);
    let s = open(
        dir.path(),
        EmbeddedOptions {
            snapshot_bytes: 1,
            ..EmbeddedOptions::default()
        },
    );
    assert_eq!(s.cursor(&b), Offset(5));
    ack(&s, 9); // forces a snapshot holding an ack above the cursor
    drop(s);
    let s = open(dir.path(), EmbeddedOptions::default());
    assert!(
        s.is_acked(&b, Offset(9)) && !s.is_acked(&b, Offset(5)),
        "snapshots keep acks above the cursor"
    );
}

#[test]
fn leases_expire_release_on_ack_and_do_not_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = BindingName::new("jobs.p").unwrap();
    let far = crate::ids::now_ms() + 7_200_000;
    {
        let s = open(dir.path(), EmbeddedOptions::default());
        assert_eq!(
            s.lease(&b, Offset(0), std::time::Duration::ZERO).unwrap(),
            1
        );
        assert_eq!(
            s.lease(&b, Offset(1), std::time::Duration::from_secs(3600))
                .unwrap(),
            1
        );
        assert_eq!(
            s.lease(&b, Offset(2), std::time::Duration::ZERO).unwrap(),
            1
        );
        assert_eq!(
            s.expired_leases(&b, crate::ids::now_ms()),
            [Offset(0), Offset(2)],
            "expired: due again"
        );
        assert_eq!(s.expired_leases(&b, far), [Offset(0), Offset(1), Offset(2)]);
        s.commit(Commit {
            acks: vec![(b.clone(), Offset(2))],
            ..Commit::default()
        })
        .unwrap();
        assert_eq!(
            s.expired_leases(&b, far),
            [Offset(0), Offset(1)],
            "an ack releases its lease"
        );
        assert_eq!(
            s.lease(&b, Offset(0), std::time::Duration::from_secs(3600))
                .unwrap(),
            2,
            "a redelivery"
        );
        assert_eq!(
            s.expired_leases(&b, crate::ids::now_ms()),
            Vec::<Offset>::new()
        );
    }
    let s = open(dir.path(), EmbeddedOptions::default());
    assert!(
        s.expired_leases(&b, far).is_empty(),
        "a restart voids leases: their holders are gone"
    );
    assert!(
        !s.is_acked(&b, Offset(0)) && !s.is_acked(&b, Offset(1)),
        "unacknowledged offsets are due again"
    );
    assert_eq!(
        s.lease(&b, Offset(0), std::time::Duration::ZERO).unwrap(),
        3,
        "counts survive"
    );
}

#[test]
fn internal_cursors_advance_durably_through_journal_and_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let binding = BindingName::new("orders.p").unwrap();
    let redrive = binding.redrive_cursor(&dest("orders.p.dlq"));
    let options = EmbeddedOptions {
        snapshot_bytes: 16 << 10,
        ..EmbeddedOptions::default()
    };
    {
        let s = open(dir.path(), options.clone());
        s.advance_cursor(&redrive, Offset(4)).unwrap();
        s.advance_cursor(&redrive, Offset(2)).unwrap();
        assert_eq!(s.cursor(&redrive), Offset(4), "never goes back");
        assert_eq!(
            s.cursor(&binding),
            Offset(0),
            "the binding's cursor is apart"
        );
    }
    {
        let s = open(dir.path(), options.clone());
        assert_eq!(s.cursor(&redrive), Offset(4), "from the journal");
        // Enough commits to snapshot the state (internal name included) and trim the journal.
        for n in 0..1000 {
            commit(&s, n).unwrap();
        }
        s.advance_cursor(&redrive, Offset(9)).unwrap();
        for n in 1000..1500 {
            commit(&s, n).unwrap();
        }
        assert!(dir.path().join("state/snapshot").is_file());
    }
    let s = open(dir.path(), options);
    assert_eq!(s.cursor(&redrive), Offset(9));
    assert_eq!(s.cursor(&binding), Offset(1500));
}

#[test]
fn publishes_a_crash_cut_off_after_their_commit_was_durable_are_appended_on_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let binding = BindingName::new("orders.p").unwrap();
    let plugin = PluginName::new("p").unwrap();
    let segment = dir.path().join("logs/out").join("00000000000000000000.log");
    {
        let s = open(dir.path(), EmbeddedOptions::default());
        commit(&s, 0).unwrap();
        commit(&s, 1).unwrap();
    }
    let kept = std::fs::metadata(&segment).unwrap().len();
    {
        let s = open(dir.path(), EmbeddedOptions::default());
        commit(&s, 2).unwrap();
        commit(&s, 3).unwrap();
    }
    // The crash: the journal reached the disk, commits 2 and 3's published records did not.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    f.set_len(kept).unwrap();
    drop(f);
    let check = |s: &EmbeddedStorage| {
        let out: Vec<String> = s
            .read(&dest("out"), Offset(0), 10)
            .unwrap()
            .iter()
            .map(|r| r.record.id.clone())
            .collect();
        assert_eq!(
            out,
            ["out-0", "out-1", "out-2", "out-3"],
            "each once, in order"
        );
        assert_eq!(s.cursor(&binding), Offset(4), "nothing is delivered again");
        assert_eq!(
            s.kv_get(&plugin, "count"),
            Some(3u64.to_le_bytes().to_vec())
        );
    };
    check(&open(dir.path(), EmbeddedOptions::default()));
    // Recovered once: opening again appends nothing more.
    check(&open(dir.path(), EmbeddedOptions::default()));
}

#[test]
fn a_crash_between_the_journal_record_and_its_outbox_loses_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let binding = BindingName::new("orders.p").unwrap();
    let plugin = PluginName::new("p").unwrap();
    {
        let s = open(
            dir.path(),
            EmbeddedOptions {
                outbox_stall_after: Some(2),
                ..EmbeddedOptions::default()
            },
        );
        assert_eq!(commit(&s, 0).unwrap(), [Offset(0)]);
        // Its journal record is durable, then the outbox stops before appending its publish.
        assert!(commit(&s, 1).is_err());
        assert_eq!(s.read(&dest("out"), Offset(0), 10).unwrap().len(), 1);
        assert!(
            commit(&s, 2).is_err(),
            "nothing commits after the outbox stopped"
        );
    }
    let s = open(dir.path(), EmbeddedOptions::default());
    let out: Vec<String> = s
        .read(&dest("out"), Offset(0), 10)
        .unwrap()
        .iter()
        .map(|r| r.record.as_ref().id.clone())
        .collect();
    // Commit 2's journal record may or may not have been written before the outbox stopped;
    // either way its output exists exactly when its acknowledgement does.
    let acked = s.cursor(&binding).0;
    assert!((2..=3).contains(&acked), "{acked}");
    let want: Vec<String> = (0..acked).map(|n| format!("out-{n}")).collect();
    assert_eq!(out, want);
    assert_eq!(
        s.kv_get(&plugin, "count"),
        Some((acked - 1).to_le_bytes().to_vec())
    );
    assert_eq!(
        s.read(&dest("out"), Offset(0), 10).unwrap()[1]
            .record
            .as_ref(),
        &record("out-1")
    );
    assert_eq!(commit(&s, acked).unwrap(), [Offset(acked)]);
}

#[test]
fn a_legacy_commit_whose_publishes_were_lost_is_discarded_with_everything_after_it() {
    // Journals written before the outbox say where a commit's publishes end (`Published`).
    let dir = tempfile::tempdir().unwrap();
    let binding = BindingName::new("orders.p").unwrap();
    let plugin = PluginName::new("p").unwrap();
    {
        let s = open(dir.path(), EmbeddedOptions::default());
        commit(&s, 0).unwrap();
        commit(&s, 1).unwrap();
        // Commit 2 as the old format wrote it, its publish (ending at 3) lost in the crash.
        let mut payload = Vec::new();
        state::encode_published(&mut payload, &dest("out"), Offset(3));
        state::encode_kv(&mut payload, &plugin, "count", Some(&2u64.to_le_bytes()));
        state::encode_ack(&mut payload, &binding, Offset(2));
        let ops = state::decode(&payload).unwrap();
        s.journal_ops(s.lock_state(), payload, ops)
            .unwrap()
            .wait()
            .unwrap();
        // A later record that carries only a delivery count: a fact, kept.
        assert_eq!(s.begin_deliveries(&binding, &[Offset(7)]).unwrap(), [1]);
        // And one with effects that may have read what commit 2 wrote: discarded.
        s.commit(Commit {
            kv: Some((plugin.clone(), vec![("after".into(), Some(vec![1]))])),
            ..Commit::default()
        })
        .unwrap();
    }
    {
        let s = open(dir.path(), EmbeddedOptions::default());
        assert_eq!(s.read(&dest("out"), Offset(0), 10).unwrap().len(), 2);
        assert_eq!(
            s.cursor(&binding),
            Offset(2),
            "message 2 is delivered again"
        );
        assert_eq!(
            s.kv_get(&plugin, "count"),
            Some(1u64.to_le_bytes().to_vec())
        );
        assert_eq!(s.kv_get(&plugin, "after"), None);
        assert_eq!(s.begin_deliveries(&binding, &[Offset(7)]).unwrap(), [2]);
        // Handled again, it commits as if the first time.
        assert_eq!(commit(&s, 2).unwrap(), [Offset(2)]);
    }
    // The decision is final: the discarded records are not checked again against the log,
    // which has grown back past their ends.
    let s = open(dir.path(), EmbeddedOptions::default());
    assert_eq!(s.cursor(&binding), Offset(3));
    assert_eq!(s.kv_get(&plugin, "after"), None);
    assert_eq!(s.read(&dest("out"), Offset(0), 10).unwrap().len(), 3);
}

#[test]
fn dedup_commits_store_a_redelivered_publish_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), EmbeddedOptions::default());
    let publish = |id: &str| Commit {
        publishes: vec![(dest("out"), record(id))],
        dedup: true,
        ..Commit::default()
    };
    assert_eq!(s.commit(publish("b@4#0")).unwrap(), [Offset(0)]);
    assert_eq!(s.commit(publish("b@5#0")).unwrap(), [Offset(1)]);
    assert_eq!(
        s.commit(publish("b@4#0")).unwrap(),
        [Offset(0)],
        "the original"
    );
    assert_eq!(s.read(&dest("out"), Offset(0), 10).unwrap().len(), 2);
}

#[test]
fn a_commit_with_a_record_no_log_can_store_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = PluginName::new("p").unwrap();
    let binding = BindingName::new("orders.p").unwrap();
    let s = open(dir.path(), EmbeddedOptions::default());
    let mut bad = record("bad");
    bad.key = Some("k".repeat(70_000));
    for acks in [Vec::new(), vec![(binding.clone(), Offset(0))]] {
        let refused = s.commit(Commit {
            kv: Some((plugin.clone(), vec![("k".into(), Some(vec![1]))])),
            publishes: vec![(dest("orders"), record("fine")), (dest("out"), bad.clone())],
            acks,
            dedup: false,
        });
        assert!(matches!(refused, Err(StorageError::Log(_))), "{refused:?}");
    }
    assert!(
        s.read(&dest("orders"), Offset(0), 10).unwrap().is_empty(),
        "nothing appended"
    );
    assert_eq!(s.kv_get(&plugin, "k"), None, "nothing journaled");
    assert_eq!(s.cursor(&binding), Offset(0));
    drop(s);
    // Nothing for recovery to append either.
    let s = open(dir.path(), EmbeddedOptions::default());
    assert!(s.read(&dest("out"), Offset(0), 10).unwrap().is_empty());
}

#[test]
fn a_panic_holding_the_state_stops_the_store_for_writes() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), EmbeddedOptions::default());
    commit(&s, 0).unwrap();
    let panicked = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let _held = s.lock_state();
                panic!("a bug while the state is held");
            })
            .join()
    });
    assert!(panicked.is_err());
    let refused = commit(&s, 1).unwrap_err();
    assert!(
        refused.to_string().contains("half-changed by a panic"),
        "{refused}"
    );
    let binding = BindingName::new("orders.p").unwrap();
    assert!(s.begin_deliveries(&binding, &[Offset(5)]).is_err());
    // Reads go on; after a restart the journal is whole.
    assert_eq!(s.cursor(&binding), Offset(1));
    drop(s);
    let s = open(dir.path(), EmbeddedOptions::default());
    assert_eq!(commit(&s, 1).unwrap(), [Offset(1)]);
}
