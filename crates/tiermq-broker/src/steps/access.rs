use crate::client::ManagementClient;
use crate::error::{BrokerError, ErrorKind};
use crate::model::{ALLOW_ALL, DENY_ALL, Permissions};

/// Sets only the write pattern of the user's existing permissions; the other two stay.
async fn set_write(
    client: &ManagementClient,
    vhost: &str,
    user: &str,
    write: &str,
    op: &str,
) -> Result<Permissions, BrokerError> {
    let mut perms = client.get_permissions(vhost, user).await?.ok_or_else(|| {
        client.error(
            op,
            ErrorKind::Refused {
                reason: format!(
                    "user {user:?} has no permissions on vhost {vhost:?}; ensure the tenant first"
                ),
            },
        )
    })?;
    if perms.write != write {
        perms.write = write.into();
        client.put_permissions(vhost, user, &perms).await?;
    }
    Ok(perms)
}

/// Single-write: the user can no longer publish on `vhost` (`write: "^$"`), but keeps reading and
/// configuring, so consumers drain the source and may redeclare their queues. Returns the
/// permissions now in place.
///
/// When it takes effect (RabbitMQ 3.10, checked in `tests/rabbit_steps.rs`): at once for new
/// channels and for channels that have been idle; a channel caches its permission checks until
/// it idles (hibernates, after about 1–10 s without traffic), so a publisher that keeps
/// publishing without pause keeps succeeding until it pauses. Its messages still land in the
/// source and hold up the drain (nothing is lost); to cut such publishers off at once, close the
/// user's connections ([`super::close_connections`]) as the connection policy allows.
pub async fn revoke_writes(
    client: &ManagementClient,
    vhost: &str,
    user: &str,
) -> Result<Permissions, BrokerError> {
    let op = format!("revoke writes of user {user:?} on vhost {vhost:?}");
    set_write(client, vhost, user, DENY_ALL, &op).await
}

/// Undoes [`revoke_writes`] (an aborted migration makes the source the sole cluster again).
pub async fn restore_writes(
    client: &ManagementClient,
    vhost: &str,
    user: &str,
) -> Result<Permissions, BrokerError> {
    let op = format!("restore writes of user {user:?} on vhost {vhost:?}");
    set_write(client, vhost, user, ALLOW_ALL, &op).await
}

/// Destination only: the user can neither read, write nor configure on `vhost`. Open channels
/// fail at their next operation; the vhost and its contents stay until retired.
/// A user or vhost that no longer exists has nothing left to revoke.
pub async fn revoke_all(
    client: &ManagementClient,
    vhost: &str,
    user: &str,
) -> Result<Permissions, BrokerError> {
    let perms = Permissions::none();
    if client.get_user(user).await?.is_some() && client.get_vhost(vhost).await?.is_some() {
        client.put_permissions(vhost, user, &perms).await?;
    }
    Ok(perms)
}
