//! duet across a network lab (`duet_tests::lab`): hosts in network namespaces behind NATs and
//! firewalls, a real Iroh relay server, impairments made with nftables. Each test asserts the path
//! Iroh actually used (`Connection::paths()`). Needs root and `nft`; a lab that cannot be built fails.

use std::time::{Duration, Instant};

use duet::iroh::Connector;
use duet::{Channel, Code, PeerAddr, Server, Transport};
use duet_tests::lab::{Device, NetLab, RouterPreset};
use duet_tests::pb::matrix::v1::{CountRequest, EchoRequest, KindsClient, KindsServer};
use duet_tests::services::KindsImpl;
use futures_util::StreamExt;
use iroh::EndpointAddr;
use tokio::sync::oneshot;

fn text(t: impl Into<String>) -> EchoRequest {
    EchoRequest { text: t.into(), ..Default::default() }
}

async fn lab() -> NetLab {
    NetLab::new().await.unwrap_or_else(|e| panic!("{e}"))
}

/// What a server host hands its clients: the ticket by key and relay only, and its gRPC address.
struct Served {
    by_relay: EndpointAddr,
    /// The ticket by key and the host's own address (no relay).
    direct: EndpointAddr,
    grpc: std::net::SocketAddr,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

/// Serves the Kinds service on `host` from the lab config, on gRPC and Iroh, until told to stop.
async fn serve_on(lab: &NetLab, host: &Device) -> Served {
    let cfg = lab.config("dual", "");
    let relay: iroh::RelayUrl = lab.relay_url.parse().unwrap();
    let ip = host.ip().expect("an IPv4 address");
    let (ready_tx, ready) = oneshot::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = host
        .spawn(move |_| async move {
            let endpoint = duet::iroh::endpoint::bind_from_config(&cfg.transport.iroh).await.expect("endpoint");
            tokio::time::timeout(Duration::from_secs(20), endpoint.online()).await.expect("home relay reached");
            let server = Server::from_config(&cfg.transport)
                .unwrap()
                .iroh(endpoint.clone())
                .add_service(KindsServer::new(KindsImpl::default()))
                .serve()
                .await
                .expect("serve");
            let by_relay = EndpointAddr::new(endpoint.id()).with_relay_url(relay);
            let port = endpoint.bound_sockets()[0].port();
            let direct = EndpointAddr::new(endpoint.id()).with_ip_addr((ip, port).into());
            let _ = ready_tx.send((by_relay, direct));
            let _ = stopped.await;
            server.shutdown().await;
            endpoint.close().await;
        })
        .expect("spawn on the server host");
    let (by_relay, direct) =
        tokio::time::timeout(Duration::from_secs(30), ready).await.expect("server up in time").unwrap();
    Served { by_relay, direct, grpc: (ip, 50051).into(), stop, done }
}

impl Served {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.done.await;
    }
}

/// Whether the connection's selected path goes through the relay (`None`: no path selected).
fn selected_is_relay(conn: &iroh::endpoint::Connection) -> Option<bool> {
    conn.paths().iter().find(|p| p.is_selected()).map(|p| p.is_relay())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "network lab: needs root and nft; run with --ignored (CI does)"]
async fn behind_two_home_nats_calls_start_on_the_relay_and_move_to_a_hole_punched_path() {
    let lab = lab().await;
    let (home_a, home_b) =
        (lab.router("home-a", RouterPreset::Home).await, lab.router("home-b", RouterPreset::Home).await);
    let (a, b) = (lab.host("a", &home_a).await, lab.host("b", &home_b).await);
    let served = serve_on(&lab, &b).await;
    let cfg = lab.config("iroh", "fallback_to_grpc = false");
    let peer = served.by_relay.clone();
    let report = a
        .spawn(move |_| async move {
            let endpoint = duet::iroh::endpoint::bind_from_config(&cfg.transport.iroh).await.expect("endpoint");
            tokio::time::timeout(Duration::from_secs(20), endpoint.online()).await.expect("home relay reached");
            let connector = Connector::from_config(endpoint.clone(), &cfg.transport.iroh);
            let client =
                KindsClient::new(Channel::iroh(&connector, peer.clone())).with_default_timeout(Duration::from_secs(10));
            // Dialled by key and relay: the handshake can only go through the relay.
            let conn = connector.connection(peer).await.expect("the connection");
            let started_on_relay = selected_is_relay(&conn);
            let first = client.clone().echo(text("first")).await.expect("first call");
            assert_eq!(first.get_ref().text, "first");
            // Callers keep calling while iroh punches through; every call must succeed.
            let (stop_tx, stop) = tokio::sync::watch::channel(false);
            let callers: Vec<_> = (0..4)
                .map(|c| {
                    let (client, stop) = (client.clone(), stop.clone());
                    tokio::spawn(async move {
                        let (mut ok, mut failed) = (0usize, vec![]);
                        while !*stop.borrow() {
                            match client.echo(text(format!("{c}-{ok}"))).await {
                                Ok(r) if r.get_ref().text == format!("{c}-{ok}") => ok += 1,
                                Ok(r) => failed.push(format!("wrong answer {:?}", r.get_ref().text)),
                                Err(s) => failed.push(format!("{s:?}")),
                            }
                        }
                        (ok, failed)
                    })
                })
                .collect();
            let start = Instant::now();
            let mut direct = None;
            while start.elapsed() < Duration::from_secs(30) {
                if selected_is_relay(&conn) == Some(false) {
                    direct = Some(start.elapsed());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // A few more calls on the direct path.
            tokio::time::sleep(Duration::from_millis(300)).await;
            stop_tx.send(true).unwrap();
            let mut calls = 0;
            let mut failures = vec![];
            for c in callers {
                let (ok, failed) = c.await.unwrap();
                calls += ok;
                failures.extend(failed);
            }
            // Hole punching can finish within a round trip or two, so what proves the relay carried
            // the first packets is its path's counters, not a glance at the selected path.
            let relay_carried =
                conn.paths().iter().filter(|p| p.is_relay()).map(|p| p.stats().udp_rx.datagrams).sum::<u64>();
            let paths: Vec<String> = conn
                .paths()
                .iter()
                .map(|p| format!("{:?} selected={} relay={}", p.remote_addr(), p.is_selected(), p.is_relay()))
                .collect();
            endpoint.close().await;
            (started_on_relay, relay_carried, direct, calls, failures, paths)
        })
        .unwrap()
        .await
        .unwrap();
    let (started_on_relay, relay_carried, direct, calls, failures, paths) = report;
    println!(
        "home NATs: selected path at connect is the relay: {started_on_relay:?}; {relay_carried} datagrams came over the relay; direct after {direct:?}; {calls} calls meanwhile; paths {paths:?}"
    );
    assert!(relay_carried > 0, "dialled by key and relay, the first packets came through the relay: {paths:?}");
    assert!(direct.is_some(), "the connection moved to a direct, hole-punched path: {paths:?}");
    assert!(failures.is_empty(), "calls during the switch failed: {failures:?}");
    assert!(calls > 0);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "network lab: needs root and nft; run with --ignored (CI does)"]
async fn behind_nats_that_defeat_hole_punching_every_method_kind_goes_through_the_relay() {
    let lab = lab().await;
    let cgnat_a = lab.router("cgnat-a", RouterPreset::IspCgnatSymmetric).await;
    let cgnat_b = lab.router("cgnat-b", RouterPreset::IspCgnatSymmetric).await;
    let (a, b) = (lab.host("a", &cgnat_a).await, lab.host("b", &cgnat_b).await);
    let served = serve_on(&lab, &b).await;
    let cfg = lab.config("iroh", "fallback_to_grpc = false");
    let peer = served.by_relay.clone();
    let report = a
        .spawn(move |_| async move {
            let endpoint = duet::iroh::endpoint::bind_from_config(&cfg.transport.iroh).await.expect("endpoint");
            tokio::time::timeout(Duration::from_secs(20), endpoint.online()).await.expect("home relay reached");
            let connector = Connector::from_config(endpoint.clone(), &cfg.transport.iroh);
            let client = KindsClient::new(Channel::iroh(&connector, peer.clone()))
                .with_default_timeout(Duration::from_secs(60))
                .max_decoding_message_size(1 << 20);
            let unary = client.echo(text("unary")).await.expect("unary").into_inner().text;
            let count = client.count(CountRequest { count: 100 }).await.expect("server streaming").into_inner();
            let counted = count.count().await;
            let joined = client
                .join(futures_util::stream::iter((0..50).map(|i| text(i.to_string()))))
                .await
                .expect("client streaming")
                .into_inner()
                .text;
            // 32 MiB through a bidi stream in 64 KiB messages, hashed on both ends.
            let chunk =
                |i: usize| -> String { (0..65_536).map(|j| (b'a' + ((i * 7 + j) % 26) as u8) as char).collect() };
            let mut sent = blake3::Hasher::new();
            for i in 0..512 {
                sent.update(chunk(i).to_uppercase().as_bytes());
            }
            let mut replies = client
                .chat(futures_util::stream::iter((0..512).map(move |i| text(chunk(i)))))
                .await
                .expect("bidi")
                .into_inner();
            let mut got = blake3::Hasher::new();
            let mut bytes = 0usize;
            while let Some(reply) = replies.next().await {
                let reply = reply.expect("a reply");
                bytes += reply.text.len();
                got.update(reply.text.as_bytes());
            }
            let conn = connector.connection(peer).await.expect("the connection");
            let relay_only = conn.paths().iter().all(|p| !p.is_selected() || p.is_relay());
            let selected = selected_is_relay(&conn);
            endpoint.close().await;
            (unary, counted, joined, bytes, sent.finalize() == got.finalize(), relay_only, selected)
        })
        .unwrap()
        .await
        .unwrap();
    let (unary, counted, joined, bytes, same_hash, relay_only, selected) = report;
    assert_eq!(unary, "unary");
    assert_eq!(counted, 100);
    assert!(!joined.is_empty(), "client streaming answered");
    assert_eq!(bytes, 32 << 20, "32 MiB came back");
    assert!(same_hash, "the 32 MiB stream arrived intact");
    assert_eq!(selected, Some(true), "the selected path is the relay");
    assert!(relay_only, "no direct path was ever selected");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "network lab: needs root and nft; run with --ignored (CI does)"]
async fn a_server_behind_a_nat_is_out_of_grpc_reach_and_dual_serves_every_call_over_iroh() {
    let lab = lab().await;
    let home = lab.router("home", RouterPreset::Home).await;
    let b = lab.host("b", &home).await;
    let a = lab.host("a", &lab.dc).await;
    let served = serve_on(&lab, &b).await;
    let cfg = lab.config("dual", "prefer_iroh_for = [\"kinds\"]");
    let peer = PeerAddr { grpc: Some(served.grpc), iroh: Some(served.by_relay.clone()) };
    let report = a
        .spawn(move |_| async move {
            // gRPC cannot reach a host behind a NAT with no port forward.
            let grpc = Channel::grpc_from_config(&cfg.transport, &peer).unwrap();
            let grpc_err = KindsClient::new(grpc)
                .with_default_timeout(Duration::from_secs(3))
                .echo(text("over grpc"))
                .await
                .expect_err("gRPC cannot reach it");
            let endpoint = duet::iroh::endpoint::bind_from_config(&cfg.transport.iroh).await.expect("endpoint");
            tokio::time::timeout(Duration::from_secs(20), endpoint.online()).await.expect("home relay reached");
            let connector = Connector::from_config(endpoint.clone(), &cfg.transport.iroh);
            let dual = Channel::from_config(&cfg.transport, &connector, &peer).unwrap();
            let client = KindsClient::new(dual).with_default_timeout(Duration::from_secs(10));
            let mut transports = vec![];
            for i in 0..20 {
                let r = client.echo(text(i.to_string())).await.expect("a Dual call");
                transports.push(r.extensions().get::<Transport>().copied());
            }
            let streamed = client.count(CountRequest { count: 10 }).await.expect("server streaming");
            transports.push(streamed.extensions().get::<Transport>().copied());
            endpoint.close().await;
            (grpc_err, transports)
        })
        .unwrap()
        .await
        .unwrap();
    let (grpc_err, transports) = report;
    assert!(matches!(grpc_err.code(), Code::Unavailable | Code::DeadlineExceeded), "{grpc_err:?}");
    assert!(transports.iter().all(|t| *t == Some(Transport::Iroh)), "{transports:?}");
    served.stop().await;
}

/// A UDP echo on `host`, to measure whether UDP gets through.
async fn udp_echo(host: &Device, port: u16) -> std::net::SocketAddr {
    let ip = host.ip().unwrap();
    host.spawn(move |_| async move {
        let socket = tokio::net::UdpSocket::bind(("0.0.0.0", port)).await.unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let _ = socket.send_to(&buf[..n], from).await;
            }
        });
    })
    .unwrap()
    .await
    .unwrap();
    (ip, port).into()
}

/// Whether a datagram to `echo` comes back within a second (three tries).
async fn udp_answers(echo: std::net::SocketAddr) -> bool {
    let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await.unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        let _ = socket.send_to(b"ping", echo).await;
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(330), socket.recv_from(&mut buf)).await {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "network lab: needs root and nft; run with --ignored (CI does)"]
async fn with_udp_blocked_iroh_rides_the_relay_over_tcp_and_without_a_relay_dual_pays_iroh_once() {
    let lab = lab().await;
    let tcp_only = lab.tcp_only_router("tcp-only").await;
    let a = lab.host("a", &tcp_only).await;
    let b = lab.host("b", &lab.dc).await;
    let served = serve_on(&lab, &b).await;
    let with_relay = lab.config("dual", "prefer_iroh_for = [\"kinds\"]");
    let without_relay = lab.config_without_relay("dual", "prefer_iroh_for = [\"kinds\"]\nbreaker_cooldown_ms = 1000");
    let (relayed, direct, grpc) = (served.by_relay.clone(), served.direct.clone(), served.grpc);
    let echo = udp_echo(&b, 40_000).await;
    let control = lab.relay_host.spawn(move |_| udp_answers(echo)).unwrap().await.unwrap();
    assert!(control, "UDP from an unfiltered host reaches the echo");
    let report = a
        .spawn(move |_| async move {
            // The firewall is real: a UDP datagram to the server goes nowhere, a TCP connect works.
            let udp_blocked = !udp_answers(echo).await;
            let tcp_ok = tokio::net::TcpStream::connect(grpc).await.is_ok();

            // With the relay: its HTTPS connection is TCP, so Iroh still reaches the peer.
            let endpoint = duet::iroh::endpoint::bind_from_config(&with_relay.transport.iroh).await.unwrap();
            tokio::time::timeout(Duration::from_secs(20), endpoint.online()).await.expect("home relay reached");
            let connector = Connector::from_config(endpoint.clone(), &with_relay.transport.iroh);
            let peer = PeerAddr { grpc: Some(grpc), iroh: Some(relayed.clone()) };
            let client = KindsClient::new(Channel::from_config(&with_relay.transport, &connector, &peer).unwrap())
                .with_default_timeout(Duration::from_secs(10));
            let over_relay = client.echo(text("relay")).await.unwrap().extensions().get::<Transport>().copied();
            let conn = connector.connection(relayed).await.unwrap();
            let relay_path = selected_is_relay(&conn);
            endpoint.close().await;

            // Without a relay there is no way for Iroh: Dual serves over gRPC, and only the first
            // call waits for the Iroh attempt (half its deadline); the rest go over gRPC at once.
            let endpoint = duet::iroh::endpoint::bind_from_config(&without_relay.transport.iroh).await.unwrap();
            let connector = Connector::from_config(endpoint.clone(), &without_relay.transport.iroh);
            let peer = PeerAddr { grpc: Some(grpc), iroh: Some(direct) };
            let deadline = Duration::from_secs(2);
            let client = KindsClient::new(Channel::from_config(&without_relay.transport, &connector, &peer).unwrap())
                .with_default_timeout(deadline);
            let started = Instant::now();
            let mut calls = vec![];
            for i in 0..40 {
                let t = Instant::now();
                let r = client.echo(text(i.to_string())).await.expect("every call is answered");
                calls.push((t.elapsed(), r.extensions().get::<Transport>().copied()));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let took = started.elapsed();
            endpoint.close().await;
            (udp_blocked, tcp_ok, over_relay, relay_path, calls, took, deadline)
        })
        .unwrap()
        .await
        .unwrap();
    let (udp_blocked, tcp_ok, over_relay, relay_path, calls, took, deadline) = report;
    assert!(udp_blocked && tcp_ok, "the firewall drops UDP and passes TCP");
    assert_eq!(over_relay, Some(Transport::Iroh), "Iroh through the relay over TCP");
    assert_eq!(relay_path, Some(true));
    assert!(calls.iter().all(|(_, t)| *t == Some(Transport::Grpc)), "{calls:?}");
    let paid: Vec<_> = calls.iter().filter(|(d, _)| *d >= deadline / 4).collect();
    let cooldowns = took.as_millis() / 1000 + 1;
    println!("UDP blocked, no relay: {} of {} calls waited for Iroh over {took:?}: {paid:?}", paid.len(), calls.len());
    assert!(paid.len() as u128 <= cooldowns, "the Iroh attempt was paid more than once per cool-down: {calls:?}");
    assert!(paid.len() <= 2, "not on every call: {calls:?}");
    served.stop().await;
}

/// Drops `percent` % of the UDP packets `router` forwards, counting what it sees and drops.
fn set_loss(router: &duet_tests::lab::Router, percent: u32) {
    let _ = duet_tests::lab::nft_router(router, "delete table inet loss");
    let script = format!(
        "table inet loss {{\n counter seen {{}}\n counter dropped {{}}\n chain impair {{\n  \
         type filter hook forward priority -10; policy accept;\n  \
         meta l4proto udp counter name \"seen\" numgen random mod 100 < {percent} counter name \"dropped\" drop\n }}\n}}\n"
    );
    duet_tests::lab::nft_router(router, &script).unwrap_or_else(|e| panic!("loss rule: {e}"));
}

/// The packets the loss rule saw and dropped.
fn loss_counters(router: &duet_tests::lab::Router) -> (u64, u64) {
    let count = |name| duet_tests::lab::nft_counter(router, name).unwrap();
    (count("seen"), count("dropped"))
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "network lab: needs root and nft; run with --ignored (CI does)"]
async fn unary_and_streaming_calls_complete_through_one_and_five_percent_packet_loss() {
    let lab = lab().await;
    let lossy = lab.router("lossy", RouterPreset::Public).await;
    let a = lab.host("a", &lossy).await;
    let b = lab.host("b", &lab.dc).await;
    let served = serve_on(&lab, &b).await;
    for percent in [1, 5] {
        set_loss(&lossy, percent);
        let cfg = lab.config("iroh", "fallback_to_grpc = false");
        let peer = served.direct.clone();
        let (latencies, streamed, stream_took) = a
            .spawn(move |_| async move {
                let endpoint = duet::iroh::endpoint::bind_from_config(&cfg.transport.iroh).await.unwrap();
                let connector = Connector::from_config(endpoint.clone(), &cfg.transport.iroh);
                let client = KindsClient::new(Channel::iroh(&connector, peer))
                    .with_default_timeout(Duration::from_secs(30))
                    .max_decoding_message_size(1 << 20);
                let mut latencies = vec![];
                for i in 0..300 {
                    let t = Instant::now();
                    let r = client.echo(text(i.to_string())).await.expect("a unary call through loss");
                    assert_eq!(r.get_ref().text, i.to_string());
                    latencies.push(t.elapsed());
                }
                let chunk = "x".repeat(65_536);
                let t = Instant::now();
                let mut replies = client
                    .chat(futures_util::stream::iter((0..64).map(move |_| text(chunk.clone()))))
                    .await
                    .expect("a bidi stream through loss")
                    .into_inner();
                let mut streamed = 0usize;
                while let Some(reply) = replies.next().await {
                    streamed += reply.expect("a reply").text.len();
                }
                let stream_took = t.elapsed();
                endpoint.close().await;
                (latencies, streamed, stream_took)
            })
            .unwrap()
            .await
            .unwrap();
        let (seen, dropped) = loss_counters(&lossy);
        let mut sorted = latencies.clone();
        sorted.sort();
        let measured = dropped as f64 / seen.max(1) as f64 * 100.0;
        println!(
            "loss {percent}%: measured {measured:.1}% ({dropped} of {seen} UDP packets); unary p50 {:?} p99 {:?}; \
             4 MiB echoed both ways in {stream_took:?}",
            sorted[sorted.len() / 2],
            sorted[sorted.len() * 99 / 100]
        );
        assert_eq!(streamed, 4 << 20);
        assert!(seen > 1_000, "the calls crossed the lossy router: {seen} packets");
        assert!(
            measured > percent as f64 * 0.4 && measured < percent as f64 * 2.5,
            "the rule dropped {measured:.1}% for a {percent}% target"
        );
    }
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "network lab: needs root and nft; run with --ignored (CI does)"]
async fn a_silent_cut_between_two_hosts_moves_dual_to_grpc_within_a_second_and_heals() {
    let lab = lab().await;
    let edge = lab.router("edge", RouterPreset::Public).await;
    let a = lab.host("a", &edge).await;
    let b = lab.host("b", &lab.dc).await;
    let served = serve_on(&lab, &b).await;
    let cfg = lab.config("dual", "prefer_iroh_for = [\"kinds\"]\nbreaker_cooldown_ms = 300");
    let peer = PeerAddr { grpc: Some(served.grpc), iroh: Some(served.direct.clone()) };
    let (cut_tx, cut_rx) = oneshot::channel::<()>();
    let (cut_done_tx, cut_done) = oneshot::channel::<()>();
    let (heal_tx, heal_rx) = oneshot::channel::<()>();
    let client = a
        .spawn(move |_| async move {
            let endpoint = duet::iroh::endpoint::bind_from_config(&cfg.transport.iroh).await.unwrap();
            let connector = Connector::from_config(endpoint.clone(), &cfg.transport.iroh);
            let client = KindsClient::new(Channel::from_config(&cfg.transport, &connector, &peer).unwrap())
                .with_default_timeout(Duration::from_secs(5));
            let first = client.echo(text("up")).await.unwrap();
            let before = first.extensions().get::<Transport>().copied();
            let _ = cut_tx.send(());
            let _ = cut_done.await;
            // Calls back to back from the cut: the one in flight is retried over gRPC once the
            // silent connection is declared dead, the rest go over gRPC at once.
            let cut = Instant::now();
            let moved = loop {
                let r = client.echo(text("during")).await.expect("an idempotent call is answered");
                if r.extensions().get::<Transport>() == Some(&Transport::Grpc) {
                    break cut.elapsed();
                }
                assert!(cut.elapsed() < Duration::from_secs(10), "still on Iroh 10 s into the cut");
            };
            let _ = heal_tx.send(());
            let healed = Instant::now();
            let back = loop {
                let r = client.echo(text("after")).await.expect("answered after the heal");
                if r.extensions().get::<Transport>() == Some(&Transport::Iroh) {
                    break healed.elapsed();
                }
                assert!(healed.elapsed() < Duration::from_secs(20), "not back on Iroh 20 s after the heal");
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            endpoint.close().await;
            (before, moved, back)
        })
        .unwrap();
    cut_rx.await.unwrap();
    // Everything but TCP to the server's gRPC port is dropped at the client's router, both ways:
    // the direct path, and the relay's too (which would otherwise carry Iroh around the cut).
    let b_ip = served.grpc.ip();
    let cut = format!(
        "table inet cut {{\n counter dropped {{}}\n chain forward {{\n  type filter hook forward priority -20; policy accept;\n  \
         tcp dport 50051 accept\n  tcp sport 50051 accept\n  meta l4proto udp counter name \"dropped\" drop\n  \
         ip daddr {relay} counter name \"dropped\" drop\n  ip saddr {relay} counter name \"dropped\" drop\n  \
         ip daddr {b_ip} counter name \"dropped\" drop\n  ip saddr {b_ip} counter name \"dropped\" drop\n }}\n}}\n",
        relay = lab.relay_host.ip().unwrap()
    );
    duet_tests::lab::nft_router(&edge, &cut).unwrap_or_else(|e| panic!("cut: {e}"));
    cut_done_tx.send(()).unwrap();
    heal_rx.await.unwrap();
    let dropped = duet_tests::lab::nft_counter(&edge, "dropped").expect("the cut's counter");
    duet_tests::lab::nft_router(&edge, "delete table inet cut").unwrap();
    let (before, moved, back) = client.await.unwrap();
    println!(
        "dual failover after silent cut (lab): {} ms; back on Iroh {back:?} after the heal; {dropped} packets dropped by the cut",
        moved.as_millis()
    );
    assert_eq!(before, Some(Transport::Iroh));
    assert!(dropped > 0, "the cut dropped the client's Iroh packets");
    assert!(moved < Duration::from_secs(5), "failover came before the call's 5 s deadline: {moved:?}");
    served.stop().await;
}
