//! Watching an instance's migration phases.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use kube::Api;
use kube::runtime::watcher;
use tiermq_crd::{MigrationPhase, RabbitMQInstance, RabbitMQInstanceStatus};

/// Phases of a complete conversion, in order.
pub const CONVERSION_PHASES: [MigrationPhase; 6] = [
    MigrationPhase::PreparingDestination,
    MigrationPhase::DualWriteDualRead,
    MigrationPhase::SingleWriteDualRead,
    MigrationPhase::DrainingSource,
    MigrationPhase::DestinationOnly,
    MigrationPhase::Completed,
];

/// One observed change of `status.migrationPhase`.
#[derive(Clone, Debug)]
pub struct PhaseChange {
    pub at: Instant,
    pub phase: MigrationPhase,
    pub remaining: Option<i64>,
}

/// Records every `status.migrationPhase` an instance passes through (from a watch, so no
/// intermediate write is missed) together with the latest status.
pub struct PhaseRecorder {
    changes: Arc<Mutex<Vec<PhaseChange>>>,
    latest: Arc<Mutex<Option<RabbitMQInstanceStatus>>>,
    task: tokio::task::JoinHandle<()>,
}

impl PhaseRecorder {
    pub fn start(api: Api<RabbitMQInstance>, name: &str) -> Self {
        let changes: Arc<Mutex<Vec<PhaseChange>>> = Arc::default();
        let latest: Arc<Mutex<Option<RabbitMQInstanceStatus>>> = Arc::default();
        let (c, l) = (changes.clone(), latest.clone());
        let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let task = tokio::spawn(async move {
            let mut stream = watcher::watcher(api, cfg).boxed();
            while let Some(ev) = stream.next().await {
                let objs = match ev {
                    Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => vec![o],
                    _ => continue,
                };
                for o in objs {
                    let status = o.status.clone().unwrap_or_default();
                    let phase = status.migration_phase.unwrap_or(MigrationPhase::Stable);
                    let remaining = status.migration.as_ref().and_then(|m| m.remaining_messages);
                    {
                        let mut v = c.lock().unwrap();
                        if v.last().map(|p| p.phase) != Some(phase) {
                            v.push(PhaseChange {
                                at: Instant::now(),
                                phase,
                                remaining,
                            });
                        }
                    }
                    *l.lock().unwrap() = Some(status);
                }
            }
        });
        PhaseRecorder {
            changes,
            latest,
            task,
        }
    }

    pub fn changes(&self) -> Vec<PhaseChange> {
        self.changes.lock().unwrap().clone()
    }

    pub fn phases(&self) -> Vec<MigrationPhase> {
        self.changes().iter().map(|c| c.phase).collect()
    }

    pub fn latest(&self) -> Option<RabbitMQInstanceStatus> {
        self.latest.lock().unwrap().clone()
    }

    /// The phase now (as last seen).
    pub fn current(&self) -> Option<MigrationPhase> {
        self.changes.lock().unwrap().last().map(|c| c.phase)
    }

    /// When `phase` was first seen.
    pub fn first_seen(&self, phase: MigrationPhase) -> Option<Instant> {
        self.changes
            .lock()
            .unwrap()
            .iter()
            .find(|c| c.phase == phase)
            .map(|c| c.at)
    }

    /// Forget what was recorded (before the next conversion).
    pub fn reset(&self) {
        self.changes.lock().unwrap().clear();
    }
}

impl Drop for PhaseRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The phases of one conversion as seen: everything from the first non-Stable phase up to the
/// first Stable after it.
pub fn conversion_sequence(phases: &[MigrationPhase]) -> Vec<MigrationPhase> {
    phases
        .iter()
        .copied()
        .skip_while(|p| *p == MigrationPhase::Stable)
        .take_while(|p| *p != MigrationPhase::Stable)
        .collect()
}

/// `seq` with the one documented step back removed: from `DestinationOnly` the operator returns to
/// `DrainingSource` when a fresh sample finds messages on the source again (a publisher whose
/// channel still had write access cached), so `DrainingSource, DestinationOnly` may repeat.
pub fn collapse_drain_retries(seq: &[MigrationPhase]) -> Vec<MigrationPhase> {
    let mut out: Vec<MigrationPhase> = Vec::with_capacity(seq.len());
    for &p in seq {
        if p == MigrationPhase::DrainingSource
            && out.last() == Some(&MigrationPhase::DestinationOnly)
        {
            out.pop();
            continue;
        }
        if out.last() == Some(&p) {
            continue;
        }
        out.push(p);
    }
    out
}

/// Resolves (true) the first time the instance `name` is seen in any of `phases` (from a watch,
/// so a short phase is not missed); false when the watch ends first. Fault tests use it to act
/// at a given moment of a conversion.
pub async fn reached_phase(
    api: Api<RabbitMQInstance>,
    name: &str,
    phases: &[MigrationPhase],
) -> bool {
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher::watcher(api, cfg).boxed();
    while let Some(ev) = stream.next().await {
        if let Ok(watcher::Event::Apply(i) | watcher::Event::InitApply(i)) = ev
            && i.status
                .and_then(|s| s.migration_phase)
                .is_some_and(|p| phases.contains(&p))
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use MigrationPhase::*;

    #[test]
    fn drain_retries_collapse_but_other_disorder_stays() {
        let seq = [
            PreparingDestination,
            DualWriteDualRead,
            SingleWriteDualRead,
            DrainingSource,
            DestinationOnly,
            DrainingSource,
            DestinationOnly,
            Completed,
        ];
        assert_eq!(collapse_drain_retries(&seq), CONVERSION_PHASES);
        let bad = [PreparingDestination, SingleWriteDualRead, DualWriteDualRead];
        assert_eq!(collapse_drain_retries(&bad), bad);
        assert_ne!(
            collapse_drain_retries(&[
                PreparingDestination,
                DrainingSource,
                DestinationOnly,
                Completed
            ]),
            CONVERSION_PHASES
        );
    }
}
