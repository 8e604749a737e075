use std::collections::BTreeMap;

use serde_json::Value;

use super::MANAGED_PREFIX;
use crate::client::ManagementClient;
use crate::error::{BrokerError, ErrorKind};
use crate::model::{Definitions, major_version};

/// What a topology copy carried over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyCopy {
    /// Exchanges copied.
    pub exchanges: usize,
    /// Queues copied.
    pub queues: usize,
    /// Bindings copied.
    pub bindings: usize,
    /// Policies copied.
    pub policies: usize,
    /// What was changed for the destination's RabbitMQ release, one readable line each (see
    /// [`for_destination`]); empty when everything was copied as it is.
    pub translated: Vec<String>,
}

/// Policy keys of classic queue mirroring, which RabbitMQ 4.0 removed. A 4.x broker refuses a
/// policy that sets any of them, and a definitions import holding such a policy as a whole
/// (checked on 4.0.5: "... are not recognised policy settings", nothing imported).
pub const MIRRORING_POLICY_KEYS: [&str; 6] = [
    "ha-mode",
    "ha-params",
    "ha-sync-mode",
    "ha-sync-batch-size",
    "ha-promote-on-shutdown",
    "ha-promote-on-failure",
];

/// The classic mirroring keys an exported policy sets, in its order.
pub fn mirroring_keys(policy: &Value) -> Vec<String> {
    policy
        .get("definition")
        .and_then(Value::as_object)
        .map(|d| {
            d.keys()
                .filter(|k| MIRRORING_POLICY_KEYS.contains(&k.as_str()))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// An exported policy that sets classic mirroring keys and nothing else: on a 4.x broker
/// nothing of it remains, so it is not copied there.
pub fn mirroring_only(policy: &Value) -> bool {
    policy
        .get("definition")
        .and_then(Value::as_object)
        .is_some_and(|d| {
            !d.is_empty()
                && d.keys()
                    .all(|k| MIRRORING_POLICY_KEYS.contains(&k.as_str()))
        })
}

/// Adapts a tenant topology (see [`tenant_topology`]) to a destination running RabbitMQ
/// `dst_major` (pure). For 4 and later:
///
/// - classic mirroring keys ([`MIRRORING_POLICY_KEYS`]) leave every policy; a policy left with
///   nothing is not copied;
/// - every queue without `x-queue-type` gets the type it has on the source (`source_types`, by
///   name; else `source_default`, the type such a declare gets in the source vhost). Imported
///   without one, it would take the destination vhost's or node's default queue type (a 4.x
///   vhost whose default is `quorum` turns a 3.10 classic queue into a quorum queue).
///
/// Queue arguments 4.x ignores but still accepts and checks for equivalence (`x-queue-mode`,
/// `x-queue-version: 1`, checked on 4.0.5) are kept: a client declaring the queue with them
/// again would be refused if they were gone. Older destinations get the topology unchanged.
/// Returns the topology and what was changed, one readable line per policy.
pub fn for_destination(
    mut defs: Definitions,
    dst_major: Option<u32>,
    source_types: &BTreeMap<String, String>,
    source_default: &str,
) -> (Definitions, Vec<String>) {
    let mut notes = Vec::new();
    if dst_major.is_none_or(|m| m < 4) {
        return (defs, notes);
    }
    defs.policies.retain_mut(|p| {
        let keys = mirroring_keys(p);
        if keys.is_empty() {
            return true;
        }
        let name = p.get("name").and_then(Value::as_str).unwrap_or("?");
        let all = mirroring_only(p);
        notes.push(if all {
            format!(
                "policy {name:?} not copied: it sets only {} (classic queue mirroring, removed \
                 in RabbitMQ 4.0; quorum queues replicate instead)",
                keys.join(", ")
            )
        } else {
            format!(
                "policy {name:?}: {} dropped (classic queue mirroring, removed in RabbitMQ \
                 4.0; quorum queues replicate instead), its other keys copied",
                keys.join(", ")
            )
        });
        if let Some(d) = p.get_mut("definition").and_then(Value::as_object_mut) {
            d.retain(|k, _| !MIRRORING_POLICY_KEYS.contains(&k.as_str()));
        }
        !all
    });
    for q in &mut defs.queues {
        let name = q
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let Some(obj) = q.as_object_mut() else {
            continue;
        };
        let args = obj
            .entry("arguments")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(args) = args.as_object_mut()
            && !args.contains_key("x-queue-type")
        {
            let t = source_types
                .get(&name)
                .map(String::as_str)
                .unwrap_or(source_default);
            args.insert("x-queue-type".into(), Value::String(t.to_string()));
        }
    }
    (defs, notes)
}

/// Keeps only the policy keys `admits` accepts (a SharedCluster's `spec.tenants.policyKeys`
/// on a copy onto shared brokers); a policy left with no key is not copied (pure). Returns the
/// definitions and one readable line per policy changed.
pub fn filter_policy_keys(
    mut defs: Definitions,
    admits: &dyn Fn(&str) -> bool,
) -> (Definitions, Vec<String>) {
    let mut notes = Vec::new();
    defs.policies.retain_mut(|p| {
        let name = p
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        let Some(d) = p.get_mut("definition").and_then(Value::as_object_mut) else {
            return true;
        };
        let dropped: Vec<String> = d.keys().filter(|k| !admits(k)).cloned().collect();
        if dropped.is_empty() {
            return true;
        }
        d.retain(|k, _| admits(k));
        let kept = !d.is_empty();
        notes.push(if kept {
            format!(
                "policy {name:?}: {} dropped (not allowed on the destination's brokers), \
                 its other keys copied",
                dropped.join(", ")
            )
        } else {
            format!(
                "policy {name:?} not copied: it sets only {} (not allowed on the \
                 destination's brokers)",
                dropped.join(", ")
            )
        });
        kept
    });
    (defs, notes)
}

/// Queues of `want` that are transient (not durable) and, as every exported queue, not
/// exclusive: what a 4.x broker that does not permit them skips on import.
fn transient_queues(want: &Definitions) -> Vec<String> {
    want.queues
        .iter()
        .filter(|q| q.get("durable").and_then(Value::as_bool) == Some(false))
        .filter_map(|q| q.get("name").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// The part of a vhost's definitions that belongs to the tenant: exchanges, queues (any type,
/// with their arguments), bindings and the tenant's own policies. Runtime parameters (shovels,
/// federation upstreams) and policies tiermq made are left out, as is the `vhost` field, so the
/// document imports into a vhost of another name.
pub fn tenant_topology(defs: Definitions) -> Definitions {
    let strip = |list: Vec<Value>| -> Vec<Value> {
        list.into_iter()
            .map(|mut o| {
                if let Some(map) = o.as_object_mut() {
                    map.remove("vhost");
                }
                o
            })
            .collect()
    };
    let own_policy = |p: &Value| {
        !p.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| n.starts_with(MANAGED_PREFIX))
    };
    Definitions {
        exchanges: strip(defs.exchanges),
        queues: strip(defs.queues),
        bindings: strip(defs.bindings),
        policies: strip(defs.policies.into_iter().filter(own_policy).collect()),
        parameters: Vec::new(),
        other: Default::default(),
    }
}

/// An object as the comparison sees it. RabbitMQ 4.0 records the type of every queue in its
/// arguments, also when the client chose none (`x-queue-type: classic`), where 3.10 records
/// nothing; both mean a classic queue, so an explicit `classic` counts as no type. Any other type
/// still differs from none (a queue that became a quorum queue through a vhost's default queue
/// type is a different queue).
fn comparable(kind: &str, obj: &Value) -> Value {
    let mut obj = obj.clone();
    if kind == "queue"
        && let Some(args) = obj.get_mut("arguments").and_then(Value::as_object_mut)
        && args.get("x-queue-type").and_then(Value::as_str) == Some("classic")
    {
        args.remove("x-queue-type");
    }
    obj
}

/// Every object of `want` that `have` lacks or holds differently (after [`tenant_topology`] on
/// both), as readable descriptions. Empty means `have` carries the whole topology exactly; a
/// classic queue with and without an explicit `x-queue-type: classic` (4.0 and 3.10 exports of
/// the same queue) is the same queue.
pub fn missing_objects(want: &Definitions, have: &Definitions) -> Vec<String> {
    let mut missing = Vec::new();
    for (kind, w, h) in [
        ("exchange", &want.exchanges, &have.exchanges),
        ("queue", &want.queues, &have.queues),
        ("binding", &want.bindings, &have.bindings),
        ("policy", &want.policies, &have.policies),
    ] {
        let h: Vec<Value> = h.iter().map(|o| comparable(kind, o)).collect();
        for obj in w {
            if !h.contains(&comparable(kind, obj)) {
                let name = obj
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| {
                        format!(
                            "{} -> {} ({})",
                            obj.get("source").and_then(Value::as_str).unwrap_or("?"),
                            obj.get("destination")
                                .and_then(Value::as_str)
                                .unwrap_or("?"),
                            obj.get("routing_key").and_then(Value::as_str).unwrap_or("")
                        )
                    });
                missing.push(format!("{kind} {name:?}"));
            }
        }
    }
    missing
}

/// Copies the tenant topology of `src_vhost` on `src` to `dst_vhost` on `dst` (which must
/// exist), adapted to the destination's RabbitMQ release ([`for_destination`]), then reads the
/// destination back and fails unless every object arrived unchanged.
///
/// Onto RabbitMQ 4.x the destination vhost also gets the source vhost's default queue type
/// (`classic` for a 3.10 source, which has none), so clients declaring queues without a type get
/// the same type as before whatever the destination cluster's default.
///
/// Idempotent: importing the same definitions again changes nothing. An object that exists on
/// the destination with other properties (say a queue with other arguments) is kept as it is by
/// RabbitMQ's import without complaint; the read-back finds it and the copy fails with
/// [`ErrorKind::Conflict`] naming it. A 4.x destination that does not permit transient
/// non-exclusive queues skips them on import without an error (checked on 4.0.5 with
/// `deprecated_features.permit.transient_nonexcl_queues = false`); the read-back finds them
/// missing and the error says why.
pub async fn copy_topology(
    src: &ManagementClient,
    src_vhost: &str,
    dst: &ManagementClient,
    dst_vhost: &str,
) -> Result<TopologyCopy, BrokerError> {
    copy_topology_with(src, src_vhost, dst, dst_vhost, None).await
}

/// [`copy_topology`], keeping only the policy keys `admits` accepts (see
/// [`filter_policy_keys`]); `None` copies policies whole. What was dropped is in
/// [`TopologyCopy::translated`].
pub async fn copy_topology_with(
    src: &ManagementClient,
    src_vhost: &str,
    dst: &ManagementClient,
    dst_vhost: &str,
    admits: Option<&(dyn Fn(&str) -> bool + Sync)>,
) -> Result<TopologyCopy, BrokerError> {
    let dst_version = dst.overview().await?.rabbitmq_version;
    let dst_major = major_version(&dst_version);
    let mut exported = tenant_topology(src.export_definitions(src_vhost).await?);
    let mut filtered = Vec::new();
    if let Some(admits) = admits {
        (exported, filtered) = filter_policy_keys(exported, admits);
    }
    let (want, translated) = if dst_major.is_some_and(|m| m >= 4) {
        let types: BTreeMap<String, String> = src
            .list_queues(src_vhost)
            .await?
            .into_iter()
            .filter_map(|q| Some((q.name, q.queue_type?)))
            .collect();
        let default = src
            .get_vhost(src_vhost)
            .await?
            .map(|v| v.effective_default_queue_type().to_string())
            .unwrap_or_else(|| "classic".into());
        let have = dst.get_vhost(dst_vhost).await?;
        let mut notes = Vec::new();
        if let Some(v) = have
            && v.default_queue_type.as_deref() != Some(default.as_str())
        {
            dst.set_default_queue_type(dst_vhost, &default).await?;
            notes.push(format!(
                "default queue type of the vhost set to {default:?}, as on the source (it was {:?})",
                v.default_queue_type.as_deref().unwrap_or("none")
            ));
        }
        let (want, policy_notes) = for_destination(exported, dst_major, &types, &default);
        notes.extend(policy_notes);
        (want, notes)
    } else {
        (exported, Vec::new())
    };
    let translated = filtered.into_iter().chain(translated).collect::<Vec<_>>();
    dst.import_definitions(dst_vhost, &want).await?;
    let have = tenant_topology(dst.export_definitions(dst_vhost).await?);
    let missing = missing_objects(&want, &have);
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(10).map(String::as_str).collect();
        let refused: Vec<String> = transient_queues(&want)
            .into_iter()
            .filter(|q| missing.contains(&format!("queue {q:?}")))
            .collect();
        let reason = if dst_major.is_some_and(|m| m >= 4) && !refused.is_empty() {
            format!(
                "RabbitMQ {dst_version} on the destination did not take the transient \
                 (non-durable, non-exclusive) queues {}: 4.x deprecates them and a cluster that \
                 does not permit them (deprecated_features.permit.transient_nonexcl_queues = \
                 false) skips them on import and refuses clients declaring them; declare them \
                 durable (or exclusive) on the source, or permit them on the destination",
                refused
                    .iter()
                    .map(|q| format!("{q:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            format!(
                "{} objects missing or different on the destination after import: {}; remove or \
                 fix them there and retry",
                missing.len(),
                shown.join(", ")
            )
        };
        return Err(dst.error(
            format!(
                "verify topology copied from {} vhost {src_vhost:?} into vhost {dst_vhost:?}",
                src.cluster()
            ),
            ErrorKind::Conflict { reason },
        ));
    }
    let copy = TopologyCopy {
        exchanges: want.exchanges.len(),
        queues: want.queues.len(),
        bindings: want.bindings.len(),
        policies: want.policies.len(),
        translated,
    };
    tracing::info!(
        from = src.cluster(),
        to = dst.cluster(),
        src_vhost,
        dst_vhost,
        ?copy,
        "topology copied"
    );
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defs(v: Value) -> Definitions {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn only_allowed_policy_keys_are_copied_and_empty_policies_are_left_out() {
        let d = defs(json!({"policies": [
            {"name": "bounded", "pattern": ".*", "apply-to": "queues", "priority": 0,
             "definition": {"max-length": 10, "ha-mode": "all"}},
            {"name": "pinned", "pattern": "^p", "apply-to": "queues", "priority": 1,
             "definition": {"queue-master-locator": "min-masters"}},
            {"name": "ttl", "pattern": "^t", "apply-to": "queues", "priority": 2,
             "definition": {"message-ttl": 5000}}
        ]}));
        let allowed = ["max-length", "message-ttl"];
        let (out, notes) = filter_policy_keys(d, &|k| allowed.contains(&k));
        let names: Vec<&str> = out
            .policies
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["bounded", "ttl"]);
        assert_eq!(out.policies[0]["definition"], json!({"max-length": 10}));
        assert_eq!(out.policies[0]["pattern"], ".*");
        assert_eq!(out.policies[1]["definition"], json!({"message-ttl": 5000}));
        assert_eq!(notes.len(), 2);
        assert!(
            notes[0].contains("\"bounded\": ha-mode dropped"),
            "{notes:?}"
        );
        assert!(notes[1].contains("\"pinned\" not copied"), "{notes:?}");
    }

    #[test]
    fn an_explicit_classic_queue_type_is_the_same_queue_and_other_types_are_not() {
        let v3 = defs(json!({"queues": [
            {"name": "a", "durable": true, "auto_delete": false, "arguments": {}},
            {"name": "b", "durable": true, "auto_delete": false, "arguments": {"x-max-length": 5}}
        ]}));
        let v4 = defs(json!({"queues": [
            {"name": "a", "durable": true, "auto_delete": false, "arguments": {"x-queue-type": "classic"}},
            {"name": "b", "durable": true, "auto_delete": false, "arguments": {"x-max-length": 5, "x-queue-type": "classic"}}
        ]}));
        assert_eq!(missing_objects(&v3, &v4), Vec::<String>::new());
        assert_eq!(missing_objects(&v4, &v3), Vec::<String>::new());
        let quorum = defs(json!({"queues": [
            {"name": "a", "durable": true, "auto_delete": false, "arguments": {"x-queue-type": "quorum"}},
            {"name": "b", "durable": true, "auto_delete": false, "arguments": {"x-max-length": 6, "x-queue-type": "classic"}}
        ]}));
        assert_eq!(
            missing_objects(&v3, &quorum),
            ["queue \"a\"", "queue \"b\""]
        );
        // Only queues are normalised.
        let x =
            defs(json!({"exchanges": [{"name": "e", "arguments": {"x-queue-type": "classic"}}]}));
        let y = defs(json!({"exchanges": [{"name": "e", "arguments": {}}]}));
        assert_eq!(missing_objects(&x, &y), ["exchange \"e\""]);
    }

    #[test]
    fn a_4x_destination_gets_no_mirroring_keys_and_every_queue_typed() {
        let src = defs(json!({
            "queues": [
                {"name": "plain", "durable": true, "auto_delete": false, "arguments": {}},
                {"name": "lazy", "durable": true, "auto_delete": false, "arguments": {"x-queue-mode": "lazy", "x-queue-version": 1}},
                {"name": "votes", "durable": true, "auto_delete": false, "arguments": {"x-queue-type": "quorum"}},
                {"name": "gone", "durable": false, "auto_delete": false}
            ],
            "policies": [
                {"name": "ha-all", "pattern": "^ha", "apply-to": "queues", "definition": {"ha-mode": "all", "ha-sync-mode": "automatic"}, "priority": 1},
                {"name": "capped", "pattern": "^c", "apply-to": "queues", "definition": {"ha-mode": "exactly", "ha-params": 2, "max-length": 100}, "priority": 2},
                {"name": "ttl", "pattern": "^t", "apply-to": "queues", "definition": {"message-ttl": 60000}, "priority": 0}
            ]
        }));
        let types = BTreeMap::from([
            ("plain".to_string(), "classic".to_string()),
            ("lazy".to_string(), "classic".to_string()),
            ("votes".to_string(), "quorum".to_string()),
        ]);
        // 3.x destinations get the topology as it is.
        let (same, notes) = for_destination(src.clone(), Some(3), &types, "classic");
        assert_eq!(same, src);
        assert!(notes.is_empty());
        let (same, _) = for_destination(src.clone(), None, &types, "classic");
        assert_eq!(same, src);

        let (v4, notes) = for_destination(src.clone(), Some(4), &types, "classic");
        let names: Vec<&str> = v4
            .policies
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["capped", "ttl"]);
        assert_eq!(v4.policies[0]["definition"], json!({"max-length": 100}));
        assert_eq!(v4.policies[1], src.policies[2]);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].contains("\"ha-all\" not copied")
                && notes[0].contains("ha-mode, ha-sync-mode")
        );
        assert!(notes[1].contains("\"capped\": ha-mode, ha-params dropped"));
        // Every queue carries its source type; arguments 4.x still accepts stay as they are.
        let arg = |i: usize, k: &str| v4.queues[i]["arguments"][k].clone();
        assert_eq!(arg(0, "x-queue-type"), "classic");
        assert_eq!(arg(1, "x-queue-type"), "classic");
        assert_eq!(arg(1, "x-queue-mode"), "lazy");
        assert_eq!(arg(1, "x-queue-version"), 1);
        assert_eq!(arg(2, "x-queue-type"), "quorum");
        // A queue the source no longer lists gets the source vhost's default type.
        let (v4q, _) = for_destination(src, Some(5), &types, "quorum");
        assert_eq!(v4q.queues[3]["arguments"]["x-queue-type"], "quorum");
        assert_eq!(transient_queues(&v4q), ["gone"]);
        // What the planner needs to know about policies.
        assert!(!mirroring_only(&v4q.policies[0]));
        let ha = json!({"name": "x", "definition": {"ha-mode": "all"}});
        assert!(mirroring_only(&ha));
        assert!(!mirroring_only(&json!({"name": "e", "definition": {}})));
        assert_eq!(mirroring_keys(&ha), ["ha-mode"]);
    }

    #[test]
    fn managed_objects_parameters_and_vhost_fields_are_left_out() {
        let d = defs(json!({
            "rabbit_version": "3.10.8",
            "exchanges": [{"name": "x", "vhost": "a", "type": "topic", "durable": true, "auto_delete": false, "internal": false, "arguments": {}}],
            "queues": [{"name": "q", "vhost": "a", "durable": true, "auto_delete": false, "arguments": {"x-queue-type": "quorum"}}],
            "policies": [
                {"name": "ttl", "pattern": ".*", "apply-to": "queues", "definition": {"message-ttl": 5}, "priority": 0},
                {"name": "tiermq-federation", "pattern": ".*", "apply-to": "queues", "definition": {}, "priority": 0}
            ],
            "parameters": [{"component": "shovel", "name": "s", "value": {"src-uri": "amqp://u:p@h"}}]
        }));
        let t = tenant_topology(d);
        assert_eq!(t.exchanges[0].get("vhost"), None);
        assert_eq!(t.queues[0]["arguments"]["x-queue-type"], "quorum");
        assert_eq!(t.policies.len(), 1);
        assert_eq!(t.policies[0]["name"], "ttl");
        assert!(t.parameters.is_empty());
        assert!(t.other.is_empty());
    }

    #[test]
    fn differences_are_reported_by_kind_and_name() {
        let want = defs(json!({
            "queues": [{"name": "q1", "arguments": {"x-max-length": 10}}, {"name": "q2", "arguments": {}}],
            "bindings": [{"source": "x", "destination": "q1", "destination_type": "queue", "routing_key": "k", "arguments": {}}]
        }));
        let have = defs(
            json!({"queues": [{"name": "q1", "arguments": {"x-max-length": 11}}, {"name": "q2", "arguments": {}}]}),
        );
        let missing = missing_objects(&want, &have);
        assert_eq!(
            missing,
            vec![
                "queue \"q1\"".to_string(),
                "binding \"x -> q1 (k)\"".to_string()
            ]
        );
        assert!(missing_objects(&want, &want).is_empty());
    }
}
