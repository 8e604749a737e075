//! The typed management-API client. One client talks to one cluster as its administrator. The
//! requests are grouped by what they manage: `broker` (cluster facts, vhosts, users, limits,
//! definitions), `queues` (queues and the clients using them), `parameters` (policies,
//! shovels, federation), `feature_flags` (what an in-place upgrade enables first).

mod broker;
mod feature_flags;
mod parameters;
mod queues;

use std::fmt;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::encode::check_name;
use crate::error::{BrokerError, ErrorKind, NotFoundExt};
use crate::secret::{Secret, redact};

/// Bounded exponential backoff for transient failures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Tries in all, the first included; 1 disables retries.
    pub max_attempts: u32,
    /// Pause after the first failed attempt; each later pause doubles.
    pub initial_backoff: Duration,
    /// Upper bound of any pause.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(3),
        }
    }
}

impl RetryPolicy {
    /// A single attempt, no retry.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The pause after failed attempt `attempt` (1-based): doubling from `initial_backoff`,
    /// capped, with up to 25 % jitter so retrying operators don't move in lockstep.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.max_backoff);
        let jitter = rand::random_range(0.0..0.25);
        base.mul_f64(1.0 + jitter).min(self.max_backoff)
    }
}

/// Where a cluster's management API is and how to log in.
#[derive(Clone)]
pub struct ClusterEndpoint {
    /// A name for errors and logs, for example `shared/default` or `dedicated/orders`.
    pub cluster: String,
    /// `http://host:15672`, no trailing slash needed.
    pub url: String,
    /// Administrator user of the management API.
    pub username: String,
    /// Its password.
    pub password: Secret,
}

impl fmt::Debug for ClusterEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterEndpoint")
            .field("cluster", &self.cluster)
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

/// Client settings beyond the endpoint.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How transient failures are retried.
    pub retry: RetryPolicy,
    /// Limit on establishing the TCP connection.
    pub connect_timeout: Duration,
    /// Limit on a whole request, answer included.
    pub request_timeout: Duration,
    /// Definitions documents above this size are refused before sending (RabbitMQ's own HTTP
    /// body limit is 20 MB by default; staying well below keeps imports fast and predictable).
    pub max_definitions_bytes: usize,
    /// The AMQP port on the management API's host, for live queue counts
    /// ([`crate::steps::live_counts`]).
    pub amqp_port: u16,
    /// HTTPS to a TLS cluster: the CA to trust and the name to verify. `None`: plain HTTP.
    pub tls: Option<ServerTls>,
    /// Told of every request sent (each attempt), e.g. to count them as a metric.
    pub observer: Option<RequestObserver>,
}

/// A callback given each request's HTTP method (`GET`, `PUT`, `POST`, `DELETE`) as it is sent:
/// how a caller counts management-API reads and writes without this crate knowing its metrics.
#[derive(Clone)]
pub struct RequestObserver(pub std::sync::Arc<dyn Fn(&str) + Send + Sync>);

impl fmt::Debug for RequestObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RequestObserver")
    }
}

/// How the client verifies a TLS cluster's management API: only certificates signed by
/// `ca_pem` and issued for `server_name` are accepted (no system roots, no opt-out).
#[derive(Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// The CA certificate(s), PEM (a cert-manager Secret's `ca.crt`).
    pub ca_pem: Vec<u8>,
    /// The name the certificate must be issued for (the cluster Service's DNS name). When the
    /// endpoint's URL names an IP address, the client connects to that address and still
    /// verifies (and sends as SNI) this name.
    pub server_name: String,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// A rustls configuration trusting only this CA (ring, the workspace's one provider).
    pub fn rustls_config(&self) -> Result<rustls::ClientConfig, String> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.ca_pem) {
            let cert = cert.map_err(|e| format!("the CA is not valid PEM: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("the CA certificate is not usable: {e}"))?;
        }
        if roots.is_empty() {
            return Err("the CA holds no certificate".into());
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(60),
            max_definitions_bytes: 8 * 1024 * 1024,
            amqp_port: 5672,
            tls: None,
            observer: None,
        }
    }
}

/// A typed client of one cluster's management API.
#[derive(Debug, Clone)]
pub struct ManagementClient {
    endpoint: ClusterEndpoint,
    options: ClientOptions,
    http: reqwest::Client,
    /// Where requests go: the endpoint's URL, with an IP host replaced by the TLS server name
    /// (which the HTTP client resolves to that IP).
    base_url: String,
}

/// `https://host:15671/x` → (`https`, `/x`, `host:15671`, 15671); `None` without a port.
fn split_url(url: &str) -> Option<(&str, &str, &str, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    let port = authority.rsplit_once(':')?.1.parse().ok()?;
    Some((scheme, path, authority, port))
}

/// One request: what it does (for errors and logs), where, and with which body.
struct Call<'a> {
    op: String,
    method: Method,
    path: String,
    body: Option<Value>,
    headers: Vec<(&'static str, String)>,
    /// Secrets inside the body, scrubbed from any answer that becomes an error text.
    secrets: Vec<&'a Secret>,
}

impl<'a> Call<'a> {
    fn new(method: Method, op: impl Into<String>, path: String) -> Self {
        Call {
            op: op.into(),
            method,
            path,
            body: None,
            headers: Vec::new(),
            secrets: Vec::new(),
        }
    }

    fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    fn secret(mut self, s: &'a Secret) -> Self {
        self.secrets.push(s);
        self
    }
}

impl ManagementClient {
    /// A client with the default options. Fails only if the HTTP client cannot be built.
    pub fn new(endpoint: ClusterEndpoint) -> Result<Self, BrokerError> {
        Self::with_options(endpoint, ClientOptions::default())
    }

    /// A client with the given options. Fails only if the HTTP client cannot be built.
    pub fn with_options(
        endpoint: ClusterEndpoint,
        options: ClientOptions,
    ) -> Result<Self, BrokerError> {
        let invalid = |reason: String| BrokerError {
            cluster: endpoint.cluster.clone(),
            operation: "build HTTP client".into(),
            kind: ErrorKind::InvalidInput { reason },
        };
        // reqwest builds its TLS on the process's rustls provider, even for plain HTTP.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .pool_idle_timeout(Duration::from_secs(30));
        let mut base_url = endpoint.url.trim_end_matches('/').to_string();
        if let Some(tls) = &options.tls {
            let (rest, authority, port) = split_url(&base_url)
                .filter(|(scheme, ..)| *scheme == "https")
                .map(|(_, rest, authority, port)| (rest, authority, port))
                .ok_or_else(|| {
                    invalid(format!(
                        "a TLS cluster's management URL must be https://host:port, not {:?}",
                        endpoint.url
                    ))
                })?;
            let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
            if let Ok(ip) = host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
                builder = builder.resolve(&tls.server_name, std::net::SocketAddr::new(ip, port));
                base_url = format!("https://{}:{port}{rest}", tls.server_name);
            }
            builder = builder.tls_backend_preconfigured(tls.rustls_config().map_err(invalid)?);
        }
        let http = builder.build().map_err(|e| invalid(e.to_string()))?;
        Ok(ManagementClient {
            endpoint,
            options,
            http,
            base_url,
        })
    }

    /// The cluster's name as errors and logs give it ([`ClusterEndpoint::cluster`]).
    pub fn cluster(&self) -> &str {
        &self.endpoint.cluster
    }

    /// The host of the management API's URL (where the cluster's AMQP port is too).
    pub fn host(&self) -> String {
        let rest = self
            .endpoint
            .url
            .split_once("://")
            .map_or(self.endpoint.url.as_str(), |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or(rest);
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        match authority.strip_prefix('[') {
            // [v6]:port
            Some(v6) => v6.split(']').next().unwrap_or(v6).to_string(),
            None => authority.split(':').next().unwrap_or(authority).to_string(),
        }
    }

    /// Where and how the client talks to the cluster.
    pub fn endpoint(&self) -> &ClusterEndpoint {
        &self.endpoint
    }

    /// The options the client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    pub(crate) fn error(&self, operation: impl Into<String>, kind: ErrorKind) -> BrokerError {
        BrokerError {
            cluster: self.endpoint.cluster.clone(),
            operation: operation.into(),
            kind,
        }
    }

    pub(crate) fn check(&self, op: &str, kind: &str, name: &str) -> Result<(), BrokerError> {
        check_name(kind, name).map_err(|reason| self.error(op, ErrorKind::InvalidInput { reason }))
    }

    /// Sends a call, retrying transient failures; returns the body of a 2xx answer.
    async fn send(&self, call: Call<'_>) -> Result<bytes::Bytes, BrokerError> {
        let url = format!("{}/api/{}", self.base_url, call.path);
        let mut secrets = call.secrets.clone();
        secrets.push(&self.endpoint.password);
        let mut attempt = 1;
        loop {
            let kind = match self.send_once(&call, &url, &secrets).await {
                Ok(body) => return Ok(body),
                Err(kind) => kind,
            };
            if !kind.is_transient() || attempt >= self.options.retry.max_attempts {
                return Err(self.error(call.op, kind));
            }
            let pause = self.options.retry.backoff(attempt);
            tracing::warn!(
                cluster = %self.endpoint.cluster, operation = %call.op, attempt,
                retry_in_ms = pause.as_millis() as u64, error = %kind,
                "transient management-API failure, retrying"
            );
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }

    async fn send_once(
        &self,
        call: &Call<'_>,
        url: &str,
        secrets: &[&Secret],
    ) -> Result<bytes::Bytes, ErrorKind> {
        let mut req = self.http.request(call.method.clone(), url).basic_auth(
            &self.endpoint.username,
            Some(self.endpoint.password.expose()),
        );
        for (k, v) in &call.headers {
            req = req.header(*k, v);
        }
        if let Some(body) = &call.body {
            req = req.json(body);
        }
        tracing::debug!(cluster = %self.endpoint.cluster, operation = %call.op, method = %call.method, "management API call");
        if let Some(observe) = &self.options.observer {
            (observe.0)(call.method.as_str());
        }
        // The configured URL could carry user info; it is scrubbed like everything else.
        let unreachable = |e: reqwest::Error| ErrorKind::Unreachable {
            url: redact(&self.endpoint.url, secrets),
            detail: redact(&error_chain(&e), secrets),
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(unreachable)?;
        if status.is_success() {
            return Ok(body);
        }
        let reason = redact(&reason_of(status, &body), secrets);
        Err(classify_status(
            status.as_u16(),
            reason,
            &self.endpoint.username,
        ))
    }

    async fn get_json<T: DeserializeOwned>(&self, call: Call<'_>) -> Result<T, BrokerError> {
        let op = call.op.clone();
        let body = self.send(call).await?;
        serde_json::from_slice(&body).map_err(|e| {
            self.error(
                op,
                ErrorKind::InvalidResponse {
                    detail: format!("cannot decode the answer: {e}"),
                },
            )
        })
    }

    async fn send_empty(&self, call: Call<'_>) -> Result<(), BrokerError> {
        self.send(call).await.map(|_| ())
    }

    /// A DELETE where "already gone" is success. Returns whether something was deleted.
    async fn delete_idempotent(&self, call: Call<'_>) -> Result<bool, BrokerError> {
        Ok(self.send(call).await.optional()?.is_some())
    }
}

/// Maps an unsuccessful HTTP status to an [`ErrorKind`].
pub(crate) fn classify_status(status: u16, reason: String, user: &str) -> ErrorKind {
    match status {
        401 | 403 => ErrorKind::Unauthorized {
            status,
            user: user.to_string(),
        },
        404 => ErrorKind::NotFound,
        // Some endpoints (definitions of a vhost) answer a missing vhost with 400.
        400 if reason == "vhost_not_found" => ErrorKind::NotFound,
        500..=599 => ErrorKind::Server { status, reason },
        _ => ErrorKind::Client { status, reason },
    }
}

/// The broker's reason text from an error answer (`{"error": .., "reason": ..}`), else the body.
fn reason_of(status: StatusCode, body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let reason = parsed.as_ref().and_then(|v| {
        let r = v.get("reason")?;
        Some(
            r.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| r.to_string()),
        )
    });
    let text = reason.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    let text: String = text.chars().take(600).collect();
    if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("no reason given")
            .to_string()
    } else {
        text
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        let first = p.backoff(1);
        assert!(
            first >= Duration::from_millis(100) && first <= Duration::from_millis(125),
            "{first:?}"
        );
        let third = p.backoff(3);
        assert!(
            third >= Duration::from_millis(400) && third <= Duration::from_millis(500),
            "{third:?}"
        );
        assert_eq!(p.backoff(30), Duration::from_secs(1));
    }

    #[test]
    fn reasons_come_from_the_json_body_or_the_status() {
        let r = reason_of(
            StatusCode::BAD_REQUEST,
            br#"{"error":"bad_request","reason":"inequivalent arg"}"#,
        );
        assert_eq!(r, "inequivalent arg");
        assert_eq!(reason_of(StatusCode::BAD_GATEWAY, b""), "Bad Gateway");
        assert_eq!(
            reason_of(StatusCode::BAD_REQUEST, b"plain text"),
            "plain text"
        );
    }

    #[test]
    fn endpoint_debug_hides_the_password() {
        let e = ClusterEndpoint {
            cluster: "c".into(),
            url: "http://127.0.0.1:15672".into(),
            username: "admin".into(),
            password: Secret::new("p4ssw0rd-xyz"),
        };
        let client = ManagementClient::new(e).unwrap();
        assert!(!format!("{client:?}").contains("p4ssw0rd"));
    }

    fn tls_options(ca_pem: &[u8]) -> ClientOptions {
        ClientOptions {
            tls: Some(ServerTls {
                ca_pem: ca_pem.to_vec(),
                server_name: "main.tiermq.svc".into(),
            }),
            ..ClientOptions::default()
        }
    }

    fn endpoint(url: &str) -> ClusterEndpoint {
        ClusterEndpoint {
            cluster: "c".into(),
            url: url.into(),
            username: "admin".into(),
            password: Secret::new("pw"),
        }
    }

    #[test]
    fn urls_split_into_scheme_path_authority_and_port() {
        assert_eq!(
            split_url("https://10.0.0.7:15671"),
            Some(("https", "", "10.0.0.7:15671", 15671))
        );
        assert_eq!(
            split_url("https://[fd00::7]:15671/x"),
            Some(("https", "/x", "[fd00::7]:15671", 15671))
        );
        assert_eq!(split_url("https://main.tiermq.svc"), None);
    }

    #[test]
    fn a_tls_client_needs_an_https_url_and_a_usable_ca() {
        let err =
            ManagementClient::with_options(endpoint("http://10.0.0.7:15672"), tls_options(b"x"))
                .unwrap_err();
        assert!(err.to_string().contains("https://"), "{err}");
        let err = ManagementClient::with_options(
            endpoint("https://10.0.0.7:15671"),
            tls_options(b"not a certificate"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("CA"), "{err}");
    }

    #[test]
    fn a_tls_client_connects_to_the_ip_but_verifies_the_server_name() {
        let ca = tiermq_testkit::tls::TestCa::new("unit").unwrap();
        let options = tls_options(ca.ca_pem().as_bytes());
        let by_ip =
            ManagementClient::with_options(endpoint("https://10.0.0.7:15671"), options.clone())
                .unwrap();
        assert_eq!(by_ip.base_url, "https://main.tiermq.svc:15671");
        // The AMQP host for live counts stays the address the endpoint names.
        assert_eq!(by_ip.host(), "10.0.0.7");
        let by_name =
            ManagementClient::with_options(endpoint("https://main.tiermq.svc:15671/"), options)
                .unwrap();
        assert_eq!(by_name.base_url, "https://main.tiermq.svc:15671");
    }
}
