//! Broker clusters as Kubernetes objects: create or update one (shared or dedicated) from its
//! builders, delete a dedicated one, read its StatefulSet, and reach its management API and AMQP
//! port the way `--broker-addressing` says.
//!
//! Addressing: `service-dns` uses `<cluster>.<ns>.svc` (in-cluster); `cluster-ip` uses the cluster
//! Service's `spec.clusterIP`, which also works from a host process against the test cluster
//! (its kube-proxy forwards ClusterIPs) and from brokers that cannot resolve cluster DNS. Brokers
//! reach each other (shovels, federation) by the same address.
//!
//! External SharedClusters (`spec.external`, "bring your own cluster") are brokers the operator
//! did not create: [`ClusterNames`] says under which names their Service, admin Secret,
//! StatefulSet and pods are found, and nothing here creates, changes or deletes them.
//!
//! PVC retention: deleting a dedicated cluster deletes its volume claims too. The cluster is only
//! deleted after its tenant was proven drained (or the instance itself was deleted), so nothing
//! on them is still needed. Deletion goes by the cluster label and the owner's UID, kind by kind,
//! so it never touches an object the cluster's owner does not control.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret as SecretObject, Service};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use kube::runtime::reflector::{ObjectRef, Store};
use tiermq_broker::{ClientOptions, ClusterEndpoint, ManagementClient, RetryPolicy, ServerTls};
use tiermq_crd::{ClusterKind, ClusterRef, RabbitMQInstance, SharedCluster};

use crate::build::{
    self, AMQP_PORT, BrokerCluster, ClusterObjects, KEY_TLS_CA, KEY_TLS_CERT, KEY_TLS_KEY,
    MANAGEMENT_PORT, MANAGEMENT_TLS_PORT, Secret, admin_secret, generate_secret,
};
use crate::config::{BrokerAddressing, RunArgs};
use crate::controller::apply::{apply, create_once};
use crate::controller::context::Context;
use crate::error::{Error, Result, kube_err};

/// Creates or updates every object of a broker cluster. The two Secrets are created once (their
/// values are never regenerated); the rest is server-side applied, so in-tier changes (replicas,
/// resources) reach the StatefulSet.
///
/// An image change is an in-place rolling upgrade (see `image_change`): refused ones keep the
/// running image and end in [`Error::UnsupportedUpgrade`] after the other objects were applied;
/// allowed ones enable the cluster's stable feature flags first. Returns a note for a Normal
/// Event when the image changed.
pub async fn ensure_cluster(
    client: &kube::Client,
    config: &RunArgs,
    c: &BrokerCluster,
) -> Result<Option<String>> {
    // A TLS cluster whose Secret is missing or incomplete would leave its pods waiting for a
    // volume: say so on the owner (condition and Event) instead of creating them.
    if let Some(secret) = &c.tls_secret {
        tls_ca(client, &c.namespace, secret).await?;
    }
    // Fresh values are drawn every time but used only when the Secret does not exist yet.
    let (cookie, admin_password) = {
        let mut rng = rand::rng();
        (generate_secret(&mut rng), generate_secret(&mut rng))
    };
    // No `..`: an object added to the cluster does not compile until it is written here.
    let ClusterObjects {
        erlang_cookie,
        admin_secret,
        config_map,
        headless_service,
        service,
        statefulset,
        pdb,
        network_policy,
    } = c.objects(&cookie, &admin_password);
    // A generated Secret that is gone while the brokers exist is never made anew: the brokers
    // keep the cookie and admin password they booted with (on their volumes), and a new one
    // would only give 401s and nodes that cannot talk to each other.
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &c.namespace);
    let live = sts_api.get_opt(&c.name).await.map_err(kube_err(
        "get",
        format!("StatefulSet {}/{}", c.namespace, c.name),
    ))?;
    let brokers_exist = live.is_some();
    if brokers_exist {
        let secrets: Api<SecretObject> = Api::namespaced(client.clone(), &c.namespace);
        for s in [&erlang_cookie, &admin_secret] {
            let name = s.name_any();
            let present = secrets
                .get_opt(&name)
                .await
                .map_err(kube_err("get", format!("Secret {}/{name}", c.namespace)))?
                .is_some();
            if !present {
                return Err(Error::Secret {
                    name: format!("{}/{name}", c.namespace),
                    problem: format!(
                        "was deleted while the brokers of {} keep the value they booted with; \
                         the operator does not generate a new one (every broker call would be \
                         refused): restore the Secret from a backup, or delete StatefulSet {} \
                         and its volume claims to start the cluster empty",
                        c.name, c.name
                    ),
                });
            }
        }
    }
    create_once(client, &erlang_cookie).await?;
    create_once(client, &admin_secret).await?;
    apply(client, &config_map).await?;
    apply(client, &headless_service).await?;
    apply(client, &service).await?;
    let mut statefulset = statefulset;
    let running = live.as_ref().and_then(running_image);
    let change = match running {
        Some(running) if running != c.image => {
            Some(image_change(client, config, c, running).await?)
        }
        _ => None,
    };
    if let Some(ImageChange::Refused { running, .. }) = &change {
        set_broker_image(&mut statefulset, running);
    }
    match apply(client, &statefulset).await {
        Err(e) if forbidden_statefulset_update(&e) => recreate(client, &statefulset).await?,
        other => {
            other?;
        }
    }
    apply(client, &pdb).await?;
    match &network_policy {
        Some(np) => {
            apply(client, np).await?;
        }
        None => delete_own_network_policy(client, c).await?,
    }
    match change {
        Some(ImageChange::Refused { problem, .. }) => Err(Error::UnsupportedUpgrade(problem)),
        Some(ImageChange::Rolling { note }) => Ok(Some(note)),
        None => Ok(None),
    }
}

/// With NetworkPolicies turned off, removes the one the operator made for `c` before (one that
/// its owner does not control is left alone).
async fn delete_own_network_policy(client: &kube::Client, c: &BrokerCluster) -> Result<()> {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let name = build::network_policy_name(&c.name);
    let api: Api<NetworkPolicy> = Api::namespaced(client.clone(), &c.namespace);
    let live = api.get_opt(&name).await.map_err(kube_err(
        "get",
        format!("NetworkPolicy {}/{name}", c.namespace),
    ))?;
    let ours = live
        .as_ref()
        .and_then(|np| crate::controller::apply::controller(np))
        .is_some_and(|r| r.uid == c.owner.uid);
    if ours {
        crate::controller::apply::delete_if_exists::<NetworkPolicy>(client, &c.namespace, &name)
            .await?;
    }
    Ok(())
}

/// What happens to a running cluster whose spec names another image.
enum ImageChange {
    /// Not in place: the StatefulSet keeps `running`; `problem` says why and the way there.
    Refused { running: String, problem: String },
    /// The stable feature flags are enabled; the StatefulSet rolls to the new image.
    Rolling { note: String },
}

/// Decides an image change of a running cluster (from the StatefulSet's image to the spec's) by
/// [`tiermq_crd::versions::in_place_upgrade_problem`], and prepares an allowed one: every stable
/// feature flag that is disabled is enabled first, since a node of the next release refuses to
/// boot otherwise. Into another release that must succeed, or the cluster is not rolled
/// ([`Error::FeatureFlags`], tried again); within one release (a patch, a tag that names none)
/// the new image does not need them, so a failure is logged and the roll goes on — a cluster
/// whose brokers are down (a mistyped image) must still be able to take the corrected one.
async fn image_change(
    client: &kube::Client,
    config: &RunArgs,
    c: &BrokerCluster,
    running: &str,
) -> Result<ImageChange> {
    use tiermq_crd::versions::{image_version, in_place_upgrade_problem};
    if let Some(problem) = in_place_upgrade_problem(running, &c.image) {
        tracing::warn!(cluster = %c.name, running, wanted = %c.image, %problem, "image change refused");
        return Ok(ImageChange::Refused {
            running: running.to_string(),
            problem,
        });
    }
    let from = image_version(running);
    let to = image_version(&c.image);
    let new_release = from.is_none_or(|f| f.minor.is_none())
        || to.is_none_or(|t| t.minor.is_none())
        || from != to;
    let r = ClusterRef {
        kind: c.kind,
        name: c.name.clone(),
        namespace: c.namespace.clone(),
    };
    let enabled = async {
        // Rare (an image change): read from the API.
        let mc = management_client(Lookup::api(client), config, &r)
            .await?
            .ok_or_else(|| {
                Error::NotReady(format!(
                    "the management API of {} is not reachable yet",
                    label(&r)
                ))
            })?;
        mc.enable_stable_feature_flags()
            .await
            .map_err(|source| Error::FeatureFlags {
                image: c.image.clone(),
                source,
            })
    }
    .await;
    let note = match enabled {
        Ok(names) => format!(
            "enabled {} stable feature flag(s) ({}) before rolling the brokers from {running:?} \
             to {:?}",
            names.len(),
            if names.is_empty() {
                "none was disabled".to_string()
            } else {
                names.join(", ")
            },
            c.image
        ),
        Err(e) if new_release => return Err(e),
        Err(e) => {
            tracing::warn!(cluster = %c.name, error = %e, "feature flags not enabled; the image stays within its release, rolling anyway");
            format!(
                "rolling the brokers from {running:?} to {:?} (same release; feature flags \
                 could not be enabled: {e})",
                c.image
            )
        }
    };
    tracing::info!(cluster = %c.name, %note, "rolling upgrade");
    Ok(ImageChange::Rolling { note })
}

/// The image of the broker container of a StatefulSet.
pub fn running_image(sts: &StatefulSet) -> Option<&str> {
    sts.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == build::statefulset::CONTAINER_NAME)?
        .image
        .as_deref()
}

/// Sets the broker image in a built StatefulSet: the broker container's and the cookie init
/// container's (both run the broker image; either one changed would roll the pods).
fn set_broker_image(sts: &mut StatefulSet, image: &str) {
    let containers = sts
        .spec
        .iter_mut()
        .filter_map(|s| s.template.spec.as_mut())
        .flat_map(|p| {
            p.containers
                .iter_mut()
                .chain(p.init_containers.iter_mut().flatten())
        });
    let ours = [
        build::statefulset::CONTAINER_NAME,
        build::statefulset::COOKIE_INIT_CONTAINER,
    ];
    for c in containers.filter(|c| ours.contains(&c.name.as_str())) {
        c.image = Some(image.to_string());
    }
}

/// The API server refused a StatefulSet change because the field cannot change in place.
fn forbidden_statefulset_update(e: &Error) -> bool {
    matches!(
        e.cause(),
        Error::Kube { source: kube::Error::Api(s), .. }
            if s.code == 422 && s.message.contains("updates to statefulset spec for fields other than")
    )
}

/// (StorageClass, size) of each volume claim template.
fn claim_storage(sts: &StatefulSet) -> Vec<(Option<String>, Option<String>)> {
    sts.spec
        .iter()
        .flat_map(|s| s.volume_claim_templates.iter().flatten())
        .map(|c| {
            let spec = c.spec.as_ref();
            (
                spec.and_then(|s| s.storage_class_name.clone()),
                spec.and_then(|s| s.resources.as_ref())
                    .and_then(|r| r.requests.as_ref())
                    .and_then(|r| r.get("storage"))
                    .map(|q| q.0.clone()),
            )
        })
        .collect()
}

/// A StatefulSet field that cannot change in place (a cluster made by an older operator with
/// another pod management policy): delete the StatefulSet but not its pods (orphan), then create
/// it anew; the new one adopts the running pods, so brokers keep running. Storage is the
/// exception: its volumes cannot follow, and admission refuses such changes, so a cluster whose
/// storage differs from its spec is reported, never recreated.
async fn recreate(client: &kube::Client, desired: &StatefulSet) -> Result<()> {
    let ns = desired.namespace().unwrap_or_default();
    let name = desired.name_any();
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let what = format!("StatefulSet {ns}/{name}");
    let Some(live) = api
        .get_opt(&name)
        .await
        .map_err(kube_err("get", what.clone()))?
    else {
        apply(client, desired).await?;
        return Ok(());
    };
    if claim_storage(&live) != claim_storage(desired) {
        return Err(Error::InvalidSpec(format!(
            "{what} has storage {:?}, its spec asks for {:?}: volumes cannot change in place; \
             set the storage back (or move the tenants to a new cluster)",
            claim_storage(&live),
            claim_storage(desired)
        )));
    }
    tracing::warn!(statefulset = %what, "a field that cannot change in place differs: recreating the StatefulSet, keeping its pods");
    match api.delete(&name, &DeleteParams::orphan()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(kube_err("delete (orphan)", what)(e)),
    }
    for _ in 0..100 {
        if api
            .get_opt(&name)
            .await
            .map_err(kube_err("get", what.clone()))?
            .is_none()
        {
            apply(client, desired).await?;
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(Error::NotReady(format!(
        "{what} is being deleted (orphaning its pods) to be created anew"
    )))
}

/// Deletes every object of a dedicated cluster that the cluster's owner controls, kind by kind
/// ([`ClusterObjects::kinds`], found by the cluster label); absent objects are fine. Its data
/// volume claims go with its StatefulSet (retention policy `whenDeleted: Delete`, which the
/// StatefulSet controller also re-applies to the claims of a StatefulSet created anew), so the
/// operator needs no right to delete claims. An object that carries the label but is controlled by someone else (or by
/// nobody) is left alone. Returns how many objects were left to delete.
pub async fn delete_cluster(client: &kube::Client, c: &BrokerCluster) -> Result<usize> {
    let placeholder = Secret::new("");
    let objects = c.objects(&placeholder, &placeholder);
    let selector = format!("{}={}", build::LABEL_CLUSTER, c.name);
    let mut deleted = 0;
    for kind in &objects.kinds() {
        let ar = &kind.resource;
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &c.namespace, ar);
        let found = if kind.write == build::Write::CreateOnce {
            // Secrets: by name; the operator may not list them.
            let mut found = Vec::new();
            for name in objects.created_once_names() {
                let got = api.get_opt(&name).await.map_err(kube_err(
                    "get",
                    format!("{} {}/{name}", ar.kind, c.namespace),
                ))?;
                found.extend(got);
            }
            found
        } else {
            api.list(&ListParams::default().labels(&selector))
                .await
                .map_err(kube_err(
                    "list",
                    format!("{} of cluster {}/{}", ar.plural, c.namespace, c.name),
                ))?
                .items
        };
        for obj in found {
            let name = obj.name_any();
            if !controlled_by(&obj, &c.owner.uid) {
                tracing::warn!(kind = %ar.kind, object = %name, cluster = %c.name, "not deleting an object with the cluster's label that the cluster's owner does not control");
                continue;
            }
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => deleted += 1,
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    return Err(kube_err(
                        "delete",
                        format!("{} {}/{name}", ar.kind, c.namespace),
                    )(e));
                }
            }
        }
    }
    Ok(deleted)
}

/// `obj` has a controller owner reference with this UID.
fn controlled_by(obj: &DynamicObject, uid: &str) -> bool {
    crate::controller::apply::controller(obj).is_some_and(|r| r.uid == uid)
}

/// A label selector for the broker pods of every `RabbitmqCluster` (the RabbitMQ cluster
/// operator's labels; `app.kubernetes.io/name` is the cluster's name).
pub const RABBITMQ_CLUSTER_PODS: &str =
    "app.kubernetes.io/component=rabbitmq,app.kubernetes.io/name";

/// Where the objects of one broker cluster are found, by name and label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNames {
    /// The client Service (AMQP and management ports).
    pub service: String,
    /// The Secret with the admin's `username` and `password`.
    pub admin_secret: String,
    /// The brokers' StatefulSet (readiness, running image).
    pub statefulset: String,
    /// A label selector for the broker pods (EndpointSlices).
    pub pod_selector: String,
    /// The brokers are not the operator's: it never creates, changes or deletes them.
    pub external: bool,
    /// The TLS Secret (`spec.tls`) when the brokers serve AMQPS and management HTTPS.
    pub tls_secret: Option<String>,
}

impl ClusterNames {
    /// The names of a cluster the operator builds (shared or dedicated) called `name`.
    pub fn owned(name: &str) -> Self {
        Self {
            service: build::cluster_service_name(name),
            admin_secret: build::admin_secret_name(name),
            statefulset: name.to_string(),
            pod_selector: format!("{}={name}", build::LABEL_CLUSTER),
            external: false,
            tls_secret: None,
        }
    }

    /// The names the RabbitMQ cluster operator gives the objects of `RabbitmqCluster` `name`:
    /// client Service `<name>`, Secret `<name>-default-user`, StatefulSet `<name>-server`, pods
    /// labelled with the cluster's name and the `rabbitmq` component.
    pub fn rabbitmq_cluster(name: &str) -> Self {
        Self {
            service: name.to_string(),
            admin_secret: format!("{name}-default-user"),
            statefulset: format!("{name}-server"),
            pod_selector: format!(
                "app.kubernetes.io/name={name},app.kubernetes.io/component=rabbitmq"
            ),
            external: true,
            tls_secret: None,
        }
    }

    /// The names for SharedCluster `sc`: its external cluster's, else its own.
    pub fn for_shared_cluster(sc: &SharedCluster) -> Self {
        match &sc.spec.external {
            Some(e) => Self::rabbitmq_cluster(&e.rabbitmq_cluster_ref.name),
            None => Self {
                tls_secret: sc.spec.tls.as_ref().map(|t| t.secret_name.clone()),
                ..Self::owned(&sc.name_any())
            },
        }
    }
}

/// Where the objects a cluster's names depend on are read: the operator's caches (its
/// SharedClusters and instances, which every pass needs several times over) or, outside the
/// operator and on a cache miss, the API. A miss is not trusted as absence: a cache that has not
/// listed yet, or that has not seen an object created a moment ago, is empty, and taking that for
/// "the SharedCluster is gone" would plan from a cluster that is there.
#[derive(Clone, Copy)]
pub struct Lookup<'a> {
    /// The API client every other read and write goes through.
    pub client: &'a kube::Client,
    caches: Option<Caches<'a>>,
}

/// The operator's caches a [`Lookup`] reads through.
#[derive(Clone, Copy)]
struct Caches<'a> {
    shared: &'a Store<SharedCluster>,
    instances: &'a Store<RabbitMQInstance>,
    clients: &'a ClientCache,
}

impl<'a> Lookup<'a> {
    /// Every read from the API (the kubectl plugin's preview).
    pub fn api(client: &'a kube::Client) -> Self {
        Self {
            client,
            caches: None,
        }
    }

    /// SharedClusters and instances from the operator's reflector stores, management clients
    /// from `clients`, the rest from the API.
    pub fn cached(
        client: &'a kube::Client,
        shared: &'a Store<SharedCluster>,
        instances: &'a Store<RabbitMQInstance>,
        clients: &'a ClientCache,
    ) -> Self {
        Self {
            client,
            caches: Some(Caches {
                shared,
                instances,
                clients,
            }),
        }
    }

    /// SharedCluster `ns/name`, if it exists.
    pub async fn shared_cluster(&self, ns: &str, name: &str) -> Result<Option<Arc<SharedCluster>>> {
        cached_or_get(self.client, self.caches.map(|c| c.shared), ns, name).await
    }

    /// RabbitMQInstance `ns/name`, if it exists.
    pub async fn instance(&self, ns: &str, name: &str) -> Result<Option<Arc<RabbitMQInstance>>> {
        cached_or_get(self.client, self.caches.map(|c| c.instances), ns, name).await
    }
}

/// Object `ns/name` from `cache` when it holds it, else from the API.
async fn cached_or_get<K>(
    client: &kube::Client,
    cache: Option<&Store<K>>,
    ns: &str,
    name: &str,
) -> Result<Option<Arc<K>>>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    if let Some(o) = cache.and_then(|c| c.get(&ObjectRef::new(name).within(ns))) {
        return Ok(Some(o));
    }
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let got = api
        .get_opt(name)
        .await
        .map_err(kube_err("get", format!("{} {ns}/{name}", K::kind(&()))))?;
    Ok(got.map(Arc::new))
}

/// The names of cluster `r`. A shared one is looked up (it may be external); one whose
/// SharedCluster is gone gets the names the operator would have given it.
pub async fn names(lookup: Lookup<'_>, r: &ClusterRef) -> Result<ClusterNames> {
    if r.kind == ClusterKind::Dedicated {
        // A dedicated cluster's TLS is its instance's `spec.dedicated.tls`.
        let instance = match r
            .name
            .strip_suffix(tiermq_crd::names::DEDICATED_CLUSTER_SUFFIX)
        {
            Some(i) => lookup.instance(&r.namespace, i).await?,
            None => None,
        };
        return Ok(ClusterNames {
            tls_secret: instance
                .and_then(|i| i.spec.dedicated.tls.clone())
                .map(|t| t.secret_name),
            ..ClusterNames::owned(&r.name)
        });
    }
    let sc = lookup.shared_cluster(&r.namespace, &r.name).await?;
    Ok(sc.map_or_else(
        || ClusterNames::owned(&r.name),
        |sc| ClusterNames::for_shared_cluster(&sc),
    ))
}

/// The cluster's StatefulSet, if it exists.
pub async fn statefulset(lookup: Lookup<'_>, r: &ClusterRef) -> Result<Option<StatefulSet>> {
    let name = names(lookup, r).await?.statefulset;
    let api: Api<StatefulSet> = Api::namespaced(lookup.client.clone(), &r.namespace);
    api.get_opt(&name).await.map_err(kube_err(
        "get",
        format!("StatefulSet {}/{name}", r.namespace),
    ))
}

/// The cluster's pods (for EndpointSlices).
pub async fn pods(lookup: Lookup<'_>, r: &ClusterRef) -> Result<Vec<Pod>> {
    let selector = names(lookup, r).await?.pod_selector;
    let api: Api<Pod> = Api::namespaced(lookup.client.clone(), &r.namespace);
    let lp = ListParams::default().labels(&selector);
    Ok(api
        .list(&lp)
        .await
        .map_err(kube_err(
            "list",
            format!("pods of cluster {}/{}", r.namespace, r.name),
        ))?
        .items)
}

/// Host (no port) under which the operator and other brokers reach cluster `r`; `None` when the
/// cluster Service has no ClusterIP yet (cluster-ip addressing).
pub async fn host(lookup: Lookup<'_>, config: &RunArgs, r: &ClusterRef) -> Result<Option<String>> {
    let name = names(lookup, r).await?.service;
    match config.broker_addressing {
        BrokerAddressing::ServiceDns => Ok(Some(build::service_host(&name, &r.namespace))),
        BrokerAddressing::ClusterIp => {
            let api: Api<Service> = Api::namespaced(lookup.client.clone(), &r.namespace);
            let svc = api
                .get_opt(&name)
                .await
                .map_err(kube_err("get", format!("Service {}/{name}", r.namespace)))?;
            Ok(svc
                .and_then(|s| s.spec)
                .and_then(|s| s.cluster_ip)
                .filter(|ip| !ip.is_empty() && ip != "None"))
        }
    }
}

/// A name for logs and broker errors: `shared/<ns>/<name>` or `dedicated/<ns>/<name>`.
pub fn label(r: &ClusterRef) -> String {
    let kind = match r.kind {
        ClusterKind::Shared => "shared",
        ClusterKind::Dedicated => "dedicated",
    };
    format!("{kind}/{}/{}", r.namespace, r.name)
}

/// A management-API client for cluster `r`, logged in with its admin Secret. `None` when the
/// Secret or the address does not exist yet.
pub async fn management_client(
    lookup: Lookup<'_>,
    config: &RunArgs,
    r: &ClusterRef,
) -> Result<Option<ManagementClient>> {
    let clients = lookup.caches.map(|c| c.clients);
    if let Some(mc) = clients.and_then(|c| c.recent(&label(r))) {
        return Ok(Some(mc));
    }
    let found = names(lookup, r).await?;
    let secrets: Api<SecretObject> = Api::namespaced(lookup.client.clone(), &r.namespace);
    let name = found.admin_secret;
    let Some(secret) = secrets
        .get_opt(&name)
        .await
        .map_err(kube_err("get", format!("Secret {}/{name}", r.namespace)))?
    else {
        return Ok(None);
    };
    let admin = admin_secret::read_admin(&secret).ok_or_else(|| Error::Secret {
        name: format!("{}/{name}", r.namespace),
        problem: if found.external {
            "lacks a username or password: it is the admin Secret of an external cluster, \
             which the operator does not write; restore it where it came from"
                .into()
        } else {
            "lacks a username or password; delete it so the operator creates it again \
             (only while the cluster's brokers are not yet initialised)"
                .into()
        },
    })?;
    let Some(host) = host(lookup, config, r).await? else {
        return Ok(None);
    };
    // A TLS cluster is managed over HTTPS, trusting only its own CA, under its Service's name.
    let tls = match &found.tls_secret {
        Some(secret) => Some(ServerTls {
            ca_pem: tls_ca(lookup.client, &r.namespace, secret).await?,
            server_name: build::service_host(&found.service, &r.namespace),
        }),
        None => None,
    };
    let url = match tls {
        Some(_) => format!("https://{host}:{MANAGEMENT_TLS_PORT}"),
        None => format!("http://{host}:{MANAGEMENT_PORT}"),
    };
    let endpoint = ClusterEndpoint {
        cluster: label(r),
        url,
        username: admin.username,
        password: admin.password,
    };
    let built = Built {
        url: endpoint.url.clone(),
        username: endpoint.username.clone(),
        password: endpoint.password.clone(),
        tls: tls.clone(),
        observer: config
            .broker_observer
            .as_ref()
            .map(|o| std::sync::Arc::as_ptr(&o.0) as *const () as usize),
    };
    if let Some(mc) = clients.and_then(|c| c.get(&endpoint.cluster, &built)) {
        return Ok(Some(mc));
    }
    // A reconcile should not hang on one broker: few, short retries; the controller requeues.
    let options = ClientOptions {
        retry: RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::default()
        },
        connect_timeout: std::time::Duration::from_secs(2),
        request_timeout: std::time::Duration::from_secs(30),
        tls,
        observer: config.broker_observer.clone(),
        ..ClientOptions::default()
    };
    let cluster = endpoint.cluster.clone();
    let mc = ManagementClient::with_options(endpoint, options)?;
    if let Some(c) = clients {
        c.put(cluster, built, mc.clone());
    }
    Ok(Some(mc))
}

/// What a cached management client was built from: a change to any of it (a rotated admin
/// password, a new address or CA) builds a new client.
#[derive(PartialEq, Eq)]
struct Built {
    url: String,
    username: String,
    password: tiermq_broker::Secret,
    tls: Option<ServerTls>,
    /// Identity of the request observer (tests and the bench count requests through it).
    observer: Option<usize>,
}

/// Management clients by cluster, shared by every pass of every instance (one per operator
/// run, in its [`Context`]).
///
/// Each client holds its own HTTP connection pool, so one built per pass opened connections per
/// pass: the scale bench (1,000 instances on three SharedClusters) saw 409 connections to the
/// brokers at once. And what a client is built from (the cluster's names, admin Secret and
/// Service) took three to four API reads per use, several uses a pass. A client whose inputs were
/// read less than [`CLIENT_FRESH`] ago is handed out as it is; after that they are read again
/// and a change (a rotated admin password, a new address or CA) builds a new client. The pool
/// keeps idle connections 30 s; an entry not asked for in [`CLIENT_IDLE`] is dropped.
#[derive(Default)]
pub struct ClientCache(std::sync::Mutex<HashMap<String, CachedClient>>);

struct CachedClient {
    built: Built,
    client: ManagementClient,
    /// When `built` was last read from the API and found unchanged.
    checked: Instant,
    used: Instant,
}

/// How long a cached client is used without reading what it was built from again: at most this
/// long after a password rotation or a Service change, calls fail and are retried.
pub const CLIENT_FRESH: Duration = Duration::from_secs(5);

/// How long a cached client stands unused (a deleted cluster's is dropped after this).
pub const CLIENT_IDLE: Duration = Duration::from_secs(600);

impl ClientCache {
    /// The client of `cluster` if its inputs were read within [`CLIENT_FRESH`].
    fn recent(&self, cluster: &str) -> Option<ManagementClient> {
        let now = Instant::now();
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.get_mut(cluster)?;
        (now.duration_since(e.checked) < CLIENT_FRESH).then(|| {
            e.used = now;
            e.client.clone()
        })
    }

    /// The client of `cluster` if it was built from `built` (just read again).
    fn get(&self, cluster: &str, built: &Built) -> Option<ManagementClient> {
        let now = Instant::now();
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.get_mut(cluster)?;
        (e.built == *built).then(|| {
            e.checked = now;
            e.used = now;
            e.client.clone()
        })
    }

    fn put(&self, cluster: String, built: Built, client: ManagementClient) {
        let now = Instant::now();
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, e| now.duration_since(e.used) < CLIENT_IDLE);
        m.insert(
            cluster,
            CachedClient {
                built,
                client,
                checked: now,
                used: now,
            },
        );
    }
}

/// The `ca.crt` of TLS Secret `ns/name`, checked to hold the three keys the brokers mount. A
/// missing Secret or key is an [`Error::Secret`] that says what to fix (the brokers cannot start
/// without it either). Only the CA is returned; the key is never read into memory here.
pub async fn tls_ca(client: &kube::Client, ns: &str, name: &str) -> Result<Vec<u8>> {
    let api: Api<SecretObject> = Api::namespaced(client.clone(), ns);
    let secret = api
        .get_opt(name)
        .await
        .map_err(kube_err("get", format!("Secret {ns}/{name}")))?;
    let problem = |problem: String| Error::Secret {
        name: format!("{ns}/{name}"),
        problem,
    };
    let Some(secret) = secret else {
        return Err(problem(
            "does not exist; spec.tls.secretName must name a Secret with tls.crt, tls.key and \
             ca.crt in the cluster's namespace (cert-manager's Certificate writes that shape)"
                .into(),
        ));
    };
    let data = secret.data.unwrap_or_default();
    let missing: Vec<&str> = [KEY_TLS_CERT, KEY_TLS_KEY, KEY_TLS_CA]
        .into_iter()
        .filter(|k| data.get(*k).is_none_or(|v| v.0.is_empty()))
        .collect();
    if !missing.is_empty() {
        return Err(problem(format!(
            "lacks {}: a TLS Secret needs tls.crt, tls.key and ca.crt (the CA the operator \
             verifies the brokers with)",
            missing.join(", ")
        )));
    }
    Ok(data[KEY_TLS_CA].0.clone())
}

/// The URI of the tenant on cluster `to` as the brokers of cluster `from` reach it (the
/// destination of `from`'s drain shovels), credentials included.
///
/// `amqps://…:5671?cacertfile=…&verify=verify_peer&server_name_indication=<to's Service name>`
/// when both clusters have TLS and the same CA: a broker can only trust the CA mounted beside its
/// own certificate (`/etc/rabbitmq-tls/ca.crt`). Otherwise `amqp://…:5672`, the plain listener
/// every cluster keeps, so a link between clusters of different CAs still works (unencrypted).
pub async fn tenant_amqp_uri(
    ctx: &Context,
    from: &ClusterRef,
    to: &ClusterRef,
    tenant: &str,
    password: &str,
) -> Result<tiermq_broker::Secret> {
    let host = host(ctx.lookup(), &ctx.config, to).await?.ok_or_else(|| {
        Error::NotReady(format!("the Service of {} has no ClusterIP yet", label(to)))
    })?;
    let (local, remote) = (
        names(ctx.lookup(), from).await?,
        names(ctx.lookup(), to).await?,
    );
    if let (Some(local_tls), Some(remote_tls)) = (&local.tls_secret, &remote.tls_secret) {
        let same_ca = tls_ca(&ctx.client, &from.namespace, local_tls).await?
            == tls_ca(&ctx.client, &to.namespace, remote_tls).await?;
        let query = tiermq_broker::steps::verified_tls_query(
            &format!("{}/{}", build::TLS_MOUNT_PATH, KEY_TLS_CA),
            &build::service_host(&remote.service, &to.namespace),
        );
        match query {
            Some(q) if same_ca => {
                let uri = build::credentials::amqps_uri(tenant, password, &host, tenant);
                return Ok(tiermq_broker::Secret::new(format!("{uri}?{q}")));
            }
            _ => tracing::debug!(
                from = %label(from),
                to = %label(to),
                "the clusters' CAs differ (or a name cannot go in a URI): the link uses the \
                 plain AMQP port"
            ),
        }
    }
    debug_assert_eq!(AMQP_PORT, 5672);
    Ok(tiermq_broker::Secret::new(build::credentials::amqp_uri(
        tenant, password, &host, tenant,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared_cluster(spec: serde_json::Value) -> SharedCluster {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "tiermq.io/v1alpha1", "kind": "SharedCluster",
            "metadata": {"name": "main", "namespace": "ops"},
            "spec": spec
        }))
        .unwrap()
    }

    #[test]
    fn an_external_shared_cluster_is_found_under_the_cluster_operators_names() {
        let own = ClusterNames::for_shared_cluster(&shared_cluster(serde_json::json!({})));
        assert_eq!(own, ClusterNames::owned("main"));
        assert_eq!(
            (own.service.as_str(), own.admin_secret.as_str()),
            ("main", "main-admin")
        );
        assert_eq!(own.pod_selector, "tiermq.io/cluster=main");
        assert!(!own.external);
        let byo = ClusterNames::for_shared_cluster(&shared_cluster(
            serde_json::json!({"external": {"rabbitmqClusterRef": {"name": "prod"}}}),
        ));
        assert_eq!(
            byo,
            ClusterNames {
                service: "prod".into(),
                admin_secret: "prod-default-user".into(),
                statefulset: "prod-server".into(),
                pod_selector: "app.kubernetes.io/name=prod,app.kubernetes.io/component=rabbitmq"
                    .into(),
                external: true,
                tls_secret: None,
            }
        );
        // spec.tls names the TLS Secret of an own cluster; an external one ignores it.
        let tls = ClusterNames::for_shared_cluster(&shared_cluster(
            serde_json::json!({"tls": {"secretName": "main-tls"}}),
        ));
        assert_eq!(tls.tls_secret.as_deref(), Some("main-tls"));
        let byo_tls = ClusterNames::for_shared_cluster(&shared_cluster(serde_json::json!({
            "external": {"rabbitmqClusterRef": {"name": "prod"}},
            "tls": {"secretName": "prod-tls"}
        })));
        assert_eq!(byo_tls.tls_secret, None);
    }

    #[test]
    fn a_refused_image_keeps_the_running_one_in_the_built_statefulset() {
        let c = crate::build::testing::shared();
        let mut sts = crate::build::statefulset::build(&c);
        assert_eq!(running_image(&sts), Some(c.image.as_str()));
        set_broker_image(&mut sts, "rabbitmq:3.10-management");
        assert_eq!(running_image(&sts), Some("rabbitmq:3.10-management"));
        // The cookie init container runs the same image: the pod template stays as it runs.
        let pod = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let inits = pod.init_containers.as_ref().unwrap();
        assert!(
            inits
                .iter()
                .all(|i| i.image.as_deref() == Some("rabbitmq:3.10-management"))
        );
        let e = Error::during(crate::error::Stage::Apply)(Error::UnsupportedUpgrade("why".into()));
        assert_eq!(
            e.degraded_reason(),
            tiermq_crd::conditions::reasons::UNSUPPORTED_UPGRADE
        );
        assert!(matches!(e.retry(), crate::error::Retry::Report(_)));
    }

    /// One client per cluster while what it was built from stays the same; a rotated password
    /// (or a new address) gets a new one.
    #[test]
    fn a_cached_client_is_reused_until_its_credentials_or_address_change() {
        let cache = ClientCache::default();
        let built = |url: &str, password: &str| Built {
            url: url.into(),
            username: "admin".into(),
            password: tiermq_broker::Secret::new(password),
            tls: None,
            observer: None,
        };
        let endpoint = ClusterEndpoint {
            cluster: "shared/ns/main".into(),
            url: "http://127.0.0.1:15672".into(),
            username: "admin".into(),
            password: tiermq_broker::Secret::new("one"),
        };
        let mc = ManagementClient::new(endpoint).unwrap();
        let here = "http://127.0.0.1:15672";
        assert!(cache.get("shared/ns/main", &built(here, "one")).is_none());
        cache.put("shared/ns/main".into(), built(here, "one"), mc);
        assert!(cache.get("shared/ns/main", &built(here, "one")).is_some());
        assert!(cache.get("shared/ns/main", &built(here, "two")).is_none());
        assert!(
            cache
                .get("shared/ns/main", &built("http://127.0.0.2:15672", "one"))
                .is_none()
        );
        assert!(cache.get("shared/ns/other", &built(here, "one")).is_none());
        // Read a moment ago: handed out without reading its inputs again.
        assert!(cache.recent("shared/ns/main").is_some());
        assert!(cache.recent("shared/ns/other").is_none());
        // Read longer ago: its inputs are read again first.
        cache
            .0
            .lock()
            .unwrap()
            .get_mut("shared/ns/main")
            .unwrap()
            .checked -= CLIENT_FRESH;
        assert!(cache.recent("shared/ns/main").is_none());
        assert!(cache.get("shared/ns/main", &built(here, "one")).is_some());
        assert!(cache.recent("shared/ns/main").is_some());
    }
}
