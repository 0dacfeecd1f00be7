//! Several nodes in one process, each with its own gRPC port, Iroh endpoint, Raft and stores — the
//! demo's cluster and the tests'. Nodes talk to each other only over the network (gRPC and Iroh on
//! 127.0.0.1), exactly as separate processes would.

use std::time::{Duration, Instant};

use duet::TransportConfig;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::calls::CallLog;
use crate::config::NodeConfig;
use crate::node::{Node, NodeDisk, NodeError, NodeOptions};
use crate::state::NodeId;

/// A cluster of in-process nodes with ids 1..=n.
#[derive(Debug)]
pub struct Cluster {
    configs: Vec<NodeConfig>,
    nodes: Vec<Option<Node>>,
    disks: Vec<Option<NodeDisk>>,
    calls: CallLog,
    metrics: Option<PrometheusHandle>,
}

impl Cluster {
    /// Starts `n` nodes from the embedded config, changed by `transport`: node 1 bootstraps the
    /// cluster, the others join through node 1's ticket.
    pub async fn start(
        n: u64,
        transport: impl Fn(&mut TransportConfig),
        metrics: Option<PrometheusHandle>,
    ) -> Result<Self, NodeError> {
        Self::start_configured(n, |config| transport(&mut config.transport), metrics).await
    }

    /// [`Cluster::start`], with `configure` changing each node's whole config (its `[node]` table
    /// too) before it starts.
    pub async fn start_configured(
        n: u64,
        configure: impl Fn(&mut NodeConfig),
        metrics: Option<PrometheusHandle>,
    ) -> Result<Self, NodeError> {
        let configs: Vec<NodeConfig> = (1..=n)
            .map(|id| {
                let mut config = NodeConfig::embedded(id);
                configure(&mut config);
                config
            })
            .collect();
        let mut cluster = Cluster {
            configs,
            nodes: (0..n).map(|_| None).collect(),
            disks: (0..n).map(|_| None).collect(),
            calls: CallLog::default(),
            metrics,
        };
        for id in 1..=n {
            if id > 1 {
                let seed = cluster.node(1).ticket().to_string();
                cluster.configs[id as usize - 1].node.join = vec![seed];
            }
            cluster.restart(id).await?;
        }
        Ok(cluster)
    }

    /// The call log every node of this cluster writes to.
    pub fn calls(&self) -> &CallLog {
        &self.calls
    }

    /// A running node; panics if `id` is not running (a test mistake).
    pub fn node(&self, id: NodeId) -> &Node {
        self.nodes[id as usize - 1].as_ref().unwrap_or_else(|| panic!("node {id} is not running"))
    }

    /// A running node, mutably.
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes[id as usize - 1].as_mut().unwrap_or_else(|| panic!("node {id} is not running"))
    }

    /// The ids of running nodes.
    pub fn running(&self) -> Vec<NodeId> {
        (1..=self.nodes.len() as u64).filter(|id| self.nodes[*id as usize - 1].is_some()).collect()
    }

    /// Stops node `id` as a crash would, keeping its disk for [`Cluster::restart`].
    pub async fn kill(&mut self, id: NodeId) {
        if let Some(node) = self.nodes[id as usize - 1].take() {
            self.disks[id as usize - 1] = Some(node.shutdown().await);
        }
    }

    /// Starts node `id` (again, on its old disk, ports and key, if it ran before).
    pub async fn restart(&mut self, id: NodeId) -> Result<(), NodeError> {
        let i = id as usize - 1;
        let options = NodeOptions {
            disk: self.disks[i].take(),
            metrics: self.metrics.clone(),
            calls: self.calls.clone(),
            ..NodeOptions::default()
        };
        let mut config = self.configs[i].clone();
        if options.disk.is_some() {
            // Its log says it is a member already; never bootstrap twice.
            config.node.bootstrap = false;
            if config.node.join.is_empty() {
                config.node.join = self.running().iter().map(|r| self.node(*r).ticket().to_string()).collect();
            }
        }
        self.nodes[i] = Some(Node::start(&config, options).await?);
        Ok(())
    }

    /// Waits until every running node agrees on one leader, among the running nodes, and returns it.
    pub async fn leader(&self, timeout: Duration) -> Option<NodeId> {
        let deadline = Instant::now() + timeout;
        loop {
            let running = self.running();
            let leaders: Vec<_> =
                running.iter().map(|id| self.node(*id).raft().metrics().borrow().current_leader).collect();
            if let Some(Some(leader)) = leaders.first()
                && leaders.iter().all(|l| *l == Some(*leader))
                && running.contains(leader)
            {
                return Some(*leader);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every running node has applied the log up to `index`.
    pub async fn applied(&self, index: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let done = self
                .running()
                .iter()
                .all(|id| self.node(*id).raft().metrics().borrow().last_applied.is_some_and(|l| l.index >= index));
            if done {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops every node.
    pub async fn shutdown(mut self) {
        for id in self.running() {
            self.kill(id).await;
        }
    }
}
