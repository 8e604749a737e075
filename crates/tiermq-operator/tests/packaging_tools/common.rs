//! Running helm and kubectl against a kubesim cluster, and reading what they print.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `charts/tiermq`, as an argument for helm.
pub fn chart() -> String {
    root().join("charts/tiermq").display().to_string()
}

/// The documents of a multi-document YAML text (empty ones dropped).
pub fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("valid YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

/// One tool run's result with everything needed for a failure message.
pub struct Run {
    pub what: String,
    pub out: Output,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    /// Asserts success; returns stdout.
    pub fn ok(self) -> String {
        assert!(
            self.out.status.success(),
            "`{}` failed ({}):\n{}\n{}",
            self.what,
            self.out.status,
            self.stderr(),
            self.stdout()
        );
        self.stdout()
    }

    /// Asserts failure; returns stderr.
    pub fn fails(self) -> String {
        assert!(
            !self.out.status.success(),
            "`{}` should have failed:\n{}",
            self.what,
            self.stdout()
        );
        self.stderr()
    }
}

/// helm and kubectl pointed at one cluster, with their caches and settings in a folder of their
/// own so nothing of the user's leaks in.
pub struct Tools {
    pub helm: Option<PathBuf>,
    pub kubectl: PathBuf,
    pub home: tempfile::TempDir,
    pub kubeconfig: Option<PathBuf>,
}

impl Tools {
    pub fn new(helm: Option<PathBuf>, kubectl: PathBuf, kubeconfig: Option<&Path>) -> Self {
        Tools {
            helm,
            kubectl,
            home: tempfile::tempdir().expect("a temp dir"),
            kubeconfig: kubeconfig.map(Path::to_path_buf),
        }
    }

    fn command(&self, bin: &Path, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(bin);
        let home = self.home.path();
        c.args(args)
            .env("HOME", home)
            .env("HELM_CACHE_HOME", home.join("helm-cache"))
            .env("HELM_CONFIG_HOME", home.join("helm-config"))
            .env("HELM_DATA_HOME", home.join("helm-data"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        match &self.kubeconfig {
            Some(k) => c.env("KUBECONFIG", k),
            // No cluster: make sure nothing reaches one by accident.
            None => c.env("KUBECONFIG", home.join("no-kubeconfig")),
        };
        c
    }

    async fn run(&self, bin: &Path, args: &[&str], stdin: Option<&str>) -> Run {
        let what = format!(
            "{} {}",
            bin.file_name().unwrap().to_string_lossy(),
            args.join(" ")
        );
        let mut c = self.command(bin, args);
        if stdin.is_some() {
            c.stdin(Stdio::piped());
        }
        let mut child = c.spawn().unwrap_or_else(|e| panic!("start `{what}`: {e}"));
        if let Some(input) = stdin {
            let mut s = child.stdin.take().expect("piped stdin");
            s.write_all(input.as_bytes()).await.expect("stdin written");
        }
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("`{what}` did not finish in 60 s"))
            .expect("the tool ran");
        Run { what, out }
    }

    pub async fn helm(&self, args: &[&str]) -> Run {
        let helm = self.helm.as_ref().expect("these tools have no helm");
        self.run(helm, args, None).await
    }

    pub async fn kubectl(&self, args: &[&str]) -> Run {
        self.kubectl_with(args, None).await
    }

    pub async fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Run {
        self.kubectl_with(args, Some(stdin)).await
    }

    async fn kubectl_with(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let cache = self.home.path().join("kube-cache");
        let cache = cache.to_string_lossy().into_owned();
        let mut all = vec!["--cache-dir", cache.as_str()];
        all.extend_from_slice(args);
        self.run(&self.kubectl, &all, stdin).await
    }

    /// `kubectl get ... -o json`, parsed.
    pub async fn get_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&all).await.ok()).expect("kubectl -o json prints JSON")
    }

    /// `kind/name` of every object `kubectl get <what> -o name` lists (none when not found).
    pub async fn names(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend(["-o", "name", "--ignore-not-found"]);
        self.kubectl(&all)
            .await
            .ok()
            .lines()
            .map(str::to_string)
            .collect()
    }
}
