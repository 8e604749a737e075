use crate::client::ManagementClient;
use crate::error::BrokerError;
use crate::model::{Permissions, VhostLimits};
use crate::secret::Secret;

/// A tenant on a cluster: its vhost, its user and the limits it runs under. The password is given,
/// not made here: an instance keeps the same credentials on every tier (generate it once with
/// [`crate::generate_password`] and keep it in the instance's Secret).
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub vhost: String,
    pub user: String,
    pub password: Secret,
    pub limits: VhostLimits,
}

/// Creates or updates the tenant: vhost, user (password set, no management tags), full
/// permissions on its own vhost and nothing else, and exactly the given limits (a limit set to
/// `None` is removed).
///
/// Do not call this on a source whose writes were revoked: it grants full permissions again.
pub async fn ensure_tenant(client: &ManagementClient, tenant: &Tenant) -> Result<(), BrokerError> {
    client.put_vhost(&tenant.vhost).await?;
    client.put_user(&tenant.user, &tenant.password, &[]).await?;
    client
        .put_permissions(&tenant.vhost, &tenant.user, &Permissions::full())
        .await?;
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
