//! Leader election on a `coordination.k8s.io` Lease, so that only one replica reconciles.
//! kube-runtime has no elector of its own; `kube-lease-manager` is a maintained one.

use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;

/// Starts the election; the receiver turns `true` while this replica leads.
pub async fn elect(
    client: kube::Client,
    namespace: &str,
    lease_name: &str,
    identity: &str,
) -> Result<watch::Receiver<bool>, LeaseManagerError> {
    let manager = LeaseManagerBuilder::new(client, lease_name)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(15)
        .with_grace(5)
        .with_field_manager(crate::controller::apply::FIELD_MANAGER)
        .build()
        .await?;
    let (rx, _task) = manager.watch().await;
    Ok(rx)
}
