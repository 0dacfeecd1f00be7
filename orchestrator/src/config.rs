//! A node's config file: a `[node]` table next to duet's `[transport]` table.
//!
//! ```toml
//! [node]
//! id = 2                      # Raft node id, unique in the cluster, 1 or more
//! name = "node-2"
//! join = ["duet:grpc=127.0.0.1:7001"]   # any member's ticket; empty with bootstrap = true
//! data_dir = "node-2-data"    # keep the Raft log, snapshot, images and Iroh key here; omit: memory
//!
//! [transport]
//! mode = "dual"
//! # … the rest of duet's [transport] table
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use duet::{ConfigError, PeerAddr, TransportConfig};
use serde::Deserialize;

/// The embedded defaults: one offline node in Dual mode, phase by phase as the orchestrator migrates
/// (health, status, monitoring and VM calls on Iroh first, images on gRPC, Raft adaptive).
pub const DEFAULT_CONFIG: &str = include_str!("../node.toml");

/// Largest image a node accepts by default (1 GiB).
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 1 << 30;

/// The config names of the services a node serves and calls, as `[transport.migration]` names them.
pub const SERVICE_CONFIG_NAMES: [&str; 6] = ["health", "status", "monitoring", "vm", "images", "raft"];

/// The `[node]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Raft node id, unique in the cluster.
    pub id: u64,
    /// A name for humans.
    #[serde(default)]
    pub name: String,
    /// Start a new cluster with this node as its only member (ignored once the node has a log).
    #[serde(default)]
    pub bootstrap: bool,
    /// Tickets (`duet:grpc=…;iroh=…`) of members to join the cluster through.
    #[serde(default)]
    pub join: Vec<String>,
    /// Serve Prometheus metrics over HTTP here as well as through the `Monitoring` service.
    #[serde(default)]
    pub metrics_address: Option<SocketAddr>,
    /// Largest image this node stores, in bytes.
    #[serde(default = "default_max_image_bytes")]
    pub max_image_bytes: u64,
    /// Raft heartbeat interval in milliseconds (elections time out after 4–8 heartbeats).
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Where the node keeps what must survive a restart: its Raft log, vote and snapshot (`raft/`),
    /// its images (`images/`) and, unless `transport.iroh.secret_key_file` is set, its Iroh key
    /// (`iroh.key`). Created if missing; a relative path is taken from the config file's directory. Without
    /// it everything is kept in memory, so a node restarted as a new process must rejoin under a new
    /// id.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// A secret every member sends with its Raft, `Propose` and `JoinCluster` calls, and which a
    /// node must show to join (see [`crate::auth`]). Absent: over gRPC without mutual TLS those
    /// calls cannot be checked and are admitted from anyone; over Iroh only members may make Raft
    /// calls whatever this says.
    #[serde(default)]
    pub cluster_token: Option<String>,
}

fn default_max_image_bytes() -> u64 {
    DEFAULT_MAX_IMAGE_BYTES
}

fn default_heartbeat_ms() -> u64 {
    100
}

/// A whole node config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// `[node]`.
    pub node: NodeSection,
    /// duet's `[transport]`.
    #[serde(default)]
    pub transport: TransportConfig,
}

impl NodeConfig {
    /// Parses and checks a config; every error names its key. Relative paths stay as written
    /// (relative to the working directory); [`NodeConfig::from_file`] takes them from the file's.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: NodeConfig = toml::from_str(text).map_err(ConfigError::from_toml)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and checks a file. Relative paths in it (`node.data_dir`, TLS files, the Iroh
    /// key file) are taken from the file's directory, so the node finds the same files whatever
    /// directory it is started in.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("", format!("cannot read {}: {e}", path.display())))?;
        let mut config: NodeConfig = toml::from_str(&text).map_err(|e| ConfigError::from_toml(e).in_file(path))?;
        let base = path.parent().unwrap_or(Path::new(""));
        config.transport.resolve_paths(base);
        if let Some(dir) = config.node.data_dir.as_mut().filter(|d| d.is_relative() && !d.as_os_str().is_empty()) {
            let resolved = base.join(&*dir);
            // The first version took data_dir from the working directory: a node upgraded in place
            // must not start empty (and, bootstrapping, found a second cluster) beside its old data.
            if resolved != *dir && !resolved.exists() && dir.is_dir() {
                return Err(ConfigError::new(
                    "node.data_dir",
                    format!(
                        "{:?} is taken from the config file's directory, where {} does not exist, but {} exists in \
                         the working directory (where this path used to be taken from): move that directory next \
                         to the config file, or give its absolute path",
                        dir,
                        resolved.display(),
                        dir.display()
                    ),
                )
                .in_file(path));
            }
            *dir = resolved;
        }
        config.validate().map_err(|e| e.in_file(path))?;
        Ok(config)
    }

    /// The checks a config must pass to run as its own process (`node`, and `check-config`, which
    /// runs exactly these): everything [`NodeConfig::from_file`] checks, and a bootstrap node must
    /// keep its log on disk.
    pub fn check_for_node(&self) -> Result<(), ConfigError> {
        if self.node.bootstrap && self.node.data_dir.is_none() {
            return Err(ConfigError::new(
                "node.data_dir",
                "is not set but `node.bootstrap` is true: run as its own process, this node would start a new \
                 cluster on every restart, under ids the old one still uses; set data_dir (or use `cluster` for \
                 an in-memory demo)",
            ));
        }
        Ok(())
    }

    /// The embedded defaults with `id` and a matching name, bootstrapping if `id` is 1.
    pub fn embedded(id: u64) -> Self {
        let mut config = Self::from_toml(DEFAULT_CONFIG).expect("the embedded config is valid");
        config.node.id = id;
        config.node.name = format!("node-{id}");
        config.node.bootstrap = id == 1;
        config
    }

    /// The `join` tickets, parsed.
    pub fn join_tickets(&self) -> Result<Vec<PeerAddr>, ConfigError> {
        self.node
            .join
            .iter()
            .enumerate()
            .map(|(i, t)| {
                t.parse().map_err(|e| {
                    ConfigError::new(
                        format!("node.join[{i}]"),
                        format!("{e}; give a ticket as a node prints it, such as \"duet:grpc=127.0.0.1:7001\""),
                    )
                })
            })
            .collect()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.transport.validate()?;
        self.transport.check_service_names(SERVICE_CONFIG_NAMES)?;
        let node = &self.node;
        if node.id == 0 {
            return Err(ConfigError::new("node.id", "is 0; Raft node ids start at 1"));
        }
        if !node.bootstrap && node.join.is_empty() {
            return Err(ConfigError::new(
                "node.join",
                "is empty and node.bootstrap is false, so the node could never become a member; \
                 set bootstrap = true on the first node, or list a member's ticket in join",
            ));
        }
        self.join_tickets()?;
        if let Some(dir) = &node.data_dir {
            if dir.as_os_str().is_empty() {
                return Err(ConfigError::new("node.data_dir", "is empty; give a directory, or leave it out"));
            }
            if dir.exists() && !dir.is_dir() {
                return Err(ConfigError::new(
                    "node.data_dir",
                    format!("{} exists and is not a directory", dir.display()),
                ));
            }
        }
        if node.data_dir.is_some() {
            // Peers know a node by its ticket: a restart on new ports would leave them calling the old.
            let t = &self.transport;
            if t.mode != duet::Mode::Iroh && t.grpc.bind_address.port() == 0 {
                return Err(ConfigError::new(
                    "transport.grpc.bind_address",
                    "has port 0 but node.data_dir is set: a restarted node would get a new port and its \
                     peers would not find it; give a fixed port",
                ));
            }
            if t.mode != duet::Mode::Grpc && t.iroh.bind_port == 0 {
                return Err(ConfigError::new(
                    "transport.iroh.bind_port",
                    "is 0 but node.data_dir is set: a restarted node would get a new port and its peers \
                     would not find it; give a fixed UDP port",
                ));
            }
        }
        if node.max_image_bytes == 0 {
            return Err(ConfigError::new("node.max_image_bytes", "is 0; give the largest image size in bytes"));
        }
        if !(10..=10_000).contains(&node.heartbeat_ms) {
            return Err(ConfigError::new(
                "node.heartbeat_ms",
                format!("is {}; give 10 to 10000 milliseconds (default 100)", node.heartbeat_ms),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ConfigError {
        NodeConfig::from_toml(text).expect_err("config should be refused")
    }

    #[test]
    fn embedded_config_is_valid_offline_dual() {
        let config = NodeConfig::embedded(2);
        assert_eq!(config.node.name, "node-2");
        assert!(!config.node.bootstrap);
        assert_eq!(config.transport.mode, duet::Mode::Dual);
        assert_eq!(config.transport.iroh.relay_url(), None);
    }

    #[test]
    fn mistakes_name_their_key() {
        assert_eq!(err("[node]\nid = 0\nbootstrap = true").key(), "node.id");
        assert_eq!(err("[node]\nid = 2").key(), "node.join");
        assert_eq!(err("[node]\nid = 2\njoin = [\"duet:grpc=127.0.0.1:1\", \"nope\"]").key(), "node.join[1]");
        assert_eq!(err("[node]\nid = 1\nbootstrap = true\nheartbeat_ms = 1").key(), "node.heartbeat_ms");
        assert_eq!(
            err("[node]\nid = 1\nbootstrap = true\n[transport]\nmode = \"iroh\"\n[transport.iroh]\nenabled = false")
                .key(),
            "transport.iroh.enabled"
        );
        assert_eq!(err("[node]\nid = 1\nbootstrap = true\ndata_dir = \"\"").key(), "node.data_dir");
        let file = tempfile::NamedTempFile::new().unwrap();
        let data_dir_is_a_file = format!("[node]\nid = 1\nbootstrap = true\ndata_dir = {:?}", file.path());
        let refused = err(&data_dir_is_a_file);
        assert_eq!(refused.key(), "node.data_dir");
        assert!(refused.to_string().contains("not a directory"), "{refused}");
        let dir = tempfile::tempdir().unwrap();
        let ok = format!(
            "[node]\nid = 1\nbootstrap = true\ndata_dir = {:?}\n[transport.grpc]\nbind_address = \"127.0.0.1:7001\"\n\
             [transport.iroh]\ndiscovery_port = 7101",
            dir.path().join("new")
        );
        assert_eq!(NodeConfig::from_toml(&ok).unwrap().node.data_dir, Some(dir.path().join("new")));
        let dir = std::env::temp_dir().display().to_string().replace('\\', "/");
        let ports = |grpc: u16, udp: u16| {
            format!(
                "[node]\nid = 1\nbootstrap = true\ndata_dir = \"{dir}\"\n[transport.grpc]\nbind_address = \"127.0.0.1:{grpc}\"\n[transport.iroh]\ndiscovery_port = {udp}"
            )
        };
        assert_eq!(err(&ports(0, 7101)).key(), "transport.grpc.bind_address");
        assert_eq!(err(&ports(7001, 0)).key(), "transport.iroh.bind_port");
        NodeConfig::from_toml(&ports(7001, 7101)).expect("fixed ports with a data_dir");
        let typo = err("[node]\nid = 1\nbootstap = true").to_string();
        assert!(typo.contains("bootstap"), "{typo}");
    }

    #[test]
    fn relative_paths_follow_the_config_file_not_the_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf");
        std::fs::create_dir(&conf).unwrap();
        let path = conf.join("node.toml");
        std::fs::write(
            &path,
            "[node]\nid = 1\nbootstrap = true\ndata_dir = \"node-1-data\"\n[transport.grpc]\nbind_address = \"127.0.0.1:7001\"\n\
             [transport.iroh]\nbind_port = 7101\nsecret_key_file = \"keys/iroh.key\"",
        )
        .unwrap();
        let config = NodeConfig::from_file(&path).unwrap();
        assert_eq!(config.node.data_dir, Some(conf.join("node-1-data")));
        assert_eq!(config.transport.iroh.secret_key_file, Some(conf.join("keys/iroh.key")));
        let absolute = format!(
            "[node]\nid = 2\njoin = [\"duet:grpc=127.0.0.1:1\"]\ndata_dir = {:?}\n[transport.grpc]\nbind_address = \
             \"127.0.0.1:7002\"\n[transport.iroh]\nbind_port = 7102",
            dir.path().join("abs")
        );
        std::fs::write(&path, absolute).unwrap();
        assert_eq!(NodeConfig::from_file(&path).unwrap().node.data_dir, Some(dir.path().join("abs")));
    }

    #[test]
    fn a_bootstrap_node_without_a_data_dir_fails_the_node_checks() {
        let config = NodeConfig::from_toml("[node]\nid = 1\nbootstrap = true").expect("fine for an in-memory cluster");
        let refused = config.check_for_node().expect_err("not as its own process");
        assert_eq!(refused.key(), "node.data_dir");
        assert!(refused.to_string().contains("set data_dir"), "{refused}");
        NodeConfig::embedded(2).check_for_node().expect("a joining node may keep memory only");
    }

    #[test]
    fn a_misspelt_service_name_is_refused_with_the_known_ones() {
        for (key, text) in [
            ("prefer_iroh_for", "prefer_iroh_for = [\"helth\"]"),
            ("adaptive_for", "adaptive_for = [\"vms\"]"),
            ("routes", "routes = { imagez = \"iroh\" }"),
        ] {
            let refused = err(&format!("[node]\nid = 1\nbootstrap = true\n[transport.migration]\n{text}"));
            assert_eq!(refused.key(), format!("transport.migration.{key}"), "{refused}");
            let shown = refused.to_string();
            assert!(shown.contains("health, images, monitoring, raft, status, vm"), "lists the known names: {shown}");
        }
        NodeConfig::from_toml(
            "[node]\nid = 1\nbootstrap = true\n[transport.migration]\nprefer_iroh_for = [\"health\", \"images\"]",
        )
        .expect("known names pass");
    }

    #[test]
    fn the_known_service_names_are_the_generated_ones() {
        use crate::pb::orchestrator::v1 as pb;
        let generated = [
            duet_health::pb::health_methods::CHECK.config_name,
            pb::cluster_status_methods::GET_CLUSTER_STATUS.config_name,
            pb::monitoring_methods::GET_METRICS.config_name,
            pb::vm_service_methods::CREATE_VM.config_name,
            pb::image_service_methods::LIST_IMAGES.config_name,
            pb::raft_service_methods::APPEND_ENTRIES.config_name,
        ];
        assert_eq!(generated, SERVICE_CONFIG_NAMES);
    }
}
