//! A throw-away certificate authority for TLS tests: it signs broker certificates for the DNS
//! names (and addresses) a test needs, in the PEM shape cert-manager writes into a Secret
//! (`ca.crt`, `tls.crt`, `tls.key`).

use std::fmt;
use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::TestkitError;

/// Makes ring the process's rustls provider (once; later calls do nothing). reqwest builds its
/// TLS on the process provider and panics without one, even for plain-HTTP clients.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A plain HTTP client for tests (no proxy), safe to build in any test.
pub fn http_client() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("an HTTP client without special settings builds")
}

/// A CA made for one test.
pub struct TestCa {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, both PEM. `Debug` never shows the key.
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key (PKCS#8), PEM.
    pub key_pem: String,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert").finish_non_exhaustive()
    }
}

fn err(what: &str) -> impl FnOnce(rcgen::Error) -> TestkitError + '_ {
    move |e| TestkitError::Config(format!("{what}: {e}"))
}

impl TestCa {
    /// A fresh CA named `common_name`.
    pub fn new(common_name: &str) -> Result<Self, TestkitError> {
        let key = KeyPair::generate().map_err(err("generate the CA key"))?;
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).map_err(err("self-sign the CA"))?;
        Ok(TestCa {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM (`ca.crt`).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A server certificate for `dns_names` and `ips`, signed by this CA.
    pub fn issue(&self, dns_names: &[&str], ips: &[IpAddr]) -> Result<IssuedCert, TestkitError> {
        let key = KeyPair::generate().map_err(err("generate a server key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(
            DnType::CommonName,
            dns_names.first().copied().unwrap_or("broker"),
        );
        for name in dns_names {
            let name = (*name).try_into().map_err(err("a certificate DNS name"))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(err("sign a server certificate"))?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Opens TLS to `addr`, trusting only `ca_pem` and verifying `server_name`, sends the AMQP 0-9-1
/// protocol header and returns the type of the first frame the broker answers with (1, a method
/// frame: Connection.Start). A TLS failure is an error starting with `TLS:`.
pub async fn amqps_handshake(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    server_name: &str,
) -> Result<u8, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
    let step = std::time::Duration::from_secs(10);
    let tcp = tokio::time::timeout(step, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connect to {addr}: timed out"))?
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let mut stream = tokio::time::timeout(step, connector.connect(name, tcp))
        .await
        .map_err(|_| "TLS: handshake timed out".to_string())?
        .map_err(|e| format!("TLS: {e}"))?;
    stream
        .write_all(b"AMQP\x00\x00\x09\x01")
        .await
        .map_err(|e| e.to_string())?;
    let mut frame_type = [0u8; 1];
    tokio::time::timeout(step, stream.read_exact(&mut frame_type))
        .await
        .map_err(|_| "no answer to the protocol header".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(frame_type[0])
}
