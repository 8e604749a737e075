//! One pod's life on the node: wait for the previous pod of the same name to be gone, take an
//! IP, run the pod's containers (a RabbitMQ container as a broker, see `broker`; anything else
//! without a process), write its status, and clean up when it stops.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::status::{
    Observed, backoff_message, compute_status, crash_backoff, now, running, waiting,
};
use super::{Ctl, Kubelet};
use crate::sim::{Result, is_conflict, is_not_found, key_of, rabbit, volumes};

/// How the worker waits: returns the control value when it is no longer `Run`.
pub(super) async fn pause(
    d: Duration,
    ctl: &mut watch::Receiver<Ctl>,
    pod_rx: &mut watch::Receiver<Pod>,
) -> Option<Ctl> {
    let sleep = tokio::time::sleep(d);
    tokio::pin!(sleep);
    loop {
        let c = *ctl.borrow();
        if c != Ctl::Run {
            return Some(c);
        }
        tokio::select! {
            _ = &mut sleep => return None,
            r = ctl.changed() => if r.is_err() { return Some(Ctl::Stop) },
            r = pod_rx.changed() => if r.is_err() { return Some(Ctl::Stop) } else { return None },
        }
    }
}

impl Kubelet {
    pub(super) fn pod_dir(&self, pod: &Pod) -> PathBuf {
        self.cfg
            .dir
            .join("pods")
            .join(pod.namespace().unwrap_or_default())
            .join(format!(
                "{}-{}",
                pod.name_any(),
                pod.uid().unwrap_or_default()
            ))
    }

    /// Writes the pod's status if it differs from what the API has.
    pub(super) async fn publish(&self, pod_rx: &watch::Receiver<Pod>, obs: &Observed) {
        let mut pod = pod_rx.borrow().clone();
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        for _ in 0..3 {
            let status = compute_status(&pod, obs);
            if pod.status.as_ref() == Some(&status) {
                return;
            }
            let uid = pod.uid();
            let mut next = pod.clone();
            next.status = Some(status);
            match api
                .replace_status(&pod.name_any(), &PostParams::default(), &next)
                .await
            {
                Ok(_) => return,
                Err(e) if is_conflict(&e) => match api.get_opt(&pod.name_any()).await {
                    Ok(Some(fresh)) if fresh.uid() == uid => pod = fresh,
                    _ => return,
                },
                Err(e) if is_not_found(&e) => return,
                Err(e) => {
                    tracing::debug!(pod = %key_of(&pod), error = %e, "pod status update failed; retrying later");
                    return;
                }
            }
        }
    }

    /// The IP of pod `key` with `uid` (see `ipam`: per name, or per pod object with fresh IPs).
    pub(super) fn assign_ip(&self, key: &str, uid: &str) -> Result<Ipv4Addr> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.ipam
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .assign(key, uid, &live)
    }

    pub(super) async fn worker(
        self: Arc<Self>,
        mut pod_rx: watch::Receiver<Pod>,
        mut ctl: watch::Receiver<Ctl>,
        prev: Option<JoinHandle<()>>,
    ) {
        if let Some(prev) = prev {
            let _ = prev.await;
        }
        let pod = pod_rx.borrow().clone();
        let key = key_of(&pod);
        let uid = pod.uid().unwrap_or_default();
        let ip = loop {
            match self.assign_ip(&key, &uid) {
                Ok(ip) => break ip,
                Err(e) => {
                    tracing::warn!(pod = %key, error = %e, "cannot assign a pod IP");
                    if let Some(c) = pause(Duration::from_secs(2), &mut ctl, &mut pod_rx).await {
                        return self.finish(&pod, c).await;
                    }
                }
            }
        };
        let mut obs = Observed {
            pod_ip: ip,
            start_time: now(),
            phase: "Pending",
            main: None,
            state: waiting("ContainerCreating", None),
            ready: false,
            restarts: 0,
            last_state: None,
            message: None,
            image_id: None,
        };
        let end = if let Some(c) = rabbit::rabbit_container(&pod).cloned() {
            self.run_broker(&mut pod_rx, &mut ctl, &mut obs, c).await
        } else if let Some((c, program)) = self.mapped_container(&pod) {
            self.run_process(&mut pod_rx, &mut ctl, &mut obs, c, program)
                .await
        } else {
            self.run_without_process(&pod, &mut pod_rx, &mut ctl, &mut obs)
                .await
        };
        self.finish(&pod, end).await;
    }

    pub(super) async fn event(
        &self,
        pod_rx: &watch::Receiver<Pod>,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let pod = pod_rx.borrow().clone();
        crate::sim::emit(&self.events, &pod, warning, reason, reason, note).await;
    }

    /// The pod's containers have stopped: its folder (materialised Secrets, emptyDir data) goes
    /// too; PVC folders stay.
    async fn finish(&self, pod: &Pod, end: Ctl) {
        let dir = self.pod_dir(pod);
        if dir.exists()
            && let Err(e) = std::fs::remove_dir_all(&dir)
        {
            tracing::warn!(pod = %key_of(pod), error = %e, "could not remove the pod's folder");
        }
        if end == Ctl::StopAndDelete {
            self.confirm_delete(pod).await;
        }
    }

    /// A container that is not a broker: nothing runs, but volumes are set up as for any pod
    /// (a missing ConfigMap or Secret keeps the pod waiting, like in Kubernetes), then the
    /// containers are reported running and ready until the pod goes.
    async fn run_without_process(
        &self,
        pod: &Pod,
        pod_rx: &mut watch::Receiver<Pod>,
        ctl: &mut watch::Receiver<Ctl>,
        obs: &mut Observed,
    ) -> Ctl {
        let pod_dir = self.pod_dir(pod);
        loop {
            let current = pod_rx.borrow().clone();
            match volumes::materialise(&self.client, &self.cfg.dir, &current, &pod_dir).await {
                Ok(_) => break,
                Err(e) => {
                    obs.state = waiting("CreateContainerConfigError", Some(e.to_string()));
                    self.publish(pod_rx, obs).await;
                    if let Some(c) = pause(Duration::from_secs(2), ctl, pod_rx).await {
                        return c;
                    }
                }
            }
        }
        obs.phase = "Running";
        obs.state = running(obs.start_time.clone());
        obs.ready = true;
        loop {
            self.publish(pod_rx, obs).await;
            if let Some(c) = pause(Duration::from_secs(30), ctl, pod_rx).await {
                return c;
            }
        }
    }

    /// After a run ended (`obs.last_state` says how): per `restartPolicy`, either the pod ends
    /// (`Never`, or `OnFailure` after success: `Failed`/`Succeeded`, returning only once the pod
    /// goes) or the container is restarted after a back-off (`CrashLoopBackOff`, Warning
    /// `BackOff`, `restartCount` + 1). `Some` when the pod went meanwhile.
    pub(super) async fn restart_after_failure(
        &self,
        pod_rx: &mut watch::Receiver<Pod>,
        ctl: &mut watch::Receiver<Ctl>,
        obs: &mut Observed,
        container: &str,
        restart_policy: &str,
        crashes: &mut u32,
    ) -> Option<Ctl> {
        obs.ready = false;
        let code = obs
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map_or(1, |t| t.exit_code);
        let restart = match restart_policy {
            "Never" => false,
            "OnFailure" => code != 0,
            _ => true,
        };
        if !restart {
            obs.phase = if code == 0 { "Succeeded" } else { "Failed" };
            obs.state = obs.last_state.take().unwrap_or_default();
            self.publish(pod_rx, obs).await;
            loop {
                if let Some(c) = pause(Duration::from_secs(30), ctl, pod_rx).await {
                    return Some(c);
                }
            }
        }
        *crashes += 1;
        obs.restarts += 1;
        let backoff = crash_backoff(*crashes);
        let pod = pod_rx.borrow().clone();
        self.event(
            pod_rx,
            true,
            "BackOff",
            format!(
                "Back-off restarting failed container {container} in pod {}_{}({})",
                pod.name_any(),
                pod.namespace().unwrap_or_default(),
                pod.uid().unwrap_or_default()
            ),
        )
        .await;
        obs.state = waiting(
            "CrashLoopBackOff",
            Some(backoff_message(backoff, container, &pod)),
        );
        self.publish(pod_rx, obs).await;
        // The whole back-off: `pause` also ends on any change of the pod, the status write
        // just made included.
        let until = tokio::time::Instant::now() + backoff;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            if let Some(c) = pause(left, ctl, pod_rx).await {
                return Some(c);
            }
        }
    }
}
