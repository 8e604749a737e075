//! `RabbitMQInstance`: one tenant's RabbitMQ, on the shared or the dedicated tier.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{ClusterKind, ClusterRef, DEFAULT_IMAGE, StorageSpec, TlsSpec};

/// The message users see when they try to change `spec.series`; it says what to do instead.
pub const SERIES_IMMUTABLE_MESSAGE: &str = "spec.series is immutable: tier conversion only works \
within one series; to move to another series create a new RabbitMQInstance and move clients to it";

/// Refused: `spec.dedicated.storage` changed while the instance has a dedicated cluster.
pub const DEDICATED_STORAGE_MESSAGE: &str = "spec.dedicated.storage cannot change while the \
instance is on the dedicated tier: a StatefulSet's volume claims are fixed once created. Convert \
to Shared, change it, and convert back (the new dedicated cluster gets the new storage)";

/// Refused: `spec.dedicated.replicas` went down while the instance has a dedicated cluster.
pub const DEDICATED_SCALE_DOWN_MESSAGE: &str = "spec.dedicated.replicas cannot go down while the \
instance is on the dedicated tier: scaling a StatefulSet down removes RabbitMQ nodes without \
moving the queue replicas they hold. Convert to Shared and back with the new count";

/// Desired state of a tenant's RabbitMQ. Flip `tier` to convert between shared and dedicated.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tiermq.io",
    version = "v1alpha1",
    kind = "RabbitMQInstance",
    plural = "rabbitmqinstances",
    singular = "rabbitmqinstance",
    shortname = "rmqi",
    category = "tiermq",
    namespaced,
    status = "RabbitMQInstanceStatus",
    derive = "PartialEq",
    doc = "A tenant's RabbitMQ, served by a shared cluster (vhost + user) or a dedicated cluster, convertible between the two without message loss.",
    printcolumn(
        name = "Tier",
        type_ = "string",
        description = "Effective tier",
        json_path = ".status.tier"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        description = "Instance phase",
        json_path = ".status.phase"
    ),
    printcolumn(
        name = "Migration",
        type_ = "string",
        description = "Tier conversion phase",
        json_path = ".status.migrationPhase"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.series == oldSelf.series").message(SERIES_IMMUTABLE_MESSAGE))]
#[x_kube(validation = Rule::new("oldSelf.tier == 'Shared' || self.dedicated.storage == oldSelf.dedicated.storage").message(DEDICATED_STORAGE_MESSAGE))]
#[x_kube(validation = Rule::new("oldSelf.tier == 'Shared' || self.dedicated.replicas >= oldSelf.dedicated.replicas").message(DEDICATED_SCALE_DOWN_MESSAGE))]
#[serde(rename_all = "camelCase")]
pub struct RabbitMQInstanceSpec {
    /// Product series. Conversion happens only within one series, so this never changes.
    pub series: Series,
    /// Desired tier. Changing it starts a conversion (upgrade to dedicated, downgrade to shared).
    pub tier: Tier,
    /// Settings used while the instance is (or becomes) dedicated.
    #[serde(default)]
    pub dedicated: DedicatedSpec,
    /// Settings used while the instance is (or becomes) shared.
    #[serde(default)]
    pub shared: SharedSpec,
    /// Per-tenant limits, enforced as vhost limits on whichever cluster serves the instance.
    #[serde(default)]
    pub limits: Limits,
    /// How clients reach the instance. The endpoint never changes across tiers.
    #[serde(default)]
    pub access: AccessSpec,
    /// How a tier conversion is carried out.
    #[serde(default)]
    pub migration: MigrationSpec,
    /// Opt-in: the operator changes `spec.tier` itself when the tenant's load stays above (or,
    /// if also opted in, below) thresholds, the way a HorizontalPodAutoscaler changes a
    /// Deployment's replicas. GitOps users leave `tier` out of their manifests or ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_tiering: Option<AutoTieringSpec>,
}

/// When the operator changes the instance's tier on its own.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoTieringSpec {
    /// Shared → Dedicated once *any* of these thresholds is met or exceeded on every sample for
    /// `forSeconds`.
    pub upgrade: TierThresholds,
    /// Dedicated → Shared once *every* threshold set here is undercut on every sample for
    /// `forSeconds`. Absent: the operator never downgrades on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downgrade: Option<TierThresholds>,
    /// No automatic change sooner than this after the last conversion ended (whoever started
    /// it) or the last automatic change.
    #[serde(default = "default_cooldown")]
    #[schemars(range(min = 0, max = 604800))]
    pub cooldown_seconds: i64,
}

/// Load thresholds on the tenant's vhost, as its broker's statistics report them. At least one
/// must be set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.publishRate) || has(self.connections) || has(self.backlog)").message(AUTO_TIERING_THRESHOLD_MESSAGE))]
pub struct TierThresholds {
    /// Messages per second clients publish to the tenant's vhost (routed or not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub publish_rate: Option<u32>,
    /// Open client connections of the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub connections: Option<u32>,
    /// Messages waiting in the tenant's queues (ready + unacknowledged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub backlog: Option<u64>,
    /// How long the condition must hold, sample after sample, before the tier changes.
    #[serde(default = "default_sustained")]
    #[schemars(range(min = 10, max = 86400))]
    pub for_seconds: i64,
}

/// Refused: auto-tiering thresholds with nothing to compare.
pub const AUTO_TIERING_THRESHOLD_MESSAGE: &str = "set at least one of publishRate, connections or backlog: thresholds without any of them never trigger";

fn default_cooldown() -> i64 {
    3600
}
fn default_sustained() -> i64 {
    300
}

/// Product series (after the reference service: subscription and serverless).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Series {
    /// Subscription plans: Professional and Enterprise are shared, Platinum is dedicated.
    Subscription,
    /// Serverless, with a shared and a dedicated tier.
    Serverless,
}

/// Deployment tier.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Tier {
    /// A vhost and user on a multi-tenant `SharedCluster`.
    Shared,
    /// A RabbitMQ StatefulSet of the instance's own.
    Dedicated,
}

impl Tier {
    /// The name used in the CRD and in status (`Shared`, `Dedicated`).
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Shared => "Shared",
            Tier::Dedicated => "Dedicated",
        }
    }
    /// The cluster kind that serves this tier.
    pub fn cluster_kind(self) -> ClusterKind {
        match self {
            Tier::Shared => ClusterKind::Shared,
            Tier::Dedicated => ClusterKind::Dedicated,
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The instance's own broker cluster, used on the dedicated tier.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DedicatedSpec {
    /// Number of broker nodes (1 to 7; odd numbers suit quorum queues).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 7))]
    pub replicas: i32,
    /// Broker image.
    #[serde(default = "default_image")]
    #[schemars(length(min = 1))]
    pub image: String,
    /// CPU and memory for each broker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Persistent storage for each broker node.
    #[serde(default)]
    pub storage: StorageSpec,
    /// TLS for AMQP (AMQPS on 5671) and the management API (HTTPS on 15671) of the dedicated
    /// brokers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

impl Default for DedicatedSpec {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            image: default_image(),
            resources: None,
            storage: StorageSpec::default(),
            tls: None,
        }
    }
}

/// Placement on a shared cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SharedSpec {
    /// The `SharedCluster` to place the instance on. Empty: the operator's configured default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<SharedClusterRef>,
}

/// Reference to a `SharedCluster`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SharedClusterRef {
    /// Name of the SharedCluster.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the SharedCluster; defaults to the operator's shared-cluster namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Tenant limits, applied as RabbitMQ vhost limits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Maximum concurrent client connections to the vhost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_connections: Option<i32>,
    /// Maximum number of queues in the vhost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_queues: Option<i32>,
}

/// How the client Service is exposed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessSpec {
    /// Type of the instance's client Service (`ClusterIP` unless set).
    #[serde(default)]
    pub service_type: ServiceType,
}

/// Kubernetes Service type of the instance endpoint.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    /// Reachable inside the Kubernetes cluster only.
    #[default]
    ClusterIP,
    /// Also exposed through the cloud provider's load balancer.
    LoadBalancer,
    /// Also exposed on a port of every node.
    NodePort,
}

impl ServiceType {
    /// The Kubernetes name of the type, as a Service's `spec.type` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::LoadBalancer => "LoadBalancer",
            ServiceType::NodePort => "NodePort",
        }
    }
}

/// How a tier conversion runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationSpec {
    /// `Consume`: wait for clients to consume the source backlog (the reference behaviour).
    /// `Shovel`: move the backlog to the destination with dynamic shovels.
    #[serde(default)]
    pub drain_strategy: DrainStrategy,
    /// How long to wait for the source to drain before raising `DrainTimedOut`. Nothing is deleted
    /// on timeout; the migration keeps waiting.
    #[serde(default = "default_drain_timeout")]
    #[schemars(range(min = 60, max = 604800))]
    pub drain_timeout_seconds: i64,
    /// What happens to client connections still open on the source. Empty: the direction's
    /// default (upgrade keeps them, downgrade closes them, as the reference service does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_policy: Option<ConnectionPolicy>,
    /// How long the source tenant is kept (without any permission) after it was proven drained,
    /// before it is deleted. The operator never waits less than twice the statistics lag it
    /// measured on the source during the drain.
    #[serde(default = "default_grace_period")]
    #[schemars(range(min = 0, max = 86400))]
    pub grace_period_seconds: i64,
    /// Deprecated, has no effect: the cutover moves publishers and subscribers together, so no
    /// consumer ever needs to read across clusters. Kept so existing manifests stay valid.
    #[serde(default)]
    pub federation: bool,
    /// Convert even when a queue's limits could drop messages because of the conversion: a
    /// message TTL shorter than 120 s without a dead-letter exchange, or a length limit
    /// (`max-length`, `max-length-bytes`) with the default `drop-head` overflow. Messages
    /// published after the write cutover wait on the destination until the source's consumers
    /// move there, so they can wait longer and pile up higher than without a conversion; without
    /// this the flip is held with a condition naming the queue.
    #[serde(default)]
    pub allow_limit_drops: bool,
    /// When a tier flip may start, in UTC. Absent: at any time. A flip outside the window waits
    /// (`ConversionBlocked`, reason `OutsideMaintenanceWindow`, and `status.nextMaintenanceWindow`)
    /// and starts when the window opens. A conversion that has started is never interrupted when
    /// the window closes; deletion and a flip back (abort) are never held by the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<MaintenanceWindow>,
}

/// Refused: a maintenance window whose start and end are the same minute.
pub const WINDOW_EMPTY_MESSAGE: &str = "spec.migration.window: startTime and endTime must differ \
(an endTime before the startTime means the window crosses midnight; leave the window out to \
allow flips at any time)";

/// The pattern of `startTime` and `endTime`: `HH:MM`, 24-hour, UTC.
pub const WINDOW_TIME_PATTERN: &str = "^([01][0-9]|2[0-3]):[0-5][0-9]$";

/// A weekly maintenance window in UTC, with minute resolution: on each of `days`, from
/// `startTime` to `endTime`. An `endTime` before the `startTime` means the window crosses
/// midnight and ends on the next day (it belongs to the day it opens on).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("self.startTime != self.endTime").message(WINDOW_EMPTY_MESSAGE))]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindow {
    /// The days (UTC) on which the window opens. Empty: every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 7))]
    pub days: Vec<Weekday>,
    /// When the window opens, `HH:MM` in UTC (24-hour).
    #[schemars(regex(pattern = WINDOW_TIME_PATTERN))]
    pub start_time: String,
    /// When the window closes, `HH:MM` in UTC (24-hour); before `startTime` when the window
    /// crosses midnight. Must differ from `startTime`.
    #[schemars(regex(pattern = WINDOW_TIME_PATTERN))]
    pub end_time: String,
}

impl MaintenanceWindow {
    /// `startTime` and `endTime` as minutes after midnight UTC, or a message naming the field that
    /// is not `HH:MM` (the API server refuses such values; this guards objects it did not check).
    pub fn minutes(&self) -> Result<(u32, u32), String> {
        let parse = |field: &str, v: &str| {
            let bad = || {
                format!("spec.migration.window.{field} {v:?} is not HH:MM (UTC, 00:00 to 23:59)")
            };
            let (h, m) = v.split_once(':').ok_or_else(bad)?;
            if h.len() != 2 || m.len() != 2 {
                return Err(bad());
            }
            let h: u32 = h.parse().map_err(|_| bad())?;
            let m: u32 = m.parse().map_err(|_| bad())?;
            if h > 23 || m > 59 {
                return Err(bad());
            }
            Ok(h * 60 + m)
        };
        let start = parse("startTime", &self.start_time)?;
        let end = parse("endTime", &self.end_time)?;
        if start == end {
            return Err(WINDOW_EMPTY_MESSAGE.to_string());
        }
        Ok((start, end))
    }
}

/// A day of the week (UTC).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Weekday {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl From<chrono::Weekday> for Weekday {
    fn from(d: chrono::Weekday) -> Self {
        match d {
            chrono::Weekday::Mon => Weekday::Mon,
            chrono::Weekday::Tue => Weekday::Tue,
            chrono::Weekday::Wed => Weekday::Wed,
            chrono::Weekday::Thu => Weekday::Thu,
            chrono::Weekday::Fri => Weekday::Fri,
            chrono::Weekday::Sat => Weekday::Sat,
            chrono::Weekday::Sun => Weekday::Sun,
        }
    }
}

impl Default for MigrationSpec {
    fn default() -> Self {
        Self {
            drain_strategy: DrainStrategy::default(),
            drain_timeout_seconds: default_drain_timeout(),
            connection_policy: None,
            grace_period_seconds: default_grace_period(),
            federation: false,
            allow_limit_drops: false,
            window: None,
        }
    }
}

/// How the source backlog reaches consumers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DrainStrategy {
    /// Clients consume the source backlog themselves (the reference behaviour).
    #[default]
    Consume,
    /// Dynamic shovels move the source backlog to the destination.
    Shovel,
}

/// What happens to client connections on the source cluster after the write cutover.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConnectionPolicy {
    /// Leave open connections alone; they end when clients close them or the source is retired.
    Keep,
    /// Close them with a reason, so auto-reconnecting clients land on the destination.
    Close,
}

impl ConnectionPolicy {
    /// The reference service's behaviour: upgrades keep source connections, downgrades close them.
    pub fn default_for(to: Tier) -> Self {
        match to {
            Tier::Dedicated => ConnectionPolicy::Keep,
            Tier::Shared => ConnectionPolicy::Close,
        }
    }
}

fn default_replicas() -> i32 {
    1
}
fn default_image() -> String {
    DEFAULT_IMAGE.to_string()
}
fn default_drain_timeout() -> i64 {
    3600
}
fn default_grace_period() -> i64 {
    300
}

/// Observed state of a `RabbitMQInstance`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RabbitMQInstanceStatus {
    /// The tier that serves the instance now (during a conversion: the source tier until cutover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    /// Coarse lifecycle: provisioning, ready, migrating, blocked or deleting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<InstancePhase>,
    /// Where the running tier conversion is. `Stable` when none runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_phase: Option<MigrationPhase>,
    /// The running conversion; cleared when it ends (`history` keeps the record). While
    /// `Aborting`, the drain fields describe the destination being drained back onto the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationStatus>,
    /// Completed and aborted conversions, newest last (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<MigrationRecord>,
    /// Where clients connect; the same on either tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<EndpointStatus>,
    /// The cluster currently serving the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<ClusterRef>,
    /// Standard Kubernetes conditions (`Ready`, `Migrating`, `ConversionBlocked`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// While a tier flip waits for `spec.migration.window`: when the window next opens (the
    /// conversion starts then). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_maintenance_window: Option<Time>,
    /// What auto-tiering sees (with `spec.autoTiering` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_tiering: Option<AutoTieringStatus>,
}

/// Auto-tiering's memory between samples. Written only when something in it changes, never
/// per sample, so an idle instance causes no writes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoTieringStatus {
    /// Since when the thresholds towards the other tier have been crossed on every sample;
    /// absent when they are not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crossed_since: Option<Time>,
    /// Which thresholds are crossed, e.g. `publishRate >= 500/s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crossed: Option<String>,
    /// When the operator last changed `spec.tier` on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change: Option<Time>,
    /// Why it did, with the measured values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change_reason: Option<String>,
}

/// Coarse lifecycle of the instance.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum InstancePhase {
    /// Cluster and tenant are being created.
    Provisioning,
    /// In service.
    Ready,
    /// In service and converting tiers.
    Migrating,
    /// A tier flip is held until something outside the operator changes, or until its
    /// maintenance window opens (see `ConversionBlocked`).
    Blocked,
    /// Being deleted; broker state is cleaned up first.
    Deleting,
}

/// The phases of a tier conversion, after the reference service's four phases plus the operator's
/// own bookkeeping phases.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum MigrationPhase {
    /// No conversion runs.
    Stable,
    /// A tier flip is held (instance not in service, no capacity, outside the maintenance
    /// window); see `ConversionBlocked`.
    Blocked,
    /// Destination cluster, tenant and topology are being made ready.
    PreparingDestination,
    /// Phase 1: the destination holds the tenant and the topology and is kept in step with the
    /// source; clients stay on the source until the write cutover (so no publisher and subscriber
    /// of one exchange end up on different clusters). The cutover waits here while a subscriber
    /// has a backlog or a queue cannot move (see `ConversionBlocked`).
    DualWriteDualRead,
    /// Phase 2, the write cutover: the Service routes to the destination, the source refuses
    /// writes and topology changes (reads stay), publishers still publishing move first, then
    /// subscribers (exclusive or auto-delete queues) once nothing can reach their queues, then the
    /// destination opens for writes.
    SingleWriteDualRead,
    /// Phase 3: waiting until every source queue is empty (or shovels moved the backlog).
    DrainingSource,
    /// Phase 4: the destination alone serves; the source has no permissions and is retired after
    /// the grace period.
    DestinationOnly,
    /// The conversion finished; the next reconcile records it in history and returns to `Stable`.
    Completed,
    /// A flip back before the write cutover: the source is restored as the sole cluster.
    Aborting,
}

impl MigrationPhase {
    /// Every phase, in the order a conversion passes them (for tables and exhaustive tests).
    pub const ALL: [MigrationPhase; 9] = [
        MigrationPhase::Stable,
        MigrationPhase::Blocked,
        MigrationPhase::PreparingDestination,
        MigrationPhase::DualWriteDualRead,
        MigrationPhase::SingleWriteDualRead,
        MigrationPhase::DrainingSource,
        MigrationPhase::DestinationOnly,
        MigrationPhase::Completed,
        MigrationPhase::Aborting,
    ];

    /// The name used in the CRD and in status.
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationPhase::Stable => "Stable",
            MigrationPhase::Blocked => "Blocked",
            MigrationPhase::PreparingDestination => "PreparingDestination",
            MigrationPhase::DualWriteDualRead => "DualWriteDualRead",
            MigrationPhase::SingleWriteDualRead => "SingleWriteDualRead",
            MigrationPhase::DrainingSource => "DrainingSource",
            MigrationPhase::DestinationOnly => "DestinationOnly",
            MigrationPhase::Completed => "Completed",
            MigrationPhase::Aborting => "Aborting",
        }
    }

    /// True once writes have moved to the destination: from here a flip back cannot abort.
    pub fn past_write_cutover(self) -> bool {
        matches!(
            self,
            MigrationPhase::SingleWriteDualRead
                | MigrationPhase::DrainingSource
                | MigrationPhase::DestinationOnly
                | MigrationPhase::Completed
        )
    }
}

impl std::fmt::Display for MigrationPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The running conversion (cleared when it ends; `history` keeps the record). While `Aborting`,
/// the drain fields describe the destination being drained back onto the source. The instants
/// the operator measures waits from are kept to the microsecond (`MicroTime`); the others to
/// the second.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationStatus {
    /// The tier converted from.
    pub from: Tier,
    /// The tier converted to.
    pub to: Tier,
    /// The cluster that served the instance when the conversion started.
    pub source: ClusterRef,
    /// The cluster that serves the instance once the conversion is done.
    pub destination: ClusterRef,
    /// The drain strategy in effect: the spec's, which may change during the conversion.
    pub drain_strategy: DrainStrategy,
    /// The effective policy (the spec's, or the direction's default).
    pub connection_policy: ConnectionPolicy,
    /// When the conversion started.
    pub started: Time,
    /// When each phase was entered, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<PhaseTiming>,
    /// Messages still on the cluster being drained (ready + unacked + delayed), from the last fresh sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_messages: Option<i64>,
    /// Messages per second leaving the source, from the last samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_rate: Option<f64>,
    /// Estimated seconds until the source is drained (absent when nothing drains).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<i64>,
    /// Consecutive fresh samples that found the source empty, by its statistics and by its queues
    /// asked directly; drained at 2.
    #[serde(default)]
    pub empty_samples: u32,
    /// When the last counted sample was taken (operator clock, less the brokers' statistics
    /// interval); a later sample is "fresh". Set when counting starts (writes refused, federation
    /// gone), so samples from before never count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sample: Option<MicroTime>,
    /// When the source tenant was left without permissions (grace period starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_revoked_at: Option<MicroTime>,
    /// When the source's last connections were closed for its retirement (after the grace
    /// period). It is deleted once it shows no connection and a sample taken after this shows
    /// it empty. Recorded so that each pass of the retirement is short and survives a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_closed_at: Option<MicroTime>,
    /// Set when a flip back arrived after the write cutover: the conversion completes first and a
    /// new conversion back starts right after.
    #[serde(default)]
    pub reverse_requested: bool,
    /// When the source was first seen refusing writes at the cutover; subscribers move once
    /// nothing published before can still be on its way to them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_frozen_at: Option<MicroTime>,
    /// Since when the source's statistics disagree with the counts its queues give directly
    /// (the statistics are behind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats_behind_since: Option<MicroTime>,
    /// The longest time the source's statistics were seen behind its queues during this
    /// conversion; the grace period is at least twice this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats_lag_seconds: Option<i64>,
}

/// When a phase was entered.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhaseTiming {
    /// The phase entered.
    pub phase: MigrationPhase,
    /// When it was entered.
    pub started: Time,
}

/// A finished conversion.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationRecord {
    /// The tier converted from.
    pub from: Tier,
    /// The tier converted to (the intended one, also when aborted).
    pub to: Tier,
    /// When the conversion started.
    pub started: Time,
    /// When it completed or its abort finished.
    pub finished: Time,
    /// Whether it completed or was aborted.
    pub outcome: MigrationOutcome,
    /// Seconds spent in each phase.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phase_seconds: Vec<PhaseDuration>,
}

/// Time a finished conversion spent in one phase.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhaseDuration {
    /// The phase.
    pub phase: MigrationPhase,
    /// Whole seconds spent in it.
    pub seconds: i64,
}

/// How a conversion ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MigrationOutcome {
    /// The instance reached the destination tier.
    Completed,
    /// A flip back before the write cutover restored the source.
    Aborted,
}

/// Where clients connect. Stable across tiers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStatus {
    /// The client Service's DNS name.
    pub host: String,
    /// The AMQP port (5672).
    pub port: i32,
    /// The instance's vhost (`<namespace>.<name>`), the same on either tier.
    pub vhost: String,
    /// The Secret with host, port, vhost, username, password and uri (service-binding shape).
    pub secret_name: String,
}

/// Default storage size for a broker node.
pub fn default_storage_size() -> Quantity {
    Quantity("1Gi".to_string())
}
