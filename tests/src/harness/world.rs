//! A kubesim cluster with the CRDs and the operator, and what tests ask of it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::Api;
use tiermq_crd::{MigrationPhase, RabbitMQInstance, RabbitMQInstanceStatus};

use crate::harness::{Kubectl, OperatorProcess, operator_binary, workspace_root};
use crate::load::AmqpTarget;

/// A kubesim cluster with the CRDs and the operator.
pub struct World {
    // Field order = drop order: the operator stops before the cluster it talks to.
    pub operator: Option<OperatorProcess>,
    pub cluster: kubesim::cluster::Cluster,
    pub kubectl: Kubectl,
    pub dir: PathBuf,
    _tmp: Option<tempfile_dir::TempDir>,
}

/// A small self-cleaning temp folder (avoids a runtime dependency on `tempfile`).
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(prefix: &str) -> std::io::Result<Self> {
            let base = std::env::var("TIERMQ_E2E_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| std::env::temp_dir().join("tiermq-e2e"));
            let dir = base.join(format!(
                "{prefix}-{}-{}",
                std::process::id(),
                chrono::Utc::now().timestamp_millis()
            ));
            std::fs::create_dir_all(&dir)?;
            Ok(TempDir(dir))
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            if std::env::var_os("TIERMQ_KEEP_E2E_DIR").is_none() {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}

impl World {
    /// Starts kubesim in a fresh folder and applies the CRDs from `crd/` with kubectl. The
    /// operator is not started yet (see [`World::start_operator`]).
    pub async fn start(name: &str) -> anyhow::Result<World> {
        let tmp = tempfile_dir::TempDir::new(name).context("create the scenario folder")?;
        let dir = tmp.path().to_path_buf();
        let mut w = Self::start_in(&dir).await?;
        w._tmp = Some(tmp);
        Ok(w)
    }

    /// Starts kubesim in a fresh folder with images mapped to local binaries (repository name →
    /// binary, see `kubesim::sim::images`), without CRDs and without an operator: for installing
    /// the operator the way users do (`helm install`), whose pod then runs the mapped binary.
    pub async fn start_with_images(name: &str, images: &[(&str, &Path)]) -> anyhow::Result<World> {
        let tmp = tempfile_dir::TempDir::new(name).context("create the scenario folder")?;
        let dir = tmp.path().to_path_buf();
        let mut cfg = kubesim::cluster::ClusterConfig::new(&dir);
        for (repository, binary) in images {
            cfg = cfg.with_image_binary(*repository, *binary);
        }
        let cluster = kubesim::cluster::start(cfg)
            .await
            .context("start kubesim")?;
        let kubectl = Kubectl::new(cluster.kubeconfig_path());
        Ok(World {
            operator: None,
            cluster,
            kubectl,
            dir,
            _tmp: Some(tmp),
        })
    }

    /// [`World::start`] with kubesim's configuration changed by `configure` (for example
    /// `ClusterConfig::with_fresh_pod_ips`).
    pub async fn start_configured(
        name: &str,
        configure: impl FnOnce(kubesim::cluster::ClusterConfig) -> kubesim::cluster::ClusterConfig,
    ) -> anyhow::Result<World> {
        let tmp = tempfile_dir::TempDir::new(name).context("create the scenario folder")?;
        let dir = tmp.path().to_path_buf();
        let mut w = Self::start_in_with(&dir, configure).await?;
        w._tmp = Some(tmp);
        Ok(w)
    }

    /// Like [`World::start`] in a given folder that is kept afterwards.
    pub async fn start_in(dir: &Path) -> anyhow::Result<World> {
        Self::start_in_with(dir, |c| c).await
    }

    /// [`World::start_in`] with kubesim's configuration changed by `configure`.
    pub async fn start_in_configured(
        dir: &Path,
        configure: impl FnOnce(kubesim::cluster::ClusterConfig) -> kubesim::cluster::ClusterConfig,
    ) -> anyhow::Result<World> {
        Self::start_in_with(dir, configure).await
    }

    async fn start_in_with(
        dir: &Path,
        configure: impl FnOnce(kubesim::cluster::ClusterConfig) -> kubesim::cluster::ClusterConfig,
    ) -> anyhow::Result<World> {
        let cluster = kubesim::cluster::start(configure(kubesim::cluster::ClusterConfig::new(dir)))
            .await
            .context("start kubesim")?;
        let kubectl = Kubectl::new(cluster.kubeconfig_path());
        let crd_dir = workspace_root().join("crd");
        for f in [
            "sharedclusters.tiermq.io.yaml",
            "rabbitmqinstances.tiermq.io.yaml",
        ] {
            let path = crd_dir.join(f);
            kubectl
                .ok(&["apply", "-f", &path.display().to_string()], None)
                .await
                .with_context(|| format!("apply CRD {}", path.display()))?;
        }
        Ok(World {
            operator: None,
            cluster,
            kubectl,
            dir: dir.to_path_buf(),
            _tmp: None,
        })
    }

    /// Starts the operator binary found by [`operator_binary`] (metrics on the cluster's own
    /// loopback slot).
    pub fn start_operator(&mut self, extra: &[&str]) -> anyhow::Result<()> {
        let bin = operator_binary()?;
        self.start_operator_bin(&bin, extra)
    }

    /// Starts a given operator binary.
    pub fn start_operator_bin(&mut self, bin: &Path, extra: &[&str]) -> anyhow::Result<()> {
        let metrics = format!("127.19.{}.2:8080", self.cluster.slot());
        self.operator = Some(OperatorProcess::spawn(
            bin,
            self.cluster.kubeconfig_path(),
            &self.dir,
            &metrics,
            extra,
        )?);
        Ok(())
    }

    pub fn operator_log_tail(&self, lines: usize) -> String {
        self.operator
            .as_ref()
            .map(|o| o.log_tail(lines))
            .unwrap_or_default()
    }

    pub fn instances(&self, ns: &str) -> Api<RabbitMQInstance> {
        Api::namespaced(self.cluster.client(), ns)
    }

    pub async fn status(&self, ns: &str, name: &str) -> anyhow::Result<RabbitMQInstanceStatus> {
        let i = self
            .instances(ns)
            .get(name)
            .await
            .with_context(|| format!("get RabbitMQInstance {ns}/{name}"))?;
        Ok(i.status.unwrap_or_default())
    }

    /// Brings a reconcile of instance `ns/name` now by annotating its Service (which the
    /// operator owns and watches). For changes the operator does not watch, such as a deleted
    /// credentials Secret (watching Secrets takes list/watch on every Secret): otherwise the
    /// next pass of a Stable instance is up to 5 minutes away.
    pub async fn poke_instance(&self, ns: &str, name: &str) -> anyhow::Result<()> {
        self.kubectl
            .ok(
                &[
                    "-n",
                    ns,
                    "annotate",
                    "svc",
                    name,
                    "test/poke=1",
                    "--overwrite",
                ],
                None,
            )
            .await
            .map(|_| ())
    }

    /// Waits until `check` accepts the instance's status; fails with the last status and the
    /// operator's log tail.
    pub async fn wait_status<F>(
        &mut self,
        ns: &str,
        name: &str,
        what: &str,
        timeout: Duration,
        mut check: F,
    ) -> anyhow::Result<RabbitMQInstanceStatus>
    where
        F: FnMut(&RabbitMQInstanceStatus) -> bool,
    {
        let until = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(op) = self.operator.as_mut() {
                op.tend()?;
            }
            if let Ok(s) = self.status(ns, name).await {
                if check(&s) {
                    return Ok(s);
                }
                last = Some(s);
            }
            if Instant::now() >= until {
                bail!(
                    "timed out after {timeout:?} waiting for {ns}/{name}: {what}; last status: {}\noperator log tail:\n{}",
                    serde_json::to_string(&last).unwrap_or_default(),
                    self.operator_log_tail(25)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until the instance is in service and not converting.
    pub async fn wait_ready(
        &mut self,
        ns: &str,
        name: &str,
        timeout: Duration,
    ) -> anyhow::Result<RabbitMQInstanceStatus> {
        self.wait_status(ns, name, "phase Ready, migration Stable", timeout, |s| {
            s.phase == Some(tiermq_crd::InstancePhase::Ready)
                && matches!(s.migration_phase, None | Some(MigrationPhase::Stable))
        })
        .await
    }

    /// Writes TLS Secret `ns/name` as cert-manager's `Certificate` would (`tls.crt`, `tls.key`,
    /// `ca.crt`): a certificate `ca` signs for cluster Service `service` in `ns` and for `also`
    /// (the instance Services it may serve, e.g. `orders.team-a.svc` or `*.team-a.svc`).
    pub async fn create_tls_secret(
        &self,
        ca: &tiermq_testkit::tls::TestCa,
        ns: &str,
        name: &str,
        service: &str,
        also: &str,
    ) -> anyhow::Result<()> {
        let host = format!("{service}.{ns}.svc");
        let cert = ca.issue(&[&host, also], &[])?;
        let bytes = |s: &str| k8s_openapi::ByteString(s.as_bytes().to_vec());
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(BTreeMap::from([
                ("tls.crt".to_string(), bytes(&cert.cert_pem)),
                ("tls.key".to_string(), bytes(&cert.key_pem)),
                ("ca.crt".to_string(), bytes(ca.ca_pem())),
            ])),
            ..Secret::default()
        };
        Api::<Secret>::namespaced(self.cluster.client(), ns)
            .create(&Default::default(), &secret)
            .await
            .with_context(|| format!("create TLS Secret {ns}/{name}"))?;
        Ok(())
    }

    /// The instance's AMQP endpoint as a host process reaches it: the client Service's ClusterIP
    /// and the tenant login from the credentials Secret.
    pub async fn instance_target(&self, ns: &str, name: &str) -> anyhow::Result<AmqpTarget> {
        let creds = self.credentials(ns, name).await?;
        let svc: Api<Service> = Api::namespaced(self.cluster.client(), ns);
        let s = svc
            .get(name)
            .await
            .with_context(|| format!("get client Service {ns}/{name}"))?;
        let ip = s
            .spec
            .and_then(|s| s.cluster_ip)
            .with_context(|| format!("Service {ns}/{name} has no ClusterIP"))?;
        let port: u16 = creds
            .get("port")
            .and_then(|p| p.parse().ok())
            .unwrap_or(5672);
        let get = |k: &str| {
            creds
                .get(k)
                .cloned()
                .with_context(|| format!("credentials Secret {ns}/{name}-credentials has no {k}"))
        };
        Ok(AmqpTarget::from_parts(
            &ip,
            port,
            &get("vhost")?,
            &get("username")?,
            &get("password")?,
        )?)
    }

    /// The decoded data of `<instance>-credentials`.
    pub async fn credentials(
        &self,
        ns: &str,
        name: &str,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let secrets: Api<Secret> = Api::namespaced(self.cluster.client(), ns);
        let s = secrets
            .get(&format!("{name}-credentials"))
            .await
            .with_context(|| format!("get Secret {ns}/{name}-credentials"))?;
        Ok(s.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect())
    }

    pub async fn statefulset_exists(&self, ns: &str, name: &str) -> anyhow::Result<bool> {
        let api: Api<StatefulSet> = Api::namespaced(self.cluster.client(), ns);
        Ok(api.get_opt(name).await?.is_some())
    }

    /// A management-API client for cluster `cluster` in `ns` (see [`management_client`]).
    pub async fn management(
        &self,
        ns: &str,
        cluster: &str,
    ) -> anyhow::Result<tiermq_broker::ManagementClient> {
        management_client(&self.cluster.client(), ns, cluster).await
    }
}

/// A management-API client for broker cluster `cluster` in `ns`, through its Service's ClusterIP
/// with the admin login from `<cluster>-admin`.
pub async fn management_client(
    client: &kube::Client,
    ns: &str,
    cluster: &str,
) -> anyhow::Result<tiermq_broker::ManagementClient> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let s = secrets
        .get(&format!("{cluster}-admin"))
        .await
        .with_context(|| format!("get admin Secret {ns}/{cluster}-admin"))?;
    let data = s.data.unwrap_or_default();
    let val = |k: &str| {
        data.get(k)
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .with_context(|| format!("admin Secret {ns}/{cluster}-admin has no {k}"))
    };
    let svc: Api<Service> = Api::namespaced(client.clone(), ns);
    let ip = svc
        .get(cluster)
        .await
        .with_context(|| format!("get cluster Service {ns}/{cluster}"))?
        .spec
        .and_then(|s| s.cluster_ip)
        .with_context(|| format!("Service {ns}/{cluster} has no ClusterIP"))?;
    Ok(tiermq_broker::ManagementClient::new(
        tiermq_broker::ClusterEndpoint {
            cluster: format!("{ns}/{cluster}"),
            url: format!("http://{ip}:15672"),
            username: val("username")?,
            password: tiermq_broker::Secret::new(val("password")?),
        },
    )?)
}
