//! Dual mode on real endpoints: fallback when Iroh goes away, nothing run twice, the return to Iroh
//! after the breaker's cool-down, adaptive choice under a slowed transport, and the metrics of it all.

use std::net::SocketAddr;
use std::time::Duration;

use duet::iroh::{Connector, endpoint};
use duet::{BreakerState, Channel, Code, Config, PeerAddr, Server, Transport, TransportConfig};
use duet_tests::pb::matrix::v1::{EchoRequest, KindsClient, KindsServer};
use duet_tests::services::KindsImpl;
use iroh::{Endpoint, SecretKey};

use crate::metrics;

fn config(migration: &str) -> TransportConfig {
    let text = format!(
        "[transport]\nmode = \"dual\"\n[transport.iroh]\nconnect_timeout_ms = 300\n[transport.migration]\n{migration}"
    );
    Config::from_toml(&text).unwrap().transport
}

async fn bind(key: SecretKey, addr: SocketAddr) -> Endpoint {
    duet_tests::harness::rebind(key, addr).await
}

fn text(t: impl Into<String>) -> EchoRequest {
    EchoRequest { text: t.into(), ..Default::default() }
}

struct Setup {
    server: duet::ServerHandle,
    service: KindsImpl,
    key: SecretKey,
    iroh_socket: SocketAddr,
    channel: Channel,
    connector: Connector,
}

async fn setup(cfg: &TransportConfig) -> Setup {
    metrics();
    let service = KindsImpl::default();
    let key = SecretKey::generate();
    let ep = bind(key.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let iroh_socket = ep.bound_sockets()[0];
    let server = Server::builder()
        .grpc("127.0.0.1:0".parse().unwrap())
        .iroh(ep)
        .add_service(KindsServer::new(service.clone()))
        .serve()
        .await
        .unwrap();
    let connector = Connector::from_config(endpoint::bind_loopback().await.unwrap(), &cfg.iroh);
    let peer: PeerAddr = server.peer_addr().to_string().parse().unwrap();
    let channel = Channel::from_config(cfg, &connector, &peer).unwrap();
    Setup { server, service, key, iroh_socket, channel, connector }
}

fn transport_of<T>(r: &duet::Response<T>) -> Transport {
    *r.extensions().get::<Transport>().expect("every response names its transport")
}

#[tokio::test]
async fn iroh_stopped_mid_run_loses_nothing_and_runs_nothing_twice() {
    let logs = crate::logs::captured();
    let cfg = config("prefer_iroh_for = [\"kinds\"]\nbreaker_failures = 2\nbreaker_cooldown_ms = 300");
    let mut s = setup(&cfg).await;
    let client = KindsClient::new(s.channel.clone()).with_default_timeout(Duration::from_secs(5));

    let mut idempotent_ok = 0;
    let mut recorded_ok = vec![];
    let mut recorded_unavailable = 0;
    let mut transports = std::collections::BTreeMap::<(bool, Transport), usize>::new();
    // 100 batches of 10 idempotent and 10 non-idempotent calls in flight at once; Iroh stops while
    // batch 30 is in the air.
    for batch in 0..100 {
        let calls = futures_util::future::join_all((0..10).map(|j| {
            let (echo, record) = (client.clone(), client.clone());
            let i = batch * 10 + j;
            async move {
                let e = echo.echo(text(format!("echo-{i}"))).await;
                let r = record.record(text(format!("call-{i}"))).await;
                (i, e, r)
            }
        }));
        let results = if batch == 30 {
            let (results, ()) = tokio::join!(calls, async {
                tokio::time::sleep(Duration::from_micros(300)).await;
                s.server.stop_iroh().await;
            });
            results
        } else {
            calls.await
        };
        for (i, e, r) in results {
            let e = e.expect("an idempotent call always succeeds, over gRPC if need be");
            assert_eq!(e.get_ref().text, format!("echo-{i}"));
            *transports.entry((batch > 30, transport_of(&e))).or_default() += 1;
            idempotent_ok += 1;
            match r {
                Ok(resp) => recorded_ok.push(resp.into_inner().text),
                Err(status) => {
                    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                    recorded_unavailable += 1;
                }
            }
        }
    }
    eprintln!("stats: transports {transports:?}, record ok {}, unavailable {recorded_unavailable}", recorded_ok.len());
    assert_eq!(idempotent_ok, 1000);
    let runs = s.service.recorded.lock().unwrap().clone();
    assert!(runs.values().all(|&n| n == 1), "a non-idempotent call ran twice");
    for id in &recorded_ok {
        assert_eq!(runs.get(id), Some(&1), "{id} succeeded, so it ran exactly once");
    }
    assert_eq!(recorded_ok.len() + recorded_unavailable, 1000);
    assert!(transports.get(&(false, Transport::Iroh)).copied().unwrap_or(0) >= 300, "{transports:?}");
    assert_eq!(transports.get(&(true, Transport::Iroh)), None, "{transports:?}");
    assert_eq!(s.channel.iroh_breaker(), Some(BreakerState::Open));

    // Iroh comes back on the same key and port; after the cool-down a probe goes through and calls
    // return to Iroh.
    s.server.start_iroh(bind(s.key.clone(), s.iroh_socket).await);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut back_on_iroh = None;
    for i in 0..50 {
        let resp = client.clone().echo(text("again")).await.unwrap();
        if transport_of(&resp) == Transport::Iroh {
            back_on_iroh = Some(i);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back_on_iroh.is_some(), "calls returned to Iroh after the cool-down");
    assert_eq!(s.channel.iroh_breaker(), Some(BreakerState::Closed { failures: 0 }));

    let text = metrics().render();
    assert!(text.contains(r#"duet_fallback_total{service="kinds",from="iroh",to="grpc""#), "{text}");
    assert!(
        text.contains(r#"duet_transport_selected_total{service="kinds",transport="grpc",reason="circuit_open"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"duet_transport_selected_total{service="kinds",transport="iroh",reason="prefer_iroh_for"}"#),
        "{text}"
    );
    assert!(text.contains("duet_rpc_duration_seconds"), "{text}");
    assert!(text.contains(r#"duet_connection_attempts_total{transport="iroh"}"#), "{text}");
    // An operator hears of each fallback and of the breaker opening as warnings, once an event.
    use tracing::Level;
    assert!(logs.count_here(Level::WARN, "falling back from Iroh to gRPC") >= 1, "fallbacks warn");
    let opened = "circuit breaker on Iroh opened: calls go over gRPC until a probe succeeds";
    assert_eq!(logs.count_here(Level::WARN, opened), 1, "the breaker opened once");
    assert_eq!(logs.count_here(Level::INFO, "circuit breaker on Iroh closed: a probe call succeeded"), 1);
    s.server.shutdown().await;
    s.connector.endpoint().close().await;
}

#[tokio::test]
async fn unreachable_iroh_falls_back_invisibly_for_every_method_kind() {
    let cfg = config("prefer_iroh_for = [\"kinds\"]");
    let mut s = setup(&cfg).await;
    s.server.stop_iroh().await;
    let client = KindsClient::new(s.channel.clone());
    let r = client.record(text("only-once")).await.unwrap();
    assert_eq!(transport_of(&r), Transport::Grpc);
    assert_eq!(s.service.recorded.lock().unwrap().get("only-once"), Some(&1));
    let count = client.count(duet_tests::pb::matrix::v1::CountRequest { count: 3 }).await.unwrap();
    assert_eq!(transport_of(&count), Transport::Grpc);
    let joined = client.join(futures_util::stream::iter([text("a"), text("b")])).await.unwrap();
    assert_eq!((transport_of(&joined), joined.get_ref().text.as_str()), (Transport::Grpc, "a,b"));
    let chat = client.chat(futures_util::stream::iter([text("x")])).await.unwrap();
    assert_eq!(transport_of(&chat), Transport::Grpc);
    s.server.shutdown().await;
}

#[tokio::test]
async fn services_not_preferred_stay_on_grpc_and_preferred_ones_use_iroh() {
    let s = setup(&config("prefer_iroh_for = [\"health\"]")).await;
    let r = KindsClient::new(s.channel.clone()).echo(text("x")).await.unwrap();
    assert_eq!(transport_of(&r), Transport::Grpc, "kinds is not in prefer_iroh_for");
    let s2 = setup(&config("prefer_iroh_for = [\"kinds\"]")).await;
    let r = KindsClient::new(s2.channel.clone()).echo(text("x")).await.unwrap();
    assert_eq!(transport_of(&r), Transport::Iroh);
    s.server.shutdown().await;
    s2.server.shutdown().await;
}

#[tokio::test]
async fn adaptive_moves_off_a_slowed_transport_and_back() {
    let cfg = config("adaptive_for = [\"kinds\"]\nadaptive_probe_every = 4");
    let s = setup(&cfg).await;
    let client = KindsClient::new(s.channel.clone());
    let calls = |n: usize| {
        let client = client.clone();
        async move {
            for _ in 0..n {
                client.clone().echo(text("x")).await.unwrap();
            }
        }
    };
    calls(8).await;
    assert_eq!(s.channel.adaptive_choice("kinds"), Some(Transport::Iroh), "adaptive starts on Iroh");

    // Slow Iroh down: within a bounded number of calls the choice moves to gRPC.
    s.service.set_delay(Transport::Iroh, 40);
    let mut moved_after = None;
    for i in 0..40 {
        calls(1).await;
        if s.channel.adaptive_choice("kinds") == Some(Transport::Grpc) {
            moved_after = Some(i + 1);
            break;
        }
    }
    assert!(moved_after.is_some(), "the choice left the slowed transport within 40 calls");

    // Lift the delay and slow gRPC instead: probes notice, and the choice moves back.
    s.service.set_delay(Transport::Iroh, 0);
    s.service.set_delay(Transport::Grpc, 40);
    let mut back_after = None;
    for i in 0..60 {
        calls(1).await;
        if s.channel.adaptive_choice("kinds") == Some(Transport::Iroh) {
            back_after = Some(i + 1);
            break;
        }
    }
    assert!(back_after.is_some(), "the choice returned to Iroh within 60 calls");
    let text = metrics().render();
    assert!(text.contains(r#"reason="adaptive_probe""#), "{text}");
    s.server.shutdown().await;
}

#[tokio::test]
async fn schema_mismatch_routes_the_service_over_grpc() {
    // A client built from another version of the proto: same path, different fingerprint.
    const OTHER_BUILD: duet::MethodDesc = duet::MethodDesc {
        fingerprint: duet_tests::pb::matrix::v1::kinds_methods::ECHO.fingerprint ^ 0xdead,
        ..duet_tests::pb::matrix::v1::kinds_methods::ECHO
    };
    let s = setup(&config("prefer_iroh_for = [\"kinds\"]")).await;
    let opts = duet::CallOptions::default();
    let r = s
        .channel
        .unary::<EchoRequest, duet_tests::pb::matrix::v1::EchoReply>(
            duet::Request::new(text("v2")),
            &OTHER_BUILD,
            &opts,
        )
        .await
        .unwrap();
    assert_eq!(transport_of(&r), Transport::Grpc, "the mismatch sent the call over gRPC");
    assert_eq!(r.into_inner().text, "v2");

    // Iroh-only mode: a clear FAILED_PRECONDITION.
    let iroh = Channel::iroh(&s.connector, s.server.iroh_addr().unwrap());
    let err = iroh
        .unary::<EchoRequest, duet_tests::pb::matrix::v1::EchoReply>(
            duet::Request::new(text("v2")),
            &OTHER_BUILD,
            &opts,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("schema mismatch"), "{err:?}");
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_schema_mismatch_heals_after_its_recheck_time_and_when_the_peer_reconnects() {
    const OTHER_BUILD: duet::MethodDesc = duet::MethodDesc {
        fingerprint: duet_tests::pb::matrix::v1::kinds_methods::ECHO.fingerprint ^ 0xbeef,
        ..duet_tests::pb::matrix::v1::kinds_methods::ECHO
    };
    let opts = duet::CallOptions::default();
    let call = |channel: Channel, desc: &'static duet::MethodDesc| {
        let opts = opts.clone();
        async move {
            let r = channel
                .unary::<EchoRequest, duet_tests::pb::matrix::v1::EchoReply>(duet::Request::new(text("v")), desc, &opts)
                .await
                .unwrap();
            transport_of(&r)
        }
    };
    let echo = &duet_tests::pb::matrix::v1::kinds_methods::ECHO;

    // The peer is "upgraded" once the recheck time has passed: the next call probes Iroh again.
    let s = setup(&config("prefer_iroh_for = [\"kinds\"]\nschema_recheck_ms = 400")).await;
    assert_eq!(call(s.channel.clone(), &OTHER_BUILD).await, Transport::Grpc, "the mismatch goes over gRPC");
    assert_eq!(call(s.channel.clone(), echo).await, Transport::Grpc, "the service stays on gRPC for now");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(call(s.channel.clone(), echo).await, Transport::Iroh, "after the recheck time Iroh is probed");
    assert_eq!(call(s.channel.clone(), &OTHER_BUILD).await, Transport::Grpc, "a mismatch still marks it again");
    s.server.shutdown().await;

    // A peer that restarts (a rolling upgrade) comes back on a new connection: no need to wait.
    let mut s = setup(&config("prefer_iroh_for = [\"kinds\"]\nschema_recheck_ms = 600000")).await;
    assert_eq!(call(s.channel.clone(), &OTHER_BUILD).await, Transport::Grpc);
    assert_eq!(call(s.channel.clone(), echo).await, Transport::Grpc);
    s.server.stop_iroh().await;
    s.server.start_iroh(bind(s.key.clone(), s.iroh_socket).await);
    let mut back = None;
    for i in 0..40 {
        if call(s.channel.clone(), echo).await == Transport::Iroh {
            back = Some(i);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back.is_some(), "the service returned to Iroh once the peer came back on a new connection");
    s.server.shutdown().await;
}
