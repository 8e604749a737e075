//! Authentication, as a real API server does it:
//!
//! - **X.509 client certificates** signed by the cluster CA ([`super::tls::Pki`]): the
//!   certificate's common name is the user, its organisations are the groups. The admin identity
//!   of the kubeconfig kubesim writes is one (`kubernetes-admin` in `system:masters`).
//! - **ServiceAccount bearer tokens** from the TokenRequest API (`kubectl create token`) or
//!   [`Authenticator::issue_token`]: JWTs (HS256, signed with a key made at start) with the real
//!   claims (`iss`, `aud`, `sub`, `exp`, `nbf`, `jti`, `kubernetes.io`). A token is valid while it
//!   has not expired, names the API server's audience, and its ServiceAccount (and the Pod or
//!   Secret it is bound to) still exists with the same uid. Its user is
//!   `system:serviceaccount:NS:NAME` in the groups `system:serviceaccounts`,
//!   `system:serviceaccounts:NS` and `system:authenticated`, with the token's id in
//!   `extra["authentication.kubernetes.io/credential-id"]` (`JTI=...`).
//! - **Anonymous**: a request without credentials is `system:anonymous` in
//!   `system:unauthenticated`; RBAC then decides (it may read `/version` and health checks).
//!   A bearer token that is not valid is 401 Unauthorized, not anonymous.
//! - **Impersonation** (`Impersonate-User`, `-Group`, `-Uid`, `-Extra-*`; `kubectl --as`): the
//!   requester needs the `impersonate` verb on `users`, `groups`, `serviceaccounts`, `uids` or
//!   `userextras` (see [`Impersonation::checks`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde::Serialize;
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use super::rbac::Attributes;
use super::store::State;

/// The audience and issuer of ServiceAccount tokens, the default of a real API server.
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
/// Users' `extra` key for the credential a request was made with (`JTI=<token id>`).
pub const CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";
/// The group every authenticated user is in.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The group of anonymous requests.
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// The user of requests without credentials.
pub const ANONYMOUS: &str = "system:anonymous";
/// The group that may do everything, whatever RBAC says.
pub const MASTERS: &str = "system:masters";
/// The admin user of the kubeconfig kubesim writes.
pub const ADMIN_USER: &str = "kubernetes-admin";
/// The user kubesim's own simulated controllers (kubelet, kube-proxy, StatefulSet and
/// EndpointSlice controllers) act as; in `system:masters`.
pub const CONTROLLERS_USER: &str = "system:kubesim-controllers";

/// Who made a request, as authorization, the request log and `kubectl auth whoami` see it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct UserInfo {
    /// The user name (`system:serviceaccount:ns:name`, `kubernetes-admin`, ...).
    pub username: String,
    /// A unique id (a ServiceAccount's uid); empty when there is none.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// The groups, `system:authenticated` included.
    pub groups: Vec<String>,
    /// What the authenticator adds (credential id, the Pod a token is bound to).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// `system:anonymous` in `system:unauthenticated`.
    pub fn anonymous() -> Self {
        UserInfo {
            username: ANONYMOUS.into(),
            groups: vec![UNAUTHENTICATED.into()],
            ..Default::default()
        }
    }

    /// A user with these groups, plus `system:authenticated`.
    pub fn authenticated(username: &str, groups: &[String]) -> Self {
        let mut groups = groups.to_vec();
        if !groups.iter().any(|g| g == AUTHENTICATED) {
            groups.push(AUTHENTICATED.into());
        }
        UserInfo {
            username: username.into(),
            groups,
            ..Default::default()
        }
    }

    /// The ServiceAccount user `system:serviceaccount:NS:NAME` with its groups.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        UserInfo::authenticated(
            &service_account_username(namespace, name),
            &[
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
            ],
        )
    }

    /// The id of the credential the request carried (`JTI=...` for tokens), if any.
    pub fn credential_id(&self) -> Option<&str> {
        self.extra
            .get(CREDENTIAL_ID)
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    /// `(namespace, name)` when this is a ServiceAccount user.
    pub fn as_service_account(&self) -> Option<(&str, &str)> {
        self.username
            .strip_prefix("system:serviceaccount:")?
            .split_once(':')
    }

    /// The `authentication.k8s.io/v1` `UserInfo` JSON.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"username": self.username, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = json!(self.uid);
        }
        if !self.extra.is_empty() {
            v["extra"] = json!(self.extra);
        }
        v
    }
}

/// `system:serviceaccount:NS:NAME`.
pub fn service_account_username(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The object a token is bound to (`TokenRequest.spec.boundObjectRef`): the token is valid only
/// while that object exists with this uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundObject {
    /// `Pod` or `Secret`.
    pub kind: String,
    /// Its name (in the ServiceAccount's namespace).
    pub name: String,
    /// Its uid.
    pub uid: String,
}

/// What a token is requested with.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// Audiences; empty means the API server's own ([`API_AUDIENCE`]).
    pub audiences: Vec<String>,
    /// How long the token is valid.
    pub lifetime: std::time::Duration,
    /// The object it is bound to, if any.
    pub bound: Option<BoundObject>,
}

impl TokenSpec {
    /// A token for the API server's audience, valid for `lifetime`, bound to nothing.
    pub fn new(lifetime: std::time::Duration) -> Self {
        TokenSpec {
            audiences: vec![],
            lifetime,
            bound: None,
        }
    }
}

/// A token handed out: the JWT and when it expires.
#[derive(Clone)]
pub struct IssuedToken {
    /// The bearer token.
    pub token: String,
    /// When it stops being accepted.
    pub expires: DateTime<Utc>,
    /// Its id, as `UserInfo::credential_id` shows it (`JTI=...`).
    pub credential_id: String,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // a token is a secret: never printed
        f.debug_struct("IssuedToken")
            .field("expires", &self.expires)
            .field("credential_id", &self.credential_id)
            .finish_non_exhaustive()
    }
}

/// Tells who a request comes from; holds the token signing key and the client certificates
/// this server issued.
pub struct Authenticator {
    key: ring::hmac::Key,
    certs: Mutex<HashMap<Vec<u8>, UserInfo>>,
}

impl Default for Authenticator {
    fn default() -> Self {
        Self::new()
    }
}

impl Authenticator {
    /// A fresh authenticator with a random token signing key.
    pub fn new() -> Self {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .expect("the system random number generator works");
        Authenticator {
            key,
            certs: Mutex::default(),
        }
    }

    /// Makes the client certificate `der` (signed by the cluster CA) authenticate as `user`.
    pub(crate) fn register_cert(&self, der: Vec<u8>, user: UserInfo) {
        self.certs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(der, user);
    }

    /// The user of a request: its client certificate, else its bearer token, else anonymous.
    /// A bearer token that is not valid is 401.
    pub(crate) fn authenticate(
        &self,
        st: &State,
        headers: &HeaderMap,
        peer_cert: Option<&[u8]>,
    ) -> ApiResult<UserInfo> {
        if let Some(der) = peer_cert
            && let Some(u) = self
                .certs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(der)
        {
            return Ok(u.clone());
        }
        let Some(auth) = headers.get(http::header::AUTHORIZATION) else {
            return Ok(UserInfo::anonymous());
        };
        let token = auth
            .to_str()
            .ok()
            .and_then(|a| {
                a.strip_prefix("Bearer ")
                    .or_else(|| a.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty());
        match token {
            Some(t) => self.validate(st, t, Utc::now()).ok_or_else(unauthorized),
            // other schemes (basic auth) are not served
            None => Err(unauthorized()),
        }
    }

    /// Issues a token for ServiceAccount `namespace/name`, which must exist (404 otherwise);
    /// a bound object must exist in the same namespace with the given uid.
    pub fn issue_token(
        &self,
        st: &State,
        namespace: &str,
        name: &str,
        spec: &TokenSpec,
    ) -> ApiResult<IssuedToken> {
        let sa_uid = object_uid(st, "serviceaccounts", namespace, name)
            .ok_or_else(|| ApiError::not_found("", "serviceaccounts", name))?;
        let mut k8s =
            json!({"namespace": namespace, "serviceaccount": {"name": name, "uid": sa_uid}});
        if let Some(b) = &spec.bound {
            let plural = bound_plural(&b.kind).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount \"{name}\" to object of kind {:?}: only Pod and Secret are supported",
                    b.kind
                ))
            })?;
            let uid = object_uid(st, plural, namespace, &b.name)
                .ok_or_else(|| ApiError::not_found("", plural, &b.name))?;
            if !b.uid.is_empty() && b.uid != uid {
                return Err(ApiError::conflict(
                    "",
                    plural,
                    &b.name,
                    &format!(
                        "the UID in the bound object reference ({}) does not match the UID in record. The object might have been deleted and then recreated",
                        b.uid
                    ),
                ));
            }
            k8s[b.kind.to_lowercase()] = json!({"name": b.name, "uid": uid});
        }
        let now = Utc::now();
        let lifetime = chrono::Duration::from_std(spec.lifetime)
            .map_err(|_| ApiError::bad_request("the token lifetime is too long"))?;
        // `exp` has whole seconds: round up, so a token is never valid for less than asked
        // (rounding down made a 1 s token expire within milliseconds now and then).
        let expires = now + lifetime;
        let expires = match expires.timestamp_subsec_nanos() {
            0 => expires,
            n => expires + chrono::Duration::nanoseconds(1_000_000_000 - i64::from(n)),
        };
        let audiences = if spec.audiences.is_empty() {
            vec![API_AUDIENCE.to_string()]
        } else {
            spec.audiences.clone()
        };
        let jti = super::store::new_uid();
        let claims = json!({
            "aud": audiences,
            "exp": expires.timestamp(),
            "iat": now.timestamp(),
            "iss": API_AUDIENCE,
            "jti": jti,
            "kubernetes.io": k8s,
            "nbf": now.timestamp(),
            "sub": service_account_username(namespace, name),
        });
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","kid":"kubesim"}"#);
        let body = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{header}.{body}");
        let sig = ring::hmac::sign(&self.key, signed.as_bytes());
        Ok(IssuedToken {
            token: format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())),
            expires,
            credential_id: format!("JTI={jti}"),
        })
    }

    /// The user of `token` now (a TokenReview); `None` when it is not a valid one.
    pub(crate) fn review_token(&self, st: &State, token: &str) -> Option<UserInfo> {
        self.validate(st, token.trim(), Utc::now())
    }

    /// The user of a valid token at `now`; None when it is not one.
    fn validate(&self, st: &State, token: &str, now: DateTime<Utc>) -> Option<UserInfo> {
        let (signed, sig) = token.rsplit_once('.')?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        ring::hmac::verify(&self.key, signed.as_bytes(), &sig).ok()?;
        let (_, body) = signed.split_once('.')?;
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
        let t = now.timestamp();
        if claims["exp"].as_i64()? <= t || claims["nbf"].as_i64()? > t {
            return None;
        }
        if claims["iss"] != API_AUDIENCE
            || !claims["aud"].as_array()?.iter().any(|a| a == API_AUDIENCE)
        {
            return None;
        }
        let k8s = &claims["kubernetes.io"];
        let ns = k8s["namespace"].as_str()?;
        let sa = &k8s["serviceaccount"];
        let name = sa["name"].as_str()?;
        if object_uid(st, "serviceaccounts", ns, name).as_deref() != sa["uid"].as_str() {
            return None;
        }
        let mut user = UserInfo::service_account(ns, name);
        user.uid = sa["uid"].as_str()?.to_string();
        user.extra.insert(
            CREDENTIAL_ID.into(),
            vec![format!("JTI={}", claims["jti"].as_str()?)],
        );
        for kind in ["pod", "secret"] {
            let b = &k8s[kind];
            if b.is_null() {
                continue;
            }
            let plural = if kind == "pod" { "pods" } else { "secrets" };
            let bname = b["name"].as_str()?;
            if object_uid(st, plural, ns, bname).as_deref() != b["uid"].as_str() {
                return None;
            }
            if kind == "pod" {
                user.extra.insert(
                    "authentication.kubernetes.io/pod-name".into(),
                    vec![bname.into()],
                );
                user.extra.insert(
                    "authentication.kubernetes.io/pod-uid".into(),
                    vec![b["uid"].as_str()?.into()],
                );
            }
        }
        Some(user)
    }
}

fn bound_plural(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some("pods"),
        "Secret" => Some("secrets"),
        _ => None,
    }
}

/// The uid of core object `plural` `namespace/name`, if it exists.
fn object_uid(st: &State, plural: &str, namespace: &str, name: &str) -> Option<String> {
    let rt = st.registry.get("", "v1", plural)?;
    st.get(rt, Some(namespace), name)
        .ok()?
        .pointer("/metadata/uid")?
        .as_str()
        .map(str::to_string)
}

/// 401 with the body a real API server sends.
pub fn unauthorized() -> ApiError {
    ApiError::new(401, "Unauthorized", "Unauthorized")
}

/// The impersonation a request asks for with `Impersonate-*` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Impersonation {
    user: String,
    groups: Vec<String>,
    uid: Option<String>,
    extra: BTreeMap<String, Vec<String>>,
}

const EXTRA_PREFIX: &str = "impersonate-extra-";

impl Impersonation {
    /// The impersonation headers of a request; None without any, 400 for groups, uid or extras
    /// without a user.
    pub fn from_headers(headers: &HeaderMap) -> ApiResult<Option<Impersonation>> {
        let text = |v: &http::HeaderValue| v.to_str().unwrap_or_default().to_string();
        let user = headers.get("impersonate-user").map(text);
        let groups: Vec<String> = headers
            .get_all("impersonate-group")
            .iter()
            .map(text)
            .collect();
        let uid = headers.get("impersonate-uid").map(text);
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in headers {
            if let Some(key) = k.as_str().strip_prefix(EXTRA_PREFIX) {
                let key = percent_decode(key);
                extra.entry(key).or_default().push(text(v));
            }
        }
        match user {
            Some(user) => Ok(Some(Impersonation {
                user,
                groups,
                uid,
                extra,
            })),
            None if groups.is_empty() && uid.is_none() && extra.is_empty() => Ok(None),
            None => Err(ApiError::bad_request(
                "requested impersonation of groups, uid or extra without impersonating a user",
            )),
        }
    }

    /// What the requester must be allowed (`impersonate` on users / serviceaccounts, groups,
    /// uids, userextras) before it may act as the impersonated user.
    pub fn checks(&self, requester: &UserInfo) -> Vec<Attributes> {
        let check = |group: &str, resource: &str, sub: &str, ns: &str, name: &str| Attributes {
            user: requester.clone(),
            verb: "impersonate".into(),
            resource_request: true,
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
            ..Default::default()
        };
        let mut out = vec![];
        match self
            .user
            .strip_prefix("system:serviceaccount:")
            .and_then(|r| r.split_once(':'))
        {
            Some((ns, name)) => out.push(check("", "serviceaccounts", "", ns, name)),
            None => out.push(check("", "users", "", "", &self.user)),
        }
        for g in &self.groups {
            out.push(check("", "groups", "", "", g));
        }
        if let Some(uid) = &self.uid {
            out.push(check("authentication.k8s.io", "uids", "", "", uid));
        }
        for (k, vs) in &self.extra {
            for v in vs {
                out.push(check("authentication.k8s.io", "userextras", k, "", v));
            }
        }
        out
    }

    /// The user the request then acts as.
    pub fn user(&self) -> UserInfo {
        let mut groups = self.groups.clone();
        if groups.is_empty()
            && let Some((ns, _)) = self
                .user
                .strip_prefix("system:serviceaccount:")
                .and_then(|r| r.split_once(':'))
        {
            groups = vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
            ];
        }
        if self.user != ANONYMOUS
            && !groups
                .iter()
                .any(|g| g == AUTHENTICATED || g == UNAUTHENTICATED)
        {
            groups.push(AUTHENTICATED.into());
        }
        UserInfo {
            username: self.user.clone(),
            uid: self.uid.clone().unwrap_or_default(),
            groups,
            extra: self.extra.clone(),
        }
    }
}

/// Header names carry extra keys percent-encoded (`Impersonate-Extra-scopes%2Fx`).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(h) = s.get(i + 1..i + 3)
            && let Ok(v) = u8::from_str_radix(h, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::store::WriteOpts;

    fn state_with_sa(ns: &str, name: &str) -> State {
        let mut st = State::new([127, 20, 9]);
        let rt = st
            .registry
            .get("", "v1", "serviceaccounts")
            .cloned()
            .unwrap();
        st.create(
            &rt,
            Some(ns),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}),
            &WriteOpts::default(),
        )
        .unwrap();
        st
    }

    #[test]
    fn tokens_authenticate_as_their_service_account_until_they_expire() {
        let st = state_with_sa("default", "robot");
        let a = Authenticator::new();
        let t = a
            .issue_token(
                &st,
                "default",
                "robot",
                &TokenSpec::new(std::time::Duration::from_secs(60)),
            )
            .unwrap();
        let u = a.validate(&st, &t.token, Utc::now()).unwrap();
        assert_eq!(u.username, "system:serviceaccount:default:robot");
        assert_eq!(
            u.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:default",
                AUTHENTICATED
            ]
        );
        assert_eq!(u.credential_id(), Some(t.credential_id.as_str()));
        let later = Utc::now() + chrono::Duration::seconds(61);
        assert_eq!(a.validate(&st, &t.token, later), None, "expired");
        // another server's key, or a changed claim, does not verify
        assert_eq!(
            Authenticator::new().validate(&st, &t.token, Utc::now()),
            None
        );
        let mut parts: Vec<&str> = t.token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(
            String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap())
                .unwrap()
                .replace("robot", "admin"),
        );
        parts[1] = &forged;
        assert_eq!(a.validate(&st, &parts.join("."), Utc::now()), None);
    }

    #[test]
    fn a_token_dies_with_its_service_account() {
        let mut st = state_with_sa("default", "robot");
        let a = Authenticator::new();
        let t = a
            .issue_token(
                &st,
                "default",
                "robot",
                &TokenSpec::new(std::time::Duration::from_secs(600)),
            )
            .unwrap();
        let rt = st
            .registry
            .get("", "v1", "serviceaccounts")
            .cloned()
            .unwrap();
        st.delete(
            &rt,
            Some("default"),
            "robot",
            crate::apiserver::store::Propagation::Background,
            None,
            false,
            None,
        )
        .unwrap();
        assert_eq!(a.validate(&st, &t.token, Utc::now()), None);
        // a new ServiceAccount of the same name has a new uid
        let st = state_with_sa("default", "robot");
        assert_eq!(a.validate(&st, &t.token, Utc::now()), None);
    }

    #[test]
    fn impersonating_a_service_account_checks_serviceaccounts_and_adds_its_groups() {
        let mut h = HeaderMap::new();
        h.insert(
            "impersonate-user",
            "system:serviceaccount:t:op".parse().unwrap(),
        );
        let imp = Impersonation::from_headers(&h).unwrap().unwrap();
        let checks = imp.checks(&UserInfo::authenticated("alice", &[]));
        assert_eq!(checks.len(), 1);
        assert_eq!(
            (
                checks[0].resource.as_str(),
                checks[0].namespace.as_str(),
                checks[0].name.as_str()
            ),
            ("serviceaccounts", "t", "op")
        );
        assert_eq!(
            imp.user().groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:t",
                AUTHENTICATED
            ]
        );
        let mut h = HeaderMap::new();
        h.insert("impersonate-group", "x".parse().unwrap());
        assert!(Impersonation::from_headers(&h).is_err());
        assert_eq!(
            Impersonation::from_headers(&HeaderMap::new()).unwrap(),
            None
        );
    }
}
