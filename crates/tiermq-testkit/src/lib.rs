//! Real `rabbitmq-server` nodes on loopback, for the broker integration tests, kubesim's simulated
//! kubelet and the demo.
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
//! How nodes coexist on one machine: each node has its own `RABBITMQ_NODENAME` (the part before `@`
//! must be unique on the machine, since one epmd serves every node), long names with the IP as the
//! host part, its own data/log folders, and a distribution listener bound to its IP on a port no
//! other node on the machine uses (RabbitMQ refuses to start otherwise, also across IPs). When the
//! process runs as root, the node runs as the `rabbitmq` user and its folders are handed to it.

mod config;
mod error;
mod ip;
mod node;
mod runtime;
mod sweep;

pub use config::{
    Credentials, NodeConfig, TEST_PLUGINS, TEST_SAMPLE_INCREMENT_SECS, TEST_STATS_INTERVAL_MS,
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
