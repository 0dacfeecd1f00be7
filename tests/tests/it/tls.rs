//! TLS and mutual TLS on the gRPC port, set up from config as an operator would: a private CA, node
//! certificates it signed, and the certificates a server or client must refuse.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use duet::iroh::{Connector, endpoint};
use duet::{Channel, Code, Config, Error, Server, ServerHandle, Status, Transport};
use duet_tests::pb::matrix::v1::{EchoRequest, KindsClient, KindsServer};
use duet_tests::services::KindsImpl;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, date_time_ymd};

/// A CA and the files a test writes for it.
struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// Which certificate to make.
enum Leaf<'a> {
    /// Signed by the CA, valid now, for these names.
    Good(&'a [&'a str]),
    /// Signed by the CA, but expired in 2021.
    Expired,
    /// Signed by nobody: its own issuer.
    SelfSigned,
    /// Signed by a CA the other side does not trust.
    OtherCa,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = Self { dir, ca: ca("duet test CA") };
        std::fs::write(pki.path("ca.crt"), pki.ca.pem()).unwrap();
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `<name>.crt` and `<name>.key`.
    fn leaf(&self, name: &str, kind: Leaf<'_>) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let local = names(&["127.0.0.1", "localhost"]);
        let cert = match kind {
            Leaf::Good(n) => CertificateParams::new(names(n)).unwrap().signed_by(&key, &self.ca).unwrap(),
            Leaf::Expired => {
                let mut params = CertificateParams::new(local).unwrap();
                params.not_before = date_time_ymd(2020, 1, 1);
                params.not_after = date_time_ymd(2021, 1, 1);
                params.signed_by(&key, &self.ca).unwrap()
            }
            Leaf::SelfSigned => CertificateParams::new(local).unwrap().self_signed(&key).unwrap(),
            Leaf::OtherCa => CertificateParams::new(local).unwrap().signed_by(&key, &ca("stranger CA")).unwrap(),
        };
        let (crt, k) = (self.path(&format!("{name}.crt")), self.path(&format!("{name}.key")));
        std::fs::write(&crt, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (crt, k)
    }

    /// A valid config holding a new certificate of this `kind` (and its key), with `extra` TOML lines.
    fn identity(&self, name: &str, kind: Leaf<'_>, extra: &str) -> Config {
        let (crt, key) = self.leaf(name, kind);
        self.config(Some(&crt), Some(&key), extra).unwrap()
    }

    /// A `[transport]` config with TLS from these files; `None` leaves a key out.
    fn config(&self, cert: Option<&Path>, key: Option<&Path>, extra: &str) -> Result<Config, duet::ConfigError> {
        let mut toml = format!(
            "[transport]\nmode = \"grpc\"\n[transport.grpc]\ntls_enabled = true\ntls_ca_path = {:?}\n",
            self.path("ca.crt")
        );
        if let Some(c) = cert {
            toml += &format!("tls_cert_path = {c:?}\n");
        }
        if let Some(k) = key {
            toml += &format!("tls_key_path = {k:?}\n");
        }
        Config::from_toml(&(toml + extra))
    }
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

async fn serve(cfg: &Config, service: &KindsImpl) -> ServerHandle {
    Server::from_config(&cfg.transport)
        .expect("server config")
        .add_service(KindsServer::new(service.clone()))
        .serve()
        .await
        .expect("serve")
}

/// Calls Echo through a channel built from `cfg` as a client node would; errors are the call's status.
async fn echo(cfg: &Config, server: &ServerHandle) -> Result<Transport, Status> {
    let connector = Connector::new(endpoint::bind_loopback().await.unwrap());
    let channel = Channel::from_config(&cfg.transport, &connector, &server.peer_addr()).expect("client config");
    let client = KindsClient::new(channel).with_default_timeout(Duration::from_secs(5));
    let reply = client.echo(EchoRequest { text: "over tls".into(), ..Default::default() }).await?;
    assert_eq!(reply.get_ref().text, "over tls");
    Ok(*reply.extensions().get::<Transport>().unwrap())
}

fn refused(result: Result<Transport, Status>, what: &str) -> Status {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::Unavailable, "{what}: {status:?}");
    status
}

#[tokio::test]
async fn tls_from_config_serves_and_calls() {
    let pki = Pki::new();
    let cfg = pki.identity("node", Leaf::Good(&["127.0.0.1"]), "");
    let service = KindsImpl::default();
    let server = serve(&cfg, &service).await;
    assert_eq!(echo(&cfg, &server).await.unwrap(), Transport::Grpc);

    // A client that trusts another CA refuses the server's certificate: nothing reached the handler.
    let other = Pki::new();
    let stranger = other.config(None, None, "").unwrap();
    let err = refused(echo(&stranger, &server).await, "a client trusting another CA");
    assert!(format!("{err:?}").contains("certificate"), "the error says why: {err:?}");
    assert_eq!(service.calls.load(Ordering::SeqCst), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_plaintext_client_to_a_tls_port_fails_cleanly_and_the_port_serves_on() {
    let pki = Pki::new();
    let cfg = pki.identity("node", Leaf::Good(&["127.0.0.1"]), "");
    let service = KindsImpl::default();
    let server = serve(&cfg, &service).await;

    let plain = Channel::grpc_lazy(format!("http://{}", server.grpc_addr().unwrap())).unwrap();
    let client = KindsClient::new(plain).with_default_timeout(Duration::from_secs(5));
    let err = client.echo(EchoRequest::default()).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::Unavailable | Code::Internal | Code::Unknown),
        "a plaintext call to a TLS port is a transport failure, not a hang: {err:?}"
    );
    assert_ne!(err.code(), Code::DeadlineExceeded);
    assert_eq!(service.calls.load(Ordering::SeqCst), 0);
    assert_eq!(echo(&cfg, &server).await.unwrap(), Transport::Grpc, "the port still serves TLS clients");
    server.shutdown().await;
}

#[tokio::test]
async fn the_client_refuses_self_signed_expired_and_misnamed_server_certificates() {
    let pki = Pki::new();
    let client = pki.identity("client", Leaf::Good(&["client"]), "");
    for (name, leaf, why) in [
        ("self-signed", Leaf::SelfSigned, "a self-signed server certificate"),
        ("expired", Leaf::Expired, "an expired server certificate"),
        ("misnamed", Leaf::Good(&["node-9.cluster"]), "a certificate for another name"),
    ] {
        let service = KindsImpl::default();
        let server = serve(&pki.identity(name, leaf, ""), &service).await;
        let err = refused(echo(&client, &server).await, why);
        assert!(format!("{err:?}").to_lowercase().contains("certificate"), "{why}: {err:?}");
        assert_eq!(service.calls.load(Ordering::SeqCst), 0, "{why}: no handler call");
        server.shutdown().await;
    }

    // A certificate that names the node, not its IP, is accepted when the client checks that name.
    let server = serve(&pki.identity("named", Leaf::Good(&["node-1.cluster"]), ""), &KindsImpl::default()).await;
    let by_name = pki.config(None, None, "tls_server_name = \"node-1.cluster\"\n").unwrap();
    assert_eq!(echo(&by_name, &server).await.unwrap(), Transport::Grpc);
    server.shutdown().await;
}

#[tokio::test]
async fn mutual_tls_admits_only_clients_with_a_valid_certificate_from_the_ca() {
    let pki = Pki::new();
    let server_cfg = pki.identity("node", Leaf::Good(&["127.0.0.1"]), "tls_client_auth = true\n");
    let service = KindsImpl::default();
    let server = serve(&server_cfg, &service).await;

    let good = pki.identity("client", Leaf::Good(&["client"]), "");
    assert_eq!(echo(&good, &server).await.unwrap(), Transport::Grpc);
    assert_eq!(service.calls.load(Ordering::SeqCst), 1);

    let no_cert = pki.config(None, None, "").unwrap();
    refused(echo(&no_cert, &server).await, "a client without a certificate");
    for (name, leaf, why) in [
        ("stranger", Leaf::OtherCa, "a client certificate from another CA"),
        ("self", Leaf::SelfSigned, "a self-signed client certificate"),
        ("old", Leaf::Expired, "an expired client certificate"),
    ] {
        refused(echo(&pki.identity(name, leaf, ""), &server).await, why);
    }
    assert_eq!(service.calls.load(Ordering::SeqCst), 1, "no refused client reached the handler");
    assert_eq!(echo(&good, &server).await.unwrap(), Transport::Grpc, "the port still serves");
    server.shutdown().await;
}

fn config_error<T>(result: Result<T, Error>) -> String {
    match result {
        Err(Error::Config(e)) => e.to_string(),
        Err(other) => panic!("expected a config error naming the key, got {other:?}"),
        Ok(_) => panic!("a bad TLS setup must be refused"),
    }
}

#[test]
fn bad_tls_settings_name_the_key_and_the_fix() {
    let pki = Pki::new();
    let (crt, key) = pki.leaf("node", Leaf::Good(&["127.0.0.1"]));
    let (_, other_key) = pki.leaf("other", Leaf::Good(&["127.0.0.1"]));
    let missing = pki.path("nope.crt");
    let not_pem = pki.path("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();

    // Caught by validation, before any file is read.
    for (cfg, expect) in [
        (pki.config(None, Some(&key), ""), "`transport.grpc.tls_cert_path`: is required with tls_key_path"),
        (pki.config(Some(&crt), None, ""), "`transport.grpc.tls_key_path`: is required with tls_cert_path"),
        (
            Config::from_toml(
                "[transport.grpc]\ntls_enabled = true\ntls_cert_path = \"a\"\ntls_key_path = \"b\"\ntls_client_auth = true",
            ),
            "`transport.grpc.tls_client_auth`: is true but tls_ca_path is not set",
        ),
        (
            Config::from_toml("[transport.grpc]\ntls_cert_path = \"node.crt\""),
            "`transport.grpc.tls_cert_path`: is set but transport.grpc.tls_enabled = false",
        ),
        (
            Config::from_toml(
                "[transport]\nmode = \"iroh\"\n[transport.grpc]\ntls_enabled = true\n[transport.migration]\nfallback_to_grpc = false",
            ),
            "`transport.grpc.tls_enabled`: is true but transport.mode = \"iroh\"",
        ),
    ] {
        let err = cfg.expect_err(expect).to_string();
        assert!(err.contains(expect), "{err}");
    }

    // Caught when the server reads the files: each error names the key and the file.
    for (cfg, expect) in [
        (pki.config(None, None, ""), "`transport.grpc.tls_cert_path`: is required to serve gRPC"),
        (pki.config(Some(&missing), Some(&key), ""), "`transport.grpc.tls_cert_path`: cannot read"),
        (pki.config(Some(&not_pem), Some(&key), ""), "`transport.grpc.tls_cert_path`: "),
        (pki.config(Some(&crt), Some(&not_pem), ""), "`transport.grpc.tls_key_path`: "),
        (
            pki.config(Some(&crt), Some(&other_key), ""),
            "`transport.grpc.tls_key_path`: cannot be used with tls_cert_path",
        ),
    ] {
        let err = config_error(Server::from_config(&cfg.unwrap().transport));
        assert!(err.contains(expect), "{err}");
    }
    let mut grpc = pki.config(Some(&crt), Some(&key), "").unwrap().transport.grpc;
    grpc.tls_ca_path = Some(missing);
    let err = grpc.client_tls().unwrap_err().to_string();
    assert!(err.contains("`transport.grpc.tls_ca_path`: cannot read") && err.contains("nope.crt"), "{err}");
}

#[tokio::test]
async fn a_server_interceptor_sees_the_clients_certificate_over_mutual_tls() {
    let pki = Pki::new();
    let server_cfg = pki.identity("node", Leaf::Good(&["127.0.0.1"]), "tls_client_auth = true\n");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
    let log = seen.clone();
    let server = Server::from_config(&server_cfg.transport)
        .expect("server config")
        .interceptor(move |req: duet::Request<()>| {
            let certs = req.peer_certs().map(|c| c.iter().map(|d| d.to_vec()).collect::<Vec<_>>());
            log.lock().unwrap().push((req.remote_addr(), certs));
            Ok(req)
        })
        .add_service(KindsServer::new(KindsImpl::default()))
        .serve()
        .await
        .expect("serve");
    let good = pki.identity("client", Leaf::Good(&["client"]), "");
    assert_eq!(echo(&good, &server).await.unwrap(), Transport::Grpc);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let (addr, certs) = &seen[0];
    assert!(addr.is_some_and(|a| a.ip().is_loopback()), "{addr:?}");
    let pem = std::fs::read(pki.path("client.crt")).expect("the client's certificate");
    let presented = certs.as_ref().expect("the interceptor sees the verified client certificate");
    let leaf = &presented[0];
    let der_in_pem = first_der(&pem);
    assert_eq!(leaf, &der_in_pem, "the leaf the client presented");
    server.shutdown().await;
}

/// The DER of the first certificate in a PEM file.
fn first_der(pem: &[u8]) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem).next().expect("a certificate").expect("valid PEM").to_vec()
}
