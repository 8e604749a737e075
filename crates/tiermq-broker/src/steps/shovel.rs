use super::MANAGED_PREFIX;
use super::backlog::Backlog;
use crate::client::ManagementClient;
use crate::encode::segment;
use crate::error::BrokerError;
use crate::model::ShovelSpec;
use crate::secret::Secret;

/// Drain shovels are named `tiermq-drain-<queue>`.
pub const DRAIN_SHOVEL_PREFIX: &str = "tiermq-drain-";

/// The name of the drain shovel that empties `queue`.
pub fn drain_shovel_name(queue: &str) -> String {
    format!("{DRAIN_SHOVEL_PREFIX}{queue}")
}

/// The query that makes an `amqps://` shovel (or federation) URI verify its peer: trust only the
/// CA in `cacertfile` (a path on the broker that runs the link), check the certificate against
/// `server_name` (also sent as SNI), whatever address the URI's host is. Without it the Erlang
/// client would encrypt but accept any certificate. `None` when the path or the name could not
/// be carried in a query unescaped.
pub fn verified_tls_query(cacertfile: &str, server_name: &str) -> Option<String> {
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'-' | b'_'))
    };
    (plain(cacertfile) && plain(server_name)).then(|| {
        format!("cacertfile={cacertfile}&verify=verify_peer&server_name_indication={server_name}")
    })
}

/// What one pass of [`ensure_drain_shovels`] found and did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShovelDrain {
    /// Queues a shovel was declared for in this pass.
    pub started: Vec<String>,
    /// Queues whose shovel was already declared (moving, or about to delete itself).
    pub running: Vec<String>,
    /// Queues left alone: streams, and exclusive or auto-delete queues (they belong to one
    /// connection; a shovel consuming one would keep it alive after its owner left).
    pub skipped: Vec<String>,
}

/// Active drain: for every queue of `backlog` with ready messages and no drain shovel yet,
/// declares a dynamic shovel on the source that moves the queue's current length to the queue
/// of the same name on the destination, acknowledging at the source only after the destination
/// confirmed (`ack-mode: on-confirm`), then deletes itself (`src-delete-after: queue-length`).
///
/// Level-triggered and idempotent: call it on every reconcile with a fresh backlog. Messages that
/// come back to a queue later (a consumer that held them unacked went away) get a new shovel on
/// a later pass. After a crash a message may be delivered twice, never lost.
///
/// `dest_uri` is the AMQP URI of the destination vhost with credentials (the tenant's own are
/// enough), `amqps://…?`[`verified_tls_query`] where both sides have TLS; the source side is the
/// local node (`amqp:///<vhost>`).
pub async fn ensure_drain_shovels(
    src: &ManagementClient,
    backlog: &Backlog,
    dest_uri: &Secret,
) -> Result<ShovelDrain, BrokerError> {
    let vhost = &backlog.vhost;
    let declared = src.list_shovels(vhost).await?;
    let existing: Vec<String> = declared.iter().map(|p| p.name.clone()).collect();
    // A shovel declared with another destination URI (the tenant's password changed since, so
    // it keeps failing to log in) is declared again with the current one.
    let outdated = |name: &str| {
        declared.iter().any(|p| {
            p.name == name
                && p.value.get("dest-uri").and_then(serde_json::Value::as_str)
                    != Some(dest_uri.expose())
        })
    };
    // A shovel that terminated stays declared but moves nothing: it is declared anew below.
    let terminated: Vec<String> = if existing.is_empty() {
        Vec::new()
    } else {
        src.shovel_status(vhost)
            .await?
            .into_iter()
            .filter(|s| s.state.as_deref() == Some("terminated"))
            .map(|s| s.name)
            .collect()
    };
    let queues = src.list_queues(vhost).await?;
    let mut out = ShovelDrain::default();
    for q in backlog.queues.iter().filter(|q| q.ready > 0) {
        let info = queues.iter().find(|i| i.name == q.name);
        if q.queue_type == "stream" || info.is_some_and(|i| i.exclusive || i.auto_delete) {
            out.skipped.push(q.name.clone());
            continue;
        }
        let name = drain_shovel_name(&q.name);
        if existing.contains(&name) && !terminated.contains(&name) && !outdated(&name) {
            out.running.push(q.name.clone());
            continue;
        }
        if terminated.contains(&name) {
            src.delete_shovel(vhost, &name).await?;
            tracing::warn!(cluster = src.cluster(), vhost = %vhost, shovel = %name, "drain shovel had terminated; declaring it again");
        }
        let spec = ShovelSpec {
            src_uri: Secret::new(format!("amqp:///{}", segment(vhost))),
            src_queue: q.name.clone(),
            dest_uri: dest_uri.clone(),
            dest_queue: q.name.clone(),
            ack_mode: "on-confirm".into(),
            src_delete_after: Some("queue-length".into()),
            prefetch: Some(1000),
        };
        src.put_shovel(vhost, &name, &spec).await?;
        out.started.push(q.name.clone());
    }
    tracing::info!(
        cluster = src.cluster(), vhost = %vhost, started = out.started.len(), running = out.running.len(),
        remaining = backlog.remaining(), "drain shovels ensured"
    );
    Ok(out)
}

/// Deletes every drain shovel left on the vhost (after the drain, or when a migration aborts).
/// Returns how many were deleted.
pub async fn remove_drain_shovels(
    src: &ManagementClient,
    vhost: &str,
) -> Result<usize, BrokerError> {
    let mut removed = 0;
    for p in src.list_shovels(vhost).await? {
        if p.name.starts_with(DRAIN_SHOVEL_PREFIX) && src.delete_shovel(vhost, &p.name).await? {
            removed += 1;
        }
    }
    debug_assert!(DRAIN_SHOVEL_PREFIX.starts_with(MANAGED_PREFIX));
    Ok(removed)
}
