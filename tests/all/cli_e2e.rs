//! The `weir` CLI end to end, as an operator drives it: every subcommand has `--help`;
//! publish (inline, file, stdin; key, id, headers), tail (from an offset, a time, following),
//! request, replay, dlq, stats and check, each checked by its result and its `--json` parsed;
//! the API token; JSON logs with a span per invocation; config mistakes a new user makes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Server, plugin, plugin_toml, wait_for, weir, weir_bin, weir_with};

fn parse(out: &str) -> Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Every line of `out` as JSON.
fn lines(out: &str) -> Vec<Value> {
    out.lines().map(parse).collect()
}

#[test]
fn every_subcommand_has_help() {
    let dir = tempfile::tempdir().unwrap();
    let commands: &[&[&str]] = &[
        &[],
        &["run"],
        &["check"],
        &["publish"],
        &["request"],
        &["tail"],
        &["replay"],
        &["stats"],
        &["kv"],
        &["dlq"],
        &["dlq", "list"],
        &["dlq", "show"],
        &["dlq", "redrive"],
        &["bench"],
        &["bench", "invoke"],
        &["bench", "append"],
        &["bench", "e2e"],
        &["bench", "swap"],
        &["bench", "aggregate"],
        &["aggregate"],
        &["aggregate", "command"],
        &["aggregate", "deploy"],
        &["chaos"],
    ];
    for cmd in commands {
        let mut args = cmd.to_vec();
        args.push("--help");
        let (code, out, err) = weir(&args, dir.path());
        assert_eq!(code, 0, "weir {cmd:?} --help: {err}");
        assert!(out.contains("Usage: weir"), "weir {cmd:?} --help: {out}");
        assert!(out.contains("--help"), "{out}");
    }
}

fn config() -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[queues.orders]\n[queues.counts]\n[topics.events]\n[queues.doomed]\n{}{}{}\
         [[bindings]]\nsource = \"counts\"\nplugin = \"counter\"\n\
         [[bindings]]\nname = \"audit\"\nsource = \"events\"\nplugin = \"noop\"\n\
         [[bindings]]\nname = \"tally\"\nsource = \"events\"\nplugin = \"tallier\"\nguarantee = \"exactly-once\"\n\
         [[bindings]]\nname = \"doomed\"\nsource = \"doomed\"\nplugin = \"fail\"\nmax_attempts = 1\n",
        plugin_toml("counter", ""),
        plugin_toml("noop", ""),
        plugin_toml("fail", "")
    ) + &format!(
        "[plugins.tallier]\npath = {:?}\n",
        plugin("counter").display().to_string()
    )
}

/// The `count` of a plugin running the counter example.
fn kv_count(server: &Server, plugin: &str) -> u64 {
    let (_, kv) = server.get(&format!("/v1/plugins/{plugin}/kv?prefix=count"));
    let hex = kv["entries"][0]["value_hex"]
        .as_str()
        .unwrap_or("0000000000000000");
    let bytes: Vec<u8> = (0..8)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    u64::from_le_bytes(bytes.try_into().unwrap())
}

#[test]
fn publish_tail_request_replay_dlq_and_stats_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &config());
    let url = server.url.as_str();
    let d = dir.path();
    let run = |args: &[&str]| -> String {
        let mut all = args.to_vec();
        all.extend(["--server", url]);
        let (code, out, err) = weir(&all, d);
        assert_eq!(code, 0, "weir {args:?}: {err}");
        out
    };

    // Publish: inline with key, id and headers; from a file; from stdin.
    let p = parse(&run(&[
        "publish", "orders", "first", "--key", "k1", "--id", "id-1", "-H", "trace=t1", "-H", "n=2",
        "--json",
    ]));
    assert_eq!(
        (&p["offset"], &p["id"], &p["duplicate"]),
        (&json!(0), &json!("id-1"), &json!(false))
    );
    std::fs::write(d.join("payload.bin"), b"\x00\x01binary").unwrap();
    let p = parse(&run(&[
        "publish",
        "orders",
        "--file",
        "payload.bin",
        "--json",
    ]));
    assert_eq!(p["offset"], 1);
    let mut args = vec!["publish", "orders", "-", "--json", "--server", url];
    args.extend(["--key", "k2"]);
    let (code, out, err) = weir_with(&args, d, &[], b"from stdin\n");
    assert_eq!(code, 0, "{err}");
    assert_eq!(parse(&out)["offset"], 2);
    let again = parse(&run(&[
        "publish", "orders", "other", "--id", "id-1", "--json",
    ]));
    assert_eq!(
        (&again["offset"], &again["duplicate"]),
        (&json!(0), &json!(true))
    );

    // Tail: the whole document, one key, from a time.
    let page = parse(&run(&["tail", "orders", "--json"]));
    let m = page["messages"].as_array().unwrap();
    assert_eq!(m.len(), 3);
    assert_eq!(
        (&m[0]["payload"], &m[0]["key"], &m[0]["headers"]),
        (
            &json!("first"),
            &json!("k1"),
            &json!([["trace", "t1"], ["n", "2"]])
        )
    );
    assert_eq!(m[1]["payload_hex"], "000162696e617279");
    assert_eq!(m[2]["payload"], "from stdin\n");
    let text = run(&["tail", "orders", "--key", "k2"]);
    assert_eq!(text, "2 key=k2 from stdin\n\n");
    let text = run(&["tail", "orders", "--from", "1", "--limit", "1"]);
    assert_eq!(text, "1 <hex 000162696e617279>\n");
    let since_future = run(&["tail", "orders", "--since", "99999999999999", "--json"]);
    assert_eq!(parse(&since_future)["messages"], json!([]));
    let since_hour = parse(&run(&["tail", "orders", "--since", "1h", "--json"]));
    assert_eq!(since_hour["messages"].as_array().unwrap().len(), 3);

    // Follow: a tail started first prints messages published after it, one JSON per line.
    let mut follower = Command::new(weir_bin())
        .args([
            "tail", "events", "--follow", "--from", "0", "--limit", "3", "--json", "--server", url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for i in 0..3 {
        run(&["publish", "events", &format!("e{i}"), "--key", "k"]);
    }
    wait_for(
        "the follower to print 3 messages and exit",
        Duration::from_secs(30),
        || follower.try_wait().unwrap().map(|_| ()),
    );
    let followed = follower.wait_with_output().unwrap();
    assert!(
        followed.status.success(),
        "{}",
        String::from_utf8_lossy(&followed.stderr)
    );
    let got: Vec<Value> = lines(&String::from_utf8_lossy(&followed.stdout))
        .iter()
        .map(|m| m["payload"].clone())
        .collect();
    assert_eq!(got, [json!("e0"), json!("e1"), json!("e2")]);

    // Request: the counter replies with its total.
    let reply = parse(&run(&[
        "request",
        "counts",
        "hi",
        "-H",
        "reply=yes",
        "--timeout",
        "10s",
        "--json",
    ]));
    assert_eq!(reply["reply"]["payload"], "1", "{reply}");
    assert_eq!(
        run(&[
            "request",
            "counts",
            "hi",
            "-H",
            "reply=yes",
            "--timeout",
            "10s"
        ]),
        "2\n"
    );

    // Replay: the three events again, to `tally` alone; `audit` acknowledges the copies unrun.
    server.wait_binding("tally", "acked", 3);
    server.wait_binding("audit", "acked", 3);
    let before = kv_count(&server, "tallier");
    let replayed = parse(&run(&[
        "replay", "tally", "--from", "0", "--to", "3", "--chunk", "2", "--json",
    ]));
    assert_eq!(
        (
            &replayed["replayed"],
            &replayed["from"],
            &replayed["to"],
            &replayed["source"]
        ),
        (&json!(3), &json!(0), &json!(3), &json!("events"))
    );
    let s = server.wait_binding("audit", "skipped", 3);
    assert_eq!(
        s["bindings"]["audit"]["invocations"], 3,
        "audit ran only the originals"
    );
    server.wait_binding("tally", "acked", 6);
    wait_for(
        "tally to count the replayed events",
        Duration::from_secs(30),
        || (kv_count(&server, "tallier") == before + 3).then_some(()),
    );
    let copies = parse(&run(&["tail", "events", "--from", "3", "--json"]));
    let headers = &copies["messages"][0]["headers"];
    assert_eq!(
        headers,
        &json!([
            ["weir-replayed-from", "events@0"],
            ["weir-replay-for", "tally"]
        ])
    );

    // Dead letters: list, show, redrive (redriven messages fail again, into the DLQ again).
    run(&["publish", "doomed", "bad news"]);
    server.wait_binding("doomed", "dead_lettered", 1);
    let list = parse(&run(&["dlq", "list", "doomed", "--json"]));
    assert_eq!(list["dead_letters"].as_array().unwrap().len(), 1, "{list}");
    let offset = list["dead_letters"][0]["offset"].to_string();
    let shown = parse(&run(&["dlq", "show", "doomed", &offset, "--json"]));
    assert_eq!(
        (&shown["payload"], &shown["class"]),
        (&json!("bad news"), &json!("handler-error"))
    );
    let redriven = parse(&run(&["dlq", "redrive", "doomed", "--json"]));
    assert_eq!(
        (&redriven["redriven"], &redriven["source"]),
        (&json!(1), &json!("doomed"))
    );
    server.wait_binding("doomed", "dead_lettered", 2);

    // Stats: the document, and the tables.
    let stats = parse(&run(&["stats", "--json"]));
    assert_eq!(stats["destinations"]["orders"]["messages"], 3);
    assert_eq!(stats["bindings"]["doomed"]["dead_lettered"], 2);
    let tables = run(&["stats"]);
    assert!(
        tables.contains("DESTINATION") && tables.contains("BINDING"),
        "{tables}"
    );
    assert!(tables.lines().any(|l| l.starts_with("tally ")), "{tables}");
}

#[test]
fn a_token_protected_server_takes_the_token_from_flag_or_environment() {
    let dir = tempfile::tempdir().unwrap();
    let token = "cli-token-0123456789";
    let config =
        "[server]\nlisten = \"127.0.0.1:0\"\napi_token = \"set-by-env-instead\"\n[queues.q]\n";
    std::fs::write(dir.path().join("weir.toml"), config).unwrap();
    // The environment overrides the file's token.
    let server = Server::start_with_env(dir.path(), &[], &[("WEIR_API_TOKEN", token)]);
    let url = server.url.as_str();
    let (code, _, err) = weir_with(
        &["publish", "q", "x", "--server", url],
        dir.path(),
        &[],
        b"",
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("unauthorized") && err.contains("HTTP 401"),
        "{err}"
    );
    let (code, _, err) = weir_with(
        &[
            "publish",
            "q",
            "x",
            "--server",
            url,
            "--token",
            "set-by-env-instead",
        ],
        dir.path(),
        &[],
        b"",
    );
    assert_eq!(code, 1, "the file's token was overridden: {err}");
    let (code, out, err) = weir_with(
        &["publish", "q", "x", "--server", url, "--token", token],
        dir.path(),
        &[],
        b"",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("published to q at offset 0"), "{out}");
    let (code, out, err) = weir_with(
        &["tail", "q", "--json", "--server", url],
        dir.path(),
        &[("WEIR_API_TOKEN", token)],
        b"",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(parse(&out)["messages"][0]["payload"], "x");
}

#[test]
fn json_logs_carry_a_span_per_invocation() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[queues.doomed]\n{}[[bindings]]\nsource = \"doomed\"\nplugin = \"fail\"\nmax_attempts = 1\n",
        plugin_toml("fail", "")
    );
    std::fs::write(dir.path().join("weir.toml"), config).unwrap();
    let server = Server::start_with_env(
        dir.path(),
        &["--log-format", "json"],
        &[("RUST_LOG", "info,weir::delivery=debug")],
    );
    let published = server.publish("doomed", "x", &[]);
    server.wait_binding("doomed.fail", "dead_lettered", 1);
    let logs = wait_for("the failure to be logged", Duration::from_secs(30), || {
        let err = server.stderr();
        err.contains("invocation failed").then_some(err)
    });
    let entries: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("a log line is not JSON: {l}")))
        .collect();
    let failed = entries
        .iter()
        .find(|e| {
            e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("invocation failed"))
        })
        .expect("the failure's log line");
    let span = &failed["span"];
    assert_eq!(span["name"], "invocation", "{failed}");
    assert_eq!(span["message_id"], published["id"], "{failed}");
    assert_eq!(
        (&span["source"], &span["binding"], &span["plugin"]),
        (&json!("doomed"), &json!("doomed.fail"), &json!("fail")),
        "{failed}"
    );
    assert_eq!(span["attempt"], "1", "{failed}");
    assert_eq!(
        span["version"], "1",
        "the active version's number: {failed}"
    );
}

fn check(dir: &Path, config: &str) -> (i32, String, String) {
    std::fs::write(dir.join("weir.toml"), config).unwrap();
    weir(&["check"], dir)
}

#[test]
fn config_mistakes_of_a_new_user_name_the_place_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = format!(
        "[queues.orders]\n{}\n[[bindings]]\nsource = \"orders\"\nplugin = \"noop\"\n",
        plugin_toml("noop", "")
    );
    let (code, out, err) = weir(&["check", "--json"], d);
    assert_eq!(code, 1, "no config file: {out}{err}");
    assert_eq!(parse(&out)["ok"], false);
    std::fs::write(d.join("weir.toml"), &good).unwrap();
    let (code, out, err) = weir(&["check", "--json"], d);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        parse(&out),
        json!({"ok": true, "destinations": 2, "plugins": 1, "bindings": 1})
    );

    // A typo in a key.
    let (code, _, err) = check(d, &good.replace("source =", "sourse ="));
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "weir.toml:7:1: unknown key `sourse` in [[bindings]] #1; did you mean `source`?"
        ),
        "{err}"
    );
    // A wrong type.
    let (code, _, err) = check(d, &format!("[server]\nmax_message_size = true\n{good}"));
    assert_eq!(code, 1);
    assert!(
        err.contains("weir.toml:2:20: `server.max_message_size`: invalid type: boolean `true`"),
        "{err}"
    );
    // A missing plugin file.
    let missing = "[queues.orders]\n[plugins.noop]\npath = \"plugins/nope.wasm\"\n";
    std::fs::write(d.join("weir.toml"), missing).unwrap();
    let (code, out, _) = weir(&["check", "--json"], d);
    assert_eq!(code, 1);
    let verdict = parse(&out);
    assert_eq!(
        verdict["error"]["position"],
        json!({"line": 3, "column": 8}),
        "{verdict}"
    );
    let message = verdict["error"]["message"].as_str().unwrap();
    assert!(message.contains("plugins/nope.wasm` does not exist; fix `path` (relative to the config file's directory)"), "{message}");
    // An unknown source in a binding.
    let (code, _, err) = check(
        d,
        &good.replace("source = \"orders\"", "source = \"order\""),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("binding source `order` is not a declared queue, topic or stream store (did you mean `orders`? declared: `orders`); declare it as [queues.order], [topics.order] or [streams.order]"),
        "{err}"
    );
    // A bad token from the environment is a config problem too.
    std::fs::write(d.join("weir.toml"), &good).unwrap();
    let (code, _, err) = weir_with(&["check"], d, &[("WEIR_API_TOKEN", "short")], b"");
    assert_eq!(code, 1);
    assert!(
        err.contains("environment variable WEIR_API_TOKEN: `server.api_token` must be 16 to 4096"),
        "{err}"
    );
}
