//! Hot reload through the real binary: file watching (three write patterns), refusals, swaps
//! under traffic, rollback by command and automatic, versions across a restart, concurrent
//! deploys, and reads that do not wait for a deploy's compile.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Server, call_json, orders_plugin, plugin, wait_for, weir};

const WAIT: Duration = Duration::from_secs(60);

/// The `tagger` example with its 8-byte tag set: a distinct version of the same plugin.
pub(crate) fn tagged(tag: &str) -> Vec<u8> {
    assert_eq!(tag.len(), 8);
    let mut bytes = std::fs::read(plugin("tagger")).unwrap();
    let marker = b"weir-tag:";
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("tagger has its marker")
        + marker.len();
    bytes[at..at + 8].copy_from_slice(tag.as_bytes());
    bytes
}

fn sha256(bytes: &[u8]) -> String {
    weir::host::content_hash(bytes)
}

/// A server whose plugin `p` (watched, at `dir/p.wasm`, tag `aaaaaaaa` to start) forwards
/// queue `in` to queue `out`.
fn start(dir: &Path, binding_extra: &str) -> Server {
    start_with(dir, "", binding_extra)
}

/// [`start`] with extra `[server]` settings.
fn start_with(dir: &Path, server_extra: &str, binding_extra: &str) -> Server {
    std::fs::write(dir.join("p.wasm"), tagged("aaaaaaaa")).unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server_extra}[queues.in]\n[queues.out]\n\
         [plugins.p]\npath = \"p.wasm\"\npublish = [\"out\"]\n\
         [[bindings]]\nsource = \"in\"\nplugin = \"p\"\n{binding_extra}"
    );
    Server::start(dir, &config)
}

fn plugin_view(server: &Server) -> Value {
    let (status, body) = server.get("/v1/plugins/p");
    assert_eq!(status, 200, "{body}");
    body
}

fn active_sha(view: &Value) -> String {
    let active = view["active"].as_u64().unwrap();
    view["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == active)
        .map(|v| v["sha256"].as_str().unwrap().to_owned())
        .unwrap()
}

/// Waits until the active version has this content and no file change is pending.
fn wait_active(server: &Server, sha: &str) -> Value {
    wait_for("the new version to be active", WAIT, || {
        let v = plugin_view(server);
        (active_sha(&v) == sha && v["pending_change"] == false).then_some(v)
    })
}

fn outputs(server: &Server) -> Vec<Value> {
    let mut all = Vec::new();
    loop {
        let (status, body) = server.get(&format!(
            "/v1/destinations/out/messages?from={}&limit=1000",
            all.len()
        ));
        assert_eq!(status, 200, "{body}");
        let page = body["messages"].as_array().unwrap().clone();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

/// Publishes one message and returns the tag its output carries.
fn tag_of_next_output(server: &Server, payload: &str) -> String {
    let before = outputs(server).len();
    server.publish("in", payload, &[]);
    let out = wait_for("the output", WAIT, || outputs(server).get(before).cloned());
    let text = out["payload"].as_str().unwrap();
    assert!(text.ends_with(&format!("|{payload}")), "{text}");
    text[..8].to_owned()
}

/// Writes `bytes` to `path` in pieces, the way a slow build tool does.
fn write_in_pieces(file: &mut std::fs::File, bytes: &[u8]) {
    for piece in bytes.chunks(bytes.len().div_ceil(6)) {
        file.write_all(piece).unwrap();
        file.flush().unwrap();
        // A writer that is not done yet: the watcher sees the partial file meanwhile.
        std::thread::sleep(Duration::from_millis(3));
    }
}

#[test]
fn each_write_pattern_reloads_exactly_once_with_the_complete_file() {
    let dir = tempfile::tempdir().unwrap();
    // The writers below pause between pieces; a long quiet period keeps a test machine's
    // scheduling hiccup from looking like a writer that stopped half-way.
    let server = start_with(dir.path(), "reload_quiet = \"5s\"\n", "");
    assert_eq!(tag_of_next_output(&server, "first"), "aaaaaaaa");
    let path = dir.path().join("p.wasm");

    // 1. In place: the file is opened without truncation, overwritten, then cut to length.
    let b = tagged("bbbbbbbb");
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    write_in_pieces(&mut f, &b);
    f.set_len(b.len() as u64).unwrap();
    drop(f);
    let v = wait_active(&server, &sha256(&b));
    assert_eq!(v["swaps"], 1, "one reload: {v}");
    assert_eq!(tag_of_next_output(&server, "in-place"), "bbbbbbbb");

    // 2. Truncate and write.
    let c = tagged("cccccccc");
    let mut f = std::fs::File::create(&path).unwrap();
    write_in_pieces(&mut f, &c);
    drop(f);
    let v = wait_active(&server, &sha256(&c));
    assert_eq!(v["swaps"], 2, "one reload: {v}");
    assert_eq!(tag_of_next_output(&server, "truncated"), "cccccccc");

    // 3. Written elsewhere and renamed into place.
    let d = tagged("dddddddd");
    let tmp = dir.path().join("p.wasm.partial");
    let mut f = std::fs::File::create(&tmp).unwrap();
    write_in_pieces(&mut f, &d);
    drop(f);
    std::fs::rename(&tmp, &path).unwrap();
    let v = wait_active(&server, &sha256(&d));
    assert_eq!(v["swaps"], 3, "one reload: {v}");
    assert_eq!(tag_of_next_output(&server, "renamed"), "dddddddd");

    // No partial file was ever refused, and each write made exactly one version.
    let v = plugin_view(&server);
    assert_eq!(v["refusals"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["versions"].as_array().unwrap().len(), 4, "{v}");
    assert_eq!(v["swaps"], 3, "{v}");
}

#[test]
fn invalid_truncated_and_wrong_world_files_are_refused_and_the_old_version_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "");
    let path = dir.path().join("p.wasm");
    let good = tagged("aaaaaaaa");
    let truncated = good[..good.len() / 2].to_vec();
    // A valid, empty component: it exports no `handler`.
    let wrong_world = b"\0asm\x0d\x00\x01\x00".to_vec();
    let not_wasm = b"#!/bin/sh\necho not a component\n".to_vec();
    let forbidden_import = std::fs::read(plugin("sneaky")).unwrap();
    let cases = [
        ("truncated", truncated, "not a valid WebAssembly component"),
        ("wrong world", wrong_world, "does not export a compatible"),
        ("not wasm", not_wasm, "is not a WebAssembly file"),
        (
            "forbidden import",
            forbidden_import,
            "which weir does not grant",
        ),
    ];
    for (i, (what, bytes, expected)) in cases.into_iter().enumerate() {
        let tmp = dir.path().join("next.wasm");
        std::fs::write(&tmp, &bytes).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let v = wait_for(&format!("the {what} file to be refused"), WAIT, || {
            let v = plugin_view(&server);
            (v["refusals"].as_array().unwrap().len() == i + 1).then_some(v)
        });
        let refusal = &v["refusals"][i];
        assert_eq!(refusal["sha256"], sha256(&bytes), "{what}: {v}");
        let error = refusal["error"].as_str().unwrap();
        assert!(error.contains(expected), "{what}: {error}");
        assert_eq!(v["active"], 1, "{what}: the old version stays: {v}");
        assert_eq!(v["swaps"], 0, "{what}: {v}");
        assert_eq!(tag_of_next_output(&server, what), "aaaaaaaa", "{what}");
    }
    // Uploads are checked the same way: 422 with a stable code, nothing changes.
    let (status, body) = server.post("/v1/plugins/p/versions", b"\0asm\x0d\x00\x01\x00", &[]);
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_plugin", "{body}");
    let v = plugin_view(&server);
    assert_eq!(
        (
            v["active"].as_u64(),
            v["versions"].as_array().unwrap().len()
        ),
        (Some(1), 1)
    );
    // `weir plugin list` shows the refusals.
    let (code, out, err) = weir(&["plugin", "list", "--server", &server.url], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("refused") && out.contains("does not export a compatible"),
        "{out}"
    );
    // They are still listed after a restart, and the refused file is not taken again.
    drop(server);
    let server = Server::start_existing(dir.path());
    let v = plugin_view(&server);
    assert_eq!(v["refusals"].as_array().unwrap().len(), 5, "{v}");
    assert_eq!(v["active"], 1, "{v}");
    assert_eq!(tag_of_next_output(&server, "restarted"), "aaaaaaaa");
}

#[test]
fn a_damaged_stored_version_is_replaced_by_the_configured_file_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "");
    let sha = active_sha(&plugin_view(&server));
    drop(server);
    let artifact = dir
        .path()
        .join(".weir/plugins/p")
        .join(format!("{sha}.wasm"));
    let bytes = std::fs::read(&artifact).unwrap();
    std::fs::write(&artifact, &bytes[..bytes.len() / 3]).unwrap();
    let server = Server::start_existing(dir.path());
    let v = plugin_view(&server);
    assert_eq!(
        (v["active"].as_u64(), active_sha(&v)),
        (Some(1), sha),
        "{v}"
    );
    assert_eq!(
        std::fs::read(&artifact).unwrap(),
        bytes,
        "the artifact is restored"
    );
    assert_eq!(tag_of_next_output(&server, "repaired"), "aaaaaaaa");
    assert!(
        server.stderr().contains("cannot be loaded"),
        "{}",
        server.stderr()
    );
}

#[test]
fn swaps_under_traffic_lose_nothing_double_nothing_and_keep_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        "guarantee = \"exactly-once\"\nordering = \"key\"\nconcurrency = 4\n",
    );
    let path = dir.path().join("p.wasm");
    let (events, keys) = (1200u64, 8u64);
    let url = server.url.clone();
    let publisher = std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        for i in 0..events {
            let (key, seq) = (format!("k{}", i % keys), i / keys);
            let resp = agent
                .post(format!("{url}/v1/destinations/in/messages"))
                .header("weir-key", &key)
                .send(format!("{key}|{seq}"))
                .unwrap();
            assert_eq!(resp.status().as_u16(), 201);
        }
    });
    // Swap back and forth while the publisher runs, each swap waiting for the version to be
    // active.
    let versions = [tagged("bbbbbbbb"), tagged("aaaaaaaa")];
    let mut swaps = 0;
    while !publisher.is_finished() || swaps < 4 {
        let bytes = &versions[swaps % 2];
        let tmp = dir.path().join("next.wasm");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        wait_active(&server, &sha256(bytes));
        swaps += 1;
    }
    publisher.join().unwrap();
    let all = wait_for("every output", WAIT, || {
        let all = outputs(&server);
        (all.len() as u64 >= events).then_some(all)
    });
    assert_eq!(all.len() as u64, events, "nothing doubled");
    let mut next_seq = vec![0u64; keys as usize];
    let mut tags = std::collections::BTreeSet::new();
    for out in &all {
        let text = out["payload"].as_str().unwrap();
        let parts: Vec<&str> = text.split('|').collect();
        tags.insert(parts[0].to_owned());
        let k: usize = parts[1][1..].parse().unwrap();
        let seq: u64 = parts[2].parse().unwrap();
        assert_eq!(seq, next_seq[k], "key k{k} in order, nothing lost: {text}");
        next_seq[k] += 1;
    }
    assert_eq!(tags.len(), 2, "both versions handled events: {tags:?}");
    let v = plugin_view(&server);
    assert_eq!(v["swaps"].as_u64(), Some(swaps as u64), "{v}");
}

#[test]
fn rollback_by_command_and_automatic_rollback_restore_the_previous_version_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        "guarantee = \"exactly-once\"\nmax_attempts = 2\n",
    );
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--server", server.url.as_str()]);
        let (code, out, err) = weir(&all, dir.path());
        assert_eq!(code, 0, "weir {args:?}: {err}");
        out
    };
    // Deploy by upload, then roll back by command.
    let b = dir.path().join("b.wasm");
    std::fs::write(&b, tagged("bbbbbbbb")).unwrap();
    let out = cli(&["plugin", "deploy", "p", b.to_str().unwrap()]);
    assert!(
        out.contains("version 2") && out.contains("compiled in"),
        "{out}"
    );
    assert_eq!(tag_of_next_output(&server, "on-2"), "bbbbbbbb");
    let out = cli(&["plugin", "rollback", "p"]);
    assert!(out.contains("back to version 1"), "{out}");
    assert_eq!(tag_of_next_output(&server, "back-on-1"), "aaaaaaaa");
    // Version 1 was loaded lately, so its compiled code came from memory.
    let stats = server.stats();
    assert_eq!(stats["plugins"]["p"]["loaded_from"], "memory", "{stats}");
    let out = cli(&["plugin", "rollback", "p", "2"]);
    assert!(out.contains("back to version 2"), "{out}");
    assert_eq!(tag_of_next_output(&server, "on-2-again"), "bbbbbbbb");

    // A version that fails everything is rolled back on its own after more than half of its
    // first 20 invocations failed; the messages it failed run again on the restored version
    // (its failures did not use up their 2 attempts), so none is dead-lettered.
    let trap = plugin("trap");
    let out = cli(&["plugin", "deploy", "p", trap.to_str().unwrap()]);
    assert!(out.contains("version 3"), "{out}");
    let before = outputs(&server).len();
    for i in 0..30 {
        server.publish("in", &format!("m{i}"), &[]);
    }
    let all = wait_for("30 more outputs", WAIT, || {
        let all = outputs(&server);
        (all.len() >= before + 30).then_some(all)
    });
    for out in &all[before..] {
        assert!(
            out["payload"].as_str().unwrap().starts_with("bbbbbbbb|"),
            "{out}"
        );
    }
    let listed: Value =
        serde_json::from_str(&cli(&["plugin", "list", "p", "--json"])).expect("--json parses");
    assert_eq!(listed["active"], 2, "{listed}");
    let v3 = &listed["versions"][2];
    assert_eq!(v3["state"], "rolled-back", "{listed}");
    assert!(
        v3["rolled_back_reason"]
            .as_str()
            .unwrap()
            .contains("automatic"),
        "{listed}"
    );
    assert!(v3["failures"].as_u64().unwrap() >= 11, "{listed}");
    assert_eq!(listed["rollbacks"], 3, "{listed}");
    let stats = server.stats();
    assert_eq!(stats["bindings"]["in.p"]["dead_lettered"], 0, "{stats}");
    let metrics = ureq::get(format!("{}/metrics", server.url))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    for line in [
        "weir_plugin_rollbacks_total{plugin=\"p\"} 3",
        "weir_plugin_swaps_total{plugin=\"p\"} 5",
        "weir_plugin_info{plugin=\"p\",version=\"2\",",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }

    // Versions, the active one and rollback history survive a restart (the configured file
    // did not change, so the stored active version serves).
    drop(server);
    let server = Server::start_existing(dir.path());
    let v = plugin_view(&server);
    assert_eq!(v["active"], 2, "{v}");
    let states: Vec<&str> = v["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["rolled-back", "active", "rolled-back"], "{v}");
    assert_eq!(tag_of_next_output(&server, "after-restart"), "bbbbbbbb");
    // A file changed while the server was down is taken at start.
    drop(server);
    std::fs::write(dir.path().join("p.wasm"), tagged("eeeeeeee")).unwrap();
    let server = Server::start_existing(dir.path());
    let v = plugin_view(&server);
    assert_eq!(v["active"], 4, "{v}");
    assert_eq!(
        tag_of_next_output(&server, "changed-while-down"),
        "eeeeeeee"
    );
}

/// Uploads every body as a new version of `p` at once; returns each answer in order.
fn deploy_at_once(server: &Server, bodies: Vec<Vec<u8>>) -> Vec<(u16, Value)> {
    let start = Arc::new(Barrier::new(bodies.len()));
    let url = format!("{}/v1/plugins/p/versions", server.url);
    let threads: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let (start, url) = (Arc::clone(&start), url.clone());
            std::thread::spawn(move || {
                start.wait();
                call_json("POST", &url, &[], &body)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn concurrent_deploys_of_one_plugin_are_applied_one_after_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "");
    // The same content four times: one deploy swaps it in, the others find it active.
    let b = tagged("bbbbbbbb");
    let answers = deploy_at_once(&server, vec![b.clone(), b.clone(), b.clone(), b]);
    let mut statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 201], "{answers:?}");
    for (_, body) in &answers {
        assert_eq!(body["version"]["version"], 2, "{body}");
    }
    let v = plugin_view(&server);
    assert_eq!(v["versions"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(
        (v["active"].as_u64(), v["swaps"].as_u64()),
        (Some(2), Some(1)),
        "{v}"
    );

    // Two different ones: both recorded, one after the other; the later is active, with the
    // earlier as its previous version.
    let answers = deploy_at_once(&server, vec![tagged("cccccccc"), tagged("dddddddd")]);
    for (status, body) in &answers {
        assert_eq!(*status, 201, "{body}");
    }
    let mut seqs: Vec<u64> = answers
        .iter()
        .map(|(_, body)| body["version"]["version"].as_u64().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, [3, 4], "{answers:?}");
    let v = plugin_view(&server);
    assert_eq!(
        (v["active"].as_u64(), v["swaps"].as_u64()),
        (Some(4), Some(3)),
        "{v}"
    );
    let versions = v["versions"].as_array().unwrap();
    assert_eq!(versions[3]["previous"], 3, "{v}");
    assert_eq!(versions[2]["previous"], 2, "{v}");
    let last = if versions[3]["sha256"] == sha256(&tagged("dddddddd")) {
        "dddddddd"
    } else {
        "cccccccc"
    };
    assert_eq!(tag_of_next_output(&server, "after-both"), last);
}

#[test]
fn metrics_and_the_plugin_list_answer_while_a_deploy_compiles() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.wasm"), tagged("aaaaaaaa")).unwrap();
    let config = "[server]\nlisten = \"127.0.0.1:0\"\n[queues.in]\n[queues.out]\n\
         [plugins.p]\npath = \"p.wasm\"\npublish = [\"out\"]\nmemory = \"64MiB\"\n\
         [[bindings]]\nsource = \"in\"\nplugin = \"p\"\n";
    let server = Server::start(dir.path(), config);
    // The Python plugin: tens of MiB of interpreter, seconds to compile.
    let python = std::fs::read(orders_plugin("orders-py")).unwrap();
    let url = format!("{}/v1/plugins/p/versions", server.url);
    let deploy = std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(600)))
            .build()
            .into();
        let mut resp = agent
            .post(&url)
            .send(&python[..])
            .expect("the deploy request");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str::<Value>(&text).unwrap())
    });
    wait_for("the deploy to start loading", WAIT, || {
        server
            .stderr()
            .contains("loading a new plugin version")
            .then_some(())
    });
    let started = Instant::now();
    let metrics = ureq::get(format!("{}/metrics", server.url))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let scrape = started.elapsed();
    let started = Instant::now();
    let (listed_status, listed) = server.get("/v1/plugins");
    let listing = started.elapsed();
    let finished_before = deploy.is_finished();
    let (status, deployed) = deploy.join().unwrap();
    assert_eq!(status, 201, "{deployed}");
    assert_eq!(deployed["loaded_from"], "compiled", "{deployed}");
    let compile = Duration::from_secs_f64(deployed["load_ms"].as_f64().unwrap() / 1e3);
    for (what, took) in [("/metrics", scrape), ("GET /v1/plugins", listing)] {
        assert!(
            took < compile / 4,
            "{what} took {took:?} while the deploy's load took {compile:?}"
        );
    }
    assert!(
        !finished_before,
        "the deploy was still loading when both answered"
    );
    // Both showed the version serving meanwhile.
    assert_eq!(listed_status, 200, "{listed}");
    assert_eq!(listed["plugins"][0]["active"], 1, "{listed}");
    assert!(
        metrics.contains("weir_plugin_info{plugin=\"p\",version=\"1\","),
        "{metrics}"
    );
    assert_eq!(plugin_view(&server)["active"], 2);
}
