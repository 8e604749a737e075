//! Per-client fault injection: the requests of one identity fail for a time window while every
//! other client keeps working, the way a network cut or an overloaded path isolates one process.
//!
//! A fault picks its client by user name ([`ClientSelector::User`]; every credential of that
//! user) or by credential ([`ClientSelector::Credential`]: one ServiceAccount token, so two
//! processes sharing a ServiceAccount can be told apart), and fails its requests in one of three
//! ways ([`ClientFaultMode`]):
//!
//! - `Refuse`: the connection is reset (TCP RST) as soon as the request's headers are read; the
//!   client sees a connection error, nothing is answered.
//! - `Hang`: nothing is answered; when the window ends the connection is reset, so a client
//!   without a timeout fails then. The request is never served, even after the window.
//! - `Error(code)`: the request is answered with that status (`500` InternalError, `409`
//!   Conflict, `429` TooManyRequests with `Retry-After: 1`, `503` ServiceUnavailable, ...).
//!
//! Watches the client already has open break when the fault starts: reset (`Refuse`), silent and
//! then reset when the window ends (`Hang`), or ended by the server (`Error`, the client's
//! re-watch then gets the error). Faults are matched against the authenticated identity, before
//! impersonation and authorization. A request the fault stops is still in the request log, with
//! its `fault` field set (see [`super::audit`]).
//!
//! In-process tests use [`ClientFaults`] (`ApiServerHandle::client_faults`); other processes use
//! the admin-only endpoint `/kubesim/v1/client-faults`, for example with kubectl:
//!
//! ```text
//! echo '{"user":"system:serviceaccount:tiermq:op-a","mode":"refuse","seconds":30}' \
//!   | kubectl create --raw /kubesim/v1/client-faults -f -      # {"id":1,...}
//! kubectl get --raw /kubesim/v1/client-faults                  # the active faults
//! kubectl delete --raw /kubesim/v1/client-faults/1             # one ends now
//! kubectl delete --raw /kubesim/v1/client-faults               # all end now
//! ```
//!
//! The JSON names the client with `user` or `credentialId`, the mode with `mode` (`refuse`,
//! `hang`, `error` with `code`), and the window with `seconds` (absent: until deleted).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::authn::UserInfo;
use super::error::ApiError;

/// Whose requests a fault hits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientSelector {
    /// Every request of this user name (`system:serviceaccount:ns:sa`, `kubernetes-admin`).
    User(String),
    /// Every request made with this credential (`UserInfo::credential_id`, `JTI=...`).
    Credential(String),
}

impl ClientSelector {
    /// By user name.
    pub fn user(name: impl Into<String>) -> Self {
        ClientSelector::User(name.into())
    }

    /// By credential id (`IssuedToken::credential_id`).
    pub fn credential(id: impl Into<String>) -> Self {
        ClientSelector::Credential(id.into())
    }

    fn matches(&self, u: &UserInfo) -> bool {
        match self {
            ClientSelector::User(n) => u.username == *n,
            ClientSelector::Credential(c) => u.credential_id() == Some(c.as_str()),
        }
    }
}

/// How the client's requests fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFaultMode {
    /// Connections are reset; no answer.
    Refuse,
    /// No answer; the connection is reset when the window ends.
    Hang,
    /// Answered with this HTTP status code and a matching `Status`.
    Error(u16),
}

impl ClientFaultMode {
    /// `refuse`, `hang` or `error`, as the request log shows it.
    pub fn name(&self) -> &'static str {
        match self {
            ClientFaultMode::Refuse => "refuse",
            ClientFaultMode::Hang => "hang",
            ClientFaultMode::Error(_) => "error",
        }
    }
}

/// One active fault.
#[derive(Debug, Clone)]
pub struct ClientFault {
    /// Its id, to end it early with [`ClientFaults::stop`].
    pub id: u64,
    /// Whose requests fail.
    pub client: ClientSelector,
    /// How.
    pub mode: ClientFaultMode,
    /// When the window ends; None: until stopped.
    pub until: Option<DateTime<Utc>>,
    deadline: Option<Instant>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    faults: Vec<ClientFault>,
}

/// The server's per-client faults; cheap to clone, shared with the server.
#[derive(Clone)]
pub struct ClientFaults {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for ClientFaults {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientFaults {
    /// No faults.
    pub fn new() -> Self {
        let (tx, _) = tokio::sync::watch::channel(0);
        ClientFaults {
            inner: Arc::default(),
            changed: Arc::new(tx),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// From now on, for `window` (None: until stopped), requests of `client` fail as `mode`
    /// says; its open watches break at once. Returns the fault's id.
    pub fn start(
        &self,
        client: ClientSelector,
        mode: ClientFaultMode,
        window: Option<Duration>,
    ) -> u64 {
        let id = {
            let mut inner = self.lock();
            inner.next_id += 1;
            let id = inner.next_id;
            inner.faults.push(ClientFault {
                id,
                client,
                mode,
                until: window
                    .and_then(|w| chrono::Duration::from_std(w).ok().map(|w| Utc::now() + w)),
                deadline: window.map(|w| Instant::now() + w),
            });
            id
        };
        self.changed.send_modify(|n| *n += 1);
        id
    }

    /// Ends fault `id` now; false if it had already ended.
    pub fn stop(&self, id: u64) -> bool {
        let found = {
            let mut inner = self.lock();
            let before = inner.faults.len();
            inner.faults.retain(|f| f.id != id);
            inner.faults.len() != before
        };
        self.changed.send_modify(|n| *n += 1);
        found
    }

    /// Ends every fault now.
    pub fn clear(&self) {
        self.lock().faults.clear();
        self.changed.send_modify(|n| *n += 1);
    }

    /// The faults whose window has not ended.
    pub fn active(&self) -> Vec<ClientFault> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.faults.retain(|f| f.deadline.is_none_or(|d| d > now));
        inner.faults.clone()
    }

    /// The first active fault that hits `user`'s requests.
    pub(crate) fn matching(&self, user: &UserInfo) -> Option<ClientFault> {
        self.active().into_iter().find(|f| f.client.matches(user))
    }

    /// Changes whenever a fault starts or is stopped.
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Returns once fault `id` is over: its window ended or it was stopped.
    pub(crate) async fn wait_over(&self, id: u64) {
        let mut changes = self.subscribe();
        loop {
            let deadline = match self.lock().faults.iter().find(|f| f.id == id) {
                None => return,
                Some(f) => f.deadline,
            };
            match deadline {
                Some(d) if d <= Instant::now() => return,
                Some(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(d) => return,
                        r = changes.changed() => if r.is_err() { return },
                    }
                }
                None => {
                    if changes.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// The `Status` an `Error(code)` fault answers with.
pub(crate) fn error_status(code: u16) -> ApiError {
    let (reason, message): (&'static str, &str) = match code {
        400 => ("BadRequest", "injected bad request"),
        401 => ("Unauthorized", "Unauthorized"),
        403 => ("Forbidden", "forbidden: injected denial"),
        404 => (
            "NotFound",
            "the server could not find the requested resource",
        ),
        409 => (
            "Conflict",
            "Operation cannot be fulfilled: injected conflict",
        ),
        410 => ("Expired", "injected expiry"),
        422 => ("Invalid", "injected validation failure"),
        429 => (
            "TooManyRequests",
            "Too many requests, please try again later.",
        ),
        503 => (
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ),
        504 => (
            "Timeout",
            "the server was unable to return a response in the time allotted",
        ),
        _ => ("InternalError", "Internal error occurred: injected failure"),
    };
    ApiError::new(code, reason, format!("{message} (kubesim client fault)"))
}

/// A fault as the `/kubesim/v1/client-faults` endpoint takes and shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientFaultJson {
    /// Set in answers: the fault's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// The user whose requests fail (or `credential_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The credential whose requests fail (or `user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<String>,
    /// `refuse`, `hang` or `error`.
    pub mode: String,
    /// The status code of `error` (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// The window in seconds; absent: until deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// Set in answers: when the window ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

impl ClientFaultJson {
    /// The fault this JSON asks for, or why it cannot be one.
    pub fn parse(&self) -> Result<(ClientSelector, ClientFaultMode, Option<Duration>), String> {
        let client = match (&self.user, &self.credential_id) {
            (Some(u), None) => ClientSelector::user(u),
            (None, Some(c)) => ClientSelector::credential(c),
            _ => return Err("give exactly one of user and credentialId".into()),
        };
        let mode = match (self.mode.as_str(), self.code) {
            ("refuse", None) => ClientFaultMode::Refuse,
            ("hang", None) => ClientFaultMode::Hang,
            ("error", code) => {
                let code = code.unwrap_or(500);
                if !(400..=599).contains(&code) {
                    return Err(format!("code {code} is not an error status (400-599)"));
                }
                ClientFaultMode::Error(code)
            }
            ("refuse" | "hang", Some(_)) => {
                return Err("code is only for mode error".into());
            }
            (other, _) => {
                return Err(format!("mode {other:?} is not one of refuse, hang, error"));
            }
        };
        let window = match self.seconds {
            None => None,
            Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
            Some(s) => return Err(format!("seconds must be positive, not {s}")),
        };
        Ok((client, mode, window))
    }

    /// How an active fault is shown.
    pub fn of(f: &ClientFault) -> Self {
        let (user, credential_id) = match &f.client {
            ClientSelector::User(u) => (Some(u.clone()), None),
            ClientSelector::Credential(c) => (None, Some(c.clone())),
        };
        ClientFaultJson {
            id: Some(f.id),
            user,
            credential_id,
            mode: f.mode.name().into(),
            code: match f.mode {
                ClientFaultMode::Error(c) => Some(c),
                _ => None,
            },
            seconds: None,
            until: f.until,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn faults_hit_only_their_client_and_end_with_their_window() {
        let f = ClientFaults::new();
        let a = UserInfo::service_account("t", "a");
        let mut b = UserInfo::service_account("t", "a");
        b.extra.insert(
            crate::apiserver::authn::CREDENTIAL_ID.into(),
            vec!["JTI=b".into()],
        );
        let other = UserInfo::service_account("t", "other");
        let id = f.start(
            ClientSelector::credential("JTI=b"),
            ClientFaultMode::Refuse,
            Some(Duration::from_millis(200)),
        );
        assert!(f.matching(&a).is_none(), "another token of the same user");
        assert_eq!(f.matching(&b).map(|x| x.id), Some(id));
        f.start(
            ClientSelector::user("system:serviceaccount:t:a"),
            ClientFaultMode::Error(429),
            None,
        );
        assert!(f.matching(&a).is_some());
        assert!(f.matching(&other).is_none());
        let t0 = Instant::now();
        f.wait_over(id).await;
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(150) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
        assert_eq!(f.active().len(), 1);
        f.clear();
        assert!(f.matching(&a).is_none());
    }

    #[test]
    fn the_endpoint_json_is_checked() {
        let j = |v: serde_json::Value| {
            serde_json::from_value::<ClientFaultJson>(v)
                .unwrap()
                .parse()
        };
        assert_eq!(
            j(serde_json::json!({"user": "u", "mode": "error", "code": 409}))
                .unwrap()
                .1,
            ClientFaultMode::Error(409)
        );
        assert!(j(serde_json::json!({"mode": "refuse"})).is_err());
        assert!(j(serde_json::json!({"user": "u", "mode": "drop"})).is_err());
        assert!(j(serde_json::json!({"user": "u", "mode": "error", "code": 200})).is_err());
        assert!(j(serde_json::json!({"user": "u", "mode": "hang", "seconds": -1})).is_err());
    }
}
