//! Plugin versions on `broker.kind = "nats"` through real processes: a version deployed to one
//! host reaches every host, so does a rollback (by command and automatic), a host started
//! later comes up on the cluster's version, a refused deploy changes nothing anywhere, and two
//! deploys at once end with every host on the same version.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use serde_json::Value;

use crate::nats_support::Cluster;
use crate::reload::tagged;
use crate::support::{Server, plugin, wait_for};

const WAIT: Duration = Duration::from_secs(60);

fn config(cluster: &Cluster) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [broker]\nkind = \"nats\"\n[broker.nats]\n{}\npartitions = 4\nlease = \"2s\"\n\
         [queues.in]\n[queues.out]\n\
         [plugins.p]\npath = \"p.wasm\"\npublish = [\"out\"]\n\
         [[bindings]]\nsource = \"in\"\nplugin = \"p\"\nmax_attempts = 2\n",
        cluster.servers_toml()
    )
}

/// A host in a directory of its own, its configured file the tagger with tag `aaaaaaaa`.
fn host(cluster: &Cluster) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.wasm"), tagged("aaaaaaaa")).unwrap();
    let server = Server::start(dir.path(), &config(cluster));
    (dir, server)
}

fn sha256(bytes: &[u8]) -> String {
    weir::host::content_hash(bytes)
}

fn view(s: &Server) -> Value {
    let (status, body) = s.get("/v1/plugins/p");
    assert_eq!(status, 200, "{body}");
    body
}

fn version_of<'a>(view: &'a Value, sha: &str) -> Option<&'a Value> {
    view["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["sha256"] == sha)
}

fn active_sha(view: &Value) -> String {
    let active = &view["active"];
    view["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| &v["version"] == active)
        .map(|v| v["sha256"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Waits until every host's active version has this content.
fn wait_active(servers: &[&Server], sha: &str, what: &str) {
    for s in servers {
        wait_for(&format!("{what} to be active on {}", s.url), WAIT, || {
            (active_sha(&view(s)) == sha).then_some(())
        });
    }
}

/// Waits until both hosts hold binding partitions.
fn wait_spread(servers: &[&Server]) {
    wait_for("both hosts to hold partitions", WAIT, || {
        servers
            .iter()
            .all(|s| s.stderr().contains("took a partition over"))
            .then_some(())
    });
}

/// Publishes `n` messages with keys `<label>-<i>` (spread over the partitions, so over the
/// hosts) through the hosts in turn, and returns the tag of each one's output.
fn round(servers: &[&Server], label: &str, n: usize) -> BTreeMap<String, String> {
    for i in 0..n {
        let key = format!("{label}-{i}");
        servers[i % servers.len()].publish("in", &key, &[("weir-key", &key)]);
    }
    wait_for(&format!("the {n} outputs of round {label}"), WAIT, || {
        let mut tags = BTreeMap::new();
        let mut from = 0;
        loop {
            let (status, body) = servers[0].get(&format!(
                "/v1/destinations/out/messages?from={from}&limit=1000"
            ));
            assert_eq!(status, 200, "{body}");
            let page = body["messages"].as_array().unwrap().clone();
            if page.is_empty() {
                break;
            }
            from = body["next"].as_u64().unwrap();
            for m in page {
                let text = m["payload"].as_str().unwrap();
                let (tag, payload) = text.split_once('|').unwrap();
                if payload.starts_with(&format!("{label}-")) {
                    tags.insert(payload.to_owned(), tag.to_owned());
                }
            }
        }
        (tags.len() == n).then_some(tags)
    })
}

fn assert_all_tagged(tags: &BTreeMap<String, String>, tag: &str) {
    let other: Vec<_> = tags.iter().filter(|(_, t)| *t != tag).collect();
    assert!(other.is_empty(), "outputs not from `{tag}`: {other:?}");
}

fn invocations(s: &Server, sha: &str) -> u64 {
    let v = view(s);
    version_of(&v, sha).map_or(0, |v| v["invocations"].as_u64().unwrap())
}

#[test]
fn a_deploy_and_a_rollback_on_one_host_reach_every_host_and_a_later_host_starts_on_them() {
    let cluster = Cluster::start();
    let (da, a) = host(&cluster);
    let (_db, b) = host(&cluster);
    wait_spread(&[&a, &b]);
    let (va, vb, vc) = (tagged("aaaaaaaa"), tagged("bbbbbbbb"), tagged("cccccccc"));
    wait_active(&[&a, &b], &sha256(&va), "the configured file");
    assert_all_tagged(&round(&[&a, &b], "r1", 24), "aaaaaaaa");

    // Deployed to A: B activates it and runs it.
    let (status, body) = a.post("/v1/plugins/p/versions", &vb, &[]);
    assert_eq!(status, 201, "{body}");
    wait_active(&[&a, &b], &sha256(&vb), "the version deployed to A");
    assert_all_tagged(&round(&[&a, &b], "r2", 24), "bbbbbbbb");
    for s in [&a, &b] {
        assert!(
            invocations(s, &sha256(&vb)) > 0,
            "{} ran the new version: {}",
            s.url,
            view(s)
        );
    }

    // Rolled back on B: A follows, and lists the rolled-back version as such.
    let (status, body) = b.post("/v1/plugins/p/rollback", b"", &[]);
    assert_eq!(status, 200, "{body}");
    wait_active(&[&a, &b], &sha256(&va), "the version rolled back to on B");
    assert_all_tagged(&round(&[&a, &b], "r3", 24), "aaaaaaaa");
    let on_a = view(&a);
    let rolled = version_of(&on_a, &sha256(&vb)).unwrap();
    assert_eq!(rolled["state"], "rolled-back", "{on_a}");

    // A component refused by the host it was sent to is not stored nor named anywhere.
    let bad = b"\0asm\x0d\x00\x01\x00";
    let (status, body) = a.post("/v1/plugins/p/versions", bad, &[]);
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_plugin", "{body}");

    // Deployed to B; a host started afterwards (its configured file still `aaaaaaaa`) comes
    // up on it, fetched from the cluster, and runs it.
    let (status, body) = b.post("/v1/plugins/p/versions", &vc, &[]);
    assert_eq!(status, 201, "{body}");
    wait_active(&[&a, &b], &sha256(&vc), "the version deployed to B");
    let (_dc, c) = host(&cluster);
    let on_c = view(&c);
    assert_eq!(active_sha(&on_c), sha256(&vc), "{on_c}");
    assert_all_tagged(&round(&[&a, &b, &c], "r4", 24), "cccccccc");
    for s in [&a, &b, &c] {
        let v = view(s);
        assert!(
            version_of(&v, &sha256(bad)).is_none(),
            "the refused component is no version on {}: {v}",
            s.url
        );
    }
    // A host that was down while a version was deployed comes up on it (not on its disk's).
    drop(a);
    let vd = tagged("dddddddd");
    let (status, body) = b.post("/v1/plugins/p/versions", &vd, &[]);
    assert_eq!(status, 201, "{body}");
    let a = Server::start_existing(da.path());
    assert_eq!(active_sha(&view(&a)), sha256(&vd), "{}", view(&a));
    // A configured file changed while its host was down is a deploy when it starts, as on one
    // host: every host takes it.
    drop(a);
    let ve = tagged("eeeeeeee");
    std::fs::write(da.path().join("p.wasm"), &ve).unwrap();
    let a = Server::start_existing(da.path());
    wait_active(&[&a, &b, &c], &sha256(&ve), "the changed configured file");
    assert_all_tagged(&round(&[&a, &b, &c], "r5", 24), "eeeeeeee");
}

#[test]
fn deploys_at_once_on_two_hosts_converge_and_an_automatic_rollback_reaches_every_host() {
    let cluster = Cluster::start();
    let (_da, a) = host(&cluster);
    let (_db, b) = host(&cluster);
    wait_spread(&[&a, &b]);
    let (vb, vc) = (tagged("bbbbbbbb"), tagged("cccccccc"));

    // Two deploys at once: the cluster's compare-and-set takes them one at a time, a loser is
    // refused with `version_changed`, and both hosts end on the same version.
    let barrier = Arc::new(Barrier::new(2));
    let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let deploys = [(&a, &vb), (&b, &vc)].map(|(s, bytes)| {
            let barrier = Arc::clone(&barrier);
            scope.spawn(move || {
                barrier.wait();
                s.post("/v1/plugins/p/versions", bytes, &[])
            })
        });
        deploys.map(|d| d.join().unwrap()).into()
    });
    eprintln!(
        "deploys at once answered {:?}",
        answers.iter().map(|(s, _)| *s).collect::<Vec<_>>()
    );
    for (status, body) in &answers {
        assert!(
            *status == 201 || (*status == 409 && body["error"]["code"] == "version_changed"),
            "{status} {body}"
        );
    }
    assert!(answers.iter().any(|(s, _)| *s == 201), "{answers:?}");
    let winner = wait_for("both hosts on the same version", WAIT, || {
        let (sa, sb) = (active_sha(&view(&a)), active_sha(&view(&b)));
        (sa == sb && (sa == sha256(&vb) || sa == sha256(&vc))).then_some(sa)
    });
    let tag = if winner == sha256(&vb) {
        "bbbbbbbb"
    } else {
        "cccccccc"
    };
    if answers[0].0 == 409 {
        assert_eq!(tag, "cccccccc", "the refused deploy did not win");
    }
    if answers[1].0 == 409 {
        assert_eq!(tag, "bbbbbbbb", "the refused deploy did not win");
    }
    assert_all_tagged(&round(&[&a, &b], "r1", 24), tag);

    // A version that fails everything, deployed to A: whichever host's probation fails it
    // first rolls it back, and every host follows; the messages it failed run again on the
    // restored version.
    let trap = std::fs::read(plugin("trap")).unwrap();
    let (status, body) = a.post("/v1/plugins/p/versions", &trap, &[]);
    assert_eq!(status, 201, "{body}");
    wait_active(&[&a, &b], &sha256(&trap), "the failing version");
    assert_all_tagged(&round(&[&a, &b], "r2", 30), tag);
    wait_active(
        &[&a, &b],
        &winner,
        "the version restored by the automatic rollback",
    );
    for s in [&a, &b] {
        let v = view(s);
        let failed = version_of(&v, &sha256(&trap)).unwrap();
        assert_eq!(failed["state"], "rolled-back", "{v}");
        let reason = failed["rolled_back_reason"].as_str().unwrap_or_default();
        assert!(reason.contains("automatic"), "{v}");
    }
}
