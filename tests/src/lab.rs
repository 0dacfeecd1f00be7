//! A network lab: hosts in their own network namespaces behind routers that NAT and filter, and a
//! real Iroh relay server (the `iroh-relay` crate, TLS with a private CA, QUIC address discovery)
//! on a public router, built with n0's `patchbay` (the lab iroh's own tests use).
//!
//! Everything runs as root in namespaces the lab makes; no packet leaves them. Public routers give
//! devices 198.18.0.0/15 addresses, home routers 10.0.x LANs. A lab that cannot be built is an
//! error naming why (not root, `nft` missing), which the tests turn into a failure, never a skip.
//!
//! Code that must run on a host runs on that host's own single-threaded tokio runtime
//! ([`Device::spawn`]); sockets made elsewhere live in the machine's namespace, not the lab's.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

pub use patchbay::{Device, Lab, Nat, Router, RouterPreset};

/// The relay's HTTPS port.
pub const RELAY_HTTPS_PORT: u16 = 8443;
/// The relay's QUIC address discovery port (what `home_relay` clients expect by default).
pub const RELAY_QAD_PORT: u16 = 7842;

/// A lab with a public data-centre router carrying the relay.
pub struct NetLab {
    /// The namespaces; dropping it tears them down.
    pub lab: Lab,
    /// The public router the relay (and any public host) hangs off.
    pub dc: Router,
    /// The relay's host.
    pub relay_host: Device,
    /// `https://<relay ip>:8443`.
    pub relay_url: String,
    /// A PEM file holding the relay certificate's issuer, for `relay_ca_path`.
    pub relay_ca: PathBuf,
    _relay: iroh_relay::server::Server,
    _dir: tempfile::TempDir,
}

/// Why a lab could not be built, with what to do about it.
fn unavailable(what: &str, e: impl std::fmt::Display) -> String {
    format!(
        "the network lab cannot be built ({what}: {e}); it needs root, network namespaces and the nft \
         binary (apt-get install nftables)"
    )
}

impl NetLab {
    /// Builds the lab and starts the relay.
    pub async fn new() -> Result<Self, String> {
        which("nft").map_err(|e| unavailable("nft", e))?;
        let lab = Lab::builder().allow_real_root().build().await.map_err(|e| unavailable("lab", e))?;
        let dc = lab.add_router("dc").preset(RouterPreset::Public).build().await.map_err(|e| unavailable("dc", e))?;
        let relay_host =
            lab.add_device("relay").uplink(dc.id()).build().await.map_err(|e| unavailable("relay host", e))?;
        let ip = relay_host.ip().ok_or_else(|| unavailable("relay host", "no IPv4 address"))?;
        let (relay, ca_pem) = start_relay(&relay_host, ip).await.map_err(|e| unavailable("relay", e))?;
        let dir = tempfile::tempdir().map_err(|e| unavailable("temp dir", e))?;
        let relay_ca = dir.path().join("relay-ca.pem");
        std::fs::write(&relay_ca, ca_pem).map_err(|e| unavailable("relay CA file", e))?;
        Ok(Self {
            lab,
            dc,
            relay_host,
            relay_url: format!("https://{ip}:{RELAY_HTTPS_PORT}"),
            relay_ca,
            _relay: relay,
            _dir: dir,
        })
    }

    /// A router behind the public one: `Home` is a home NAT (endpoint-independent mapping, inbound
    /// blocked), `IspCgnatSymmetric` a NAT that defeats hole punching, `Public` no NAT.
    pub async fn router(&self, name: &str, preset: RouterPreset) -> Router {
        self.lab.add_router(name).preset(preset).build().await.unwrap_or_else(|e| panic!("router {name}: {e}"))
    }

    /// A host on `router`'s LAN.
    pub async fn host(&self, name: &str, router: &Router) -> Device {
        self.lab.add_device(name).uplink(router.id()).build().await.unwrap_or_else(|e| panic!("host {name}: {e}"))
    }

    /// A duet config for a lab host: `mode`, Iroh on every address with the lab relay as home relay
    /// (trusted through `relay_ca_path`), gRPC on port 50051 of every address.
    pub fn config(&self, mode: &str, migration: &str) -> duet::Config {
        let relay = format!("home_relay = \"{}\"\nrelay_ca_path = {:?}", self.relay_url, self.relay_ca);
        lab_config(mode, &relay, migration)
    }

    /// [`Self::config`] without a relay: Iroh reaches peers only on direct paths.
    pub fn config_without_relay(&self, mode: &str, migration: &str) -> duet::Config {
        lab_config(mode, "home_relay = \"disabled\"", migration)
    }

    /// A router of `preset` whose firewall drops every UDP packet its hosts send out: only TCP
    /// passes (what some corporate and hotel networks do).
    pub async fn tcp_only_router(&self, name: &str) -> Router {
        let router = self.lab.add_router(name).preset(RouterPreset::Public).firewall_custom(|f| f.block_udp());
        router.build().await.unwrap_or_else(|e| panic!("router {name}: {e}"))
    }
}

fn lab_config(mode: &str, relay: &str, migration: &str) -> duet::Config {
    let text = format!(
        "[transport]\nmode = \"{mode}\"\n[transport.grpc]\nbind_address = \"0.0.0.0:50051\"\n\
         [transport.iroh]\nbind_ip = \"0.0.0.0\"\n{relay}\nconnect_timeout_ms = 5000\n\
         [transport.migration]\n{migration}"
    );
    duet::Config::from_toml(&text).expect("a valid lab config")
}

/// Runs `nft` with `script` on a router.
pub fn nft_router(router: &Router, script: &str) -> Result<(), String> {
    let mut cmd = std::process::Command::new("nft");
    cmd.args(["-f", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = router.spawn_command_sync(cmd).map_err(|e| format!("nft: {e}"))?;
    finish(child, "nft", Some(script))
}

/// The text `nft list ruleset` prints in a router's namespace (to read counters).
pub fn nft_list_router(router: &Router) -> Result<String, String> {
    let mut cmd = std::process::Command::new("nft");
    cmd.args(["list", "ruleset"]).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = router.spawn_command_sync(cmd).map_err(|e| format!("nft: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The packets a named nft counter on `router` has counted.
pub fn nft_counter(router: &Router, name: &str) -> Result<u64, String> {
    let text = nft_list_router(router)?;
    let at = text.find(&format!("counter {name}")).ok_or_else(|| format!("no counter {name} in {text}"))?;
    let packets = text[at..].split("packets ").nth(1).and_then(|r| r.split_whitespace().next());
    packets.and_then(|n| n.parse().ok()).ok_or_else(|| format!("counter {name} has no packet count"))
}

/// Runs a command in a device's namespace and fails with its output if it fails.
pub fn run_in(host: &Device, program: &str, args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    let mut cmd = std::process::Command::new(program);
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = host.spawn_command_sync(cmd).map_err(|e| format!("{program}: {e}"))?;
    finish(child, program, stdin)
}

fn finish(mut child: std::process::Child, program: &str, stdin: Option<&str>) -> Result<(), String> {
    use std::io::Write;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(|e| format!("{program} stdin: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{program} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr)))
    }
}

fn which(program: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("{program} is not installed"))
}

/// Starts the relay on `host`: HTTPS with a certificate for its IP from a private CA, and QUIC
/// address discovery (hole punching needs it). Returns the server and the CA certificate's PEM.
async fn start_relay(host: &Device, ip: Ipv4Addr) -> Result<(iroh_relay::server::Server, String), String> {
    use iroh_relay::server::{CertConfig, QuicConfig, RelayConfig, Server, ServerConfig, TlsConfig};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    let ca = rcgen::generate_simple_self_signed(vec![ip.to_string()]).map_err(|e| e.to_string())?;
    let cert: CertificateDer<'static> = ca.cert.der().clone();
    let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(ca.signing_key.serialize_der()));
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| e.to_string())?;
    let server = host
        .spawn(move |_| async move {
            let mut relay = RelayConfig::new((Ipv4Addr::UNSPECIFIED, 8080));
            let https = (Ipv4Addr::UNSPECIFIED, RELAY_HTTPS_PORT);
            relay.tls = Some(TlsConfig::new(https, CertConfig::Manual { server_config: tls }));
            let mut cfg = ServerConfig::default();
            cfg.relay = Some(relay);
            cfg.quic = Some(QuicConfig::new((Ipv4Addr::UNSPECIFIED, RELAY_QAD_PORT)));
            Server::spawn(cfg).await.map_err(|e| e.to_string())
        })
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())??;
    Ok((server, ca.cert.pem()))
}
