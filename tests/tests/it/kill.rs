//! A server process killed with SIGKILL in the middle of streaming calls: every call ends with a
//! status by its deadline on every transport, and once the node is restarted (same ports, same key)
//! the same channels reach it again on their own.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use duet::iroh::{Connector, endpoint};
use duet::{Channel, Code, Config, PeerAddr, Status};
use duet_tests::pb::matrix::v1::{EchoRequest, KindsClient};
use futures_util::future::join_all;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const DEADLINE: Duration = Duration::from_secs(3);
/// Room for scheduling on a loaded 2-core machine: a bound on hangs, not a performance figure.
const SLACK: Duration = Duration::from_secs(3);

async fn start(grpc: SocketAddr, iroh_port: u16, key: &Path) -> (Child, PeerAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_duet-test-node"))
        .arg(grpc.to_string())
        .arg(iroh_port.to_string())
        .arg(key)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn duet-test-node");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("node ready in time")
        .unwrap()
        .expect("node printed its ticket");
    let ticket = line.strip_prefix("READY ").expect("READY line");
    (child, ticket.parse().expect("a valid ticket"))
}

fn text(t: &str) -> EchoRequest {
    EchoRequest { text: t.into(), ..Default::default() }
}

fn ended_cleanly(status: &Status, what: &str) {
    assert!(
        matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled),
        "{what}: a dead server is UNAVAILABLE or the deadline, got {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_server_ends_calls_by_their_deadline_and_is_reached_again_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("node.key");
    let (mut node, peer) = start("127.0.0.1:0".parse().unwrap(), 0, &key).await;
    let grpc_addr = peer.grpc.unwrap();
    let iroh_addr = peer.iroh.clone().unwrap();
    let iroh_port = iroh_addr.ip_addrs().next().expect("an IP address").port();

    let connector = Connector::new(endpoint::bind_loopback().await.unwrap());
    let dual = Config::from_toml("[transport]\nmode = \"dual\"\n[transport.migration]\nprefer_iroh_for = [\"kinds\"]")
        .unwrap();
    let channels = [
        ("grpc", Channel::grpc_lazy(peer.grpc_uri().unwrap()).unwrap()),
        ("iroh", Channel::iroh(&connector, iroh_addr.clone())),
        ("dual", Channel::from_config(&dual.transport, &connector, &peer).unwrap()),
    ];
    let clients: Vec<_> = channels
        .iter()
        .map(|(name, ch)| (*name, KindsClient::new(ch.clone()).with_default_timeout(DEADLINE)))
        .collect();

    // A bidi stream on each transport, one reply in: the server is mid-call when it dies.
    let mut streams = vec![];
    for (name, client) in &clients {
        let (tx, rx) = mpsc::channel(4);
        tx.send(text("before")).await.unwrap();
        let mut replies = client.clone().chat(ReceiverStream::new(rx)).await.unwrap().into_inner();
        assert_eq!(replies.message().await.unwrap().unwrap().text, "BEFORE", "{name}");
        streams.push((*name, tx, replies));
    }

    node.kill().await.unwrap(); // SIGKILL: no goodbye on either transport
    let killed = Instant::now();
    let ends = join_all(streams.into_iter().map(|(name, tx, mut replies)| async move {
        let _ = tx.send(text("after")).await;
        let end = replies.message().await;
        (name, end, killed.elapsed())
    }))
    .await;
    for (name, end, took) in ends {
        let status = end.expect_err(name);
        ended_cleanly(&status, name);
        assert!(took < DEADLINE + SLACK, "{name}: the stream ended {took:?} after the kill, past its deadline");
    }

    // New calls while the node is down fail too, by their deadline.
    let calls = join_all(clients.iter().map(|(name, client)| {
        let client = client.clone();
        async move {
            let start = Instant::now();
            (*name, client.echo(text("down")).await, start.elapsed())
        }
    }))
    .await;
    for (name, result, took) in calls {
        ended_cleanly(&result.expect_err(name), name);
        assert!(took < DEADLINE + SLACK, "{name}: a call to a dead node took {took:?}");
    }

    // Restarted on the same ports with the same key: the same channels find it again.
    let (_node, again) = start(grpc_addr, iroh_port, &key).await;
    let restarted = Instant::now();
    assert_eq!(again.iroh.as_ref().unwrap().id, iroh_addr.id, "the key file keeps the endpoint id");
    // Iroh first, so its figure is measured from the restart.
    let iroh_first = clients.iter().filter(|c| c.0 == "iroh").chain(clients.iter().filter(|c| c.0 != "iroh"));
    for (name, client) in iroh_first {
        let client = client.clone().with_default_timeout(Duration::from_secs(1));
        let start = Instant::now();
        let mut last = None;
        while start.elapsed() < Duration::from_secs(60) {
            match client.echo(text("back")).await {
                Ok(reply) => {
                    last = None;
                    assert_eq!(reply.into_inner().text, "back");
                    break;
                }
                Err(status) => last = Some(status),
            }
        }
        assert!(last.is_none(), "{name}: never reconnected: {last:?}");
        if *name == "iroh" {
            println!("iroh reconnect after peer restart: {} ms", restarted.elapsed().as_millis());
        }
        println!("{name}: reconnected {:?} after the restart", start.elapsed());
    }
}
