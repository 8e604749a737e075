//! `tiermq-operator`: the operator binary.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tiermq-operator",
    version,
    about = "Runs RabbitMQ instances and converts them between shared and dedicated tiers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator: reconcile RabbitMQInstances and SharedClusters.
    Run(Box<tiermq_operator::config::RunArgs>),
    /// Print the CustomResourceDefinitions (RabbitMQInstance, SharedCluster) as YAML.
    Crd {
        /// Write one file per CRD into these folders instead of printing (e.g. `crd/`).
        #[arg(long = "out-dir")]
        out_dirs: Vec<PathBuf>,
    },
    /// Write the operator's RBAC (deploy/rbac.yaml, the chart's clusterrole.yaml and role.yaml)
    /// below a repository root, or print deploy/rbac.yaml.
    Rbac {
        /// The repository root to write below (e.g. `.`).
        #[arg(long)]
        root: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => {
            tiermq_operator::telemetry::init(args.log_format);
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(tiermq_operator::operator::run(*args))?;
        }
        Command::Crd { out_dirs } if out_dirs.is_empty() => print!("{}", tiermq_crd::crds_yaml()),
        Command::Crd { out_dirs } => {
            for dir in out_dirs {
                std::fs::create_dir_all(&dir)?;
                for (name, yaml) in tiermq_crd::crd_files() {
                    let path = dir.join(name);
                    std::fs::write(&path, yaml)?;
                    eprintln!("wrote {}", path.display());
                }
            }
        }
        Command::Rbac { root: None } => print!("{}", tiermq_operator::rbac::deploy_yaml()),
        Command::Rbac { root: Some(root) } => {
            for (rel, yaml) in tiermq_operator::rbac::files() {
                let path = root.join(rel);
                std::fs::write(&path, yaml)?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}
