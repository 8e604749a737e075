//! Merging a request body into a stored object: [`smp`] for strategic merge patches and
//! [`ssa`] for server-side apply with field ownership.
//!
//! Both use the list semantics of built-in kinds kept here: a list of objects merges item by
//! item on a key chosen by the field's name (`containers`/`env`/`volumes`/... by `name`, `ports`
//! by `containerPort` or `port`, `volumeMounts` by `mountPath`, `conditions` by `type`,
//! `ownerReferences` by `uid`), `finalizers` is a set, and every other list is replaced as a
//! whole. The real server takes them from each type's declared patch strategy and list-type
//! extensions; choosing by field name is enough for the kinds kubesim serves.

pub mod smp;
pub mod ssa;

use serde_json::Value;

/// Merge key of a list field, by the field's name (and the first element, for `ports`).
pub fn merge_key(field: &str, sample: Option<&Value>) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "volumeDevices" => Some("name"),
        "ports" => {
            if sample.is_some_and(|s| s.get("containerPort").is_some()) {
                Some("containerPort")
            } else {
                Some("port")
            }
        }
        "volumeMounts" => Some("mountPath"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        _ => None,
    }
}

fn is_set_field(field: &str) -> bool {
    field == "finalizers"
}
