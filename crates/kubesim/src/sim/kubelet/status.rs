//! The PodStatus a worker writes, computed from what it observed of the pod's containers: phase,
//! IPs, start time, container states and the conditions the kubelet owns (it keeps the others,
//! such as readiness gates set by other controllers).

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateWaiting, ContainerStatus,
    HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

const OWNED_CONDITIONS: &[&str] = &[
    "PodScheduled",
    "Initialized",
    "PodReadyToStartContainers",
    "ContainersReady",
    "Ready",
];

/// What the worker knows about its pod's containers; turned into a PodStatus by [`compute_status`].
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// The IP the kubelet gave the pod.
    pub pod_ip: Ipv4Addr,
    /// When the worker started.
    pub start_time: Time,
    /// `Pending`, `Running` or `Failed`.
    pub phase: &'static str,
    /// The container whose state is tracked (the broker); other containers are reported running
    /// and ready. None: all containers share `state`.
    pub main: Option<String>,
    /// State of the tracked container(s).
    pub state: ContainerState,
    /// Whether the tracked container passes its readiness probe.
    pub ready: bool,
    /// How often the tracked container was restarted.
    pub restarts: i32,
    /// How the tracked container's previous run ended.
    pub last_state: Option<ContainerState>,
    /// The pod's `status.message` (why it waits, for instance).
    pub message: Option<String>,
    /// The tracked container's `imageID`: what actually runs for its image (a broker's
    /// runtime); empty when nothing runs yet.
    pub image_id: Option<String>,
}

/// Now, as a pod status timestamp.
pub(super) fn now() -> Time {
    // Whole seconds, as the API stores them, so unchanged status compares equal.
    let s = k8s_openapi::jiff::Timestamp::now().as_second();
    Time(
        k8s_openapi::jiff::Timestamp::from_second(s)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

pub(super) fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message,
        }),
        ..Default::default()
    }
}

/// How long a container waits before its `crashes`-th restart (`CrashLoopBackOff`): 1 s, 2 s,
/// 4 s, then 5 s. Kubernetes doubles from 10 s up to 5 minutes; kubesim keeps the shape but not
/// the length, so tests of crash loops take seconds.
pub fn crash_backoff(crashes: u32) -> std::time::Duration {
    std::time::Duration::from_secs(((1u64 << crashes.clamp(1, 4)).min(10) / 2).max(1))
}

/// The `CrashLoopBackOff` waiting message, worded like the kubelet's.
pub(super) fn backoff_message(backoff: std::time::Duration, container: &str, pod: &Pod) -> String {
    format!(
        "back-off {}s restarting failed container={container} pod={}_{}({})",
        backoff.as_secs(),
        pod.name_any(),
        pod.namespace().unwrap_or_default(),
        pod.uid().unwrap_or_default()
    )
}

/// A terminated container state.
pub(super) fn terminated(
    exit_code: i32,
    reason: &str,
    message: Option<String>,
    started_at: Option<Time>,
) -> ContainerState {
    ContainerState {
        terminated: Some(k8s_openapi::api::core::v1::ContainerStateTerminated {
            exit_code,
            reason: Some(reason.into()),
            message: message.filter(|m| !m.is_empty()),
            started_at,
            finished_at: Some(now()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn running(since: Time) -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning {
            started_at: Some(since),
        }),
        ..Default::default()
    }
}

fn condition(
    existing: &[PodCondition],
    type_: &str,
    ok: bool,
    reason: Option<&str>,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let prev = existing.iter().find(|c| c.type_ == type_);
    let last_transition_time = match prev {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Some(now()),
    };
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        last_transition_time,
        reason: if ok { None } else { reason.map(String::from) },
        ..Default::default()
    }
}

/// The pod status a worker reports (pure apart from transition timestamps).
pub fn compute_status(pod: &Pod, obs: &Observed) -> PodStatus {
    let old = pod.status.clone().unwrap_or_default();
    let existing = old.conditions.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let statuses: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c: &Container| {
            let tracked = obs.main.as_deref().is_none_or(|m| m == c.name);
            let (state, ready, restarts, last, image_id) = if tracked {
                (
                    obs.state.clone(),
                    obs.ready,
                    obs.restarts,
                    obs.last_state.clone(),
                    obs.image_id.clone().unwrap_or_default(),
                )
            } else {
                (
                    running(obs.start_time.clone()),
                    true,
                    0,
                    None,
                    String::new(),
                )
            };
            ContainerStatus {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                image_id,
                container_id: Some(format!("kubesim://{}-{}", pod.name_any(), c.name)),
                ready,
                started: Some(state.running.is_some()),
                restart_count: restarts,
                state: Some(state),
                last_state: last,
                ..Default::default()
            }
        })
        .collect();
    let containers_ready = !statuses.is_empty() && statuses.iter().all(|s| s.ready);
    let gates_ok = spec.readiness_gates.iter().flatten().all(|g| {
        existing
            .iter()
            .any(|c| c.type_ == g.condition_type && c.status == "True")
    });
    let mut conditions: Vec<PodCondition> = existing
        .iter()
        .filter(|c| !OWNED_CONDITIONS.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    let started = obs.phase != "Pending";
    conditions.push(condition(
        &existing,
        "PodReadyToStartContainers",
        true,
        None,
    ));
    conditions.push(condition(&existing, "Initialized", true, None));
    conditions.push(condition(
        &existing,
        "ContainersReady",
        containers_ready,
        Some("ContainersNotReady"),
    ));
    let ready_reason = if !containers_ready {
        "ContainersNotReady"
    } else {
        "ReadinessGatesNotReady"
    };
    conditions.push(condition(
        &existing,
        "Ready",
        containers_ready && gates_ok && started,
        Some(ready_reason),
    ));
    conditions.push(condition(&existing, "PodScheduled", true, None));
    let ip = obs.pod_ip.to_string();
    PodStatus {
        phase: Some(obs.phase.into()),
        message: obs.message.clone(),
        host_ip: Some("127.0.0.1".into()),
        host_ips: Some(vec![HostIP {
            ip: "127.0.0.1".into(),
        }]),
        pod_ip: Some(ip.clone()),
        pod_ips: Some(vec![PodIP { ip }]),
        start_time: Some(obs.start_time.clone()),
        conditions: Some(conditions),
        container_statuses: Some(statuses),
        qos_class: old.qos_class.clone().or_else(|| Some("BestEffort".into())),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn crash_backoff_grows_then_stays() {
        let secs: Vec<u64> = (1..=6).map(|c| crash_backoff(c).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 5, 5, 5]);
    }

    #[test]
    fn status_reports_ip_conditions_and_gates() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "t"},
            "spec": {"containers": [{"name": "app", "image": "busybox"}],
                     "readinessGates": [{"conditionType": "example.com/gate"}]},
            "status": {"conditions": [{"type": "example.com/gate", "status": "False"}]}
        }))
        .unwrap();
        let obs = Observed {
            pod_ip: Ipv4Addr::new(127, 30, 1, 5),
            start_time: now(),
            phase: "Running",
            main: None,
            state: running(now()),
            ready: true,
            restarts: 0,
            last_state: None,
            message: None,
            image_id: None,
        };
        let st = compute_status(&pod, &obs);
        assert_eq!(st.pod_ip.as_deref(), Some("127.30.1.5"));
        let cond = |st: &PodStatus, t: &str| {
            st.conditions
                .as_ref()
                .unwrap()
                .iter()
                .find(|c| c.type_ == t)
                .unwrap()
                .status
                .clone()
        };
        assert_eq!(cond(&st, "ContainersReady"), "True");
        assert_eq!(cond(&st, "Ready"), "False", "gate not yet true");
        assert_eq!(
            cond(&st, "example.com/gate"),
            "False",
            "foreign condition kept"
        );
        let mut pod2 = pod.clone();
        pod2.status = Some(st.clone());
        pod2.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "True".into();
        let st2 = compute_status(&pod2, &obs);
        assert_eq!(cond(&st2, "Ready"), "True");
        // Unchanged input gives an identical status: no write needed.
        let mut pod3 = pod2.clone();
        pod3.status = Some(st2.clone());
        assert_eq!(compute_status(&pod3, &obs), st2);
    }
}
