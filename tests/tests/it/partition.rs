//! A silent cut of the Iroh path (a relay that drops every datagram, as a cut link does: no close, no
//! error reaches either side) and its healing. The connection's watcher declares the silent peer
//! dead within `duet::iroh::silence_bound`: Dual calls in flight are retried over gRPC when they are
//! idempotent and end `UNAVAILABLE` when not (never run twice), new calls go over gRPC at once, and
//! both come back to Iroh when the link heals.

use std::time::{Duration, Instant};

use duet::iroh::{Connector, SILENCE_FLOOR};
use duet::{BreakerState, Channel, Code, Config, PeerAddr, Server, Transport};
use duet_tests::harness::{self, Running};
use duet_tests::pb::matrix::v1::{EchoRequest, KindsClient, KindsServer};
use duet_tests::services::KindsImpl;
use duet_tests::udp_relay::UdpRelay;

/// Room for scheduling on a loaded 2-core machine: a bound on hangs, far below the calls' deadlines,
/// not a performance figure.
const SLACK: Duration = Duration::from_millis(1_500);

fn text(t: impl Into<String>) -> EchoRequest {
    EchoRequest { text: t.into(), ..Default::default() }
}

fn transport_of<T>(r: &duet::Response<T>) -> Option<Transport> {
    r.extensions().get::<Transport>().copied()
}

/// Calls until one succeeds over `want` or `budget` passes; returns how long it took.
async fn until_over(client: &mut KindsClient, want: Transport, budget: Duration) -> Duration {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < budget {
        match client.echo(text("probe")).await {
            Ok(r) if transport_of(&r) == Some(want) => return start.elapsed(),
            Ok(r) => last = format!("answered over {:?}", transport_of(&r)),
            Err(s) => last = format!("{s:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no call answered over {want} within {budget:?}; last: {last}");
}

/// A server reached over Iroh only through a relay that can cut the path, and a client connector.
struct Cut {
    running: Running,
    service: KindsImpl,
    relay: UdpRelay,
    connector: Connector,
    peer: PeerAddr,
}

async fn cut_setup() -> Cut {
    let service = KindsImpl::default();
    let running = harness::serve(Server::builder().add_service(KindsServer::new(service.clone()))).await;
    let server_addr = running.server.iroh_addr().unwrap();
    let relay = UdpRelay::start(server_addr.ip_addrs().next().copied().unwrap()).await.unwrap();
    // The client (IPv6 only) knows the server (IPv4 only) only by the relay's address.
    let client_ep = duet::iroh::endpoint::offline_builder_at("[::1]:0".parse().unwrap())
        .secret_key(iroh::SecretKey::generate())
        .bind()
        .await
        .unwrap();
    let connector = Connector::new(client_ep);
    let via_relay = iroh::EndpointAddr::new(server_addr.id).with_ip_addr(relay.addr());
    let peer = PeerAddr { grpc: running.server.grpc_addr(), iroh: Some(via_relay) };
    Cut { running, service, relay, connector, peer }
}

impl Cut {
    fn dual(&self, migration: &str) -> Channel {
        let cfg = Config::from_toml(&format!(
            "[transport]\nmode = \"dual\"\n[transport.migration]\nprefer_iroh_for = [\"kinds\"]\n{migration}"
        ))
        .unwrap();
        Channel::from_config(&cfg.transport, &self.connector, &self.peer).unwrap()
    }

    fn iroh(&self) -> Channel {
        Channel::iroh(&self.connector, self.peer.iroh.clone().unwrap())
    }

    async fn stop(self) {
        self.connector.endpoint().close().await;
        self.running.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_iroh_partition_ends_calls_by_their_deadline_moves_dual_to_grpc_and_heals() {
    let lab = cut_setup().await;
    let deadline = Duration::from_millis(2_000);
    let mut iroh = KindsClient::new(lab.iroh()).with_default_timeout(deadline);
    let mut dual =
        KindsClient::new(lab.dual("breaker_failures = 1\nbreaker_cooldown_ms = 300")).with_default_timeout(deadline);
    assert_eq!(iroh.echo(text("up")).await.unwrap().into_inner().text, "up");
    let first = dual.echo(text("up")).await.unwrap();
    assert_eq!(transport_of(&first), Some(Transport::Iroh));

    // Dual calls run back to back from the moment of the cut: the one in flight is retried over gRPC
    // once the silent connection is declared dead, and the calls after it go over gRPC at once.
    lab.relay.set_cut(true);
    let moved = until_over(&mut dual, Transport::Grpc, deadline * 2).await;
    println!("dual failover after silent cut: {} ms", moved.as_millis());
    assert!(moved < deadline, "the call in flight was retried before its deadline: {moved:?}");
    let next = dual.echo(text("after")).await.unwrap();
    assert_eq!(transport_of(&next), Some(Transport::Grpc), "new calls go over gRPC");

    // Iroh alone has nowhere to go: the call ends by its deadline or as unreachable, never later.
    let start = Instant::now();
    let err = iroh.echo(text("into the void")).await.unwrap_err();
    assert!(matches!(err.code(), Code::DeadlineExceeded | Code::Unavailable), "{err:?}");
    assert!(start.elapsed() < deadline + SLACK, "ended by its deadline: {:?}", start.elapsed());

    lab.relay.set_cut(false);
    let healed = until_over(&mut iroh, Transport::Iroh, Duration::from_secs(20)).await;
    println!("iroh answered {healed:?} after the link healed");
    let back = until_over(&mut dual, Transport::Iroh, Duration::from_secs(20)).await;
    println!("dual back on Iroh {back:?} after that");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_in_flight_at_a_silent_cut_are_retried_or_refused_within_the_bound_and_none_runs_twice() {
    let lab = cut_setup().await;
    let deadline = Duration::from_secs(6);
    let client = KindsClient::new(lab.dual("")).with_default_timeout(deadline);
    assert_eq!(transport_of(&client.clone().echo(text("warm")).await.unwrap()), Some(Transport::Iroh));

    // Handlers on the Iroh side take 2 s, so every call is waiting on the server when the cut comes.
    lab.service.set_delay(Transport::Iroh, 2_000);
    let calls: Vec<_> = (0..4)
        .map(|i| {
            let (echo, record) = (client.clone(), client.clone());
            tokio::spawn(async move {
                let e = echo.echo(text(format!("echo-{i}"))).await;
                let echo_done = Instant::now();
                let r = record.record(text(format!("record-{i}"))).await;
                (i, e, echo_done, r, Instant::now())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    lab.relay.set_cut(true);
    let cut = Instant::now();
    let mut slowest = Duration::ZERO;
    for call in calls {
        let (i, echo, echo_done, record, record_done) = call.await.unwrap();
        let echo = echo.expect("an idempotent call in flight is retried over gRPC");
        assert_eq!(echo.get_ref().text, format!("echo-{i}"));
        assert_eq!(transport_of(&echo), Some(Transport::Grpc));
        slowest = slowest.max(echo_done - cut);
        // The Record calls were sent after the echo returned, so over gRPC or on a dead Iroh path.
        match record {
            Ok(r) => assert_eq!(transport_of(&r), Some(Transport::Grpc), "{i}"),
            Err(s) => assert_eq!(s.code(), Code::Unavailable, "{i}: {s:?}"),
        }
        assert!(record_done - cut < deadline, "record-{i} ended by the bound, not its deadline");
    }
    println!("in-flight calls answered {} ms after the cut", slowest.as_millis());
    assert!(slowest < SILENCE_FLOOR * 2 + SLACK, "answered well before the 6 s deadline: {slowest:?}");

    // Non-idempotent calls in flight at the cut: UNAVAILABLE within the bound, run exactly once.
    lab.relay.set_cut(false);
    let client = KindsClient::new(lab.dual("")).with_default_timeout(deadline);
    let mut fresh = client.clone();
    until_over(&mut fresh, Transport::Iroh, Duration::from_secs(20)).await;
    let records: Vec<_> = (0..4)
        .map(|i| {
            let record = client.clone();
            tokio::spawn(async move { (i, record.record(text(format!("once-{i}"))).await, Instant::now()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    lab.relay.set_cut(true);
    let cut = Instant::now();
    for call in records {
        let (i, result, done) = call.await.unwrap();
        let status = result.expect_err("a non-idempotent call on a dead path is not retried");
        assert_eq!(status.code(), Code::Unavailable, "once-{i}: {status:?}");
        assert!(status.message().contains("declared dead"), "the reason is given: {status:?}");
        assert!(done - cut < SILENCE_FLOOR * 2 + SLACK, "once-{i} ended {:?} after the cut", done - cut);
    }
    // The handlers that were running finish on the server; nothing ran twice.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let runs = lab.service.recorded.lock().unwrap().clone();
    for i in 0..4 {
        assert_eq!(runs.get(&format!("once-{i}")), Some(&1), "once-{i} ran exactly once: {runs:?}");
    }
    assert!(runs.values().all(|&n| n == 1), "{runs:?}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_breaker_learns_from_silent_deadlines_but_not_from_slow_handlers() {
    let lab = cut_setup().await;
    let channel = lab.dual("breaker_failures = 2\nbreaker_cooldown_ms = 60000");
    let short = Duration::from_millis(250);
    let client = KindsClient::new(channel.clone()).with_default_timeout(short);
    assert_eq!(transport_of(&client.echo(text("warm")).await.unwrap()), Some(Transport::Iroh));

    // A slow handler: the peer acknowledges, the deadline passes, and that is the answer.
    lab.service.set_delay(Transport::Iroh, 1_000);
    for i in 0..3 {
        let status = client.record(text(format!("slow-{i}"))).await.unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    }
    assert_eq!(channel.iroh_breaker(), Some(BreakerState::Closed { failures: 0 }), "a slow handler is an answer");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let runs = lab.service.recorded.lock().unwrap().clone();
    assert!((0..3).all(|i| runs.get(&format!("slow-{i}")) == Some(&1)), "never retried: {runs:?}");

    // A silent peer: deadlines shorter than the silence bound pass with nothing heard, which the
    // breaker counts; once it opens, calls go over gRPC.
    lab.service.set_delay(Transport::Iroh, 0);
    lab.relay.set_cut(true);
    for i in 0..2 {
        let status = client.record(text(format!("silent-{i}"))).await.unwrap_err();
        assert!(matches!(status.code(), Code::DeadlineExceeded | Code::Unavailable), "{status:?}");
    }
    assert_eq!(channel.iroh_breaker(), Some(BreakerState::Open));
    let r = client.record(text("after")).await.unwrap();
    assert_eq!(transport_of(&r), Some(Transport::Grpc));
    lab.stop().await;
}

/// Polls the connector's view of `peer` until `done` holds or `budget` passes; returns the time taken.
async fn until_state(
    connector: &Connector,
    peer: iroh::EndpointId,
    budget: Duration,
    done: impl Fn(&duet::iroh::ConnectionState) -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < budget {
        if done(&connector.state(peer)) {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_that_dials_in_gets_a_silent_outgoing_connection_to_it_checked_at_once() {
    use duet::iroh::ConnectionState;
    let lab = cut_setup().await;
    // This side serves on the endpoint its connector dials from, as a cluster node does.
    let local = lab.connector.endpoint().clone();
    let here = Server::builder().iroh(local.clone()).add_service(KindsServer::new(KindsImpl::default())).serve().await;
    let here = here.unwrap();
    let peer_key = lab.running.server.endpoint().unwrap().secret_key().clone();
    let peer_id = peer_key.public();
    let client = KindsClient::new(lab.iroh()).with_default_timeout(Duration::from_secs(2));
    client.echo(text("warm")).await.unwrap();
    let before = lab.connector.connection(lab.peer.iroh.clone().unwrap()).await.unwrap().stable_id();

    // The peer dials in while the outgoing connection is alive: it is checked, answers, and stays.
    let dial_in = |key: iroh::SecretKey| {
        let to = duet::iroh::endpoint::addr(&local);
        async move {
            let ep = duet::iroh::endpoint::offline_builder_at("[::1]:0".parse().unwrap())
                .secret_key(key)
                .bind()
                .await
                .unwrap();
            let back = KindsClient::new(Channel::iroh(&Connector::new(ep.clone()), to));
            back.echo(text("hello from the peer")).await.unwrap();
            ep
        }
    };
    let first = dial_in(peer_key.clone()).await;
    tokio::time::sleep(SILENCE_FLOOR * 2).await;
    let after = lab.connector.connection(lab.peer.iroh.clone().unwrap()).await.unwrap().stable_id();
    assert_eq!(before, after, "a live connection survives the check");
    first.close().await;

    // The outgoing connection falls silent with no call on it (a peer gone and back as a new
    // process); the peer dialling in gets it checked and dropped, without any call waiting on it.
    lab.relay.set_cut(true);
    let second = dial_in(peer_key).await;
    let dropped =
        until_state(&lab.connector, peer_id, Duration::from_secs(5), |s| !matches!(s, ConnectionState::Connected))
            .await;
    let dropped = dropped.expect("the silent connection was dropped after the peer dialled in");
    println!("silent outgoing connection dropped {} ms after the peer dialled in", dropped.as_millis());
    assert!(dropped < SILENCE_FLOOR * 2 + SLACK, "{dropped:?}");

    // Healed, the connector redials.
    lab.relay.set_cut(false);
    let mut fresh = KindsClient::new(lab.iroh()).with_default_timeout(Duration::from_secs(1));
    until_over(&mut fresh, Transport::Iroh, Duration::from_secs(10)).await;
    second.close().await;
    here.shutdown().await;
    lab.stop().await;
}
