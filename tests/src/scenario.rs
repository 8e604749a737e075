//! One tier conversion under load, measured: the building block of the e2e tests, the demo and
//! the bench. It flips `spec.tier` with kubectl while a load ([`crate::load::Load`] or a
//! [`crate::load::Workload`] of several patterns) runs through the instance
//! Service, records every `status.migrationPhase` from a watch, and returns what happened.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tiermq_crd::{MigrationOutcome, MigrationPhase, MigrationRecord, RabbitMQInstanceStatus, Tier};

use crate::harness::{PhaseRecorder, World, conversion_sequence, flip_tier};
use crate::load::LoadView;

/// What one conversion looked like from the outside.
#[derive(Clone, Debug)]
pub struct Conversion {
    pub from: Tier,
    pub to: Tier,
    /// Every phase seen from the flip until the next `Stable` (exclusive).
    pub phases: Vec<MigrationPhase>,
    /// Time spent in each phase as seen by the watch.
    pub phase_times: Vec<(MigrationPhase, Duration)>,
    /// Flip until `Stable` again.
    pub duration: Duration,
    /// Since the load started: when the flip happened and when each phase was first seen.
    pub flipped_at: Duration,
    pub phase_seen_at: Vec<(MigrationPhase, Duration)>,
    /// The operator's own record in `status.history`.
    pub record: Option<MigrationRecord>,
    pub final_status: RabbitMQInstanceStatus,
}

impl Conversion {
    pub fn seen_at(&self, phase: MigrationPhase) -> Option<Duration> {
        self.phase_seen_at
            .iter()
            .find(|(p, _)| *p == phase)
            .map(|(_, d)| *d)
    }
}

/// A progress line source for [`convert`]: called about once a second.
pub type Progress<'a> = &'a mut (dyn FnMut(&str) + Send);

/// Flips `ns/name` to `to` and waits (up to `timeout`) until the conversion is recorded in
/// `status.history` and the instance is `Stable` on the new tier. `load` keeps running.
pub async fn convert(
    world: &mut World,
    ns: &str,
    name: &str,
    to: Tier,
    load: &dyn LoadView,
    timeout: Duration,
    progress: Option<Progress<'_>>,
) -> anyhow::Result<Conversion> {
    let before = world.status(ns, name).await?;
    let from = before
        .tier
        .with_context(|| format!("{ns}/{name} has no status.tier yet"))?;
    let history_len = before.history.len();
    let recorder = PhaseRecorder::start(world.instances(ns), name);
    // The watch's first event is the current state; wait for it so nothing is missed.
    let until = Instant::now() + Duration::from_secs(10);
    while recorder.current().is_none() {
        if Instant::now() > until {
            bail!("no watch event for {ns}/{name} within 10s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let flip = Instant::now();
    let flipped_at = load.elapsed();
    flip_tier(&world.kubectl, ns, name, to.as_str()).await?;
    let mut progress = progress;
    let mut last_line = Instant::now() - Duration::from_secs(5);
    let deadline = flip + timeout;
    let status = loop {
        if let Some(op) = world.operator.as_mut() {
            op.tend()?;
        }
        let latest = recorder.latest().unwrap_or_default();
        let done = latest.history.len() > history_len
            && latest.tier == Some(to)
            && matches!(latest.migration_phase, None | Some(MigrationPhase::Stable));
        if let Some(p) = progress.as_mut()
            && (last_line.elapsed() >= Duration::from_secs(1) || done)
        {
            last_line = Instant::now();
            p(&progress_line(flip.elapsed(), &latest, load));
        }
        if done {
            break latest;
        }
        if Instant::now() >= deadline {
            bail!(
                "conversion of {ns}/{name} to {to} did not finish within {timeout:?}; phases seen: {:?}; status: {}\noperator log tail:\n{}",
                recorder.phases(),
                serde_json::to_string(&latest).unwrap_or_default(),
                world.operator_log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let end = Instant::now();
    let changes = recorder.changes();
    let phases = conversion_sequence(&recorder.phases());
    let conv: Vec<_> = changes
        .iter()
        .skip_while(|c| c.phase == MigrationPhase::Stable)
        .collect();
    let mut phase_times = Vec::new();
    for (i, c) in conv.iter().enumerate() {
        if c.phase == MigrationPhase::Stable {
            break;
        }
        let next = conv.get(i + 1).map(|n| n.at).unwrap_or(end);
        phase_times.push((c.phase, next.saturating_duration_since(c.at)));
    }
    let load_start = Instant::now() - load.elapsed();
    let phase_seen_at = conv
        .iter()
        .map(|c| (c.phase, c.at.saturating_duration_since(load_start)))
        .collect();
    Ok(Conversion {
        from,
        to,
        phases,
        phase_times,
        duration: end - flip,
        flipped_at,
        phase_seen_at,
        record: status.history.last().cloned(),
        final_status: status,
    })
}

/// `  12.3s  DrainingSource   backlog 120  eta 4s  | sent 800 confirmed 790 received 700 ...`
pub fn progress_line(t: Duration, s: &RabbitMQInstanceStatus, load: &dyn LoadView) -> String {
    let phase = s.migration_phase.unwrap_or(MigrationPhase::Stable);
    let (backlog, eta) = s
        .migration
        .as_ref()
        .map(|m| {
            (
                m.remaining_messages
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "-".into()),
                m.eta_seconds
                    .map(|e| format!("{e}s"))
                    .unwrap_or_else(|| "-".into()),
            )
        })
        .unwrap_or_else(|| ("-".into(), "-".into()));
    let l = load.stats();
    format!(
        "{:>6.1}s  {:<21} backlog {:>5}  eta {:>4} | sent {:>6} confirmed {:>6} received {:>6} in-flight {:>4} dup {:>3} reconnects {:>3}",
        t.as_secs_f64(),
        phase.as_str(),
        backlog,
        eta,
        l.sent,
        l.confirmed,
        l.received,
        l.unconsumed,
        l.duplicates,
        l.reconnects
    )
}

/// True when the record says the conversion completed.
pub fn completed(c: &Conversion) -> bool {
    c.record
        .as_ref()
        .is_some_and(|r| r.outcome == MigrationOutcome::Completed && r.to == c.to)
}

/// A table row per phase for summaries.
pub fn phase_table(c: &Conversion) -> String {
    c.phase_times
        .iter()
        .map(|(p, d)| format!("{}={:.1}s", p.as_str(), d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Namespace and name of the scenario instance.
pub const NS: &str = "team-a";
pub const NAME: &str = "orders";

/// A world with the operator running, SharedCluster `main` (one broker) and instance
/// `team-a/orders` on `tier`, in service; both clusters run RabbitMQ 3.10.
pub async fn world_with_instance(
    scenario: &str,
    tier: Tier,
    drain_strategy: &str,
    grace_period_seconds: u32,
) -> anyhow::Result<World> {
    world_with_instance_on(
        scenario,
        tier,
        drain_strategy,
        grace_period_seconds,
        crate::harness::IMAGE_3_10,
    )
    .await
}

/// [`world_with_instance`] with both clusters (`main` and the dedicated one) running `image`.
pub async fn world_with_instance_on(
    scenario: &str,
    tier: Tier,
    drain_strategy: &str,
    grace_period_seconds: u32,
    image: &str,
) -> anyhow::Result<World> {
    world_with_instances_on(
        World::start(scenario).await?,
        &[NAME],
        tier,
        drain_strategy,
        grace_period_seconds,
        image,
    )
    .await
}

/// In a started `world`: the operator, SharedCluster `main` (room for 10) and the instances
/// `names` in [`NS`] on `tier`, all clusters running `image`; returns once every instance is
/// Ready.
pub async fn world_with_instances_on(
    world: World,
    names: &[&str],
    tier: Tier,
    drain_strategy: &str,
    grace_period_seconds: u32,
    image: &str,
) -> anyhow::Result<World> {
    world_with_instances_run_with(
        world,
        names,
        tier,
        drain_strategy,
        grace_period_seconds,
        image,
        &[],
    )
    .await
}

/// [`world_with_instances_on`] with `operator_args` added to the operator's command line.
pub async fn world_with_instances_run_with(
    mut world: World,
    names: &[&str],
    tier: Tier,
    drain_strategy: &str,
    grace_period_seconds: u32,
    image: &str,
    operator_args: &[&str],
) -> anyhow::Result<World> {
    world.start_operator(operator_args)?;
    world
        .kubectl
        .apply(&crate::harness::shared_cluster_yaml_with("main", image, 10))
        .await?;
    for name in names {
        let spec = crate::harness::InstanceSpec {
            namespace: NS,
            name,
            tier: tier.as_str(),
            drain_strategy,
            grace_period_seconds,
            connection_policy: None,
        };
        world.kubectl.apply(&spec.yaml_with(image)).await?;
    }
    for name in names {
        world.wait_ready(NS, name, Duration::from_secs(120)).await?;
    }
    Ok(world)
}
