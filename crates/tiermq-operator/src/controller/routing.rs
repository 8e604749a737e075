//! Routing of an instance's client Service, kept out of the conversion's way.
//!
//! Two writers share the instance's EndpointSlices:
//! - the planner's `RouteService` step ([`route_service`]) decides *which* clusters the Service
//!   routes to: it creates, empties and deletes slices;
//! - the router ([`reconcile`], its own controller) keeps the *addresses* in the slices that
//!   exist current with the broker pods. It never calls a broker, never waits for another step
//!   and never creates or deletes a slice, so a reconcile that keeps failing (a broker that does
//!   not answer, a refused StatefulSet change, a missing Secret) cannot leave clients pointed at
//!   an address a restarted pod no longer has.
//!
//! While the Service routes to exactly one cluster in the instance's own namespace (a Stable
//! dedicated instance, or a shared one whose SharedCluster lives beside it), the Service also
//! selects that cluster's pods. Kubernetes' EndpointSlice controller then keeps the addresses
//! current without the operator, even while it is stopped. The operator's slice for that cluster
//! stays as the record of the route, emptied once Kubernetes' slices serve every ready pod (two
//! slices with the same pods would leave a stale copy behind while the operator is down).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use tiermq_crd::{ClusterKind, ClusterRef, RabbitMQInstance};

use crate::build::{
    self, LABEL_CLUSTER, endpoint_slice, endpoint_slice::PodEndpoint, instance_service,
};
use crate::controller::apply::{apply, delete_if_exists, merge_patch_params};
use crate::controller::clusters::{self, Lookup};
use crate::controller::context::Context;
use crate::controller::observe;
use crate::error::{Error, Result, kube_err};

/// The name of the router in logs and metrics.
pub const CONTROLLER: &str = "routing";

/// The cluster the Service selects when it routes to `to`: the only one, when it lives in the
/// instance's namespace (a Service selects pods of its own namespace only).
pub fn selected_cluster<'a>(i: &RabbitMQInstance, to: &'a [ClusterRef]) -> Option<&'a ClusterRef> {
    match to {
        [only] if Some(&only.namespace) == i.namespace().as_ref() => Some(only),
        _ => None,
    }
}

/// The instance Service exists and routes to exactly `to`: one operator slice per cluster (with
/// the cluster's pod addresses, or empty where Kubernetes' own slices already carry them, see the
/// module docs), the selector set or removed, the slices of other clusters deleted. Slices are
/// written before the selector goes, so clients always have a route.
pub async fn route_service(ctx: &Context, i: &RabbitMQInstance, to: &[ClusterRef]) -> Result<()> {
    let select = selected_cluster(i, to).map(|c| c.name.as_str());
    // Which routed clusters serve AMQPS: the Service offers 5671 when any does, and only their
    // slices carry it.
    let mut tls_secrets = Vec::with_capacity(to.len());
    for c in to {
        tls_secrets.push(clusters::names(ctx.lookup(), c).await?.tls_secret);
    }
    let tls: Vec<bool> = tls_secrets.iter().map(Option::is_some).collect();
    let any_tls = tls.iter().any(|t| *t);
    if select.is_some() {
        // The selector first: Kubernetes' slices can only follow once it is there.
        apply(&ctx.client, &instance_service::build(i, select, any_tls)?).await?;
    }
    for (c, tls) in to.iter().zip(tls) {
        let endpoints = slice_endpoints(ctx.lookup(), i, select, c).await?;
        apply(
            &ctx.client,
            &endpoint_slice::build(i, &c.name, &endpoints, tls)?,
        )
        .await?;
    }
    if select.is_none() {
        let svc = apply(&ctx.client, &instance_service::build(i, None, any_tls)?).await?;
        if svc.spec.as_ref().is_some_and(|s| s.selector.is_some()) {
            // Apply releases a selector it no longer sends, but a server may keep an empty map
            // behind (kubesim does); an explicit null removes it whatever was left.
            let ns = i.namespace().unwrap_or_default();
            Api::<Service>::namespaced(ctx.client.clone(), &ns)
                .patch(
                    &svc.name_any(),
                    &merge_patch_params(),
                    &Patch::Merge(json!({"spec": {"selector": null}})),
                )
                .await
                .map_err(kube_err(
                    "patch",
                    format!("Service {ns}/{}", svc.name_any()),
                ))?;
        }
    }
    // Every other slice of the instance goes: those of clusters no longer routed to, and any
    // under another name (slices named by an older operator).
    let keep: BTreeSet<String> = to
        .iter()
        .map(|c| build::endpoint_slice_name(&i.name_any(), &c.name))
        .collect();
    let ns = i.namespace().unwrap_or_default();
    for s in observe::instance_slices(&ctx.client, i).await? {
        if !keep.contains(&s.name_any()) {
            delete_if_exists::<EndpointSlice>(&ctx.client, &ns, &s.name_any()).await?;
        }
    }
    follow_credentials(ctx, i, to, &tls_secrets).await
}

/// The credentials Secret's `uri` says AMQPS (with the CAs in `ca.crt`) while every cluster the
/// Service routes to has TLS, and plain AMQP otherwise: a client that follows the `uri` reaches
/// whichever side the Service picks. Written after the route, so the Service already offers
/// what the Secret names. Only `uri` and `ca.crt` are patched, and only when they differ. A
/// missing Secret is left to the credentials step, which reports it; one without the operator's
/// label (restored by hand) is the user's, and is left as it is.
async fn follow_credentials(
    ctx: &Context,
    i: &RabbitMQInstance,
    to: &[ClusterRef],
    tls_secrets: &[Option<String>],
) -> Result<()> {
    let ca_bundle = if !to.is_empty() && tls_secrets.iter().all(Option::is_some) {
        let mut cas: Vec<Vec<u8>> = Vec::new();
        for (c, secret) in to.iter().zip(tls_secrets.iter().flatten()) {
            let mut pem = clusters::tls_ca(&ctx.client, &c.namespace, secret).await?;
            if !pem.ends_with(b"\n") {
                pem.push(b'\n');
            }
            if !cas.contains(&pem) {
                cas.push(pem);
            }
        }
        Some(cas.concat())
    } else {
        None
    };
    let ns = i.namespace().unwrap_or_default();
    let name = build::credentials_secret_name(&i.name_any());
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(secret) = api
        .get_opt(&name)
        .await
        .map_err(kube_err("get", format!("Secret {ns}/{name}")))?
    else {
        return Ok(());
    };
    let ours = secret
        .labels()
        .get(build::LABEL_MANAGED_BY)
        .map(String::as_str)
        == Some(build::MANAGED_BY);
    let Some(password) = build::credentials::read_password(&secret).filter(|_| ours) else {
        return Ok(());
    };
    let Some(patch) =
        build::credentials::transport_patch(i, &secret, &password, ca_bundle.as_deref())?
    else {
        return Ok(());
    };
    api.patch(&name, &merge_patch_params(), &Patch::Merge(patch))
        .await
        .map_err(kube_err("patch", format!("Secret {ns}/{name}")))?;
    tracing::info!(
        secret = %format!("{ns}/{name}"),
        tls = ca_bundle.is_some(),
        "credentials Secret now names the instance's current transport"
    );
    Ok(())
}

/// The addresses the operator's slice for cluster `c` should carry: the cluster's pods; none when
/// the Service selects `c` (`select`) and Kubernetes' slices already carry every ready pod.
async fn slice_endpoints(
    lookup: Lookup<'_>,
    i: &RabbitMQInstance,
    select: Option<&str>,
    c: &ClusterRef,
) -> Result<Vec<PodEndpoint>> {
    let pods = endpoint_slice::pod_endpoints(&clusters::pods(lookup, c).await?);
    if select != Some(c.name.as_str()) {
        return Ok(pods);
    }
    let served = served_by_kubernetes(&kubernetes_slices(lookup.client, i).await?);
    let covered = pods
        .iter()
        .filter(|p| p.ready)
        .all(|p| served.contains(&p.ip.to_string()));
    Ok(if covered { Vec::new() } else { pods })
}

/// The slices Kubernetes' EndpointSlice controller keeps for the instance Service (those of its
/// selector), not the operator's.
async fn kubernetes_slices(
    client: &kube::Client,
    i: &RabbitMQInstance,
) -> Result<Vec<EndpointSlice>> {
    let ns = i.namespace().unwrap_or_default();
    let svc = build::instance_service_name(&i.name_any());
    let lp = ListParams::default().labels(&format!("{}={svc}", endpoint_slice::LABEL_SERVICE_NAME));
    Ok(Api::<EndpointSlice>::namespaced(client.clone(), &ns)
        .list(&lp)
        .await
        .map_err(kube_err(
            "list",
            format!("EndpointSlices of Service {ns}/{svc}"),
        ))?
        .items
        .into_iter()
        .filter(|s| !observe::is_operator_slice(s))
        .collect())
}

/// The addresses `slices` mark ready.
fn served_by_kubernetes(slices: &[EndpointSlice]) -> BTreeSet<String> {
    slices
        .iter()
        .flat_map(|s| &s.endpoints)
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .flat_map(|e| e.addresses.iter().cloned())
        .collect()
}

/// What routing depends on in an endpoint: address, readiness, pod.
fn endpoint_keys(eps: &[Endpoint]) -> Vec<(Vec<String>, Option<bool>, Option<String>)> {
    let mut keys: Vec<_> = eps
        .iter()
        .map(|e| {
            (
                e.addresses.clone(),
                e.conditions.as_ref().and_then(|c| c.ready),
                e.target_ref.as_ref().and_then(|r| r.name.clone()),
            )
        })
        .collect();
    keys.sort();
    keys
}

/// The cluster an operator slice of `i` routes to, from its cluster label: the instance's
/// dedicated cluster, or a SharedCluster the instance is placed, migrating or to be placed on.
fn slice_cluster(i: &RabbitMQInstance, ctx: &Context, cluster: &str) -> Option<ClusterRef> {
    let dedicated = observe::dedicated_ref(i);
    if dedicated.name == cluster {
        return Some(dedicated);
    }
    let st = i.status.as_ref();
    let recorded = st.and_then(|s| s.serving.clone()).into_iter().chain(
        st.and_then(|s| s.migration.as_ref())
            .into_iter()
            .flat_map(|m| [m.source.clone(), m.destination.clone()]),
    );
    recorded
        .chain(observe::shared_ref(i, &ctx.config))
        .find(|r| r.kind == ClusterKind::Shared && r.name == cluster)
}

/// The router's reconcile: rewrites the addresses of the instance's slices that went stale. A
/// slice is patched only against the version read (a slice the planner deleted or rewrote in the
/// meantime is left alone and looked at again).
pub async fn reconcile(i: Arc<RabbitMQInstance>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_timer(CONTROLLER);
    let ns = i.namespace().unwrap_or_default();
    let slices = observe::instance_slices(&ctx.client, &i).await?;
    if slices.is_empty() {
        return Ok(Action::await_change());
    }
    let svc_name = build::instance_service_name(&i.name_any());
    let svc = Api::<Service>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&svc_name)
        .await
        .map_err(kube_err("get", format!("Service {ns}/{svc_name}")))?;
    let select = svc
        .as_ref()
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.selector.as_ref())
        .and_then(|s| s.get(LABEL_CLUSTER))
        .cloned();
    let api = Api::<EndpointSlice>::namespaced(ctx.client.clone(), &ns);
    for s in slices {
        let Some(cluster) = s.labels().get(LABEL_CLUSTER).cloned() else {
            continue;
        };
        let Some(r) = slice_cluster(&i, &ctx, &cluster) else {
            continue;
        };
        let want = slice_endpoints(ctx.lookup(), &i, select.as_deref(), &r).await?;
        // Only the addresses are compared and patched; the ports stay as the planner wrote them.
        let built = endpoint_slice::build(&i, &cluster, &want, false)?;
        if endpoint_keys(&s.endpoints) == endpoint_keys(&built.endpoints) {
            continue;
        }
        let patch = json!({
            "metadata": {"resourceVersion": s.resource_version()},
            "endpoints": built.endpoints,
        });
        match api
            .patch(&s.name_any(), &merge_patch_params(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => tracing::info!(
                instance = %ObjectRef::from_obj(&*i),
                cluster = %cluster,
                addresses = ?want.iter().map(|p| p.ip).collect::<Vec<_>>(),
                "routing refreshed: the cluster's pod addresses changed"
            ),
            // Rewritten or deleted since it was read: look again at the current state.
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
                return Ok(Action::requeue(Duration::from_millis(500)));
            }
            Err(e) => {
                return Err(kube_err(
                    "patch",
                    format!("EndpointSlice {ns}/{}", s.name_any()),
                )(e));
            }
        }
    }
    Ok(Action::await_change())
}

/// Errors requeue soon: the router's work is a few reads and at most one write per slice.
pub fn error_policy(obj: Arc<RabbitMQInstance>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(CONTROLLER, err);
    tracing::warn!(instance = %ObjectRef::from_obj(&*obj), error = %err, "routing refresh failed");
    Action::requeue(Duration::from_secs(3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::EndpointConditions;

    fn instance(ns: &str) -> RabbitMQInstance {
        crate::build::testing::instance("orders", ns)
    }

    fn cref(kind: ClusterKind, ns: &str, name: &str) -> ClusterRef {
        ClusterRef {
            kind,
            name: name.into(),
            namespace: ns.into(),
        }
    }

    #[test]
    fn only_a_single_cluster_in_the_instance_namespace_is_selected() {
        let i = instance("team-a");
        let ded = cref(ClusterKind::Dedicated, "team-a", "orders-dedicated");
        let local = cref(ClusterKind::Shared, "team-a", "main");
        let remote = cref(ClusterKind::Shared, "tiermq-system", "main");
        assert_eq!(selected_cluster(&i, std::slice::from_ref(&ded)), Some(&ded));
        assert_eq!(
            selected_cluster(&i, std::slice::from_ref(&local)),
            Some(&local)
        );
        assert_eq!(selected_cluster(&i, std::slice::from_ref(&remote)), None);
        // Dual routing is the operator's alone: a selector would hide one side.
        assert_eq!(selected_cluster(&i, &[ded.clone(), local]), None);
        assert_eq!(selected_cluster(&i, &[]), None);
    }

    #[test]
    fn only_ready_addresses_count_as_served() {
        let ep = |ip: &str, ready: Option<bool>| Endpoint {
            addresses: vec![ip.into()],
            conditions: Some(EndpointConditions {
                ready,
                ..EndpointConditions::default()
            }),
            ..Endpoint::default()
        };
        let slice = EndpointSlice {
            endpoints: vec![
                ep("127.30.1.4", Some(true)),
                ep("127.30.1.5", Some(false)),
                ep("127.30.1.6", None),
            ],
            ..EndpointSlice::default()
        };
        let served = served_by_kubernetes(&[slice]);
        assert!(served.contains("127.30.1.4"));
        assert!(!served.contains("127.30.1.5"));
        // Unknown readiness means ready (the EndpointSlice API's rule).
        assert!(served.contains("127.30.1.6"));
    }

    #[test]
    fn endpoint_comparison_ignores_order_and_sees_a_new_address() {
        let ep = |ip: &str| Endpoint {
            addresses: vec![ip.into()],
            ..Endpoint::default()
        };
        let a = [ep("127.0.0.2"), ep("127.0.0.3")];
        let b = [ep("127.0.0.3"), ep("127.0.0.2")];
        assert_eq!(endpoint_keys(&a), endpoint_keys(&b));
        assert_ne!(
            endpoint_keys(&a),
            endpoint_keys(&[ep("127.0.0.9"), ep("127.0.0.3")])
        );
    }
}
