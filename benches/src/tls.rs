//! A throwaway certificate authority and a server certificate for the TLS-over-TCP contender.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// A server's certificate and key, and the CA certificate its clients trust, all PEM.
pub struct Identity {
    /// The server's certificate, for `localhost` and `127.0.0.1`.
    pub cert: String,
    /// The server's private key.
    pub key: String,
    /// The CA that signed the certificate.
    pub ca: String,
}

/// Makes a new CA and a server certificate signed by it.
pub fn identity() -> Identity {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "duet-bench CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("server params")
        .signed_by(&key, &ca)
        .expect("server certificate");
    Identity { cert: cert.pem(), key: key.serialize_pem(), ca: ca.pem() }
}

/// The CA certificate folded into one line, to travel in the server's address line (PEM has no `|`).
pub fn fold(pem: &str) -> String {
    pem.trim_end().replace('\n', "|")
}

/// The CA certificate back from [`fold`].
pub fn unfold(line: &str) -> String {
    line.replace('|', "\n") + "\n"
}
