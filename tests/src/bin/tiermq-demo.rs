//! `tiermq-demo`: the whole product on one machine, in a few minutes.
//!
//! `tiermq-demo` (or `tiermq-demo run`) starts a kubesim cluster in this process, applies the CRDs,
//! a SharedCluster and an instance with kubectl, starts the operator binary, runs a small steady
//! AMQP load of several client patterns (by default a work queue and fanout pub/sub) through the
//! instance Service and converts the instance shared → dedicated → shared, printing live progress,
//! a per-pattern table (sent, confirmed, received, lost, duplicates) and a summary. `tiermq-demo bench` measures Consume vs Shovel
//! drains and shared vs dedicated publish throughput side by side and writes a report;
//! `tiermq-demo scale` puts 1,000 shared-tier instances on one operator (see `tiermq_tests::scale`).
//!
//! It builds nothing: the operator binary must exist (`cargo build -p tiermq-operator`; by default
//! it is looked up next to this executable). Everything it starts — brokers, the operator, the
//! API server — is stopped on exit, on Ctrl-C and on SIGTERM.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tiermq_crd::{MigrationPhase, Tier};
use tiermq_tests::bench;
use tiermq_tests::harness::{InstanceSpec, World, shared_cluster_yaml_with};
use tiermq_tests::load::{Load, LoadConfig, Pattern, Workload, WorkloadConfig, WorkloadReport};
use tiermq_tests::scenario::{self, Conversion, NAME, NS};

#[derive(Parser)]
#[command(
    name = "tiermq-demo",
    about = "Runs tiermq end to end on a simulated cluster: converts an instance shared -> dedicated -> shared under load"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// State folder (kubeconfig, broker data and logs, operator log); emptied at start.
    #[arg(long, global = true, default_value = ".tiermq/demo")]
    dir: PathBuf,
    /// The operator binary (default: `tiermq-operator` next to this executable).
    #[arg(long, global = true, env = "TIERMQ_OPERATOR_BIN")]
    operator_bin: Option<PathBuf>,
    /// Broker image of the shared and the dedicated cluster (kubesim runs 3.x tags with
    /// RabbitMQ 3.10, 4.x tags with 4.0.5). Default: the CRDs' default image.
    #[arg(long, global = true, default_value = tiermq_crd::DEFAULT_IMAGE)]
    image: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// The demo (default).
    Run {
        /// Messages per second per publisher (2 publishers).
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// Drain strategy of the instance: Consume or Shovel.
        #[arg(long, default_value = "Consume")]
        drain: String,
        /// Client patterns run during each conversion (comma-separated): work-queue, no-confirm,
        /// fanout, topic, quorum, stream, delayed, max-length, sac.
        #[arg(long, value_delimiter = ',', default_value = "work-queue,fanout")]
        patterns: Vec<Pattern>,
    },
    /// Only the load generator and checker, against an instance on a loopback address (e.g. a
    /// local proxy to the instance Service in a real cluster; see scripts/kind-e2e.sh). Exits 1
    /// when a confirmed message was never consumed.
    Load {
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[arg(long, default_value_t = 5672)]
        port: u16,
        #[arg(long, env = "TIERMQ_LOAD_VHOST")]
        vhost: String,
        #[arg(long, env = "TIERMQ_LOAD_USERNAME")]
        username: String,
        /// Read from the environment only, so it never shows in a process list.
        #[arg(long = "password-env", default_value = "TIERMQ_LOAD_PASSWORD")]
        password_env: String,
        /// Queue of the work queue; the other patterns' queues and exchanges start with it.
        #[arg(long, default_value = "orders")]
        queue: String,
        /// Client patterns (comma-separated): work-queue, no-confirm, fanout, topic, quorum,
        /// stream, delayed, max-length, sac.
        #[arg(long, value_delimiter = ',', default_value = "work-queue")]
        patterns: Vec<Pattern>,
        /// Messages per second per publisher (2 publishers, 2 consumers per pattern).
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// Publish for this long, then wait for the consumers.
        #[arg(long, default_value_t = 180)]
        seconds: u64,
    },
    /// Renders the Markdown report and the SVG timelines again from a bench JSON file (no
    /// brokers): for changes of the report's layout.
    BenchRender {
        /// The bench's JSON file.
        #[arg(long, default_value = "docs/bench/bench.json")]
        json: PathBuf,
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        #[arg(long, default_value = "docs/bench")]
        svg_dir: PathBuf,
    },
    /// Many shared-tier instances on one operator (issue 14 item 3): time to converge, API and
    /// broker requests in an idle minute, operator RSS and reconcile latency, then many
    /// conversions shared -> dedicated at once with AMQP load on a few; writes a Markdown report
    /// and a JSON file with every figure.
    Scale {
        /// Shared-tier instances.
        #[arg(long, default_value_t = 1000)]
        instances: usize,
        /// SharedClusters (one broker each) the instances are spread over.
        #[arg(long, default_value_t = 3)]
        shared_clusters: usize,
        /// Instances per namespace.
        #[arg(long, default_value_t = 50)]
        per_namespace: usize,
        /// Conversions to Dedicated started at once (each starts a broker node); 0: none.
        #[arg(long, default_value_t = 50)]
        conversions: usize,
        /// Converting instances that run AMQP load through their Service.
        #[arg(long, default_value_t = 5)]
        loaded: usize,
        /// Messages per second per publisher on a loaded instance (2 publishers).
        #[arg(long, default_value_t = 5.0)]
        load_rate: f64,
        /// Start brokers with RabbitMQ's default Erlang VM flags instead of lean ones (one
        /// scheduler, no busy-waiting).
        #[arg(long)]
        default_erl_flags: bool,
        /// Limit for all instances to become Ready, seconds.
        #[arg(long, default_value_t = 900)]
        converge_limit: u64,
        /// Limit for the conversions, seconds.
        #[arg(long, default_value_t = 720)]
        convert_limit: u64,
        /// Length of the idle window, seconds.
        #[arg(long, default_value_t = 60)]
        idle_seconds: u64,
        /// Skip killing and restarting the operator over the steady instances.
        #[arg(long)]
        no_restart: bool,
        /// The operator's `--max-concurrent-conversions` (0: unbounded, its default).
        #[arg(long, default_value_t = 0)]
        max_concurrent_conversions: u16,
        /// Report file (Markdown).
        #[arg(long, default_value = "docs/bench/SCALE.md")]
        out: PathBuf,
        /// Every figure and how it was measured (JSON).
        #[arg(long, default_value = "docs/bench/scale.json")]
        json: PathBuf,
        /// Build profile of the operator, for the report.
        #[arg(long, default_value = "debug")]
        profile: String,
    },
    /// Renders the scale report again from its JSON file (no brokers).
    ScaleRender {
        #[arg(long, default_value = "docs/bench/scale.json")]
        json: PathBuf,
        #[arg(long, default_value = "docs/bench/SCALE.md")]
        out: PathBuf,
    },
    /// Every conversion (both directions x Consume and Shovel) under load, measured, with the
    /// baselines (naive cutover, raw shovel, raw consumer) in the same run; writes a Markdown
    /// report, a JSON file with every figure and one SVG timeline per conversion.
    Bench {
        /// Report file (Markdown).
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// Every figure and how it was measured (JSON).
        #[arg(long, default_value = "docs/bench/bench.json")]
        json: PathBuf,
        /// Folder of the SVG timelines.
        #[arg(long, default_value = "docs/bench")]
        svg_dir: PathBuf,
        /// Build profile of the binaries, for the report.
        #[arg(long, default_value = "debug")]
        profile: String,
    },
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,lapin=off,tiermq_broker::client=error")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let common = cli.common.clone();
    let work = async move {
        match cli.cmd.unwrap_or(Cmd::Run {
            rate: 20.0,
            drain: "Consume".into(),
            patterns: vec![Pattern::WorkQueue, Pattern::FanoutPubSub],
        }) {
            Cmd::Run {
                rate,
                drain,
                patterns,
            } => demo(&common, rate, &drain, &patterns).await,
            Cmd::BenchRender { json, out, svg_dir } => {
                let text = std::fs::read_to_string(&json)
                    .with_context(|| format!("read {}", json.display()))?;
                let mut results: bench::BenchResults = serde_json::from_str(&text)
                    .with_context(|| format!("parse {}", json.display()))?;
                let note = format!(
                    "rendered again from its JSON by `tiermq-demo bench-render` at commit {}; every figure is from the run at {}",
                    bench::commit(),
                    results.commit
                );
                results.notes.retain(|n| !n.starts_with("rendered again"));
                results.notes.push(note);
                write_bench(
                    &results,
                    &BenchOut {
                        out,
                        json,
                        svg_dir,
                        profile: results.profile.clone(),
                    },
                )
            }
            Cmd::Bench {
                out,
                json,
                svg_dir,
                profile,
            } => {
                bench(
                    &common,
                    &BenchOut {
                        out,
                        json,
                        svg_dir,
                        profile,
                    },
                )
                .await
            }
            Cmd::Scale {
                instances,
                shared_clusters,
                per_namespace,
                conversions,
                loaded,
                load_rate,
                default_erl_flags,
                converge_limit,
                convert_limit,
                idle_seconds,
                no_restart,
                max_concurrent_conversions,
                out,
                json,
                profile,
            } => {
                let opts = tiermq_tests::scale::run::ScaleOptions {
                    dir: fresh_dir(&common.dir)?,
                    operator_bin: operator_bin(&common)?,
                    image: common.image.clone(),
                    profile,
                    instances,
                    shared_clusters: shared_clusters.max(1),
                    per_namespace,
                    conversions,
                    loaded,
                    lean_brokers: !default_erl_flags,
                    converge_limit: Duration::from_secs(converge_limit),
                    convert_limit: Duration::from_secs(convert_limit),
                    idle: Duration::from_secs(idle_seconds),
                    load_rate,
                    restart: !no_restart,
                    max_concurrent_conversions,
                    partial_out: Some((out.clone(), json.clone())),
                };
                let results = tiermq_tests::scale::run::run(&opts).await?;
                write_scale(&results, &out, &json)?;
                // Remove the state folder (broker data of every node) unless asked to keep it.
                if std::env::var_os("TIERMQ_KEEP_SCALE_DIR").is_none() {
                    let _ = std::fs::remove_dir_all(&opts.dir);
                }
                Ok(())
            }
            Cmd::ScaleRender { json, out } => {
                let text = std::fs::read_to_string(&json)
                    .with_context(|| format!("read {}", json.display()))?;
                let results: tiermq_tests::scale::ScaleResults = serde_json::from_str(&text)
                    .with_context(|| format!("parse {}", json.display()))?;
                write_scale(&results, &out, &json)
            }
            Cmd::Load {
                host,
                port,
                vhost,
                username,
                password_env,
                queue,
                patterns,
                rate,
                seconds,
            } => {
                let password = std::env::var(&password_env).with_context(|| {
                    format!("the password is read from ${password_env}; set it")
                })?;
                let target = tiermq_tests::load::AmqpTarget::from_parts(
                    &host, port, &vhost, &username, &password,
                )?;
                load_only(
                    target,
                    &queue,
                    &patterns,
                    rate,
                    Duration::from_secs(seconds),
                )
                .await
            }
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // The work future owns the world; leaving the select drops it, which kills the operator's
    // process group and every broker (their Drop impls), also when interrupted.
    let result = tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\ninterrupted: stopping the operator, the brokers and the API server ...");
            Err(anyhow::anyhow!("interrupted"))
        }
        _ = term.recv() => {
            eprintln!("\nterminated: stopping the operator, the brokers and the API server ...");
            Err(anyhow::anyhow!("terminated"))
        }
    };
    if let Err(e) = &result {
        eprintln!("tiermq-demo: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

fn operator_bin(common: &Common) -> anyhow::Result<PathBuf> {
    let bin = match &common.operator_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("locate tiermq-demo")?
            .with_file_name("tiermq-operator"),
    };
    if !bin.exists() {
        bail!(
            "operator binary {} not found; build it first with `cargo build -p tiermq-operator` (or `make demo`), or pass --operator-bin",
            bin.display()
        );
    }
    Ok(bin)
}

fn fresh_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = std::path::absolute(dir).context("resolve --dir")?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("empty the demo folder {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

fn step(t0: Instant, what: &str) {
    println!("[{:>5.1}s] {what}", t0.elapsed().as_secs_f64());
}

/// Starts kubesim, the CRDs, the operator, the SharedCluster and the instance.
async fn bring_up(common: &Common, drain: &str, t0: Instant) -> anyhow::Result<World> {
    let bin = operator_bin(common)?;
    let dir = fresh_dir(&common.dir)?;
    step(
        t0,
        "starting kubesim (API server, StatefulSet/EndpointSlice controllers, kubelet, kube-proxy)",
    );
    let mut world = World::start_in(&dir).await?;
    let kc = world.cluster.kubeconfig_path().display().to_string();
    step(
        t0,
        &format!(
            "CRDs applied with kubectl; watch along in another terminal:\n          export KUBECONFIG={kc}\n          kubectl get rmqi -A -w"
        ),
    );
    world.start_operator_bin(&bin, &[])?;
    step(
        t0,
        &format!(
            "operator started: {} run --leader-election false --broker-addressing cluster-ip (log: {})",
            bin.display(),
            world
                .operator
                .as_ref()
                .map(|o| o.log_path().display().to_string())
                .unwrap_or_default()
        ),
    );
    let shared = shared_cluster_yaml_with("main", &common.image, 10);
    let instance = InstanceSpec {
        namespace: NS,
        name: NAME,
        tier: "Shared",
        drain_strategy: drain,
        grace_period_seconds: GRACE_SECONDS,
        connection_policy: None,
    }
    .yaml_with(&common.image);
    std::fs::write(dir.join("shared-cluster.yaml"), &shared)?;
    std::fs::write(dir.join("instance.yaml"), &instance)?;
    world.kubectl.apply(&shared).await?;
    world.kubectl.apply(&instance).await?;
    step(
        t0,
        &format!(
            "kubectl apply -f {}/shared-cluster.yaml -f {}/instance.yaml",
            dir.display(),
            dir.display()
        ),
    );
    step(
        t0,
        "waiting for the shared broker and the tenant (a RabbitMQ node starts in ~10 s) ...",
    );
    world.wait_ready(NS, NAME, Duration::from_secs(150)).await?;
    let table = world.kubectl.ok(&["get", "rmqi", "-A"], None).await?;
    step(t0, &format!("instance in service:\n{}", indent(&table)));
    Ok(world)
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("          {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn names(patterns: &[Pattern]) -> String {
    patterns
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

async fn demo(common: &Common, rate: f64, drain: &str, patterns: &[Pattern]) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mut world = bring_up(common, drain, t0).await?;
    let target = world.instance_target(NS, NAME).await?;
    let mut rows = Vec::new();
    for to in [Tier::Dedicated, Tier::Shared] {
        // A fresh load per conversion, so each row of the summary has its own message counts.
        let mut cfg = LoadConfig::steady(target.clone(), "orders", 100_000, rate);
        cfg.name = format!("demo-to-{}", to.as_str().to_lowercase());
        cfg.max_duration = Duration::from_secs(200);
        cfg.backoff_max = Duration::from_secs(1);
        let load = Workload::start(WorkloadConfig::new(cfg, patterns)).await?;
        step(
            t0,
            &format!(
                "load ({}): per pattern 2 publishers x {rate} msg/s (confirms) and 2 consumers or subscribers (manual acks) through {target} (the instance Service)",
                names(patterns)
            ),
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        step(
            t0,
            &format!(
                "kubectl patch rmqi {NAME} -n {NS} --type merge -p '{{\"spec\":{{\"tier\":\"{to}\"}}}}'"
            ),
        );
        let mut print = |l: &str| println!("   {l}");
        let converted = scenario::convert(
            &mut world,
            NS,
            NAME,
            to,
            &load,
            Duration::from_secs(150),
            Some(&mut print),
        )
        .await;
        let c = match converted {
            Ok(c) => c,
            Err(e) => {
                // Show what the clients saw up to here before giving up.
                load.stop_publishing();
                let report = load.finish(Duration::from_secs(5)).await;
                step(
                    t0,
                    &format!(
                        "the conversion to {to} did not finish; the load so far, per pattern:\n{}",
                        indent(&report.to_string())
                    ),
                );
                return Err(e);
            }
        };
        step(
            t0,
            &format!(
                "converted {} -> {} in {:.1}s: {}",
                c.from,
                c.to,
                c.duration.as_secs_f64(),
                scenario::phase_table(&c)
            ),
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        load.stop_publishing();
        // Consumers keep up with 20 msg/s, so what has not arrived 20 s after the conversion
        // is not coming (a subscriber's misses never drain).
        let report = load.finish(Duration::from_secs(20)).await;
        step(
            t0,
            &format!(
                "load after the conversion {} -> {}, per pattern:\n{}",
                c.from,
                c.to,
                indent(&report.to_string())
            ),
        );
        rows.push((c, report));
    }
    let table = world.kubectl.ok(&["get", "rmqi", "-A"], None).await?;
    println!("{}", indent(&table));
    println!();
    print_summary(&rows);
    step(
        t0,
        "stopping the operator, the brokers and the API server ...",
    );
    let World {
        operator, cluster, ..
    } = world;
    drop(operator);
    cluster.shutdown().await;
    step(t0, "done; everything the demo started is stopped");
    let lost: Vec<String> = rows
        .iter()
        .flat_map(|(c, r)| {
            r.patterns
                .iter()
                .filter(|p| p.lost > 0)
                .map(move |p| format!("{} -> {} {}: {}", c.from, c.to, p.pattern, p.lost))
        })
        .collect();
    if !lost.is_empty() {
        bail!(
            "confirmed messages were never consumed (lost per conversion and pattern): {}",
            lost.join(", ")
        );
    }
    Ok(())
}

async fn load_only(
    target: tiermq_tests::load::AmqpTarget,
    queue: &str,
    patterns: &[Pattern],
    rate: f64,
    publish_for: Duration,
) -> anyhow::Result<()> {
    let mut cfg = LoadConfig::steady(
        target.clone(),
        queue,
        (rate * publish_for.as_secs_f64()).ceil() as u64 + 1,
        rate,
    );
    cfg.max_duration = publish_for + Duration::from_secs(120);
    cfg.backoff_max = Duration::from_secs(2);
    let load = Workload::start(WorkloadConfig::new(cfg, patterns)).await?;
    println!(
        "load ({}): per pattern 2 publishers x {rate} msg/s, 2 consumers, through {target} for {}s",
        names(patterns),
        publish_for.as_secs()
    );
    let until = Instant::now() + publish_for;
    while Instant::now() < until && !load.publishing_done() {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let s = load.stats();
        println!(
            "{:>6.0}s sent {} confirmed {} received {} in-flight {} duplicates {} reconnects {}",
            load.elapsed().as_secs_f64(),
            s.sent,
            s.confirmed,
            s.received,
            s.unconsumed,
            s.duplicates,
            s.reconnects
        );
    }
    load.stop_publishing();
    let report = load.finish(Duration::from_secs(120)).await;
    println!("result:\n{report}");
    println!("close reasons: {:?}", report.reasons());
    if report.lost() > 0 {
        let sample: Vec<&String> = report
            .patterns
            .iter()
            .flat_map(|p| &p.lost_sample)
            .take(20)
            .collect();
        bail!("LOST {} confirmed messages, e.g. {sample:?}", report.lost());
    }
    println!("OK: lost 0");
    Ok(())
}

fn print_summary(rows: &[(Conversion, WorkloadReport)]) {
    println!("Summary");
    println!(
        "| conversion | duration | Preparing | DualWrite | SingleWrite | Draining | DestOnly | sent | received | lost | dup | reconnects | longest stall | lost per pattern |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for (c, r) in rows {
        let t = |p: MigrationPhase| format!("{:.1}s", phase_secs(c, p));
        let sum = |f: fn(&tiermq_tests::load::PatternReport) -> u64| -> u64 {
            r.patterns.iter().map(f).sum()
        };
        let stall = r
            .patterns
            .iter()
            .map(|p| p.max_confirm_gap)
            .max()
            .unwrap_or_default();
        let per_pattern: Vec<String> = r
            .patterns
            .iter()
            .map(|p| match p.confirmed {
                Some(_) => format!("{} {}", p.pattern, p.lost),
                None => format!("{} - (unconfirmed {})", p.pattern, p.unconfirmed_missing),
            })
            .collect();
        println!(
            "| {} -> {} | {:.1}s | {} | {} | {} | {} | {} | {} | {} | **{}** | {} | {} | {:.1}s | {} |",
            c.from,
            c.to,
            c.duration.as_secs_f64(),
            t(MigrationPhase::PreparingDestination),
            t(MigrationPhase::DualWriteDualRead),
            t(MigrationPhase::SingleWriteDualRead),
            t(MigrationPhase::DrainingSource),
            t(MigrationPhase::DestinationOnly),
            sum(|p| p.sent),
            sum(|p| p.received),
            r.lost(),
            sum(|p| p.duplicates),
            sum(|p| p.reconnects),
            stall.as_secs_f64(),
            per_pattern.join(", "),
        );
    }
    for (c, r) in rows {
        println!(
            "{} -> {}: connection close reasons seen by clients: {:?}",
            c.from,
            c.to,
            r.reasons()
        );
    }
}

/// Where the operator runs a tier's cluster in the bench: (namespace, cluster name).
fn tier_cluster(t: Tier) -> (&'static str, &'static str) {
    match t {
        Tier::Shared => ("tiermq-system", "main"),
        Tier::Dedicated => (NS, "orders-dedicated"),
    }
}

/// Consumers per load, and how long each spends on a message: slower than a bare consumer, so
/// part of the backlog is still on the source at the write cutover and the drain has work.
const BENCH_CONSUMERS: u32 = 2;
const BENCH_CONSUMER_DELAY: Duration = Duration::from_millis(20);
const BENCH_RATE: f64 = 40.0;
const BENCH_BACKLOG_SECS: u64 = 10;
/// Messages parked on the source for the Shovel throughput comparison: enough that the transfer,
/// not the phase's fixed ~2 s, dominates DrainingSource.
const BENCH_PARKED: u64 = 100_000;

/// The load of every bench conversion and of the naive cutover: 2 publishers at
/// [`BENCH_RATE`] msg/s with confirms; consumers are added later.
fn bench_load(target: &tiermq_tests::load::AmqpTarget, name: &str) -> LoadConfig {
    let mut cfg = LoadConfig::steady(target.clone(), "orders", 100_000, BENCH_RATE);
    cfg.name = name.into();
    cfg.consumers = 0;
    cfg.prefetch = 10;
    cfg.consumer_delay = BENCH_CONSUMER_DELAY;
    cfg.max_duration = Duration::from_secs(240);
    cfg.backoff_max = Duration::from_secs(1);
    cfg
}

/// What the sampler saw during one conversion (times: since the load started).
#[derive(Default)]
struct Sampled {
    samples: Vec<(f64, f64, f64, Option<u64>)>,
    dest_up_at: Option<f64>,
    dest_up_at_first_probe: bool,
    stats_lag_max: Option<i64>,
}

/// Samples load rates, the source queue's depth and the destination's readiness every 250 ms
/// until `stop`.
#[allow(clippy::too_many_arguments)]
async fn sample_conversion(
    load: &Load,
    stop: &std::sync::atomic::AtomicBool,
    kube: kube::Client,
    src: tiermq_broker::ManagementClient,
    dst: (&str, &str),
    vhost: &str,
    instances: kube::Api<tiermq_crd::RabbitMQInstance>,
) -> Sampled {
    use std::sync::atomic::Ordering;
    let mut out = Sampled::default();
    let mut dst_mc: Option<tiermq_broker::ManagementClient> = None;
    let mut prev = (load.elapsed().as_secs_f64(), load.stats());
    let mut first_probe = true;
    let quick = Duration::from_millis(400);
    while !stop.load(Ordering::Relaxed) {
        let tick = tokio::time::sleep(Duration::from_millis(250));
        let t = load.elapsed().as_secs_f64();
        let s = load.stats();
        let dt = (t - prev.0).max(1e-3);
        let backlog = match tokio::time::timeout(quick, src.get_queue(vhost, "orders")).await {
            Ok(Ok(Some(q))) => q.messages,
            _ => None,
        };
        out.samples.push((
            t,
            (s.confirmed.saturating_sub(prev.1.confirmed)) as f64 / dt,
            (s.received.saturating_sub(prev.1.received)) as f64 / dt,
            backlog,
        ));
        prev = (t, s);
        if out.dest_up_at.is_none() {
            if dst_mc.is_none() {
                dst_mc = tokio::time::timeout(
                    quick,
                    tiermq_tests::harness::management_client(&kube, dst.0, dst.1),
                )
                .await
                .ok()
                .and_then(Result::ok);
            }
            if let Some(mc) = &dst_mc
                && let Ok(Ok(_)) = tokio::time::timeout(quick, mc.overview()).await
            {
                out.dest_up_at = Some(load.elapsed().as_secs_f64());
                out.dest_up_at_first_probe = first_probe;
            }
            first_probe = false;
        }
        if let Ok(Ok(Some(i))) = tokio::time::timeout(quick, instances.get_opt(NAME)).await
            && let Some(lag) = i
                .status
                .and_then(|s| s.migration)
                .and_then(|m| m.stats_lag_seconds)
        {
            out.stats_lag_max = Some(out.stats_lag_max.unwrap_or(0).max(lag));
        }
        tick.await;
    }
    out
}

/// The operator log's lines about the bench instance, times in s since `epoch`.
fn operator_log(world: &World, epoch: chrono::DateTime<chrono::Utc>) -> Vec<bench::LogLine> {
    let Some(op) = world.operator.as_ref() else {
        return Vec::new();
    };
    std::fs::read_to_string(op.log_path())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("orders.team-a"))
        .filter_map(|l| bench::parse_operator_line(l, epoch))
        .collect()
}

/// One conversion under the bench load, measured.
async fn bench_conversion(
    world: &mut World,
    target: &tiermq_tests::load::AmqpTarget,
    drain: &str,
    to: Tier,
    t0: Instant,
) -> anyhow::Result<bench::ConversionRun> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let from = if to == Tier::Dedicated {
        Tier::Shared
    } else {
        Tier::Dedicated
    };
    let kube = world.cluster.client();
    let (sns, sname) = tier_cluster(from);
    let src = world.management(sns, sname).await?;
    let vhost = world
        .credentials(NS, NAME)
        .await?
        .get("vhost")
        .cloned()
        .context("no vhost in the credentials")?;
    let mut load = Load::start(bench_load(target, &format!("bench-{drain}-{to}"))).await?;
    let load_start_wall = chrono::Utc::now() - chrono::Duration::from_std(load.elapsed())?;
    tokio::time::sleep(Duration::from_secs(BENCH_BACKLOG_SECS)).await;
    let backlog_at_flip = load.stats().unconsumed;
    load.add_consumers(BENCH_CONSUMERS);
    step(
        t0,
        &format!("{drain}: converting to {to} with ~{backlog_at_flip} messages waiting"),
    );
    let stop = AtomicBool::new(false);
    let instances = world.instances(NS);
    let mut print = |l: &str| println!("   {l}");
    let (converted, sampled) = tokio::join!(
        async {
            let r = scenario::convert(
                world,
                NS,
                NAME,
                to,
                &load,
                Duration::from_secs(240),
                Some(&mut print),
            )
            .await;
            stop.store(true, Ordering::Relaxed);
            r
        },
        sample_conversion(&load, &stop, kube, src, tier_cluster(to), &vhost, instances)
    );
    let c = converted?;
    load.stop_publishing();
    let resumes = load.consumer_resumes();
    let report = load.finish(Duration::from_secs(120)).await;
    step(
        t0,
        &format!(
            "{drain} -> {to}: {:.1}s, {report}",
            c.duration.as_secs_f64()
        ),
    );
    let flip = c.flipped_at.as_secs_f64();
    let phases: Vec<bench::PhaseTime> = c
        .phase_times
        .iter()
        .zip(&c.phase_seen_at)
        .map(|((p, d), (_, at))| bench::PhaseTime {
            phase: p.as_str().into(),
            start_s: at.as_secs_f64() - flip,
            seconds: d.as_secs_f64(),
        })
        .collect();
    let flip_wall = load_start_wall + chrono::Duration::from_std(c.flipped_at)?;
    let mut log: Vec<bench::LogLine> = operator_log(world, flip_wall)
        .into_iter()
        .filter(|l| l.t >= -30.0 && l.t <= c.duration.as_secs_f64() + 30.0)
        .collect();
    log.sort_by(|a, b| a.t.total_cmp(&b.t));
    let grace_s = (GRACE_SECONDS as f64).max(2.0 * sampled.stats_lag_max.unwrap_or(0) as f64);
    let broker_up = sampled
        .dest_up_at
        .filter(|_| !sampled.dest_up_at_first_probe)
        .map(|t| t - flip);
    let attribution = phases
        .iter()
        .flat_map(|p| {
            let window = (p.start_s, p.start_s + p.seconds);
            // Preparing an upgrade: before and after the new broker first answered. The last
            // phase before the end: before the source's access was revoked, the grace period
            // from there, and after it.
            let revoked = log
                .iter()
                .find(|l| {
                    l.step.as_deref() == Some("RevokeAll") && l.t >= window.0 && l.t < window.1
                })
                .map(|l| l.t);
            match (p.phase.as_str(), broker_up, revoked) {
                ("PreparingDestination", Some(up), _) => bench::attribute_parts(
                    &p.phase,
                    window,
                    &[
                        (window.0, "destination broker not answering yet"),
                        (up, "destination broker answering"),
                    ],
                    &log,
                ),
                ("DestinationOnly", _, Some(r)) => bench::attribute_parts(
                    &p.phase,
                    window,
                    &[
                        (window.0, "before revoking the source"),
                        (r, "grace period"),
                        (r + grace_s, "after the grace period"),
                    ],
                    &log,
                ),
                _ => bench::attribute_phase(&p.phase, window, &log),
            }
        })
        .collect();
    let drain_start = phases
        .iter()
        .find(|p| p.phase == MigrationPhase::DrainingSource.as_str())
        .map(|p| p.start_s);
    let samples: Vec<bench::Sample> = sampled
        .samples
        .iter()
        .map(|(t, p, r, b)| bench::Sample {
            t: t - flip,
            publish_rate: *p,
            consume_rate: *r,
            source_backlog: *b,
        })
        .collect();
    let backlog_at_drain_start = drain_start.and_then(|d| {
        samples
            .iter()
            .filter(|s| s.t <= d)
            .filter_map(|s| s.source_backlog)
            .next_back()
    });
    let provisioning_s = match sampled.dest_up_at {
        Some(_) if sampled.dest_up_at_first_probe => 0.0,
        Some(t) => (t - flip).max(0.0),
        None => 0.0,
    };
    let drain_s = phase_secs(&c, MigrationPhase::DrainingSource);
    let total_s = c.duration.as_secs_f64();
    let resumed: Vec<f64> = resumes
        .iter()
        .filter_map(|r| r.resumed_after.map(|d| d.as_secs_f64()))
        .collect();
    let mut run = bench::ConversionRun {
        from: from.as_str().into(),
        to: to.as_str().into(),
        drain: drain.into(),
        backlog_at_flip,
        backlog_at_drain_start,
        sent: report.stats.sent,
        confirmed: report.stats.confirmed,
        received: report.stats.received,
        lost: report.lost,
        duplicates: report.duplicates,
        reconnects: report.stats.reconnects,
        max_write_gap_s: report.stats.max_confirm_gap.as_secs_f64(),
        consumer_never_resumed: (resumes.len() - resumed.len()) as u64,
        consumer_resumes_s: resumed,
        total_s,
        phases,
        provisioning_s,
        drain_s,
        grace_s,
        overhead_s: total_s - provisioning_s - drain_s - grace_s,
        drain_throughput: match backlog_at_drain_start {
            Some(b) if drain_s > 0.0 => Some(b as f64 / drain_s),
            _ => None,
        },
        attribution,
        samples,
        longest_delivery_gap_s: 0.0,
    };
    run.longest_delivery_gap_s = run.delivery_gap_from_samples();
    Ok(run)
}

/// [`BENCH_PARKED`] messages parked on the shared broker (no publisher, no consumer), moved by a
/// Shovel upgrade, counted on the destination; then as many moved by a raw shovel between the
/// same two brokers.
async fn parked_drain(
    world: &mut World,
    target: &tiermq_tests::load::AmqpTarget,
    shared_mc: &tiermq_broker::ManagementClient,
    t0: Instant,
) -> anyhow::Result<bench::ParkedDrain> {
    let filled = fill(target, "parked", BENCH_PARKED).await?;
    let messages = filled.stats().confirmed;
    step(
        t0,
        &format!("Shovel: converting to Dedicated with {messages} messages parked"),
    );
    let c = scenario::convert(
        world,
        NS,
        NAME,
        Tier::Dedicated,
        &filled,
        Duration::from_secs(300),
        None,
    )
    .await?;
    drop(filled);
    let probe = tiermq_tests::load::QueueProbe::open(target).await?;
    let at_destination = u64::from(probe.ready("parked").await?);
    probe.close().await;
    let drain_s = phase_secs(&c, MigrationPhase::DrainingSource);
    step(
        t0,
        &format!(
            "parked backlog: DrainingSource {drain_s:.2}s, {at_destination} of {messages} on the destination"
        ),
    );
    let dedicated_mc = world.management(NS, "orders-dedicated").await?;
    let raw = match raw_shovel(world, shared_mc, &dedicated_mc, BENCH_PARKED, t0).await {
        Ok(r) => Some(r),
        Err(e) => {
            step(
                t0,
                &format!("raw shovel with the parked backlog failed: {e:#}"),
            );
            None
        }
    };
    Ok(bench::ParkedDrain {
        messages,
        at_destination,
        drain_s,
        total_s: c.duration.as_secs_f64(),
        raw,
    })
}

/// The instances' grace period in the bench.
const GRACE_SECONDS: u32 = 5;

/// A vhost with a `bench` user on a broker, for the baselines.
async fn baseline_vhost(
    mc: &tiermq_broker::ManagementClient,
    vhost: &str,
    password: &str,
) -> anyhow::Result<()> {
    mc.put_vhost(vhost).await?;
    mc.put_user("bench", &tiermq_broker::Secret::new(password), &[])
        .await?;
    mc.put_permissions(
        vhost,
        "bench",
        &tiermq_broker::model::Permissions {
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        },
    )
    .await?;
    Ok(())
}

/// A cluster Service's ClusterIP.
async fn cluster_ip(world: &World, ns: &str, svc: &str) -> anyhow::Result<String> {
    let ip = world
        .kubectl
        .ok(
            &[
                "-n",
                ns,
                "get",
                "svc",
                svc,
                "-o",
                "jsonpath={.spec.clusterIP}",
            ],
            None,
        )
        .await?;
    Ok(ip.trim().to_string())
}

/// Fills `queue` in `target` with `n` confirmed messages (2 publishers, as fast as confirms
/// allow, no consumers) and returns the load, still holding its ledger.
async fn fill(
    target: &tiermq_tests::load::AmqpTarget,
    queue: &str,
    n: u64,
) -> anyhow::Result<Load> {
    let mut cfg = LoadConfig::steady(target.clone(), queue, n.div_ceil(2), 1.0);
    cfg.name = format!("bench-fill-{queue}");
    cfg.queue = queue.into();
    cfg.consumers = 0;
    cfg.prefetch = 10;
    cfg.consumer_delay = BENCH_CONSUMER_DELAY;
    cfg.publish_interval = Duration::ZERO;
    cfg.confirm_window = 64;
    cfg.max_duration = Duration::from_secs(120 + n / 500);
    let load = Load::start(cfg).await?;
    // At least 1,000 msg/s, which a debug build on a busy 2-core machine still reaches.
    let limit = Duration::from_secs(60 + n / 1000);
    let until = Instant::now() + limit;
    while !load.publishing_done() {
        if Instant::now() > until {
            bail!("filling {queue} took over {} s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(load)
}

/// Baseline (b): a dynamic shovel declared directly on the shared broker, moving `n` messages
/// to the dedicated broker with the operator's settings (on-confirm, prefetch 1000, delete after
/// queue-length). Timed from the declaration until the destination queue holds all of them
/// (passive declares every 20 ms).
async fn raw_shovel(
    world: &World,
    src: &tiermq_broker::ManagementClient,
    dst: &tiermq_broker::ManagementClient,
    n: u64,
    t0: Instant,
) -> anyhow::Result<bench::RawDrain> {
    let (vhost, pw) = ("bench-raw", "bench-baseline-pw");
    baseline_vhost(src, vhost, pw).await?;
    baseline_vhost(dst, vhost, pw).await?;
    let src_ip = cluster_ip(world, "tiermq-system", "main").await?;
    let dst_ip = cluster_ip(world, NS, "orders-dedicated").await?;
    let src_t = tiermq_tests::load::AmqpTarget::from_parts(&src_ip, 5672, vhost, "bench", pw)?;
    let dst_t = tiermq_tests::load::AmqpTarget::from_parts(&dst_ip, 5672, vhost, "bench", pw)?;
    let filled = fill(&src_t, "raw-shovel", n).await?;
    let messages = filled.stats().confirmed;
    drop(filled);
    tiermq_tests::load::declare_queue(&dst_t, "raw-shovel").await?;
    let probe = tiermq_tests::load::QueueProbe::open(&dst_t).await?;
    let spec = tiermq_broker::model::ShovelSpec {
        src_uri: tiermq_broker::Secret::new(format!("amqp:///{vhost}")),
        src_queue: "raw-shovel".into(),
        dest_uri: tiermq_broker::Secret::new(format!("amqp://bench:{pw}@{dst_ip}:5672/{vhost}")),
        dest_queue: "raw-shovel".into(),
        ack_mode: "on-confirm".into(),
        src_delete_after: Some("queue-length".into()),
        prefetch: Some(1000),
    };
    let started = Instant::now();
    src.put_shovel(vhost, "raw-shovel", &spec).await?;
    loop {
        if u64::from(probe.ready("raw-shovel").await?) >= messages {
            break;
        }
        let limit = Duration::from_secs(60 + n / 1000);
        if started.elapsed() > limit {
            bail!(
                "the raw shovel did not move {messages} messages within {} s",
                limit.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    probe.close().await;
    let _ = src.delete_vhost(vhost).await;
    let _ = dst.delete_vhost(vhost).await;
    step(
        t0,
        &format!("baseline raw shovel: {messages} messages in {seconds:.2}s"),
    );
    Ok(bench::RawDrain { messages, seconds })
}

/// Baseline (c): the bench's consumers (same count, prefetch and per-message time) draining a
/// backlog of `n` on the shared broker with no publisher and no operator; timed from their
/// start until every message was consumed and acknowledged.
async fn raw_consumer(
    world: &World,
    src: &tiermq_broker::ManagementClient,
    n: u64,
) -> anyhow::Result<bench::RawDrain> {
    let (vhost, pw) = ("bench-raw-consume", "bench-baseline-pw");
    baseline_vhost(src, vhost, pw).await?;
    let ip = cluster_ip(world, "tiermq-system", "main").await?;
    let t = tiermq_tests::load::AmqpTarget::from_parts(&ip, 5672, vhost, "bench", pw)?;
    let mut load = fill(&t, "raw-consume", n).await?;
    let messages = load.stats().confirmed;
    let started = Instant::now();
    load.add_consumers(BENCH_CONSUMERS);
    while load.stats().received < messages {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the raw consumers did not drain {messages} messages within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let report = load.finish(Duration::from_secs(10)).await;
    if report.lost > 0 {
        bail!("the raw consumer baseline lost {} messages", report.lost);
    }
    let _ = src.delete_vhost(vhost).await;
    Ok(bench::RawDrain { messages, seconds })
}

/// The `bench-naive` Service and its EndpointSlice pointing at the broker pods of `cluster`.
async fn naive_route(world: &World, ns: &str, cluster: &str) -> anyhow::Result<()> {
    let ips = world
        .kubectl
        .ok(
            &[
                "-n",
                ns,
                "get",
                "pods",
                "-l",
                &format!("tiermq.io/cluster={cluster}"),
                "-o",
                "jsonpath={.items[*].status.podIP}",
            ],
            None,
        )
        .await?;
    let endpoints: String = ips
        .split_whitespace()
        .map(|ip| {
            format!("- addresses: [\"{ip}\"]\n  conditions: {{ready: true, serving: true, terminating: false}}\n")
        })
        .collect();
    if endpoints.is_empty() {
        bail!("no pod of cluster {ns}/{cluster} has an address");
    }
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: bench-naive\n  namespace: {NS}\nspec:\n  ports:\n  - name: amqp\n    port: 5672\n    protocol: TCP\n---\n\
apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: bench-naive-1\n  namespace: {NS}\n  labels:\n    kubernetes.io/service-name: bench-naive\naddressType: IPv4\nports:\n- name: amqp\n  port: 5672\n  protocol: TCP\nendpoints:\n{endpoints}"
    );
    world.kubectl.apply(&yaml).await?;
    Ok(())
}

/// Baseline (a): the naive cutover. The bench load runs through a Service of its own
/// (`bench-naive`) to a vhost on the shared broker; after the same backlog time the consumers
/// start, and one second later the Service is repointed to the dedicated broker (whose vhost and
/// queue already exist: the topology was "copied") and the source vhost is deleted, backlog and
/// all, without draining. The ledger counts what that loses.
async fn naive_cutover(
    world: &World,
    src: &tiermq_broker::ManagementClient,
    dst: &tiermq_broker::ManagementClient,
) -> anyhow::Result<bench::NaiveCutover> {
    let (vhost, pw) = ("bench-naive", "bench-baseline-pw");
    baseline_vhost(src, vhost, pw).await?;
    baseline_vhost(dst, vhost, pw).await?;
    let dst_ip = cluster_ip(world, NS, "orders-dedicated").await?;
    let dst_t = tiermq_tests::load::AmqpTarget::from_parts(&dst_ip, 5672, vhost, "bench", pw)?;
    tiermq_tests::load::declare_queue(&dst_t, "orders").await?;
    naive_route(world, "tiermq-system", "main").await?;
    let ip = cluster_ip(world, NS, "bench-naive").await?;
    let t = tiermq_tests::load::AmqpTarget::from_parts(&ip, 5672, vhost, "bench", pw)?;
    // kube-proxy picks the new Service up asynchronously.
    let until = Instant::now() + Duration::from_secs(20);
    while tiermq_tests::load::declare_queue(&t, "orders")
        .await
        .is_err()
    {
        if Instant::now() > until {
            bail!("the bench-naive Service did not route within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut load = Load::start(bench_load(&t, "bench-naive")).await?;
    tokio::time::sleep(Duration::from_secs(BENCH_BACKLOG_SECS)).await;
    load.add_consumers(BENCH_CONSUMERS);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let backlog_at_cutover = load.stats().unconsumed;
    naive_route(world, NS, "orders-dedicated").await?;
    src.delete_vhost(vhost).await?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    load.stop_publishing();
    // What was deleted with the source never comes; the rest arrives within seconds.
    let report = load.finish(Duration::from_secs(30)).await;
    let _ = world
        .kubectl
        .ok(
            &[
                "-n",
                NS,
                "delete",
                "svc",
                "bench-naive",
                "--ignore-not-found",
            ],
            None,
        )
        .await;
    let _ = world
        .kubectl
        .ok(
            &[
                "-n",
                NS,
                "delete",
                "endpointslice",
                "bench-naive-1",
                "--ignore-not-found",
            ],
            None,
        )
        .await;
    let _ = dst.delete_vhost(vhost).await;
    Ok(bench::NaiveCutover {
        backlog_at_cutover,
        confirmed: report.stats.confirmed,
        received: report.stats.received,
        lost: report.lost,
        duplicates: report.duplicates,
        max_write_gap_s: report.stats.max_confirm_gap.as_secs_f64(),
    })
}

async fn bench(common: &Common, out: &BenchOut) -> anyhow::Result<()> {
    let t0 = Instant::now();
    if std::env::var("TIERMQ_OPERATOR_LOG").is_err() {
        eprintln!(
            "note: TIERMQ_OPERATOR_LOG is not set; the phase attribution needs the controller's debug lines (make bench sets TIERMQ_OPERATOR_LOG=info,tiermq_operator::controller=debug)"
        );
    }
    let mut world = bring_up(common, "Consume", t0).await?;
    let target = world.instance_target(NS, NAME).await?;
    let shared_mc = world.management("tiermq-system", "main").await?;
    let rabbitmq = shared_mc
        .overview()
        .await
        .map(|o| o.rabbitmq_version)
        .unwrap_or_else(|e| format!("unknown ({e})"));
    let mut results = bench::BenchResults {
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        commit: bench::commit(),
        machine: bench::Machine::detect(),
        rabbitmq,
        profile: out.profile.clone(),
        load: format!(
            "per conversion: 2 publishers x {BENCH_RATE} msg/s with confirms (64-byte messages) through the instance Service; {BENCH_CONSUMERS} consumers (prefetch 10, manual acks, {} ms per message) start with the flip, after {BENCH_BACKLOG_SECS} s of publishing without them (the backlog); grace period {GRACE_SECONDS} s, operator drain poll 1 s, broker statistics every 500 ms",
            BENCH_CONSUMER_DELAY.as_millis()
        ),
        ..Default::default()
    };
    let shared_tp = throughput(&target, "bench-shared").await?;
    results
        .publish_throughput
        .push(("shared".into(), shared_tp));
    step(
        t0,
        &format!("publish throughput on the shared cluster: {shared_tp:.0} msg/s"),
    );
    for drain in ["Consume", "Shovel"] {
        tiermq_tests::harness::patch_instance(
            &world.kubectl,
            NS,
            NAME,
            &format!("{{\"spec\":{{\"migration\":{{\"drainStrategy\":\"{drain}\"}}}}}}"),
        )
        .await?;
        for to in [Tier::Dedicated, Tier::Shared] {
            let run = bench_conversion(&mut world, &target, drain, to, t0).await?;
            let backlog = run.backlog_at_flip;
            results.conversions.push(run);
            if to == Tier::Dedicated && drain == "Consume" {
                // Both brokers run now: the throughput of the dedicated one and the baselines.
                let tp = throughput(&target, "bench-dedicated").await?;
                results.publish_throughput.push(("dedicated".into(), tp));
                step(
                    t0,
                    &format!("publish throughput on the dedicated cluster: {tp:.0} msg/s"),
                );
                let dedicated_mc = world.management(NS, "orders-dedicated").await?;
                match naive_cutover(&world, &shared_mc, &dedicated_mc).await {
                    Ok(n) => {
                        step(
                            t0,
                            &format!(
                                "baseline naive cutover: backlog {} at the cutover, lost {}",
                                n.backlog_at_cutover, n.lost
                            ),
                        );
                        results.baselines.naive_cutover = Some(n);
                    }
                    Err(e) => results
                        .notes
                        .push(format!("naive cutover not measured: {e:#}")),
                }
                match raw_shovel(&world, &shared_mc, &dedicated_mc, backlog, t0).await {
                    Ok(r) => results.baselines.raw_shovel = Some(r),
                    Err(e) => results
                        .notes
                        .push(format!("raw shovel not measured: {e:#}")),
                }
                match raw_consumer(&world, &shared_mc, backlog).await {
                    Ok(r) => {
                        step(
                            t0,
                            &format!(
                                "baseline raw consumer: {} messages in {:.2}s",
                                r.messages, r.seconds
                            ),
                        );
                        results.baselines.raw_consumer = Some(r);
                    }
                    Err(e) => results
                        .notes
                        .push(format!("raw consumer not measured: {e:#}")),
                }
            }
        }
    }
    // The instance is on the shared tier again, draining by Shovel.
    match parked_drain(&mut world, &target, &shared_mc, t0).await {
        Ok(p) => results.parked = Some(p),
        Err(e) => results
            .notes
            .push(format!("parked backlog not measured: {e:#}")),
    }
    results.methods = bench_methods();
    results.machine.load_at_end = bench::load_average();
    write_bench(&results, out)?;
    step(
        t0,
        &format!(
            "report written to {}, {} and {}",
            out.out.display(),
            out.json.display(),
            out.svg_dir.display()
        ),
    );
    let World {
        operator, cluster, ..
    } = world;
    drop(operator);
    cluster.shutdown().await;
    Ok(())
}

/// Writes the report, the JSON file and the plots.
fn write_bench(results: &bench::BenchResults, out: &BenchOut) -> anyhow::Result<()> {
    std::fs::create_dir_all(&out.svg_dir)?;
    let mut svgs = Vec::new();
    for c in &results.conversions {
        let name = format!(
            "{}-{}-to-{}.svg",
            c.drain.to_lowercase(),
            c.from.to_lowercase(),
            c.to.to_lowercase()
        );
        let path = out.svg_dir.join(&name);
        let svg = bench::render_svg(c).map_err(|e| anyhow::anyhow!("plot {name}: {e}"))?;
        std::fs::write(&path, svg).with_context(|| format!("write {}", path.display()))?;
        // Linked relative to the report's folder when the plot is below it.
        let base = out.out.parent().unwrap_or(Path::new(""));
        let link = if base.as_os_str().is_empty() {
            path.clone()
        } else {
            path.strip_prefix(base)
                .map(Path::to_path_buf)
                .unwrap_or(path.clone())
        };
        svgs.push(link.display().to_string());
    }
    let text = bench::render_markdown(results, &svgs);
    for (path, body) in [
        (&out.out, text.clone()),
        (&out.json, bench::render_json(results)),
    ] {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, body).with_context(|| format!("write {}", path.display()))?;
    }
    println!("{text}");
    Ok(())
}

/// Writes the scale report and its JSON file.
fn write_scale(
    r: &tiermq_tests::scale::ScaleResults,
    out: &Path,
    json: &Path,
) -> anyhow::Result<()> {
    let text = tiermq_tests::scale::render_markdown(r, &tiermq_tests::scale::run::file_name(json));
    for (path, body) in [
        (out, text.clone()),
        (json, tiermq_tests::scale::render_json(r)),
    ] {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, body).with_context(|| format!("write {}", path.display()))?;
    }
    println!("{text}");
    Ok(())
}

/// How each figure of the bench is measured (goes into the report and the JSON).
fn bench_methods() -> Vec<(String, String)> {
    [
        ("lost, duplicates", "the load's ledger: every message has a unique id; lost = confirmed by the broker and never consumed (acked) by the end of the run (consumers get up to 120 s after publishing stops); duplicates = deliveries of an id consumed before"),
        ("longest write gap", "the longest time between two consecutive publisher confirms (any publisher) during the load"),
        ("consumer close -> consuming", "per consumer outage: from the moment the client saw its connection or channel closed (connection error event or failed operation) until that consumer's next delivery; closes with no delivery in between count as one outage from the first"),
        ("longest time without deliveries", "from the timeline: the longest stretch from the last 250 ms sample with deliveries to the next one with deliveries, once consuming had started (e.g. consumers left on an emptied source while the Shovel drain runs)"),
        ("time per phase, total", "a watch on the RabbitMQInstance records when each status.migrationPhase was first seen; total = flip (kubectl patch) until Stable on the new tier with the conversion in status.history"),
        ("provisioning", "flip until the destination broker's management API first answered (overview call, probed every 250 ms with the admin login from the cluster's Secret); 0 when it answered at the first probe (the shared cluster on a downgrade)"),
        ("drain", "time in DrainingSource"),
        ("grace", "the grace period the operator applies: max(spec.migration.gracePeriodSeconds, 2 x status.migration.statsLagSeconds as sampled during the conversion)"),
        ("overhead", "total - provisioning - drain - grace: operator passes, requeue intervals, topology copy, cutover, settle times"),
        ("drain throughput", "source queue depth (management API, last sample before DrainingSource) / DrainingSource time"),
        ("attribution", "the operator's JSON log at debug level for tiermq_operator::controller: each pass logs `pass started`, `planned`, `running step` per step, `status recorded`, `pass done` (with its requeue delay); the time from one such line to the next is the activity the first began, cut to the phase window the watch saw"),
        ("raw shovel", "a dynamic shovel declared with the management API on the shared broker with the operator's settings, moving the same backlog (as many messages as the Consume upgrade had at its flip) to the dedicated broker; from the declaration until a passive queue.declare on the destination counts them all (polled every 20 ms)"),
        ("parked backlog", "after the four conversions: 100,000 confirmed 64-byte messages published through the instance Service into a queue with no consumer, then a Shovel upgrade with no load; DrainingSource as the watch saw it, the destination queue counted by a passive queue.declare through the Service once Stable; then a raw shovel (as above) with as many messages between the same two brokers. Shovel drain / raw shovel = (messages / DrainingSource) / (messages / raw shovel time)"),
        ("raw consumer", "the bench's consumers (same count, prefetch, per-message time) draining the same backlog on the shared broker without publishers or operator; from their start until all were acked"),
        ("naive cutover", "the same load through a Service of the bench's own; at the point the conversions flip, consumers start and 1 s later the Service's EndpointSlice is repointed to the dedicated broker (vhost and queue already there) and the source vhost is deleted; clients reconnect through the Service; lost counted by the ledger"),
        ("timeline", "every 250 ms: confirms/s and acked deliveries/s from the load's counters, the source queue's depth from the management API (broker statistics every 500 ms, so it lags by up to that)"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Where the bench writes.
struct BenchOut {
    out: PathBuf,
    json: PathBuf,
    svg_dir: PathBuf,
    profile: String,
}

/// Confirmed messages per second of one publisher with 64 messages in flight, 5 s.
async fn throughput(target: &tiermq_tests::load::AmqpTarget, queue: &str) -> anyhow::Result<f64> {
    let mut cfg = LoadConfig::steady(target.clone(), queue, 1_000_000, 1.0);
    cfg.name = queue.into();
    cfg.publishers = 1;
    cfg.consumers = 1;
    cfg.prefetch = 200;
    cfg.publish_interval = Duration::ZERO;
    cfg.confirm_window = 64;
    cfg.max_duration = Duration::from_secs(30);
    let load = Load::start(cfg).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let n = load.stats().confirmed;
    let secs = load.elapsed().as_secs_f64();
    load.stop_publishing();
    let report = load.finish(Duration::from_secs(30)).await;
    if report.lost > 0 {
        bail!("throughput run lost {} messages", report.lost);
    }
    Ok(n as f64 / secs)
}

fn phase_secs(c: &Conversion, p: MigrationPhase) -> f64 {
    c.phase_times
        .iter()
        .filter(|(q, _)| *q == p)
        .map(|(_, d)| d.as_secs_f64())
        .sum()
}
