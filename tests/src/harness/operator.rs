//! The operator binary as a child process of a test.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The operator binary running against a cluster. Killed (whole process group) on drop.
pub struct OperatorProcess {
    child: Option<Child>,
    log: PathBuf,
    pub metrics_addr: String,
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
        if !bin.exists() {
            bail!(
                "operator binary {} is missing; run `cargo build -p tiermq-operator`",
                bin.display()
            );
        }
        let log = dir.join("operator.log");
        let file = std::fs::File::create(&log)
            .with_context(|| format!("create operator log {}", log.display()))?;
        let mut cmd = Command::new(bin);
        cmd.args([
            "run",
            "--leader-election",
            "false",
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
            metrics_addr,
        ])
        .args(extra)
        .env("KUBECONFIG", kubeconfig)
        .env(
            "RUST_LOG",
            std::env::var("TIERMQ_OPERATOR_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(file.try_clone().context("clone log handle")?)
        .stderr(file)
        .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        Ok(OperatorProcess {
            child: Some(child),
            log,
            metrics_addr: metrics_addr.to_string(),
        })
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

    /// Fails when the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            bail!(
                "the operator exited ({status}); last log lines:\n{}",
                self.log_tail(30)
            );
        }
        Ok(())
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
