//! The scale bench's figures and their rendering (`tiermq-demo scale`, `make bench-scale`): many
//! shared-tier instances on one operator, an idle minute, the operator's memory and reconcile
//! latency, then many conversions at once. Pure functions over [`ScaleResults`] and over the
//! texts they are measured from (Prometheus pages, `/proc` files), so they are unit-tested
//! without brokers; `tiermq-demo scale` fills the results from a real run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::bench::Machine;

pub mod run;

/// Everything one scale run measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ScaleResults {
    /// UTC date and time of the run.
    pub date: String,
    /// `git rev-parse --short HEAD` (with `-dirty` when the tree had changes).
    pub commit: String,
    pub machine: Machine,
    /// RabbitMQ version the shared brokers reported.
    pub rabbitmq: String,
    /// Cargo profile of the operator binary.
    pub profile: String,
    /// Shared-tier instances applied.
    pub instances: usize,
    /// SharedClusters (one broker each) they were spread over.
    pub shared_clusters: usize,
    /// Namespaces they were spread over.
    pub namespaces: usize,
    /// Extra Erlang VM flags of every broker node (empty: RabbitMQ's defaults).
    pub broker_erl_args: String,
    pub converge: Converge,
    pub idle: IdleMinute,
    /// Operator memory after convergence, after the idle minute and at the end.
    pub operator_memory: Vec<MemoryPoint>,
    /// Operator CPU seconds (user + system, `/proc/<pid>/stat`) per stretch of the run.
    #[serde(default)]
    pub operator_cpu_s: Vec<(String, f64)>,
    /// Reconcile latency of the instance controller after convergence and at the end.
    pub reconcile_latency: Vec<LatencyPoint>,
    /// The operator killed and started again over the steady instances.
    #[serde(default)]
    pub restart: Option<Restart>,
    pub conversions: Option<Conversions>,
    pub kubesim: KubesimCost,
    /// Figure name → how it was measured.
    pub methods: Vec<(String, String)>,
    /// What limited the run, what could not be measured, and why.
    pub notes: Vec<String>,
}

/// From the first create until every instance was Ready and Stable.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Converge {
    /// Seconds the creates took (namespaces excluded).
    pub apply_s: f64,
    /// Seconds from the first create until the last instance was seen Ready/Stable.
    pub all_ready_s: f64,
    /// Per instance: seconds from the first create until it was first seen Ready/Stable.
    pub ready_p50_s: f64,
    pub ready_p99_s: f64,
    /// Instances Ready/Stable at the end of the wait (== instances when it converged).
    pub ready: usize,
    /// Load average (1/5/15 min) when every instance was ready.
    pub load_at_end: String,
    /// While waiting, about every 5 s: (seconds since the first create, instances ready,
    /// operator VmRSS MiB).
    #[serde(default)]
    pub timeline: Vec<(f64, usize, f64)>,
}

/// Requests during one idle minute after convergence.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IdleMinute {
    /// Seconds of the window (60 unless cut short).
    pub seconds: f64,
    /// API requests by `client verb resource` (kubesim's request log).
    pub api_by_user_verb: BTreeMap<String, u64>,
    pub api_reads: u64,
    pub api_writes: u64,
    /// The writes, `user verb resource ns/name code`, at most 20.
    pub api_write_sample: Vec<String>,
    /// Operator management API requests by HTTP method (delta of
    /// `tiermq_broker_requests_total`).
    pub broker_by_method: BTreeMap<String, f64>,
    /// Reconciles in the window by controller (delta of `tiermq_reconciles_total`).
    pub reconciles: BTreeMap<String, f64>,
    /// Seconds waited for quiet before the window (no operator API write for 10 s).
    pub quiet_wait_s: f64,
}

/// `/proc/<pid>/status` memory of a process at one moment.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct MemoryPoint {
    pub when: String,
    pub vm_rss_mib: f64,
    pub vm_hwm_mib: f64,
}

/// Reconcile latency quantiles from the histogram at one moment (cumulative since start).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencyPoint {
    pub when: String,
    pub count: f64,
    pub p50_s: Option<f64>,
    pub p99_s: Option<f64>,
    /// The p99 rank lies in the `+Inf` bucket: p99 is only known to be at least `p99_s`.
    #[serde(default)]
    pub p99_above_buckets: bool,
}

/// A fresh operator over instances that are already Ready: until it reconciled every one once.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Restart {
    /// Seconds from the start until `tiermq_reconciles_total{controller="instance"}` reached
    /// the number of instances (or the limit).
    pub all_reconciled_s: f64,
    pub instance_reconciles: f64,
    /// API requests of the operator from its start until then (plus 5 s).
    pub api_reads: u64,
    pub api_writes: u64,
    pub api_write_sample: Vec<String>,
    /// Its management API calls by method in that time.
    pub broker_by_method: BTreeMap<String, f64>,
    /// Scrapes of its /metrics (10 s timeout each) that got no answer while it caught up.
    #[serde(default)]
    pub metrics_timeouts: u32,
    /// Its memory then.
    pub vm_rss_mib: f64,
    pub vm_hwm_mib: f64,
}

/// Conversions shared -> dedicated started at once.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Conversions {
    /// Flipped at once.
    pub started: usize,
    /// Reached Stable on Dedicated before the time limit.
    pub finished: usize,
    /// Seconds from the first flip until the last finished one was seen Stable (or the limit).
    pub all_done_s: f64,
    /// Per finished conversion: seconds from the flips until it was seen Stable.
    pub done_p50_s: f64,
    pub done_max_s: f64,
    /// Seconds from the flips until the first was seen Stable on Dedicated (`None`: none
    /// finished, or a report written before this was recorded).
    #[serde(default)]
    pub first_done_s: Option<f64>,
    /// The operator's `--max-concurrent-conversions` (`None`: unbounded).
    #[serde(default)]
    pub max_at_once: Option<u16>,
    /// Most of the flipped instances seen with a recorded conversion at one look (every 3 s;
    /// `None` in reports written before this was recorded).
    #[serde(default)]
    pub most_running: Option<usize>,
    /// The time limit.
    pub limit_s: f64,
    /// Instances that ran AMQP load through their Service during the conversion.
    pub loaded: Vec<LoadedInstance>,
    /// Max of `statistics_db_event_queue` per shared cluster while the conversions ran.
    pub max_stats_event_queue: BTreeMap<String, u64>,
    /// Samples of `/api/overview` taken per cluster.
    pub stats_samples: u64,
    /// Highest 1-minute load average seen while they ran.
    pub max_load1: f64,
    /// Broker processes running at the end and their summed RSS (MiB).
    pub brokers_running: usize,
    pub brokers_rss_mib: f64,
    /// RSS of one dedicated broker node (median over the running ones, MiB).
    pub broker_rss_median_mib: f64,
    /// Lowest MemAvailable seen while they ran (GiB).
    pub min_mem_available_gib: f64,
    /// Why the unfinished ones did not finish (their last status or pod state), a few.
    pub unfinished_sample: Vec<String>,
}

/// The load on one converting instance.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LoadedInstance {
    pub instance: String,
    pub confirmed: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// Whether its conversion finished.
    pub converted: bool,
}

/// What kubesim (in the bench's own process) cost.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct KubesimCost {
    /// RSS of the bench process (kubesim's API server, controllers, kubelet, kube-proxy, plus the
    /// bench's own client and load generator) after convergence and at the end.
    pub process_rss_mib: Vec<(String, f64)>,
    /// Its CPU seconds (user + system) during convergence and during the idle minute.
    pub cpu_s: Vec<(String, f64)>,
    /// Client-side latency of requests to it at idle (median of 20, ms): `get` one instance,
    /// `list` every instance.
    pub get_ms: f64,
    pub list_all_ms: f64,
    /// Objects the API server stores (from listing a few kinds) after convergence.
    pub objects: BTreeMap<String, usize>,
}

/// A cumulative Prometheus histogram: `(le, count)` sorted by `le`, `+Inf` last.
pub type Buckets = Vec<(f64, f64)>;

/// The buckets of histogram `metric` (name without `_bucket`) whose labels contain `labels`,
/// summed over series with the same `le`.
pub fn histogram_buckets(page: &str, metric: &str, labels: &str) -> Buckets {
    let prefix = format!("{metric}_bucket{{");
    let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for line in page.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else {
            continue;
        };
        if !line.contains(labels) {
            continue;
        }
        let Some((label_part, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let Some(le) = label_part
            .split(',')
            .find_map(|kv| kv.trim().strip_prefix("le=\""))
            .and_then(|v| v.strip_suffix('"'))
        else {
            continue;
        };
        let le: f64 = if le == "+Inf" {
            f64::INFINITY
        } else {
            match le.parse() {
                Ok(v) => v,
                Err(_) => continue,
            }
        };
        let Ok(v) = value.trim().parse::<f64>() else {
            continue;
        };
        // f64 keys sort as their bits for non-negative values.
        let e = by_le.entry(le.to_bits()).or_insert((le, 0.0));
        e.1 += v;
    }
    by_le.into_values().collect()
}

/// The `q` quantile of cumulative `buckets` as Prometheus' `histogram_quantile` computes it:
/// find the bucket the rank falls in and interpolate linearly between its bounds (the first
/// bucket starts at 0); a rank in the `+Inf` bucket gives the highest finite bound. `None` when
/// there are no observations.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 || !buckets.last()?.0.is_infinite() {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total;
    let i = buckets.iter().position(|(_, c)| *c >= rank)?;
    if buckets[i].0.is_infinite() {
        return buckets.get(i.checked_sub(1)?).map(|b| b.0);
    }
    let (lower, below) = if i == 0 { (0.0, 0.0) } else { buckets[i - 1] };
    let (upper, count) = buckets[i];
    let in_bucket = count - below;
    if in_bucket <= 0.0 {
        return Some(upper);
    }
    Some(lower + (upper - lower) * (rank - below) / in_bucket)
}

/// Whether the `q` quantile of `buckets` lies in the `+Inf` bucket (above every finite bound).
pub fn above_buckets(q: f64, buckets: &[(f64, f64)]) -> bool {
    let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
    buckets.len() >= 2 && total > 0.0 && buckets[buckets.len() - 2].1 < q * total
}

/// Sum of counter `metric` per value of label `label`, over series whose labels contain
/// `filter` (e.g. `tiermq_broker_requests_total` by `method`).
pub fn counter_by_label(
    page: &str,
    metric: &str,
    label: &str,
    filter: &str,
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let key = format!("{label}=\"");
    for line in page.lines() {
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        if !rest.starts_with('{') || !line.contains(filter) {
            continue;
        }
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let Some(v) = labels
            .split_once(&key)
            .and_then(|(_, r)| r.split_once('"'))
            .map(|(v, _)| v.to_string())
        else {
            continue;
        };
        if let Ok(n) = value.trim().parse::<f64>() {
            *out.entry(v).or_insert(0.0) += n;
        }
    }
    out
}

/// `b - a` per key (keys only in `b` count from 0).
pub fn delta(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    b.iter()
        .map(|(k, v)| (k.clone(), v - a.get(k).copied().unwrap_or(0.0)))
        .collect()
}

/// `VmRSS` and `VmHWM` (MiB) from the text of `/proc/<pid>/status`.
pub fn parse_proc_status(text: &str) -> Option<(f64, f64)> {
    let kib = |key: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((kib("VmRSS:")? / 1024.0, kib("VmHWM:")? / 1024.0))
}

/// User + system CPU clock ticks from the text of `/proc/<pid>/stat` (fields 14 and 15; the
/// command name in parentheses may contain spaces).
pub fn parse_proc_stat_ticks(text: &str) -> Option<u64> {
    let after = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // after ")": state is field 3, so utime (14) and stime (15) are at 11 and 12.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Memory of process `pid` now (`/proc`), labelled `when`.
pub fn memory_of(pid: u32, when: &str) -> Option<MemoryPoint> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let (rss, hwm) = parse_proc_status(&text)?;
    Some(MemoryPoint {
        when: when.into(),
        vm_rss_mib: rss,
        vm_hwm_mib: hwm,
    })
}

/// CPU seconds (user + system) process `pid` used so far (assumes 100 ticks per second, Linux's
/// `USER_HZ`).
pub fn cpu_seconds_of(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_proc_stat_ticks(&text).map(|t| t as f64 / 100.0)
}

/// `MemAvailable` from `/proc/meminfo`, GiB.
pub fn mem_available_gib() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0 / 1024.0)
}

/// The `q` quantile (nearest rank) of `values`; 0 when empty.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize;
    v[rank.saturating_sub(1).min(v.len() - 1)]
}

/// Where instance `i` of `n` goes: namespace `scale-NN` (`per_ns` instances each), name `iNNNN`,
/// SharedCluster `clusters[i % clusters.len()]`.
pub fn placement(i: usize, per_ns: usize, clusters: &[String]) -> (String, String, &str) {
    (
        format!("scale-{:02}", i / per_ns.max(1)),
        format!("i{i:04}"),
        &clusters[i % clusters.len()],
    )
}

/// YAML of shared-tier instance `ns/name` on SharedCluster `cluster` in `tiermq-system`; its
/// dedicated tier is one node running `image`.
pub fn instance_yaml(ns: &str, name: &str, cluster: &str, image: &str) -> String {
    format!(
        "apiVersion: tiermq.io/v1alpha1\nkind: RabbitMQInstance\nmetadata:\n  name: {name}\n  \
         namespace: {ns}\nspec:\n  series: Subscription\n  tier: Shared\n  dedicated:\n    \
         replicas: 1\n    image: {image}\n  shared:\n    clusterRef:\n      name: {cluster}\n      \
         namespace: tiermq-system\n  migration:\n    drainStrategy: Consume\n    \
         drainTimeoutSeconds: 300\n    gracePeriodSeconds: 2\n"
    )
}

fn mib(v: f64) -> String {
    format!("{v:.1} MiB")
}

fn opt_s(v: Option<f64>) -> String {
    v.map(|v| format!("{:.3} s", v))
        .unwrap_or_else(|| "–".into())
}

/// The goals of issue 14 item 3 against what was measured: (goal, measured, met).
pub fn goals(r: &ScaleResults) -> Vec<(String, String, bool)> {
    let mut g = Vec::new();
    let max_rss = r
        .operator_memory
        .iter()
        .map(|m| m.vm_hwm_mib.max(m.vm_rss_mib))
        .fold(0.0, f64::max);
    g.push((
        format!(
            "operator RSS <= 100 MB with {} instances (peak VmHWM)",
            r.instances
        ),
        format!("{max_rss:.1} MiB ({:.1} MB)", max_rss * 1.048_576),
        max_rss * 1.048_576 <= 100.0 && r.converge.ready == r.instances,
    ));
    g.push((
        "0 writes while idle (API and broker)".into(),
        format!(
            "{} API writes, {} broker writes in {:.0} s",
            r.idle.api_writes,
            r.idle
                .broker_by_method
                .iter()
                .filter(|(m, _)| m.as_str() != "GET")
                .map(|(_, v)| v)
                .sum::<f64>(),
            r.idle.seconds
        ),
        r.idle.api_writes == 0
            && r.idle
                .broker_by_method
                .iter()
                .all(|(m, v)| m == "GET" || *v == 0.0)
            && r.idle.seconds > 0.0,
    ));
    if let Some(c) = &r.conversions {
        let lost: u64 = c.loaded.iter().map(|l| l.lost).sum();
        g.push((
            "0 lost on the converting instances under load".into(),
            format!(
                "{lost} lost over {} loaded instances, {} of which converted",
                c.loaded.len(),
                c.loaded.iter().filter(|l| l.converted).count()
            ),
            lost == 0 && c.loaded.iter().any(|l| l.converted),
        ));
        g.push((
            format!(
                "{} conversions at once all finish (within the limit)",
                c.started
            ),
            format!("{} of {} in {:.0} s", c.finished, c.started, c.all_done_s),
            c.finished == c.started && c.started > 0,
        ));
    }
    g
}

/// `docs/bench/SCALE.md`.
/// `json_name`: the JSON file of the same run, linked from the report (they sit side by side).
pub fn render_markdown(r: &ScaleResults, json_name: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# tiermq scale bench\n");
    let _ = writeln!(
        s,
        "Written by `make bench-scale`, `make bench-scale-50` or `make bench-scale-50-bounded` (`tiermq-demo \
scale`; the first also runs in `make bench`); every figure with how it was measured is also in [{json_name}]({json_name}). One run on a \
shared 2-core machine: expect noise.\n"
    );
    crate::bench::run_rows(&mut s, &r.date, &r.commit, &r.machine);
    let _ = writeln!(
        s,
        "| load average (1/5/15 min) | {} at the start, {} when all were ready, {} at the end |",
        r.machine.load_at_start, r.converge.load_at_end, r.machine.load_at_end
    );
    let _ = writeln!(
        s,
        "| RabbitMQ | {} (kubesim; one broker per SharedCluster, one per dedicated cluster) |",
        r.rabbitmq
    );
    let _ = writeln!(s, "| build profile | {} |", r.profile);
    let _ = writeln!(
        s,
        "| setup | {} shared-tier instances in {} namespaces over {} SharedClusters; broker Erlang flags: {} |\n",
        r.instances,
        r.namespaces,
        r.shared_clusters,
        if r.broker_erl_args.is_empty() {
            "RabbitMQ's defaults".to_string()
        } else {
            format!("`{}`", r.broker_erl_args)
        }
    );

    let _ = writeln!(s, "## Goals (issue 14, item 3)\n");
    let _ = writeln!(s, "| goal | measured | result |\n|---|---|---|");
    for (goal, measured, met) in goals(r) {
        let _ = writeln!(
            s,
            "| {goal} | {measured} | **{}** |",
            if met { "met" } else { "not met" }
        );
    }

    let c = &r.converge;
    let _ = writeln!(s, "\n## Convergence\n");
    let _ = writeln!(s, "| figure | value |\n|---|---|");
    let _ = writeln!(
        s,
        "| creating {} instances (API) | {:.1} s |",
        r.instances, c.apply_s
    );
    let _ = writeln!(
        s,
        "| first create -> all Ready/Stable | {:.1} s ({} of {} ready) |",
        c.all_ready_s, c.ready, r.instances
    );
    let _ = writeln!(
        s,
        "| per instance, first create -> Ready: p50 / p99 | {:.1} s / {:.1} s |",
        c.ready_p50_s, c.ready_p99_s
    );
    if !c.timeline.is_empty() {
        // About ten points of the timeline.
        let every = c.timeline.len().div_ceil(10).max(1);
        let points: Vec<String> = c
            .timeline
            .iter()
            .enumerate()
            .filter(|(n, _)| n % every == 0 || *n == c.timeline.len() - 1)
            .map(|(_, (t, ready, rss))| format!("{t:.0} s: {ready} ready, {rss:.0} MiB"))
            .collect();
        let _ = writeln!(
            s,
            "| operator RSS while converging | {} |",
            points.join("; ")
        );
    }

    let i = &r.idle;
    let _ = writeln!(s, "\n## Idle minute\n");
    let reconciles: Vec<String> = i
        .reconciles
        .iter()
        .map(|(k, v)| format!("{k} {v:.0}"))
        .collect();
    let _ = writeln!(
        s,
        "After convergence and {:.0} s of waiting for quiet, over {:.0} s (reconciles in the window by controller: {}):\n",
        i.quiet_wait_s,
        i.seconds,
        if reconciles.is_empty() {
            "none".to_string()
        } else {
            reconciles.join(", ")
        }
    );
    let per_min = |v: f64| {
        if i.seconds > 0.0 {
            v * 60.0 / i.seconds
        } else {
            0.0
        }
    };
    let _ = writeln!(s, "| requests | count | per minute |\n|---|---:|---:|");
    let _ = writeln!(
        s,
        "| API reads (all clients) | {} | {:.0} |",
        i.api_reads,
        per_min(i.api_reads as f64)
    );
    let _ = writeln!(
        s,
        "| API writes (all clients) | {} | {:.0} |",
        i.api_writes,
        per_min(i.api_writes as f64)
    );
    for (k, v) in &i.api_by_user_verb {
        let _ = writeln!(s, "| API `{k}` | {v} | {:.0} |", per_min(*v as f64));
    }
    for (m, v) in &i.broker_by_method {
        let _ = writeln!(
            s,
            "| broker management `{m}` (operator) | {v:.0} | {:.0} |",
            per_min(*v)
        );
    }
    if !i.api_write_sample.is_empty() {
        let _ = writeln!(s, "\nWrites seen: {}", i.api_write_sample.join("; "));
    }

    let _ = writeln!(s, "\n## Operator\n");
    let _ = writeln!(s, "| when | VmRSS | VmHWM (peak) |\n|---|---:|---:|");
    for m in &r.operator_memory {
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            m.when,
            mib(m.vm_rss_mib),
            mib(m.vm_hwm_mib)
        );
    }
    if !r.operator_cpu_s.is_empty() {
        let _ = writeln!(
            s,
            "\n| operator CPU (user + system) | seconds |\n|---|---:|"
        );
        for (when, v) in &r.operator_cpu_s {
            let _ = writeln!(s, "| {when} | {v:.1} |");
        }
    }
    let _ = writeln!(
        s,
        "\n| reconcile latency (instance controller, since start) | reconciles | p50 | p99 |\n|---|---:|---:|---:|"
    );
    for l in &r.reconcile_latency {
        let _ = writeln!(
            s,
            "| {} | {:.0} | {} | {} |",
            l.when,
            l.count,
            opt_s(l.p50_s),
            if l.p99_above_buckets {
                format!(">= {} (above the highest bucket)", opt_s(l.p99_s))
            } else {
                opt_s(l.p99_s)
            }
        );
    }

    if let Some(rs) = &r.restart {
        let _ = writeln!(s, "\n## Operator restarted over the steady instances\n");
        let _ = writeln!(s, "| figure | value |\n|---|---|");
        let _ = writeln!(
            s,
            "| until every instance was reconciled once | {:.1} s ({:.0} instance reconciles) |",
            rs.all_reconciled_s, rs.instance_reconciles
        );
        let _ = writeln!(
            s,
            "| API requests meanwhile | {} reads, {} writes |",
            rs.api_reads, rs.api_writes
        );
        let _ = writeln!(
            s,
            "| /metrics scrapes (10 s timeout) unanswered after it caught up | {} |",
            rs.metrics_timeouts
        );
        let broker: Vec<String> = rs
            .broker_by_method
            .iter()
            .map(|(k, v)| format!("{k} {v:.0}"))
            .collect();
        let _ = writeln!(
            s,
            "| broker management calls meanwhile | {} |",
            broker.join(", ")
        );
        let _ = writeln!(
            s,
            "| operator memory then | VmRSS {}, VmHWM {} |",
            mib(rs.vm_rss_mib),
            mib(rs.vm_hwm_mib)
        );
        if !rs.api_write_sample.is_empty() {
            let _ = writeln!(s, "\nWrites seen: {}", rs.api_write_sample.join("; "));
        }
    }

    if let Some(cv) = &r.conversions {
        let _ = writeln!(s, "\n## Conversions at once (shared -> dedicated)\n");
        let _ = writeln!(s, "| figure | value |\n|---|---|");
        let _ = writeln!(
            s,
            "| flipped at once | {} (limit {:.0} s) |",
            cv.started, cv.limit_s
        );
        let _ = writeln!(
            s,
            "| operator's --max-concurrent-conversions | {}; most seen running at one look: {} |",
            cv.max_at_once
                .map_or("unbounded".to_string(), |n| n.to_string()),
            cv.most_running
                .map_or("not recorded".to_string(), |n| n.to_string())
        );
        let _ = writeln!(
            s,
            "| finished (Stable on Dedicated) | {} in {:.1} s; first {}; per conversion p50 {:.1} s, max {:.1} s |",
            cv.finished,
            cv.all_done_s,
            match cv.first_done_s {
                Some(t) => format!("{t:.1} s"),
                None if cv.finished == 0 => "none".to_string(),
                None => "not recorded".to_string(),
            },
            cv.done_p50_s,
            cv.done_max_s
        );
        let _ = writeln!(
            s,
            "| broker processes at the end | {} ({} summed RSS, {} median per node) |",
            cv.brokers_running,
            mib(cv.brokers_rss_mib),
            mib(cv.broker_rss_median_mib)
        );
        let _ = writeln!(
            s,
            "| machine while they ran | load1 max {:.2}; MemAvailable min {:.1} GiB |",
            cv.max_load1, cv.min_mem_available_gib
        );
        let stats: Vec<String> = cv
            .max_stats_event_queue
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            s,
            "| statistics lag: max `statistics_db_event_queue` per shared broker | {} ({} samples each) |",
            stats.join(", "),
            cv.stats_samples
        );
        if !cv.loaded.is_empty() {
            let _ = writeln!(
                s,
                "\n| instance under load | converted | confirmed | received | lost | duplicates |\n|---|---|---:|---:|---:|---:|"
            );
            for l in &cv.loaded {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} |",
                    l.instance,
                    if l.converted { "yes" } else { "no" },
                    l.confirmed,
                    l.received,
                    l.lost,
                    l.duplicates
                );
            }
        }
        if !cv.unfinished_sample.is_empty() {
            let _ = writeln!(s, "\nUnfinished (sample):\n");
            for u in &cv.unfinished_sample {
                let _ = writeln!(s, "- {u}");
            }
        }
    }

    let k = &r.kubesim;
    let _ = writeln!(s, "\n## kubesim\n");
    let _ = writeln!(s, "| figure | value |\n|---|---|");
    for (when, v) in &k.process_rss_mib {
        let _ = writeln!(s, "| bench process RSS, {when} | {} |", mib(*v));
    }
    for (when, v) in &k.cpu_s {
        let _ = writeln!(s, "| bench process CPU, {when} | {v:.1} s |");
    }
    let _ = writeln!(
        s,
        "| request latency at idle (client side, median of 20) | get one instance {:.1} ms, list all instances {:.1} ms |",
        k.get_ms, k.list_all_ms
    );
    let objects: Vec<String> = k.objects.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(s, "| objects stored | {} |", objects.join(", "));

    if !r.notes.is_empty() {
        let _ = writeln!(s, "\n## Notes\n");
        for n in &r.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    let _ = writeln!(s, "\n## How each figure is measured\n");
    for (k, v) in &r.methods {
        let _ = writeln!(s, "- **{k}**: {v}");
    }
    s
}

/// `docs/bench/scale.json`.
pub fn render_json(r: &ScaleResults) -> String {
    serde_json::to_string_pretty(r).expect("results serialise") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# HELP tiermq_reconcile_duration_seconds x
# TYPE tiermq_reconcile_duration_seconds histogram
tiermq_reconcile_duration_seconds_bucket{controller="instance",le="0.01"} 10
tiermq_reconcile_duration_seconds_bucket{controller="instance",le="0.1"} 60
tiermq_reconcile_duration_seconds_bucket{controller="instance",le="1"} 100
tiermq_reconcile_duration_seconds_bucket{controller="instance",le="+Inf"} 100
tiermq_reconcile_duration_seconds_sum{controller="instance"} 5
tiermq_reconcile_duration_seconds_count{controller="instance"} 100
tiermq_reconcile_duration_seconds_bucket{controller="sharedcluster",le="0.01"} 1
tiermq_reconcile_duration_seconds_bucket{controller="sharedcluster",le="0.1"} 1
tiermq_reconcile_duration_seconds_bucket{controller="sharedcluster",le="1"} 1
tiermq_reconcile_duration_seconds_bucket{controller="sharedcluster",le="+Inf"} 1
tiermq_broker_requests_total{method="GET"} 40
tiermq_broker_requests_total{method="PUT"} 3
tiermq_reconciles_total{controller="instance",result="ok"} 90
tiermq_reconciles_total{controller="instance",result="error"} 10
"#;

    #[test]
    fn quantiles_interpolate_linearly_within_the_bucket_as_prometheus_does() {
        let b = histogram_buckets(
            PAGE,
            "tiermq_reconcile_duration_seconds",
            "controller=\"instance\"",
        );
        assert_eq!(
            b,
            vec![
                (0.01, 10.0),
                (0.1, 60.0),
                (1.0, 100.0),
                (f64::INFINITY, 100.0)
            ]
        );
        // rank 50 is 40 of the 50 in (0.01, 0.1]: 0.01 + 0.09 * 40/50
        let p50 = histogram_quantile(0.5, &b).unwrap();
        assert!((p50 - 0.082).abs() < 1e-9, "{p50}");
        // rank 99 is 39 of the 40 in (0.1, 1]
        let p99 = histogram_quantile(0.99, &b).unwrap();
        assert!((p99 - (0.1 + 0.9 * 39.0 / 40.0)).abs() < 1e-9, "{p99}");
        // the first bucket starts at 0
        let p05 = histogram_quantile(0.05, &b).unwrap();
        assert!((p05 - 0.005).abs() < 1e-9, "{p05}");
    }

    #[test]
    fn a_rank_in_the_inf_bucket_gives_the_highest_finite_bound_and_empty_gives_none() {
        let b = vec![(0.1, 1.0), (1.0, 2.0), (f64::INFINITY, 10.0)];
        assert_eq!(histogram_quantile(0.99, &b), Some(1.0));
        assert!(above_buckets(0.99, &b));
        assert!(!above_buckets(0.2, &b));
        assert_eq!(
            histogram_quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 0.0)]),
            None
        );
        assert_eq!(histogram_quantile(0.5, &[]), None);
        // without a +Inf bucket the histogram is malformed
        assert_eq!(histogram_quantile(0.5, &[(1.0, 3.0)]), None);
    }

    #[test]
    fn counters_are_summed_per_label_and_deltas_count_new_keys_from_zero() {
        let m = counter_by_label(PAGE, "tiermq_broker_requests_total", "method", "");
        assert_eq!(m.get("GET"), Some(&40.0));
        assert_eq!(m.get("PUT"), Some(&3.0));
        let r = counter_by_label(
            PAGE,
            "tiermq_reconciles_total",
            "controller",
            "controller=\"instance\"",
        );
        assert_eq!(r.get("instance"), Some(&100.0));
        let later: BTreeMap<String, f64> =
            [("GET".to_string(), 55.0), ("DELETE".to_string(), 1.0)].into();
        let d = delta(&m, &later);
        assert_eq!(d.get("GET"), Some(&15.0));
        assert_eq!(d.get("DELETE"), Some(&1.0));
        assert_eq!(d.get("PUT"), None);
    }

    #[test]
    fn proc_files_parse() {
        let status = "Name:\ttiermq-operator\nVmHWM:\t   81920 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(parse_proc_status(status), Some((40.0, 80.0)));
        assert_eq!(parse_proc_status("Name: x\n"), None);
        let stat =
            "1234 (tokio (rt) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1 1 1";
        assert_eq!(parse_proc_stat_ticks(stat), Some(300));
        // this process has a status and a stat file
        let me = std::process::id();
        assert!(memory_of(me, "now").unwrap().vm_rss_mib > 0.0);
        assert!(cpu_seconds_of(me).is_some());
    }

    #[test]
    fn nearest_rank_quantiles_and_placement() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 3.0);
        assert_eq!(quantile(&v, 0.99), 5.0);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
        let clusters = ["a".to_string(), "b".to_string(), "c".to_string()];
        assert_eq!(
            placement(0, 50, &clusters),
            ("scale-00".into(), "i0000".into(), "a")
        );
        assert_eq!(
            placement(999, 50, &clusters),
            ("scale-19".into(), "i0999".into(), "a")
        );
        assert_eq!(placement(52, 50, &clusters).2, "b");
        let i: tiermq_crd::RabbitMQInstance = serde_yaml::from_str(&instance_yaml(
            "scale-01",
            "i0051",
            "b",
            "rabbitmq:3.10-management",
        ))
        .unwrap();
        assert_eq!(i.spec.shared.cluster_ref.unwrap().name, "b");
    }

    #[test]
    fn the_report_states_unmet_goals_and_every_section() {
        let mut r = ScaleResults {
            instances: 10,
            shared_clusters: 2,
            namespaces: 1,
            operator_memory: vec![MemoryPoint {
                when: "after convergence".into(),
                vm_rss_mib: 50.0,
                vm_hwm_mib: 120.0,
            }],
            ..Default::default()
        };
        r.converge.ready = 10;
        r.idle.seconds = 60.0;
        r.idle.api_writes = 1;
        r.idle.broker_by_method = [("GET".to_string(), 30.0)].into();
        r.conversions = Some(Conversions {
            started: 3,
            finished: 3,
            loaded: vec![LoadedInstance {
                instance: "scale-00/i0000".into(),
                lost: 0,
                converted: true,
                ..Default::default()
            }],
            ..Default::default()
        });
        let g = goals(&r);
        assert!(!g[0].2, "120 MiB peak is over 100 MB");
        assert!(!g[1].2, "an API write while idle");
        assert!(g[2].2 && g[3].2);
        let md = render_markdown(&r, "scale.json");
        for part in [
            "## Goals",
            "## Convergence",
            "## Idle minute",
            "## Operator",
            "## Conversions at once",
            "## kubesim",
            "**not met**",
        ] {
            assert!(md.contains(part), "{part} in\n{md}");
        }
        let back: ScaleResults = serde_json::from_str(&render_json(&r)).unwrap();
        assert_eq!(back.operator_memory, r.operator_memory);
    }
}
