//! Cluster facts, vhosts, users and permissions, vhost limits and definitions.

use reqwest::Method;
use serde_json::Value;

use super::{Call, ManagementClient};
use crate::encode::segment;
use crate::error::{BrokerError, ErrorKind, NotFoundExt};
use crate::model::*;
use crate::secret::Secret;

impl ManagementClient {
    // ---- cluster ----

    /// Cluster-wide facts: version, cluster and node name (`GET /api/overview`).
    pub async fn overview(&self) -> Result<Overview, BrokerError> {
        self.get_json(Call::new(Method::GET, "read overview", "overview".into()))
            .await
    }

    /// Every node of the cluster with its alarms and partitions (`GET /api/nodes`).
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, BrokerError> {
        self.get_json(Call::new(Method::GET, "list nodes", "nodes".into()))
            .await
    }

    /// Version, node count, and every reason the cluster should not take new work.
    pub async fn health(&self) -> Result<ClusterHealth, BrokerError> {
        let overview = self.overview().await?;
        let nodes = self.nodes().await?;
        let mut problems = Vec::new();
        for n in &nodes {
            if !n.running {
                problems.push(format!("node {} is not running", n.name));
            }
            if n.mem_alarm {
                problems.push(format!("node {} has a memory alarm", n.name));
            }
            if n.disk_free_alarm {
                problems.push(format!("node {} has a disk alarm", n.name));
            }
            if !n.partitions.is_empty() {
                problems.push(format!("node {} sees a network partition", n.name));
            }
        }
        Ok(ClusterHealth {
            version: overview.rabbitmq_version,
            nodes: nodes.len(),
            running_nodes: nodes.iter().filter(|n| n.running).count(),
            problems,
        })
    }

    // ---- vhosts ----

    /// Every vhost of the cluster.
    pub async fn list_vhosts(&self) -> Result<Vec<Vhost>, BrokerError> {
        self.get_json(Call::new(Method::GET, "list vhosts", "vhosts".into()))
            .await
    }

    /// The vhost, or `None` if it does not exist.
    pub async fn get_vhost(&self, name: &str) -> Result<Option<Vhost>, BrokerError> {
        let op = format!("read vhost {name:?}");
        self.check(&op, "vhost", name)?;
        self.get_json(Call::new(
            Method::GET,
            op,
            format!("vhosts/{}", segment(name)),
        ))
        .await
        .optional()
    }

    /// Creates the vhost; an existing one is left as it is.
    pub async fn put_vhost(&self, name: &str) -> Result<(), BrokerError> {
        let op = format!("create vhost {name:?}");
        self.check(&op, "vhost", name)?;
        let call = Call::new(Method::PUT, op, format!("vhosts/{}", segment(name)))
            .body(serde_json::json!({"description": "managed by tiermq"}));
        self.send_empty(call).await
    }

    /// Sets the queue type a declare without `x-queue-type` gets in the existing vhost `name`
    /// (RabbitMQ 3.11+; 3.10 ignores it).
    pub async fn set_default_queue_type(
        &self,
        name: &str,
        queue_type: &str,
    ) -> Result<(), BrokerError> {
        let op = format!("set the default queue type of vhost {name:?} to {queue_type:?}");
        self.check(&op, "vhost", name)?;
        // A PUT with metadata replaces all of it: keep the description put_vhost writes.
        let call = Call::new(Method::PUT, op, format!("vhosts/{}", segment(name))).body(
            serde_json::json!({"description": "managed by tiermq", "default_queue_type": queue_type}),
        );
        self.send_empty(call).await
    }

    /// Deletes the vhost with everything in it. `false` if it did not exist.
    pub async fn delete_vhost(&self, name: &str) -> Result<bool, BrokerError> {
        let op = format!("delete vhost {name:?}");
        self.check(&op, "vhost", name)?;
        self.delete_idempotent(Call::new(
            Method::DELETE,
            op,
            format!("vhosts/{}", segment(name)),
        ))
        .await
    }

    // ---- users and permissions ----

    /// The user, or `None` if it does not exist.
    pub async fn get_user(&self, name: &str) -> Result<Option<User>, BrokerError> {
        let op = format!("read user {name:?}");
        self.check(&op, "user", name)?;
        self.get_json(Call::new(
            Method::GET,
            op,
            format!("users/{}", segment(name)),
        ))
        .await
        .optional()
    }

    /// Creates the user or sets its password and tags.
    pub async fn put_user(
        &self,
        name: &str,
        password: &Secret,
        tags: &[&str],
    ) -> Result<(), BrokerError> {
        let op = format!("create or update user {name:?}");
        self.check(&op, "user", name)?;
        let call = Call::new(Method::PUT, op, format!("users/{}", segment(name)))
            .body(serde_json::json!({"password": password.expose(), "tags": tags.join(",")}))
            .secret(password);
        self.send_empty(call).await
    }

    /// Deletes the user (and with it its permissions). `false` if it was already gone.
    pub async fn delete_user(&self, name: &str) -> Result<bool, BrokerError> {
        let op = format!("delete user {name:?}");
        self.check(&op, "user", name)?;
        self.delete_idempotent(Call::new(
            Method::DELETE,
            op,
            format!("users/{}", segment(name)),
        ))
        .await
    }

    /// The user's permissions on the vhost, or `None` if it has none there.
    pub async fn get_permissions(
        &self,
        vhost: &str,
        user: &str,
    ) -> Result<Option<Permissions>, BrokerError> {
        let op = format!("read permissions of user {user:?} on vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        self.check(&op, "user", user)?;
        let path = format!("permissions/{}/{}", segment(vhost), segment(user));
        self.get_json(Call::new(Method::GET, op, path))
            .await
            .optional()
    }

    /// Sets the user's permissions on the vhost, replacing what it had.
    pub async fn put_permissions(
        &self,
        vhost: &str,
        user: &str,
        perms: &Permissions,
    ) -> Result<(), BrokerError> {
        let op = format!("set permissions of user {user:?} on vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        self.check(&op, "user", user)?;
        let path = format!("permissions/{}/{}", segment(vhost), segment(user));
        let body = serde_json::to_value(perms).expect("permissions serialize");
        self.send_empty(Call::new(Method::PUT, op, path).body(body))
            .await
    }

    // ---- vhost limits ----

    /// The vhost's `max-connections` and `max-queues` limits; `None` for a limit not set.
    pub async fn get_vhost_limits(&self, vhost: &str) -> Result<VhostLimits, BrokerError> {
        let op = format!("read limits of vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        let rows: Vec<Value> = self
            .get_json(Call::new(
                Method::GET,
                op,
                format!("vhost-limits/{}", segment(vhost)),
            ))
            .await?;
        let value = rows.first().and_then(|r| r.get("value"));
        let get = |k: &str| {
            value
                .and_then(|v| v.get(k))
                .and_then(Value::as_u64)
                .map(|n| n as u32)
        };
        Ok(VhostLimits {
            max_connections: get("max-connections"),
            max_queues: get("max-queues"),
        })
    }

    /// Sets (`Some`) or removes (`None`) one limit: `max-connections` or `max-queues`.
    pub async fn set_vhost_limit(
        &self,
        vhost: &str,
        limit: &str,
        value: Option<u32>,
    ) -> Result<(), BrokerError> {
        let op = format!("set limit {limit} of vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        let path = format!("vhost-limits/{}/{}", segment(vhost), segment(limit));
        match value {
            Some(v) => {
                let call = Call::new(Method::PUT, op, path).body(serde_json::json!({"value": v}));
                self.send_empty(call).await
            }
            None => self
                .delete_idempotent(Call::new(Method::DELETE, op, path))
                .await
                .map(|_| ()),
        }
    }

    // ---- definitions ----

    /// The vhost's definitions: exchanges, queues, bindings, policies and parameters.
    pub async fn export_definitions(&self, vhost: &str) -> Result<Definitions, BrokerError> {
        let op = format!("export definitions of vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        self.get_json(Call::new(
            Method::GET,
            op,
            format!("definitions/{}", segment(vhost)),
        ))
        .await
    }

    /// Imports a per-vhost definitions document into `vhost`. Checked before sending: the size
    /// limit, and that every object has a name; a refused document changes nothing.
    pub async fn import_definitions(
        &self,
        vhost: &str,
        defs: &Definitions,
    ) -> Result<(), BrokerError> {
        let op = format!("import definitions into vhost {vhost:?}");
        self.check(&op, "vhost", vhost)?;
        let body = serde_json::to_value(defs).expect("definitions serialize");
        let size = serde_json::to_vec(&body)
            .map(|b| b.len())
            .unwrap_or(usize::MAX);
        if size > self.options.max_definitions_bytes {
            return Err(self.error(
                op,
                ErrorKind::InvalidInput {
                    reason: format!(
                        "the definitions document is {size} bytes, over the limit of {} bytes; \
                         split the vhost's topology or raise the limit",
                        self.options.max_definitions_bytes
                    ),
                },
            ));
        }
        for (kind, list) in [
            ("exchange", &defs.exchanges),
            ("queue", &defs.queues),
            ("policy", &defs.policies),
        ] {
            if let Some(bad) = list
                .iter()
                .find(|o| o.get("name").and_then(Value::as_str).is_none())
            {
                let shown: String = bad.to_string().chars().take(120).collect();
                return Err(self.error(
                    op,
                    ErrorKind::InvalidInput {
                        reason: format!("a {kind} without a name: {shown}"),
                    },
                ));
            }
        }
        let call =
            Call::new(Method::POST, op, format!("definitions/{}", segment(vhost))).body(body);
        self.send_empty(call).await
    }
}
