//! A container whose image maps to a local binary (see `sim::images`), run as a real process
//! (see `process`) through the life a kubelet gives a container:
//!
//! 1. **Create**: volumes, the environment (`value`, `valueFrom`, `$(VAR)` references), the
//!    ServiceAccount credentials, `KUBERNETES_SERVICE_HOST`/`PORT` (the API server), `HOSTNAME`
//!    (the pod name), `PATH`, `HOME=/`, and the security context (`runAsUser`, `runAsGroup`,
//!    `runAsNonRoot`, `supplementalGroups`, `fsGroup`, `allowPrivilegeEscalation`). A problem here
//!    (a missing Secret, a root user under `runAsNonRoot`) leaves the container waiting with
//!    `CreateContainerConfigError` and a Warning Event `Failed`, and is retried.
//! 2. **Start**: the image's binary with the container's `args` (a `command` must name the same
//!    binary). A start that fails (the program cannot be executed by the user, ...) is what a
//!    runtime calls `StartError`: exit code 128, a restart, back-off.
//! 3. **Run**: stdout and stderr go to the run's log (`kubectl logs`); the startup, liveness and
//!    readiness probes run (see `probe`): readiness gates `ready`, a failed liveness or startup
//!    probe kills the container (Warning `Unhealthy`, Normal `Killing`) and it restarts; the token
//!    is refreshed.
//! 4. **Exit**: `lastState.terminated` with the exit code (128 + signal when killed), reason
//!    `Completed` (0) or `Error`, and with `terminationMessagePolicy: FallbackToLogsOnError` the
//!    log's last lines as its message; then per `restartPolicy` a restart after a back-off
//!    (`CrashLoopBackOff`, Warning `BackOff`, `restartCount` + 1) or the pod's end (`Succeeded`
//!    / `Failed`).
//!
//! Deleting the pod stops the process (SIGTERM to its process group, SIGKILL after the grace
//! period, at most 5 s here).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;
use tokio::sync::watch;
use tokio::time::Instant;

use super::probe::{ProbeKind, Prober};
use super::process::{self, Launch, Running};
use super::serviceaccount::Projected;
use super::status::{Observed, now, running, terminated, waiting};
use super::worker::pause;
use super::{Ctl, Kubelet, STOP_GRACE};
use crate::sim::{Result, SimError, key_of, volumes};

/// How often a running container is looked at (exit, probes due, token refresh).
const TICK: Duration = Duration::from_millis(250);
/// A container that ran this long without failing starts its back-off afresh.
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// Log lines kept as the termination message under `FallbackToLogsOnError` (the kubelet's 80).
const MESSAGE_LINES: usize = 80;

/// Why a run ended.
enum End {
    /// The pod went away or is being deleted.
    Stopped(Ctl),
    /// The process exited by itself.
    Exited(Option<std::process::ExitStatus>),
    /// A probe failed and the kubelet killed it.
    Killed(Option<std::process::ExitStatus>),
}

impl Kubelet {
    /// The container this pod runs as a local binary, and the binary.
    pub(super) fn mapped_container(&self, pod: &Pod) -> Option<(Container, PathBuf)> {
        pod.spec.as_ref()?.containers.iter().find_map(|c| {
            let bin = self.cfg.image_binaries.binary_for(c.image.as_deref()?)?;
            Some((c.clone(), bin.to_path_buf()))
        })
    }

    /// Step 1: everything the run needs, or why the container cannot be created.
    async fn prepare_process(
        &self,
        pod: &Pod,
        c: &Container,
        program: &Path,
        ip: std::net::Ipv4Addr,
        run: i32,
    ) -> Result<(Launch, Option<Projected>)> {
        let pod_dir = self.pod_dir(pod);
        let ns = pod.namespace().unwrap_or_default();
        let spec_err = |message: String| SimError::PodSpec {
            pod: key_of(pod),
            message,
        };
        volumes::materialise(&self.client, &self.cfg.dir, pod, &pod_dir).await?;
        let resolved = volumes::resolve_env(&self.client, pod, c, &ip.to_string()).await?;
        // Later entries win: the container's own variables over the service variables.
        let mut env: Vec<(String, String)> = vec![(
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        )];
        env.push(("HOSTNAME".into(), pod.name_any()));
        env.push(("HOME".into(), "/".into()));
        if let Some(api) = &self.cfg.api_server {
            let (h, p) = (api.addr.ip().to_string(), api.addr.port().to_string());
            env.push(("KUBERNETES_SERVICE_HOST".into(), h.clone()));
            env.push(("KUBERNETES_SERVICE_PORT".into(), p.clone()));
            env.push(("KUBERNETES_SERVICE_PORT_HTTPS".into(), p.clone()));
            env.push(("KUBERNETES_PORT".into(), format!("tcp://{h}:{p}")));
        }
        // The container's own variables, in the pod spec's order.
        for e in c.env.iter().flatten() {
            if let Some(v) = resolved.get(&e.name) {
                env.retain(|(k, _)| k != &e.name);
                env.push((e.name.clone(), v.clone()));
            }
        }
        let vars: BTreeMap<String, String> = env.iter().cloned().collect();
        let mut args: Vec<String> = Vec::new();
        if let Some(cmd) = c.command.as_ref().filter(|c| !c.is_empty()) {
            let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
            if name(Path::new(&cmd[0])) != name(program) {
                return Err(spec_err(format!(
                    "container {}: kubesim runs image {} as {}; it cannot run the command {cmd:?}",
                    c.name,
                    c.image.as_deref().unwrap_or_default(),
                    program.display()
                )));
            }
            args.extend(cmd[1..].iter().map(|a| volumes::expand(a, &vars)));
        }
        args.extend(c.args.iter().flatten().map(|a| volumes::expand(a, &vars)));

        let psc = pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.clone())
            .unwrap_or_default();
        let csc = c.security_context.clone().unwrap_or_default();
        let uid = csc.run_as_user.or(psc.run_as_user);
        let gid = csc.run_as_group.or(psc.run_as_group);
        let non_root = csc.run_as_non_root.or(psc.run_as_non_root) == Some(true);
        let who = format!(
            "(pod: \"{}_{ns}({})\", container: {})",
            pod.name_any(),
            pod.uid().unwrap_or_default(),
            c.name
        );
        match uid {
            // kubesim runs as root, so an image without USER would run as root.
            None if non_root => {
                return Err(spec_err(format!(
                    "container has runAsNonRoot and image will run as root {who}"
                )));
            }
            Some(0) if non_root => {
                return Err(spec_err(format!(
                    "container's runAsUser breaks non-root policy {who}"
                )));
            }
            _ => {}
        }
        let id = |v: i64, what: &str| {
            u32::try_from(v).map_err(|_| spec_err(format!("{what} {v} is not a valid id")))
        };
        let mut groups: Vec<u32> = Vec::new();
        for g in psc.supplemental_groups.iter().flatten() {
            groups.push(id(*g, "supplemental group")?);
        }
        if let Some(g) = psc.fs_group {
            groups.push(id(g, "fsGroup")?);
        }
        let projected = self.project_service_account(pod, &pod_dir).await?;
        let launch = Launch {
            program: program.to_path_buf(),
            args,
            env,
            cwd: c
                .working_dir
                .clone()
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| "/".into()),
            uid: uid.map(|u| id(u, "runAsUser")).transpose()?,
            gid: gid.map(|g| id(g, "runAsGroup")).transpose()?,
            groups,
            no_new_privs: csc.allow_privilege_escalation == Some(false),
            service_account: projected.as_ref().map(|p| p.dir.clone()),
            log: crate::apiserver::container_log_file(
                &self.cfg.dir.join("pods"),
                &ns,
                &pod.name_any(),
                &pod.uid().unwrap_or_default(),
                &c.name,
                i64::from(run),
            ),
        };
        Ok((launch, projected))
    }

    /// Runs `container` as `program` until the pod goes (see the module docs).
    pub(super) async fn run_process(
        &self,
        pod_rx: &mut watch::Receiver<Pod>,
        ctl: &mut watch::Receiver<Ctl>,
        obs: &mut Observed,
        container: Container,
        program: PathBuf,
    ) -> Ctl {
        obs.main = Some(container.name.clone());
        let key = key_of(&*pod_rx.borrow());
        let restart_policy = pod_rx
            .borrow()
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        let fallback_to_logs =
            container.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
        let name = container.name.clone();
        let mut crashes: u32 = 0;
        let mut told_unsupported = false;
        loop {
            let pod = pod_rx.borrow().clone();
            // 1. create
            let (launch, mut projected) = match self
                .prepare_process(&pod, &container, &program, obs.pod_ip, obs.restarts)
                .await
            {
                Ok(l) => l,
                Err(e) => {
                    let msg = e.to_string();
                    if obs.state.waiting.as_ref().and_then(|w| w.message.as_ref()) != Some(&msg) {
                        self.event(pod_rx, true, "Failed", format!("Error: {msg}"))
                            .await;
                    }
                    obs.state = waiting("CreateContainerConfigError", Some(msg));
                    self.publish(pod_rx, obs).await;
                    if let Some(c) = pause(Duration::from_secs(2), ctl, pod_rx).await {
                        return c;
                    }
                    continue;
                }
            };
            // 2. start
            let started_at = now();
            let started = Instant::now();
            let end = match Running::spawn(&launch) {
                Err(e) => {
                    let msg = format!(
                        "failed to start container \"{name}\": exec: \"{}\": {e}",
                        program.display()
                    );
                    tracing::warn!(pod = %key, "{msg}");
                    self.event(pod_rx, true, "Failed", format!("Error: {msg}"))
                        .await;
                    obs.last_state = Some(terminated(128, "StartError", Some(msg), None));
                    None
                }
                Ok(mut proc) => {
                    self.processes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key.clone(), proc.pid());
                    self.event(
                        pod_rx,
                        false,
                        "Started",
                        format!(
                            "Started container {name} ({} pid {})",
                            program.display(),
                            proc.pid()
                        ),
                    )
                    .await;
                    let mut probers: Vec<Prober> = [
                        ProbeKind::Startup,
                        ProbeKind::Liveness,
                        ProbeKind::Readiness,
                    ]
                    .into_iter()
                    .filter_map(|k| Prober::of(k, &container, started))
                    .collect();
                    if !told_unsupported {
                        told_unsupported = true;
                        for p in &probers {
                            if let Some(why) = p.unsupported() {
                                let note =
                                    format!("{} probe treated as passing: {why}", p.kind.name());
                                self.event(pod_rx, true, "ProbeNotSupported", note).await;
                            }
                        }
                    }
                    obs.phase = "Running";
                    obs.state = running(started_at.clone());
                    obs.ready = !probers
                        .iter()
                        .any(|p| matches!(p.kind, ProbeKind::Readiness | ProbeKind::Startup));
                    obs.message = None;
                    self.publish(pod_rx, obs).await;
                    let end = self
                        .watch_process(
                            pod_rx,
                            ctl,
                            obs,
                            &container,
                            &mut proc,
                            &mut probers,
                            &mut projected,
                        )
                        .await;
                    self.processes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&key);
                    Some(end)
                }
            };
            // 4. exit
            obs.ready = false;
            match end {
                Some(End::Stopped(c)) => return c,
                Some(End::Exited(st)) | Some(End::Killed(st)) => {
                    let code = st.map(process::exit_code).unwrap_or(137);
                    let reason = if code == 0 { "Completed" } else { "Error" };
                    let message = (fallback_to_logs && code != 0)
                        .then(|| process::log_tail(&launch.log, MESSAGE_LINES));
                    tracing::info!(pod = %key, container = %name, code, "container exited");
                    obs.last_state = Some(terminated(code, reason, message, Some(started_at)));
                    if started.elapsed() >= BACKOFF_RESET {
                        crashes = 0;
                    }
                }
                None => {}
            }
            if let Some(c) = self
                .restart_after_failure(pod_rx, ctl, obs, &name, &restart_policy, &mut crashes)
                .await
            {
                return c;
            }
        }
    }

    /// Step 3: watches a running process until it exits, a probe kills it or the pod goes.
    #[allow(clippy::too_many_arguments)]
    async fn watch_process(
        &self,
        pod_rx: &mut watch::Receiver<Pod>,
        ctl: &mut watch::Receiver<Ctl>,
        obs: &mut Observed,
        container: &Container,
        proc: &mut Running,
        probers: &mut [Prober],
        projected: &mut Option<Projected>,
    ) -> End {
        let name = &container.name;
        loop {
            if let Some(c) = pause(TICK, ctl, pod_rx).await {
                self.event(
                    pod_rx,
                    false,
                    "Killing",
                    format!("Stopping container {name}"),
                )
                .await;
                proc.stop(STOP_GRACE).await;
                return End::Stopped(c);
            }
            if let Some(st) = proc.try_exit() {
                // Whatever the main process left behind goes with it.
                process::kill_group(proc.pid());
                return End::Exited(Some(st));
            }
            let started_ok = probers
                .iter()
                .all(|p| p.kind != ProbeKind::Startup || p.passing);
            let now = Instant::now();
            for i in 0..probers.len() {
                let kind = probers[i].kind;
                // Liveness and readiness wait for the startup probe; startup stops once passed.
                let active = match kind {
                    ProbeKind::Startup => !probers[i].passing,
                    _ => started_ok,
                };
                if !active || !probers[i].due(now) {
                    continue;
                }
                let run = probers[i].run(container, obs.pod_ip).await;
                if let Some(why) = &run.failure {
                    // Said once per run of failures, not at every period.
                    if probers[i].consecutive_failures() == 1 {
                        self.event(
                            pod_rx,
                            true,
                            "Unhealthy",
                            format!("{} probe failed: {why}", kind.name()),
                        )
                        .await;
                    }
                }
                match kind {
                    ProbeKind::Readiness => obs.ready = probers[i].passing,
                    ProbeKind::Startup if run.changed && probers[i].passing => {
                        obs.ready = !probers.iter().any(|p| p.kind == ProbeKind::Readiness);
                    }
                    ProbeKind::Liveness | ProbeKind::Startup
                        if run.changed && !probers[i].passing =>
                    {
                        self.event(
                            pod_rx,
                            false,
                            "Killing",
                            format!(
                                "Container {name} failed {} probe, will be restarted",
                                kind.name().to_lowercase()
                            ),
                        )
                        .await;
                        return End::Killed(proc.stop(STOP_GRACE).await);
                    }
                    _ => {}
                }
            }
            if projected.as_ref().is_some_and(Projected::refresh_due) {
                let pod = pod_rx.borrow().clone();
                match self
                    .project_service_account(&pod, &self.pod_dir(&pod))
                    .await
                {
                    Ok(p) => *projected = p,
                    Err(e) => {
                        tracing::warn!(pod = %key_of(&pod), error = %e, "could not refresh the ServiceAccount token; retrying in a minute");
                        if let Some(p) = projected.as_mut() {
                            p.retry_later();
                        }
                    }
                }
            }
            self.publish(pod_rx, obs).await;
        }
    }
}
