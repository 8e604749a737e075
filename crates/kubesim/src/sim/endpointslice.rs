//! EndpointSlice controller for Services that have a selector.
//!
//! For each such Service it keeps EndpointSlices named `<service>-sim-<n>` (one per distinct set
//! of resolved ports), labelled with the Service's own labels, `kubernetes.io/service-name` and
//! `endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`, owned by the
//! Service. Endpoints are the matching pods that have a pod IP and are not terminating;
//! `conditions.ready` follows the pod's Ready condition (or is true for every pod when the Service
//! sets `publishNotReadyAddresses`). A named `targetPort` is resolved per pod from its container
//! ports. Slices of Services without a selector are never touched (the tiermq operator writes
//! those); if a Service loses its selector, the slices this controller made are removed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{Notify, watch};

use super::statefulset::pod_ready;
use super::{
    ENDPOINTSLICE_CONTROLLER, LABEL_MANAGED_BY, LABEL_SERVICE_NAME, Result, SimConfig, SimError,
    is_not_found, key_of, map_selector_matches, spawn_trigger, wait_next,
};

pub(crate) async fn run(client: Client, cfg: SimConfig, mut stop: watch::Receiver<bool>) {
    let notify = Arc::new(Notify::new());
    let triggers = [
        spawn_trigger::<Service>(client.clone(), notify.clone(), stop.clone()),
        spawn_trigger::<Pod>(client.clone(), notify.clone(), stop.clone()),
    ];
    loop {
        let started = std::time::Instant::now();
        if let Err(e) = reconcile_all(&client).await {
            tracing::warn!(error = %e, "endpointslice controller pass failed");
        }
        if !wait_next(&notify, &mut stop, cfg.resync, started).await {
            break;
        }
    }
    for t in triggers {
        t.abort();
    }
}

async fn reconcile_all(client: &Client) -> Result<()> {
    let services = Api::<Service>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| SimError::kube("list", "Service", "all namespaces", e))?;
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| SimError::kube("list", "Pod", "all namespaces", e))?;
    let slices = Api::<EndpointSlice>::all(client.clone())
        .list(
            &ListParams::default()
                .labels(&format!("{LABEL_MANAGED_BY}={ENDPOINTSLICE_CONTROLLER}")),
        )
        .await
        .map_err(|e| SimError::kube("list", "EndpointSlice", "all namespaces", e))?;

    let mut wanted_keys = BTreeSet::new();
    for svc in &services.items {
        let ns = svc.namespace().unwrap_or_default();
        // An empty selector is no selector: a real API server stores `{}` as absent.
        let Some(selector) = svc
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .filter(|s| !s.is_empty())
        else {
            continue;
        };
        if svc.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let matching: Vec<&Pod> = pods
            .items
            .iter()
            .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
            .filter(|p| map_selector_matches(&selector, p.labels()))
            .collect();
        let desired = build_slices(svc, &matching);
        let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
        for want in desired {
            let name = want.name_any();
            wanted_keys.insert(format!("{ns}/{name}"));
            let existing = slices
                .items
                .iter()
                .find(|s| s.namespace().as_deref() == Some(ns.as_str()) && s.name_any() == name);
            let result = match existing {
                Some(cur) if same_content(cur, &want) => Ok(()),
                Some(cur) => {
                    let mut next = want.clone();
                    next.metadata.resource_version = cur.resource_version();
                    api.replace(&name, &PostParams::default(), &next)
                        .await
                        .map(|_| ())
                }
                None => api.create(&PostParams::default(), &want).await.map(|_| ()),
            };
            if let Err(e) = result {
                tracing::warn!(slice = %format!("{ns}/{name}"), error = %e, "could not write EndpointSlice; retrying");
            }
        }
    }
    // Our slices whose Service is gone, lost its selector, or needs fewer slices now.
    for s in &slices.items {
        if wanted_keys.contains(&key_of(s)) {
            continue;
        }
        let ns = s.namespace().unwrap_or_default();
        match Api::<EndpointSlice>::namespaced(client.clone(), &ns)
            .delete(&s.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                tracing::warn!(slice = %key_of(s), error = %e, "could not delete stale EndpointSlice")
            }
        }
    }
    Ok(())
}

fn same_content(a: &EndpointSlice, b: &EndpointSlice) -> bool {
    a.endpoints == b.endpoints
        && a.ports == b.ports
        && a.address_type == b.address_type
        && a.metadata.labels == b.metadata.labels
}

/// Resolves a Service port's `targetPort` for one pod; None when a named port is not declared.
fn resolve_target(target: Option<&IntOrString>, port: i32, pod: &Pod) -> Option<i32> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(p)) => Some(*p),
        Some(IntOrString::String(name)) => match name.parse::<i32>() {
            Ok(p) => Some(p),
            Err(_) => pod
                .spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port),
        },
    }
}

/// (port name, resolved port, protocol)
type PortKey = (Option<String>, i32, String);

/// The slices a Service with a selector should have, given its matching pods (pure).
pub fn build_slices(svc: &Service, pods: &[&Pod]) -> Vec<EndpointSlice> {
    let name = svc.name_any();
    let spec = svc.spec.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    // Group endpoints by their resolved port list, like Kubernetes does.
    let mut groups: BTreeMap<Vec<PortKey>, Vec<Endpoint>> = BTreeMap::new();
    let mut sorted: Vec<&&Pod> = pods.iter().collect();
    sorted.sort_by_key(|p| p.name_any());
    for pod in sorted {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
            continue;
        };
        let mut ports = Vec::new();
        for sp in spec.ports.iter().flatten() {
            if let Some(p) = resolve_target(sp.target_port.as_ref(), sp.port, pod) {
                ports.push((
                    sp.name.clone(),
                    p,
                    sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                ));
            }
        }
        let ready = publish_not_ready || pod_ready(pod);
        let pspec = pod.spec.as_ref();
        groups.entry(ports).or_default().push(Endpoint {
            addresses: vec![ip],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                serving: Some(ready),
                terminating: Some(false),
            }),
            hostname: pspec.and_then(|s| s.hostname.clone()),
            node_name: Some(super::NODE_NAME.into()),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: pod.namespace(),
                name: Some(pod.name_any()),
                uid: pod.uid(),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if groups.is_empty() {
        // An empty slice still tells readers "no endpoints", with the Service's ports.
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|sp| match &sp.target_port {
                None => Some((
                    sp.name.clone(),
                    sp.port,
                    sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                )),
                Some(IntOrString::Int(p)) => Some((
                    sp.name.clone(),
                    *p,
                    sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                )),
                Some(IntOrString::String(_)) => None,
            })
            .collect();
        groups.insert(ports, Vec::new());
    }
    // Like Kubernetes' controller, the Service's own labels are copied onto its slices (so a
    // client listing slices by a label of the Service also finds these; the managed-by label
    // tells them apart).
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(LABEL_SERVICE_NAME.to_string(), name.clone());
    labels.insert(
        LABEL_MANAGED_BY.to_string(),
        ENDPOINTSLICE_CONTROLLER.to_string(),
    );
    groups
        .into_iter()
        .enumerate()
        .map(|(i, (ports, endpoints))| EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{name}-sim-{i}")),
                namespace: svc.namespace(),
                labels: Some(labels.clone()),
                owner_references: Some(vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Service".into(),
                    name: name.clone(),
                    uid: svc.uid().unwrap_or_default(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints,
            ports: Some(
                ports
                    .into_iter()
                    .map(|(n, p, proto)| EndpointPort {
                        name: n,
                        port: Some(p),
                        protocol: Some(proto),
                        app_protocol: None,
                    })
                    .collect(),
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn slices_follow_pod_readiness_and_named_ports() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "rmq", "namespace": "t", "uid": "s1",
                         "labels": {"team": "a", LABEL_MANAGED_BY: "someone"}},
            "spec": {"selector": {"app": "rmq"}, "clusterIP": "127.20.1.1",
                     "ports": [{"name": "amqp", "port": 5672, "targetPort": "amqp"}]}
        }))
        .unwrap();
        let pod = |name: &str, ip: &str, ready: &str| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "t", "labels": {"app": "rmq"}},
                "spec": {"containers": [{"name": "c", "ports": [{"name": "amqp", "containerPort": 5673}]}]},
                "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": ready}]}
            }))
            .unwrap()
        };
        let a = pod("rmq-0", "127.30.1.1", "True");
        let b = pod("rmq-1", "127.30.1.2", "False");
        let slices = build_slices(&svc, &[&a, &b]);
        assert_eq!(slices.len(), 1);
        let s = &slices[0];
        let labels = s.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_SERVICE_NAME], "rmq");
        // The Service's labels are copied; the controller's own ones win.
        assert_eq!(labels["team"], "a");
        assert_eq!(labels[LABEL_MANAGED_BY], ENDPOINTSLICE_CONTROLLER);
        assert_eq!(s.ports.as_ref().unwrap()[0].port, Some(5673));
        let ready: Vec<(String, Option<bool>)> = s
            .endpoints
            .iter()
            .map(|e| (e.addresses[0].clone(), e.conditions.as_ref().unwrap().ready))
            .collect();
        assert_eq!(
            ready,
            vec![
                ("127.30.1.1".into(), Some(true)),
                ("127.30.1.2".into(), Some(false))
            ]
        );
        let empty = build_slices(&svc, &[]);
        assert_eq!(empty.len(), 1);
        assert!(empty[0].endpoints.is_empty());
    }
}
