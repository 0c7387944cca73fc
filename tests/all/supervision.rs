//! A binding that stops on an error is supervised, through the real binary: the error is logged
//! at once, the binding is reported down (`/v1/health` answers 503 naming it, `weir stats` and
//! `/metrics` show it) and it is restarted with a backoff, while every other binding goes on.

use std::time::Duration;

use crate::support::{Server, plugin_toml, wait_for};

fn config(bind_in: bool) -> String {
    let mut c = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[broker]\nsegment_size = \"1MiB\"\n\
         [queues.in]\n[queues.other]\n{}\
         [[bindings]]\nsource = \"other\"\nplugin = \"noop\"\n",
        plugin_toml("noop", "")
    );
    if bind_in {
        c.push_str("[[bindings]]\nsource = \"in\"\nplugin = \"noop\"\n");
    }
    c
}

#[test]
fn a_panicking_binding_is_logged_counted_and_restarted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("weir.toml"), config(true)).unwrap();
    let s = Server::start_with_env(dir.path(), &[], &[("WEIR_FAULT_BINDING_PANIC", "in.noop")]);
    for n in 0..20 {
        s.publish("in", &n.to_string(), &[]);
    }
    // Before supervision the binding's first run ended with the panic and nothing ran again.
    let stats = s.wait_binding("in.noop", "acked", 20);
    let b = &stats["bindings"]["in.noop"];
    assert_eq!(b["up"], true, "{b}");
    assert_eq!(b["restarts"], 1, "{b}");
    let error = b["last_error"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("panicked: injected"), "{b}");
    assert!(
        s.stderr().contains("binding stopped: panicked"),
        "{}",
        s.stderr()
    );
    let (status, health) = s.get("/v1/health");
    assert_eq!((status, &health["status"]), (200, &"ok".into()), "{health}");
    let (_, _, metrics) = crate::support::call("GET", &format!("{}/metrics", s.url), &[], b"");
    assert!(
        metrics.contains("weir_binding_restarts_total{binding=\"in.noop\",plugin=\"noop\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_binding_up{binding=\"in.noop\",plugin=\"noop\"} 1"),
        "{metrics}"
    );
    s.stop();
}

#[test]
fn a_binding_that_cannot_read_its_source_is_reported_down_and_the_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    // 20 messages of 64 KiB: more than the 1 MiB segment, so the first segment is sealed (and
    // not verified again on open: the read that meets the damage reports it).
    std::fs::write(dir.path().join("weir.toml"), config(false)).unwrap();
    let s = Server::start_existing(dir.path());
    let payload = "x".repeat(64 << 10);
    for _ in 0..20 {
        s.publish("in", &payload, &[]);
    }
    s.stop();
    let segment = first_segment(&dir.path().join(".weir"), "in");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[100_000] ^= 0xff;
    std::fs::write(&segment, bytes).unwrap();

    std::fs::write(dir.path().join("weir.toml"), config(true)).unwrap();
    let s = Server::start_existing(dir.path());
    // Before supervision `/v1/health` said ok and nothing was logged until shutdown.
    let health = wait_for(
        "health reports in.noop down",
        Duration::from_secs(30),
        || {
            let (status, body) = s.get("/v1/health");
            (status == 503).then_some(body)
        },
    );
    assert_eq!(health["status"], "unhealthy", "{health}");
    assert_eq!(health["bindings_down"], serde_json::json!(["in.noop"]));
    let b = wait_for("a restart", Duration::from_secs(30), || {
        let b = s.stats()["bindings"]["in.noop"].clone();
        (b["restarts"].as_u64() >= Some(1)).then_some(b)
    });
    let error = b["last_error"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("corrupt log"), "{b}");
    assert!(
        s.stderr().contains("binding stopped: corrupt log"),
        "{}",
        s.stderr()
    );
    // The other binding is not affected.
    s.publish("other", "fine", &[]);
    s.wait_binding("other.noop", "acked", 1);
    wait_for("weir_binding_up 0", Duration::from_secs(30), || {
        let (_, _, text) = crate::support::call("GET", &format!("{}/metrics", s.url), &[], b"");
        text.contains("weir_binding_up{binding=\"in.noop\",plugin=\"noop\"} 0")
            .then_some(())
    });
    let (code, out, err) = crate::support::weir(&["stats", "--server", &s.url], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("binding in.noop:"), "{out}");
    assert!(out.contains("corrupt log"), "{out}");
    s.stop();
}

/// The first segment file of a destination's log under `data_dir`.
fn first_segment(data_dir: &std::path::Path, dest: &str) -> std::path::PathBuf {
    let mut found = Vec::new();
    let mut dirs = vec![data_dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "log")
                && p.parent().unwrap().file_name().unwrap() == dest
            {
                found.push(p);
            }
        }
    }
    found.sort();
    assert!(found.len() >= 2, "a sealed segment of `{dest}`: {found:?}");
    found.remove(0)
}
