//! A RabbitMQ container as a real `rabbitmq-server` process on the pod's IP: pick the RabbitMQ
//! runtime from the image's tag (see `rabbit::runtime_for_image`), wait for a broker slot, build the node's configuration from the pod (see `rabbit`), start it, join the
//! StatefulSet's first pod, probe readiness, and restart or fail it per `restartPolicy` when the
//! process exits.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use tiermq_testkit::{RabbitNode, TestkitError};
use tokio::sync::{OwnedSemaphorePermit, watch};

use super::process;
use super::status::{Observed, now, running, terminated, waiting};
use super::worker::pause;
use super::{Ctl, Kubelet, STOP_GRACE};
use crate::sim::rabbit::{self, broker_error};
use crate::sim::{Result, SimError, key_of, volumes};

const PROBE_PERIOD: Duration = Duration::from_secs(1);
/// Console lines kept as the termination message under `FallbackToLogsOnError`.
const MESSAGE_LINES: usize = 80;
const JOIN_RETRY: Duration = Duration::from_secs(5);

impl Kubelet {
    fn cookie_for(&self, pod: &Pod) -> String {
        let owner = pod
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| o.name.clone())
            .unwrap_or_else(|| pod.name_any());
        let key = format!("{}/{owner}", pod.namespace().unwrap_or_default());
        self.cookies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert_with(random_cookie)
            .clone()
    }

    async fn prepare_broker(
        &self,
        pod: &Pod,
        c: &Container,
        ip: Ipv4Addr,
    ) -> Result<tiermq_testkit::NodeConfig> {
        let pod_dir = self.pod_dir(pod);
        let vols = volumes::materialise(&self.client, &self.cfg.dir, pod, &pod_dir).await?;
        crate::sim::init_steps::run(pod, &vols)?;
        let env = volumes::resolve_env(&self.client, pod, c, &ip.to_string()).await?;
        let inputs = rabbit::gather_inputs(c, &vols, env);
        let base = rabbit::data_dir(pod, c, &vols, &pod_dir.join("data"));
        open_dirs(&self.cfg.dir, &base)?;
        // The node keeps the name it first had in this folder, whatever the pod's IP is now; no
        // other pod may get that address (its node would want the same name).
        let key = key_of(pod);
        let name_host = rabbit::node_identity(&base, &key, ip)?;
        self.ipam
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pin(&key, name_host);
        let mut config =
            rabbit::node_config(pod, c, &inputs, ip, name_host, base, &self.cookie_for(pod))?;
        config.initial_feature_flags = self.cfg.initial_feature_flags.clone();
        config.extra_erl_args = self.cfg.broker_erl_args.clone();
        Ok(config)
    }

    /// The readiness probe: a declared `tcpSocket` probe is run as is (against the pod IP); any
    /// other probe (exec `rabbitmq-diagnostics ...`, httpGet) or none is approximated by an
    /// authenticated management API request when the management plugin is on, else by a TCP
    /// connection to the AMQP port.
    async fn probe(node: &RabbitNode, container: &Container) -> std::result::Result<(), String> {
        let tcp_port = container
            .readiness_probe
            .as_ref()
            .and_then(|p| p.tcp_socket.as_ref())
            .and_then(|t| match &t.port {
                IntOrString::Int(p) => u16::try_from(*p).ok(),
                IntOrString::String(name) => container
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .and_then(|p| u16::try_from(p.container_port).ok()),
            });
        if tcp_port.is_none()
            && node
                .config()
                .plugins
                .iter()
                .any(|p| p == "rabbitmq_management")
        {
            return node.probe().await;
        }
        let addr = format!(
            "{}:{}",
            node.config().ip,
            tcp_port.unwrap_or(node.config().amqp_port)
        );
        match tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(&addr),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("tcp probe {addr}: {e}")),
            Err(_) => Err(format!("tcp probe {addr}: timeout")),
        }
    }

    /// The full node name of the broker pod `peer_key` runs now: its name need not match its
    /// current IP (see `rabbit::node_identity`).
    fn running_node_name(&self, peer_key: &str) -> std::result::Result<String, String> {
        self.brokers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(peer_key)
            .map(|n| n.node_name())
            .ok_or_else(|| format!("{peer_key} runs no broker"))
    }

    /// Joins `peer` (the full node name of `<sts>-0`): the adapter for testkit's `join_cluster`,
    /// which wants the peer's `RabbitNode` handle, while here only its name is known.
    async fn join(node: &RabbitNode, peer: &str) -> std::result::Result<(), String> {
        let steps: [&[&str]; 4] = [
            &["stop_app"],
            &["reset"],
            &["join_cluster", peer],
            &["start_app"],
        ];
        for args in steps {
            if let Err(e) = node.rabbitmqctl(args).await {
                let _ = node.rabbitmqctl(&["start_app"]).await;
                return Err(e.to_string());
            }
        }
        Ok(())
    }

    pub(super) async fn run_broker(
        &self,
        pod_rx: &mut watch::Receiver<Pod>,
        ctl: &mut watch::Receiver<Ctl>,
        obs: &mut Observed,
        container: Container,
    ) -> Ctl {
        obs.main = Some(container.name.clone());
        let key = key_of(&*pod_rx.borrow());
        let restart_policy = pod_rx
            .borrow()
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        // The image decides which RabbitMQ runs; one kubesim cannot run waits, as a real kubelet
        // waits on an image it cannot pull, until the pod goes.
        let image = container.image.clone().unwrap_or_default();
        let runtime = match rabbit::runtime_for_image(&image) {
            Ok(r) => r,
            Err(why) => {
                tracing::warn!(pod = %key, image, "no RabbitMQ runtime for the image");
                self.event(
                    pod_rx,
                    true,
                    "Failed",
                    format!("Failed to pull image {image:?}: {why}"),
                )
                .await;
                obs.state = waiting("ErrImagePull", Some(why));
                loop {
                    self.publish(pod_rx, obs).await;
                    if let Some(c) = pause(Duration::from_secs(30), ctl, pod_rx).await {
                        return c;
                    }
                }
            }
        };
        let mut crashes: u32 = 0;
        loop {
            // A broker slot.
            let permit: OwnedSemaphorePermit = loop {
                match self.broker_slots.clone().try_acquire_owned() {
                    Ok(p) => break p,
                    Err(_) => {
                        let why = format!(
                            "kubesim runs at most {} RabbitMQ brokers at once; waiting for a slot",
                            self.cfg.max_brokers
                        );
                        // Shown where `kubectl get pod` and the operator look: the container's
                        // waiting state (a restart would otherwise keep saying CrashLoopBackOff).
                        obs.state = waiting("ContainerCreating", Some(why.clone()));
                        obs.message = Some(why);
                        self.publish(pod_rx, obs).await;
                        if let Some(c) = pause(Duration::from_secs(1), ctl, pod_rx).await {
                            return c;
                        }
                    }
                }
            };
            obs.message = None;
            let pod = pod_rx.borrow().clone();
            let cfg = match self.prepare_broker(&pod, &container, obs.pod_ip).await {
                Ok(c) => c,
                Err(e) => {
                    drop(permit);
                    self.event(pod_rx, true, "Failed", format!("Error: {e}"))
                        .await;
                    obs.state = waiting("CreateContainerConfigError", Some(e.to_string()));
                    self.publish(pod_rx, obs).await;
                    if let Some(c) = pause(Duration::from_secs(2), ctl, pod_rx).await {
                        return c;
                    }
                    continue;
                }
            };
            let fresh = !rabbit::has_data(&cfg.base_dir, &cfg.full_node_name());
            // The pod to join (its node name is looked up when joining).
            let peer = match rabbit::statefulset_peer(&pod) {
                Some((peer_pod, ord)) if ord > 0 && fresh => Some(format!(
                    "{}/{peer_pod}",
                    pod.namespace().unwrap_or_default()
                )),
                _ => None,
            };
            let node = match RabbitNode::start_on(runtime, cfg) {
                Ok(n) => Arc::new(n),
                Err(e) => {
                    drop(permit);
                    // What a runtime reports as StartError: the process could not be started
                    // (here: its folder cannot be entered by its user, or exec failed).
                    let start_error = matches!(e, TestkitError::FolderUnreachable { .. })
                        || matches!(&e, TestkitError::Io { what, .. } if what.starts_with("spawn"));
                    let err = broker_error(&pod, e).to_string();
                    if obs.state.waiting.as_ref().and_then(|w| w.message.as_ref()) != Some(&err) {
                        self.event(pod_rx, true, "Failed", format!("Error: {err}"))
                            .await;
                    }
                    if !start_error {
                        obs.state = waiting("CreateContainerError", Some(err));
                        self.publish(pod_rx, obs).await;
                        if let Some(c) = pause(Duration::from_secs(2), ctl, pod_rx).await {
                            return c;
                        }
                        continue;
                    }
                    tracing::warn!(pod = %key, "broker cannot start: {err}");
                    obs.last_state = Some(terminated(128, "StartError", Some(err), None));
                    if let Some(c) = self
                        .restart_after_failure(
                            pod_rx,
                            ctl,
                            obs,
                            &container.name,
                            &restart_policy,
                            &mut crashes,
                        )
                        .await
                    {
                        return c;
                    }
                    continue;
                }
            };
            self.brokers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.clone(), node.clone());
            let started_at = now();
            obs.phase = "Running";
            obs.state = running(started_at.clone());
            obs.ready = false;
            obs.image_id = Some(rabbit::image_id(runtime));
            self.publish(pod_rx, obs).await;
            self.event(
                pod_rx,
                false,
                "Started",
                format!(
                    "Started container {} ({runtime}, rabbitmq-server pid {})",
                    container.name,
                    node.pid()
                ),
            )
            .await;

            let mut joined = peer.is_none();
            let mut next_probe = tokio::time::Instant::now();
            let mut next_join = tokio::time::Instant::now();
            let outcome = loop {
                if let Some(c) = pause(PROBE_PERIOD, ctl, pod_rx).await {
                    break Err(c);
                }
                if !node.is_running() {
                    break Ok(());
                }
                // Pod updates wake the loop too; probe at most once per period.
                let now = tokio::time::Instant::now();
                if now >= next_probe {
                    next_probe = now + PROBE_PERIOD;
                    let probe = Self::probe(&node, &container).await;
                    obs.ready = match (&probe, joined) {
                        (Ok(()), true) => true,
                        (Ok(()), false) if now >= next_join => {
                            let peer_pod = peer.as_deref().unwrap_or_default();
                            let attempt = match self.running_node_name(peer_pod) {
                                Ok(name) => Self::join(&node, &name).await.map(|()| name),
                                Err(e) => Err(e),
                            };
                            match attempt {
                                Ok(peer) => {
                                    tracing::info!(pod = %key, peer, "broker joined its StatefulSet's cluster");
                                    joined = true;
                                    obs.message = None;
                                }
                                Err(e) => {
                                    // Each attempt runs rabbitmqctl (an Erlang VM): back off.
                                    next_join = tokio::time::Instant::now() + JOIN_RETRY;
                                    tracing::warn!(pod = %key, peer = peer_pod, error = %e, "joining the cluster failed; retrying");
                                    obs.message = Some(format!("joining {peer_pod} failed: {e}"));
                                }
                            }
                            false
                        }
                        _ => false,
                    };
                }
                self.publish(pod_rx, obs).await;
            };
            self.brokers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
            match outcome {
                Err(c) => {
                    self.event(
                        pod_rx,
                        false,
                        "Killing",
                        format!("Stopping container {}", container.name),
                    )
                    .await;
                    node.stop(STOP_GRACE).await;
                    tracing::info!(pod = %key, "broker stopped with its pod");
                    return c;
                }
                Ok(()) => {
                    let code = node.exit_status().map_or(1, process::exit_code);
                    // As `kubectl logs` would show it: the broker's console output.
                    let message = (container.termination_message_policy.as_deref()
                        == Some("FallbackToLogsOnError")
                        && code != 0)
                        .then(|| {
                            process::log_tail(
                                &node.config().base_dir.join("log").join("stdout.log"),
                                MESSAGE_LINES,
                            )
                        });
                    node.kill();
                    drop(permit);
                    tracing::warn!(pod = %key, code, "broker process exited; restart policy {restart_policy}");
                    let reason = if code == 0 { "Completed" } else { "Error" };
                    obs.last_state = Some(terminated(code, reason, message, Some(started_at)));
                    if let Some(c) = self
                        .restart_after_failure(
                            pod_rx,
                            ctl,
                            obs,
                            &container.name,
                            &restart_policy,
                            &mut crashes,
                        )
                        .await
                    {
                        return c;
                    }
                }
            }
        }
    }
}

/// The folders up to a node's base dir must be traversable by the `rabbitmq` user the broker
/// runs as (a test's temp dir is private by default).
fn open_dirs(root: &std::path::Path, base: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(base).map_err(|e| SimError::io("create", base, e))?;
    let mut p = base.parent();
    while let Some(dir) = p {
        if !dir.starts_with(root) {
            break;
        }
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
        p = dir.parent();
    }
    Ok(())
}

fn random_cookie() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::rng();
    (0..32)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}
