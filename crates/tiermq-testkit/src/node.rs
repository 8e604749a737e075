use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::config::{Credentials, NodeConfig};
use crate::error::TestkitError;
use crate::ip::IpLease;
use crate::runtime::{
    BrokerRuntime, CHROOT, CTL_SCRIPT, SERVER_SCRIPT, UNSHARE, ensure_host_epmd,
    host_server_script, is_root,
};
use crate::sweep::{self, path_in_root, set_mode, testkit_root};

const CTL: &str = "rabbitmqctl";
/// How long a node gets to become ready; a cold node answers in 5–10 s on two busy cores.
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Run by `unshare` in the 4.0 node's private mount namespace: mounts `proc` into the root (the
/// node's memory monitor reads it; without it the node stops during boot) and binds the node's
/// folder to the same path inside the root, then becomes the node. `$1` is the root, `$2` the
/// node's folder, `$3`/`$4` (when not empty) a folder to bind at a second path inside the root
/// too (the TLS files where a pod mounts them, see [`crate::NodeTls::also_at`]); the rest is the
/// command. Nothing here is visible outside the namespace, and it all goes away with the node's
/// last process.
const MOUNT_AND_EXEC: &str = r#"set -e
root=$1; base=$2; extra=$3; at=$4; shift 4
mount -t proc proc "$root/proc"
mount --bind "$base" "$root$base"
if [ -n "$at" ]; then mkdir -p "$root$at"; mount --bind "$extra" "$root$at"; fi
exec "$@"
"#;

/// The same for a 3.10 node that needs its TLS folder at a second path: run by `unshare` as
/// root, binds `$1` at `$2` (created if missing; the mount lives only in the node's namespace),
/// then becomes the node through the rest of the command (`setpriv` drops to its user).
const BIND_AND_EXEC: &str = r#"set -e
extra=$1; at=$2; shift 2
mkdir -p "$at"
mount --bind "$extra" "$at"
exec "$@"
"#;

const SETPRIV: &str = "/usr/bin/setpriv";

/// One running `rabbitmq-server`. Dropping it kills the node's whole process group.
#[derive(Debug)]
pub struct RabbitNode {
    config: NodeConfig,
    runtime: BrokerRuntime,
    pid: u32,
    child: Mutex<Child>,
    marker: PathBuf,
    /// 4.0: the empty folder inside the root the node's folder is bound to (in the node's own
    /// mount namespace), and the topmost folder the start created for it; removed after the
    /// node, from the mount point up to that one, as far as they are empty.
    mount_point: Option<(PathBuf, PathBuf)>,
    // Held only for nodes made by `start_nodes`; released after the process is gone
    // (fields drop after `Drop::drop`).
    _lease: Option<IpLease>,
    _dir: Option<tempfile::TempDir>,
}

impl RabbitNode {
    /// Starts a RabbitMQ 3.10 node (the host's package): [`RabbitNode::start_on`] with
    /// [`BrokerRuntime::Host310`].
    pub fn start(config: NodeConfig) -> Result<Self, TestkitError> {
        Self::start_on(BrokerRuntime::Host310, config)
    }

    /// Starts the node on `runtime` as a child process in its own process group and returns at
    /// once; call [`RabbitNode::wait_ready`] before using it. Writes `rabbitmq.conf`,
    /// `enabled_plugins`, `advanced.config` and the cookie into `base_dir`, keeping any data
    /// already there. `base_dir` may be anywhere on the host for either runtime (a 4.0 node sees
    /// it at the same path inside its root).
    pub fn start_on(runtime: BrokerRuntime, config: NodeConfig) -> Result<Self, TestkitError> {
        config.validate()?;
        sweep::sweep_stale_nodes();
        runtime.check_installed()?;
        let root = runtime.root();
        fs::create_dir_all(&config.base_dir)
            .map_err(TestkitError::io("create node folder", &config.base_dir))?;
        // A 4.0 node sees its folder through a bind mount at the same path inside the root: use
        // the real path, the one the node (and the stale-node sweep) will see.
        let base = match root {
            None => config.base_dir.clone(),
            Some(_) => fs::canonicalize(&config.base_dir)
                .map_err(TestkitError::io("resolve node folder", &config.base_dir))?,
        };
        let base = &base;
        let (mnesia, logs) = (base.join("mnesia"), base.join("log"));
        for dir in [base, &mnesia, &logs] {
            fs::create_dir_all(dir).map_err(TestkitError::io("create node folder", dir))?;
        }
        let write = |name: &str, text: &str| -> Result<PathBuf, TestkitError> {
            let path = base.join(name);
            fs::write(&path, text).map_err(TestkitError::io("write node file", &path))?;
            Ok(path)
        };
        if let Some(tls) = &config.tls {
            let dir = base.join(crate::config::TLS_DIR);
            fs::create_dir_all(&dir).map_err(TestkitError::io("create node folder", &dir))?;
            for (name, pem) in [
                ("ca.crt", &tls.ca_pem),
                ("tls.crt", &tls.cert_pem),
                ("tls.key", &tls.key_pem),
            ] {
                let path = dir.join(name);
                fs::write(&path, pem).map_err(TestkitError::io("write node file", &path))?;
            }
            set_mode(&dir.join("tls.key"), 0o400)?;
        }
        // File paths in the config must be the ones the node sees (the resolved folder).
        let seen = NodeConfig {
            base_dir: base.clone(),
            ..config.clone()
        };
        let conf = write("rabbitmq.conf", &seen.rendered_config())?;
        let plugins = write("enabled_plugins", &config.rendered_plugins())?;
        let advanced = write(
            "advanced.config",
            config.advanced_config.as_deref().unwrap_or("[].\n"),
        )?;
        let cookie = base.join(".erlang.cookie");
        // The cookie file must be private to the node's user, or Erlang refuses to start.
        let _ = fs::remove_file(&cookie);
        fs::write(&cookie, &config.erlang_cookie)
            .map_err(TestkitError::io("write cookie", &cookie))?;
        set_mode(&cookie, 0o400)?;
        set_mode(base, 0o750)?;

        // The node's own `rabbitmq` user: the host's, or the 4.0 root's (another uid).
        let run_as = if is_root() {
            Some(runtime.rabbitmq_ids()?)
        } else {
            None
        };
        if let Some((uid, gid)) = run_as {
            chown_tree(base, uid, gid)?;
            // A 3.10 node starts in its folder as that user: say which folder stops it (a 4.0
            // node sees its folder through a bind mount, whatever the host path's modes).
            if root.is_none() {
                unreachable_folder(base, uid, gid)?;
            }
        }

        let stdout = fs::File::create(logs.join("stdout.log"))
            .map_err(TestkitError::io("create log", &logs))?;
        let stderr = stdout
            .try_clone()
            .map_err(TestkitError::io("create log", &logs))?;
        // The TLS folder at a pod's mount path too, when asked (see `NodeTls::also_at`).
        let also_at = config
            .tls
            .as_ref()
            .and_then(|t| t.also_at.as_ref())
            .map(|at| (base.join(crate::config::TLS_DIR), at.clone()));
        let (mut cmd, program, mount_point) = match &root {
            None if also_at.is_some() => {
                let (extra, at) = also_at.clone().expect("checked");
                let (uid, gid) = run_as.ok_or_else(|| {
                    TestkitError::Config(format!(
                        "showing the TLS files at {} needs root (a private mount namespace)",
                        at.display()
                    ))
                })?;
                let script = host_server_script();
                let mut cmd = Command::new(UNSHARE);
                cmd.args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
                    .arg(BIND_AND_EXEC)
                    .arg("tiermq-node")
                    .arg(&extra)
                    .arg(&at)
                    .arg(SETPRIV)
                    .arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg(&script);
                (cmd, UNSHARE.to_string(), None)
            }
            None => {
                let script = host_server_script();
                let mut cmd = Command::new(&script);
                if let Some((uid, gid)) = run_as {
                    cmd.uid(uid).gid(gid);
                }
                (cmd, script, None)
            }
            Some(root) => {
                let (uid, gid) = run_as.expect("check_installed: 4.0 nodes start as root");
                ensure_host_epmd()?;
                let mount_point = path_in_root(root, base).ok_or_else(|| {
                    TestkitError::Config(format!(
                        "node folder {} cannot be bound into the root",
                        base.display()
                    ))
                })?;
                let created_from = make_mount_point(&mount_point)?;
                let mut cmd = Command::new(UNSHARE);
                cmd.args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
                    .arg(MOUNT_AND_EXEC)
                    .arg("tiermq-node")
                    .arg(root)
                    .arg(base)
                    .arg(
                        also_at
                            .as_ref()
                            .map(|(e, _)| e.as_os_str())
                            .unwrap_or_default(),
                    )
                    .arg(
                        also_at
                            .as_ref()
                            .map(|(_, a)| a.as_os_str())
                            .unwrap_or_default(),
                    )
                    .arg(CHROOT)
                    .arg(format!("--userspec={uid}:{gid}"))
                    // Explicit, or chroot would look the uid up on the host (another user there).
                    .arg(format!("--groups={gid}"))
                    .arg(root)
                    .arg(SERVER_SCRIPT);
                (cmd, UNSHARE.to_string(), Some((mount_point, created_from)))
            }
        };
        // Distribution listens where the node name points (the listeners' `ip` may differ).
        let ip = config.name_host.octets();
        cmd.env_clear()
            .env(
                "PATH",
                "/usr/lib/rabbitmq/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            )
            .env("LANG", "C.UTF-8")
            .env("HOME", base)
            .env("RABBITMQ_NODENAME", config.full_node_name())
            .env("RABBITMQ_USE_LONGNAME", "true")
            .env("RABBITMQ_MNESIA_BASE", &mnesia)
            .env("RABBITMQ_LOG_BASE", &logs)
            .env("RABBITMQ_CONFIG_FILE", &conf)
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", &advanced)
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", &plugins)
            .env("RABBITMQ_PID_FILE", base.join("rabbitmq.pid"))
            .env("RABBITMQ_DIST_PORT", config.dist_port.to_string())
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                format!(
                    "-kernel inet_dist_use_interface {{{},{},{},{}}} {}",
                    ip[0],
                    ip[1],
                    ip[2],
                    ip[3],
                    config.extra_erl_args.as_deref().unwrap_or_default()
                )
                .trim_end(),
            )
            // Makes the start script exec the Erlang VM instead of keeping a shell in between,
            // so the child we hold is the node itself (for 4.0, unshare, sh and chroot exec too).
            .env("RUNNING_UNDER_SYSTEMD", "true")
            .current_dir(base)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        if let Some(flags) = &config.initial_feature_flags {
            cmd.env("RABBITMQ_FEATURE_FLAGS", flags);
        }
        let child = cmd
            .spawn()
            .map_err(TestkitError::io("spawn rabbitmq-server", &program))?;
        let pid = child.id();
        let marker = sweep::write_marker(pid, base)?;
        tracing::info!(node = %config.full_node_name(), %runtime, pid, base = %base.display(), "started rabbitmq-server");
        Ok(RabbitNode {
            config,
            runtime,
            pid,
            child: Mutex::new(child),
            marker,
            mount_point,
            _lease: None,
            _dir: None,
        })
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The RabbitMQ this node runs.
    pub fn runtime(&self) -> BrokerRuntime {
        self.runtime
    }

    /// `rabbit-0@127.3.0.1`.
    pub fn node_name(&self) -> String {
        self.config.full_node_name()
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn admin(&self) -> &Credentials {
        &self.config.admin
    }

    /// `http://127.3.0.1:15672`, without a trailing slash.
    pub fn management_url(&self) -> String {
        format!("http://{}:{}", self.config.ip, self.config.management_port)
    }

    /// `http://ip:15692`: the `rabbitmq_prometheus` endpoint (`/metrics`), when the node runs
    /// that plugin.
    pub fn prometheus_url(&self) -> String {
        format!("http://{}:{}", self.config.ip, crate::PROMETHEUS_PORT)
    }

    /// `host:port` of the AMQP listener.
    pub fn amqp_address(&self) -> String {
        format!("{}:{}", self.config.ip, self.config.amqp_port)
    }

    /// An AMQP URI for `vhost` (percent-encoded) with the given credentials.
    pub fn amqp_url(&self, creds: &Credentials, vhost: &str) -> String {
        format!(
            "amqp://{}:{}@{}/{}",
            encode(&creds.username),
            encode(&creds.password),
            self.amqp_address(),
            encode(vhost)
        )
    }

    /// `true` while the node's process has not exited.
    pub fn is_running(&self) -> bool {
        matches!(self.child.lock().expect("child lock").try_wait(), Ok(None))
    }

    /// How the node's process ended, once it has (`None` while it runs).
    pub fn exit_status(&self) -> Option<std::process::ExitStatus> {
        self.child
            .lock()
            .expect("child lock")
            .try_wait()
            .ok()
            .flatten()
    }

    /// One readiness probe: the management API answers an authenticated request.
    pub async fn probe(&self) -> Result<(), String> {
        crate::tls::install_crypto_provider();
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        let resp = client
            .get(format!("{}/api/overview", self.management_url()))
            .basic_auth(
                &self.config.admin.username,
                Some(&self.config.admin.password),
            )
            .send()
            .await
            .map_err(|e| format!("management API unreachable: {e}"))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("management API answered HTTP {}", resp.status()))
        }
    }

    /// Waits until [`RabbitNode::probe`] succeeds; fails early, with the log's tail, if the node
    /// exits.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), TestkitError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .lock()
                .expect("child lock")
                .try_wait()
                .ok()
                .flatten()
            {
                return Err(TestkitError::Exited {
                    node: self.node_name(),
                    status: status.to_string(),
                    log_tail: self.log_tail(40),
                });
            }
            let last_probe = match self.probe().await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(TestkitError::NotReady {
                    node: self.node_name(),
                    timeout,
                    last_probe,
                    log_tail: self.log_tail(40),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The last `lines` lines of the node's log and of its console output.
    pub fn log_tail(&self, lines: usize) -> String {
        let logs = self.config.base_dir.join("log");
        let mut out = String::new();
        for file in [
            logs.join(format!("{}.log", self.node_name())),
            logs.join("stdout.log"),
        ] {
            if let Ok(text) = fs::read_to_string(&file) {
                let all: Vec<&str> = text.lines().collect();
                let start = all.len().saturating_sub(lines);
                out.push_str(&format!(
                    "--- {}\n{}\n",
                    file.display(),
                    all[start..].join("\n")
                ));
            }
        }
        out
    }

    /// Runs `rabbitmqctl` against this node with its cookie and long names: the host's for 3.10,
    /// the root's own (through `chroot`, so the CLI matches the node) for 4.0.
    pub async fn rabbitmqctl(&self, args: &[&str]) -> Result<String, TestkitError> {
        let mut cmd = match self.runtime.root() {
            None => tokio::process::Command::new(CTL),
            Some(root) => {
                let mut cmd = tokio::process::Command::new(CHROOT);
                cmd.arg(root)
                    .arg(CTL_SCRIPT)
                    .env_clear()
                    .env("PATH", "/usr/lib/rabbitmq/bin:/usr/bin:/bin")
                    .env("LANG", "C.UTF-8")
                    .env("HOME", "/root");
                cmd
            }
        };
        let output = cmd
            .args([
                "--longnames",
                "--erlang-cookie",
                &self.config.erlang_cookie,
                "-n",
                &self.node_name(),
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(TestkitError::io("run rabbitmqctl", CTL))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if output.status.success() {
            Ok(text)
        } else {
            Err(TestkitError::Ctl {
                node: self.node_name(),
                args: args.join(" "),
                status: output.status.to_string(),
                output: text.replace(&self.config.erlang_cookie, "<cookie>"),
            })
        }
    }

    /// Makes this node a member of `other`'s cluster (both must share the Erlang cookie). This
    /// node's own data is reset, as `rabbitmqctl join_cluster` requires.
    pub async fn join_cluster(&self, other: &RabbitNode) -> Result<(), TestkitError> {
        if self.runtime != other.runtime {
            return Err(TestkitError::Config(format!(
                "{} runs {} and {} runs {}: nodes of different releases do not cluster here",
                self.node_name(),
                self.runtime,
                other.node_name(),
                other.runtime
            )));
        }
        if self.config.erlang_cookie != other.config.erlang_cookie {
            return Err(TestkitError::Config(format!(
                "{} and {} have different Erlang cookies and cannot cluster",
                self.node_name(),
                other.node_name()
            )));
        }
        self.rabbitmqctl(&["stop_app"]).await?;
        self.rabbitmqctl(&["reset"]).await?;
        self.rabbitmqctl(&["join_cluster", &other.node_name()])
            .await?;
        self.rabbitmqctl(&["start_app"]).await?;
        Ok(())
    }

    /// Graceful stop: SIGTERM, then SIGKILL to the whole group after `grace`.
    pub async fn stop(&self, grace: Duration) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.is_running() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.kill();
    }

    /// Kills the node's whole process group at once and reaps it (a crash, as far as RabbitMQ is
    /// concerned).
    pub fn kill(&self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.lock().expect("child lock").wait();
        let _ = fs::remove_file(&self.marker);
    }

    fn signal(&self, sig: i32) {
        let mut child = self.child.lock().expect("child lock");
        if matches!(child.try_wait(), Ok(None)) {
            // SAFETY: plain syscall. The node leads its own process group (process_group(0)),
            // so the negative pid reaches the VM and its helpers (erl_child_setup, inet_gethost).
            unsafe {
                libc::kill(-(self.pid as i32), sig);
            }
        }
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        self.kill();
        if let Some((mount_point, created_from)) = &self.mount_point {
            remove_mount_point(mount_point, created_from);
        }
    }
}

/// Folders inside the 4.0 root that nodes of this process made for their mount points (the
/// lock also orders making and removing them). A folder made for one node may hold another's
/// mount point (two nodes below one temp dir); it goes with the last of them.
static MADE_IN_ROOT: Mutex<std::collections::BTreeSet<PathBuf>> =
    Mutex::new(std::collections::BTreeSet::new());

/// Makes `mount_point` inside the root; returns the topmost folder on its way that did not exist
/// or was made for another node of this process: the folders the node's removal may remove.
fn make_mount_point(mount_point: &Path) -> Result<PathBuf, TestkitError> {
    let mut made = MADE_IN_ROOT.lock().unwrap_or_else(|e| e.into_inner());
    let created_from = mount_point
        .ancestors()
        .take_while(|p| !p.exists() || made.contains(*p))
        .last()
        .unwrap_or(mount_point)
        .to_path_buf();
    fs::create_dir_all(mount_point).map_err(TestkitError::io(
        "create mount point in the root",
        mount_point,
    ))?;
    for dir in mount_point.ancestors() {
        if !dir.starts_with(&created_from) {
            break;
        }
        made.insert(dir.to_path_buf());
    }
    Ok(created_from)
}

/// Removes a stopped node's mount point and the folders made for it, as far as they are empty.
/// Empty on the host (the bind mount lived in the node's own namespace, gone with the node);
/// `remove_dir` never removes a folder that is not empty.
fn remove_mount_point(mount_point: &Path, created_from: &Path) {
    let mut made = MADE_IN_ROOT.lock().unwrap_or_else(|e| e.into_inner());
    for dir in mount_point.ancestors() {
        if !dir.starts_with(created_from) || fs::remove_dir(dir).is_err() {
            break;
        }
        made.remove(dir);
    }
}

/// Fails with [`TestkitError::FolderUnreachable`] when a folder on the way to `base` cannot be
/// entered by `uid`/`gid` (no search permission): the node would fail to start in its folder with
/// a bare "Permission denied". A private temporary folder (`mktemp -d`, mode 0700) above the
/// node's folder is the usual cause.
pub(crate) fn unreachable_folder(base: &Path, uid: u32, gid: u32) -> Result<(), TestkitError> {
    use std::os::unix::fs::MetadataExt;
    let base = fs::canonicalize(base).map_err(TestkitError::io("resolve node folder", base))?;
    for dir in base.ancestors().collect::<Vec<_>>().into_iter().rev() {
        let Ok(meta) = fs::metadata(dir) else {
            continue;
        };
        let mode = meta.mode() & 0o7777;
        let search = if meta.uid() == uid {
            mode & 0o100
        } else if meta.gid() == gid {
            mode & 0o010
        } else {
            mode & 0o001
        };
        if search == 0 {
            return Err(TestkitError::FolderUnreachable {
                base: base.clone(),
                user: "rabbitmq".into(),
                uid,
                blocked: dir.to_path_buf(),
                mode,
                owner: meta.uid(),
            });
        }
    }
    Ok(())
}

static NEXT_NODE: AtomicU32 = AtomicU32::new(0);

/// Starts `n` throw-away RabbitMQ 3.10 test nodes: [`start_nodes_on`] with
/// [`BrokerRuntime::Host310`].
pub async fn start_nodes(n: usize) -> Result<Vec<RabbitNode>, TestkitError> {
    start_nodes_on(BrokerRuntime::Host310, n).await
}

/// Starts `n` throw-away test nodes of `runtime` in parallel, each on its own leased loopback IP
/// with the standard ports and a temporary folder, and waits until all are ready. Node names are
/// unique on the machine (`tk<pid>-<n>`). Nodes do not form a cluster; see
/// [`RabbitNode::join_cluster`].
pub async fn start_nodes_on(
    runtime: BrokerRuntime,
    n: usize,
) -> Result<Vec<RabbitNode>, TestkitError> {
    start_nodes_with(runtime, n, |_, _| {}).await
}

/// [`start_nodes_on`], with `adjust(i, config)` changing node `i`'s [`NodeConfig::for_test`]
/// first (its `rabbitmq.conf` body, `advanced.config`, plugins...). Leave `ip`, `dist_port` and
/// `base_dir` alone: they belong to the node's lease and temporary folder.
pub async fn start_nodes_with(
    runtime: BrokerRuntime,
    n: usize,
    adjust: impl Fn(usize, &mut NodeConfig),
) -> Result<Vec<RabbitNode>, TestkitError> {
    runtime.check_installed()?;
    let nodes_dir = testkit_root()?.join("nodes");
    fs::create_dir_all(&nodes_dir).map_err(TestkitError::io("create nodes folder", &nodes_dir))?;
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let lease = IpLease::acquire()?;
        let dir = tempfile::Builder::new()
            .prefix("node-")
            .tempdir_in(&nodes_dir)
            .map_err(TestkitError::io("create node temp folder", &nodes_dir))?;
        let name = format!(
            "tk{}-{}",
            std::process::id(),
            NEXT_NODE.fetch_add(1, Ordering::Relaxed)
        );
        let mut config = NodeConfig::for_test(name, lease.ip(), dir.path().to_path_buf());
        adjust(i, &mut config);
        let mut node = RabbitNode::start_on(runtime, config)?;
        node._lease = Some(lease);
        node._dir = Some(dir);
        nodes.push(node);
    }
    futures::future::try_join_all(nodes.iter().map(|n| n.wait_ready(READY_TIMEOUT))).await?;
    Ok(nodes)
}

/// One ready RabbitMQ 3.10 test node.
pub async fn start_test_node() -> Result<RabbitNode, TestkitError> {
    start_test_node_on(BrokerRuntime::Host310).await
}

/// One ready test node of `runtime`.
pub async fn start_test_node_on(runtime: BrokerRuntime) -> Result<RabbitNode, TestkitError> {
    Ok(start_nodes_on(runtime, 1).await?.pop().expect("one node"))
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<(), TestkitError> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .map_err(TestkitError::io("chown", path))?;
    if path.is_dir() && !path.is_symlink() {
        for entry in fs::read_dir(path).map_err(TestkitError::io("read folder", path))? {
            let entry = entry.map_err(TestkitError::io("read folder", path))?;
            chown_tree(&entry.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn encode_keeps_unreserved_and_escapes_the_rest() {
        assert_eq!(super::encode("/"), "%2F");
        assert_eq!(super::encode("a b~c"), "a%20b~c");
        assert_eq!(super::encode("é"), "%C3%A9");
    }
}
