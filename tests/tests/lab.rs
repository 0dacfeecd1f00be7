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
            let _ = ready_tx.send(by_relay);
            let _ = stopped.await;
            server.shutdown().await;
            endpoint.close().await;
        })
        .expect("spawn on the server host");
    let by_relay = tokio::time::timeout(Duration::from_secs(30), ready).await.expect("server up in time").unwrap();
    Served { by_relay, grpc: (ip, 50051).into(), stop, done }
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
            let first = client.clone().echo(text("first")).await.expect("first call");
            assert_eq!(first.get_ref().text, "first");
            let conn = connector.connection(peer).await.expect("the connection");
            let started_on_relay = selected_is_relay(&conn);
            // Callers keep calling while iroh punches through; every call must succeed.
            let (stop_tx, stop) = tokio::sync::watch::channel(false);
            let callers: Vec<_> = (0..4)
                .map(|c| {
                    let (mut client, stop) = (client.clone(), stop.clone());
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
            let paths: Vec<String> = conn
                .paths()
                .iter()
                .map(|p| format!("{:?} selected={} relay={}", p.remote_addr(), p.is_selected(), p.is_relay()))
                .collect();
            endpoint.close().await;
            (started_on_relay, direct, calls, failures, paths)
        })
        .unwrap()
        .await
        .unwrap();
    let (started_on_relay, direct, calls, failures, paths) = report;
    println!(
        "home NATs: first call on the relay: {started_on_relay:?}; direct after {direct:?}; {calls} calls meanwhile; paths {paths:?}"
    );
    assert_eq!(started_on_relay, Some(true), "dialled by key and relay, the first calls go through the relay");
    assert!(direct.is_some(), "the connection moved to a direct, hole-punched path: {paths:?}");
    assert!(failures.is_empty(), "calls during the switch failed: {failures:?}");
    assert!(calls > 0);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
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
            let mut client = KindsClient::new(Channel::iroh(&connector, peer.clone()))
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
            let mut client = KindsClient::new(dual).with_default_timeout(Duration::from_secs(10));
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
