//! The transport config: the orchestrator's file loads as it stands, and every kind of mistake is an
//! error that names the key.

use duet::{Config, Mode, RaftTransport, TransportConfig};

const ORCHESTRATOR: &str = r#"
[transport]
mode = "dual"            # grpc | iroh | dual

[transport.grpc]
bind_address = "0.0.0.0:7001"
max_message_size = 4194304
tls_enabled = false

[transport.iroh]
enabled = true
home_relay = "https://relay.iroh.network"
discovery_port = 0

[transport.migration]
prefer_iroh_for = ["health", "status", "monitoring"]
raft_transport = "always_grpc"   # always_grpc | always_iroh | adaptive
fallback_to_grpc = true
"#;

#[test]
fn the_orchestrators_file_loads_as_it_stands() {
    let cfg = Config::from_toml(ORCHESTRATOR).unwrap().transport;
    assert_eq!(cfg.mode, Mode::Dual);
    assert_eq!(cfg.grpc.bind_address, "0.0.0.0:7001".parse().unwrap());
    assert_eq!(cfg.grpc.max_message_size, 4_194_304);
    assert_eq!(cfg.iroh.relay_url(), Some("https://relay.iroh.network"));
    assert_eq!(cfg.migration.prefer_iroh_for, ["health", "status", "monitoring"]);
    assert_eq!(cfg.migration.raft_transport, RaftTransport::AlwaysGrpc);
    assert!(cfg.migration.fallback_to_grpc);
}

#[test]
fn discovery_port_is_the_old_name_of_bind_port() {
    let port = |text: &str| Config::from_toml(text).unwrap().transport.iroh.bind_port;
    assert_eq!(port("[transport.iroh]\ndiscovery_port = 7101"), 7101);
    assert_eq!(port("[transport.iroh]\nbind_port = 7102"), 7102);
    let both = error("[transport.iroh]\nbind_port = 1\ndiscovery_port = 2");
    assert!(both.contains("duplicate field") && both.contains("bind_port"), "{both}");
}

#[test]
fn it_embeds_in_a_larger_application_config() {
    #[derive(serde::Deserialize)]
    struct NodeConfig {
        node_name: String,
        data_dir: String,
        transport: TransportConfig,
    }
    let text = format!("node_name = \"vm-host-3\"\ndata_dir = \"/var/lib/orch\"\n{ORCHESTRATOR}");
    let cfg: NodeConfig = toml::from_str(&text).unwrap();
    cfg.transport.validate().unwrap();
    assert_eq!((cfg.node_name.as_str(), cfg.data_dir.as_str()), ("vm-host-3", "/var/lib/orch"));
    assert_eq!(cfg.transport.migration.prefer_iroh_for.len(), 3);
}

#[test]
fn an_empty_transport_table_means_offline_dual_defaults() {
    let cfg = Config::from_toml("[transport]\n").unwrap().transport;
    assert_eq!(cfg.mode, Mode::Dual);
    assert_eq!(cfg.iroh.relay_url(), None, "relays are off unless configured");
    assert!(!cfg.iroh.address_lookup);
    assert!(cfg.grpc.bind_address.ip().is_loopback());
}

fn error(text: &str) -> String {
    Config::from_toml(text).unwrap_err().to_string()
}

#[test]
fn each_mistake_names_its_key_and_the_fix() {
    let cases: &[(&str, &[&str])] = &[
        // Unknown keys, at every level.
        ("[transport]\nmod = \"dual\"", &["unknown field `mod`", "mode"]),
        ("[transport.grpc]\nbind_adress = \"0.0.0.0:1\"", &["unknown field `bind_adress`", "bind_address"]),
        ("[transport.migration]\nprefer_iroh = []", &["unknown field `prefer_iroh`", "prefer_iroh_for"]),
        ("[transprt]\nmode = \"grpc\"", &["unknown field `transprt`"]),
        // Wrong types and values.
        ("[transport]\nmode = \"quic\"", &["unknown variant `quic`", "grpc", "iroh", "dual"]),
        ("[transport.grpc]\nmax_message_size = \"4MB\"", &["max_message_size", "invalid type"]),
        ("[transport.grpc]\nbind_address = \"localhost\"", &["bind_address", "invalid socket address"]),
        ("[transport.migration]\nraft_transport = \"sometimes\"", &["unknown variant `sometimes`", "adaptive"]),
        ("[transport.migration]\nprefer_iroh_for = \"health\"", &["prefer_iroh_for", "invalid type"]),
        ("[transport.iroh]\ndiscovery_port = 70000", &["discovery_port"]),
        ("[transport.iroh]\nbind_port = 70000", &["bind_port"]),
        // Contradictions.
        (
            "[transport]\nmode = \"iroh\"\n[transport.iroh]\nenabled = false",
            &["`transport.iroh.enabled`", "mode = \"grpc\""],
        ),
        (
            "[transport]\nmode = \"dual\"\n[transport.iroh]\nenabled = false",
            &["`transport.iroh.enabled`", "needs Iroh"],
        ),
        (
            "[transport.grpc]\ntls_enabled = true\ntls_cert_path = \"node.crt\"",
            &["`transport.grpc.tls_key_path`", "is required with tls_cert_path"],
        ),
        ("[transport.iroh]\nhome_relay = \"not a url\"", &["`transport.iroh.home_relay`", "disabled"]),
        ("[transport.iroh]\nidle_timeout_ms = 100", &["`transport.iroh.idle_timeout_ms`", "between 5000 and 600000"]),
        ("[transport]\nmode = \"iroh\"", &["`transport.migration.fallback_to_grpc`", "set it to false"]),
        (
            "[transport]\nmode = \"grpc\"\n[transport.migration]\nraft_transport = \"adaptive\"",
            &["`transport.migration.raft_transport`", "always_grpc"],
        ),
        (
            "[transport.migration]\nprefer_iroh_for = [\"vm ops\"]",
            &["`transport.migration.prefer_iroh_for`", "snake_case"],
        ),
        (
            "[transport.migration]\nprefer_iroh_for = [\"raft\"]\nadaptive_for = [\"raft\"]",
            &["`transport.migration.adaptive_for`", "either"],
        ),
        ("[transport.migration]\nbreaker_failures = 0", &["`transport.migration.breaker_failures`", "at least 1"]),
        ("[transport.grpc]\nmax_message_size = 0", &["`transport.grpc.max_message_size`"]),
        ("[transport.iroh]\nconnect_timeout_ms = 0", &["`transport.iroh.connect_timeout_ms`"]),
        (
            "[transport.iroh]\nkeepalive_interval_ms = 6000",
            &["`transport.iroh.keepalive_interval_ms`", "a third of idle_timeout_ms (5000)"],
        ),
        ("[transport.iroh]\nkeepalive_interval_ms = 10", &["`transport.iroh.keepalive_interval_ms`", "give 100"]),
        ("[transport.grpc]\nhttp2_keepalive_interval_ms = 0", &["`transport.grpc.http2_keepalive_interval_ms`"]),
        ("[transport.grpc]\nhttp2_keepalive_timeout_ms = 0", &["`transport.grpc.http2_keepalive_timeout_ms`"]),
        ("[transport.grpc]\ntcp_keepalive_ms = 0", &["`transport.grpc.tcp_keepalive_ms`"]),
        ("[transport.grpc]\nconnect_timeout_ms = 0", &["`transport.grpc.connect_timeout_ms`", "positive"]),
        ("[transport.grpc]\nhttp2_keepalive_interval = 10", &["unknown field `http2_keepalive_interval`"]),
        ("[transport.migration.routes]\nimages = \"tcp\"", &["unknown variant `tcp`", "grpc", "iroh", "adaptive"]),
        (
            "[transport]\nmode = \"grpc\"\n[transport.migration.routes]\nimages = \"iroh\"",
            &["`transport.migration.routes.images`", "needs Iroh"],
        ),
        (
            "[transport.migration]\nprefer_iroh_for = [\"images\"]\n[transport.migration.routes]\nimages = \"adaptive\"",
            &["`transport.migration.routes.images`", "one route"],
        ),
    ];
    for (text, needles) in cases {
        let err = error(text);
        for needle in *needles {
            assert!(err.contains(needle), "for {text:?} the error should mention {needle:?}:\n{err}");
        }
    }
}

#[test]
fn the_route_table_names_any_service_and_raft_transport_is_its_entry_for_raft() {
    use duet::routing::Plan;
    let cfg = Config::from_toml(
        "[transport.migration]\nprefer_iroh_for = [\"health\"]\nraft_transport = \"adaptive\"\n\
         [transport.migration.routes]\nimages = \"adaptive\"\nvm = \"iroh\"\nstatus = \"grpc\"",
    )
    .unwrap()
    .transport;
    let route = |s: &str| cfg.route(s);
    assert_eq!(route("images").plan, Plan::Adaptive { fallback: true });
    assert_eq!(route("images").reason, "routes");
    assert_eq!(route("vm").plan, Plan::First { transport: duet::Transport::Iroh, fallback: true });
    assert_eq!(route("status").plan, Plan::Only(duet::Transport::Grpc));
    assert_eq!(route("health").reason, "prefer_iroh_for");
    assert_eq!(route("raft").plan, Plan::Adaptive { fallback: true }, "raft_transport still routes raft");
    // An entry in the table wins over the old key.
    let over = Config::from_toml("[transport.migration]\nraft_transport = \"adaptive\"\nroutes = { raft = \"grpc\" }")
        .unwrap()
        .transport;
    assert_eq!(over.route("raft").plan, Plan::Only(duet::Transport::Grpc));
    assert!(over.describe_routes(["raft"]).contains("[transport.migration.routes]"));
}

#[tokio::test]
async fn connection_settings_are_config_keys_and_a_node_built_from_them_serves_and_calls() {
    let cfg = Config::from_toml(
        "[transport]\nmode = \"dual\"\n\
         [transport.grpc]\nhttp2_keepalive_interval_ms = 200\nhttp2_keepalive_timeout_ms = 5000\n\
         tcp_keepalive_ms = 60000\nconnect_timeout_ms = 3000\n\
         [transport.iroh]\nkeepalive_interval_ms = 1000\n\
         [transport.migration]\nprefer_iroh_for = [\"kinds\"]",
    )
    .unwrap();
    let grpc = &cfg.transport.grpc;
    assert_eq!(grpc.http2_keepalive_interval(), Some(std::time::Duration::from_millis(200)));
    assert_eq!(grpc.http2_keepalive_timeout(), std::time::Duration::from_secs(5));
    assert_eq!(grpc.tcp_keepalive(), Some(std::time::Duration::from_secs(60)));
    assert_eq!(grpc.connect_timeout(), Some(std::time::Duration::from_secs(3)));
    assert_eq!(cfg.transport.iroh.keepalive_interval(), std::time::Duration::from_secs(1));
    let defaults = Config::from_toml("").unwrap().transport;
    assert_eq!(defaults.grpc.http2_keepalive_interval(), None, "no HTTP/2 keep-alive unless asked, as tonic");
    assert_eq!(defaults.iroh.keepalive_interval(), duet::iroh::endpoint::KEEP_ALIVE);

    let server = duet::Server::from_config(&cfg.transport)
        .unwrap()
        .add_service(duet_tests::pb::matrix::v1::KindsServer::new(duet_tests::services::KindsImpl::default()))
        .serve()
        .await
        .unwrap();
    let connector = duet::iroh::Connector::new(duet::iroh::endpoint::bind_loopback().await.unwrap());
    for channel in [
        duet::Channel::grpc_from_config(&cfg.transport, &server.peer_addr()).unwrap(),
        duet::Channel::from_config(&cfg.transport, &connector, &server.peer_addr()).unwrap(),
    ] {
        let client = duet_tests::pb::matrix::v1::KindsClient::new(channel);
        let request = duet_tests::pb::matrix::v1::EchoRequest { text: "kept alive".into(), ..Default::default() };
        let first = client.echo(request.clone()).await.unwrap();
        // Idle past several HTTP/2 PINGs: the connection is kept, not torn down.
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        let again = client.echo(request).await.unwrap();
        assert_eq!((first.get_ref().text.as_str(), again.get_ref().text.as_str()), ("kept alive", "kept alive"));
    }
    server.shutdown().await;
}

#[test]
fn a_file_error_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(&path, "[transport]\nmode = \"quic\"\n").unwrap();
    let err = Config::from_file(&path).unwrap_err().to_string();
    assert!(err.starts_with(&path.display().to_string()), "{err}");
    let missing = Config::from_file(dir.path().join("absent.toml")).unwrap_err().to_string();
    assert!(missing.contains("absent.toml"), "{missing}");
}

#[test]
fn check_config_shows_each_services_route() {
    let cfg = Config::from_toml(ORCHESTRATOR).unwrap().transport;
    let table = cfg.describe_routes(["health", "vm", "raft"]);
    let line = |s: &str| table.lines().find(|l| l.starts_with(s)).unwrap().to_string();
    assert!(
        line("health").contains("iroh")
            && line("health").contains("grpc")
            && line("health").contains("prefer_iroh_for")
    );
    assert!(line("vm ").contains("grpc") && line("vm ").contains("not in prefer_iroh_for"), "{table}");
    assert!(line("raft").contains("always_grpc"), "{table}");
}

mod mutated {
    //! Random mistakes in a config file: any table, any known or misspelt key, any value of any type.
    //! Each file loads, or is refused with an error that names a `transport.` key or shows the line;
    //! none panics.

    use duet::Config;
    use proptest::prelude::*;

    const TABLES: &[&str] = &["transport", "transport.grpc", "transport.iroh", "transport.migration", "other"];
    const KEYS: &[&str] = &[
        "mode",
        "bind_address",
        "max_message_size",
        "tls_enabled",
        "tls_cert_path",
        "tls_key_path",
        "tls_ca_path",
        "tls_client_auth",
        "tls_server_name",
        "enabled",
        "home_relay",
        "discovery_port",
        "bind_port",
        "bind_ip",
        "secret_key_file",
        "address_lookup",
        "connect_timeout_ms",
        "allowed_peers",
        "prefer_iroh_for",
        "raft_transport",
        "raft_service",
        "adaptive_for",
        "fallback_to_grpc",
        "breaker_failures",
        "breaker_cooldown_ms",
        "adaptive_probe_every",
        "modee",
        "tls",
    ];
    const VALUES: &[&str] = &[
        "\"grpc\"",
        "\"iroh\"",
        "\"dual\"",
        "\"adaptive\"",
        "\"always_iroh\"",
        "true",
        "false",
        "0",
        "1",
        "-1",
        "4294967296",
        "18446744073709551616",
        "\"0.0.0.0:7001\"",
        "\"127.0.0.1\"",
        "\"not an address\"",
        "\"https://relay.example.org\"",
        "\"disabled\"",
        "\"\"",
        "[]",
        "[\"health\"]",
        "[\"\"]",
        "[1, 2]",
        "{ a = 1 }",
        "1.5",
        "\"/nonexistent/file\"",
        "\"é\\u0000\"",
    ];

    fn line() -> impl Strategy<Value = (usize, usize, usize)> {
        (0..TABLES.len(), 0..KEYS.len(), 0..VALUES.len())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn every_mistake_is_an_error_that_says_where(lines in proptest::collection::vec(line(), 0..8)) {
            let mut text = String::new();
            for (t, k, v) in lines {
                text += &format!("[{}]\n{} = {}\n", TABLES[t], KEYS[k], VALUES[v]);
            }
            match Config::from_toml(&text) {
                Ok(cfg) => prop_assert!(cfg.transport.validate().is_ok()),
                Err(e) => {
                    let msg = e.to_string();
                    prop_assert!(msg.starts_with("invalid config: "), "{msg}");
                    let located = e.key().starts_with("transport.") || msg.contains("line ") || msg.contains('|');
                    prop_assert!(located, "the error names the key or shows the line: {msg}");
                }
            }
        }
    }
}
