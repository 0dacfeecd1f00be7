//! The README's first command: the three-node demo exits 0 and prints every phase's row.

use std::process::Command;

#[test]
fn the_demo_command_runs_every_phase_and_exits_cleanly() {
    let out = Command::new(env!("CARGO_BIN_EXE_duet-orchestrator"))
        .args(["cluster", "--demo", "--image-mib", "2"])
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for phase in ["2 health", "2 status", "2 monitoring", "3 vm", "3 images", "4 peer connector", "5 raft"] {
        assert!(stdout.contains(phase), "no {phase:?} row in:\n{stdout}");
    }
    // The embedded config: VM calls on Iroh first, images on gRPC.
    let row = |call: &str| stdout.lines().find(|l| l.contains(call)).unwrap_or_default().to_owned();
    assert!(row("VmService/CreateVm").contains("iroh"), "{stdout}");
    assert!(row("ImageService/UploadImage").contains("grpc"), "{stdout}");
    assert!(stdout.contains("VM \"web-1\" running on node"), "{stdout}");
}

#[test]
fn a_config_mistake_names_its_key() {
    let out = run_with_config("[node]\nid = 2\n", &["check-config"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`node.join`") && stderr.contains("node.toml"), "{stderr}");
}

#[test]
fn a_bootstrapping_node_process_without_a_data_dir_is_refused() {
    let out = run_with_config("[node]\nid = 1\nbootstrap = true\n", &["node", "--config"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`node.bootstrap`") && stderr.contains("`node.data_dir`"), "{stderr}");
}

#[test]
fn check_config_refuses_what_node_refuses() {
    let out = run_with_config("[node]\nid = 1\nbootstrap = true\n", &["check-config"]);
    assert!(!out.status.success(), "check-config runs the node's checks");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`node.data_dir`"), "{stderr}");
    let misspelt =
        "[node]\nid = 2\njoin = [\"duet:grpc=127.0.0.1:7001\"]\n[transport.migration]\nprefer_iroh_for = [\"helth\"]\n";
    let out = run_with_config(misspelt, &["check-config"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("\"helth\"") && stderr.contains("health, images"), "{stderr}");
}

/// Runs the binary with `args` followed by the path of a `node.toml` holding `config`.
fn run_with_config(config: &str, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("node.toml");
    std::fs::write(&path, config).expect("write config");
    Command::new(env!("CARGO_BIN_EXE_duet-orchestrator")).args(args).arg(&path).output().expect("the binary runs")
}

#[test]
fn a_data_dir_left_in_the_working_directory_is_not_silently_abandoned() {
    // Relative data_dir paths used to be taken from the working directory; they are now taken from
    // the config file's. A node upgraded in place must not start empty beside its old data.
    let cwd = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(cwd.path().join("data")).unwrap();
    std::fs::create_dir(cwd.path().join("conf")).unwrap();
    let config = cwd.path().join("conf").join("node.toml");
    std::fs::write(
        &config,
        "[node]\nid = 1\nbootstrap = true\ndata_dir = \"data\"\n[transport.grpc]\nbind_address = \"127.0.0.1:7001\"\n\
         [transport.iroh]\nbind_port = 7101\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_duet-orchestrator"))
        .current_dir(cwd.path())
        .args(["check-config", "conf/node.toml"])
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("`node.data_dir`") && stderr.contains("working directory"),
        "{stderr}"
    );
    std::fs::create_dir(cwd.path().join("conf").join("data")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_duet-orchestrator"))
        .current_dir(cwd.path())
        .args(["check-config", "conf/node.toml"])
        .output()
        .expect("the binary runs");
    assert!(out.status.success(), "next to the config file it is found: {}", String::from_utf8_lossy(&out.stderr));
}
