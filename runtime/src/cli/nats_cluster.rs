//! A 3-node NATS JetStream cluster on free loopback ports in a temp dir, started by the `weir`
//! binary itself for `weir bench e2e --broker nats` and `weir chaos --scenario cluster`, and
//! by the integration tests. Debian's `nats-server`, installed with apt-get when missing
//! (saying so); ready once every node sees a JetStream meta leader; a node can be SIGKILLed
//! and started again; every node is killed on drop.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;

use crate::storage::nats_observe;

/// Where Debian installs it.
const DEBIAN_PATH: &str = "/usr/sbin/nats-server";
/// How long a node may take to see a meta leader.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// Clusters tried, each on other ports, before giving up.
const ATTEMPTS: usize = 3;
/// The lowest port [`free_ports`] hands out.
const LOWEST_PORT: usize = 10_000;

/// The server binary, installed with apt-get if missing (one install at a time per process).
pub fn nats_server() -> anyhow::Result<PathBuf> {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _once = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if Path::new(DEBIAN_PATH).is_file() {
        return Ok(DEBIAN_PATH.into());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    let sudo: &[&str] = if root { &[] } else { &["sudo"] };
    eprintln!(
        "{DEBIAN_PATH} is missing: installing Debian's nats-server (apt-get update; apt-get install -y nats-server)"
    );
    for args in [
        &["apt-get", "update"][..],
        &["apt-get", "install", "-y", "nats-server"],
    ] {
        let argv: Vec<&str> = sudo.iter().chain(args).copied().collect();
        let status = Command::new(argv[0])
            .args(&argv[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        if !status.is_ok_and(|s| s.success()) {
            bail!(
                "`{}` failed: a NATS cluster needs nats-server (Debian 12: apt-get install nats-server)",
                argv.join(" ")
            );
        }
    }
    if !Path::new(DEBIAN_PATH).is_file() {
        bail!("apt-get installed nats-server but {DEBIAN_PATH} is missing");
    }
    Ok(DEBIAN_PATH.into())
}

/// `n` loopback ports that are free now, below the kernel's ephemeral range
/// (`ip_local_port_range`). A port the kernel handed out for port 0 could be handed out again,
/// to another listener or as an outgoing connection's source port, between this check and the
/// server binding it; on a machine busy with other tests that happened, a node failed to
/// start and the cluster never saw a meta leader. Below the range only a program that picks
/// its ports itself can take one: each process starts at its own place in the range and never
/// hands out a port twice.
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    static HANDED_OUT: AtomicUsize = AtomicUsize::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<usize>().ok())
        .unwrap_or(32_768)
        .max(LOWEST_PORT + 1_000);
    let span = low - LOWEST_PORT;
    let start = std::process::id() as usize * 7_919;
    let mut ports = Vec::with_capacity(n);
    for _ in 0..span {
        let port = LOWEST_PORT + (start + HANDED_OUT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = port as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
            if ports.len() == n {
                return Ok(ports);
            }
        }
    }
    bail!("fewer than {n} free loopback ports in {LOWEST_PORT}..{low}")
}

/// The last lines of a node's log, for an error.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

struct Node {
    config: PathBuf,
    client: u16,
    http: u16,
    child: Option<Child>,
}

/// Three JetStream nodes routed to each other.
pub struct NatsCluster {
    nodes: Vec<Node>,
    bin: PathBuf,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts the cluster and waits until JetStream is available on every node. A cluster
    /// that does not come up (a node exits, or no meta leader in time) is killed and started
    /// again on other ports, up to [`ATTEMPTS`] times.
    pub fn start() -> anyhow::Result<NatsCluster> {
        let bin = nats_server()?;
        let mut attempt = 1;
        loop {
            match Self::try_start(&bin) {
                Ok(c) => return Ok(c),
                Err(e) if attempt < ATTEMPTS => {
                    eprintln!(
                        "NATS cluster, attempt {attempt} of {ATTEMPTS}: {e:#}; trying again on other ports"
                    );
                    attempt += 1;
                }
                Err(e) => {
                    return Err(e.context(format!("{ATTEMPTS} NATS clusters did not come up")));
                }
            }
        }
    }

    fn try_start(bin: &Path) -> anyhow::Result<NatsCluster> {
        let dir = tempfile::Builder::new().prefix("weir-nats-").tempdir()?;
        let ports = free_ports(9)?;
        let ports: Vec<(u16, u16, u16)> = ports.chunks(3).map(|p| (p[0], p[1], p[2])).collect();
        let routes = ports
            .iter()
            .map(|(_, route, _)| format!("nats-route://127.0.0.1:{route}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut nodes = Vec::new();
        for (i, (client, route, http)) in ports.iter().enumerate() {
            let store = dir.path().join(format!("n{i}"));
            let config = dir.path().join(format!("n{i}.conf"));
            std::fs::write(
                &config,
                format!(
                    "server_name: n{i}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{http}\nmax_payload: 8MB\n\
                     jetstream {{ store_dir: {store:?}, max_memory_store: 256MB, max_file_store: 4GB }}\n\
                     cluster {{ name: weir, listen: 127.0.0.1:{route}, routes: [{routes}] }}\n"
                ),
            )?;
            nodes.push(Node {
                config,
                client: *client,
                http: *http,
                child: None,
            });
        }
        let mut c = NatsCluster {
            nodes,
            bin: bin.to_owned(),
            _dir: dir,
        };
        for i in 0..3 {
            c.start_node(i)?;
        }
        c.wait_ready()?;
        Ok(c)
    }

    /// The client URLs of the nodes.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client))
            .collect()
    }

    /// `servers = [...]` for a weir config.
    pub fn servers_toml(&self) -> String {
        let urls: Vec<String> = self.urls().iter().map(|u| format!("{u:?}")).collect();
        format!("servers = [{}]", urls.join(", "))
    }

    /// How many nodes the cluster has (running or not).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Starts node `i` (again), its log in `n<i>.log` of the cluster's directory.
    pub fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.config.with_extension("log"))?;
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&node.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        node.child = Some(child);
        Ok(())
    }

    /// SIGKILLs node `i`.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until every running node reports a JetStream meta leader of a 3-node cluster.
    pub fn wait_ready(&mut self) -> anyhow::Result<()> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        let deadline = Instant::now() + READY_DEADLINE;
        for n in self.nodes.iter_mut() {
            let Some(child) = n.child.as_mut() else {
                continue;
            };
            let url = format!("http://127.0.0.1:{}/jsz", n.http);
            loop {
                if let Some(status) = child.try_wait()? {
                    let log = n.config.with_extension("log");
                    bail!(
                        "nats-server {} exited with {status}; its log ends:\n{}",
                        n.config.display(),
                        log_tail(&log)
                    );
                }
                let leader = || -> Option<()> {
                    let text = agent
                        .get(&url)
                        .call()
                        .ok()?
                        .body_mut()
                        .read_to_string()
                        .ok()?;
                    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
                    let meta = v.get("meta_cluster")?;
                    let has_leader = meta
                        .get("leader")
                        .and_then(|l| l.as_str())
                        .is_some_and(|l| !l.is_empty());
                    (has_leader && meta.get("cluster_size")?.as_u64()? == 3).then_some(())
                };
                if leader().is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "no JetStream meta leader on {url} after {READY_DEADLINE:?}; its log ends:\n{}",
                        log_tail(&n.config.with_extension("log"))
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

/// A JetStream context on the nodes at `urls`.
pub(super) async fn connect(urls: &[String]) -> anyhow::Result<async_nats::jetstream::Context> {
    let servers = urls
        .iter()
        .map(|u| u.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()?;
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(servers)
        .await?;
    Ok(async_nats::jetstream::new(client))
}

/// The holder (a host id) of every partition lease, by lease key (`<binding>.<p>`).
pub(super) fn lease_holders(urls: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async { holders(&connect(urls).await?).await })
}

async fn holders(js: &async_nats::jetstream::Context) -> anyhow::Result<BTreeMap<String, String>> {
    let mut holders = BTreeMap::new();
    let leases = js.get_key_value(nats_observe::LEASES_BUCKET).await?;
    let keys: Vec<String> = leases
        .keys()
        .await?
        .filter_map(|k| async { k.ok() })
        .collect()
        .await;
    for k in keys {
        if let Some(v) = leases.get(&k).await? {
            holders.insert(k, String::from_utf8_lossy(&v).into_owned());
        }
    }
    Ok(holders)
}

/// Waits until all `partitions` leases are held, by `hosts` distinct hosts.
pub(super) fn wait_spread(
    urls: &[String],
    partitions: usize,
    hosts: usize,
    deadline: Duration,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let until = tokio::time::Instant::now() + deadline;
        let js = connect(urls).await?;
        loop {
            let read = holders(&js).await;
            let held = read.as_ref().cloned().unwrap_or_default();
            let distinct: BTreeSet<&String> = held.values().collect();
            if held.len() == partitions && distinct.len() == hosts {
                return Ok(());
            }
            if tokio::time::Instant::now() > until {
                let why = read.err().map(|e| format!(" (reading the leases: {e:#})"));
                bail!(
                    "after {deadline:?}, {} of {partitions} partitions are held, by {} of {hosts} hosts{}",
                    held.len(),
                    distinct.len(),
                    why.unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
    }
}
