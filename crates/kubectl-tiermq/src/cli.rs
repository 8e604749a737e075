//! The command line: flags, the API client from the kubeconfig, the operator's settings, and the
//! three commands.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::ListParams;
use kube::config::KubeConfigOptions;
use kube::{Api, ResourceExt};
use tiermq_crd::{RabbitMQInstance, Tier};
use tiermq_operator::config::{BrokerAddressing, RunArgs};
use tiermq_operator::controller::clusters::Lookup;
use tiermq_operator::controller::observe;

/// kubectl plugin for tiermq RabbitMQInstances: conversion status, a preview of a tier flip,
/// and a watch.
#[derive(Parser, Debug)]
#[command(name = "kubectl-tiermq", bin_name = "kubectl tiermq", version)]
pub struct Cli {
    /// Namespace of the instance (default: the kubeconfig context's namespace).
    #[arg(short, long, global = true)]
    pub namespace: Option<String>,
    /// kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// The plugin's commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Tiers, the conversion's phase timeline with durations, backlog, drain rate, ETA,
    /// finished conversions and conditions.
    Status {
        /// The RabbitMQInstance.
        name: String,
    },
    /// What flipping spec.tier would do, without changing anything: the destination, its
    /// capacity, the blockers the operator would report, the source's queues and backlog, an
    /// estimated drain time and what clients will see.
    Preview {
        /// The RabbitMQInstance.
        name: String,
        /// The tier to preview a flip to (`Dedicated` or `Shared`, any case).
        #[arg(long, value_enum, ignore_case = true)]
        to: TierArg,
        #[command(flatten)]
        operator: OperatorFlags,
    },
    /// Follows the instance and prints one line per change of its status (Ctrl-C ends it).
    Watch {
        /// The RabbitMQInstance.
        name: String,
        /// Stop after this many seconds (default: until interrupted).
        #[arg(long)]
        timeout: Option<u64>,
    },
}

/// The target tier.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TierArg {
    /// An own RabbitMQ cluster.
    #[value(name = "Dedicated")]
    Dedicated,
    /// A vhost on a SharedCluster.
    #[value(name = "Shared")]
    Shared,
}

impl From<TierArg> for Tier {
    fn from(t: TierArg) -> Tier {
        match t {
            TierArg::Dedicated => Tier::Dedicated,
            TierArg::Shared => Tier::Shared,
        }
    }
}

/// The operator settings the preview needs. Unset ones are read from the operator's Deployment
/// (found by its labels) when the plugin may list Deployments, else the operator's defaults.
#[derive(clap::Args, Debug, Clone)]
pub struct OperatorFlags {
    /// The operator's --default-shared-cluster (`name` or `namespace/name`).
    #[arg(long)]
    pub default_shared_cluster: Option<String>,
    /// The operator's --shared-cluster-namespace.
    #[arg(long)]
    pub shared_cluster_namespace: Option<String>,
    /// How this plugin reaches the brokers' management APIs: `cluster-ip` (the cluster Services'
    /// ClusterIPs, reachable from inside the cluster network) or `service-dns`
    /// (`<cluster>.<ns>.svc`, from inside the cluster).
    #[arg(long, value_enum, default_value = "cluster-ip")]
    pub broker_addressing: Addressing,
}

/// `--broker-addressing`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressing {
    /// The cluster Service's ClusterIP.
    ClusterIp,
    /// `<cluster>.<namespace>.svc`.
    ServiceDns,
}

/// Labels of the operator's Deployment, from the chart and from `deploy/`.
pub const OPERATOR_SELECTOR: &str =
    "app.kubernetes.io/name=tiermq,app.kubernetes.io/component=operator";

/// The operator's settings for the preview, and a note on where they came from.
pub async fn operator_settings(client: &kube::Client, flags: &OperatorFlags) -> (RunArgs, String) {
    let deployments: Api<Deployment> = Api::all(client.clone());
    let found = deployments
        .list(&ListParams::default().labels(OPERATOR_SELECTOR))
        .await;
    let (mut args, note) = match found {
        Ok(list) if !list.items.is_empty() => {
            let d = &list.items[0];
            let ns = d.namespace().unwrap_or_default();
            let mut args = RunArgs::local(&ns);
            let env = d
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|p| p.containers.first())
                .and_then(|c| c.env.clone())
                .unwrap_or_default();
            let value = |name: &str| {
                env.iter()
                    .find(|e| e.name == name)
                    .and_then(|e| e.value.clone())
                    .filter(|v| !v.is_empty())
            };
            args.default_shared_cluster = value("TIERMQ_DEFAULT_SHARED_CLUSTER");
            args.shared_cluster_namespace = value("TIERMQ_SHARED_CLUSTER_NAMESPACE");
            (
                args,
                format!("operator settings: from Deployment {ns}/{}", d.name_any()),
            )
        }
        Ok(_) => (
            RunArgs::local("tiermq-system"),
            "operator settings: no operator Deployment found (labels app.kubernetes.io/name=tiermq, component=operator); \
             assumed namespace tiermq-system and no default SharedCluster"
                .to_string(),
        ),
        Err(e) => (
            RunArgs::local("tiermq-system"),
            format!(
                "operator settings: could not list Deployments ({e}); assumed namespace tiermq-system and no default SharedCluster"
            ),
        ),
    };
    if let Some(v) = &flags.default_shared_cluster {
        args.default_shared_cluster = Some(v.clone());
    }
    if let Some(v) = &flags.shared_cluster_namespace {
        args.shared_cluster_namespace = Some(v.clone());
    }
    args.broker_addressing = match flags.broker_addressing {
        Addressing::ClusterIp => BrokerAddressing::ClusterIp,
        Addressing::ServiceDns => BrokerAddressing::ServiceDns,
    };
    (args, note)
}

/// A client for the kubeconfig context, and the namespace to use.
pub async fn connect(cli: &Cli) -> anyhow::Result<(kube::Client, String)> {
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match kube::Config::from_kubeconfig(&options).await {
        Ok(c) => c,
        Err(_) if cli.context.is_none() => kube::Config::infer()
            .await
            .context("no kubeconfig and not in a cluster")?,
        Err(e) => return Err(e).context("read the kubeconfig"),
    };
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).context("build the API client")?;
    Ok((client, namespace))
}

async fn instance(client: &kube::Client, ns: &str, name: &str) -> anyhow::Result<RabbitMQInstance> {
    let api: Api<RabbitMQInstance> = Api::namespaced(client.clone(), ns);
    api.get_opt(name)
        .await
        .with_context(|| format!("get RabbitMQInstance {ns}/{name}"))?
        .with_context(|| format!("RabbitMQInstance {ns}/{name} not found"))
}

/// Runs one command, writing its output to `out`.
pub async fn run(cli: Cli, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let (client, ns) = connect(&cli).await?;
    execute(client, &ns, cli.command, out).await
}

/// Runs `command` in namespace `ns` with an API client made already (the binary's comes from the
/// kubeconfig; tests pass their cluster's).
pub async fn execute(
    client: kube::Client,
    ns: &str,
    command: Command,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    match command {
        Command::Status { name } => {
            let i = instance(&client, ns, &name).await?;
            write!(out, "{}", crate::status::render(&i, chrono::Utc::now()))?;
        }
        Command::Preview { name, to, operator } => {
            let i = instance(&client, ns, &name).await?;
            let to = Tier::from(to);
            let (config, note) = operator_settings(&client, &operator).await;
            let mut flipped = i.clone();
            flipped.spec.tier = to;
            let shared = crate::preview::shared_ref(&flipped, &config);
            // Placed instances, counted as the operator counts them; the operator's in-memory
            // reservations (instances being placed this very moment) are not visible from here.
            let placement = || async {
                let api: Api<RabbitMQInstance> = Api::all(client.clone());
                let list = api.list(&ListParams::default()).await.map_err(
                    tiermq_operator::error::kube_err("list", "RabbitMQInstances"),
                )?;
                Ok(observe::Placement {
                    count: list
                        .items
                        .iter()
                        .filter(|o| observe::placed_on(o, &shared))
                        .count(),
                    reserved: false,
                })
            };
            let observed =
                observe::observe_with(Lookup::api(&client), &config, &flipped, &shared, placement)
                    .await
                    .context(
                        "observe the instance as the operator does (StatefulSets, Services, the \
                     clusters' admin Secrets, EndpointSlices)",
                    )?;
            let ctx = crate::preview::Context {
                notes: vec![note],
                addressing: match config.broker_addressing {
                    BrokerAddressing::ClusterIp => "the cluster Services' ClusterIPs".into(),
                    BrokerAddressing::ServiceDns => "<cluster>.<namespace>.svc".into(),
                },
            };
            write!(
                out,
                "{}",
                crate::preview::render(&i, to, &observed, &ctx, chrono::Utc::now())
            )?;
        }
        Command::Watch { name, timeout } => {
            let stop = async move {
                match timeout {
                    Some(s) => tokio::time::sleep(std::time::Duration::from_secs(s)).await,
                    None => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            };
            crate::watch::follow(client, ns, &name, out, stop).await?;
        }
    }
    Ok(())
}

/// The binary's entry point.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut stdout = std::io::stdout();
    match run(cli, &mut stdout).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
