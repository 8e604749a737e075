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
/// `None` is removed).
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
    client.put_vhost(&tenant.vhost).await?;
    client.put_user(&tenant.user, &tenant.password, &[]).await?;
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
    }
    client
        .set_vhost_limit(
            &tenant.vhost,
            "max-connections",
            tenant.limits.max_connections,
        )
        .await?;
    client
        .set_vhost_limit(&tenant.vhost, "max-queues", tenant.limits.max_queues)
        .await?;
    tracing::info!(cluster = client.cluster(), vhost = %tenant.vhost, user = %tenant.user, "tenant ensured");
    Ok(())
}
