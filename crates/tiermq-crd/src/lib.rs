//! tiermq's API types: `RabbitMQInstance` and `SharedCluster` (group `tiermq.io`, version
//! [`v1alpha1`], re-exported at the crate root), the condition types and reasons users match on
//! ([`conditions`]), the name facts admission and the operator share ([`names`]), and the RabbitMQ
//! releases images name and the in-place image changes they allow ([`versions`]).
//!
//! Types only: no client, no IO. The CRD YAML in `crd/` and the chart is generated from these types
//! (`tiermq-operator crd`, `make generate`).

// kube's `printcolumn(...)` repeats `type_ = ...` once per column, which clippy mistakes for a
// duplicated attribute.
#![allow(clippy::duplicated_attributes)]
#![warn(missing_docs)]

pub mod conditions;
pub mod names;
pub mod v1alpha1;
pub mod versions;

pub use names::{MAX_INSTANCE_NAME_LEN, MAX_SHARED_CLUSTER_NAME_LEN};
pub use v1alpha1::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, ValidationRule,
};
use kube::CustomResourceExt;

/// Each CRD as `(file name, YAML document)`, in a stable order. The file names are the ones in `crd/`
/// and in the chart's `crds/` folder.
pub fn crd_files() -> Vec<(String, String)> {
    [
        with_name_limit(
            RabbitMQInstance::crd(),
            MAX_INSTANCE_NAME_LEN,
            &names::instance_name_message(),
        ),
        with_root_rule(
            with_name_limit(
                SharedCluster::crd(),
                MAX_SHARED_CLUSTER_NAME_LEN,
                &names::shared_cluster_name_message(),
            ),
            &format!(
                "!self.metadata.name.endsWith('{}')",
                names::DEDICATED_CLUSTER_SUFFIX
            ),
            &names::shared_cluster_suffix_message(),
        ),
    ]
    .iter()
    .map(|crd| {
        let name = crd.metadata.name.clone().expect("CRDs are named");
        // serde_json first: the YAML then keeps the field order the types declare.
        let value = serde_json::to_value(crd).expect("CRD serializes");
        (format!("{name}.yaml"), format!("---\n{}", yaml_of(&value)))
    })
    .collect()
}

/// Both CRDs as one multi-document YAML stream (what `tiermq-operator crd` prints).
pub fn crds_yaml() -> String {
    crd_files().into_iter().map(|(_, yaml)| yaml).collect()
}

/// Adds a root-level CEL rule bounding `metadata.name` (only the root schema may look at metadata;
/// kube-derive's root `validation` attribute does not reach the CRD, so it is added here).
fn with_name_limit(
    crd: CustomResourceDefinition,
    max: usize,
    message: &str,
) -> CustomResourceDefinition {
    with_root_rule(crd, &format!("self.metadata.name.size() <= {max}"), message)
}

/// Adds the root-level CEL `rule` with `message` to every version's schema.
fn with_root_rule(
    mut crd: CustomResourceDefinition,
    rule: &str,
    message: &str,
) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            schema
                .x_kubernetes_validations
                .get_or_insert_with(Vec::new)
                .push(ValidationRule {
                    rule: rule.to_string(),
                    message: Some(message.to_string()),
                    ..Default::default()
                });
        }
    }
    crd
}

fn yaml_of(v: &serde_json::Value) -> String {
    serde_yaml::to_string(v).expect("CRD renders as YAML")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn instance_crd() -> Value {
        crd_json("rabbitmqinstances.tiermq.io")
    }

    /// The CRD as published (what `crd/` holds), not the bare derive output.
    fn crd_json(name: &str) -> Value {
        let (_, yaml) = crd_files()
            .into_iter()
            .find(|(f, _)| f.starts_with(name))
            .unwrap();
        serde_yaml::from_str(yaml.trim_start_matches("---\n")).unwrap()
    }

    #[test]
    fn series_is_immutable_through_a_transition_rule_with_guidance() {
        let crd = instance_crd();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let rules = spec["x-kubernetes-validations"]
            .as_array()
            .expect("rules on spec");
        let rule = rules
            .iter()
            .find(|r| r["rule"] == "self.series == oldSelf.series")
            .expect("series transition rule");
        let msg = rule["message"].as_str().unwrap();
        assert!(
            msg.contains("immutable") && msg.contains("create a new RabbitMQInstance"),
            "{msg}"
        );
    }

    #[test]
    fn a_maintenance_window_is_checked_at_admission() {
        let crd = instance_crd();
        let w = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            ["migration"]["properties"]["window"];
        for field in ["startTime", "endTime"] {
            assert_eq!(
                w["properties"][field]["pattern"],
                v1alpha1::instance::WINDOW_TIME_PATTERN
            );
        }
        let rule = &w["x-kubernetes-validations"][0];
        assert_eq!(rule["rule"], "self.startTime != self.endTime");
        assert!(
            rule["message"]
                .as_str()
                .unwrap()
                .contains("crosses midnight")
        );
        // What the pattern admits, `minutes()` reads.
        let ok = |s: &str, e: &str| {
            MaintenanceWindow {
                days: vec![],
                start_time: s.into(),
                end_time: e.into(),
            }
            .minutes()
        };
        assert_eq!(ok("00:00", "23:59"), Ok((0, 1439)));
        assert_eq!(ok("22:30", "02:05"), Ok((1350, 125)));
        assert!(ok("7:00", "08:00").is_err() && ok("07:00", "07:00").is_err());
    }

    #[test]
    fn names_are_bounded_at_admission() {
        let rule_of = |crd: Value| {
            crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"][0]["rule"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            rule_of(instance_crd()),
            format!("self.metadata.name.size() <= {MAX_INSTANCE_NAME_LEN}")
        );
        let sc = crd_json("sharedclusters.tiermq.io");
        assert_eq!(
            rule_of(sc.clone()),
            format!("self.metadata.name.size() <= {MAX_SHARED_CLUSTER_NAME_LEN}")
        );
        // A SharedCluster `foo-dedicated` would collide with instance `foo`'s dedicated cluster.
        let suffix =
            &sc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"][1];
        assert_eq!(suffix["rule"], "!self.metadata.name.endsWith('-dedicated')");
        assert!(
            suffix["message"]
                .as_str()
                .unwrap()
                .contains("dedicated cluster")
        );
    }

    #[test]
    fn names_columns_and_subresources() {
        let crd = instance_crd();
        assert_eq!(crd["spec"]["names"]["shortNames"][0], "rmqi");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        let v = &crd["spec"]["versions"][0];
        assert_eq!(v["name"], "v1alpha1");
        assert!(v["subresources"]["status"].is_object());
        let cols: Vec<&str> = v["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(cols, ["Tier", "Phase", "Migration", "Age"]);
    }

    #[test]
    fn enums_ranges_and_defaults_are_in_the_schema() {
        let crd = instance_crd();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let props = &spec["properties"];
        assert_eq!(
            props["series"]["enum"],
            serde_json::json!(["Subscription", "Serverless"])
        );
        assert_eq!(
            props["tier"]["enum"],
            serde_json::json!(["Shared", "Dedicated"])
        );
        let mig = &props["migration"]["properties"];
        assert_eq!(
            mig["drainStrategy"]["enum"],
            serde_json::json!(["Consume", "Shovel"])
        );
        assert_eq!(mig["drainTimeoutSeconds"]["minimum"].as_f64(), Some(60.0));
        assert_eq!(mig["drainTimeoutSeconds"]["default"], 3600);
        let conn = &mig["connectionPolicy"];
        assert!(
            conn.to_string().contains("Keep") && conn.to_string().contains("Close"),
            "{conn}"
        );
        let ded = &props["dedicated"]["properties"];
        assert_eq!(ded["replicas"]["minimum"].as_f64(), Some(1.0));
        assert_eq!(ded["replicas"]["maximum"].as_f64(), Some(7.0));
        assert_eq!(ded["replicas"]["default"], 1);
        assert_eq!(
            props["limits"]["properties"]["maxConnections"]["minimum"].as_f64(),
            Some(1.0)
        );
        let required: Vec<&str> = spec["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(required.contains(&"series") && required.contains(&"tier"));
    }

    #[test]
    fn a_minimal_spec_gets_defaults() {
        let spec: RabbitMQInstanceSpec =
            serde_json::from_value(serde_json::json!({"series": "Subscription", "tier": "Shared"}))
                .unwrap();
        assert_eq!(spec.dedicated.replicas, 1);
        assert_eq!(spec.dedicated.image, DEFAULT_IMAGE);
        assert_eq!(spec.migration.drain_strategy, DrainStrategy::Consume);
        assert_eq!(spec.migration.grace_period_seconds, 300);
        assert_eq!(spec.access.service_type, ServiceType::ClusterIP);
    }

    #[test]
    fn connection_policy_defaults_follow_the_reference_service() {
        assert_eq!(
            ConnectionPolicy::default_for(Tier::Dedicated),
            ConnectionPolicy::Keep
        );
        assert_eq!(
            ConnectionPolicy::default_for(Tier::Shared),
            ConnectionPolicy::Close
        );
    }

    #[test]
    fn yaml_stream_holds_both_crds_in_order() {
        let y = crds_yaml();
        let docs: Vec<&str> = y.split("---\n").filter(|d| !d.is_empty()).collect();
        assert_eq!(docs.len(), 2);
        assert!(docs[0].contains("name: rabbitmqinstances.tiermq.io"));
        assert!(docs[1].contains("name: sharedclusters.tiermq.io"));
    }
}
