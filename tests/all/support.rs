//! Helpers: plugin paths, a `weir run` child process with its HTTP API, waiting on conditions.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Path of an example plugin built by `build.rs`.
pub fn plugin(name: &str) -> PathBuf {
    let path = match name {
        "noop" => env!("WEIR_PLUGIN_NOOP"),
        "enrich" => env!("WEIR_PLUGIN_ENRICH"),
        "counter" => env!("WEIR_PLUGIN_COUNTER"),
        "trap" => env!("WEIR_PLUGIN_TRAP"),
        "spin" => env!("WEIR_PLUGIN_SPIN"),
        "hog" => env!("WEIR_PLUGIN_HOG"),
        "fail" => env!("WEIR_PLUGIN_FAIL"),
        "sneaky" => env!("WEIR_PLUGIN_SNEAKY"),
        "c-tally" => env!("WEIR_PLUGIN_C_TALLY"),
        "tagger" => env!("WEIR_PLUGIN_TAGGER"),
        "rogue" => env!("WEIR_PLUGIN_ROGUE"),
        "legacy-noop" => env!("WEIR_PLUGIN_LEGACY_NOOP"),
        "order-aggregate" => env!("WEIR_PLUGIN_ORDER_AGGREGATE"),
        "order-aggregate-drift" => env!("WEIR_PLUGIN_ORDER_AGGREGATE_DRIFT"),
        "order-aggregate-v2" => env!("WEIR_PLUGIN_ORDER_AGGREGATE_V2"),
        "order-totals" => env!("WEIR_PLUGIN_ORDER_TOTALS"),
        "order-totals-v2" => env!("WEIR_PLUGIN_ORDER_TOTALS_V2"),
        other => panic!("no example plugin named {other}"),
    };
    PathBuf::from(path)
}

/// Path of an orders example plugin (one per language) built by `build.rs`; panics with the
/// build's reason when its language's toolchain could not be installed or it did not build.
pub fn orders_plugin(name: &str) -> PathBuf {
    let (built, skipped) = match name {
        "orders-rust" => (
            option_env!("WEIR_PLUGIN_ORDERS_RUST"),
            option_env!("WEIR_PLUGIN_SKIPPED_ORDERS_RUST"),
        ),
        "orders-c" => (
            option_env!("WEIR_PLUGIN_ORDERS_C"),
            option_env!("WEIR_PLUGIN_SKIPPED_ORDERS_C"),
        ),
        "orders-py" => (
            option_env!("WEIR_PLUGIN_ORDERS_PY"),
            option_env!("WEIR_PLUGIN_SKIPPED_ORDERS_PY"),
        ),
        "orders-js" => (
            option_env!("WEIR_PLUGIN_ORDERS_JS"),
            option_env!("WEIR_PLUGIN_SKIPPED_ORDERS_JS"),
        ),
        "orders-go" => (
            option_env!("WEIR_PLUGIN_ORDERS_GO"),
            option_env!("WEIR_PLUGIN_SKIPPED_ORDERS_GO"),
        ),
        "orders-zig" => (
            option_env!("WEIR_PLUGIN_ORDERS_ZIG"),
            option_env!("WEIR_PLUGIN_SKIPPED_ORDERS_ZIG"),
        ),
        "order-aggregate-py" => (
            option_env!("WEIR_PLUGIN_ORDER_AGGREGATE_PY"),
            option_env!("WEIR_PLUGIN_SKIPPED_ORDER_AGGREGATE_PY"),
        ),
        "order-totals-py" => (
            option_env!("WEIR_PLUGIN_ORDER_TOTALS_PY"),
            option_env!("WEIR_PLUGIN_SKIPPED_ORDER_TOTALS_PY"),
        ),
        other => panic!("no orders plugin named {other}"),
    };
    match (built, skipped) {
        (Some(path), _) => PathBuf::from(path),
        (None, Some(why)) => panic!("plugin {name} was not built by tests/build.rs: {why}"),
        (None, None) => panic!("plugin {name} was not built by tests/build.rs"),
    }
}

/// The `weir` binary of this build (`target/<profile>/weir`).
pub fn weir_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join(format!("weir{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: build it first with `cargo build --release -p weir` (scripts/test does)",
        bin.display()
    );
    bin
}

/// Runs `weir` with arguments; returns (exit code, stdout, stderr).
pub fn weir(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let out = Command::new(weir_bin())
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("running weir");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `f` until it returns `Some`, or panics after `deadline` naming `what`.
pub fn wait_for<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A `weir run` child process on a free loopback port, killed on drop.
pub struct Server {
    child: Child,
    /// Base URL of its API.
    pub url: String,
    stderr_path: PathBuf,
}

impl Server {
    /// Writes `config` to `dir/weir.toml` and starts a server on it, waiting until it listens.
    pub fn start(dir: &Path, config: &str) -> Server {
        std::fs::write(dir.join("weir.toml"), config).unwrap();
        Server::start_existing(dir)
    }

    /// Starts a server on an existing `dir/weir.toml`.
    pub fn start_existing(dir: &Path) -> Server {
        Server::start_with(dir, &[])
    }

    /// Starts a server on an existing `dir/weir.toml` with extra `weir run` arguments.
    pub fn start_with(dir: &Path, extra: &[&str]) -> Server {
        Server::start_with_env(dir, extra, &[])
    }

    /// Starts a server on an existing `dir/weir.toml` with extra `weir run` arguments and
    /// environment variables.
    pub fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let stderr_path = dir.join("weir.stderr");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut child = Command::new(weir_bin())
            .args(["run", "--config", "weir.toml"])
            .args(extra)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("starting weir run");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("weir listening on ") {
                        break url.to_owned();
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                    panic!("weir run did not start listening; stderr:\n{err}");
                }
            }
        };
        Server {
            child,
            url,
            stderr_path,
        }
    }

    /// What the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// GET a path; returns (status, JSON body).
    pub fn get(&self, path: &str) -> (u16, Value) {
        let resp = agent().get(format!("{}{path}", self.url)).call();
        read(resp)
    }

    /// POST bytes to a path with extra headers; returns (status, JSON body).
    pub fn post(&self, path: &str, body: &[u8], headers: &[(&str, &str)]) -> (u16, Value) {
        let mut req = agent().post(format!("{}{path}", self.url));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        read(req.send(body))
    }

    /// POST bytes to a path with extra headers; returns (status, response headers, JSON body).
    pub fn post_with_headers(
        &self,
        path: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> (u16, ureq::http::HeaderMap, Value) {
        let mut req = agent().post(format!("{}{path}", self.url));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut resp = req.send(body).expect("HTTP request");
        let status = resp.status().as_u16();
        let response_headers = resp.headers().clone();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("body is not JSON (status {status}): {text}"));
        (status, response_headers, body)
    }

    /// Publishes a payload to a destination, asserting success.
    pub fn publish(&self, dest: &str, payload: &str, headers: &[(&str, &str)]) -> Value {
        let (status, body) = self.post(
            &format!("/v1/destinations/{dest}/messages"),
            payload.as_bytes(),
            headers,
        );
        assert_eq!(status, 201, "publish to {dest}: {body}");
        body
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The stats document.
    pub fn stats(&self) -> Value {
        let (status, body) = self.get("/v1/stats");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits until a binding's counter reaches `n`.
    pub fn wait_binding(&self, binding: &str, counter: &str, n: u64) -> Value {
        let what = format!(
            "binding {binding} {counter} >= {n} (server stderr: {})",
            self.stderr()
        );
        wait_for(&what, Duration::from_secs(30), || {
            let s = self.stats();
            (s["bindings"][binding][counter].as_u64().unwrap_or(0) >= n).then_some(s)
        })
    }

    /// Stops the server with SIGTERM and returns its exit code.
    pub fn stop(self) -> Option<i32> {
        self.signal("TERM")
    }

    /// Sends a signal (`TERM`, `INT`) and returns the exit code once the process is gone.
    pub fn signal(mut self, signal: &str) -> Option<i32> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args([format!("-{signal}").as_str(), &pid])
            .status();
        let status = self.child.wait().ok()?;
        status.code()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn read(resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let mut resp = resp.expect("HTTP request");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("body is not JSON (status {status}): {text}"));
    (status, body)
}

/// A config fragment declaring an example plugin by path.
pub fn plugin_toml(name: &str, extra: &str) -> String {
    format!(
        "[plugins.{name}]\npath = {:?}\n{extra}\n",
        plugin(name).display().to_string()
    )
}

/// Any HTTP call: method, URL, headers and body; returns (status, response headers, body text).
pub fn call(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, ureq::http::HeaderMap, String) {
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(body.to_vec()).expect("a valid request");
    let mut resp = agent().run(req).expect("HTTP request");
    let status = resp.status().as_u16();
    let response_headers = resp.headers().clone();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (status, response_headers, text)
}

/// [`call`], with the body parsed as JSON.
pub fn call_json(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
    let (status, _, text) = call(method, url, headers, body);
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("body is not JSON (status {status}): {text}"));
    (status, body)
}

/// Runs `weir` with arguments, extra environment and stdin; returns (exit code, stdout, stderr).
pub fn weir_with(
    args: &[&str],
    cwd: &Path,
    env: &[(&str, &str)],
    stdin: &[u8],
) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(weir_bin())
        .args(args)
        .current_dir(cwd)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running weir");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("writing stdin");
    drop(input);
    let out = child.wait_with_output().expect("waiting for weir");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
