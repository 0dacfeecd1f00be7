//! TLS on the gRPC port (rustls, through tonic), and mutual TLS.
//!
//! The Iroh side needs none of this: every QUIC connection is encrypted and authenticated by the
//! endpoints' keys (see the README's trust model). The gRPC port is plain HTTP/2 unless TLS is on:
//!
//! ```toml
//! [transport.grpc]
//! tls_enabled = true
//! tls_cert_path = "/etc/node/node.crt"   # PEM chain served, and shown to peers that ask (mTLS)
//! tls_key_path = "/etc/node/node.key"
//! tls_ca_path = "/etc/node/ca.crt"       # who signs peers' certificates (absent: Mozilla's roots)
//! tls_client_auth = true                 # mutual TLS: clients must show a certificate from tls_ca_path
//! ```
//!
//! [`crate::Server::from_config`] and [`crate::Channel::from_config`] read these files; by hand, give
//! tonic's own types to [`crate::Server::grpc_tls`] and to a tonic endpoint:
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use duet::tls::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
//! let identity = Identity::from_pem(std::fs::read("node.crt")?, std::fs::read("node.key")?);
//! let server = duet::Server::builder()
//!     .grpc("127.0.0.1:7001".parse()?)
//!     .grpc_tls(ServerTlsConfig::new().identity(identity))
//!     .serve()
//!     .await;
//! let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read("ca.crt")?));
//! let channel = tonic::transport::Endpoint::from_static("https://127.0.0.1:7001").tls_config(tls)?.connect().await?;
//! let channel = duet::Channel::from_tonic(channel);
//! # Ok(()) }
//! ```

use std::path::Path;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
pub use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::{ConfigError, GrpcConfig};

/// How long a client gets to finish the TLS handshake on a server built from config, so a peer that
/// connects and stalls holds nothing for long.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn read(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path)
        .map_err(|e| ConfigError::new(format!("transport.grpc.{key}"), format!("cannot read {}: {e}", path.display())))
}

fn read_certs(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let pem = read(key, path)?;
    let count = CertificateDer::pem_slice_iter(&pem).take_while(Result::is_ok).count();
    if count == 0 {
        return Err(ConfigError::new(
            format!("transport.grpc.{key}"),
            format!("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display()),
        ));
    }
    Ok(pem)
}

fn read_key(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let pem = read("tls_key_path", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        ConfigError::new(
            "transport.grpc.tls_key_path",
            format!("{} holds no usable PEM private key ({e}); give a PKCS#8, PKCS#1 or SEC1 key", path.display()),
        )
    })?;
    Ok(pem)
}

impl GrpcConfig {
    fn identity(&self) -> Result<Option<Identity>, ConfigError> {
        match (&self.tls_cert_path, &self.tls_key_path) {
            (Some(cert), Some(key)) => Ok(Some(Identity::from_pem(read_certs("tls_cert_path", cert)?, read_key(key)?))),
            _ => Ok(None),
        }
    }

    fn ca(&self) -> Result<Option<Certificate>, ConfigError> {
        self.tls_ca_path.as_deref().map(|p| read_certs("tls_ca_path", p).map(Certificate::from_pem)).transpose()
    }

    /// The gRPC server's TLS settings, read from the files named; `None` when TLS is off. Errors name
    /// the key whose file is missing or unusable, including a key that does not match its certificate.
    pub fn server_tls(&self) -> Result<Option<ServerTlsConfig>, ConfigError> {
        if !self.tls_enabled {
            return Ok(None);
        }
        let identity = self.identity()?.ok_or_else(|| {
            ConfigError::new(
                "transport.grpc.tls_cert_path",
                "is required to serve gRPC with tls_enabled = true: the PEM certificate chain the port serves \
                 (and tls_key_path, its key)",
            )
        })?;
        let mut tls = ServerTlsConfig::new().identity(identity).timeout(DEFAULT_HANDSHAKE_TIMEOUT);
        if self.tls_client_auth {
            let ca = self.ca()?.ok_or_else(|| {
                ConfigError::new("transport.grpc.tls_client_auth", "needs tls_ca_path, the CA of client certificates")
            })?;
            tls = tls.client_ca_root(ca);
        }
        // rustls checks the key against the certificate only when the acceptor is built: do it now, so
        // the error names the key instead of surfacing from `serve`.
        tonic::transport::Server::builder().tls_config(tls.clone()).map_err(|e| {
            ConfigError::new(
                "transport.grpc.tls_key_path",
                format!("cannot be used with tls_cert_path: {}", crate::iroh::error_chain(&e)),
            )
        })?;
        Ok(Some(tls))
    }

    /// The TLS settings for calling peers' gRPC ports; `None` when TLS is off. Trusts `tls_ca_path`
    /// (or Mozilla's roots), and shows this node's certificate to servers that ask for one.
    pub fn client_tls(&self) -> Result<Option<ClientTlsConfig>, ConfigError> {
        if !self.tls_enabled {
            return Ok(None);
        }
        let mut tls = ClientTlsConfig::new().timeout(DEFAULT_HANDSHAKE_TIMEOUT);
        tls = match self.ca()? {
            Some(ca) => tls.ca_certificate(ca),
            None => tls.with_webpki_roots(),
        };
        if let Some(identity) = self.identity()? {
            tls = tls.identity(identity);
        }
        if let Some(name) = &self.tls_server_name {
            tls = tls.domain_name(name.clone());
        }
        Ok(Some(tls))
    }
}
