//! Real `rabbitmq-server` nodes on loopback, for the broker integration tests, kubesim's simulated
//! kubelet and the demo; ([`tools`]) where tests find the pinned `helm`, the newest `kubectl` and
//! `promtool`; and ([`promql`]) the metric names PromQL expressions and `/metrics` pages use.
//!
//! Two levels:
//!
//! - **Pod-friendly, low level**: [`RabbitNode::start`] takes a [`NodeConfig`] that names everything
//!   (node name, loopback IP, ports, cookie, data folder, `rabbitmq.conf` body, plugins, admin user)
//!   and starts one node as a child process in its own process group. kubesim's kubelet builds the
//!   config from a Pod (ConfigMap → `config`, Secret → `erlang_cookie`/`admin`, a folder standing in
//!   for the PVC → `base_dir`, the pod IP → `ip`).
//! - **Test convenience**: [`start_nodes`] starts N throw-away nodes in parallel, each on its own
//!   leased loopback IP from `127.3.0.0/16` (see [`IpLease`]) with the standard ports, a temporary
//!   folder, a 500 ms statistics interval, 1 s statistics sample buckets and the plugins the
//!   migration steps need.
//!
//! Every node is always stopped: [`Drop`] kills the node's whole process group (so a panicking test
//! leaves nothing behind), and each start first sweeps nodes whose owning process died without
//! running its destructors (for example a test binary killed by a timeout).
//!
//! # Runtimes: RabbitMQ 3.10 and 4.0
//!
//! Every node runs one [`BrokerRuntime`], chosen per node: [`RabbitNode::start_on`],
//! [`start_nodes_on`], [`start_nodes_with`], [`start_test_node_on`]. The older entry points
//! ([`RabbitNode::start`], [`start_nodes`], [`start_test_node`]) start 3.10 nodes. Tests that
//! should hold on both releases are written once over a runtime and expanded with
//! [`test_each_runtime!`] into `name::v3_10` and `name::v4_0`.
//!
//! | | [`BrokerRuntime::Host310`] | [`BrokerRuntime::Debian13V40`] |
//! |---|---|---|
//! | what | RabbitMQ 3.10.8, Erlang 25 | RabbitMQ 4.0.5, Erlang 27 |
//! | from | the host's Debian 12 `rabbitmq-server` package | Debian 13's `rabbitmq-server` in a minimal Debian 13 root (`debootstrap --variant=minbase --include=rabbitmq-server trixie`) |
//! | lives in | `/usr/lib/rabbitmq` | `/var/cache/tiermq/rabbitmq-4.0-root`, or [`RABBITMQ4_ROOT_ENV`] (`TIERMQ_RABBITMQ4_ROOT`) |
//! | installed by | `make setup` (apt) | `make setup`, once: ~300 MB, built in 53 s here (98 s on a busy machine); re-runs take ~0.2 s |
//! | starts as | `rabbitmq-server` as the host's `rabbitmq` user | `unshare` → `sh` → `chroot` → `rabbitmq-server` as the root's own `rabbitmq` user (uid 101 there, another user on the host) |
//! | `rabbitmqctl` | the host's | the root's, through `chroot` |
//! | ready after | 5–9 s | 3–4 s |
//! | idle cost | ~0.6 % of a core 10–40 s after start, ~130 MB resident | ~0.5 % of a core, ~110 MB resident |
//! | broker + testkit suites | 204 s (16 tests) | 152 s (16 tests) |
//!
//! (Measured 2026-12 on this project's 2-core machines; a node costs more during its first
//! seconds.)
//!
//! How a 4.0 node starts: `unshare --mount --propagation private` gives the node a private mount
//! namespace, in which a small shell script mounts `proc` into the root (the node's memory
//! monitor reads `/proc`; without it the node stops during boot) and binds the node's folder to
//! the same path inside the root; `chroot --userspec` then enters the root as its `rabbitmq`
//! user, and every step `exec`s, so the pid the testkit holds is the Erlang VM itself. Because
//! the mounts exist only in that namespace, the host never sees them and they vanish with the
//! node's last process: after [`Drop`], after [`RabbitNode::kill`], and after the stale-node
//! sweep kills an orphan. There is no shared `proc` mount to count or unmount. What stays behind
//! is an empty mount-point folder per node inside the root, removed after the node (and by the
//! sweep). The folder is owned by the root's `rabbitmq` uid, so on the host it shows under
//! another user's name. The host's epmd serves 4.0 nodes too (the testkit starts it first when
//! none answers, as a 3.10 node would), so no epmd ever runs inside the root. Starting a 4.0
//! node needs root; a missing or half-built root is [`TestkitError::RuntimeMissing`], which
//! says to run `make setup`.
//!
//! How nodes coexist on one machine: each node has its own `RABBITMQ_NODENAME` (the part before `@`
//! must be unique on the machine, since one epmd serves every node), long names with the IP as the
//! host part (`NodeConfig::name_host`, normally the node's `ip`; kubesim keeps a broker's first pod
//! IP there after its pod moved to another IP), its own data/log folders, and a distribution
//! listener bound to that host-part address on a port no other node on the machine uses
//! (RabbitMQ refuses to start otherwise, also across IPs). When the process runs as root, the
//! node runs as the `rabbitmq` user and its folders are handed to it. Nodes of both runtimes run
//! side by side (they share the machine's epmd, the IP leases and the distribution-port scheme).

mod config;
mod error;
mod ip;
mod node;
pub mod promql;
mod runtime;
mod sweep;
pub mod tls;
pub mod tools;

pub use config::{
    Credentials, NodeConfig, NodeTls, TEST_PLUGINS, TEST_SAMPLE_INCREMENT_SECS,
    TEST_STATS_INTERVAL_MS, TLS_DIR,
};
pub use error::TestkitError;
pub use ip::IpLease;
pub use node::{
    READY_TIMEOUT, RabbitNode, start_nodes, start_nodes_on, start_nodes_with, start_test_node,
    start_test_node_on,
};
pub use runtime::{
    BrokerRuntime, DEFAULT_RABBITMQ4_ROOT, RABBITMQ4_ROOT_ENV, ROOT_COMPLETE_MARKER,
};
pub use sweep::sweep_stale_nodes;

/// The standard AMQP port; every node listens on it on its own IP.
pub const AMQP_PORT: u16 = 5672;
/// The standard management HTTP port.
pub const MANAGEMENT_PORT: u16 = 15672;
/// `rabbitmq_prometheus`'s standard port. A node that runs the plugin listens on it on its own IP
/// (the launcher adds `prometheus.tcp.ip`), so nodes on distinct IPs never collide.
pub const PROMETHEUS_PORT: u16 = 15692;
/// The plugin that serves Prometheus metrics on [`PROMETHEUS_PORT`].
pub const PROMETHEUS_PLUGIN: &str = "rabbitmq_prometheus";
/// The standard Erlang distribution port of a RabbitMQ node. Two nodes on one machine need
/// different distribution ports even on different IPs: RabbitMQ's start-up check asks the
/// machine's one epmd whether any node already uses the port.
pub const DIST_PORT: u16 = 25672;

/// Turns `async fn $name(runtime: BrokerRuntime)` into one test per runtime: a module `$name`
/// holding the tests `v3_10` and `v4_0` (`$name::v3_10`, `$name::v4_0` in test output and
/// nextest filters). The optional arguments go to `#[tokio::test(...)]`; the default is
/// `flavor = "multi_thread", worker_threads = 2`. The calling crate needs `tokio` (with its
/// `macros` feature).
///
/// ```ignore
/// async fn nodes_answer(runtime: tiermq_testkit::BrokerRuntime) { /* ... */ }
/// tiermq_testkit::test_each_runtime!(nodes_answer);
/// ```
#[macro_export]
macro_rules! test_each_runtime {
    ($name:ident) => {
        $crate::test_each_runtime!($name, flavor = "multi_thread", worker_threads = 2);
    };
    ($name:ident, $($tokio_args:tt)*) => {
        mod $name {
            #[tokio::test($($tokio_args)*)]
            async fn v3_10() {
                super::$name($crate::BrokerRuntime::Host310).await
            }

            #[tokio::test($($tokio_args)*)]
            async fn v4_0() {
                super::$name($crate::BrokerRuntime::Debian13V40).await
            }
        }
    };
}
