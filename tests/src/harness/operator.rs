//! The operator binary as a child process of a test.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How the test treats the operator process while it runs (see [`OperatorProcess::tend`]).
#[derive(Clone, Debug, Default)]
pub struct Supervision {
    /// Start it again when it exits, as a kubelet restarts a crashed container.
    pub restart: bool,
    /// SIGKILL it at random intervals in this range (then restart it): a crash loop.
    pub kill_every: Option<(Duration, Duration)>,
    /// Extra environment of the process (for example the crash hook's variables).
    pub env: Vec<(String, String)>,
}

/// The operator binary running against a cluster. Killed (whole process group) on drop.
pub struct OperatorProcess {
    child: Option<Child>,
    log: PathBuf,
    pub metrics_addr: String,
    bin: PathBuf,
    kubeconfig: PathBuf,
    extra: Vec<String>,
    supervision: Supervision,
    next_kill: Option<Instant>,
    /// Leader election under this identity (`None`: `--leader-election false`).
    identity: Option<String>,
    /// Times the process was started again after it exited by itself (crashed).
    pub restarts: u32,
    /// Times the kill schedule SIGKILLed it.
    pub kills: u32,
}

impl OperatorProcess {
    /// Spawns `tiermq-operator run` with KUBECONFIG, no leader election, brokers addressed by
    /// ClusterIP, JSON logs into `<dir>/operator.log`, short drain polls and a short statistics
    /// interval. `extra` flags are appended.
    pub fn spawn(
        bin: &Path,
        kubeconfig: &Path,
        dir: &Path,
        metrics_addr: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::spawn_as(
            bin,
            kubeconfig,
            &dir.join("operator.log"),
            metrics_addr,
            extra,
            None,
        )
    }

    /// [`Self::spawn`] with its own log file and, with `identity`, leader election under it (for
    /// tests that run more than one replica).
    pub fn spawn_as(
        bin: &Path,
        kubeconfig: &Path,
        log: &Path,
        metrics_addr: &str,
        extra: &[&str],
        identity: Option<&str>,
    ) -> anyhow::Result<Self> {
        if !bin.exists() {
            bail!(
                "operator binary {} is missing; run `cargo build -p tiermq-operator`",
                bin.display()
            );
        }
        let mut op = OperatorProcess {
            child: None,
            log: log.to_path_buf(),
            metrics_addr: metrics_addr.to_string(),
            bin: bin.to_path_buf(),
            kubeconfig: kubeconfig.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            supervision: Supervision::default(),
            next_kill: None,
            identity: identity.map(str::to_string),
            restarts: 0,
            kills: 0,
        };
        // The first start truncates the log; restarts append to it.
        std::fs::File::create(&op.log)
            .with_context(|| format!("create operator log {}", op.log.display()))?;
        op.start()?;
        Ok(op)
    }

    /// The process's exit status once it has exited by itself (not restarted).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn start(&mut self) -> anyhow::Result<()> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open operator log {}", self.log.display()))?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("run");
        match &self.identity {
            Some(id) => cmd.args(["--leader-election", "true", "--identity", id]),
            None => cmd.args(["--leader-election", "false"]),
        };
        cmd.args([
            "--broker-addressing",
            "cluster-ip",
            "--log-format",
            "json",
            "--namespace",
            "tiermq-system",
            "--default-shared-cluster",
            "main",
            "--drain-poll-seconds",
            "1",
            "--broker-stats-interval-ms",
            "500",
            "--metrics-addr",
            &self.metrics_addr,
        ])
        .args(&self.extra)
        .env("KUBECONFIG", &self.kubeconfig)
        .env(
            "RUST_LOG",
            std::env::var("TIERMQ_OPERATOR_LOG").unwrap_or_else(|_| "info".into()),
        )
        .envs(self.supervision.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(file.try_clone().context("clone log handle")?)
        .stderr(file)
        .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Stops the process (SIGKILL) and starts it again under `supervision`.
    pub fn restart_with(&mut self, supervision: Supervision) -> anyhow::Result<()> {
        self.kill_now();
        self.supervision = supervision;
        self.next_kill = self.draw_next_kill();
        self.start()
    }

    fn draw_next_kill(&self) -> Option<Instant> {
        let (lo, hi) = self.supervision.kill_every?;
        let span = hi.saturating_sub(lo).as_millis() as u64;
        let jitter = if span == 0 {
            0
        } else {
            rand::random_range(0..=span)
        };
        Some(Instant::now() + lo + Duration::from_millis(jitter))
    }

    fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling the process group we created.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// Called while a test waits: applies the supervision (restart after an exit, kills on
    /// schedule). Without supervision an exit is an error carrying the log's last lines.
    pub fn tend(&mut self) -> anyhow::Result<()> {
        if let Some(at) = self.next_kill
            && Instant::now() >= at
        {
            self.kill_now();
            self.kills += 1;
            self.start()?;
            self.next_kill = self.draw_next_kill();
            return Ok(());
        }
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            if !self.supervision.restart {
                bail!(
                    "the operator exited ({status}); last log lines:\n{}",
                    self.log_tail(30)
                );
            }
            self.child = None;
            self.restarts += 1;
            self.start()?;
        }
        Ok(())
    }

    /// The running process's id (`None` while it is not running).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the operator's log (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pgid = child.id() as i32;
        // SAFETY: signalling a process group we created.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = child.wait();
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling the process group we created.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
    }
}
