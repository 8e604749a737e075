use crate::client::ManagementClient;
use crate::error::{BrokerError, ErrorKind};
use crate::model::Permissions;

/// Sets the user's permissions on `vhost` to exactly `perms`, when the user has any there.
async fn set_exactly(
    client: &ManagementClient,
    vhost: &str,
    user: &str,
    perms: Permissions,
    op: &str,
) -> Result<Permissions, BrokerError> {
    let current = client.get_permissions(vhost, user).await?.ok_or_else(|| {
        client.error(
            op,
            ErrorKind::Refused {
                reason: format!(
                    "user {user:?} has no permissions on vhost {vhost:?}; ensure the tenant first"
                ),
            },
        )
    })?;
    if current != perms {
        client.put_permissions(vhost, user, &perms).await?;
    }
    Ok(perms)
}

/// Single-write: the user can no longer publish on `vhost` or change its topology
/// (`configure` and `write` are `^$`), but reads, so consumers drain it. The exact read-only
/// triple is set whatever was there, so this also gives read access back after
/// [`revoke_all`]. Returns the permissions now in place.
///
/// When it takes effect (RabbitMQ 3.10, checked in `tests/rabbit_steps.rs`): at once for new
/// channels and for channels that have been idle; a channel caches its permission checks until
/// it idles (hibernates, after about 1–10 s without traffic), so a publisher that keeps
/// publishing without pause keeps succeeding until it pauses. Its messages still land in the
/// source and hold up the drain (nothing is lost); to cut such publishers off at once, close
/// them ([`super::close_named`] with [`super::Clients::publishers_only`]).
pub async fn revoke_writes(
    client: &ManagementClient,
    vhost: &str,
    user: &str,
) -> Result<Permissions, BrokerError> {
    let op = format!("revoke writes of user {user:?} on vhost {vhost:?}");
    set_exactly(client, vhost, user, Permissions::read_only(), &op).await
}

/// Full permissions again (the source of an aborted conversion, or a destination at the end of
/// the cutover).
pub async fn restore_writes(
    client: &ManagementClient,
    vhost: &str,
    user: &str,
) -> Result<Permissions, BrokerError> {
    let op = format!("restore writes of user {user:?} on vhost {vhost:?}");
    set_exactly(client, vhost, user, Permissions::full(), &op).await
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
