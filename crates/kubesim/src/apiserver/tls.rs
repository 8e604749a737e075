//! HTTPS for the API server: a certificate authority made at start, the server's certificate
//! (signed by it, for the listen address, `localhost` and the `kubernetes.default.svc` names),
//! client certificates for identities such as the admin, and the accept loop that serves HTTP/1.1
//! over TLS.
//!
//! Clients verify the server against the CA (the kubeconfig carries it as
//! `certificate-authority-data`). A client may present a certificate this CA signed; the server
//! then knows who it is (see [`super::authn`]); clients without one (bearer tokens, anonymous)
//! are accepted too, as a real API server accepts them.
//!
//! Each connection can be reset by the request handler ([`Connection::reset`]): that is how
//! [`super::client_faults`] makes a client's requests fail like a cut network.

use std::net::IpAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// DNS names the serving certificate covers besides the listen address, as a real API server's
/// certificate does (in-cluster clients reach it as `kubernetes.default.svc`).
pub const SERVER_DNS_NAMES: [&str; 5] = [
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// The cluster's certificate authority and the server's own certificate.
pub struct Pki {
    ca_pem: String,
    ca_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivatePkcs8KeyDer<'static>,
}

/// A client certificate signed by the cluster CA, with its private key (both PEM).
#[derive(Clone)]
pub struct ClientCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key (PKCS#8), PEM.
    pub key_pem: String,
    /// The certificate, DER (how the server recognises it on a connection).
    pub der: Vec<u8>,
}

impl std::fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the key
        f.debug_struct("ClientCert").finish_non_exhaustive()
    }
}

impl Pki {
    /// A fresh CA ("kubernetes", like kubeadm's) and a serving certificate for `ips` and
    /// [`SERVER_DNS_NAMES`].
    pub fn generate(ips: &[IpAddr]) -> anyhow::Result<Pki> {
        let ca_key = KeyPair::generate().context("generate the CA key")?;
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "kubernetes");
        ca.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        let ca_cert = ca.self_signed(&ca_key).context("self-sign the CA")?;
        let issuer = Issuer::new(ca, ca_key);

        let server_key = KeyPair::generate().context("generate the server key")?;
        let mut srv = CertificateParams::default();
        srv.distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        srv.subject_alt_names = SERVER_DNS_NAMES
            .iter()
            .map(|n| (*n).try_into().map(SanType::DnsName))
            .collect::<Result<_, _>>()
            .context("server DNS names")?;
        srv.subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        srv.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        srv.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        srv.use_authority_key_identifier_extension = true;
        let server_cert = srv
            .signed_by(&server_key, &issuer)
            .context("sign the server certificate")?;
        Ok(Pki {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().to_vec(),
            issuer,
            server_chain: vec![server_cert.der().clone()],
            server_key: PrivatePkcs8KeyDer::from(server_key.serialize_der()),
        })
    }

    /// The CA certificate, PEM (what `certificate-authority-data` carries, base64-encoded).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate, DER (`kube::Config::root_cert`).
    pub fn ca_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// A client certificate for user `common_name` in `organizations` (the groups), the way
    /// Kubernetes maps X.509 subjects to users.
    pub fn client_cert(
        &self,
        common_name: &str,
        organizations: &[String],
    ) -> anyhow::Result<ClientCert> {
        let key = KeyPair::generate().context("generate a client key")?;
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, common_name);
        for o in organizations {
            p.distinguished_name
                .push(DnType::OrganizationName, o.as_str());
        }
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        let cert = p
            .signed_by(&key, &self.issuer)
            .context("sign a client certificate")?;
        Ok(ClientCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        })
    }

    /// The rustls configuration of the listener: this server's certificate, HTTP/1.1, and
    /// client certificates checked against the CA but not required.
    pub(crate) fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.ca_der.clone()))
            .context("trust the CA for client certificates")?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .context("client certificate verifier")?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                self.server_chain.clone(),
                PrivateKeyDer::Pkcs8(self.server_key.clone_key()),
            )
            .context("serving certificate")?;
        // One request per connection at a time: resetting a connection then cuts exactly the
        // requests of the client that opened it.
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// One client connection, as request handlers see it (a request extension).
pub struct Connection {
    /// The DER certificate the client presented, if any (already verified against the CA).
    pub peer_cert: Option<Vec<u8>>,
    abort: tokio::sync::Notify,
}

impl Connection {
    /// Resets the connection (TCP RST) without answering: every request on it fails the way a
    /// broken network makes it fail.
    pub fn reset(&self) {
        self.abort.notify_one();
    }
}

/// Accepts connections until `stop` changes, serving each over TLS with `router`.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => {
                    conns.spawn(connection(tcp, acceptor.clone(), router.clone(), stop.clone()));
                }
                Err(e) => {
                    // Too many open files and the like: wait instead of spinning.
                    tracing::warn!("kubesim API server cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    // Every connection saw the stop and closes once its current answer is out.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
}

async fn connection(
    tcp: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    router: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    // A second handle on the socket, to make its close a reset when a fault asks for one.
    let raw = tcp
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .map(socket2::Socket::from);
    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!("TLS handshake failed: {e}");
            return;
        }
        Err(_) => return,
    };
    let peer_cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec());
    let conn = Arc::new(Connection {
        peer_cert,
        abort: tokio::sync::Notify::new(),
    });
    let for_requests = conn.clone();
    let svc = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(for_requests.clone());
        let mut router = router.clone();
        async move {
            use tower::Service;
            router.call(req.map(axum::body::Body::new)).await
        }
    });
    let http = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc);
    tokio::pin!(http);
    tokio::select! {
        _ = http.as_mut() => {}
        _ = conn.abort.notified() => {
            if let Some(s) = &raw {
                // linger 0: the close below sends RST instead of FIN
                let _ = s.set_linger(Some(Duration::ZERO));
            }
        }
        _ = stop.changed() => {
            http.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(3), http.as_mut()).await;
        }
    }
    // `http` (holding the TLS stream) is dropped before `raw`, so `raw`'s close is the last.
}
