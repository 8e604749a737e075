//! Feature flags: RabbitMQ's switches for changes that every node of a cluster must understand
//! before they are used (new storage formats, new internal protocols). A node refuses to start
//! when a flag that its release requires is still disabled in the cluster, so an in-place upgrade
//! enables every stable flag first, on the old release (RabbitMQ's upgrade guide says so; 3.11
//! and later require every flag of the previous minor).
//!
//! The management API lists them (`GET /api/feature-flags`, RabbitMQ 3.8 and later) and enables
//! one at a time (`PUT /api/feature-flags/<name>/enable`, 204 once enabled); checked against the
//! 3.10 and 4.0 brokers the tests start.

use reqwest::Method;

use super::{Call, ManagementClient};
use crate::encode::segment;
use crate::error::BrokerError;
use crate::model::FeatureFlag;

impl ManagementClient {
    /// Every feature flag the cluster knows, with its state and stability
    /// (`GET /api/feature-flags`).
    pub async fn list_feature_flags(&self) -> Result<Vec<FeatureFlag>, BrokerError> {
        self.get_json(Call::new(
            Method::GET,
            "list feature flags",
            "feature-flags".into(),
        ))
        .await
    }

    /// Enables one feature flag cluster-wide (`PUT /api/feature-flags/<name>/enable`); enabling
    /// an enabled flag is a no-op.
    pub async fn enable_feature_flag(&self, name: &str) -> Result<(), BrokerError> {
        let call = Call::new(
            Method::PUT,
            format!("enable feature flag {name:?}"),
            format!("feature-flags/{}/enable", segment(name)),
        )
        .body(serde_json::json!({}));
        self.send_empty(call).await
    }

    /// Enables every stable feature flag that is disabled — what an in-place upgrade to the next
    /// minor needs first — and returns their names. Experimental flags are left alone (they may
    /// not be enabled safely); a flag some node cannot enable (`unavailable`) is left too, and the
    /// upgrade's own check reports it. Fails at the first flag the broker refuses.
    pub async fn enable_stable_feature_flags(&self) -> Result<Vec<String>, BrokerError> {
        let mut enabled = Vec::new();
        for f in self.list_feature_flags().await? {
            if f.is_stable() && f.state == "disabled" {
                self.enable_feature_flag(&f.name).await?;
                enabled.push(f.name);
            }
        }
        Ok(enabled)
    }
}
