//! "kube-proxy": makes every Service ClusterIP reachable on the host.
//!
//! For each Service with a ClusterIP (not headless, not ExternalName) it listens on
//! `clusterIP:port` for every TCP service port. A new connection goes to the next ready endpoint in
//! round-robin order; the endpoints are taken from the Service's EndpointSlices (label
//! `kubernetes.io/service-name`, whoever wrote them: the EndpointSlice controller for Services with
//! a selector, the tiermq operator for its selector-less Services). The endpoint port is the slice
//! port whose name equals the service port's name. `conditions.ready` absent counts as ready, as
//! the API documents.
//!
//! Established connections are independent tasks: when the endpoints change they stay where they
//! are; only new connections follow. A connection arriving while there is no ready endpoint is
//! closed at once (a real kube-proxy rejects it). Listeners go away with their Service; connections
//! already forwarded stay until either side closes them or the cluster shuts down.
//!
//! `type: LoadBalancer` Services additionally get `status.loadBalancer.ingress[0].ip` = their
//! ClusterIP (NodePorts are not simulated).
//!
//! The operator runs as a host process against kubesim and reaches brokers exactly as it would
//! from inside a real cluster: through the Service's ClusterIP (`spec.clusterIP:port`).
//!
//! Fault injection for tests ([`ProxyFaults`]): new connections to a given service port (on every
//! ClusterIP, or on one Service's) can be
//! answered `HTTP 500` without reaching the backend, left hanging, or reset; connections already
//! forwarded to that port are closed when the fault starts (so pooled keep-alive connections meet
//! it too).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::{LABEL_SERVICE_NAME, Result, SimConfig, SimError, spawn_trigger, wait_next};

/// The ready backends of one service port, shared between the reconciler and the accept loop.
#[derive(Default)]
struct Backends {
    list: RwLock<Vec<SocketAddr>>,
    next: AtomicUsize,
}

impl Backends {
    fn pick(&self) -> Option<SocketAddr> {
        let list = self.list.read().unwrap_or_else(|e| e.into_inner());
        if list.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % list.len();
        Some(list[i])
    }
}

struct Forwarder {
    backends: Arc<Backends>,
    task: JoinHandle<()>,
}

/// How kube-proxy treats a new connection to a faulted service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyFaultMode {
    /// Read the request, answer `HTTP/1.1 500` and close (an HTTP server failing).
    Http500,
    /// Accept and never answer or close until the fault ends (a server that timed out).
    Hang,
    /// Close at once (a connection refused or reset).
    Reset,
}

/// Where a fault applies: `(None, port)` every ClusterIP, `(Some(ip), port)` that Service only.
type FaultKey = (Option<IpAddr>, u16);

/// Faults by service port (on every ClusterIP, or on one), shared by every forwarder of one
/// cluster; see the module docs.
#[derive(Clone)]
pub struct ProxyFaults {
    ports: Arc<RwLock<BTreeMap<FaultKey, ProxyFaultMode>>>,
    /// Bumped by every [`ProxyFaults::set`]: forwarded connections on a port that just got a
    /// fault are closed, so that pooled (keep-alive) connections meet the fault too.
    changed: Arc<watch::Sender<u64>>,
    /// Connections failed by a fault so far.
    hits: Arc<AtomicUsize>,
}

impl Default for ProxyFaults {
    fn default() -> Self {
        ProxyFaults {
            ports: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
            hits: Arc::default(),
        }
    }
}

impl ProxyFaults {
    /// Connections to any ClusterIP on `port` get `mode` until [`ProxyFaults::clear`]; the ones
    /// already forwarded there are closed.
    pub fn set(&self, port: u16, mode: ProxyFaultMode) {
        self.insert((None, port), mode);
    }

    /// Connections to `ip:port` only (one Service's ClusterIP) get `mode` until
    /// [`ProxyFaults::clear_at`]; the ones already forwarded there are closed.
    pub fn set_at(&self, ip: IpAddr, port: u16, mode: ProxyFaultMode) {
        self.insert((Some(ip), port), mode);
    }

    fn insert(&self, key: FaultKey, mode: ProxyFaultMode) {
        self.ports
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, mode);
        self.changed.send_modify(|n| *n += 1);
    }

    /// No more faults on `port` (set with [`ProxyFaults::set`]).
    pub fn clear(&self, port: u16) {
        self.ports
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(None, port));
    }

    /// No more faults on `ip:port` (set with [`ProxyFaults::set_at`]).
    pub fn clear_at(&self, ip: IpAddr, port: u16) {
        self.ports
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(Some(ip), port));
    }

    /// How many new connections a fault has failed so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }

    fn get(&self, front: SocketAddr) -> Option<ProxyFaultMode> {
        let ports = self.ports.read().unwrap_or_else(|e| e.into_inner());
        ports
            .get(&(Some(front.ip()), front.port()))
            .or_else(|| ports.get(&(None, front.port())))
            .copied()
    }

    /// Resolves once the service address `front` gets a fault.
    async fn faulted(&self, front: SocketAddr) {
        let mut rx = self.changed.subscribe();
        loop {
            if self.get(front).is_some() {
                return;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

pub(crate) async fn run(
    client: Client,
    cfg: SimConfig,
    faults: ProxyFaults,
    mut stop: watch::Receiver<bool>,
) {
    let notify = Arc::new(Notify::new());
    let triggers = [
        spawn_trigger::<Service>(client.clone(), notify.clone(), stop.clone()),
        spawn_trigger::<EndpointSlice>(client.clone(), notify.clone(), stop.clone()),
    ];
    let mut forwarders: BTreeMap<SocketAddr, Forwarder> = BTreeMap::new();
    loop {
        let started = std::time::Instant::now();
        if let Err(e) = reconcile(&client, &mut forwarders, &faults, &stop).await {
            tracing::warn!(error = %e, "kube-proxy pass failed");
        }
        if !wait_next(&notify, &mut stop, cfg.resync, started).await {
            break;
        }
    }
    for (_, f) in forwarders {
        f.task.abort();
    }
    for t in triggers {
        t.abort();
    }
}

/// `clusterIP:port` → ready backends, from Services and EndpointSlices (pure).
pub fn desired_routes(
    services: &[Service],
    slices: &[EndpointSlice],
) -> BTreeMap<SocketAddr, Vec<SocketAddr>> {
    let mut out = BTreeMap::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .and_then(|s| s.parse::<IpAddr>().ok())
        else {
            continue; // headless ("None") or not yet allocated
        };
        let ns = svc.namespace();
        let name = svc.name_any();
        let own: Vec<&EndpointSlice> = slices
            .iter()
            .filter(|s| s.namespace() == ns && s.labels().get(LABEL_SERVICE_NAME) == Some(&name))
            .collect();
        for sp in spec.ports.iter().flatten() {
            if sp.protocol.as_deref().is_some_and(|p| p != "TCP") {
                continue;
            }
            let Ok(port) = u16::try_from(sp.port) else {
                continue;
            };
            let mut backends = BTreeSet::new();
            for slice in &own {
                let Some(ep_port) = slice
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref().unwrap_or("") == sp.name.as_deref().unwrap_or(""))
                    .and_then(|p| p.port)
                    .and_then(|p| u16::try_from(p).ok())
                else {
                    continue;
                };
                for ep in &slice.endpoints {
                    let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                    if !ready {
                        continue;
                    }
                    for a in &ep.addresses {
                        if let Ok(ip) = a.parse::<IpAddr>() {
                            backends.insert(SocketAddr::new(ip, ep_port));
                        }
                    }
                }
            }
            out.insert(SocketAddr::new(ip, port), backends.into_iter().collect());
        }
    }
    out
}

async fn reconcile(
    client: &Client,
    forwarders: &mut BTreeMap<SocketAddr, Forwarder>,
    faults: &ProxyFaults,
    stop: &watch::Receiver<bool>,
) -> Result<()> {
    let services = Api::<Service>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| SimError::kube("list", "Service", "all namespaces", e))?;
    let slices = Api::<EndpointSlice>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| SimError::kube("list", "EndpointSlice", "all namespaces", e))?;
    publish_load_balancers(client, &services.items).await;
    let routes = desired_routes(&services.items, &slices.items);
    forwarders.retain(|addr, f| {
        let keep = routes.contains_key(addr) && !f.task.is_finished();
        if !keep {
            f.task.abort();
        }
        keep
    });
    for (addr, backends) in routes {
        if let Some(f) = forwarders.get(&addr) {
            let mut list = f.backends.list.write().unwrap_or_else(|e| e.into_inner());
            if *list != backends {
                tracing::debug!(%addr, ?backends, "kube-proxy endpoints changed");
                *list = backends;
            }
            continue;
        }
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "ClusterIP outside 127.0.0.0/8; kubesim forwards only loopback addresses");
            continue;
        }
        let listener = match bind_reuse(addr) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(%addr, error = %e, "kube-proxy cannot listen on ClusterIP; retrying");
                continue;
            }
        };
        let b = Arc::new(Backends::default());
        *b.list.write().unwrap_or_else(|e| e.into_inner()) = backends;
        let task = tokio::spawn(accept_loop(
            listener,
            b.clone(),
            faults.clone(),
            stop.clone(),
        ));
        tracing::info!(%addr, "kube-proxy forwarding ClusterIP");
        forwarders.insert(addr, Forwarder { backends: b, task });
    }
    Ok(())
}

/// `type: LoadBalancer` Services get their ClusterIP as load-balancer ingress (like `minikube
/// tunnel`): clients on the host reach it there, and anything waiting for
/// `status.loadBalancer.ingress` proceeds.
async fn publish_load_balancers(client: &Client, services: &[Service]) {
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        if spec.type_.as_deref() != Some("LoadBalancer") {
            continue;
        }
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| ip.parse::<IpAddr>().is_ok())
        else {
            continue;
        };
        let has = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .is_some_and(|i| i.iter().any(|x| x.ip.as_deref() == Some(ip)));
        if has {
            continue;
        }
        let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}});
        let api: Api<Service> =
            Api::namespaced(client.clone(), &svc.namespace().unwrap_or_default());
        if let Err(e) = api
            .patch_status(
                &svc.name_any(),
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
        {
            tracing::debug!(service = %super::key_of(svc), error = %e, "could not publish load-balancer ingress");
        }
    }
}

fn bind_reuse(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(1024)
}

async fn accept_loop(
    listener: TcpListener,
    backends: Arc<Backends>,
    faults: ProxyFaults,
    stop: watch::Receiver<bool>,
) {
    let Ok(front) = listener.local_addr() else {
        return;
    };
    loop {
        let Ok((inbound, _peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if let Some(mode) = faults.get(front) {
            faults.hits.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(fail_connection(inbound, mode, faults.clone(), front));
            continue;
        }
        let Some(target) = backends.pick() else {
            drop(inbound); // no ready endpoint: close
            continue;
        };
        let mut stop = stop.clone();
        let faults = faults.clone();
        tokio::spawn(async move {
            let outbound = match tokio::time::timeout(
                Duration::from_secs(3),
                TcpStream::connect(target),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%target, error = %e, "kube-proxy: endpoint refused");
                    return;
                }
                Err(_) => return,
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (mut a, mut b) = (inbound, outbound);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
                _ = stop.wait_for(|s| *s) => {}
                _ = faults.faulted(front) => {}
            }
        });
    }
}

/// Treats one connection as `mode` says (bounded: a hang lasts while the fault does, at most
/// 5 minutes).
async fn fail_connection(
    mut inbound: TcpStream,
    mode: ProxyFaultMode,
    faults: ProxyFaults,
    front: SocketAddr,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    match mode {
        ProxyFaultMode::Reset => drop(inbound),
        ProxyFaultMode::Http500 => {
            // Read the request head (or what comes within a second), then answer.
            let mut buf = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_secs(1), inbound.read(&mut buf)).await;
            let body = "kubesim fault injection: 500";
            let reply = format!(
                "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = inbound.write_all(reply.as_bytes()).await;
            let _ = inbound.shutdown().await;
        }
        ProxyFaultMode::Hang => {
            let until = std::time::Instant::now() + Duration::from_secs(300);
            while faults.get(front) == Some(ProxyFaultMode::Hang)
                && std::time::Instant::now() < until
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            drop(inbound);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn routes_use_ready_endpoints_by_port_name() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "inst", "namespace": "t"},
            "spec": {"clusterIP": "127.20.3.7", "ports": [
                {"name": "amqp", "port": 5672}, {"name": "http", "port": 15672}]}
        }))
        .unwrap();
        let headless: Service = serde_json::from_value(json!({
            "metadata": {"name": "nodes", "namespace": "t"},
            "spec": {"clusterIP": "None", "ports": [{"name": "amqp", "port": 5672}]}
        }))
        .unwrap();
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "inst-a", "namespace": "t", "labels": {"kubernetes.io/service-name": "inst"}},
            "addressType": "IPv4",
            "ports": [{"name": "amqp", "port": 5673}],
            "endpoints": [
                {"addresses": ["127.30.3.1"], "conditions": {"ready": true}},
                {"addresses": ["127.30.3.2"], "conditions": {"ready": false}},
                {"addresses": ["127.30.3.3"]}
            ]
        }))
        .unwrap();
        let other_ns: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "inst-b", "namespace": "x", "labels": {"kubernetes.io/service-name": "inst"}},
            "addressType": "IPv4", "ports": [{"name": "amqp", "port": 1}],
            "endpoints": [{"addresses": ["127.30.9.9"]}]
        }))
        .unwrap();
        let routes = desired_routes(&[svc, headless], &[slice, other_ns]);
        assert_eq!(routes.len(), 2);
        let amqp: SocketAddr = "127.20.3.7:5672".parse().unwrap();
        assert_eq!(
            routes[&amqp],
            vec![
                "127.30.3.1:5673".parse().unwrap(),
                "127.30.3.3:5673".parse().unwrap()
            ]
        );
        assert!(routes[&"127.20.3.7:15672".parse().unwrap()].is_empty());
    }

    #[test]
    fn round_robin_over_backends() {
        let b = Backends::default();
        assert_eq!(b.pick(), None);
        let a1: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let a2: SocketAddr = "127.0.0.1:2".parse().unwrap();
        *b.list.write().unwrap() = vec![a1, a2];
        let picks: Vec<_> = (0..4).map(|_| b.pick().unwrap()).collect();
        assert_eq!(picks, vec![a1, a2, a1, a2]);
    }

    /// A faulted port answers 500 / resets / hangs new connections without reaching the
    /// backend, and forwards again once cleared.
    #[tokio::test]
    async fn faulted_ports_fail_new_connections_until_cleared() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend_addr = backend.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = backend.accept().await {
                // Answers, then keeps the connection open (the client closes it).
                tokio::spawn(async move {
                    let _ = c.write_all(b"backend").await;
                    let mut sink = [0u8; 64];
                    while let Ok(n) = c.read(&mut sink).await {
                        if n == 0 {
                            break;
                        }
                    }
                });
            }
        });
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front_addr = front.local_addr().unwrap();
        let b = Arc::new(Backends::default());
        *b.list.write().unwrap() = vec![backend_addr];
        let faults = ProxyFaults::default();
        let (_stop_tx, stop) = watch::channel(false);
        tokio::spawn(accept_loop(front, b, faults.clone(), stop));
        let backend_answers = || async move {
            let mut c = TcpStream::connect(front_addr).await.unwrap();
            let mut got = [0u8; 7];
            tokio::time::timeout(Duration::from_secs(2), c.read_exact(&mut got))
                .await
                .is_ok_and(|r| r.is_ok())
                && &got == b"backend"
        };
        let read_all = |req: &'static [u8]| async move {
            let mut c = TcpStream::connect(front_addr).await.unwrap();
            let _ = c.write_all(req).await;
            let mut out = Vec::new();
            let r =
                tokio::time::timeout(Duration::from_millis(1500), c.read_to_end(&mut out)).await;
            (r.is_ok(), String::from_utf8_lossy(&out).into_owned())
        };
        assert!(backend_answers().await);
        // An established connection is closed when a fault starts on its port.
        let mut open = TcpStream::connect(front_addr).await.unwrap();
        let mut first = [0u8; 7];
        open.read_exact(&mut first).await.unwrap();
        faults.set(front_addr.port(), ProxyFaultMode::Http500);
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(2), open.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the forwarded connection was closed");
        let (_, got) = read_all(b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.1 500 "), "{got}");
        faults.set(front_addr.port(), ProxyFaultMode::Reset);
        assert_eq!(read_all(b"").await, (true, String::new()));
        faults.set(front_addr.port(), ProxyFaultMode::Hang);
        assert_eq!(read_all(b"").await, (false, String::new()), "hangs");
        faults.clear(front_addr.port());
        assert!(backend_answers().await);
        assert_eq!(faults.hits(), 3);
    }
}
