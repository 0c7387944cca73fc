//! The 3-node NATS JetStream cluster of the tests of `broker.kind = "nats"`: the `weir` crate's
//! own ([`NatsCluster`], the one `weir bench e2e --broker nats` and `weir chaos --scenario
//! cluster` start: Debian's `nats-server`, installed with apt-get when missing, free loopback
//! ports, ready once every node sees a JetStream meta leader), one at a time, panicking on
//! failure, killed on drop.

use std::path::PathBuf;
use std::sync::Mutex;

use weir::cli::nats_cluster::{self, NatsCluster};

/// The server binary, installed if missing.
pub fn nats_server() -> PathBuf {
    nats_cluster::nats_server().expect("the NATS tests need nats-server")
}

/// Held by each running cluster: the NATS tests run one at a time (three servers and two or
/// three weir hosts already fill a 2-core machine; two such tests at once starve each other's
/// leases).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A turn of the one NATS cluster at a time, for tests whose cluster the `weir` binary starts.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Three JetStream nodes routed to each other, and this test's turn (dropped after them).
pub struct Cluster {
    nodes: NatsCluster,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Cluster {
    /// Starts the cluster and waits until JetStream is available on every node.
    pub fn start() -> Cluster {
        let turn = one_at_a_time();
        let nodes = NatsCluster::start().unwrap_or_else(|e| panic!("{e:#}"));
        Cluster { nodes, _turn: turn }
    }

    /// `servers = [...]` for a weir config.
    pub fn servers_toml(&self) -> String {
        self.nodes.servers_toml()
    }

    /// Starts node `i` (again).
    pub fn start_node(&mut self, i: usize) {
        self.nodes.start_node(i).unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// SIGKILLs node `i`.
    pub fn kill_node(&mut self, i: usize) {
        self.nodes.kill_node(i);
    }

    /// Waits until every running node reports a JetStream meta leader of a 3-node cluster.
    pub fn wait_ready(&mut self) {
        self.nodes.wait_ready().unwrap_or_else(|e| panic!("{e:#}"));
    }
}
