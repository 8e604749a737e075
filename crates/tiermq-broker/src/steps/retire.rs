use super::backlog::{DrainCriteria, DrainProgress, measure_backlog};
use super::live::live_counts;
use crate::client::ManagementClient;
use crate::error::{BrokerError, ErrorKind};
use crate::model::DENY_ALL;

/// How [`retire_tenant`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetireOutcome {
    /// The vhost and user were deleted now.
    Retired,
    /// Nothing was left to delete (a rerun after a crash, or never created).
    AlreadyGone,
}

/// Deletes the tenant's vhost (with its queues) and user from a source cluster — only when that
/// cannot lose a message. Refuses, changing nothing, while:
/// - the user may still publish on the vhost (revoke writes first, so nothing arrives between
///   the check and the delete), or
/// - the vhost is not drained by `criteria` (consecutive spaced empty readings; this waits for
///   them, about `min_spacing × (required_samples − 1)`), or
/// - any queue, asked directly ([`super::live_counts`]: not the lagging statistics), holds a
///   ready message or cannot be asked. Close the vhost's connections first, so messages held
///   unacknowledged are back in their queues where this sees them.
pub async fn retire_tenant(
    client: &ManagementClient,
    vhost: &str,
    user: &str,
    criteria: &DrainCriteria,
) -> Result<RetireOutcome, BrokerError> {
    let op = format!("retire tenant vhost {vhost:?} user {user:?}");
    if client.get_vhost(vhost).await?.is_none() {
        let deleted_user = client.delete_user(user).await?;
        return Ok(if deleted_user {
            RetireOutcome::Retired
        } else {
            RetireOutcome::AlreadyGone
        });
    }
    if let Some(perms) = client.get_permissions(vhost, user).await?
        && perms.write != DENY_ALL
    {
        return Err(client.error(
            op,
            ErrorKind::Refused {
                reason: format!(
                    "user {user:?} can still publish on the vhost; revoke its writes first"
                ),
            },
        ));
    }
    let mut progress = DrainProgress::default();
    for reading in 0..criteria.required_samples {
        if reading > 0 {
            tokio::time::sleep(criteria.min_spacing).await;
        }
        let backlog = measure_backlog(client, vhost).await?;
        progress = progress.observe(&backlog, criteria);
        if !backlog.is_empty() {
            let holding: Vec<String> = backlog
                .queues
                .iter()
                .filter(|q| q.remaining() > 0)
                .take(5)
                .map(|q| format!("{} ({})", q.name, q.remaining()))
                .collect();
            let unknown: Vec<&str> = backlog
                .queues
                .iter()
                .filter(|q| !q.stats_known)
                .take(5)
                .map(|q| q.name.as_str())
                .collect();
            let mut reason = format!(
                "the vhost still holds {} messages ({} ready, {} unacknowledged, {} delayed)",
                backlog.remaining(),
                backlog.total_ready,
                backlog.total_unacked,
                backlog.delayed
            );
            if !holding.is_empty() {
                reason.push_str(&format!(" in: {}", holding.join(", ")));
            }
            if !unknown.is_empty() {
                reason.push_str(&format!(
                    "; no statistics yet (counts unknown) for: {}",
                    unknown.join(", ")
                ));
            }
            return Err(client.error(op, ErrorKind::Refused { reason }));
        }
    }
    debug_assert!(progress.drained(criteria));
    let names: Vec<String> = client
        .list_queues(vhost)
        .await?
        .into_iter()
        .map(|q| q.name)
        .collect();
    let live = live_counts(client, vhost, &names).await?;
    let holding: Vec<String> = live
        .iter()
        .filter(|q| q.ready != Some(0))
        .take(5)
        .map(|q| match q.ready {
            Some(n) => format!("{} ({n} ready)", q.name),
            None => format!("{} (exclusive to a live connection)", q.name),
        })
        .collect();
    if !holding.is_empty() {
        let reason = format!(
            "the statistics show the vhost empty, but its queues hold messages now: {}",
            holding.join(", ")
        );
        return Err(client.error(op, ErrorKind::Refused { reason }));
    }
    client.delete_vhost(vhost).await?;
    client.delete_user(user).await?;
    tracing::info!(cluster = client.cluster(), vhost, user, "tenant retired");
    Ok(RetireOutcome::Retired)
}
