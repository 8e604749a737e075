//! `tiermq-demo`: the whole product on one machine, in a few minutes.
//!
//! `tiermq-demo` (or `tiermq-demo run`) starts a kubesim cluster in this process, applies the CRDs,
//! a SharedCluster and an instance with kubectl, starts the operator binary, runs a small steady
//! AMQP load of several client patterns (by default a work queue and fanout pub/sub) through the
//! instance Service and converts the instance shared → dedicated → shared, printing live progress,
//! a per-pattern table (sent, confirmed, received, lost, duplicates) and a summary. `tiermq-demo bench` measures Consume vs Shovel
//! drains and shared vs dedicated publish throughput side by side and writes a report.
//!
//! It builds nothing: the operator binary must exist (`cargo build -p tiermq-operator`; by default
//! it is looked up next to this executable). Everything it starts — brokers, the operator, the
//! API server — is stopped on exit, on Ctrl-C and on SIGTERM.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tiermq_crd::{MigrationPhase, Tier};
use tiermq_tests::harness::{InstanceSpec, World, shared_cluster_yaml_with};
use tiermq_tests::load::{
    Load, LoadConfig, LoadReport, Pattern, Workload, WorkloadConfig, WorkloadReport,
};
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
    /// Consume vs Shovel and shared vs dedicated throughput, side by side; writes a report.
    Bench {
        /// Report file (Markdown).
        #[arg(long, default_value = "target/bench-report.md")]
        out: PathBuf,
    },
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,lapin=off")),
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
            Cmd::Bench { out } => bench(&common, &out).await,
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
        grace_period_seconds: 5,
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

/// One measured conversion for the bench.
struct BenchRow {
    drain: String,
    conversion: Conversion,
    report: LoadReport,
    backlog_at_flip: u64,
}

async fn bench(common: &Common, out: &Path) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mut world = bring_up(common, "Consume", t0).await?;
    let target = world.instance_target(NS, NAME).await?;

    let shared_tp = throughput(&target, "bench-shared").await?;
    step(
        t0,
        &format!("publish throughput on the shared cluster: {shared_tp:.0} msg/s"),
    );

    let mut rows = Vec::new();
    let mut dedicated_tp = None;
    for drain in ["Consume", "Shovel"] {
        world
            .kubectl
            .ok(
                &[
                    "-n",
                    NS,
                    "patch",
                    "rmqi",
                    NAME,
                    "--type",
                    "merge",
                    "-p",
                    &format!("{{\"spec\":{{\"migration\":{{\"drainStrategy\":\"{drain}\"}}}}}}"),
                ],
                None,
            )
            .await?;
        for to in [Tier::Dedicated, Tier::Shared] {
            // A backlog waits on the source at the flip (consumers start only then), which is
            // where the drain strategies differ; afterwards consumers are faster than publishers.
            let mut cfg = LoadConfig::steady(target.clone(), "orders", 100_000, 40.0);
            cfg.name = format!("bench-{drain}-{to}");
            cfg.consumers = 0;
            cfg.prefetch = 10;
            cfg.consumer_delay = Duration::from_millis(5);
            cfg.max_duration = Duration::from_secs(200);
            cfg.backoff_max = Duration::from_secs(1);
            let mut load = Load::start(cfg).await?;
            tokio::time::sleep(Duration::from_secs(10)).await;
            let backlog_at_flip = load.stats().unconsumed;
            load.add_consumers(2);
            step(
                t0,
                &format!("{drain}: converting to {to} with ~{backlog_at_flip} messages waiting"),
            );
            let mut print = |l: &str| println!("   {l}");
            let c = scenario::convert(
                &mut world,
                NS,
                NAME,
                to,
                &load,
                Duration::from_secs(180),
                Some(&mut print),
            )
            .await?;
            load.stop_publishing();
            let report = load.finish(Duration::from_secs(120)).await;
            step(
                t0,
                &format!(
                    "{drain} -> {to}: {:.1}s, {report}",
                    c.duration.as_secs_f64()
                ),
            );
            if to == Tier::Dedicated && dedicated_tp.is_none() {
                let tp = throughput(&target, "bench-dedicated").await?;
                step(
                    t0,
                    &format!("publish throughput on the dedicated cluster: {tp:.0} msg/s"),
                );
                dedicated_tp = Some(tp);
            }
            rows.push(BenchRow {
                drain: drain.into(),
                conversion: c,
                report,
                backlog_at_flip,
            });
        }
    }
    let text = bench_report(&rows, shared_tp, dedicated_tp.unwrap_or(0.0));
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(out, &text).with_context(|| format!("write {}", out.display()))?;
    println!("{text}");
    step(t0, &format!("report written to {}", out.display()));
    let World {
        operator, cluster, ..
    } = world;
    drop(operator);
    cluster.shutdown().await;
    Ok(())
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

fn bench_report(rows: &[BenchRow], shared_tp: f64, dedicated_tp: f64) -> String {
    let mut s = String::new();
    s.push_str("# tiermq bench: Consume vs Shovel drain, shared vs dedicated throughput\n\n");
    s.push_str(&format!(
        "Measured side by side in one run on kubesim ({}), one broker per cluster, debug builds. \
Load per conversion: 2 publishers x 40 msg/s with confirms for 10 s without consumers (the backlog at the flip), \
then 2 consumers (prefetch 10, 5 ms per message) start together with the flip.\n\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    ));
    s.push_str("| drain | conversion | backlog at flip | total | DrainingSource | DestinationOnly | reconnects | longest publish stall | lost | duplicates |\n");
    s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let c = &r.conversion;
        s.push_str(&format!(
            "| {} | {} -> {} | {} | {:.1}s | {:.1}s | {:.1}s | {} | {:.1}s | {} | {} |\n",
            r.drain,
            c.from,
            c.to,
            r.backlog_at_flip,
            c.duration.as_secs_f64(),
            phase_secs(c, MigrationPhase::DrainingSource),
            phase_secs(c, MigrationPhase::DestinationOnly),
            r.report.stats.reconnects,
            r.report.stats.max_confirm_gap.as_secs_f64(),
            r.report.lost,
            r.report.duplicates
        ));
    }
    s.push_str("\n## Ratios (Shovel / Consume, same direction)\n\n");
    for to in [Tier::Dedicated, Tier::Shared] {
        let find = |d: &str| rows.iter().find(|r| r.drain == d && r.conversion.to == to);
        if let (Some(c), Some(sv)) = (find("Consume"), find("Shovel")) {
            let ratio = |a: f64, b: f64| {
                if b > 0.0 {
                    format!("{:.2}", a / b)
                } else {
                    "n/a".into()
                }
            };
            s.push_str(&format!(
                "- to {to}: total time {} , drain phase {}, longest publish stall {}\n",
                ratio(
                    sv.conversion.duration.as_secs_f64(),
                    c.conversion.duration.as_secs_f64()
                ),
                ratio(
                    phase_secs(&sv.conversion, MigrationPhase::DrainingSource),
                    phase_secs(&c.conversion, MigrationPhase::DrainingSource)
                ),
                ratio(
                    sv.report.stats.max_confirm_gap.as_secs_f64(),
                    c.report.stats.max_confirm_gap.as_secs_f64()
                ),
            ));
        }
    }
    s.push_str(&format!(
        "\n## Publish throughput (1 publisher, 64 in flight, 5 s)\n\n- shared: {shared_tp:.0} msg/s\n- dedicated: {dedicated_tp:.0} msg/s\n- dedicated / shared: {}\n",
        if shared_tp > 0.0 { format!("{:.2}", dedicated_tp / shared_tp) } else { "n/a".into() }
    ));
    s.push_str("\nBoth clusters run on the same 2-core machine, so throughput differences reflect broker and proxy overhead, not isolation from other tenants.\n");
    s
}
