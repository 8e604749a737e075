//! The identities a test or demo hands its clients: the admin, users with client certificates
//! of their own, ServiceAccount tokens; as kube-rs configs and as kubeconfig files. Also the
//! handle's request log and per-client faults.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::audit::RequestLog;
use super::authn::{IssuedToken, TokenSpec, UserInfo};
use super::client_faults::ClientFaults;
use super::error::ApiError;
use super::tls::{ClientCert, Pki};
use super::{ApiServerHandle, authn, store};

/// The kubeconfig `user` entry of a client certificate.
pub(crate) fn cert_user(c: &ClientCert) -> Value {
    json!({"client-certificate-data": STANDARD.encode(&c.cert_pem),
        "client-key-data": STANDARD.encode(&c.key_pem)})
}

/// Writes a file only its owner can read (it holds a key or a token).
pub(crate) fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

impl authn::Authenticator {
    /// Issues a client certificate for `user` in `groups` and makes it authenticate as such.
    pub(crate) fn register_user_cert(
        &self,
        pki: &Pki,
        user: &str,
        groups: &[String],
    ) -> anyhow::Result<ClientCert> {
        let cert = pki.client_cert(user, groups)?;
        self.register_cert(cert.der.clone(), UserInfo::authenticated(user, groups));
        Ok(cert)
    }
}

impl ApiServerHandle {
    /// The cluster CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        self.pki.ca_pem()
    }

    /// A kube-rs config for this server with the given kubeconfig `user` entry.
    fn config_with(&self, user: Value) -> kube::Config {
        let mut c = kube::Config::new(self.url().parse().expect("the server URL is a valid URI"));
        c.root_cert = Some(vec![self.pki.ca_der().to_vec()]);
        c.auth_info = serde_json::from_value(user).expect("a kubeconfig user entry");
        c
    }

    /// A kubeconfig for this server with the given `user` entry (cluster, user and context all
    /// named `kubesim`, namespace `default`).
    pub(crate) fn kubeconfig_with_user(&self, user: Value) -> String {
        let kc = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "kubesim", "cluster": {"server": self.url(),
                "certificate-authority-data": STANDARD.encode(self.ca_pem())}}],
            "users": [{"name": "kubesim", "user": user}],
            "contexts": [{"name": "kubesim", "context": {"cluster": "kubesim", "user": "kubesim",
                "namespace": "default"}}],
            "current-context": "kubesim",
            "preferences": {},
        });
        serde_yaml::to_string(&kc).expect("a kubeconfig serialises")
    }

    /// The admin's kube-rs config (`kubernetes-admin` in `system:masters`).
    pub fn admin_config(&self) -> kube::Config {
        self.config_with(cert_user(&self.admin))
    }

    /// A kube-rs client acting as the admin.
    pub fn admin_client(&self) -> anyhow::Result<kube::Client> {
        Ok(kube::Client::try_from(self.admin_config())?)
    }

    /// A client certificate for `user` in `groups` (plus `system:authenticated`), signed by the
    /// cluster CA and recognised by this server from now on.
    pub fn client_cert_for_user(
        &self,
        user: &str,
        groups: &[String],
    ) -> anyhow::Result<ClientCert> {
        self.app.auth.register_user_cert(&self.pki, user, groups)
    }

    /// A kube-rs config that authenticates as `user` in `groups` by client certificate.
    pub fn user_config(&self, user: &str, groups: &[String]) -> anyhow::Result<kube::Config> {
        Ok(self.config_with(cert_user(&self.client_cert_for_user(user, groups)?)))
    }

    /// A kubeconfig (YAML) that authenticates as `user` in `groups` by client certificate, for
    /// kubectl and other processes (write it with mode 0600: it holds the key).
    pub fn kubeconfig_for_user(&self, user: &str, groups: &[String]) -> anyhow::Result<String> {
        Ok(self.kubeconfig_with_user(cert_user(&self.client_cert_for_user(user, groups)?)))
    }

    /// Writes [`Self::kubeconfig_for_user`] to `path`, readable by its owner only.
    pub fn write_kubeconfig_for_user(
        &self,
        path: &Path,
        user: &str,
        groups: &[String],
    ) -> anyhow::Result<()> {
        Ok(write_private(
            path,
            &self.kubeconfig_for_user(user, groups)?,
        )?)
    }

    /// A token for ServiceAccount `namespace/name` (which must exist), valid for `lifetime`,
    /// for the API server's audience. Unlike the TokenRequest API it accepts lifetimes under
    /// 10 minutes, so tests can watch a token expire.
    pub fn issue_token(
        &self,
        namespace: &str,
        name: &str,
        lifetime: Duration,
    ) -> Result<IssuedToken, ApiError> {
        self.issue_token_with(namespace, name, &TokenSpec::new(lifetime))
    }

    /// A token as `spec` asks (audiences, lifetime, bound object).
    pub fn issue_token_with(
        &self,
        namespace: &str,
        name: &str,
        spec: &TokenSpec,
    ) -> Result<IssuedToken, ApiError> {
        let st = store::lock(&self.state);
        self.app.auth.issue_token(&st, namespace, name, spec)
    }

    /// A kube-rs config that authenticates with bearer `token`.
    pub fn token_config(&self, token: &str) -> kube::Config {
        self.config_with(json!({"token": token}))
    }

    /// A kubeconfig (YAML) that authenticates with bearer `token`.
    pub fn kubeconfig_for_token(&self, token: &str) -> String {
        self.kubeconfig_with_user(json!({"token": token}))
    }

    /// The request log (in memory; also in the file `ApiServerConfig::request_log` names).
    pub fn request_log(&self) -> Arc<RequestLog> {
        self.app.requests.clone()
    }

    /// Per-client fault injection (see [`super::client_faults`]).
    pub fn client_faults(&self) -> ClientFaults {
        self.app.client_faults.clone()
    }
}
