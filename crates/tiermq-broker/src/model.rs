//! The management API's documents, as far as tiermq reads or writes them. Unknown fields are
//! ignored on read; optional ones are `Option` because the API omits them (for example message
//! counts before a queue's first statistics emission).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Cluster-wide facts from `GET /api/overview`.
#[derive(Debug, Clone, Deserialize)]
pub struct Overview {
    /// The RabbitMQ version of the node that answered (`3.10.7`, `4.0.5`).
    pub rabbitmq_version: String,
    /// The cluster's name, if the API reports one.
    #[serde(default)]
    pub cluster_name: Option<String>,
    /// The node that answered the request.
    #[serde(default)]
    pub node: Option<String>,
}

/// One feature flag from `GET /api/feature-flags`.
#[derive(Debug, Clone, Deserialize)]
pub struct FeatureFlag {
    /// The flag's name (`quorum_queue`, `stream_queue`, …).
    pub name: String,
    /// `enabled`, `disabled`, or `unavailable` (some node cannot enable it).
    pub state: String,
    /// `stable`, `experimental`, or (4.x) `required`: a required flag is always enabled.
    #[serde(default)]
    pub stability: String,
}

impl FeatureFlag {
    /// A flag an upgrade enables first: stable or required, not experimental.
    pub fn is_stable(&self) -> bool {
        matches!(self.stability.as_str(), "stable" | "required")
    }
}

/// One node from `GET /api/nodes`.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeInfo {
    /// The Erlang node name (`rabbit@host`).
    pub name: String,
    /// Whether the node is up.
    #[serde(default)]
    pub running: bool,
    /// A memory alarm is set: publishers are blocked.
    #[serde(default)]
    pub mem_alarm: bool,
    /// A disk alarm is set: publishers are blocked.
    #[serde(default)]
    pub disk_free_alarm: bool,
    /// The nodes this node is partitioned from; empty when there is no partition.
    #[serde(default)]
    pub partitions: Vec<Value>,
}

/// The cluster's health as the operator needs it: every node running, no resource alarm, no
/// partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterHealth {
    /// The RabbitMQ version of the node that answered.
    pub version: String,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Of those, the nodes that are running.
    pub running_nodes: usize,
    /// Human-readable problems; empty when healthy.
    pub problems: Vec<String>,
}

impl ClusterHealth {
    /// True when every node runs and no alarm or partition was seen.
    pub fn healthy(&self) -> bool {
        self.problems.is_empty() && self.running_nodes == self.nodes && self.nodes > 0
    }
}

/// A vhost from `GET /api/vhosts`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Vhost {
    /// The vhost's name.
    pub name: String,
    /// The queue type a client gets when it declares a queue without `x-queue-type` (RabbitMQ
    /// 3.11+: `classic`, `quorum` or `stream`). 3.10 has none: it reports `undefined` and
    /// declares classic queues.
    #[serde(default)]
    pub default_queue_type: Option<String>,
    /// The vhost's message counters from its channels' statistics (`publish` counts every
    /// message clients published, routed or not); absent without statistics.
    #[serde(default)]
    pub message_stats: Option<MessageStats>,
}

impl Vhost {
    /// Messages per second clients publish into the vhost, 0 when the broker reports none.
    pub fn publish_rate(&self) -> f64 {
        self.message_stats
            .as_ref()
            .and_then(|m| m.publish_details)
            .map_or(0.0, |r| r.rate)
    }

    /// The queue type a declare without `x-queue-type` gets in this vhost: its default queue
    /// type, else `classic` (3.10, or a vhost without one).
    pub fn effective_default_queue_type(&self) -> &str {
        match self.default_queue_type.as_deref() {
            Some(t) if !t.is_empty() && t != "undefined" => t,
            _ => "classic",
        }
    }
}

/// The major version of a RabbitMQ version string (`4.0.5` → 4), as the management API's
/// `rabbitmq_version` reports it.
pub fn major_version(version: &str) -> Option<u32> {
    version.split('.').next()?.trim().parse().ok()
}

/// A user from `GET /api/users`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct User {
    /// The user's name.
    pub name: String,
    /// Its tags (`administrator`, `management`, …).
    #[serde(default, deserialize_with = "tags")]
    pub tags: Vec<String>,
    /// The stored password hash, base64 of a 4-byte salt and the digest (read by administrators).
    #[serde(default)]
    pub password_hash: Option<String>,
    /// How `password_hash` was made (`rabbit_password_hashing_sha256`, the default).
    #[serde(default)]
    pub hashing_algorithm: Option<String>,
}

impl User {
    /// Whether `password` is the user's, judged from the stored hash without logging in;
    /// `None` when the hash or its algorithm is not one this knows (SHA-256, SHA-512 and
    /// RabbitMQ's salt scheme: the digest of salt ++ password).
    pub fn password_is(&self, password: &str) -> Option<bool> {
        use base64::Engine;
        let algorithm = match self.hashing_algorithm.as_deref()? {
            "rabbit_password_hashing_sha256" => &ring::digest::SHA256,
            "rabbit_password_hashing_sha512" => &ring::digest::SHA512,
            _ => return None,
        };
        let stored = base64::engine::general_purpose::STANDARD
            .decode(self.password_hash.as_deref()?)
            .ok()?;
        if stored.len() != 4 + algorithm.output_len() {
            return None;
        }
        let (salt, digest) = stored.split_at(4);
        let mut ctx = ring::digest::Context::new(algorithm);
        ctx.update(salt);
        ctx.update(password.as_bytes());
        Some(ctx.finish().as_ref() == digest)
    }
}

// 3.10 answers tags as a list; older versions as a comma-separated string.
fn tags<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        Value::Array(a) => a
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    })
}

/// A user's permissions on a vhost: three regular expressions over resource names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Permissions {
    /// Names of the queues and exchanges the user may declare or delete (a regular expression).
    pub configure: String,
    /// Names of exchanges the user may publish to and of queues or exchanges it may bind to.
    pub write: String,
    /// Names of the queues the user may consume from and of the exchanges it may bind from.
    pub read: String,
}

/// `^$` matches no resource name: the way RabbitMQ spells "nothing".
pub const DENY_ALL: &str = "^$";
/// `.*` matches every resource name.
pub const ALLOW_ALL: &str = ".*";

impl Permissions {
    /// Everything allowed: a tenant's user on the cluster that serves it.
    pub fn full() -> Self {
        Permissions {
            configure: ALLOW_ALL.into(),
            write: ALLOW_ALL.into(),
            read: ALLOW_ALL.into(),
        }
    }

    /// Nothing allowed: the user stays but can neither read, write nor configure.
    pub fn none() -> Self {
        Permissions {
            configure: DENY_ALL.into(),
            write: DENY_ALL.into(),
            read: DENY_ALL.into(),
        }
    }

    /// Read only: consume and get, but neither publish nor declare, bind or delete anything.
    pub fn read_only() -> Self {
        Permissions {
            configure: DENY_ALL.into(),
            write: DENY_ALL.into(),
            read: ALLOW_ALL.into(),
        }
    }
}

/// The vhost limits tiermq manages. `None` means "no limit".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostLimits {
    /// Most client connections the vhost accepts.
    pub max_connections: Option<u32>,
    /// Most queues the vhost holds.
    pub max_queues: Option<u32>,
}

/// A per-vhost definitions document (`GET /api/definitions/{vhost}`). Objects are kept as JSON so
/// arguments and fields of any version survive a copy unchanged. `Debug` shows only counts:
/// parameters may hold URIs with passwords.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Definitions {
    /// Exchanges, as the API exports them.
    #[serde(default)]
    pub exchanges: Vec<Value>,
    /// Queues, as the API exports them.
    #[serde(default)]
    pub queues: Vec<Value>,
    /// Bindings, as the API exports them.
    #[serde(default)]
    pub bindings: Vec<Value>,
    /// Policies, as the API exports them.
    #[serde(default)]
    pub policies: Vec<Value>,
    /// Runtime parameters (shovels, federation upstreams, …); may hold credentials.
    #[serde(default)]
    pub parameters: Vec<Value>,
    /// Any other top-level field, kept so a round trip loses nothing.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl fmt::Debug for Definitions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Definitions")
            .field("exchanges", &self.exchanges.len())
            .field("queues", &self.queues.len())
            .field("bindings", &self.bindings.len())
            .field("policies", &self.policies.len())
            .field("parameters", &self.parameters.len())
            .finish_non_exhaustive()
    }
}

/// A rate as the management API reports it.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
pub struct Rate {
    /// Events per second, from the most recent statistics samples.
    #[serde(default)]
    pub rate: f64,
}

/// Cumulative counters and their rates (messages per second) for a queue.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct MessageStats {
    /// Messages published into the queue.
    #[serde(default)]
    pub publish: Option<u64>,
    /// Rate of `publish`.
    #[serde(default)]
    pub publish_details: Option<Rate>,
    /// Messages acknowledged by consumers.
    #[serde(default)]
    pub ack: Option<u64>,
    /// Rate of `ack`.
    #[serde(default)]
    pub ack_details: Option<Rate>,
    /// Messages delivered to consumers or fetched with `basic.get`, in every ack mode.
    #[serde(default)]
    pub deliver_get: Option<u64>,
    /// Rate of `deliver_get`.
    #[serde(default)]
    pub deliver_get_details: Option<Rate>,
    /// Rate of deliveries to consumers with automatic acknowledgement.
    #[serde(default)]
    pub deliver_no_ack_details: Option<Rate>,
    /// Rate of `basic.get` fetches with automatic acknowledgement.
    #[serde(default)]
    pub get_no_ack_details: Option<Rate>,
    /// Messages delivered again (after a requeue or a lost consumer).
    #[serde(default)]
    pub redeliver: Option<u64>,
}

/// A queue from `GET /api/queues/{vhost}`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct QueueInfo {
    /// The queue's name.
    pub name: String,
    /// The vhost holding it.
    pub vhost: String,
    /// `classic`, `quorum` or `stream`.
    #[serde(rename = "type", default)]
    pub queue_type: Option<String>,
    /// Survives a broker restart.
    #[serde(default)]
    pub durable: bool,
    /// Deleted when its last consumer goes.
    #[serde(default)]
    pub auto_delete: bool,
    /// Owned by one connection and deleted with it.
    #[serde(default)]
    pub exclusive: bool,
    /// The `x-` arguments it was declared with.
    #[serde(default)]
    pub arguments: Map<String, Value>,
    /// The name of the policy that applies to it, if any.
    #[serde(default)]
    pub policy: Option<String>,
    /// The definition of the policy that applies to it, if any.
    #[serde(default)]
    pub effective_policy_definition: Option<Value>,
    /// Ready + unacknowledged; absent until the queue's first statistics emission.
    #[serde(default)]
    pub messages: Option<u64>,
    /// Messages ready for delivery; absent until the first statistics emission.
    #[serde(default)]
    pub messages_ready: Option<u64>,
    /// Messages delivered and not yet acknowledged; absent until the first statistics emission.
    #[serde(default)]
    pub messages_unacknowledged: Option<u64>,
    /// Consumers on the queue.
    #[serde(default)]
    pub consumers: Option<u64>,
    /// Quorum queues with `dead-letter-strategy: at-least-once`: messages waiting for their
    /// dead-letter target to confirm them. They are in neither `messages_ready` nor
    /// `messages_unacknowledged`, yet the queue still holds them.
    #[serde(default)]
    pub messages_dlx: Option<u64>,
    /// The connection owning an exclusive queue.
    #[serde(default)]
    pub owner_pid_details: Option<ConnectionDetails>,
    /// Its message counters and rates, once a message passed.
    #[serde(default)]
    pub message_stats: Option<MessageStats>,
    /// Its process state (`running`, `idle`, `flow`, …; quorum queues may report others).
    #[serde(default)]
    pub state: Option<String>,
}

impl QueueInfo {
    /// A setting from the queue's arguments (`x-<key>`) or else its effective policy (`<key>`).
    pub fn setting(&self, key: &str) -> Option<&Value> {
        self.arguments.get(&format!("x-{key}")).or_else(|| {
            self.effective_policy_definition
                .as_ref()
                .and_then(|p| p.get(key))
        })
    }
}

/// A client connection as the management API lists it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ConnectionInfo {
    /// The connection's name (`<peer> -> <broker>`), as
    /// [`crate::ManagementClient::close_connection`] takes it.
    pub name: String,
    /// The vhost it is open on.
    #[serde(default)]
    pub vhost: Option<String>,
    /// The user it authenticated as.
    #[serde(default)]
    pub user: Option<String>,
    /// The properties the client sent when it connected.
    #[serde(default)]
    pub client_properties: Option<Value>,
    /// The client's address.
    #[serde(default)]
    pub peer_host: Option<String>,
    /// The client's port.
    #[serde(default)]
    pub peer_port: Option<u16>,
}

impl ConnectionInfo {
    /// The name the client gave itself (`connection_name`), if any.
    pub fn client_name(&self) -> Option<&str> {
        self.client_properties
            .as_ref()?
            .get("connection_name")?
            .as_str()
    }
}

/// A channel as the management API lists it (from statistics: it appears after the channel's
/// first emission).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ChannelInfo {
    /// The channel's name (`<connection name> (<channel number>)`).
    pub name: String,
    /// The connection it belongs to.
    #[serde(default)]
    pub connection_details: Option<ConnectionDetails>,
    /// The user of its connection.
    #[serde(default)]
    pub user: Option<String>,
    /// The vhost of its connection.
    #[serde(default)]
    pub vhost: Option<String>,
    /// Set once the channel went idle (hibernated). An idle channel has dropped its cached
    /// permission checks, so a revocation reaches its next operation.
    #[serde(default)]
    pub idle_since: Option<String>,
    /// Its message counters and rates, as the API reports them.
    #[serde(default)]
    pub message_stats: Option<Value>,
}

/// The connection a channel, consumer or exclusive queue belongs to, as the management API names
/// it (`<peer> -> <broker>`, the name [`crate::ManagementClient::close_connection`] takes).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ConnectionDetails {
    /// The connection's name.
    pub name: String,
}

/// One consumer (`GET /api/consumers/{vhost}`): which queue it reads and on which connection.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ConsumerInfo {
    /// The queue it consumes from.
    pub queue: QueueRef,
    /// The channel it was registered on.
    #[serde(default)]
    pub channel_details: Option<ConsumerChannel>,
    /// The tag the consumer was registered with.
    #[serde(default)]
    pub consumer_tag: Option<String>,
}

/// A queue named by a consumer.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct QueueRef {
    /// The queue's name.
    pub name: String,
    /// The queue's vhost.
    #[serde(default)]
    pub vhost: Option<String>,
}

/// The channel of a consumer, with its connection's name and user.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ConsumerChannel {
    /// The name of the consumer's connection.
    #[serde(default)]
    pub connection_name: Option<String>,
    /// The user of the consumer's connection.
    #[serde(default)]
    pub user: Option<String>,
}

/// A dynamic shovel, AMQP 0-9-1 to AMQP 0-9-1, from a queue to a queue. URIs carry credentials,
/// hence [`crate::Secret`].
#[derive(Debug, Clone, PartialEq)]
pub struct ShovelSpec {
    /// AMQP URI of the source cluster, with the vhost and credentials.
    pub src_uri: crate::Secret,
    /// Queue the shovel consumes from.
    pub src_queue: String,
    /// AMQP URI of the destination cluster, with the vhost and credentials.
    pub dest_uri: crate::Secret,
    /// Queue the shovel publishes to.
    pub dest_queue: String,
    /// `on-confirm`: a message is acknowledged at the source only after the destination confirmed it.
    pub ack_mode: String,
    /// `queue-length`: move what the queue holds when the shovel starts, then delete the shovel.
    pub src_delete_after: Option<String>,
    /// Messages in flight between source and destination; `None` leaves RabbitMQ's default.
    pub prefetch: Option<u32>,
}

impl ShovelSpec {
    pub(crate) fn to_json(&self) -> Value {
        let mut v = serde_json::json!({
            "src-protocol": "amqp091",
            "src-uri": self.src_uri.expose(),
            "src-queue": self.src_queue,
            "dest-protocol": "amqp091",
            "dest-uri": self.dest_uri.expose(),
            "dest-queue": self.dest_queue,
            "ack-mode": self.ack_mode,
        });
        if let Some(after) = &self.src_delete_after {
            v["src-delete-after"] = Value::String(after.clone());
        }
        if let Some(p) = self.prefetch {
            v["src-prefetch-count"] = Value::from(p);
        }
        v
    }
}

/// A shovel's runtime status (`GET /api/shovels/{vhost}`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ShovelStatus {
    /// The shovel's name.
    pub name: String,
    /// The vhost it is defined in.
    #[serde(default)]
    pub vhost: Option<String>,
    /// `starting`, `running` or `terminated`.
    #[serde(default)]
    pub state: Option<String>,
    /// `dynamic` or `static`.
    #[serde(default, rename = "type")]
    pub shovel_type: Option<String>,
}

/// A federation upstream (`federation-upstream` parameter); the URI carries credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct FederationUpstream {
    /// AMQP URI of the upstream cluster, with the vhost and credentials.
    pub uri: crate::Secret,
    /// Messages fetched per link before acks; bounds what is in flight between clusters.
    pub prefetch_count: u32,
    /// `on-confirm` so a message leaves the upstream only once the downstream confirmed it.
    pub ack_mode: String,
    /// Seconds a broken link waits before it reconnects.
    pub reconnect_delay_secs: u32,
}

impl FederationUpstream {
    pub(crate) fn to_json(&self) -> Value {
        serde_json::json!({
            "uri": self.uri.expose(),
            "prefetch-count": self.prefetch_count,
            "ack-mode": self.ack_mode,
            "reconnect-delay": self.reconnect_delay_secs,
        })
    }
}

/// A user policy. `apply_to` is `queues`, `exchanges` or `all`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Policy {
    /// The policy's name.
    pub name: String,
    /// The vhost it applies in.
    #[serde(default)]
    pub vhost: String,
    /// Regular expression over the names of the queues or exchanges it applies to.
    pub pattern: String,
    /// `queues`, `exchanges` or `all`.
    #[serde(rename = "apply-to")]
    pub apply_to: String,
    /// The settings it applies (`max-length`, `message-ttl`, …).
    pub definition: Map<String, Value>,
    /// Among policies matching the same object, the highest priority wins.
    pub priority: i64,
}

/// A runtime parameter (`GET /api/parameters/{component}/{vhost}`); the value may hold secrets,
/// so `Debug` leaves it out.
#[derive(Clone, Deserialize)]
pub struct Parameter {
    /// The parameter's name.
    pub name: String,
    /// The plugin that owns it (`shovel`, `federation-upstream`).
    #[serde(default)]
    pub component: String,
    /// The parameter's value as the plugin defines it.
    #[serde(default)]
    pub value: Value,
}

impl fmt::Debug for Parameter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parameter")
            .field("name", &self.name)
            .field("component", &self.component)
            .finish_non_exhaustive()
    }
}
