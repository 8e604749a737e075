//! The scale run itself: kubesim, a few SharedClusters, the operator binary, N shared-tier
//! instances, an idle minute, then many conversions at once with AMQP load on a few of them.
//! Every wait is bounded; everything started is stopped when the [`World`] drops.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use tiermq_crd::{InstancePhase, MigrationPhase, RabbitMQInstance, SharedCluster, Tier};

use super::*;
use crate::bench::load_average;
use crate::harness::{World, shared_cluster_yaml_with};
use crate::load::{Load, LoadConfig, LoadReport};

/// Erlang VM flags for many mostly idle nodes on a small machine: one scheduler per node (the
/// default is one per core) and no busy-waiting of the schedulers (RabbitMQ 3.10's start script
/// already passes the three `+sbwt*` flags, so there only `+S 1:1` changes anything).
pub const LEAN_ERL_ARGS: &str = "+S 1:1 +sbwt none +sbwtdcpu none +sbwtdio none";

/// What `tiermq-demo scale` was asked to do.
#[derive(Clone, Debug)]
pub struct ScaleOptions {
    /// State folder (emptied by the caller).
    pub dir: PathBuf,
    pub operator_bin: PathBuf,
    pub image: String,
    pub profile: String,
    pub instances: usize,
    pub shared_clusters: usize,
    pub per_namespace: usize,
    pub conversions: usize,
    pub loaded: usize,
    /// Start brokers with [`LEAN_ERL_ARGS`].
    pub lean_brokers: bool,
    pub converge_limit: Duration,
    pub convert_limit: Duration,
    pub idle: Duration,
    /// Messages per second per publisher on each loaded instance (2 publishers).
    pub load_rate: f64,
    /// Kill and start the operator again over the steady instances before the conversions.
    pub restart: bool,
    /// The operator's `--max-concurrent-conversions` (0: unbounded).
    pub max_concurrent_conversions: u16,
    /// (Markdown, JSON): where the results so far are written after each stage, so a run cut
    /// short still leaves its figures (with a note saying where it stopped).
    pub partial_out: Option<(PathBuf, PathBuf)>,
}

/// The last component of `p`, for a link between files side by side.
pub fn file_name(p: &std::path::Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Writes the results so far to `o.partial_out` with a note naming the last stage done.
fn write_partial(o: &ScaleOptions, r: &ScaleResults, stage: &str) {
    let Some((md, json)) = &o.partial_out else {
        return;
    };
    let mut partial = r.clone();
    partial.machine.load_at_end = load_average();
    partial.notes.push(format!(
        "partial results: the run had finished up to {stage} when this was written"
    ));
    for (path, body) in [
        (md, render_markdown(&partial, &file_name(json))),
        (json, render_json(&partial)),
    ] {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(path, body);
    }
}

fn step(t0: Instant, what: &str) {
    println!("[{:>6.1}s] {what}", t0.elapsed().as_secs_f64());
}

fn settled(i: &RabbitMQInstance, tier: Tier) -> bool {
    i.status.as_ref().is_some_and(|s| {
        s.phase == Some(InstancePhase::Ready)
            && matches!(s.migration_phase, None | Some(MigrationPhase::Stable))
            && s.tier == Some(tier)
    })
}

fn key(i: &RabbitMQInstance) -> String {
    format!(
        "{}/{}",
        i.metadata.namespace.as_deref().unwrap_or_default(),
        i.metadata.name.as_deref().unwrap_or_default()
    )
}

async fn scrape(addr: &str) -> anyhow::Result<String> {
    let url = format!("http://{addr}/metrics");
    let r = tiermq_testkit::tls::http_client()
        .get(&url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    Ok(r.text().await?)
}

fn latency_point(page: &str, when: &str) -> LatencyPoint {
    let b = histogram_buckets(
        page,
        "tiermq_reconcile_duration_seconds",
        "controller=\"instance\"",
    );
    LatencyPoint {
        when: when.into(),
        count: b.last().map(|x| x.1).unwrap_or(0.0),
        p50_s: histogram_quantile(0.5, &b),
        p99_s: histogram_quantile(0.99, &b),
        p99_above_buckets: above_buckets(0.99, &b),
    }
}

/// A shared broker's management API as the bench reads it: URL and admin login.
struct Mgmt {
    cluster: String,
    url: String,
    user: String,
    pass: String,
}

async fn mgmt_of(client: &kube::Client, cluster: &str) -> anyhow::Result<Mgmt> {
    let ns = "tiermq-system";
    let s = Api::<Secret>::namespaced(client.clone(), ns)
        .get(&format!("{cluster}-admin"))
        .await?;
    let data = s.data.unwrap_or_default();
    let val = |k: &str| {
        data.get(k)
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .with_context(|| format!("{cluster}-admin has no {k}"))
    };
    let ip = Api::<Service>::namespaced(client.clone(), ns)
        .get(cluster)
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .context("no ClusterIP")?;
    Ok(Mgmt {
        cluster: cluster.into(),
        url: format!("http://{ip}:15672/api/overview"),
        user: val("username")?,
        pass: val("password")?,
    })
}

async fn overview(m: &Mgmt) -> anyhow::Result<serde_json::Value> {
    Ok(tiermq_testkit::tls::http_client()
        .get(&m.url)
        .basic_auth(&m.user, Some(&m.pass))
        .timeout(Duration::from_secs(5))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

fn load1() -> f64 {
    load_average()
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Runs the whole scale bench; the caller writes the results.
pub async fn run(o: &ScaleOptions) -> anyhow::Result<ScaleResults> {
    let t0 = Instant::now();
    let me = std::process::id();
    let mut r = ScaleResults {
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        commit: crate::bench::commit(),
        machine: Machine::detect(),
        profile: o.profile.clone(),
        instances: o.instances,
        shared_clusters: o.shared_clusters,
        namespaces: o.instances.div_ceil(o.per_namespace.max(1)),
        broker_erl_args: if o.lean_brokers {
            LEAN_ERL_ARGS.into()
        } else {
            String::new()
        },
        methods: methods(),
        ..Default::default()
    };
    let max_brokers = o.shared_clusters + o.conversions + 1;
    let lean = o.lean_brokers;
    step(
        t0,
        &format!("starting kubesim (at most {max_brokers} brokers) and the operator"),
    );
    let mut world = World::start_in_configured(&o.dir, |c| {
        let c = c.with_max_brokers(max_brokers);
        if lean {
            c.with_broker_erl_args(LEAN_ERL_ARGS)
        } else {
            c
        }
    })
    .await?;
    let limit = o.max_concurrent_conversions.to_string();
    world.start_operator_bin(
        &o.operator_bin,
        &["--max-concurrent-conversions", limit.as_str()],
    )?;
    let mut op_pid = world
        .operator
        .as_ref()
        .and_then(|p| p.pid())
        .context("operator pid")?;
    let metrics_addr = world
        .operator
        .as_ref()
        .map(|p| p.metrics_addr.clone())
        .unwrap_or_default();
    let client = world.cluster.client();

    // SharedClusters: "main" (the operator's default) and shared-1, shared-2, ...
    let clusters: Vec<String> = (0..o.shared_clusters)
        .map(|i| {
            if i == 0 {
                "main".to_string()
            } else {
                format!("shared-{i}")
            }
        })
        .collect();
    let capacity = o.instances.clamp(1, 10_000) as u32;
    for c in &clusters {
        world
            .kubectl
            .apply(&shared_cluster_yaml_with(c, &o.image, capacity))
            .await?;
    }
    let scs: Api<SharedCluster> = Api::namespaced(client.clone(), "tiermq-system");
    let until = Instant::now() + Duration::from_secs(240);
    loop {
        world.operator.as_mut().map(|p| p.tend()).transpose()?;
        let ready = scs
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|s| s.status.as_ref().is_some_and(|s| s.ready))
            .count();
        if ready == clusters.len() {
            break;
        }
        if Instant::now() > until {
            bail!(
                "only {ready} of {} SharedClusters ready after 240 s",
                clusters.len()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    step(
        t0,
        &format!(
            "{} SharedClusters ready (one broker each, capacity {capacity})",
            clusters.len()
        ),
    );
    let mut mgmts = Vec::new();
    for c in &clusters {
        mgmts.push(mgmt_of(&client, c).await?);
    }
    r.rabbitmq = match overview(&mgmts[0]).await {
        Ok(v) => v["rabbitmq_version"].as_str().unwrap_or("?").to_string(),
        Err(e) => format!("unknown ({e})"),
    };

    // Namespaces, then the instances, with 16 creates in flight.
    let per_ns = o.per_namespace.max(1);
    let nss: Api<Namespace> = Api::all(client.clone());
    for n in 0..r.namespaces {
        let ns: Namespace = serde_json::from_value(
            serde_json::json!({"metadata": {"name": format!("scale-{n:02}")}}),
        )?;
        nss.create(&PostParams::default(), &ns).await?;
    }
    let cpu_before = cpu_seconds_of(me).unwrap_or(0.0);
    let op_cpu_before = cpu_seconds_of(op_pid).unwrap_or(0.0);
    let t_apply = Instant::now();
    let created: Vec<anyhow::Result<()>> = futures::stream::iter(0..o.instances)
        .map(|i| {
            let client = client.clone();
            let (ns, name, cluster) = placement(i, per_ns, &clusters);
            let yaml = instance_yaml(&ns, &name, cluster, &o.image);
            async move {
                let obj: RabbitMQInstance = serde_yaml::from_str(&yaml)?;
                Api::<RabbitMQInstance>::namespaced(client, &ns)
                    .create(&PostParams::default(), &obj)
                    .await
                    .with_context(|| format!("create {ns}/{name}"))?;
                Ok(())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for c in created {
        c?;
    }
    r.converge.apply_s = t_apply.elapsed().as_secs_f64();
    step(
        t0,
        &format!(
            "created {} instances in {:.1}s; waiting until all are Ready/Stable (limit {} s)",
            o.instances,
            r.converge.apply_s,
            o.converge_limit.as_secs()
        ),
    );
    let all: Api<RabbitMQInstance> = Api::all(client.clone());
    let mut ready_at: HashMap<String, f64> = HashMap::new();
    let mut last_print = Instant::now();
    loop {
        world.operator.as_mut().map(|p| p.tend()).transpose()?;
        let list = all.list(&ListParams::default()).await?;
        let now = t_apply.elapsed().as_secs_f64();
        for i in &list.items {
            if settled(i, Tier::Shared) {
                ready_at.entry(key(i)).or_insert(now);
            }
        }
        if last_print.elapsed() >= Duration::from_secs(5) || ready_at.len() == o.instances {
            last_print = Instant::now();
            let rss = memory_of(op_pid, "").map(|m| m.vm_rss_mib).unwrap_or(0.0);
            r.converge
                .timeline
                .push((t_apply.elapsed().as_secs_f64(), ready_at.len(), rss));
            step(
                t0,
                &format!(
                    "{} of {} ready; operator RSS {rss:.0} MiB; load {}",
                    ready_at.len(),
                    o.instances,
                    load_average()
                ),
            );
        }
        if ready_at.len() == o.instances || t_apply.elapsed() > o.converge_limit {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let times: Vec<f64> = ready_at.values().copied().collect();
    r.converge.ready = ready_at.len();
    r.converge.all_ready_s = times.iter().copied().fold(0.0, f64::max);
    r.converge.ready_p50_s = quantile(&times, 0.5);
    r.converge.ready_p99_s = quantile(&times, 0.99);
    r.converge.load_at_end = load_average();
    if r.converge.ready < o.instances {
        r.notes.push(format!(
            "only {} of {} instances were Ready/Stable after {} s",
            r.converge.ready,
            o.instances,
            o.converge_limit.as_secs()
        ));
    }
    r.operator_memory
        .extend(memory_of(op_pid, "after convergence"));
    let page = scrape(&metrics_addr).await?;
    r.reconcile_latency
        .push(latency_point(&page, "after convergence"));
    if let Some(m) = memory_of(me, "") {
        r.kubesim
            .process_rss_mib
            .push(("after convergence".into(), m.vm_rss_mib));
    }
    let converging = format!(
        "from the first create until all ready ({:.0} s)",
        r.converge.all_ready_s
    );
    r.kubesim.cpu_s.push((
        converging.clone(),
        cpu_seconds_of(me).unwrap_or(0.0) - cpu_before,
    ));
    r.operator_cpu_s.push((
        converging,
        cpu_seconds_of(op_pid).unwrap_or(0.0) - op_cpu_before,
    ));
    for (kind, n) in [
        (
            "RabbitMQInstance",
            all.list(&ListParams::default()).await?.items.len(),
        ),
        (
            "Service",
            Api::<Service>::all(client.clone())
                .list(&ListParams::default())
                .await?
                .items
                .len(),
        ),
        (
            "Secret",
            Api::<Secret>::all(client.clone())
                .list(&ListParams::default())
                .await?
                .items
                .len(),
        ),
        (
            "EndpointSlice",
            Api::<EndpointSlice>::all(client.clone())
                .list(&ListParams::default())
                .await?
                .items
                .len(),
        ),
        (
            "NetworkPolicy",
            Api::<NetworkPolicy>::all(client.clone())
                .list(&ListParams::default())
                .await?
                .items
                .len(),
        ),
    ] {
        r.kubesim.objects.insert(kind.into(), n);
    }

    // Quiet: no API write by anyone but kubesim's own controllers for 10 s (bounded).
    let log = world.cluster.api().request_log();
    let t_quiet = Instant::now();
    loop {
        let since = chrono::Utc::now() - chrono::Duration::seconds(10);
        let writes = log
            .records()
            .iter()
            .rev()
            .take_while(|x| x.time >= since)
            .filter(|x| x.is_write() && x.user != "system:kubesim-controllers")
            .count();
        if (writes == 0 && t_quiet.elapsed() >= Duration::from_secs(10))
            || t_quiet.elapsed() > Duration::from_secs(180)
        {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    r.idle.quiet_wait_s = t_quiet.elapsed().as_secs_f64();
    step(
        t0,
        &format!(
            "quiet after {:.0} s; idle window of {} s (the bench sends no requests meanwhile)",
            r.idle.quiet_wait_s,
            o.idle.as_secs()
        ),
    );
    let page_a = scrape(&metrics_addr).await?;
    let cpu_a = cpu_seconds_of(me).unwrap_or(0.0);
    let op_cpu_a = cpu_seconds_of(op_pid).unwrap_or(0.0);
    let ta = chrono::Utc::now();
    let t_idle = Instant::now();
    tokio::time::sleep(o.idle).await;
    let tb = chrono::Utc::now();
    r.idle.seconds = t_idle.elapsed().as_secs_f64();
    let cpu_b = cpu_seconds_of(me).unwrap_or(0.0);
    let op_cpu_b = cpu_seconds_of(op_pid).unwrap_or(0.0);
    r.operator_cpu_s
        .push(("during the idle minute".into(), op_cpu_b - op_cpu_a));
    let page_b = scrape(&metrics_addr).await?;
    world.operator.as_mut().map(|p| p.tend()).transpose()?;
    for x in log.records().iter().filter(|x| x.time >= ta && x.time < tb) {
        let who = if x.user == "system:kubesim-controllers" {
            "kubesim controllers"
        } else {
            "operator"
        };
        *r.idle
            .api_by_user_verb
            .entry(format!("{who} {} {}", x.verb, x.resource))
            .or_insert(0) += 1;
        if x.is_write() {
            r.idle.api_writes += 1;
            if r.idle.api_write_sample.len() < 20 {
                r.idle.api_write_sample.push(format!(
                    "{} {} {} {}/{} {}",
                    x.user, x.verb, x.resource, x.namespace, x.name, x.code
                ));
            }
        } else {
            r.idle.api_reads += 1;
        }
    }
    let methods_of = |p: &str| counter_by_label(p, "tiermq_broker_requests_total", "method", "");
    r.idle.broker_by_method = delta(&methods_of(&page_a), &methods_of(&page_b));
    let rec = |p: &str| counter_by_label(p, "tiermq_reconciles_total", "controller", "");
    r.idle.reconciles = delta(&rec(&page_a), &rec(&page_b));
    r.kubesim
        .cpu_s
        .push(("during the idle minute".into(), cpu_b - cpu_a));
    r.operator_memory
        .extend(memory_of(op_pid, "after the idle minute"));
    step(
        t0,
        &format!(
            "idle: {} API reads, {} API writes; broker requests {:?}",
            r.idle.api_reads, r.idle.api_writes, r.idle.broker_by_method
        ),
    );

    // Client-side latency of kubesim at idle.
    let one = Api::<RabbitMQInstance>::namespaced(client.clone(), "scale-00");
    let mut gets = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        one.get("i0000").await?;
        gets.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let mut lists = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        all.list(&ListParams::default()).await?;
        lists.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    r.kubesim.get_ms = quantile(&gets, 0.5);
    r.kubesim.list_all_ms = quantile(&lists, 0.5);

    write_partial(o, &r, "the idle minute");
    if o.restart {
        let (rs, pid) = restart_over_steady(&mut world, o, &metrics_addr, t0).await?;
        op_pid = pid;
        r.restart = Some(rs);
        write_partial(o, &r, "the operator restart");
    }

    // Conversions of instances that never became Ready measure nothing (and the loaded ones
    // have no credentials yet): the report says why they were left out.
    let converged = r.converge.ready >= o.instances;
    if o.conversions > 0 && !converged {
        r.notes.push(format!(
            "the {} conversions were not started: only {} of {} instances were Ready within the {} s limit",
            o.conversions,
            r.converge.ready,
            o.instances,
            o.converge_limit.as_secs()
        ));
    }
    if o.conversions > 0 && converged {
        let (me_c, op_c) = (
            cpu_seconds_of(me).unwrap_or(0.0),
            cpu_seconds_of(op_pid).unwrap_or(0.0),
        );
        r.conversions = Some(convert(&mut world, o, &clusters, mgmts, t0).await?);
        let what = "during the conversions (with their load)".to_string();
        r.kubesim
            .cpu_s
            .push((what.clone(), cpu_seconds_of(me).unwrap_or(0.0) - me_c));
        r.operator_cpu_s
            .push((what, cpu_seconds_of(op_pid).unwrap_or(0.0) - op_c));
    }

    let page = scrape(&metrics_addr).await.unwrap_or_default();
    r.reconcile_latency.push(latency_point(&page, "at the end"));
    r.operator_memory.extend(memory_of(op_pid, "at the end"));
    if let Some(m) = memory_of(me, "") {
        r.kubesim
            .process_rss_mib
            .push(("at the end".into(), m.vm_rss_mib));
    }
    r.machine.load_at_end = load_average();
    step(t0, "stopping the operator, the brokers and kubesim");
    let World {
        operator, cluster, ..
    } = world;
    drop(operator);
    cluster.shutdown().await;
    Ok(r)
}

/// Kills the operator and starts it again; waits (at most 300 s) until it reconciled every
/// instance once, then 5 s more; counts its API requests and broker calls meanwhile. Returns the
/// figures and the new process's id.
async fn restart_over_steady(
    world: &mut World,
    o: &ScaleOptions,
    metrics_addr: &str,
    t0: Instant,
) -> anyhow::Result<(Restart, u32)> {
    let log = world.cluster.api().request_log();
    let since = chrono::Utc::now();
    let start = Instant::now();
    let op = world.operator.as_mut().context("operator")?;
    op.restart_with(crate::harness::Supervision::default())?;
    let pid = op.pid().context("operator pid")?;
    step(
        t0,
        "operator killed and started again over the steady instances",
    );
    let mut rs = Restart::default();
    let reconciled = |p: &str| {
        counter_by_label(p, "tiermq_reconciles_total", "controller", "")
            .get("instance")
            .copied()
            .unwrap_or(0.0)
    };
    loop {
        world.operator.as_mut().map(|p| p.tend()).transpose()?;
        if let Ok(page) = scrape(metrics_addr).await
            && reconciled(&page) >= o.instances as f64
        {
            break;
        }
        if start.elapsed() > Duration::from_secs(300) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    rs.all_reconciled_s = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(5)).await;
    // A busy operator may answer /metrics late: a few tries, then an empty page.
    let mut page = String::new();
    for _ in 0..6 {
        match scrape(metrics_addr).await {
            Ok(p) => {
                page = p;
                break;
            }
            Err(e) => {
                step(t0, &format!("/metrics did not answer: {e:#}"));
                rs.metrics_timeouts += 1;
            }
        }
    }
    rs.instance_reconciles = reconciled(&page);
    rs.broker_by_method = counter_by_label(&page, "tiermq_broker_requests_total", "method", "");
    for x in log
        .records()
        .iter()
        .filter(|x| x.time >= since && x.user != "system:kubesim-controllers")
    {
        if x.is_write() {
            rs.api_writes += 1;
            if rs.api_write_sample.len() < 20 {
                rs.api_write_sample.push(format!(
                    "{} {} {}/{} {}",
                    x.verb, x.resource, x.namespace, x.name, x.code
                ));
            }
        } else {
            rs.api_reads += 1;
        }
    }
    if let Some(m) = memory_of(pid, "") {
        rs.vm_rss_mib = m.vm_rss_mib;
        rs.vm_hwm_mib = m.vm_hwm_mib;
    }
    step(
        t0,
        &format!(
            "restarted operator reconciled {:.0} instances in {:.1}s: {} API reads, {} API writes, broker {:?}, RSS {:.0} MiB",
            rs.instance_reconciles,
            rs.all_reconciled_s,
            rs.api_reads,
            rs.api_writes,
            rs.broker_by_method,
            rs.vm_rss_mib
        ),
    );
    Ok((rs, pid))
}

async fn convert(
    world: &mut World,
    o: &ScaleOptions,
    clusters: &[String],
    mgmts: Vec<Mgmt>,
    t0: Instant,
) -> anyhow::Result<Conversions> {
    let client = world.cluster.client();
    let k = o.conversions.min(o.instances);
    let per_ns = o.per_namespace.max(1);
    // Spread over the namespaces and SharedClusters.
    let picks: Vec<(String, String)> = (0..k)
        .map(|j| {
            let (ns, name, _) = placement(j * o.instances / k, per_ns, clusters);
            (ns, name)
        })
        .collect();
    let mut cv = Conversions {
        started: k,
        limit_s: o.convert_limit.as_secs_f64(),
        min_mem_available_gib: mem_available_gib().unwrap_or(0.0),
        ..Default::default()
    };
    // Load on the first few: 2 publishers at load_rate msg/s each with confirms, 2 consumers.
    let mut loads: Vec<(String, Load)> = Vec::new();
    for (ns, name) in picks.iter().take(o.loaded.min(k)) {
        let target = world.instance_target(ns, name).await?;
        let mut cfg = LoadConfig::steady(
            target,
            "scale-load",
            (o.load_rate * o.convert_limit.as_secs_f64()).ceil() as u64,
            o.load_rate,
        );
        cfg.name = format!("{ns}-{name}");
        cfg.max_duration = o.convert_limit + Duration::from_secs(120);
        cfg.backoff_max = Duration::from_secs(2);
        loads.push((format!("{ns}/{name}"), Load::start(cfg).await?));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Sample the shared brokers' statistics backlog, the load average and free memory.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut max: BTreeMap<String, u64> = BTreeMap::new();
            let (mut samples, mut max_load, mut min_mem) = (0u64, 0.0f64, f64::MAX);
            // Bounded by the stop flag, and by a hard cap well past the conversion limit.
            for _ in 0..3600 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                for m in &mgmts {
                    if let Ok(v) = overview(m).await
                        && let Some(q) = v["statistics_db_event_queue"].as_u64()
                    {
                        let e = max.entry(m.cluster.clone()).or_insert(0);
                        *e = (*e).max(q);
                    }
                }
                samples += 1;
                max_load = max_load.max(load1());
                min_mem = min_mem.min(mem_available_gib().unwrap_or(f64::MAX));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            (max, samples, max_load, min_mem)
        })
    };
    step(
        t0,
        &format!(
            "flipping {k} instances to Dedicated at once ({} under AMQP load)",
            loads.len()
        ),
    );
    let t_flip = Instant::now();
    let patched: Vec<anyhow::Result<()>> = futures::stream::iter(picks.clone())
        .map(|(ns, name)| {
            let client = client.clone();
            async move {
                Api::<RabbitMQInstance>::namespaced(client, &ns)
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(serde_json::json!({"spec": {"tier": "Dedicated"}})),
                    )
                    .await
                    .with_context(|| format!("flip {ns}/{name}"))?;
                Ok(())
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for p in patched {
        p?;
    }
    let wanted: std::collections::BTreeSet<String> =
        picks.iter().map(|(n, m)| format!("{n}/{m}")).collect();
    let all: Api<RabbitMQInstance> = Api::all(client.clone());
    let mut done_at: HashMap<String, f64> = HashMap::new();
    let mut last_print = Instant::now();
    let mut last: Vec<RabbitMQInstance>;
    loop {
        world.operator.as_mut().map(|p| p.tend()).transpose()?;
        let list = all.list(&ListParams::default()).await?;
        let now = t_flip.elapsed().as_secs_f64();
        last = list
            .items
            .into_iter()
            .filter(|i| wanted.contains(&key(i)))
            .collect();
        for i in &last {
            if settled(i, Tier::Dedicated) {
                done_at.entry(key(i)).or_insert(now);
            }
        }
        let running = last
            .iter()
            .filter(|i| i.status.as_ref().is_some_and(|s| s.migration.is_some()))
            .count();
        cv.most_running = Some(cv.most_running.unwrap_or(0).max(running));
        if last_print.elapsed() >= Duration::from_secs(5) || done_at.len() == k {
            last_print = Instant::now();
            let mut phases: BTreeMap<String, usize> = BTreeMap::new();
            for i in &last {
                let p = i
                    .status
                    .as_ref()
                    .and_then(|s| s.migration_phase.as_ref())
                    .map(|p| format!("{p:?}"))
                    .unwrap_or_else(|| "-".into());
                *phases.entry(p).or_insert(0) += 1;
            }
            let sent: u64 = loads.iter().map(|(_, l)| l.stats().confirmed).sum();
            step(
                t0,
                &format!(
                    "{} of {k} converted; phases {phases:?}; brokers running {}; load {}; MemAvailable {:.1} GiB; confirmed on loaded {sent}",
                    done_at.len(),
                    world.cluster.running_brokers(),
                    load_average(),
                    mem_available_gib().unwrap_or(0.0)
                ),
            );
        }
        if done_at.len() == k || t_flip.elapsed() > o.convert_limit {
            break;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let times: Vec<f64> = done_at.values().copied().collect();
    cv.finished = done_at.len();
    cv.all_done_s = if cv.finished == k {
        times.iter().copied().fold(0.0, f64::max)
    } else {
        t_flip.elapsed().as_secs_f64()
    };
    cv.done_p50_s = quantile(&times, 0.5);
    cv.first_done_s = times.iter().copied().reduce(f64::min);
    cv.max_at_once = (o.max_concurrent_conversions > 0).then_some(o.max_concurrent_conversions);
    cv.done_max_s = times.iter().copied().fold(0.0, f64::max);
    // Brokers: how many run and what they hold in memory.
    let pids = world.cluster.broker_pids();
    let rss: Vec<f64> = pids
        .values()
        .filter_map(|p| memory_of(*p, "").map(|m| m.vm_rss_mib))
        .collect();
    cv.brokers_running = pids.len();
    cv.brokers_rss_mib = rss.iter().sum();
    cv.broker_rss_median_mib = quantile(&rss, 0.5);
    // Why the unfinished did not finish: their status and their pods' state.
    for i in last
        .iter()
        .filter(|i| !done_at.contains_key(&key(i)))
        .take(5)
    {
        let s = i.status.clone().unwrap_or_default();
        let ns = i.metadata.namespace.clone().unwrap_or_default();
        let pods = Api::<Pod>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let name = i.metadata.name.clone().unwrap_or_default();
        let pod_states: Vec<String> = pods
            .iter()
            .filter(|p| {
                p.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with(&name))
            })
            .map(|p| {
                let st = p.status.clone().unwrap_or_default();
                format!(
                    "pod {} {} {}",
                    p.metadata.name.clone().unwrap_or_default(),
                    st.phase.unwrap_or_default(),
                    st.message.unwrap_or_default()
                )
            })
            .collect();
        let conds: Vec<String> = s
            .conditions
            .iter()
            .filter(|c| c.status != "True" || c.type_ != "Ready")
            .map(|c| format!("{}={} {}", c.type_, c.status, c.message))
            .collect();
        cv.unfinished_sample.push(format!(
            "{}: phase {:?}, migration {:?}; {}; {}",
            key(i),
            s.phase,
            s.migration_phase,
            conds.join("; "),
            pod_states.join("; ")
        ));
    }
    // Stop the loads and count.
    for (_, l) in &loads {
        l.stop_publishing();
    }
    for (name, l) in loads {
        let rep: LoadReport = l.finish(Duration::from_secs(60)).await;
        cv.loaded.push(LoadedInstance {
            converted: done_at.contains_key(&name),
            instance: name,
            confirmed: rep.stats.confirmed,
            received: rep.stats.received,
            lost: rep.lost,
            duplicates: rep.duplicates,
        });
    }
    stop.store(true, Ordering::Relaxed);
    let (max, samples, max_load, min_mem) = sampler.await?;
    cv.max_stats_event_queue = max;
    cv.stats_samples = samples;
    cv.max_load1 = max_load;
    cv.min_mem_available_gib = cv.min_mem_available_gib.min(min_mem);
    step(
        t0,
        &format!(
            "{} of {k} conversions finished in {:.1}s; loaded: {:?}",
            cv.finished,
            cv.all_done_s,
            cv.loaded
                .iter()
                .map(|l| (l.instance.as_str(), l.lost, l.duplicates))
                .collect::<Vec<_>>()
        ),
    );
    Ok(cv)
}

/// How each figure is measured (into the report and the JSON).
pub fn methods() -> Vec<(String, String)> {
    [
        ("convergence", "instances are created through the API (16 creates in flight) after the SharedClusters' brokers are ready; every 2 s the bench lists all RabbitMQInstances and notes when each was first seen with status.phase Ready, migrationPhase Stable (or unset) and tier Shared; times count from the first create"),
        ("idle minute", "after convergence the bench waits until no client but kubesim's own controllers wrote to the API for 10 s (at most 180 s), then sends no request for the window; API requests are counted from kubesim's in-memory request log by user and verb (writes: create, update, patch, delete, deletecollection); 'operator' is every client other than kubesim's controllers (the bench is silent meanwhile); broker management calls are the delta of the operator's tiermq_broker_requests_total by method (anything but GET writes)"),
        ("operator RSS", "VmRSS and VmHWM (peak resident set) from /proc/<operator pid>/status"),
        ("operator CPU", "user + system seconds from /proc/<operator pid>/stat over each stretch (100 ticks per second)"),
        ("reconcile latency", "histogram_quantile over the cumulative buckets of tiermq_reconcile_duration_seconds{controller=\"instance\"} scraped from the operator's /metrics, linear within the bucket as Prometheus computes it; cumulative since the operator started; the operator's buckets are 5 ms x 2^k up to 40.96 s, so a quantile is only as fine as its bucket (a factor of 2)"),
        ("restart", "the operator is SIGKILLed and started again (same flags) over the Ready instances; the bench scrapes its /metrics every 500 ms until tiermq_reconciles_total{controller=\"instance\"} reaches the number of instances (at most 300 s), waits 5 s, then counts the API requests of every client but kubesim's controllers since the restart (the bench only scrapes metrics meanwhile) and the broker calls by method from the fresh counters; its VmRSS/VmHWM then"),
        ("conversions", "the picked instances (spread over namespaces and SharedClusters) get spec.tier Dedicated by merge patch, 8 in flight; every 3 s the bench lists all instances and notes when each was first seen Ready, Stable and tier Dedicated; times count from the first patch; bounded by the limit"),
        ("load on converting instances", "per loaded instance: 2 publishers with confirms and 2 consumers with manual acks through the instance Service (ClusterIP), every message with a unique id; lost = confirmed and never consumed by 60 s after publishing stopped; duplicates = ids delivered again"),
        ("statistics lag", "every second, GET /api/overview on each shared broker (admin login, through its Service); the maximum of statistics_db_event_queue (events the management statistics have not processed yet)"),
        ("brokers", "kubesim's running rabbitmq-server processes at the end of the conversions; RSS from /proc/<pid>/status; load average and MemAvailable sampled every second while the conversions ran"),
        ("kubesim", "kubesim runs inside the bench process, so its RSS and CPU time (/proc/self) include the bench's kube client and AMQP load generator; CPU is user+system seconds over the window; request latency is measured by the bench as a client (get one instance, list all instances; median of 20)"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}
