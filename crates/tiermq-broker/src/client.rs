//! The typed management-API client. One client talks to one cluster as its administrator.

use std::fmt;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::encode::{check_name, segment};
use crate::error::{BrokerError, ErrorKind, NotFoundExt};
use crate::model::*;
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
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(60),
            max_definitions_bytes: 8 * 1024 * 1024,
            amqp_port: 5672,
        }
    }
}

/// A typed client of one cluster's management API.
#[derive(Debug, Clone)]
pub struct ManagementClient {
    endpoint: ClusterEndpoint,
    options: ClientOptions,
    http: reqwest::Client,
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
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| BrokerError {
                cluster: endpoint.cluster.clone(),
                operation: "build HTTP client".into(),
                kind: ErrorKind::InvalidInput {
                    reason: e.to_string(),
                },
            })?;
        Ok(ManagementClient {
            endpoint,
            options,
            http,
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
        let url = format!(
            "{}/api/{}",
            self.endpoint.url.trim_end_matches('/'),
            call.path
        );
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

    // ---- cluster ----

    /// Cluster-wide facts: version, cluster and node name (`GET /api/overview`).
    pub async fn overview(&self) -> Result<Overview, BrokerError> {
        self.get_json(Call::new(Method::GET, "read overview", "overview".into()))
            .await
    }

    /// Every node of the cluster with its alarms and partitions (`GET /api/nodes`).
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, BrokerError> {
        self.get_json(Call::new(Method::GET, "list nodes", "nodes".into()))
            .await
    }

    /// Version, node count, and every reason the cluster should not take new work.
    pub async fn health(&self) -> Result<ClusterHealth, BrokerError> {
        let overview = self.overview().await?;
        let nodes = self.nodes().await?;
        let mut problems = Vec::new();
        for n in &nodes {
            if !n.running {
                problems.push(format!("node {} is not running", n.name));
            }
            if n.mem_alarm {
                problems.push(format!("node {} has a memory alarm", n.name));
            }
            if n.disk_free_alarm {
                problems.push(format!("node {} has a disk alarm", n.name));
            }
            if !n.partitions.is_empty() {
                problems.push(format!("node {} sees a network partition", n.name));
            }
        }
        Ok(ClusterHealth {
            version: overview.rabbitmq_version,
            nodes: nodes.len(),
            running_nodes: nodes.iter().filter(|n| n.running).count(),
            problems,
        })
    }

    // ---- vhosts ----

    /// Every vhost of the cluster.
    pub async fn list_vhosts(&self) -> Result<Vec<Vhost>, BrokerError> {
        self.get_json(Call::new(Method::GET, "list vhosts", "vhosts".into()))
            .await
    }

    /// The vhost, or `None` if it does not exist.
    pub async fn get_vhost(&self, name: &str) -> Result<Option<Vhost>, BrokerError> {
        let op = format!("read vhost {name:?}");
        self.check(&op, "vhost", name)?;
        self.get_json(Call::new(
            Method::GET,
            op,
            format!("vhosts/{}", segment(name)),
        ))
        .await
        .optional()
    }

    /// Creates the vhost; an existing one is left as it is.
    pub async fn put_vhost(&self, name: &str) -> Result<(), BrokerError> {
        let op = format!("create vhost {name:?}");
        self.check(&op, "vhost", name)?;
        let call = Call::new(Method::PUT, op, format!("vhosts/{}", segment(name)))
            .body(serde_json::json!({"description": "managed by tiermq"}));
        self.send_empty(call).await
    }

    /// Sets the queue type a declare without `x-queue-type` gets in the existing vhost `name`
    /// (RabbitMQ 3.11+; 3.10 ignores it).
    pub async fn set_default_queue_type(
        &self,
        name: &str,
        queue_type: &str,
    ) -> Result<(), BrokerError> {
        let op = format!("set the default queue type of vhost {name:?} to {queue_type:?}");
        self.check(&op, "vhost", name)?;
        // A PUT with metadata replaces all of it: keep the description put_vhost writes.
        let call = Call::new(Method::PUT, op, format!("vhosts/{}", segment(name))).body(
            serde_json::json!({"description": "managed by tiermq", "default_queue_type": queue_type}),
        );
        self.send_empty(call).await
    }

    /// Deletes the vhost with everything in it. `false` if it did not exist.
    pub async fn delete_vhost(&self, name: &str) -> Result<bool, BrokerError> {
        let op = format!("delete vhost {name:?}");
        self.check(&op, "vhost", name)?;
        self.delete_idempotent(Call::new(
            Method::DELETE,
            op,
            format!("vhosts/{}", segment(name)),
        ))
        .await
    }

    // ---- users and permissions ----

    /// The user, or `None` if it does not exist.
    pub async fn get_user(&self, name: &str) -> Result<Option<User>, BrokerError> {
        let op = format!("read user {name:?}");
        self.check(&op, "user", name)?;
        self.get_json(Call::new(
            Method::GET,
            op,
            format!("users/{}", segment(name)),
        ))
        .await
        .optional()
    }

    /// Creates the user or sets its password and tags.
    pub async fn put_user(
        &self,
        name: &str,
        password: &Secret,
        tags: &[&str],
    ) -> Result<(), BrokerError> {
        let op = format!("create or update user {name:?}");
        self.check(&op, "user", name)?;
        let call = Call::new(Method::PUT, op, format!("users/{}", segment(name)))
            .body(serde_json::json!({"password": password.expose(), "tags": tags.join(",")}))
            .secret(password);
        self.send_empty(call).await
    }

    /// Deletes the user (and with it its permissions). `false` if it was already gone.
    pub async fn delete_user(&self, name: &str) -> Result<bool, BrokerError> {
        let op = format!("delete user {name:?}");
        self.check(&op, "user", name)?;
        self.delete_idempotent(Call::new(
            Method::DELETE,
            op,
            format!("users/{}", segment(name)),
        ))
        .await
    }

    /// The user's permissions on the vhost, or `None` if it has none there.
    pub async fn get_permissions(
        &self,
        vhost: &str,
        user: &str,
    ) -> Result<Option<Permissions>, BrokerError> {
        let op = format!("read permissions of user {user:?} on vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        self.check(&op, "user", user)?;
        let path = format!("permissions/{}/{}", segment(vhost), segment(user));
        self.get_json(Call::new(Method::GET, op, path))
            .await
            .optional()
    }

    /// Sets the user's permissions on the vhost, replacing what it had.
    pub async fn put_permissions(
        &self,
        vhost: &str,
        user: &str,
        perms: &Permissions,
    ) -> Result<(), BrokerError> {
        let op = format!("set permissions of user {user:?} on vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        self.check(&op, "user", user)?;
        let path = format!("permissions/{}/{}", segment(vhost), segment(user));
        let body = serde_json::to_value(perms).expect("permissions serialize");
        self.send_empty(Call::new(Method::PUT, op, path).body(body))
            .await
    }

    // ---- vhost limits ----

    /// The vhost's `max-connections` and `max-queues` limits; `None` for a limit not set.
    pub async fn get_vhost_limits(&self, vhost: &str) -> Result<VhostLimits, BrokerError> {
        let op = format!("read limits of vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        let rows: Vec<Value> = self
            .get_json(Call::new(
                Method::GET,
                op,
                format!("vhost-limits/{}", segment(vhost)),
            ))
            .await?;
        let value = rows.first().and_then(|r| r.get("value"));
        let get = |k: &str| {
            value
                .and_then(|v| v.get(k))
                .and_then(Value::as_u64)
                .map(|n| n as u32)
        };
        Ok(VhostLimits {
            max_connections: get("max-connections"),
            max_queues: get("max-queues"),
        })
    }

    /// Sets (`Some`) or removes (`None`) one limit: `max-connections` or `max-queues`.
    pub async fn set_vhost_limit(
        &self,
        vhost: &str,
        limit: &str,
        value: Option<u32>,
    ) -> Result<(), BrokerError> {
        let op = format!("set limit {limit} of vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        let path = format!("vhost-limits/{}/{}", segment(vhost), segment(limit));
        match value {
            Some(v) => {
                let call = Call::new(Method::PUT, op, path).body(serde_json::json!({"value": v}));
                self.send_empty(call).await
            }
            None => self
                .delete_idempotent(Call::new(Method::DELETE, op, path))
                .await
                .map(|_| ()),
        }
    }

    // ---- definitions ----

    /// The vhost's definitions: exchanges, queues, bindings, policies and parameters.
    pub async fn export_definitions(&self, vhost: &str) -> Result<Definitions, BrokerError> {
        let op = format!("export definitions of vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        self.get_json(Call::new(
            Method::GET,
            op,
            format!("definitions/{}", segment(vhost)),
        ))
        .await
    }

    /// Imports a per-vhost definitions document into `vhost`. Checked before sending: the size
    /// limit, and that every object has a name; a refused document changes nothing.
    pub async fn import_definitions(
        &self,
        vhost: &str,
        defs: &Definitions,
    ) -> Result<(), BrokerError> {
        let op = format!("import definitions into vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        let body = serde_json::to_value(defs).expect("definitions serialize");
        let size = serde_json::to_vec(&body)
            .map(|b| b.len())
            .unwrap_or(usize::MAX);
        if size > self.options.max_definitions_bytes {
            return Err(self.error(
                op,
                ErrorKind::InvalidInput {
                    reason: format!(
                        "the definitions document is {size} bytes, over the limit of {} bytes; \
                         split the vhost's topology or raise the limit",
                        self.options.max_definitions_bytes
                    ),
                },
            ));
        }
        for (kind, list) in [
            ("exchange", &defs.exchanges),
            ("queue", &defs.queues),
            ("policy", &defs.policies),
        ] {
            if let Some(bad) = list
                .iter()
                .find(|o| o.get("name").and_then(Value::as_str).is_none())
            {
                let shown: String = bad.to_string().chars().take(120).collect();
                return Err(self.error(
                    op,
                    ErrorKind::InvalidInput {
                        reason: format!("a {kind} without a name: {shown}"),
                    },
                ));
            }
        }
        let call =
            Call::new(Method::POST, op, format!("definitions/{}", segment(vhost))).body(body);
        self.send_empty(call).await
    }

    // ---- queues ----

    /// The vhost's queues with their statistics. A queue the statistics give no message counts
    /// for (not emitted yet, or every queue when the broker collects no statistics, as with
    /// RabbitMQ 4.x's `management_agent.disable_metrics_collector = true`) gets the counts its
    /// queue process reports now (`messages`, `messages_ready`, `messages_unacknowledged` from
    /// the management API's queue totals, which need no statistics); rates, consumer counts and
    /// `messages_dlx` stay statistics-only.
    pub async fn list_queues(&self, vhost: &str) -> Result<Vec<QueueInfo>, BrokerError> {
        let op = format!("list queues of vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        let mut queues: Vec<QueueInfo> = self
            .get_json(Call::new(
                Method::GET,
                op.clone(),
                format!("queues/{}", segment(vhost)),
            ))
            .await?;
        let uncounted =
            |q: &QueueInfo| q.messages_ready.is_none() || q.messages_unacknowledged.is_none();
        if queues.iter().any(uncounted) {
            /// A queue as the totals listing has it (other fields may be null there).
            #[derive(serde::Deserialize)]
            struct Totals {
                name: String,
                messages: Option<u64>,
                messages_ready: Option<u64>,
                messages_unacknowledged: Option<u64>,
            }
            let totals: Vec<Totals> = self
                .get_json(Call::new(
                    Method::GET,
                    format!("{op} (queue totals)"),
                    format!(
                        "queues/{}?disable_stats=true&enable_queue_totals=true",
                        segment(vhost)
                    ),
                ))
                .await?;
            for q in queues.iter_mut().filter(|q| uncounted(q)) {
                if let Some(t) = totals.iter().find(|t| t.name == q.name) {
                    q.messages = t.messages;
                    q.messages_ready = t.messages_ready;
                    q.messages_unacknowledged = t.messages_unacknowledged;
                }
            }
        }
        Ok(queues)
    }

    /// The queue, or `None` if it does not exist.
    pub async fn get_queue(
        &self,
        vhost: &str,
        name: &str,
    ) -> Result<Option<QueueInfo>, BrokerError> {
        let op = format!("read queue {name:?} in vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        self.check(&op, "queue", name)?;
        let path = format!("queues/{}/{}", segment(vhost), segment(name));
        self.get_json(Call::new(Method::GET, op, path))
            .await
            .optional()
    }

    // ---- connections ----

    /// The vhost's client connections.
    pub async fn list_connections(&self, vhost: &str) -> Result<Vec<ConnectionInfo>, BrokerError> {
        let op = format!("list connections of vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        self.get_json(Call::new(
            Method::GET,
            op,
            format!("vhosts/{}/connections", segment(vhost)),
        ))
        .await
    }

    /// The vhost's consumers, each with its queue and connection.
    pub async fn list_consumers(&self, vhost: &str) -> Result<Vec<ConsumerInfo>, BrokerError> {
        let op = format!("list consumers of vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        self.get_json(Call::new(
            Method::GET,
            op,
            format!("consumers/{}", segment(vhost)),
        ))
        .await
        .optional()
        .map(Option::unwrap_or_default)
    }

    /// The vhost's channels (a channel shows up after its first statistics emission).
    pub async fn list_channels(&self, vhost: &str) -> Result<Vec<ChannelInfo>, BrokerError> {
        let op = format!("list channels of vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        self.get_json(Call::new(
            Method::GET,
            op,
            format!("vhosts/{}/channels", segment(vhost)),
        ))
        .await
    }

    /// Closes a connection; the client receives `CONNECTION_FORCED - <reason>`. `false` if it was
    /// already gone.
    pub async fn close_connection(&self, name: &str, reason: &str) -> Result<bool, BrokerError> {
        let op = format!("close connection {name:?}");
        self.check(&op, "connection", name)?;
        // Header values must be visible ASCII; anything else would be refused by the HTTP layer.
        let reason: String = reason
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        let mut call = Call::new(Method::DELETE, op, format!("connections/{}", segment(name)));
        call.headers.push(("X-Reason", reason));
        self.delete_idempotent(call).await
    }

    // ---- policies and parameters ----

    /// The vhost's user policies.
    pub async fn list_policies(&self, vhost: &str) -> Result<Vec<Policy>, BrokerError> {
        let op = format!("list policies of vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        self.get_json(Call::new(
            Method::GET,
            op,
            format!("policies/{}", segment(vhost)),
        ))
        .await
    }

    /// Creates the policy or replaces the one of the same name.
    pub async fn put_policy(&self, vhost: &str, policy: &Policy) -> Result<(), BrokerError> {
        let op = format!("set policy {:?} in vhost {vhost:?}", policy.name);
        self.check(&op, "vhost", vhost)?;
        self.check(&op, "policy", &policy.name)?;
        let path = format!("policies/{}/{}", segment(vhost), segment(&policy.name));
        let body = serde_json::json!({
            "pattern": policy.pattern,
            "apply-to": policy.apply_to,
            "definition": policy.definition,
            "priority": policy.priority,
        });
        self.send_empty(Call::new(Method::PUT, op, path).body(body))
            .await
    }

    /// Deletes the policy. `false` if it was already gone.
    pub async fn delete_policy(&self, vhost: &str, name: &str) -> Result<bool, BrokerError> {
        let op = format!("delete policy {name:?} in vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        self.check(&op, "policy", name)?;
        let path = format!("policies/{}/{}", segment(vhost), segment(name));
        self.delete_idempotent(Call::new(Method::DELETE, op, path))
            .await
    }

    /// The vhost's runtime parameters of one component (`shovel`, `federation-upstream`, …).
    pub async fn list_parameters(
        &self,
        component: &str,
        vhost: &str,
    ) -> Result<Vec<Parameter>, BrokerError> {
        let op = format!("list {component} parameters of vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        let path = format!("parameters/{}/{}", segment(component), segment(vhost));
        self.get_json(Call::new(Method::GET, op, path)).await
    }

    async fn put_parameter(
        &self,
        component: &str,
        vhost: &str,
        name: &str,
        value: Value,
        secret: &Secret,
    ) -> Result<(), BrokerError> {
        let op = format!("set {component} {name:?} in vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        self.check(&op, component, name)?;
        let path = format!(
            "parameters/{}/{}/{}",
            segment(component),
            segment(vhost),
            segment(name)
        );
        let call = Call::new(Method::PUT, op, path)
            .body(serde_json::json!({"value": value}))
            .secret(secret);
        self.send_empty(call).await
    }

    pub(crate) async fn delete_parameter(
        &self,
        component: &str,
        vhost: &str,
        name: &str,
    ) -> Result<bool, BrokerError> {
        let op = format!("delete {component} {name:?} in vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        self.check(&op, component, name)?;
        let path = format!(
            "parameters/{}/{}/{}",
            segment(component),
            segment(vhost),
            segment(name)
        );
        self.delete_idempotent(Call::new(Method::DELETE, op, path))
            .await
    }

    // ---- shovels ----

    /// Declares a dynamic shovel. Its URIs are secrets: they are scrubbed from any error text.
    pub async fn put_shovel(
        &self,
        vhost: &str,
        name: &str,
        spec: &ShovelSpec,
    ) -> Result<(), BrokerError> {
        let op_value = spec.to_json();
        let op = format!("set shovel {name:?} in vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        self.check(&op, "shovel", name)?;
        let path = format!("parameters/shovel/{}/{}", segment(vhost), segment(name));
        let call = Call::new(Method::PUT, op, path)
            .body(serde_json::json!({"value": op_value}))
            .secret(&spec.src_uri)
            .secret(&spec.dest_uri);
        self.send_empty(call).await
    }

    /// The vhost's shovel definitions (values hold URIs with credentials).
    pub async fn list_shovels(&self, vhost: &str) -> Result<Vec<Parameter>, BrokerError> {
        self.list_parameters("shovel", vhost).await
    }

    /// Runtime status of the vhost's shovels (a shovel that deleted itself is absent).
    pub async fn shovel_status(&self, vhost: &str) -> Result<Vec<ShovelStatus>, BrokerError> {
        let op = format!("read shovel status of vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        self.get_json(Call::new(
            Method::GET,
            op,
            format!("shovels/{}", segment(vhost)),
        ))
        .await
    }

    /// Deletes the shovel; a running transfer stops. `false` if it was already gone.
    pub async fn delete_shovel(&self, vhost: &str, name: &str) -> Result<bool, BrokerError> {
        self.delete_parameter("shovel", vhost, name).await
    }

    // ---- federation ----

    /// Creates the federation upstream or replaces the one of the same name. Its URI is a
    /// secret: it is scrubbed from any error text.
    pub async fn put_federation_upstream(
        &self,
        vhost: &str,
        name: &str,
        upstream: &FederationUpstream,
    ) -> Result<(), BrokerError> {
        self.put_parameter(
            "federation-upstream",
            vhost,
            name,
            upstream.to_json(),
            &upstream.uri,
        )
        .await
    }

    /// The vhost's federation upstream definitions (values hold URIs with credentials).
    pub async fn list_federation_upstreams(
        &self,
        vhost: &str,
    ) -> Result<Vec<Parameter>, BrokerError> {
        self.list_parameters("federation-upstream", vhost).await
    }

    /// Deletes the federation upstream. `false` if it was already gone.
    pub async fn delete_federation_upstream(
        &self,
        vhost: &str,
        name: &str,
    ) -> Result<bool, BrokerError> {
        self.delete_parameter("federation-upstream", vhost, name)
            .await
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
}
