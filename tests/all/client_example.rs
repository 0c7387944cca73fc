//! The Python client example (`examples/clients/python/weir_publish.py`) against a real
//! `weir run`: what it publishes over the WebSocket is stored in order, its acknowledgements are
//! printed one per line, ids make a rerun all duplicates, and refusals and a wrong destination
//! give their exit statuses. It needs Python 3.11+ with `venv`; the `websockets` package is
//! installed with pip into a venv under the cargo target directory, once.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::Server;

/// The package the example needs, pinned: the venv is rebuilt when this changes.
const WEBSOCKETS: &str = "websockets==17.4";
const TOKEN: &str = "client-example-token";

/// `<target>/example-clients/python`, a venv with [`WEBSOCKETS`] installed.
fn venv() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // <target>/<profile>/deps/<test>
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test runs from <target>/<profile>/deps");
    let dir = target.join("example-clients").join("python");
    let marker = dir.join("weir-installed");
    if std::fs::read_to_string(&marker).is_ok_and(|s| s.trim() == WEBSOCKETS) {
        return dir;
    }
    eprintln!(
        "installing {WEBSOCKETS} into {} with pip (once)",
        dir.display()
    );
    let _ = std::fs::remove_dir_all(&dir);
    let run = |cmd: &mut Command, what: &str| {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("{what}: {e} (Python 3.11+ is needed on PATH as python3)"));
        assert!(
            out.status.success(),
            "{what} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&dir),
        "python3 -m venv (Debian: apt-get install python3-venv)",
    );
    run(
        Command::new(dir.join("bin/pip")).args([
            "install",
            "--disable-pip-version-check",
            "--quiet",
            WEBSOCKETS,
        ]),
        &format!("pip install {WEBSOCKETS}"),
    );
    std::fs::write(&marker, WEBSOCKETS).unwrap();
    dir
}

/// Runs the example with arguments and stdin; returns (exit code, stdout, stderr).
fn run_example(venv: &Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/clients/python/weir_publish.py");
    let mut child = Command::new(venv.join("bin/python"))
        .arg(&script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the example");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The acknowledgements the example printed.
fn acks(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// What `dest` holds (the server has a token: `Server::get` would be refused).
fn stored(s: &Server, dest: &str) -> Vec<Value> {
    let (status, page) = crate::support::call_json(
        "GET",
        &format!(
            "{}/v1/destinations/{dest}/messages?from=0&limit=1000",
            s.url
        ),
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        b"",
    );
    assert_eq!(status, 200, "{page}");
    page["messages"].as_array().unwrap().clone()
}

#[test]
fn the_python_client_example_publishes_over_the_websocket() {
    let venv = venv();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\napi_token = \"{TOKEN}\"\n[queues.orders]\n[topics.events]\n"
        ),
    );
    let common = ["--server", s.url.as_str(), "--token", TOKEN];

    // 500 lines of stdin, 16 in flight: 500 acknowledgements in order, stored in order.
    let input: String = (0..500).map(|i| format!("order {i}\n")).collect();
    let args = [&common[..], &["--in-flight", "16", "orders"]].concat();
    let (code, out, err) = run_example(&venv, &args, &input);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("500 stored (0 already were), 0 refused"),
        "{err}"
    );
    let acks = acks(&out);
    assert_eq!(acks.len(), 500, "{out}");
    let messages = stored(&s, "orders");
    assert_eq!(messages.len(), 500);
    for (i, (ack, m)) in acks.iter().zip(&messages).enumerate() {
        assert_eq!(ack["seq"], i, "{ack}");
        assert_eq!(
            (&ack["offset"], &ack["id"]),
            (&m["offset"], &m["id"]),
            "{ack} {m}"
        );
        assert_eq!(m["payload"], format!("order {i}"), "{m}");
    }

    // Key, ids and headers (text messages); run again, everything is a duplicate.
    let args = [
        &common[..],
        &[
            "--key",
            "customer-7",
            "--id-prefix",
            "import-",
            "--header",
            "source=example",
            "events",
            "a",
            "b",
            "c",
        ],
    ]
    .concat();
    let (code, out, err) = run_example(&venv, &args, "");
    assert_eq!(code, 0, "{out}\n{err}");
    let first = self::acks(&out);
    let (code, out, err) = run_example(&venv, &args, "");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("3 stored (3 already were)"), "{err}");
    for (a, b) in first.iter().zip(self::acks(&out)) {
        assert_eq!(
            (&b["offset"], &b["duplicate"]),
            (&a["offset"], &Value::from(true))
        );
    }
    let events = stored(&s, "events");
    assert_eq!(events.len(), 3);
    for (i, m) in events.iter().enumerate() {
        assert_eq!(m["id"], format!("import-{i}"));
        assert_eq!(m["key"], "customer-7");
        assert_eq!(m["headers"], serde_json::json!([["source", "example"]]));
    }

    // A refused message: exit 1, its acknowledgement says why.
    let args = [
        &common[..],
        &["--header", "weir-replay-for=x", "orders", "x"],
    ]
    .concat();
    let (code, out, err) = run_example(&venv, &args, "");
    assert_eq!(code, 1, "{out}\n{err}");
    assert_eq!(
        self::acks(&out)[0]["error"]["code"],
        "invalid_message",
        "{out}"
    );
    // A wrong destination, a missing token: exit 2 with the server's answer.
    let args = [&common[..], &["nope", "x"]].concat();
    let (code, _, err) = run_example(&venv, &args, "");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("HTTP 404") && err.contains("unknown_destination"),
        "{err}"
    );
    let (code, _, err) = run_example(&venv, &["--server", &s.url, "orders", "x"], "");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("HTTP 401"), "{err}");
    assert_eq!(
        stored(&s, "orders").len(),
        500,
        "nothing refused was stored"
    );
}
