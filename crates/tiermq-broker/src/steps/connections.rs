use crate::client::ManagementClient;
use crate::error::BrokerError;

/// Closes the client connections of `vhost` (only those of `user` when given), each with
/// `reason`, which the client receives as `CONNECTION_FORCED - <reason>`. Connections that closed
/// in the meantime are skipped. Returns how many were closed; 0 once none are left.
pub async fn close_connections(
    client: &ManagementClient,
    vhost: &str,
    user: Option<&str>,
    reason: &str,
) -> Result<usize, BrokerError> {
    let mut closed = 0;
    for c in client.list_connections(vhost).await? {
        if user.is_some_and(|u| c.user.as_deref() != Some(u)) {
            continue;
        }
        if client.close_connection(&c.name, reason).await? {
            closed += 1;
        }
    }
    tracing::info!(
        cluster = client.cluster(),
        vhost,
        closed,
        reason,
        "closed client connections"
    );
    Ok(closed)
}
