use serde_json::Value;

use super::MANAGED_PREFIX;
use crate::client::ManagementClient;
use crate::error::{BrokerError, ErrorKind};
use crate::model::Definitions;

/// What a topology copy carried over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopologyCopy {
    pub exchanges: usize,
    pub queues: usize,
    pub bindings: usize,
    pub policies: usize,
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
/// exist), then reads the destination back and fails unless every object arrived unchanged.
///
/// Idempotent: importing the same definitions again changes nothing. An object that exists on
/// the destination with other properties (say a queue with other arguments) is kept as it is by
/// RabbitMQ's import without complaint; the read-back finds it and the copy fails with
/// [`ErrorKind::Conflict`] naming it.
pub async fn copy_topology(
    src: &ManagementClient,
    src_vhost: &str,
    dst: &ManagementClient,
    dst_vhost: &str,
) -> Result<TopologyCopy, BrokerError> {
    let want = tenant_topology(src.export_definitions(src_vhost).await?);
    dst.import_definitions(dst_vhost, &want).await?;
    let have = tenant_topology(dst.export_definitions(dst_vhost).await?);
    let missing = missing_objects(&want, &have);
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(10).map(String::as_str).collect();
        return Err(dst.error(
            format!("verify topology copied from {} vhost {src_vhost:?} into vhost {dst_vhost:?}", src.cluster()),
            ErrorKind::Conflict {
                reason: format!(
                    "{} objects missing or different on the destination after import: {}; remove or \
                     fix them there and retry",
                    missing.len(),
                    shown.join(", ")
                ),
            },
        ));
    }
    let copy = TopologyCopy {
        exchanges: want.exchanges.len(),
        queues: want.queues.len(),
        bindings: want.bindings.len(),
        policies: want.policies.len(),
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
