//! Shared by the planner tests (`table`, `scenarios`, `properties`): fixtures, and a small simulated world
//! that plays the observer and the executor around the pure planner.
//!
//! The world keeps the *true* message count of each tenant, which the planner never sees: it only
//! sees samples, possibly stale, of the past truth. Loss is judged against the truth, so a planner
//! that trusted a stale or unverified sample would be caught here.
#![allow(dead_code)]

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, TimeZone, Utc};
use tiermq_crd::{
    ClusterKind, ClusterRef, MigrationPhase, RabbitMQInstanceSpec, RabbitMQInstanceStatus, Tier,
};
use tiermq_operator::controller::plan::{
    Access, BacklogSample, BrokerObservation, ClusterObservation, ConversionSlots, Observed, Plan,
    QueueMessages, SharedCapacity, ShovelObservation, Step, TenantObservation, is_allowed, plan,
};

pub const NS: &str = "team-a";

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

pub fn shared_ref() -> ClusterRef {
    ClusterRef {
        kind: ClusterKind::Shared,
        name: "shared-a".into(),
        namespace: "tiermq-system".into(),
    }
}

pub fn dedicated_ref() -> ClusterRef {
    ClusterRef {
        kind: ClusterKind::Dedicated,
        name: "orders-dedicated".into(),
        namespace: NS.into(),
    }
}

pub fn cluster_ref(kind: ClusterKind) -> ClusterRef {
    match kind {
        ClusterKind::Shared => shared_ref(),
        ClusterKind::Dedicated => dedicated_ref(),
    }
}

pub fn other(t: Tier) -> Tier {
    match t {
        Tier::Shared => Tier::Dedicated,
        Tier::Dedicated => Tier::Shared,
    }
}

pub fn spec(tier: Tier) -> RabbitMQInstanceSpec {
    let mut s: RabbitMQInstanceSpec =
        serde_json::from_value(serde_json::json!({"series": "Subscription", "tier": "Shared"}))
            .unwrap();
    s.tier = tier;
    s
}

pub fn topology() -> BTreeSet<String> {
    ["exchange/orders", "queue/orders", "binding/orders/orders"]
        .into_iter()
        .map(String::from)
        .collect()
}

/// A statistics sample showing `messages`, with the queues themselves confirming it.
pub fn sample(at: DateTime<Utc>, messages: i64) -> BacklogSample {
    sample_live(at, messages, messages)
}

/// A statistics sample showing `messages` while the queues themselves hold `live` ready ones.
pub fn sample_live(at: DateTime<Utc>, messages: i64, live: i64) -> BacklogSample {
    BacklogSample {
        stats_at: at,
        queues: vec![
            QueueMessages {
                queue: "orders".into(),
                ready: messages,
                ..Default::default()
            },
            QueueMessages {
                queue: "audit".into(),
                ..Default::default()
            },
        ],
        drain_rate: None,
        publish_rate: 0.0,
        live_ready: Some(live),
    }
}

pub fn tenant(access: Access, backlog: Option<BacklogSample>) -> TenantObservation {
    TenantObservation {
        access,
        topology: topology(),
        connections: 3,
        subscribers: 0,
        consumers: 1,
        transfers: 0,
        shovels: ShovelObservation::default(),
        federated: false,
        backlog,
        mirroring_policies: Vec::new(),
        policy_keys: Default::default(),
    }
}

/// A cluster that is ready and answers, with the tenant as given.
pub fn up(r: ClusterRef, tenant: Option<TenantObservation>) -> ClusterObservation {
    let capacity = (r.kind == ClusterKind::Shared).then_some(SharedCapacity {
        instance_count: 3,
        max_instances: 10,
        counts_this_instance: tenant.is_some(),
    });
    ClusterObservation {
        cluster: r,
        exists: true,
        desired_replicas: 1,
        ready_replicas: 1,
        capacity,
        broker: Some(BrokerObservation { tenant }),
        rabbitmq_major: Some(3),
        refuses_transient_queues: false,
        pod_problems: Vec::new(),
        tenancy: None,
    }
}

/// A cluster that exists but has no ready replica and does not answer.
pub fn down(r: ClusterRef) -> ClusterObservation {
    let mut c = up(r, None);
    c.ready_replicas = 0;
    c.broker = None;
    c
}

pub fn absent(r: ClusterRef) -> ClusterObservation {
    ClusterObservation::absent(r)
}

/// An instance served by `tier`, in service, nothing else going on.
pub fn stable_observed(tier: Tier) -> Observed {
    let serving = up(
        cluster_ref(tier.cluster_kind()),
        Some(tenant(Access::ReadWrite, Some(sample(t0(), 0)))),
    );
    let (shared, dedicated) = match tier {
        Tier::Shared => (serving, absent(dedicated_ref())),
        Tier::Dedicated => (up(shared_ref(), None), serving),
    };
    Observed {
        generation: 1,
        deletion_requested: false,
        spec: spec(tier),
        status: RabbitMQInstanceStatus {
            tier: Some(tier),
            migration_phase: Some(MigrationPhase::Stable),
            serving: Some(cluster_ref(tier.cluster_kind())),
            ..Default::default()
        },
        shared,
        dedicated,
        service_routes: vec![cluster_ref(tier.cluster_kind())],
        conversions: Default::default(),
    }
}

pub fn step_names(p: &Plan) -> Vec<&'static str> {
    p.steps.iter().map(Step::name).collect()
}

// ------------------------------------------------------------------------------------------------
// The simulated world

#[derive(Clone, Debug)]
pub struct SimTenant {
    pub access: Access,
    /// The truth: messages stored (ready + unacked + delayed).
    pub messages: i64,
    pub topology: BTreeSet<String>,
    pub shovel_to: Option<ClusterKind>,
    pub federated: bool,
    pub connections: u32,
}

impl SimTenant {
    fn new() -> Self {
        Self {
            access: Access::ReadWrite,
            messages: 0,
            topology: BTreeSet::new(),
            shovel_to: None,
            federated: false,
            connections: 0,
        }
    }
}

#[derive(Clone, Debug)]
pub struct SimCluster {
    pub cref: ClusterRef,
    pub exists: bool,
    pub ready: bool,
    /// The management API answers (only meaningful when ready).
    pub answers: bool,
    pub tenant: Option<SimTenant>,
    /// Every statistics sample taken, oldest first: (stats timestamp, count the statistics
    /// show, what the queues themselves held then).
    pub samples: Vec<(DateTime<Utc>, i64, i64)>,
    /// Which sample the observer currently shows (stale views pick an older one).
    pub shown: Option<usize>,
    pub full: bool,
    /// The truth at the last statistics emission (what a lagging sample shows).
    pub emitted: Option<i64>,
}

impl SimCluster {
    fn new(cref: ClusterRef) -> Self {
        Self {
            cref,
            exists: false,
            ready: false,
            answers: true,
            tenant: None,
            samples: Vec::new(),
            shown: None,
            full: false,
            emitted: None,
        }
    }

    fn reachable(&self) -> bool {
        self.exists && self.ready && self.answers
    }

    fn observe(&self, subscriber: Option<ClusterKind>) -> ClusterObservation {
        if !self.exists {
            return ClusterObservation::absent(self.cref.clone());
        }
        let capacity = (self.cref.kind == ClusterKind::Shared).then_some(SharedCapacity {
            instance_count: if self.full { 10 } else { 4 },
            max_instances: 10,
            counts_this_instance: self.tenant.is_some(),
        });
        let broker = self.reachable().then(|| BrokerObservation {
            tenant: self.tenant.as_ref().map(|t| TenantObservation {
                access: t.access,
                topology: t.topology.clone(),
                connections: t.connections,
                subscribers: u32::from(subscriber == Some(self.cref.kind)),
                consumers: u32::from(t.connections > 0),
                transfers: 0,
                shovels: ShovelObservation {
                    running: u32::from(t.shovel_to.is_some()),
                    failed: 0,
                },
                federated: t.federated,
                backlog: self.shown.map(|i| {
                    let (at, n, live) = self.samples[i];
                    sample_live(at, n, live)
                }),
                mirroring_policies: Vec::new(),
                policy_keys: Default::default(),
            }),
        });
        ClusterObservation {
            cluster: self.cref.clone(),
            exists: true,
            desired_replicas: 1,
            ready_replicas: i32::from(self.ready),
            capacity,
            broker,
            rabbitmq_major: Some(3),
            refuses_transient_queues: false,
            pod_problems: Vec::new(),
            tenancy: None,
        }
    }
}

/// The world around the planner: clusters with true message counts, the Service, the recorded
/// status, a clock. `violations` collects every broken safety rule.
#[derive(Clone, Debug)]
pub struct World {
    pub now: DateTime<Utc>,
    pub spec: RabbitMQInstanceSpec,
    pub status: RabbitMQInstanceStatus,
    pub generation: i64,
    pub deletion: bool,
    pub finalizer: bool,
    pub shared: SimCluster,
    pub dedicated: SimCluster,
    pub routes: Vec<ClusterRef>,
    /// The operator's conversion slots as the instance sees them (unbounded by default).
    pub conversions: ConversionSlots,
    pub violations: Vec<String>,
    /// Recorded phases, in order (only changes).
    pub phases: Vec<MigrationPhase>,
    /// Messages ever accepted (confirmed) and consumed, for the zero-loss balance.
    pub published: i64,
    pub consumed: i64,
    /// Messages removed by deleting state while the instance itself was being deleted (allowed).
    pub discarded_on_delete: i64,
    pub plans: u64,
    /// Where the instance's one subscriber (an exclusive queue bound to an exchange) is
    /// subscribed; `None` while it reconnects. It must receive every message published while
    /// it is subscribed.
    pub subscriber: Option<ClusterKind>,
    /// When something was last published on each cluster (shared, dedicated).
    pub last_publish: [Option<DateTime<Utc>>; 2],
    /// Retirements the executor refused because the queues still held messages.
    pub retire_refusals: u64,
}

impl World {
    /// An instance in service on `tier`, stable.
    pub fn new(tier: Tier) -> Self {
        let mut shared = SimCluster::new(shared_ref());
        shared.exists = true;
        shared.ready = true;
        let mut dedicated = SimCluster::new(dedicated_ref());
        let serving = match tier {
            Tier::Shared => &mut shared,
            Tier::Dedicated => {
                dedicated.exists = true;
                dedicated.ready = true;
                &mut dedicated
            }
        };
        let mut t = SimTenant::new();
        t.topology = topology();
        t.connections = 2;
        serving.tenant = Some(t);
        Self {
            now: t0(),
            spec: spec(tier),
            status: RabbitMQInstanceStatus {
                tier: Some(tier),
                migration_phase: Some(MigrationPhase::Stable),
                serving: Some(cluster_ref(tier.cluster_kind())),
                ..Default::default()
            },
            generation: 1,
            deletion: false,
            finalizer: true,
            shared,
            dedicated,
            routes: vec![cluster_ref(tier.cluster_kind())],
            conversions: ConversionSlots::default(),
            violations: Vec::new(),
            phases: vec![MigrationPhase::Stable],
            published: 0,
            consumed: 0,
            discarded_on_delete: 0,
            plans: 0,
            subscriber: Some(tier.cluster_kind()),
            last_publish: [None, None],
            retire_refusals: 0,
        }
    }

    pub fn cluster(&self, kind: ClusterKind) -> &SimCluster {
        match kind {
            ClusterKind::Shared => &self.shared,
            ClusterKind::Dedicated => &self.dedicated,
        }
    }

    pub fn cluster_mut(&mut self, kind: ClusterKind) -> &mut SimCluster {
        match kind {
            ClusterKind::Shared => &mut self.shared,
            ClusterKind::Dedicated => &mut self.dedicated,
        }
    }

    pub fn phase(&self) -> MigrationPhase {
        self.status
            .migration_phase
            .unwrap_or(MigrationPhase::Stable)
    }

    pub fn stored(&self) -> i64 {
        [&self.shared, &self.dedicated]
            .iter()
            .filter_map(|c| c.tenant.as_ref())
            .map(|t| t.messages)
            .sum()
    }

    /// Flip `spec.tier` (a user's `kubectl apply`).
    pub fn set_tier(&mut self, tier: Tier) {
        if self.spec.tier != tier {
            self.spec.tier = tier;
            self.generation += 1;
        }
    }

    /// Publish `n` confirmed messages on `kind` if a publisher there could (writable tenant on a
    /// ready broker); refused publishes are not confirmed, hence not counted.
    pub fn publish(&mut self, kind: ClusterKind, n: i64) -> bool {
        let c = self.cluster_mut(kind);
        if !(c.exists && c.ready) {
            return false;
        }
        let stored = match c.tenant.as_mut() {
            Some(t) if t.access.writable() => {
                t.messages += n;
                true
            }
            _ => false,
        };
        if stored {
            self.published += n;
            self.last_publish[slot(kind)] = Some(self.now);
            if let Some(at) = self.subscriber
                && at != kind
            {
                self.violation(format!(
                    "(e) the subscriber on {at:?} missed {n} messages published on {kind:?}"
                ));
            }
        }
        stored
    }

    /// A subscriber without a connection reconnects through the Service: it lands on the first
    /// routed cluster where its tenant may declare its queue (configure needs full permissions).
    pub fn resubscribe(&mut self) {
        if self.subscriber.is_some() || self.deletion {
            return;
        }
        let routes = self.routes.clone();
        for r in routes {
            let c = self.cluster(r.kind);
            if c.exists && c.ready && c.tenant.as_ref().is_some_and(|t| t.access.writable()) {
                self.subscriber = Some(r.kind);
                return;
            }
        }
    }

    /// Publish through the Service: to the first routed cluster that accepts writes.
    pub fn publish_via_service(&mut self, n: i64) -> bool {
        let routes = self.routes.clone();
        routes.iter().any(|r| self.publish(r.kind, n))
    }

    /// Consumers on `kind` take up to `n` messages (reads need a permission).
    pub fn consume(&mut self, kind: ClusterKind, n: i64) -> i64 {
        let c = self.cluster_mut(kind);
        if !(c.exists && c.ready) {
            return 0;
        }
        let taken = match c.tenant.as_mut() {
            Some(t) if t.access != Access::None => {
                let k = n.min(t.messages).max(0);
                t.messages -= k;
                k
            }
            _ => 0,
        };
        self.consumed += taken;
        taken
    }

    /// The broker's statistics catch up: a fresh sample, shown to the observer. Counts are exact
    /// as of now; see [`World::sample_lagging`] for the management API's usual lag.
    pub fn sample(&mut self, kind: ClusterKind) {
        self.sample_with(kind, false);
    }

    /// A fresh sample (new statistics timestamp) whose counts still show the previous emission:
    /// what the management API does when queue stats lag by one statistics interval.
    pub fn sample_lagging(&mut self, kind: ClusterKind) {
        self.sample_with(kind, true);
    }

    fn sample_with(&mut self, kind: ClusterKind, lag: bool) {
        let now = self.now;
        let c = self.cluster_mut(kind);
        if let (true, Some(t)) = (c.reachable(), c.tenant.as_ref()) {
            let truth = t.messages;
            let shown_count = if lag {
                c.emitted.unwrap_or(truth)
            } else {
                truth
            };
            c.emitted = Some(truth);
            if c.samples.last().is_some_and(|(at, _, _)| *at == now) {
                c.samples.pop();
            }
            c.samples.push((now, shown_count, truth));
            c.shown = Some(c.samples.len() - 1);
        }
    }

    /// The observer shows an older sample (a lagging statistics database).
    pub fn show_stale(&mut self, kind: ClusterKind, back: usize) {
        let c = self.cluster_mut(kind);
        if let Some(i) = c.shown {
            c.shown = Some(i.saturating_sub(back));
        }
    }

    pub fn tick(&mut self, secs: i64) {
        self.tick_ms(secs * 1000);
    }

    /// [`World::tick`] by milliseconds (a conversion paced by its own requeue delays).
    pub fn tick_ms(&mut self, ms: i64) {
        self.now += Duration::milliseconds(ms);
        self.resubscribe();
        // Federation: a federated (downstream) vhost pulls a few messages from the other cluster.
        for (down, up) in [
            (ClusterKind::Shared, ClusterKind::Dedicated),
            (ClusterKind::Dedicated, ClusterKind::Shared),
        ] {
            let pulls = self.cluster(down).ready
                && self.cluster(up).ready
                && self
                    .cluster(down)
                    .tenant
                    .as_ref()
                    .is_some_and(|t| t.federated);
            if let (true, Some(n)) = (
                pulls,
                self.cluster(up).tenant.as_ref().map(|t| t.messages.min(3)),
            ) {
                self.cluster_mut(up).tenant.as_mut().unwrap().messages -= n;
                self.cluster_mut(down).tenant.as_mut().unwrap().messages += n;
            }
        }
        // Shovels move whole backlogs when both ends are up and the target vhost exists.
        for from in [ClusterKind::Shared, ClusterKind::Dedicated] {
            let Some(to) = self.cluster(from).tenant.as_ref().and_then(|t| t.shovel_to) else {
                continue;
            };
            let target_ok = {
                let c = self.cluster(to);
                c.exists && c.ready && c.tenant.is_some()
            };
            if !(target_ok && self.cluster(from).ready) {
                continue;
            }
            let n = self.cluster(from).tenant.as_ref().unwrap().messages;
            self.cluster_mut(from).tenant.as_mut().unwrap().messages = 0;
            self.cluster_mut(to).tenant.as_mut().unwrap().messages += n;
        }
    }

    pub fn observe(&self) -> Observed {
        Observed {
            generation: self.generation,
            deletion_requested: self.deletion,
            spec: self.spec.clone(),
            status: self.status.clone(),
            shared: self.shared.observe(self.subscriber),
            dedicated: self.dedicated.observe(self.subscriber),
            service_routes: self.routes.clone(),
            conversions: self.conversions.clone(),
        }
    }

    /// One reconcile: observe, plan, check the plan, run its steps; `crash_after` stops the
    /// executor after that many steps (nothing recorded). Returns the plan.
    pub fn reconcile_with(&mut self, crash_after: Option<usize>) -> Plan {
        let observed = self.observe();
        let p = plan(&observed, self.now);
        self.plans += 1;
        self.check_plan(&observed, &p);
        let mut ok = true;
        for (i, s) in p.steps.iter().enumerate() {
            if crash_after == Some(i) || self.run(s).is_err() {
                ok = false;
                break;
            }
            let writable = [&self.shared, &self.dedicated]
                .iter()
                .filter(|c| c.exists && c.tenant.as_ref().is_some_and(|t| t.access.writable()))
                .count();
            if writable > 1 && !self.deletion {
                self.violation(format!(
                    "(e) both clusters take writes after {} (a subscriber can only be on one)",
                    s.name()
                ));
            }
        }
        // A crash after the last step still loses the status write.
        if ok && crash_after.is_none() {
            if self.phase() != p.phase {
                self.phases.push(p.phase);
            }
            self.status = p.status.clone();
        }
        p
    }

    pub fn reconcile(&mut self) -> Plan {
        self.reconcile_with(None)
    }

    fn violation(&mut self, what: String) {
        self.violations.push(what);
    }

    /// Rules a single plan must keep, judged against the plan's input and the world's truth.
    fn check_plan(&mut self, o: &Observed, p: &Plan) {
        let from = o.status.migration_phase.unwrap_or(MigrationPhase::Stable);
        // (a) only allowed edges.
        if !is_allowed(from, p.phase) {
            self.violation(format!("edge {from:?} -> {:?} not allowed", p.phase));
        }
        // Determinism.
        if plan(o, self.now) != *p {
            self.violation("plan is not deterministic".into());
        }
        if o.deletion_requested {
            if p.steps.last() != Some(&Step::RemoveFinalizer) {
                self.violation("deletion plan does not end by removing the finalizer".into());
            }
            return;
        }
        // (d) one migration: block iff a conversion phase; its identity never changes mid-way.
        let running = !matches!(p.phase, MigrationPhase::Stable | MigrationPhase::Blocked);
        if running != p.status.migration.is_some() {
            self.violation(format!(
                "phase {:?} with migration block {:?}",
                p.phase,
                p.status.migration.is_some()
            ));
        }
        if let (Some(before), Some(after)) = (&o.status.migration, &p.status.migration) {
            let id = |m: &tiermq_crd::MigrationStatus| {
                (
                    m.from,
                    m.to,
                    m.source.clone(),
                    m.destination.clone(),
                    m.started.clone(),
                )
            };
            if id(before) != id(after) {
                self.violation("a second migration replaced the running one".into());
            }
        }
        if let Some(m) = &p.status.migration {
            if m.from == m.to {
                self.violation("migration from a tier to itself".into());
            }
            for s in &p.steps {
                let touched: Vec<&ClusterRef> = match s {
                    Step::EnsureDedicatedCluster { cluster }
                    | Step::EnsureTenant { cluster, .. }
                    | Step::FreezeSource { cluster }
                    | Step::RestoreWrites { cluster }
                    | Step::RevokeAll { cluster }
                    | Step::StopTransfers { cluster }
                    | Step::CloseSubscribers { cluster, .. }
                    | Step::CloseConsumers { cluster, .. }
                    | Step::CloseConnections { cluster, .. }
                    | Step::DeleteTenant { cluster }
                    | Step::DiscardTenant { cluster }
                    | Step::DeleteDedicatedCluster { cluster } => vec![cluster],
                    Step::CopyTopology { from, to, .. }
                    | Step::CopyTransfers { from, to }
                    | Step::StartShovels { from, to } => vec![from, to],
                    Step::StopShovels { from } => vec![from],
                    Step::RouteService { to } => to.iter().collect(),
                    Step::DisableFederation {
                        source,
                        destination,
                    } => vec![source, destination],
                    Step::RemoveFinalizer | Step::SetTier { .. } => vec![],
                };
                if touched
                    .iter()
                    .any(|c| **c != m.source && **c != m.destination)
                {
                    self.violation(format!("{} touches a third cluster", s.name()));
                }
            }
        }
        for s in &p.steps {
            if let Step::RouteService { to } = s
                && to.len() > 2
            {
                self.violation("Service routed to more than two clusters".into());
            }
        }
    }

    /// The executor: run one step against the world. Errors mean "could not, retry later".
    fn run(&mut self, s: &Step) -> Result<(), String> {
        let deleting = self.deletion;
        match s {
            Step::EnsureDedicatedCluster { cluster } => {
                let c = self.cluster_mut(cluster.kind);
                if !c.exists {
                    c.exists = true;
                    c.ready = false;
                    c.answers = true;
                }
                Ok(())
            }
            Step::EnsureTenant { cluster, writable } => {
                let c = self.cluster_mut(cluster.kind);
                if !c.reachable() {
                    return Err("unreachable".into());
                }
                let t = c.tenant.get_or_insert_with(SimTenant::new);
                t.access = if *writable {
                    Access::ReadWrite
                } else {
                    Access::ReadOnly
                };
                Ok(())
            }
            Step::CopyTransfers { .. } | Step::StopTransfers { .. } => Ok(()),
            Step::CloseSubscribers { cluster, .. } => {
                let c = self.cluster(cluster.kind);
                if !c.exists || c.tenant.is_none() {
                    return Ok(());
                }
                if !c.reachable() {
                    return Err("unreachable".into());
                }
                if self.subscriber == Some(cluster.kind) {
                    // What was published there shortly before may still be on its way into the
                    // subscriber's queue, which goes with its connection.
                    let settle = tiermq_operator::controller::plan::SUBSCRIBER_SETTLE;
                    if self.last_publish[slot(cluster.kind)]
                        .is_some_and(|at| self.now - at < settle)
                    {
                        self.violation(format!(
                            "(e) the subscriber on {:?} was closed right after a publish there",
                            cluster.kind
                        ));
                    }
                    self.subscriber = None;
                }
                Ok(())
            }
            Step::CloseConsumers { cluster, .. } => {
                let c = self.cluster(cluster.kind);
                if c.exists && c.tenant.is_some() && !c.reachable() {
                    return Err("unreachable".into());
                }
                Ok(())
            }
            Step::CopyTopology { from, to, .. } => {
                let src = self.cluster(from.kind);
                if !src.reachable() {
                    return Err("source unreachable".into());
                }
                let topo = src
                    .tenant
                    .as_ref()
                    .ok_or("no source tenant")?
                    .topology
                    .clone();
                let dst = self.cluster_mut(to.kind);
                if !dst.reachable() {
                    return Err("destination unreachable".into());
                }
                dst.tenant
                    .as_mut()
                    .ok_or("no destination tenant")?
                    .topology
                    .extend(topo);
                Ok(())
            }
            Step::RouteService { to } => {
                self.routes = to.clone();
                Ok(())
            }
            Step::DisableFederation {
                source,
                destination,
            } => {
                for k in [source.kind, destination.kind] {
                    let c = self.cluster_mut(k);
                    if !c.exists || c.tenant.is_none() {
                        continue;
                    }
                    if !c.reachable() {
                        return Err("unreachable".into());
                    }
                    c.tenant.as_mut().unwrap().federated = false;
                }
                Ok(())
            }
            Step::FreezeSource { cluster } => self.set_access(cluster.kind, Access::ReadOnly),
            Step::RestoreWrites { cluster } => self.set_access(cluster.kind, Access::ReadWrite),
            Step::RevokeAll { cluster } => {
                let holding = self
                    .cluster(cluster.kind)
                    .tenant
                    .as_ref()
                    .map_or(0, |t| t.messages);
                let r = self.set_access(cluster.kind, Access::None);
                if r.is_ok() && holding > 0 && !deleting {
                    self.violation(format!(
                        "(b) read access revoked on {:?} while it holds {holding} messages",
                        cluster.kind
                    ));
                }
                r
            }
            Step::StartShovels { from, to } => {
                let c = self.cluster_mut(from.kind);
                if !c.exists {
                    return Ok(());
                }
                if !c.reachable() {
                    return Err("unreachable".into());
                }
                if let Some(t) = c.tenant.as_mut() {
                    t.shovel_to = Some(to.kind);
                }
                Ok(())
            }
            Step::StopShovels { from } => {
                let c = self.cluster_mut(from.kind);
                if !c.exists || c.tenant.is_none() {
                    return Ok(());
                }
                if !c.reachable() {
                    return Err("unreachable".into());
                }
                c.tenant.as_mut().unwrap().shovel_to = None;
                Ok(())
            }
            Step::CloseConnections { cluster, .. } => {
                let c = self.cluster_mut(cluster.kind);
                if !c.exists || c.tenant.is_none() {
                    return Ok(());
                }
                if !c.reachable() {
                    return Err("unreachable".into());
                }
                c.tenant.as_mut().unwrap().connections = 0;
                if self.subscriber == Some(cluster.kind) {
                    self.subscriber = None;
                }
                Ok(())
            }
            Step::DeleteTenant { cluster } => {
                let c = self.cluster_mut(cluster.kind);
                if !c.exists || c.tenant.is_none() {
                    return Ok(());
                }
                if !c.reachable() {
                    return Err("unreachable".into());
                }
                // Like the real executor: refused while connections are open (one could hold
                // messages unacknowledged), and the queues themselves are asked before the
                // vhost goes: a retirement that would lose a message is refused.
                if c.tenant.as_ref().is_some_and(|t| t.connections > 0) {
                    return Err("refused: connections are open".into());
                }
                if c.tenant.as_ref().is_some_and(|t| t.messages > 0) {
                    self.retire_refusals += 1;
                    return Err("refused: the queues still hold messages".into());
                }
                if self.subscriber == Some(cluster.kind) {
                    self.subscriber = None;
                }
                let c = self.cluster_mut(cluster.kind);
                let n = c.tenant.take().unwrap().messages;
                c.samples.clear();
                c.shown = None;
                c.emitted = None;
                self.lose(cluster.kind, n, deleting);
                Ok(())
            }
            Step::DiscardTenant { cluster } => {
                let c = self.cluster_mut(cluster.kind);
                if !c.exists || c.tenant.is_none() {
                    return Ok(());
                }
                if !c.reachable() {
                    return Err("unreachable".into());
                }
                let n = c.tenant.take().unwrap().messages;
                c.samples.clear();
                c.shown = None;
                c.emitted = None;
                if self.subscriber == Some(cluster.kind) {
                    self.subscriber = None;
                }
                self.lose(cluster.kind, n, deleting);
                Ok(())
            }
            Step::DeleteDedicatedCluster { cluster } => {
                if self.subscriber == Some(cluster.kind) {
                    self.subscriber = None;
                }
                let c = self.cluster_mut(cluster.kind);
                let n = c.tenant.take().map_or(0, |t| t.messages);
                c.exists = false;
                c.ready = false;
                c.samples.clear();
                c.shown = None;
                c.emitted = None;
                self.lose(cluster.kind, n, deleting);
                Ok(())
            }
            Step::RemoveFinalizer => {
                self.finalizer = false;
                Ok(())
            }
            Step::SetTier { tier } => {
                if self.spec.tier != *tier {
                    self.spec.tier = *tier;
                    self.generation += 1;
                }
                Ok(())
            }
        }
    }

    fn lose(&mut self, kind: ClusterKind, n: i64, deleting: bool) {
        if n == 0 {
            return;
        }
        if deleting {
            self.discarded_on_delete += n;
        } else {
            self.violation(format!(
                "(c) broker state on {kind:?} deleted while it held {n} messages"
            ));
        }
    }

    pub fn set_access(&mut self, kind: ClusterKind, a: Access) -> Result<(), String> {
        let c = self.cluster_mut(kind);
        if !c.exists || c.tenant.is_none() {
            return Ok(());
        }
        if !c.reachable() {
            return Err("unreachable".into());
        }
        c.tenant.as_mut().unwrap().access = a;
        Ok(())
    }

    /// Everything healthy and cooperative: clusters up, consumers drain every readable tenant,
    /// statistics fresh. Reconcile until stable at `spec.tier` (or `max` rounds).
    pub fn settle(&mut self, max: usize) -> bool {
        for _ in 0..max {
            for k in [ClusterKind::Shared, ClusterKind::Dedicated] {
                let c = self.cluster_mut(k);
                if c.exists {
                    c.ready = true;
                    c.answers = true;
                }
                c.full = false;
                self.consume(k, i64::MAX);
            }
            // A flip waiting for its maintenance window: time passes until the window opens.
            let opens = self
                .status
                .next_maintenance_window
                .as_ref()
                .map(tiermq_operator::controller::plan::from_time);
            if let Some(opens) = opens.filter(|t| *t > self.now) {
                self.tick((opens - self.now).num_seconds());
            }
            self.tick(20);
            for k in [ClusterKind::Shared, ClusterKind::Dedicated] {
                self.sample_lagging(k);
            }
            self.reconcile();
            if !self.finalizer {
                return true;
            }
            if self.phase() == MigrationPhase::Stable && self.status.tier == Some(self.spec.tier) {
                return true;
            }
        }
        false
    }

    /// The zero-loss balance: everything confirmed was consumed or is still stored, or was
    /// discarded because the user deleted the instance.
    pub fn balance_ok(&self) -> bool {
        self.published == self.consumed + self.stored() + self.discarded_on_delete
    }
}

/// Index of a cluster kind in per-cluster arrays.
pub fn slot(kind: ClusterKind) -> usize {
    match kind {
        ClusterKind::Shared => 0,
        ClusterKind::Dedicated => 1,
    }
}

/// The plan's `ConversionBlocked` condition: (status, reason, message).
pub fn blocked(p: &Plan) -> (String, String, String) {
    let c = p
        .condition(tiermq_crd::conditions::CONVERSION_BLOCKED)
        .unwrap();
    (c.status.clone(), c.reason.clone(), c.message.clone())
}
