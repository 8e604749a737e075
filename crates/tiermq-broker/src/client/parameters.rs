//! Policies, runtime parameters, shovels and federation upstreams.

use reqwest::Method;
use serde_json::Value;

use super::{Call, ManagementClient};
use crate::encode::segment;
use crate::error::BrokerError;
use crate::model::*;
use crate::secret::Secret;

impl ManagementClient {
    // ---- policies and parameters ----

    /// The vhost's user policies.
    pub async fn list_policies(&self, vhost: &str) -> Result<Vec<Policy>, BrokerError> {
        let op = format!("list policies of vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        self.get_json(Call::new(
            Method::GET,
            op,
            format!("policies/{}", segment(vhost)),
        ))
        .await
    }

    /// Creates the policy or replaces the one of the same name.
    pub async fn put_policy(&self, vhost: &str, policy: &Policy) -> Result<(), BrokerError> {
        let op = format!("set policy {:?} in vhost {vhost:?}", policy.name);
        self.check(&op, "vhost", vhost)?;
        self.check(&op, "policy", &policy.name)?;
        let path = format!("policies/{}/{}", segment(vhost), segment(&policy.name));
        let body = serde_json::json!({
            "pattern": policy.pattern,
            "apply-to": policy.apply_to,
            "definition": policy.definition,
            "priority": policy.priority,
        });
        self.send_empty(Call::new(Method::PUT, op, path).body(body))
            .await
    }

    /// Deletes the policy. `false` if it was already gone.
    pub async fn delete_policy(&self, vhost: &str, name: &str) -> Result<bool, BrokerError> {
        let op = format!("delete policy {name:?} in vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        self.check(&op, "policy", name)?;
        let path = format!("policies/{}/{}", segment(vhost), segment(name));
        self.delete_idempotent(Call::new(Method::DELETE, op, path))
            .await
    }

    /// The vhost's runtime parameters of one component (`shovel`, `federation-upstream`, …).
    pub async fn list_parameters(
        &self,
        component: &str,
        vhost: &str,
    ) -> Result<Vec<Parameter>, BrokerError> {
        let op = format!("list {component} parameters of vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        let path = format!("parameters/{}/{}", segment(component), segment(vhost));
        self.get_json(Call::new(Method::GET, op, path)).await
    }

    async fn put_parameter(
        &self,
        component: &str,
        vhost: &str,
        name: &str,
        value: Value,
        secret: &Secret,
    ) -> Result<(), BrokerError> {
        let op = format!("set {component} {name:?} in vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        self.check(&op, component, name)?;
        let path = format!(
            "parameters/{}/{}/{}",
            segment(component),
            segment(vhost),
            segment(name)
        );
        let call = Call::new(Method::PUT, op, path)
            .body(serde_json::json!({"value": value}))
            .secret(secret);
        self.send_empty(call).await
    }

    pub(crate) async fn delete_parameter(
        &self,
        component: &str,
        vhost: &str,
        name: &str,
    ) -> Result<bool, BrokerError> {
        let op = format!("delete {component} {name:?} in vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        self.check(&op, component, name)?;
        let path = format!(
            "parameters/{}/{}/{}",
            segment(component),
            segment(vhost),
            segment(name)
        );
        self.delete_idempotent(Call::new(Method::DELETE, op, path))
            .await
    }

    // ---- shovels ----

    /// Declares a dynamic shovel. Its URIs are secrets: they are scrubbed from any error text.
    pub async fn put_shovel(
        &self,
        vhost: &str,
        name: &str,
        spec: &ShovelSpec,
    ) -> Result<(), BrokerError> {
        let op_value = spec.to_json();
        let op = format!("set shovel {name:?} in vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        self.check(&op, "shovel", name)?;
        let path = format!("parameters/shovel/{}/{}", segment(vhost), segment(name));
        let call = Call::new(Method::PUT, op, path)
            .body(serde_json::json!({"value": op_value}))
            .secret(&spec.src_uri)
            .secret(&spec.dest_uri);
        self.send_empty(call).await
    }

    /// The vhost's shovel definitions (values hold URIs with credentials).
    pub async fn list_shovels(&self, vhost: &str) -> Result<Vec<Parameter>, BrokerError> {
        self.list_parameters("shovel", vhost).await
    }

    /// Runtime status of the vhost's shovels (a shovel that deleted itself is absent).
    pub async fn shovel_status(&self, vhost: &str) -> Result<Vec<ShovelStatus>, BrokerError> {
        let op = format!("read shovel status of vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        self.get_json(Call::new(
            Method::GET,
            op,
            format!("shovels/{}", segment(vhost)),
        ))
        .await
    }

    /// Deletes the shovel; a running transfer stops. `false` if it was already gone.
    pub async fn delete_shovel(&self, vhost: &str, name: &str) -> Result<bool, BrokerError> {
        self.delete_parameter("shovel", vhost, name).await
    }

    // ---- federation ----

    /// Creates the federation upstream or replaces the one of the same name. Its URI is a
    /// secret: it is scrubbed from any error text.
    pub async fn put_federation_upstream(
        &self,
        vhost: &str,
        name: &str,
        upstream: &FederationUpstream,
    ) -> Result<(), BrokerError> {
        self.put_parameter(
            "federation-upstream",
            vhost,
            name,
            upstream.to_json(),
            &upstream.uri,
        )
        .await
    }

    /// The vhost's federation upstream definitions (values hold URIs with credentials).
    pub async fn list_federation_upstreams(
        &self,
        vhost: &str,
    ) -> Result<Vec<Parameter>, BrokerError> {
        self.list_parameters("federation-upstream", vhost).await
    }

    /// Deletes the federation upstream. `false` if it was already gone.
    pub async fn delete_federation_upstream(
        &self,
        vhost: &str,
        name: &str,
    ) -> Result<bool, BrokerError> {
        self.delete_parameter("federation-upstream", vhost, name)
            .await
    }
}
