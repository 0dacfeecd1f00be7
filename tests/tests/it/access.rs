//! Who may call over Iroh: the allowlist refuses other endpoints' connections, and the per-call hook
//! answers PERMISSION_DENIED without running the handler.

use std::sync::atomic::Ordering;

use duet::iroh::{Connector, endpoint};
use duet::{Channel, Code, Config, Server};
use duet_tests::pb::matrix::v1::{EchoRequest, KindsClient, KindsServer};
use duet_tests::services::KindsImpl;

fn text(t: &str) -> EchoRequest {
    EchoRequest { text: t.into(), ..Default::default() }
}

#[tokio::test]
async fn only_allowed_endpoints_connect_and_the_hook_guards_each_call() {
    let allowed = endpoint::bind_loopback().await.unwrap();
    let stranger = endpoint::bind_loopback().await.unwrap();
    let service = KindsImpl::default();
    let server = Server::builder()
        .iroh(endpoint::bind_loopback().await.unwrap())
        .iroh_allowlist([allowed.id()])
        .iroh_access(|call| call.method != "Record")
        .add_service(KindsServer::new(service.clone()))
        .serve()
        .await
        .unwrap();
    let addr = server.iroh_addr().unwrap();

    let friend = KindsClient::new(Channel::iroh(&Connector::new(allowed.clone()), addr.clone()));
    assert_eq!(friend.echo(text("hi")).await.unwrap().into_inner().text, "hi");

    // The hook refuses Record for everyone: PERMISSION_DENIED, and the handler never ran.
    let before = service.calls.load(Ordering::SeqCst);
    let err = friend.record(text("id-1")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("/matrix.v1.Kinds/Record"));
    assert_eq!(service.calls.load(Ordering::SeqCst), before, "no handler call");
    assert!(service.recorded.lock().unwrap().is_empty());

    // An endpoint not on the allowlist never gets a call through.
    let other = KindsClient::new(Channel::iroh(&Connector::new(stranger.clone()), addr));
    let err = other.echo(text("let me in")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("allowlist"), "the refusal says why: {err:?}");
    assert_eq!(service.calls.load(Ordering::SeqCst), before);

    server.shutdown().await;
}

#[test]
fn the_allowlist_comes_from_config_and_bad_ids_name_the_key() {
    let id = iroh::SecretKey::generate().public();
    let cfg = Config::from_toml(&format!("[transport.iroh]\nallowed_peers = [\"{id}\"]\n")).unwrap();
    assert_eq!(cfg.transport.iroh.allowed_peer_ids().unwrap(), [id]);
    let err = Config::from_toml("[transport.iroh]\nallowed_peers = [\"not-a-key\"]\n").unwrap_err().to_string();
    assert!(err.contains("`transport.iroh.allowed_peers`") && err.contains("not-a-key"), "{err}");
}
