//! The `client` subcommand's output, from the real binary against a real cluster: JSON a script can
//! parse (snake_case fields, numbers as numbers, the transport that answered), text a person can read
//! (clear empty states, the leader by id), and errors as one `error: code: message` line.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use duet_orchestrator::cluster::Cluster;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// Longest a single `client` run may take before it is killed and the test fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `duet-orchestrator client --node <ticket> <args>` to completion (killed after
/// [`CALL_TIMEOUT`]).
async fn client(ticket: &str, args: &[&str]) -> Output {
    let mut argv = vec!["client".to_owned(), "--node".to_owned(), ticket.to_owned()];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    tokio::task::spawn_blocking(move || run_bounded(&argv)).await.expect("the client runner")
}

/// Runs the binary with `args`, reading its pipes on threads so a full pipe cannot stall it.
fn run_bounded(args: &[String]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_duet-orchestrator"))
        .args(args)
        // Warnings from the client's own endpoint would come before the error line under test.
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = vec![];
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + CALL_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the client") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`duet-orchestrator {}` ran over {CALL_TIMEOUT:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: stdout.join().expect("stdout reader"), stderr: stderr.join().expect("stderr reader") }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The run succeeded; its stdout.
fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The run succeeded and printed exactly one JSON document.
fn json(out: &Output, what: &str) -> Value {
    let stdout = ok(out, what);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{what}: not one JSON document ({e}):\n{stdout}"))
}

fn assert_transport(v: &Value, what: &str) {
    let transport = v["transport"].as_str();
    assert!(matches!(transport, Some("grpc" | "iroh")), "{what}: transport {transport:?} in {v}");
}

/// The run failed with exit status 1 and one plain `error: …` line on stderr; that line.
fn failed(out: &Output, what: &str) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: exit {:?}\nstdout:\n{}\nstderr:\n{stderr}",
        out.status,
        text(&out.stdout)
    );
    assert!(out.stdout.is_empty(), "{what}: printed an answer anyway:\n{}", text(&out.stdout));
    assert_eq!(stderr.lines().count(), 1, "{what}: one line, not a dump:\n{stderr}");
    assert!(stderr.starts_with("error: "), "{what}:\n{stderr}");
    // `Debug` output of a status or a transport error is all braces.
    for dump in ["Status {", "{ ", "Custom", "kind:", "metadata"] {
        assert!(!stderr.contains(dump), "{what}: a Rust dump ({dump:?}) in:\n{stderr}");
    }
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_is_one_document_with_stable_fields() {
    let cluster = Cluster::start(3, |_| {}, None).await.expect("cluster starts");
    let leader = cluster.leader(WAIT).await.expect("a leader");
    let ticket = cluster.node(1).ticket().to_string();

    let status = json(&client(&ticket, &["--output", "json", "status"]).await, "status");
    assert_transport(&status, "status");
    assert_eq!(status["node_id"], 1, "{status}");
    assert_eq!(status["leader_id"], leader, "{status}");
    assert!(status["term"].as_u64().is_some_and(|t| t >= 1), "{status}");
    assert!(status["commit_index"].is_u64(), "{status}");
    let members = status["members"].as_array().expect("members");
    assert_eq!(members.iter().map(|m| m["id"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3], "{status}");
    for m in members {
        let role = m["role"].as_str().expect("role");
        assert_eq!(role == "leader", m["id"] == leader, "{m}");
        assert!(["leader", "voter"].contains(&role), "{m}");
        assert!(m["name"].is_string() && m["ticket"].as_str().is_some_and(|t| t.starts_with("duet:")), "{m}");
        assert!(m["live"].is_boolean() && m["grpc_address"].is_string() && m["iroh_id"].is_string(), "{m}");
        assert!(m["last_seen_ms"].is_u64() || m["last_seen_ms"].is_null(), "{m}");
        assert!(m["reachable_over"].is_string() || m["reachable_over"].is_null(), "{m}");
    }
    // The answering node is live and has just heard from itself.
    assert_eq!(members[0]["live"], true, "{status}");
    assert_eq!(members[0]["last_seen_ms"], 0, "{status}");

    // The flag also works after the call.
    let vms = json(&client(&ticket, &["vms", "--output", "json"]).await, "vms");
    assert_transport(&vms, "vms");
    assert_eq!(vms["vms"], serde_json::json!([]), "{vms}");

    let images = json(&client(&ticket, &["--output", "json", "images"]).await, "images");
    assert_transport(&images, "images");
    assert_eq!(images["images"], serde_json::json!([]), "{images}");

    let created = json(
        &client(&ticket, &["--output", "json", "create-vm", "web-1", "--vcpus", "2", "--memory-mib", "128"]).await,
        "create-vm",
    );
    assert_transport(&created, "create-vm");
    let vm = &created["vm"];
    assert_eq!(vm["name"], "web-1", "{created}");
    assert_eq!(vm["state"], "created", "{created}");
    assert_eq!(vm["vcpus"], 2, "{created}");
    assert_eq!(vm["memory_mib"], 128, "{created}");
    assert!(vm["image"].is_null(), "{created}");
    assert!(vm["host_node"].as_u64().is_some_and(|h| (1..=3).contains(&h)), "{created}");
    assert!(vm["revision"].as_u64().is_some_and(|r| r > 0), "{created}");

    let vms = json(&client(&ticket, &["--output", "json", "vms"]).await, "vms after create");
    let listed = vms["vms"].as_array().expect("vms");
    assert_eq!(listed.len(), 1, "{vms}");
    assert_eq!(listed[0]["name"], "web-1", "{vms}");
    assert_eq!(listed[0]["state"], "created", "{vms}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_output_reads_plainly_and_errors_are_one_line() {
    let cluster = Cluster::start(3, |_| {}, None).await.expect("cluster starts");
    let leader = cluster.leader(WAIT).await.expect("a leader");
    let ticket = cluster.node(1).ticket().to_string();

    let vms = ok(&client(&ticket, &["vms"]).await, "vms");
    assert!(vms.lines().any(|l| l == "no VMs"), "{vms}");
    assert!(vms.starts_with("answered over grpc") || vms.starts_with("answered over iroh"), "{vms}");

    let status = ok(&client(&ticket, &["status"]).await, "status");
    assert!(status.contains(&format!("leader node {leader}, term ")), "{status}");
    assert!(!status.contains("leader 0"), "{status}");
    assert!(status.starts_with("answered by node 1 over "), "{status}");
    // A header and one row per member, the ROLE column lined up.
    let header = status.lines().find(|l| l.contains("ROLE")).expect("a table header");
    let role_at = header.find("ROLE").unwrap();
    let rows: Vec<&str> = status.lines().skip_while(|l| !l.contains("ROLE")).skip(1).collect();
    assert_eq!(rows.len(), 3, "{status}");
    for row in rows {
        let role = &row[role_at..];
        assert!(role.starts_with("leader") || role.starts_with("voter"), "{status}");
    }
    for dump in ["Member {", "voter=", "{"] {
        assert!(!status.contains(dump), "{status}");
    }

    let e = failed(&client(&ticket, &["start-vm", "nope"]).await, "start-vm nope");
    assert!(e.starts_with("error: not_found: "), "{e}");
    assert!(e.contains("nope"), "{e}");
    // JSON output leaves errors as text on stderr.
    let e = failed(&client(&ticket, &["--output", "json", "stop-vm", "nope"]).await, "stop-vm nope --output json");
    assert!(e.starts_with("error: not_found: "), "{e}");

    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such.img");
    let missing = missing.to_str().expect("a UTF-8 temp path");
    let e = failed(&client(&ticket, &["upload-image", "disk", missing]).await, "upload-image of a missing file");
    assert!(e.starts_with(&format!("error: cannot read image file {missing}: ")), "{e}");
    cluster.shutdown().await;

    // Nothing listens there: the failure is a code and a reason, not a transport error's `Debug`.
    let e = failed(&client("duet:grpc=127.0.0.1:1", &["--transport", "grpc", "health"]).await, "an unreachable node");
    assert!(e.starts_with("error: unavailable: "), "{e}");
}
