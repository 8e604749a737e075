//! The tenant's own transfers: dynamic shovels and federation upstreams it defined in its vhost
//! (runtime parameters). They keep moving messages into the vhost whatever the user's
//! permissions say, so a conversion moves them at the write cutover: copied to the destination
//! first (ingestion goes on there), then deleted on the source (nothing more lands there after it
//! was proven drained). Parameters tiermq made itself ([`super::MANAGED_PREFIX`]) are left alone.

use serde_json::Value;

use super::MANAGED_PREFIX;
use crate::client::ManagementClient;
use crate::error::{BrokerError, ErrorKind};
use crate::model::Definitions;

/// The parameter components that transfer messages.
pub const TRANSFER_COMPONENTS: [&str; 2] = ["shovel", "federation-upstream"];

/// The tenant's transfer parameters from a vhost's definitions (pure), without their `vhost`.
pub fn tenant_transfers(defs: &Definitions) -> Vec<Value> {
    defs.parameters
        .iter()
        .filter(|p| {
            let component = p.get("component").and_then(Value::as_str).unwrap_or("");
            let name = p.get("name").and_then(Value::as_str).unwrap_or("");
            TRANSFER_COMPONENTS.contains(&component) && !name.starts_with(MANAGED_PREFIX)
        })
        .map(|p| {
            let mut p = p.clone();
            if let Some(m) = p.as_object_mut() {
                m.remove("vhost");
            }
            p
        })
        .collect()
}

/// `(component, name)` of a parameter document.
fn key(p: &Value) -> (String, String) {
    let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    (s("component"), s("name"))
}

/// Copies the tenant's transfers of `vhost` on `src` to `vhost` on `dst` and checks they
/// arrived. Returns how many there are. Idempotent.
pub async fn copy_transfers(
    src: &ManagementClient,
    dst: &ManagementClient,
    vhost: &str,
) -> Result<usize, BrokerError> {
    let want = tenant_transfers(&src.export_definitions(vhost).await?);
    if want.is_empty() {
        return Ok(0);
    }
    let doc = Definitions {
        parameters: want.clone(),
        ..Default::default()
    };
    dst.import_definitions(vhost, &doc).await?;
    let have = tenant_transfers(&dst.export_definitions(vhost).await?);
    let missing: Vec<String> = want
        .iter()
        .filter(|w| !have.iter().any(|h| key(h) == key(w)))
        .map(|w| format!("{} {:?}", key(w).0, key(w).1))
        .collect();
    if !missing.is_empty() {
        return Err(dst.error(
            format!("verify the tenant's transfers copied into vhost {vhost:?}"),
            ErrorKind::Conflict {
                reason: format!("missing after import: {}", missing.join(", ")),
            },
        ));
    }
    tracing::info!(
        from = src.cluster(),
        to = dst.cluster(),
        vhost,
        count = want.len(),
        "tenant transfers copied"
    );
    Ok(want.len())
}

/// Deletes the tenant's transfers on `vhost` (gone ones are fine). Returns how many were deleted.
pub async fn stop_transfers(client: &ManagementClient, vhost: &str) -> Result<usize, BrokerError> {
    let mut stopped = 0;
    for component in TRANSFER_COMPONENTS {
        for p in client
            .list_parameters(component, vhost)
            .await
            .unwrap_or_default()
        {
            if p.name.starts_with(MANAGED_PREFIX) {
                continue;
            }
            if client.delete_parameter(component, vhost, &p.name).await? {
                stopped += 1;
            }
        }
    }
    if stopped > 0 {
        tracing::info!(
            cluster = client.cluster(),
            vhost,
            stopped,
            "tenant transfers stopped"
        );
    }
    Ok(stopped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_tenants_own_transfers_are_taken() {
        let defs: Definitions = serde_json::from_value(json!({
            "parameters": [
                {"component": "shovel", "name": "ingest", "vhost": "v", "value": {"src-uri": "amqp://x"}},
                {"component": "federation-upstream", "name": "up", "vhost": "v", "value": {"uri": "amqp://y"}},
                {"component": "shovel", "name": "tiermq-drain-q", "vhost": "v", "value": {}},
                {"component": "vhost-limits", "name": "limits", "vhost": "v", "value": {}}
            ]
        }))
        .unwrap();
        let t = tenant_transfers(&defs);
        let names: Vec<(String, String)> = t.iter().map(key).collect();
        assert_eq!(
            names,
            [
                ("shovel".to_string(), "ingest".to_string()),
                ("federation-upstream".to_string(), "up".to_string())
            ]
        );
        assert!(t.iter().all(|p| p.get("vhost").is_none()));
    }
}
