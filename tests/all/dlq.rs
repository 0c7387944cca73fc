//! Dead letters through the real binary: listed and shown over HTTP and the CLI, redriven back to
//! the source exactly once, across restarts.

use std::path::Path;

use serde_json::{Value, json};

use crate::support::{Server, plugin_toml, weir};

/// Queue `jobs` consumed by binding `work` running `plugin` (both `fail` and `noop` declared).
fn config(plugin: &str, max_attempts: u32) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[queues.jobs]\n{}{}\n[[bindings]]\nname = \"work\"\nsource = \"jobs\"\nplugin = \"{plugin}\"\nmax_attempts = {max_attempts}\nordering = \"fifo\"\n",
        plugin_toml("fail", ""),
        plugin_toml("noop", ""),
    )
}

/// Runs a `weir` client command against `server`; asserts success and parses `--json` output.
fn weir_json(server: &Server, args: &[&str], dir: &Path) -> Value {
    let mut all = args.to_vec();
    all.extend(["--json", "--server", &server.url]);
    let (code, out, err) = weir(&all, dir);
    assert_eq!(code, 0, "weir {args:?}: {err}");
    assert_eq!(out.lines().count(), 1, "one JSON object: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("weir {args:?}: {e}: {out}"))
}

fn header<'v>(headers: &'v Value, name: &str) -> Option<&'v str> {
    headers
        .as_array()?
        .iter()
        .find(|h| h[0] == name)
        .and_then(|h| h[1].as_str())
}

fn offsets(list: &Value) -> Vec<u64> {
    list["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["offset"].as_u64().unwrap())
        .collect()
}

#[test]
fn dead_letters_are_listed_and_shown_over_http_and_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &config("fail", 2));
    server.publish(
        "jobs",
        "alpha",
        &[("weir-key", "k1"), ("weir-header-trace", "t0")],
    );
    server.publish("jobs", "beta", &[("weir-header-retryable", "true")]);
    server.publish("jobs", "gamma", &[]);
    server.wait_binding("work", "dead_lettered", 3);

    let (status, list) = server.get("/v1/bindings/work/dlq");
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["dead_letter_queue"], "work.dlq");
    assert_eq!(
        (&list["redrive_cursor"], &list["next"], &list["end"]),
        (&json!(0), &json!(3), &json!(3))
    );
    let alpha = &list["dead_letters"][0];
    assert_eq!(
        (
            &alpha["offset"],
            &alpha["source_offset"],
            &alpha["attempts"],
            &alpha["class"],
            &alpha["reason"]
        ),
        (
            &json!(0),
            &json!(0),
            &json!(1),
            &json!("handler-error"),
            &json!("fail plugin always fails")
        ),
        "not retryable: dead-lettered on the first attempt"
    );
    assert_eq!(alpha["key"], "k1");
    assert_eq!(alpha["payload"], "alpha");
    assert_eq!(alpha["headers"], json!([["trace", "t0"]]), "no weir-dlq-*");
    let beta = &list["dead_letters"][1];
    assert_eq!(beta["attempts"], 2, "retryable: retried up to max_attempts");
    assert_eq!(beta["payload"], "beta");

    // Paging.
    let (_, page) = server.get("/v1/bindings/work/dlq?from=1&limit=1");
    assert_eq!((offsets(&page), &page["next"]), (vec![1], &json!(2)));

    let (status, gamma) = server.get("/v1/bindings/work/dlq/2");
    assert_eq!(status, 200, "{gamma}");
    assert_eq!(
        (
            &gamma["payload"],
            &gamma["source_offset"],
            &gamma["redriven"]
        ),
        (&json!("gamma"), &json!(2), &json!(false))
    );

    // Errors: a status and a stable code.
    for (path, status, code) in [
        ("/v1/bindings/nobody/dlq", 404, "unknown_binding"),
        ("/v1/bindings/nobody/dlq/0", 404, "unknown_binding"),
        ("/v1/bindings/work/dlq/3", 404, "dead_letter_not_found"),
        ("/v1/bindings/work/dlq/x", 400, "invalid_path"),
        ("/v1/bindings/bad%20name/dlq", 400, "invalid_name"),
        ("/v1/bindings/work/dlq?limit=-1", 400, "invalid_query"),
    ] {
        let (got, body) = server.get(path);
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
    }
    let (got, body) = server.post("/v1/bindings/nobody/dlq/redrive", b"", &[]);
    assert_eq!(
        (got, &body["error"]["code"]),
        (404, &json!("unknown_binding"))
    );

    // The CLI: `--json` is the server's answer, the table is for people.
    let cli_list = weir_json(&server, &["dlq", "list", "work"], dir.path());
    assert_eq!(cli_list, list);
    let cli_beta = weir_json(&server, &["dlq", "show", "work", "1"], dir.path());
    assert_eq!(
        (&cli_beta["attempts"], &cli_beta["payload"]),
        (&json!(2), &json!("beta"))
    );

    let (code, out, err) = weir(
        &["dlq", "list", "work", "--server", &server.url],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0]
            .split_whitespace()
            .eq(["OFFSET", "ATTEMPTS", "CLASS", "REASON", "PAYLOAD"])
    );
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(row[..3], ["1", "2", "handler-error"], "{out}");
    assert_eq!(row.last(), Some(&"beta"), "{out}");

    let (code, out, err) = weir(
        &["dlq", "show", "work", "0", "--server", &server.url],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("reason         fail plugin always fails\n"),
        "{out}"
    );
    assert!(out.contains("header         trace=t0\n"), "{out}");

    let (code, _, err) = weir(
        &["dlq", "show", "nobody", "0", "--server", &server.url],
        dir.path(),
    );
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        "error: no binding named `nobody` (unknown_binding, HTTP 404)"
    );
}

#[test]
fn redrive_sends_dead_letters_back_once_even_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &config("fail", 1));
    for (payload, key) in [("a", "ka"), ("b", "kb"), ("c", "kc"), ("d", "kd")] {
        server.publish(
            "jobs",
            payload,
            &[("weir-key", key), ("weir-header-trace", payload)],
        );
    }
    server.wait_binding("work", "dead_lettered", 4);

    // One redriven: it is delivered again, fails again, and is dead-lettered again.
    let done = weir_json(
        &server,
        &["dlq", "redrive", "work", "--limit", "1"],
        dir.path(),
    );
    assert_eq!(
        (&done["redriven"], &done["redrive_cursor"]),
        (&json!(1), &json!(1))
    );
    let stats = server.wait_binding("work", "dead_lettered", 5);
    assert_eq!(stats["destinations"]["jobs"]["messages"], 5);
    let (_, jobs) = server.get("/v1/destinations/jobs/messages?from=4");
    let copy = &jobs["messages"][0];
    assert_eq!(
        (&copy["payload"], &copy["key"]),
        (&json!("a"), &json!("ka"))
    );
    assert_eq!(
        copy["headers"],
        json!([["trace", "a"], ["weir-redriven-from", "work.dlq@0"]]),
        "the original headers, no weir-dlq-*"
    );
    let (_, list) = server.get("/v1/bindings/work/dlq");
    assert_eq!(offsets(&list), [1, 2, 3, 4]);
    let again = &list["dead_letters"][3];
    assert_eq!(again["source_offset"], 4);
    assert_eq!(
        header(&again["headers"], "weir-redriven-from"),
        Some("work.dlq@0")
    );
    server.stop();

    // The handler is fixed: the same binding now runs `noop`. The redrive cursor survived.
    std::fs::write(dir.path().join("weir.toml"), config("noop", 1)).unwrap();
    let server = Server::start_existing(dir.path());
    let (_, list) = server.get("/v1/bindings/work/dlq");
    assert_eq!(
        offsets(&list),
        [1, 2, 3, 4],
        "nothing redriven twice after a restart"
    );
    let (status, done) = server.post("/v1/bindings/work/dlq/redrive", b"", &[]);
    assert_eq!(status, 200, "{done}");
    assert_eq!(
        (&done["redriven"], &done["source"]),
        (&json!(4), &json!("jobs"))
    );
    let stats = server.wait_binding("work", "acked", 4);
    assert_eq!(stats["bindings"]["work"]["dead_lettered"], 0);
    assert_eq!(stats["destinations"]["jobs"]["messages"], 9);
    let (_, jobs) = server.get("/v1/destinations/jobs/messages?from=5");
    let redriven: Vec<(&str, Option<&str>)> = jobs["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["payload"].as_str().unwrap(),
                header(&m["headers"], "weir-redriven-from"),
            )
        })
        .collect();
    assert_eq!(
        redriven,
        [
            ("b", Some("work.dlq@1")),
            ("c", Some("work.dlq@2")),
            ("d", Some("work.dlq@3")),
            ("a", Some("work.dlq@4")),
        ]
    );
    let (_, list) = server.get("/v1/bindings/work/dlq");
    assert_eq!(
        (offsets(&list).len(), &list["redrive_cursor"]),
        (0, &json!(5))
    );
    let (_, dlq) = server.get("/v1/destinations/work.dlq/messages");
    assert_eq!(
        dlq["messages"].as_array().unwrap().len(),
        5,
        "the queue keeps its records"
    );
    let (_, shown) = server.get("/v1/bindings/work/dlq/0");
    assert_eq!(shown["redriven"], true);
    let (code, out, err) = weir(
        &["dlq", "list", "work", "--server", &server.url],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "no dead letters of `work` waiting in `work.dlq`\n");
    server.stop();

    // And after another restart, a redrive finds nothing left to send.
    let server = Server::start_existing(dir.path());
    let (code, out, err) = weir(
        &["dlq", "redrive", "work", "--server", &server.url],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "redrove 0 dead letters of `work` to `jobs`\n");
    let stats = server.stats();
    assert_eq!(stats["destinations"]["jobs"]["messages"], 9);
    assert_eq!(stats["bindings"]["work"]["lag"], 0);
    assert_eq!(
        stats["bindings"]["work"]["invocations"], 0,
        "nothing delivered again"
    );
}
