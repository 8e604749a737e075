//! How the kubelet turns a RabbitMQ pod into a `tiermq_testkit::NodeConfig`.
//!
//! A container whose image contains `rabbitmq` runs as a real `rabbitmq-server` process:
//!
//! - **Version**: the image's tag picks the RabbitMQ that runs ([`runtime_for_image`]), by its
//!   major version:
//!
//!   | image tag | runs | from |
//!   |---|---|---|
//!   | `3`, `3.x…` (e.g. `rabbitmq:3.10-management`, `3.13.7-alpine`) | RabbitMQ 3.10.8 on Erlang 25 | the host's Debian 12 package |
//!   | `4`, `4.x…` (e.g. `rabbitmq:4.0-management`, `4.1.2`) | RabbitMQ 4.0.5 on Erlang 27 | the Debian 13 root `make setup` builds (`TIERMQ_RABBITMQ4_ROOT`) |
//!   | anything else (`latest`, `management`, no tag, a digest only, `5.0`) | nothing: the container waits with reason `ErrImagePull` and a message naming the image and these tags, and a Warning Event `Failed` | |
//!
//!   The machine has one release of each series, so every 3.x tag runs 3.10.8 and every 4.x tag
//!   4.0.5; the container status's `imageID` says which one ran (`kubesim://rabbitmq-server/4.0
//!   (Debian 13 root)`). A 4.x pod on a machine without the 4.0 root waits with
//!   `CreateContainerError` and a message saying to run `make setup`. Either runtime's node is
//!   stopped and cleaned up the same way (see `tiermq_testkit::RabbitNode`).
//! - **Configuration**: `rabbitmq.conf` is read from the container's filesystem as mounted from its
//!   volumes: `$RABBITMQ_CONFIG_FILE`, else `/etc/rabbitmq/rabbitmq.conf`, else any mounted
//!   ConfigMap/projected volume that has a `rabbitmq.conf` key; files under
//!   `/etc/rabbitmq/conf.d/*.conf` are appended. `enabled_plugins` likewise
//!   (`$RABBITMQ_ENABLED_PLUGINS_FILE`, `/etc/rabbitmq/enabled_plugins`, any mounted key
//!   `enabled_plugins`). The kubelet removes listener lines (`listeners.tcp.*`,
//!   `management.tcp.*`, `prometheus.tcp.*`) and `cluster_formation.*` lines and lets the launcher
//!   bind AMQP, management and (with `rabbitmq_prometheus`) Prometheus to the pod IP (ports from those lines, else from the container ports named `amqp`
//!   and `management`, else 5672/15672). TLS lines (`listeners.ssl.*`, `management.ssl.port`,
//!   the `ssl_options.*file` and `management.ssl.*file` paths) are taken out too: the files they
//!   name are read from the pod's volumes and the launcher writes them into the node's folder and
//!   binds AMQPS and management HTTPS to the pod IP (see [`strip_tls`]); in the operator's layout
//!   the node also sees them at their pod folder (see [`tls_folder`]), for shovel URIs.
//! - **Erlang cookie**: the file `/var/lib/rabbitmq/.erlang.cookie` as the pod's volumes and init
//!   containers leave it (see `init_steps`: the usual init step copies it from a Secret volume
//!   with mode 400), else any mounted `.erlang.cookie`; a file that group or others may read is
//!   refused as Erlang refuses it (the container does not start). The deprecated env
//!   `RABBITMQ_ERLANG_COOKIE`, if set, wins over the file, as it does in RabbitMQ. With neither,
//!   one random cookie per owning StatefulSet (kept by the kubelet).
//! - **Default user**: env `RABBITMQ_DEFAULT_USER`/`RABBITMQ_DEFAULT_PASS` become `default_user`,
//!   `default_pass`, administrator tag and full permissions on `/`, as the official image does,
//!   unless the configuration sets `default_user` itself. That user is what the readiness probe
//!   logs in with.
//! - **Node name**: `rabbit-<ip with dashes>@<ip>` with long names, made from the pod IP the
//!   node first booted on in its data folder. A real cluster uses the pod's stable DNS name;
//!   kubesim has no DNS, so an IP stands in. On that first boot the kubelet records the pod and
//!   the IP in the base dir ([`IDENTITY_FILE`], see [`node_identity`]); later boots of the same
//!   pod from that folder take the node name from there, so a pod re-created on another IP
//!   (`ClusterConfig::with_fresh_pod_ips`, see `ipam`) is the same node with the same data.
//!   Without fresh IPs the pod IP is stable per pod name and the two are the same. AMQP,
//!   management and Prometheus always listen on the *current* pod IP; the distribution listener
//!   on the name's IP (`NodeConfig::name_host`), which is still local, since all of 127.0.0.0/8
//!   is, so peers and `rabbitmqctl` reach the node by its name. The name's IP stays pinned to
//!   the pod (no other pod gets it, see `ipam`), so the part before `@` stays unique on the
//!   machine (one epmd).
//! - **Distribution port**: one free on the whole machine (see [`pick_dist_port`], searched
//!   from the name's IP at each boot; peers and `rabbitmqctl` look it up through epmd); the
//!   container's `25672` cannot be used by two nodes on one host.
//! - **Data**: the PVC mounted at `/var/lib/rabbitmq` or below (`mnesia`) is the node's base dir,
//!   so data survives pod deletion; without a PVC a per-pod folder is used (like an emptyDir).
//! - **Readiness**: a declared `tcpSocket` probe is run as is, against the pod IP. Any other probe
//!   (exec `rabbitmq-diagnostics ...`, httpGet) or none is approximated: the management API
//!   answers an authenticated `GET /api/overview` when the management plugin is enabled, else
//!   the AMQP port accepts a TCP connection.
//! - **Peer discovery**: simulated. A pod with ordinal > 0 of a StatefulSet that starts with an
//!   empty data dir joins `<sts>-0` (`stop_app`, `reset`, `join_cluster`, `start_app`) before it
//!   is reported Ready; a pod that restarts with its data rejoins its cluster by itself, as
//!   RabbitMQ does. (Real clusters use the classic-config or k8s peer discovery backend; the
//!   StatefulSet's OrderedReady policy guarantees pod-0 is up first either way.)

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;
use tiermq_testkit::{BrokerRuntime, Credentials, NodeConfig, NodeTls};

use super::volumes::{VolumePaths, host_path};
use super::{Result, SimError, key_of};

/// AMQP port when neither the configuration nor a container port named `amqp` sets one.
pub const DEFAULT_AMQP_PORT: u16 = 5672;
/// Management API port when neither the configuration nor a port named `management` sets one.
pub const DEFAULT_MANAGEMENT_PORT: u16 = 15672;
/// RabbitMQ's usual distribution port, the fallback when no other port is free.
pub const DEFAULT_DIST_PORT: u16 = 25672;

/// Does this container run RabbitMQ (and so a real broker process)?
pub fn is_rabbit_container(c: &Container) -> bool {
    c.image.as_deref().is_some_and(|i| i.contains("rabbitmq"))
}

/// The RabbitMQ runtime kubesim runs for a container `image`, from the major version its tag
/// starts with (see the module docs for the mapping). `Err` says why none fits, for the pod's
/// status.
pub fn runtime_for_image(image: &str) -> std::result::Result<BrokerRuntime, String> {
    // `name[:tag][@digest]`; a registry host may carry a port (`host:5000/rabbitmq:4.0`), so the
    // tag is what follows the last ':' after the last '/'.
    let named = image.split('@').next().unwrap_or_default();
    let last = named.rsplit('/').next().unwrap_or_default();
    let tag = last.split_once(':').map(|(_, t)| t);
    let major = tag.and_then(|t| {
        let digits = t.len() - t.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let rest = &t[digits..];
        (digits > 0 && (rest.is_empty() || rest.starts_with(['.', '-'])))
            .then(|| t[..digits].parse::<u32>().ok())
            .flatten()
    });
    match major {
        Some(3) => Ok(BrokerRuntime::Host310),
        Some(4) => Ok(BrokerRuntime::Debian13V40),
        _ => {
            let what = match (tag, major) {
                (None, _) => "has no version tag".to_string(),
                (Some(t), None) => format!("has tag {t:?}, which names no RabbitMQ version"),
                (Some(_), Some(m)) => format!("names RabbitMQ {m}"),
            };
            Err(format!(
                "image {image:?} {what}; kubesim runs RabbitMQ images tagged 3.x (as RabbitMQ \
                 3.10, the host's package) or 4.x (as RabbitMQ 4.0, from the Debian 13 root): \
                 name a version tag such as rabbitmq:4.0-management"
            ))
        }
    }
}

/// What the container status's `imageID` says ran for a runtime.
pub fn image_id(runtime: BrokerRuntime) -> String {
    match runtime {
        BrokerRuntime::Host310 => "kubesim://rabbitmq-server/3.10 (host package)".into(),
        BrokerRuntime::Debian13V40 => "kubesim://rabbitmq-server/4.0 (Debian 13 root)".into(),
    }
}

/// The broker container of a pod, if any.
pub fn rabbit_container(pod: &Pod) -> Option<&Container> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| is_rabbit_container(c))
}

/// `rabbit-127-30-4-1`: unique on the machine because pod IPs are.
pub fn node_short_name(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("rabbit-{}-{}-{}-{}", o[0], o[1], o[2], o[3])
}

/// An Erlang distribution port for the node on `ip`, free on the whole machine.
///
/// Every node on one machine needs its own distribution port, even on distinct IPs: RabbitMQ's
/// start-up check binds the port on all interfaces and refuses to start when that fails. The search
/// starts at a spot derived from the IP (so parallel clusters rarely meet) in 25100..32000: below
/// Linux's ephemeral range, above the ports tiermq-testkit gives its own test nodes
/// (20000..25080), and low enough that the CLI tools' ports (distribution port + 10000) stay
/// valid. Peers and `rabbitmqctl` find the port through epmd.
pub fn pick_dist_port(ip: Ipv4Addr) -> u16 {
    const BASE: u32 = 25100;
    const SPAN: u32 = 6900;
    let o = ip.octets();
    let start = (u32::from(o[2]) * 254 + u32::from(o[3])) % SPAN;
    (0..SPAN)
        .map(|i| (BASE + (start + i) % SPAN) as u16)
        .find(|p| std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, *p)).is_ok())
        .unwrap_or(DEFAULT_DIST_PORT)
}

/// The pieces of a pod's broker setup that come from its files and env (pure; tested).
#[derive(Clone)]
pub struct BrokerInputs {
    /// `rabbitmq.conf` with the `conf.d` files appended.
    pub config_text: String,
    /// `enabled_plugins`, if mounted.
    pub plugins_text: Option<String>,
    /// `advanced.config`, if mounted.
    pub advanced_config: Option<String>,
    /// The container's resolved environment.
    pub env: BTreeMap<String, String>,
    /// A mounted `.erlang.cookie`, if any.
    pub cookie_file: Option<String>,
    /// Its permission bits (Erlang refuses a cookie file others can read).
    pub cookie_file_mode: Option<u32>,
    /// The PEM files `rabbitmq.conf`'s TLS lines name (CA, certificate, key), read from the
    /// pod's volumes; `None` when the config has no TLS listener or a file is missing.
    pub tls_files: Option<(String, String, String)>,
}

/// What `rabbitmq.conf` says about TLS listeners (kubesim binds them to the pod IP itself).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsLines {
    /// The AMQPS port (`listeners.ssl.*`).
    pub amqps_port: Option<u16>,
    /// The management HTTPS port (`management.ssl.port`).
    pub management_port: Option<u16>,
    /// Container paths of the CA, certificate and key (`ssl_options.*file`).
    pub files: [Option<String>; 3],
}

const TLS_FILE_KEYS: [&str; 3] = ["cacertfile", "certfile", "keyfile"];

/// The container folder the TLS files are mounted in, when they are `ca.crt`, `tls.crt` and
/// `tls.key` of one folder (a `kubernetes.io/tls` Secret volume, as the operator mounts it): the
/// node sees its copies there too, so a shovel URI's `cacertfile=<folder>/ca.crt` resolves as in
/// a pod. `None` for other layouts (the node then sees the files only where `rabbitmq.conf` is
/// rewritten to point).
pub fn tls_folder(lines: &TlsLines) -> Option<PathBuf> {
    let paths: Vec<&Path> = lines
        .files
        .iter()
        .map(|f| f.as_deref().map(Path::new))
        .collect::<Option<_>>()?;
    let dir = paths[0].parent()?;
    let named = ["ca.crt", "tls.crt", "tls.key"]
        .iter()
        .zip(&paths)
        .all(|(n, p)| p.parent() == Some(dir) && p.file_name() == Some(std::ffi::OsStr::new(n)));
    (named && dir.is_absolute() && dir != Path::new("/")).then(|| dir.to_path_buf())
}

/// Splits a `rabbitmq.conf` into (kept lines, TLS listener settings). Removed: the TLS
/// listeners, the management HTTPS port and address, and the certificate file lines of both
/// (the launcher writes its own with the files' host paths). Kept: other `ssl_options.*`
/// (verification settings) as they are.
pub fn strip_tls(conf: &str) -> (String, Option<TlsLines>) {
    let mut kept = String::new();
    let mut tls = TlsLines::default();
    for line in conf.lines() {
        let t = line.trim();
        let key = t.split('=').next().unwrap_or("").trim();
        let value = t.split_once('=').map(|(_, v)| v.trim()).unwrap_or("");
        let port = || value.rsplit(':').next().and_then(|p| p.trim().parse().ok());
        if key.starts_with("listeners.ssl.") {
            tls.amqps_port = tls.amqps_port.or_else(port);
            continue;
        }
        if key == "management.ssl.port" {
            tls.management_port = port();
            continue;
        }
        if key == "management.ssl.ip" {
            continue;
        }
        let file = TLS_FILE_KEYS.iter().position(|f| {
            key.strip_prefix("ssl_options.")
                .or_else(|| key.strip_prefix("management.ssl."))
                == Some(f)
        });
        if let Some(i) = file {
            if key.starts_with("ssl_options.") || tls.files[i].is_none() {
                tls.files[i] = Some(value.to_string());
            }
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    let any = tls.amqps_port.is_some() || tls.management_port.is_some();
    (kept, any.then_some(tls))
}

/// Splits a `rabbitmq.conf` into (kept lines, amqp port, management port).
pub fn strip_listeners(conf: &str) -> (String, Option<u16>, Option<u16>) {
    let mut kept = String::new();
    let (mut amqp, mut mgmt) = (None, None);
    for line in conf.lines() {
        let t = line.trim();
        let key = t.split('=').next().unwrap_or("").trim();
        let value = t.split_once('=').map(|(_, v)| v.trim()).unwrap_or("");
        let port_of = |v: &str| {
            v.rsplit(':')
                .next()
                .and_then(|p| p.trim().parse::<u16>().ok())
        };
        if key.starts_with("listeners.tcp.") {
            if amqp.is_none() {
                amqp = port_of(value);
            }
            continue;
        }
        if key == "management.tcp.port" {
            mgmt = port_of(value);
            continue;
        }
        // The launcher binds Prometheus to the pod IP itself (standard port).
        if key.starts_with("management.tcp.")
            || key.starts_with("prometheus.tcp.")
            || key.starts_with("cluster_formation.")
        {
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    (kept, amqp, mgmt)
}

/// `[rabbitmq_management,rabbitmq_shovel].` → names.
pub fn parse_plugins(text: &str) -> Vec<String> {
    let inner = text.trim().trim_end_matches('.').trim();
    let inner = inner.trim_start_matches('[').trim_end_matches(']');
    inner
        .split(',')
        .map(|p| p.trim().trim_matches('\'').to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn conf_value<'a>(conf: &'a str, key: &str) -> Option<&'a str> {
    conf.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim())
    })
}

fn container_port(c: &Container, names: &[&str]) -> Option<u16> {
    c.ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref().is_some_and(|n| names.contains(&n)))
        .and_then(|p| u16::try_from(p.container_port).ok())
}

/// Builds the node's configuration (pure but for the free distribution port): listeners on the
/// pod's `ip`, the node named after `name_host` (see [`node_identity`]).
pub fn node_config(
    pod: &Pod,
    container: &Container,
    inputs: &BrokerInputs,
    ip: Ipv4Addr,
    name_host: Ipv4Addr,
    base_dir: PathBuf,
    fallback_cookie: &str,
) -> Result<NodeConfig> {
    let (body, amqp, mgmt) = strip_listeners(&inputs.config_text);
    let (mut body, tls_lines) = strip_tls(&body);
    let tls = match (tls_lines, &inputs.tls_files) {
        (None, _) => None,
        (Some(lines), Some((ca, cert, key))) => Some(NodeTls {
            ca_pem: ca.clone(),
            cert_pem: cert.clone(),
            key_pem: key.clone(),
            amqps_port: lines.amqps_port.unwrap_or(5671),
            management_port: lines.management_port.unwrap_or(15671),
            extra_lines: String::new(),
            also_at: tls_folder(&lines),
        }),
        (Some(_), None) => {
            return Err(broker_error(
                pod,
                "rabbitmq.conf configures TLS listeners but the CA, certificate or key file it \
                 names is not mounted",
            ));
        }
    };
    let user = inputs.env.get("RABBITMQ_DEFAULT_USER");
    let pass = inputs.env.get("RABBITMQ_DEFAULT_PASS");
    let admin = match (
        conf_value(&body, "default_user"),
        conf_value(&body, "default_pass"),
    ) {
        (Some(u), Some(p)) => Credentials::new(u, p),
        _ => {
            let u = user.cloned().unwrap_or_else(|| "guest".into());
            let p = pass.cloned().unwrap_or_else(|| "guest".into());
            if !body.is_empty() && !body.ends_with('\n') {
                body.push('\n');
            }
            body.push_str(&format!(
                "# added by the kubesim kubelet from RABBITMQ_DEFAULT_USER/PASS\n\
                 default_user = {u}\ndefault_pass = {p}\n\
                 default_user_tags.administrator = true\n\
                 default_permissions.configure = .*\n\
                 default_permissions.read = .*\n\
                 default_permissions.write = .*\n"
            ));
            Credentials::new(u, p)
        }
    };
    let from_env = inputs.env.get("RABBITMQ_ERLANG_COOKIE").cloned();
    if let (None, Some(mode)) = (&from_env, inputs.cookie_file_mode)
        && mode & 0o077 != 0
    {
        // What Erlang itself does with such a file: the node does not start.
        return Err(SimError::PodSpec {
            pod: key_of(pod),
            message: format!(
                "the Erlang cookie file has mode {mode:o}, but Erlang refuses one that is not \
                 accessible by its owner only (copy it into the RabbitMQ home with mode 400 or 600)"
            ),
        });
    }
    let cookie = from_env
        .or_else(|| inputs.cookie_file.clone())
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| fallback_cookie.to_string());
    let plugins = inputs
        .plugins_text
        .as_deref()
        .map(parse_plugins)
        .unwrap_or_default();
    if plugins.iter().any(|p| p == "rabbitmq_peer_discovery_k8s") {
        tracing::debug!(pod = %key_of(pod), "peer discovery plugin ignored: kubesim joins nodes itself");
    }
    let plugins = plugins
        .into_iter()
        .filter(|p| p != "rabbitmq_peer_discovery_k8s")
        .collect();
    Ok(NodeConfig {
        node_name: node_short_name(name_host),
        ip,
        name_host,
        amqp_port: amqp
            .or_else(|| container_port(container, &["amqp"]))
            .unwrap_or(DEFAULT_AMQP_PORT),
        management_port: mgmt
            .or_else(|| container_port(container, &["management", "http"]))
            .unwrap_or(DEFAULT_MANAGEMENT_PORT),
        dist_port: pick_dist_port(name_host),
        erlang_cookie: cookie,
        base_dir,
        config: body,
        advanced_config: inputs.advanced_config.clone(),
        plugins,
        admin,
        initial_feature_flags: None,
        extra_erl_args: None,
        tls,
    })
}

fn read_opt(p: Option<PathBuf>) -> Option<String> {
    p.and_then(|p| std::fs::read_to_string(p).ok())
}

/// Looks in every mounted volume folder for a file named `name` (top level).
fn any_mounted(container: &Container, vols: &VolumePaths, name: &str) -> Option<PathBuf> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .filter_map(|m| vols.get(&m.name))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Reads the broker's files and env as the container would see them.
pub fn gather_inputs(
    container: &Container,
    vols: &VolumePaths,
    env: BTreeMap<String, String>,
) -> BrokerInputs {
    let conf_path = env
        .get("RABBITMQ_CONFIG_FILE")
        .map(|p| {
            if p.ends_with(".conf") {
                p.clone()
            } else {
                format!("{p}.conf")
            }
        })
        .and_then(|p| host_path(container, vols, &p))
        .filter(|p| p.is_file())
        .or_else(|| {
            host_path(container, vols, "/etc/rabbitmq/rabbitmq.conf").filter(|p| p.is_file())
        })
        .or_else(|| any_mounted(container, vols, "rabbitmq.conf"));
    let mut config_text = read_opt(conf_path).unwrap_or_default();
    if let Some(dir) = host_path(container, vols, "/etc/rabbitmq/conf.d") {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        files.sort();
        for f in files {
            if let Ok(t) = std::fs::read_to_string(&f) {
                config_text.push('\n');
                config_text.push_str(&t);
            }
        }
    }
    let plugins_path = env
        .get("RABBITMQ_ENABLED_PLUGINS_FILE")
        .and_then(|p| host_path(container, vols, p))
        .filter(|p| p.is_file())
        .or_else(|| {
            host_path(container, vols, "/etc/rabbitmq/enabled_plugins").filter(|p| p.is_file())
        })
        .or_else(|| any_mounted(container, vols, "enabled_plugins"));
    let advanced = host_path(container, vols, "/etc/rabbitmq/advanced.config")
        .filter(|p| p.is_file())
        .or_else(|| any_mounted(container, vols, "advanced.config"));
    let cookie = host_path(container, vols, "/var/lib/rabbitmq/.erlang.cookie")
        .filter(|p| p.is_file())
        .or_else(|| any_mounted(container, vols, ".erlang.cookie"));
    let tls_files = strip_tls(&config_text).1.and_then(|tls| {
        let read = |p: &Option<String>| {
            p.as_deref()
                .and_then(|p| host_path(container, vols, p))
                .and_then(|p| std::fs::read_to_string(p).ok())
        };
        Some((
            read(&tls.files[0])?,
            read(&tls.files[1])?,
            read(&tls.files[2])?,
        ))
    });
    BrokerInputs {
        config_text,
        plugins_text: read_opt(plugins_path),
        advanced_config: read_opt(advanced),
        env,
        cookie_file_mode: cookie.as_ref().and_then(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p)
                .ok()
                .map(|m| m.permissions().mode() & 0o777)
        }),
        cookie_file: read_opt(cookie),
        tls_files,
    }
}

/// The node's base dir: the PVC mounted at or below `/var/lib/rabbitmq`, else `fallback`.
pub fn data_dir(pod: &Pod, container: &Container, vols: &VolumePaths, fallback: &Path) -> PathBuf {
    let pvc_vols: Vec<&str> = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter(|v| v.persistent_volume_claim.is_some())
        .map(|v| v.name.as_str())
        .collect();
    container
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| pvc_vols.contains(&m.name.as_str()))
        .filter(|m| m.mount_path.starts_with("/var/lib/rabbitmq"))
        .find_map(|m| vols.get(&m.name).cloned())
        .or_else(|| {
            // A PVC mounted elsewhere still beats losing data.
            pvc_vols.first().and_then(|n| vols.get(*n).cloned())
        })
        .unwrap_or_else(|| fallback.to_path_buf())
}

/// The file in a broker's base dir that says which pod's node lives there and which IP its name
/// was made from: `pod=<namespace>/<name>` and `name_ip=<IPv4>` lines.
pub const IDENTITY_FILE: &str = "kubesim-node-identity";

/// The IP the node name of pod `pod_key`'s broker is made from, booting on `ip` from `base_dir`:
/// the one recorded there for this pod, else `ip`, which is then recorded (a first boot, or a
/// folder another pod used before, whose node name this pod does not have, as in Kubernetes).
pub fn node_identity(base_dir: &Path, pod_key: &str, ip: Ipv4Addr) -> Result<Ipv4Addr> {
    let path = base_dir.join(IDENTITY_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let value = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::trim)
        };
        if value("pod") == Some(pod_key)
            && let Some(recorded) = value("name_ip").and_then(|v| v.parse::<Ipv4Addr>().ok())
        {
            return Ok(recorded);
        }
    }
    std::fs::write(&path, format!("pod={pod_key}\nname_ip={ip}\n"))
        .map_err(|e| SimError::io("write", &path, e))?;
    Ok(ip)
}

/// Did this node (by its full name) already live in this base dir? Then it rejoins its cluster
/// by itself; otherwise it is fresh and must join.
pub fn has_data(base_dir: &Path, full_node_name: &str) -> bool {
    base_dir.join("mnesia").join(full_node_name).is_dir()
}

/// `(<sts>-0 pod name, this pod's ordinal)` when the pod belongs to a StatefulSet.
pub fn statefulset_peer(pod: &Pod) -> Option<(String, u32)> {
    let owner = pod
        .owner_references()
        .iter()
        .find(|o| o.kind == "StatefulSet" && o.controller == Some(true))?;
    let ordinal = pod
        .name_any()
        .strip_prefix(&owner.name)?
        .strip_prefix('-')?
        .parse()
        .ok()?;
    Some((format!("{}-0", owner.name), ordinal))
}

pub(crate) fn broker_error(pod: &Pod, e: impl std::fmt::Display) -> SimError {
    SimError::Broker {
        pod: key_of(pod),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn listener_lines_are_replaced_and_ports_kept() {
        let conf = "listeners.tcp.default = 5673\nmanagement.tcp.port = 15673\n\
                    management.tcp.ip = 0.0.0.0\ncluster_formation.peer_discovery_backend = k8s\n\
                    prometheus.tcp.ip = 0.0.0.0\ncollect_statistics_interval = 500\n";
        let (body, amqp, mgmt) = strip_listeners(conf);
        assert_eq!((amqp, mgmt), (Some(5673), Some(15673)));
        assert_eq!(body, "collect_statistics_interval = 500\n");
    }

    #[test]
    fn tls_listener_and_file_lines_are_taken_out_and_verification_kept() {
        let conf = "listeners.ssl.default = 5671\nssl_options.cacertfile = /etc/t/ca.crt\n\
                    ssl_options.certfile = /etc/t/tls.crt\nssl_options.keyfile = /etc/t/tls.key\n\
                    ssl_options.verify = verify_none\nmanagement.ssl.port = 15671\n\
                    management.ssl.certfile = /other/tls.crt\ncollect_statistics_interval = 500\n";
        let (body, tls) = strip_tls(conf);
        assert_eq!(
            body,
            "ssl_options.verify = verify_none\ncollect_statistics_interval = 500\n"
        );
        let tls = tls.unwrap();
        assert_eq!(
            (tls.amqps_port, tls.management_port),
            (Some(5671), Some(15671))
        );
        assert_eq!(
            tls.files,
            [
                Some("/etc/t/ca.crt".to_string()),
                Some("/etc/t/tls.crt".to_string()),
                Some("/etc/t/tls.key".to_string())
            ]
        );
        assert_eq!(strip_tls("collect_statistics_interval = 500\n").1, None);
        // The operator's layout: one Secret folder; the node sees it there too.
        let ours = "listeners.ssl.default = 5671\nssl_options.cacertfile = /etc/rabbitmq-tls/ca.crt\n\
                    ssl_options.certfile = /etc/rabbitmq-tls/tls.crt\n\
                    ssl_options.keyfile = /etc/rabbitmq-tls/tls.key\n";
        assert_eq!(
            tls_folder(&strip_tls(ours).1.unwrap()),
            Some(PathBuf::from("/etc/rabbitmq-tls"))
        );
        assert_eq!(tls_folder(&tls), Some(PathBuf::from("/etc/t")));
        // Files of several folders, or other names, have no one folder to show.
        let mut spread = tls.clone();
        spread.files[2] = Some("/other/tls.key".into());
        assert_eq!(tls_folder(&spread), None);
        let mut renamed = tls;
        renamed.files[0] = Some("/etc/t/ca.pem".into());
        assert_eq!(tls_folder(&renamed), None);
    }

    #[test]
    fn the_image_tag_picks_the_runtime_by_major_version() {
        for image in [
            "rabbitmq:3.10-management",
            "rabbitmq:3",
            "docker.io/library/rabbitmq:3.13.7-management-alpine",
            "registry.local:5000/mirror/rabbitmq:3.12@sha256:0123",
        ] {
            assert_eq!(
                runtime_for_image(image),
                Ok(BrokerRuntime::Host310),
                "{image}"
            );
        }
        for image in [
            "rabbitmq:4.0-management",
            "rabbitmq:4",
            "rabbitmq:4-management",
            "rabbitmq:4.0.5",
            "registry.local:5000/rabbitmq:4.1.2-alpine",
        ] {
            assert_eq!(
                runtime_for_image(image),
                Ok(BrokerRuntime::Debian13V40),
                "{image}"
            );
        }
        for (image, says) in [
            ("rabbitmq", "has no version tag"),
            ("registry.local:5000/rabbitmq", "has no version tag"),
            ("rabbitmq@sha256:0123", "has no version tag"),
            (
                "rabbitmq:latest",
                "tag \"latest\", which names no RabbitMQ version",
            ),
            ("rabbitmq:management", "names no RabbitMQ version"),
            ("rabbitmq:40", "names RabbitMQ 40"),
            ("rabbitmq:5.0-management", "names RabbitMQ 5"),
            ("rabbitmq:3x", "names no RabbitMQ version"),
        ] {
            let err = runtime_for_image(image).unwrap_err();
            assert!(err.contains(says), "{image}: {err}");
            assert!(err.contains("tagged 3.x") && err.contains("4.x"), "{err}");
        }
    }

    #[test]
    fn the_node_identity_is_recorded_once_per_pod_and_data_folder() {
        let dir = tempfile::tempdir().unwrap();
        let (first, later) = (Ipv4Addr::new(127, 30, 4, 1), Ipv4Addr::new(127, 30, 4, 9));
        assert_eq!(node_identity(dir.path(), "ns/rmq-0", first).unwrap(), first);
        // The same pod on another IP keeps the name's IP.
        assert_eq!(node_identity(dir.path(), "ns/rmq-0", later).unwrap(), first);
        assert_eq!(node_identity(dir.path(), "ns/rmq-0", first).unwrap(), first);
        // Another pod mounting the folder is a node of its own name, and records it.
        assert_eq!(
            node_identity(dir.path(), "ns/other-0", later).unwrap(),
            later
        );
        assert_eq!(node_identity(dir.path(), "ns/rmq-0", first).unwrap(), first);
        let text = std::fs::read_to_string(dir.path().join(IDENTITY_FILE)).unwrap();
        assert_eq!(text, "pod=ns/rmq-0\nname_ip=127.30.4.1\n");
    }

    #[test]
    fn plugins_parse_from_erlang_list() {
        assert_eq!(
            parse_plugins("[rabbitmq_management,rabbitmq_shovel, rabbitmq_federation].\n"),
            vec![
                "rabbitmq_management",
                "rabbitmq_shovel",
                "rabbitmq_federation"
            ]
        );
        assert!(parse_plugins("[].").is_empty());
    }

    #[test]
    fn node_config_from_env_and_conf() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "rmq-1", "namespace": "t",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "rmq", "uid": "u", "controller": true}]},
            "spec": {"containers": [{"name": "rabbitmq", "image": "rabbitmq:3.10-management",
                "ports": [{"name": "amqp", "containerPort": 5672}]}]}
        }))
        .unwrap();
        let c = rabbit_container(&pod).unwrap().clone();
        let inputs = BrokerInputs {
            config_text: "listeners.tcp.default = 5672\ncollect_statistics_interval = 500".into(),
            plugins_text: Some("[rabbitmq_management,rabbitmq_peer_discovery_k8s].".into()),
            advanced_config: None,
            tls_files: None,
            env: [
                ("RABBITMQ_DEFAULT_USER".to_string(), "admin".to_string()),
                ("RABBITMQ_DEFAULT_PASS".to_string(), "s3cret".to_string()),
                ("RABBITMQ_ERLANG_COOKIE".to_string(), "COOKIE".to_string()),
            ]
            .into(),
            cookie_file: None,
            cookie_file_mode: None,
        };
        let ip = Ipv4Addr::new(127, 30, 4, 2);
        let cfg = node_config(&pod, &c, &inputs, ip, ip, "/d".into(), "fallback").unwrap();
        assert_eq!(cfg.full_node_name(), "rabbit-127-30-4-2@127.30.4.2");
        // Back on another IP: named as before, listening on the new one.
        let moved = Ipv4Addr::new(127, 30, 4, 7);
        let cfg2 = node_config(&pod, &c, &inputs, moved, ip, "/d".into(), "fallback").unwrap();
        assert_eq!(cfg2.full_node_name(), "rabbit-127-30-4-2@127.30.4.2");
        assert!(
            cfg2.rendered_config()
                .contains("listeners.tcp.1 = 127.30.4.7:5672\n")
        );
        assert_eq!(cfg.erlang_cookie, "COOKIE");
        assert_eq!(cfg.admin, Credentials::new("admin", "s3cret"));
        assert_eq!(cfg.plugins, vec!["rabbitmq_management"]);
        assert!(cfg.config.contains("default_user = admin\n"));
        assert!(cfg.config.contains("collect_statistics_interval = 500\n"));
        assert!(!cfg.config.contains("listeners.tcp"));
        assert_eq!(statefulset_peer(&pod), Some(("rmq-0".into(), 1)));
    }

    #[test]
    fn a_cookie_file_others_can_read_is_refused_as_erlang_does() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "rmq-0", "namespace": "t"},
            "spec": {"containers": [{"name": "rabbitmq", "image": "rabbitmq:3.10-management"}]}
        }))
        .unwrap();
        let c = rabbit_container(&pod).unwrap().clone();
        let inputs = |mode: u32| BrokerInputs {
            config_text: String::new(),
            plugins_text: None,
            advanced_config: None,
            env: BTreeMap::new(),
            cookie_file: Some("FROMFILE\n".into()),
            cookie_file_mode: Some(mode),
            tls_files: None,
        };
        let ip = Ipv4Addr::new(127, 30, 4, 3);
        let cfg = node_config(&pod, &c, &inputs(0o400), ip, ip, "/d".into(), "fallback").unwrap();
        assert_eq!(cfg.erlang_cookie, "FROMFILE");
        // A Secret volume with fsGroup: group-readable.
        let Err(err) = node_config(&pod, &c, &inputs(0o440), ip, ip, "/d".into(), "fallback")
        else {
            panic!("a group-readable cookie file is refused");
        };
        assert!(err.to_string().contains("owner only"), "{err}");
    }
}
