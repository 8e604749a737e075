use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::{AMQP_PORT, MANAGEMENT_PORT};

/// The plugins the migration steps need: management API, dynamic shovels, federation.
pub const TEST_PLUGINS: &[&str] = &[
    "rabbitmq_management",
    "rabbitmq_shovel",
    "rabbitmq_shovel_management",
    "rabbitmq_federation",
    "rabbitmq_federation_management",
];

/// A user name and password. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Everything needed to start one node. The launcher adds only the listener lines (AMQP and
/// management on `ip`, and Prometheus on `ip` when `plugins` has `rabbitmq_prometheus`) to `config`; everything else — the admin user, statistics interval,
/// limits — is the caller's `rabbitmq.conf` body, as a ConfigMap would carry it.
#[derive(Clone)]
pub struct NodeConfig {
    /// The part of the Erlang node name before `@` (the host part is `name_host`). Must be unique
    /// on the machine: one epmd serves every node.
    pub node_name: String,
    /// Where AMQP, management and Prometheus listen.
    pub ip: Ipv4Addr,
    /// The host part of the Erlang node name and the address the distribution listener binds to;
    /// usually `ip`. kubesim keeps a broker's first pod IP here when its pod comes back on another
    /// IP, so the node keeps its name (and so its data): every 127.0.0.0/8 address is local, so
    /// peers and `rabbitmqctl` still reach it there.
    pub name_host: Ipv4Addr,
    pub amqp_port: u16,
    pub management_port: u16,
    pub dist_port: u16,
    /// Nodes that should form a cluster share it.
    pub erlang_cookie: String,
    /// Data (`mnesia/`), logs (`log/`), generated config files and the cookie live here. Reusing
    /// the folder after a restart keeps the node's state, like a PVC.
    pub base_dir: PathBuf,
    /// `rabbitmq.conf` body without listener lines.
    pub config: String,
    /// Optional `advanced.config` (Erlang terms).
    pub advanced_config: Option<String>,
    pub plugins: Vec<String>,
    /// The administrator the readiness probe logs in as; `config` must create it (for example
    /// with `default_user`/`default_pass`, as [`NodeConfig::for_test`] does).
    pub admin: Credentials,
    /// `RABBITMQ_FEATURE_FLAGS`: the feature flags a node enables when it boots with an empty
    /// data folder (comma-separated; RabbitMQ adds the ones its release requires). `None`: every
    /// stable flag, RabbitMQ's default. Later boots ignore it. Tests of the upgrade path use it to
    /// get a node with stable flags still disabled, like one that was upgraded from an older
    /// release.
    pub initial_feature_flags: Option<String>,
    /// Extra Erlang VM flags appended to `RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS` (e.g. `+S 1:1
    /// +sbwt none` for a node that idles with less CPU). `None`: RabbitMQ's defaults.
    pub extra_erl_args: Option<String>,
    /// AMQPS and management HTTPS beside the plain listeners, with these PEM files.
    pub tls: Option<NodeTls>,
}

/// A node's TLS: PEM contents (the launcher writes them into the node's folder, where a node in
/// a chroot sees them too) and the TLS ports on the node's IP. `Debug` never shows the key.
#[derive(Clone)]
pub struct NodeTls {
    /// CA certificate(s), PEM.
    pub ca_pem: String,
    /// The node's certificate (chain), PEM.
    pub cert_pem: String,
    /// The certificate's private key, PEM.
    pub key_pem: String,
    /// AMQPS port (5671 by convention).
    pub amqps_port: u16,
    /// Management HTTPS port (15671 by convention).
    pub management_port: u16,
    /// `rabbitmq.conf` lines for the TLS listeners beyond the files and ports, e.g.
    /// `ssl_options.verify = verify_none`, kept as given.
    pub extra_lines: String,
    /// Where the node also sees its TLS folder (`ca.crt`, `tls.crt`, `tls.key`), as a pod sees
    /// its Secret volume (e.g. `/etc/rabbitmq-tls`): paths that something other than
    /// `rabbitmq.conf` names, such as a shovel URI's `cacertfile`, then resolve. Bound in the
    /// node's private mount namespace (the mount point is created if missing); needs root.
    pub also_at: Option<PathBuf>,
}

impl fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeTls")
            .field("amqps_port", &self.amqps_port)
            .field("management_port", &self.management_port)
            .field("also_at", &self.also_at)
            .finish_non_exhaustive()
    }
}

/// The folder below a node's `base_dir` that holds its TLS files.
pub const TLS_DIR: &str = "tls";

impl fmt::Debug for NodeConfig {
    // Hand-written: the config body may carry `default_pass` and the cookie is a secret too.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeConfig")
            .field("node_name", &self.node_name)
            .field("ip", &self.ip)
            .field("name_host", &self.name_host)
            .field("amqp_port", &self.amqp_port)
            .field("management_port", &self.management_port)
            .field("dist_port", &self.dist_port)
            .field("base_dir", &self.base_dir)
            .field("plugins", &self.plugins)
            .field("admin", &self.admin)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// Statistics emission interval for test nodes (RabbitMQ's default: 5 s). Quorum queues report on
/// their own tick, set to the same value.
pub const TEST_STATS_INTERVAL_MS: u64 = 500;
/// Width of the management database's sample buckets for test nodes (RabbitMQ's default: 5 s).
/// The counts the management API shows change once per bucket, so they lag by up to the
/// statistics interval plus this.
pub const TEST_SAMPLE_INCREMENT_SECS: u64 = 1;

impl NodeConfig {
    /// A throw-away test node: standard AMQP and management ports on `ip`, the distribution port
    /// that belongs to `ip` (see [`crate::IpLease`]), admin `admin` with a random password, the
    /// migration plugins, a short statistics interval and quorum-queue tick, and 1 s sample
    /// buckets, so management-API counts lag by about 1.5 s instead of up to 10 s.
    pub fn for_test(node_name: impl Into<String>, ip: Ipv4Addr, base_dir: PathBuf) -> Self {
        let admin = Credentials::new("admin", random_token(24));
        let config = format!(
            "default_user = {user}\n\
             default_pass = {pass}\n\
             default_user_tags.administrator = true\n\
             default_permissions.configure = .*\n\
             default_permissions.read = .*\n\
             default_permissions.write = .*\n\
             collect_statistics_interval = {TEST_STATS_INTERVAL_MS}\n\
             log.file.level = info\n\
             log.console = false\n",
            user = admin.username,
            pass = admin.password,
        );
        NodeConfig {
            node_name: node_name.into(),
            ip,
            name_host: ip,
            amqp_port: AMQP_PORT,
            management_port: MANAGEMENT_PORT,
            dist_port: crate::ip::dist_port_for(ip),
            erlang_cookie: random_token(32),
            base_dir,
            config,
            advanced_config: Some(format!(
                "[{{rabbit, [{{quorum_tick_interval, {TEST_STATS_INTERVAL_MS}}}]}},\n \
                 {{rabbitmq_management_agent, [{{sample_retention_policies,\n   \
                 [{{global, [{{605, {inc}}}, {{3660, 60}}]}}, {{basic, [{{605, {inc}}}, {{3600, 60}}]}}, \
                 {{detailed, [{{605, {inc}}}]}}]}}]}}].\n",
                inc = TEST_SAMPLE_INCREMENT_SECS
            )),
            plugins: TEST_PLUGINS.iter().map(|p| p.to_string()).collect(),
            admin,
            initial_feature_flags: None,
            extra_erl_args: None,
            tls: None,
        }
    }

    /// `rabbit-0@127.3.0.1`: `node_name@name_host`.
    pub fn full_node_name(&self) -> String {
        format!("{}@{}", self.node_name, self.name_host)
    }

    /// The complete `rabbitmq.conf`: the caller's body plus the listener lines.
    pub fn rendered_config(&self) -> String {
        let mut out = self.config.clone();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!(
            "# added by tiermq-testkit: listen on the node's own IP only\n\
             listeners.tcp.1 = {ip}:{amqp}\n\
             management.tcp.ip = {ip}\n\
             management.tcp.port = {mgmt}\n",
            ip = self.ip,
            amqp = self.amqp_port,
            mgmt = self.management_port,
        ));
        if let Some(tls) = &self.tls {
            let dir = self.base_dir.join(TLS_DIR);
            let file = |name: &str| dir.join(name).display().to_string();
            if !tls.extra_lines.is_empty() {
                out.push_str(tls.extra_lines.trim_end());
                out.push('\n');
            }
            out.push_str(&format!(
                "# added by tiermq-testkit: TLS listeners on the node's own IP\n\
                 listeners.ssl.1 = {ip}:{amqps}\n\
                 ssl_options.cacertfile = {ca}\n\
                 ssl_options.certfile = {cert}\n\
                 ssl_options.keyfile = {key}\n\
                 management.ssl.ip = {ip}\n\
                 management.ssl.port = {mgmt}\n\
                 management.ssl.cacertfile = {ca}\n\
                 management.ssl.certfile = {cert}\n\
                 management.ssl.keyfile = {key}\n",
                ip = self.ip,
                amqps = tls.amqps_port,
                mgmt = tls.management_port,
                ca = file("ca.crt"),
                cert = file("tls.crt"),
                key = file("tls.key"),
            ));
        }
        // Only with the plugin: without it RabbitMQ does not know the key and refuses to boot.
        if self.plugins.iter().any(|p| p == crate::PROMETHEUS_PLUGIN) {
            out.push_str(&format!("prometheus.tcp.ip = {}\n", self.ip));
        }
        out
    }

    /// `enabled_plugins` in Erlang term syntax.
    pub fn rendered_plugins(&self) -> String {
        format!("[{}].\n", self.plugins.join(","))
    }

    pub(crate) fn validate(&self) -> Result<(), crate::TestkitError> {
        let bad = |m: String| Err(crate::TestkitError::Config(m));
        if self.node_name.is_empty()
            || !self
                .node_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return bad(format!(
                "node name {:?} must be non-empty ASCII letters, digits, '-' or '_'",
                self.node_name
            ));
        }
        for ip in [self.ip, self.name_host] {
            if !ip.is_loopback() {
                return bad(format!("{ip} is not a loopback address (127.0.0.0/8)"));
            }
        }
        if self.erlang_cookie.is_empty()
            || !self.erlang_cookie.chars().all(|c| c.is_ascii_graphic())
        {
            return bad("the Erlang cookie must be non-empty printable ASCII".into());
        }
        for p in &self.plugins {
            if p.is_empty()
                || !p
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                return bad(format!("plugin name {p:?} is not a valid Erlang atom"));
            }
        }
        Ok(())
    }
}

/// A random alphanumeric token (passwords, cookies) from the operating system's generator.
pub(crate) fn random_token(len: usize) -> String {
    use std::io::Read;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; len];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_lines_are_appended_for_the_nodes_ip() {
        let cfg = NodeConfig::for_test("t-1", Ipv4Addr::new(127, 3, 0, 9), PathBuf::from("/x"));
        let text = cfg.rendered_config();
        assert!(text.contains("listeners.tcp.1 = 127.3.0.9:5672\n"));
        assert!(text.contains("management.tcp.ip = 127.3.0.9\n"));
        assert!(text.contains("management.tcp.port = 15672\n"));
        assert!(text.contains("collect_statistics_interval = 500\n"));
        let advanced = cfg.advanced_config.clone().unwrap();
        assert!(
            advanced.contains("{quorum_tick_interval, 500}"),
            "{advanced}"
        );
        assert!(
            advanced.contains("{basic, [{605, 1}, {3600, 60}]}"),
            "{advanced}"
        );
        assert_eq!(cfg.full_node_name(), "t-1@127.3.0.9");
        assert!(!text.contains("prometheus.tcp"), "{text}");
        // A node named after another address still listens on its own.
        let mut renamed = cfg.clone();
        renamed.name_host = Ipv4Addr::new(127, 3, 0, 8);
        assert_eq!(renamed.full_node_name(), "t-1@127.3.0.8");
        assert!(
            renamed
                .rendered_config()
                .contains("listeners.tcp.1 = 127.3.0.9:5672\n")
        );
        let mut with_metrics = cfg.clone();
        with_metrics.plugins.push(crate::PROMETHEUS_PLUGIN.into());
        assert!(
            with_metrics
                .rendered_config()
                .ends_with("prometheus.tcp.ip = 127.3.0.9\n")
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let cfg = NodeConfig::for_test("t-1", Ipv4Addr::new(127, 3, 0, 9), PathBuf::from("/x"));
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains(&cfg.admin.password), "{dbg}");
        assert!(!dbg.contains(&cfg.erlang_cookie), "{dbg}");
    }

    #[test]
    fn validation_rejects_non_loopback_ips_and_odd_names() {
        let mut cfg = NodeConfig::for_test("ok", Ipv4Addr::new(127, 3, 0, 9), PathBuf::from("/x"));
        assert!(cfg.validate().is_ok());
        cfg.ip = Ipv4Addr::new(10, 0, 0, 1);
        assert!(cfg.validate().is_err());
        cfg.ip = Ipv4Addr::LOCALHOST;
        cfg.name_host = Ipv4Addr::new(10, 0, 0, 1);
        assert!(cfg.validate().is_err());
        cfg.name_host = Ipv4Addr::LOCALHOST;
        cfg.node_name = "a@b".into();
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn tokens_are_random_and_alphanumeric() {
        let a = random_token(32);
        let b = random_token(32);
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
