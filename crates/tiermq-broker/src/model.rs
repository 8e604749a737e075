//! The management API's documents, as far as tiermq reads or writes them. Unknown fields are
//! ignored on read; optional ones are `Option` because the API omits them (for example message
//! counts before a queue's first statistics emission).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Deserialize)]
pub struct Overview {
    pub rabbitmq_version: String,
    #[serde(default)]
    pub cluster_name: Option<String>,
    #[serde(default)]
    pub node: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    #[serde(default)]
    pub running: bool,
    #[serde(default)]
    pub mem_alarm: bool,
    #[serde(default)]
    pub disk_free_alarm: bool,
    #[serde(default)]
    pub partitions: Vec<Value>,
}

/// The cluster's health as the operator needs it: every node running, no resource alarm, no
/// partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterHealth {
    pub version: String,
    pub nodes: usize,
    pub running_nodes: usize,
    /// Human-readable problems; empty when healthy.
    pub problems: Vec<String>,
}

impl ClusterHealth {
    pub fn healthy(&self) -> bool {
        self.problems.is_empty() && self.running_nodes == self.nodes && self.nodes > 0
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Vhost {
    pub name: String,
    /// The queue type a client gets when it declares a queue without `x-queue-type` (RabbitMQ
    /// 3.11+: `classic`, `quorum` or `stream`). 3.10 has none: it reports `undefined` and
    /// declares classic queues.
    #[serde(default)]
    pub default_queue_type: Option<String>,
}

impl Vhost {
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

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct User {
    pub name: String,
    #[serde(default, deserialize_with = "tags")]
    pub tags: Vec<String>,
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
    pub configure: String,
    pub write: String,
    pub read: String,
}

/// `^$` matches no resource name: the way RabbitMQ spells "nothing".
pub const DENY_ALL: &str = "^$";
pub const ALLOW_ALL: &str = ".*";

impl Permissions {
    pub fn full() -> Self {
        Permissions {
            configure: ALLOW_ALL.into(),
            write: ALLOW_ALL.into(),
            read: ALLOW_ALL.into(),
        }
    }

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
    pub max_connections: Option<u32>,
    pub max_queues: Option<u32>,
}

/// A per-vhost definitions document (`GET /api/definitions/{vhost}`). Objects are kept as JSON so
/// arguments and fields of any version survive a copy unchanged. `Debug` shows only counts:
/// parameters may hold URIs with passwords.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Definitions {
    #[serde(default)]
    pub exchanges: Vec<Value>,
    #[serde(default)]
    pub queues: Vec<Value>,
    #[serde(default)]
    pub bindings: Vec<Value>,
    #[serde(default)]
    pub policies: Vec<Value>,
    #[serde(default)]
    pub parameters: Vec<Value>,
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

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
pub struct Rate {
    #[serde(default)]
    pub rate: f64,
}

/// Cumulative counters and their rates (messages per second) for a queue.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct MessageStats {
    #[serde(default)]
    pub publish: Option<u64>,
    #[serde(default)]
    pub publish_details: Option<Rate>,
    #[serde(default)]
    pub ack: Option<u64>,
    #[serde(default)]
    pub ack_details: Option<Rate>,
    #[serde(default)]
    pub deliver_get: Option<u64>,
    #[serde(default)]
    pub deliver_get_details: Option<Rate>,
    #[serde(default)]
    pub deliver_no_ack_details: Option<Rate>,
    #[serde(default)]
    pub get_no_ack_details: Option<Rate>,
    #[serde(default)]
    pub redeliver: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct QueueInfo {
    pub name: String,
    pub vhost: String,
    /// `classic`, `quorum` or `stream`.
    #[serde(rename = "type", default)]
    pub queue_type: Option<String>,
    #[serde(default)]
    pub durable: bool,
    #[serde(default)]
    pub auto_delete: bool,
    #[serde(default)]
    pub exclusive: bool,
    #[serde(default)]
    pub arguments: Map<String, Value>,
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default)]
    pub effective_policy_definition: Option<Value>,
    /// Ready + unacknowledged; absent until the queue's first statistics emission.
    #[serde(default)]
    pub messages: Option<u64>,
    #[serde(default)]
    pub messages_ready: Option<u64>,
    #[serde(default)]
    pub messages_unacknowledged: Option<u64>,
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
    #[serde(default)]
    pub message_stats: Option<MessageStats>,
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
    pub name: String,
    #[serde(default)]
    pub vhost: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub client_properties: Option<Value>,
    #[serde(default)]
    pub peer_host: Option<String>,
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
    pub name: String,
    #[serde(default)]
    pub connection_details: Option<ConnectionDetails>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub vhost: Option<String>,
    /// Set once the channel went idle (hibernated). An idle channel has dropped its cached
    /// permission checks, so a revocation reaches its next operation.
    #[serde(default)]
    pub idle_since: Option<String>,
    #[serde(default)]
    pub message_stats: Option<Value>,
}

/// The connection a channel, consumer or exclusive queue belongs to, as the management API names
/// it (`<peer> -> <broker>`, the name [`crate::ManagementClient::close_connection`] takes).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ConnectionDetails {
    pub name: String,
}

/// One consumer (`GET /api/consumers/{vhost}`): which queue it reads and on which connection.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ConsumerInfo {
    pub queue: QueueRef,
    #[serde(default)]
    pub channel_details: Option<ConsumerChannel>,
    #[serde(default)]
    pub consumer_tag: Option<String>,
}

/// A queue named by a consumer.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct QueueRef {
    pub name: String,
    #[serde(default)]
    pub vhost: Option<String>,
}

/// The channel of a consumer, with its connection's name and user.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ConsumerChannel {
    #[serde(default)]
    pub connection_name: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

/// A dynamic shovel, AMQP 0-9-1 to AMQP 0-9-1, from a queue to a queue. URIs carry credentials,
/// hence [`crate::Secret`].
#[derive(Debug, Clone, PartialEq)]
pub struct ShovelSpec {
    pub src_uri: crate::Secret,
    pub src_queue: String,
    pub dest_uri: crate::Secret,
    pub dest_queue: String,
    /// `on-confirm`: a message is acknowledged at the source only after the destination confirmed it.
    pub ack_mode: String,
    /// `queue-length`: move what the queue holds when the shovel starts, then delete the shovel.
    pub src_delete_after: Option<String>,
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
    pub name: String,
    #[serde(default)]
    pub vhost: Option<String>,
    /// `starting`, `running` or `terminated`.
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default, rename = "type")]
    pub shovel_type: Option<String>,
}

/// A federation upstream (`federation-upstream` parameter); the URI carries credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct FederationUpstream {
    pub uri: crate::Secret,
    /// Messages fetched per link before acks; bounds what is in flight between clusters.
    pub prefetch_count: u32,
    /// `on-confirm` so a message leaves the upstream only once the downstream confirmed it.
    pub ack_mode: String,
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
    pub name: String,
    #[serde(default)]
    pub vhost: String,
    pub pattern: String,
    #[serde(rename = "apply-to")]
    pub apply_to: String,
    pub definition: Map<String, Value>,
    pub priority: i64,
}

/// A runtime parameter (`GET /api/parameters/{component}/{vhost}`); the value may hold secrets,
/// so `Debug` leaves it out.
#[derive(Clone, Deserialize)]
pub struct Parameter {
    pub name: String,
    #[serde(default)]
    pub component: String,
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
