//! A network partition on the Iroh path (a relay that drops every datagram, as a cut link does) and
//! its healing: Iroh calls end by their deadline, Dual traffic moves to gRPC once the dead connection
//! is given up, and both come back to Iroh when the link heals.

use std::time::{Duration, Instant};

use duet::iroh::endpoint::IDLE_TIMEOUT;
use duet::{Channel, Code, Config, PeerAddr, Server, Transport};
use duet_tests::harness;
use duet_tests::pb::matrix::v1::{EchoRequest, KindsClient, KindsServer};
use duet_tests::services::KindsImpl;
use duet_tests::udp_relay::UdpRelay;

fn text(t: &str) -> EchoRequest {
    EchoRequest { text: t.into(), ..Default::default() }
}

/// Calls until one succeeds over `want` or `budget` passes; returns how long it took.
async fn until_over(client: &mut KindsClient, want: Transport, budget: Duration) -> Duration {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < budget {
        match client.echo(text("probe")).await {
            Ok(r) if r.extensions().get::<Transport>() == Some(&want) => return start.elapsed(),
            Ok(r) => last = format!("answered over {:?}", r.extensions().get::<Transport>()),
            Err(s) => last = format!("{s:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no call answered over {want} within {budget:?}; last: {last}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_iroh_partition_ends_calls_by_their_deadline_moves_dual_to_grpc_and_heals() {
    let running = harness::serve(Server::builder().add_service(KindsServer::new(KindsImpl::default()))).await;
    let server_addr = running.server.iroh_addr().unwrap();
    let relay = UdpRelay::start(server_addr.ip_addrs().next().copied().unwrap()).await.unwrap();
    // The client (IPv6 only) knows the server (IPv4 only) only by the relay's address.
    let client_ep = duet::iroh::endpoint::offline_builder_at("[::1]:0".parse().unwrap())
        .secret_key(iroh::SecretKey::generate())
        .bind()
        .await
        .unwrap();
    let connector = duet::iroh::Connector::new(client_ep);
    let via_relay = iroh::EndpointAddr::new(server_addr.id).with_ip_addr(relay.addr());
    let peer = PeerAddr { grpc: running.server.grpc_addr(), iroh: Some(via_relay.clone()) };
    let cfg = Config::from_toml(
        "[transport]\nmode = \"dual\"\n[transport.migration]\nprefer_iroh_for = [\"kinds\"]\n\
         breaker_failures = 1\nbreaker_cooldown_ms = 300",
    )
    .unwrap();
    let deadline = Duration::from_millis(800);
    let mut iroh = KindsClient::new(Channel::iroh(&connector, via_relay)).with_default_timeout(deadline);
    let mut dual = KindsClient::new(Channel::from_config(&cfg.transport, &connector, &peer).unwrap())
        .with_default_timeout(deadline);
    assert_eq!(iroh.echo(text("up")).await.unwrap().into_inner().text, "up");
    let first = dual.echo(text("up")).await.unwrap();
    assert_eq!(first.extensions().get::<Transport>(), Some(&Transport::Iroh));

    relay.set_cut(true);
    let start = Instant::now();
    let err = iroh.echo(text("into the void")).await.unwrap_err();
    assert!(matches!(err.code(), Code::DeadlineExceeded | Code::Unavailable), "{err:?}");
    assert!(start.elapsed() < deadline + Duration::from_secs(2), "ended by its deadline: {:?}", start.elapsed());

    // Once the silent connection is given up, Dual calls find Iroh unreachable and go over gRPC.
    let moved = until_over(&mut dual, Transport::Grpc, IDLE_TIMEOUT + Duration::from_secs(10)).await;
    println!("dual moved to gRPC {moved:?} into the partition");

    relay.set_cut(false);
    let healed = until_over(&mut iroh, Transport::Iroh, Duration::from_secs(20)).await;
    println!("iroh answered {healed:?} after the link healed");
    let back = until_over(&mut dual, Transport::Iroh, Duration::from_secs(20)).await;
    println!("dual back on Iroh {back:?} after that");
    connector.endpoint().close().await;
    running.stop().await;
}
