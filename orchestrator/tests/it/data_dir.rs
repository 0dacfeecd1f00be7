//! One `data_dir` serves one node process at a time: a second opener is refused, naming the key.

use duet_orchestrator::config::NodeConfig;
use duet_orchestrator::node::{NodeDisk, NodeError};

#[test]
fn a_data_dir_in_use_is_refused_until_its_holder_lets_go() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = NodeConfig::embedded(1);
    config.node.data_dir = Some(dir.path().to_owned());
    let first = NodeDisk::open(&config).expect("the first opener gets the directory");
    let err = NodeDisk::open(&config).expect_err("a second opener is refused");
    assert!(matches!(err, NodeError::Storage { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("node.data_dir") && text.contains("in use"), "{text}");
    drop(first);
    NodeDisk::open(&config).expect("free again once the first disk is gone");
}

#[test]
fn a_data_dir_belongs_to_the_node_that_first_used_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = NodeConfig::embedded(1);
    config.node.data_dir = Some(dir.path().to_owned());
    drop(NodeDisk::open(&config).expect("node 1 takes the directory"));
    config.node.id = 2;
    let err = NodeDisk::open(&config).expect_err("node 2 is refused").to_string();
    assert!(err.contains("belongs to node 1") && err.contains("node.data_dir"), "{err}");
}
