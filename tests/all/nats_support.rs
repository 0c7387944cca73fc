//! A 3-node NATS JetStream cluster on free loopback ports in a temp dir, for the tests of
//! `broker.kind = "nats"`: Debian's `nats-server` (installed with apt-get when missing, like
//! `scripts/build-plugins` installs its packages), started once ready (every node sees a
//! JetStream meta leader), killed on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::support::wait_for;

/// Where Debian installs it.
const DEBIAN_PATH: &str = "/usr/sbin/nats-server";

/// The server binary, installed if missing (once per test process).
pub fn nats_server() -> PathBuf {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _once = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if Path::new(DEBIAN_PATH).is_file() {
        return DEBIAN_PATH.into();
    }
    let sudo: &[&str] = if is_root() { &[] } else { &["sudo"] };
    eprintln!(
        "nats tests: installing Debian's nats-server (apt-get update; apt-get install -y nats-server)"
    );
    let run = |args: &[&str]| {
        let mut argv: Vec<&str> = sudo.to_vec();
        argv.extend_from_slice(args);
        let status = Command::new(argv[0])
            .args(&argv[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "`{}` failed: the NATS tests need nats-server (Debian 12: apt-get install nats-server)",
            argv.join(" ")
        );
    };
    run(&["apt-get", "update"]);
    run(&["apt-get", "install", "-y", "nats-server"]);
    assert!(
        Path::new(DEBIAN_PATH).is_file(),
        "apt-get installed nats-server but {DEBIAN_PATH} is missing"
    );
    DEBIAN_PATH.into()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Node {
    config: PathBuf,
    client: u16,
    http: u16,
    child: Option<Child>,
}

/// Held by each running cluster: the NATS tests run one at a time (three servers and two or
/// three weir hosts already fill a 2-core machine; two such tests at once starve each other's
/// leases).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A turn of the one NATS cluster at a time, for tests whose cluster the `weir` binary starts.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Three JetStream nodes routed to each other.
pub struct Cluster {
    _turn: std::sync::MutexGuard<'static, ()>,
    _dir: tempfile::TempDir,
    nodes: Vec<Node>,
    bin: PathBuf,
}

impl Cluster {
    /// Starts the cluster and waits until JetStream is available on every node.
    pub fn start() -> Cluster {
        let turn = one_at_a_time();
        let bin = nats_server();
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes = ports
            .iter()
            .map(|(_, route, _)| format!("nats-route://127.0.0.1:{route}"))
            .collect::<Vec<_>>()
            .join(", ");
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, (client, route, http))| {
                let store = dir.path().join(format!("n{i}"));
                let config = dir.path().join(format!("n{i}.conf"));
                std::fs::write(
                    &config,
                    format!(
                        "server_name: n{i}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{http}\nmax_payload: 8MB\n\
                         jetstream {{ store_dir: {store:?}, max_memory_store: 256MB, max_file_store: 4GB }}\n\
                         cluster {{ name: weirtest, listen: 127.0.0.1:{route}, routes: [{routes}] }}\n"
                    ),
                )
                .unwrap();
                Node { config, client: *client, http: *http, child: None }
            })
            .collect();
        let mut c = Cluster {
            _turn: turn,
            _dir: dir,
            nodes,
            bin,
        };
        for i in 0..3 {
            c.start_node(i);
        }
        c.wait_ready();
        c
    }

    /// `servers = [...]` for a weir config.
    pub fn servers_toml(&self) -> String {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"nats://127.0.0.1:{}\"", n.client))
            .collect();
        format!("servers = [{}]", urls.join(", "))
    }

    /// Starts node `i` (again).
    pub fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::File::create(node.config.with_extension("log")).unwrap();
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&node.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting nats-server");
        node.child = Some(child);
    }

    /// SIGKILLs node `i`.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until every running node reports a JetStream meta leader of a 3-node cluster.
    pub fn wait_ready(&self) {
        for n in self.nodes.iter().filter(|n| n.child.is_some()) {
            let url = format!("http://127.0.0.1:{}/jsz", n.http);
            wait_for(
                &format!("JetStream meta leader on {url}"),
                Duration::from_secs(60),
                || {
                    let mut resp = ureq::get(&url).call().ok()?;
                    let v: serde_json::Value =
                        serde_json::from_str(&resp.body_mut().read_to_string().ok()?).ok()?;
                    let meta = v.get("meta_cluster")?;
                    let leader = meta
                        .get("leader")
                        .and_then(|l| l.as_str())
                        .filter(|l| !l.is_empty())?;
                    (meta.get("cluster_size")?.as_u64()? == 3).then_some(leader.to_owned())
                },
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
    }
}
