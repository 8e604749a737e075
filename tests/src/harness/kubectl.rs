//! The real kubectl, run against a test cluster's kubeconfig.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// Runs kubectl against a kubeconfig.
#[derive(Clone, Debug)]
pub struct Kubectl {
    kubeconfig: PathBuf,
}

/// What one kubectl run printed.
#[derive(Debug)]
pub struct KubectlOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Kubectl {
    pub fn new(kubeconfig: impl Into<PathBuf>) -> Self {
        Kubectl {
            kubeconfig: kubeconfig.into(),
        }
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Runs `kubectl <args>` (with `stdin` if given) and returns what it printed.
    pub async fn run(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<KubectlOutput> {
        let kubeconfig = self.kubeconfig.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let stdin = stdin.map(str::to_string);
        tokio::task::spawn_blocking(move || {
            let mut child = Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(&args)
                .stdin(if stdin.is_some() {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("start kubectl (is it on PATH?)")?;
            if let Some(input) = stdin {
                child
                    .stdin
                    .take()
                    .expect("piped")
                    .write_all(input.as_bytes())
                    .context("write kubectl stdin")?;
            }
            let out = child.wait_with_output().context("wait for kubectl")?;
            Ok(KubectlOutput {
                success: out.status.success(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        })
        .await
        .context("kubectl task")?
    }

    /// Runs kubectl and fails with its stderr when it fails.
    pub async fn ok(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        let out = self.run(args, stdin).await?;
        if !out.success {
            bail!("kubectl {} failed: {}", args.join(" "), out.stderr.trim());
        }
        Ok(out.stdout)
    }

    /// `kubectl apply -f -` of a YAML document (or several).
    pub async fn apply(&self, yaml: &str) -> anyhow::Result<String> {
        self.ok(&["apply", "-f", "-"], Some(yaml)).await
    }
}

/// `kubectl patch --type merge` of RabbitMQInstance `ns/name` with the JSON `patch`, as a user
/// would change an instance.
pub async fn patch_instance(
    kubectl: &Kubectl,
    ns: &str,
    name: &str,
    patch: &str,
) -> anyhow::Result<()> {
    kubectl
        .ok(
            &[
                "-n", ns, "patch", "rmqi", name, "--type", "merge", "-p", patch,
            ],
            None,
        )
        .await
        .map(|_| ())
}

/// `kubectl patch` of `spec.tier`.
pub async fn flip_tier(kubectl: &Kubectl, ns: &str, name: &str, tier: &str) -> anyhow::Result<()> {
    patch_instance(
        kubectl,
        ns,
        name,
        &format!("{{\"spec\":{{\"tier\":\"{tier}\"}}}}"),
    )
    .await
}
