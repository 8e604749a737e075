use crate::client::ManagementClient;
use crate::error::BrokerError;
use crate::model::{Permissions, VhostLimits};
use crate::secret::Secret;

/// A tenant on a cluster: its vhost, its user and the limits it runs under. The password is given,
/// not made here: an instance keeps the same credentials on every tier (generate it once with
/// [`crate::generate_password`] and keep it in the instance's Secret).
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    /// The vhost, `<namespace>.<instance>` for an instance.
    pub vhost: String,
    /// The user clients log in as.
    pub user: String,
    /// The user's password.
    pub password: Secret,
    /// The vhost limits to enforce.
    pub limits: VhostLimits,
}

/// Creates or updates the tenant: vhost, user (password set, no management tags), full
/// permissions on its own vhost and nothing else, and exactly the given limits (a limit set to
/// `None` is removed). Reads first and writes only what differs, so a tenant already in shape
/// costs GETs only (the operator calls this on every reconcile of a steady instance).
///
/// Do not call this on a source whose writes were revoked: it grants full permissions again.
pub async fn ensure_tenant(client: &ManagementClient, tenant: &Tenant) -> Result<(), BrokerError> {
    ensure_tenant_with(client, tenant, &Permissions::full()).await
}

/// [`ensure_tenant`] with the given permissions for the tenant's user, e.g.
/// [`Permissions::read_only`] on a conversion's destination until its write cutover. The cluster's
/// administrator (the client's user) also gets full permissions on the vhost, so it can read live
/// queue counts there ([`super::live_counts`]).
pub async fn ensure_tenant_with(
    client: &ManagementClient,
    tenant: &Tenant,
    perms: &Permissions,
) -> Result<(), BrokerError> {
    let mut wrote = false;
    if client.get_vhost(&tenant.vhost).await?.is_none() {
        client.put_vhost(&tenant.vhost).await?;
        wrote = true;
    }
    // The password is checked against the stored hash; an unknown hash scheme is rewritten.
    let user_ok = client.get_user(&tenant.user).await?.is_some_and(|u| {
        u.tags.is_empty() && u.password_is(tenant.password.expose()) == Some(true)
    });
    if !user_ok {
        client.put_user(&tenant.user, &tenant.password, &[]).await?;
        wrote = true;
    }
    let admin = client.endpoint().username.clone();
    if admin != tenant.user
        && client
            .get_permissions(&tenant.vhost, &admin)
            .await?
            .as_ref()
            != Some(&Permissions::full())
    {
        client
            .put_permissions(&tenant.vhost, &admin, &Permissions::full())
            .await?;
        wrote = true;
    }
    if client
        .get_permissions(&tenant.vhost, &tenant.user)
        .await?
        .as_ref()
        != Some(perms)
    {
        client
            .put_permissions(&tenant.vhost, &tenant.user, perms)
            .await?;
        wrote = true;
    }
    let limits = client.get_vhost_limits(&tenant.vhost).await?;
    if limits.max_connections != tenant.limits.max_connections {
        client
            .set_vhost_limit(
                &tenant.vhost,
                "max-connections",
                tenant.limits.max_connections,
            )
            .await?;
        wrote = true;
    }
    if limits.max_queues != tenant.limits.max_queues {
        client
            .set_vhost_limit(&tenant.vhost, "max-queues", tenant.limits.max_queues)
            .await?;
        wrote = true;
    }
    if wrote {
        tracing::info!(cluster = client.cluster(), vhost = %tenant.vhost, user = %tenant.user, "tenant ensured");
    } else {
        tracing::debug!(cluster = client.cluster(), vhost = %tenant.vhost, "tenant already in shape");
    }
    Ok(())
}
