//! The bench's figures and their renderings: `BENCHMARKS.md`, the JSON file and one SVG plot per
//! conversion. Pure functions over [`BenchResults`], so a unit test can render a synthetic run
//! without brokers (the CI smoke); `tiermq-demo bench` fills the results from a real run.
//!
//! It also attributes the seconds of a phase from the operator's JSON log
//! ([`attribute_phase`]): the time between one executor step's start and the next log line of
//! that pass is the step's, everything else in the phase window is waiting (requeue interval,
//! a broker not answering yet, the grace period).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Everything one `make bench` run measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BenchResults {
    /// UTC date and time of the run.
    pub date: String,
    /// `git rev-parse --short HEAD` (with `-dirty` when the tree had changes).
    pub commit: String,
    pub machine: Machine,
    /// RabbitMQ version the brokers reported.
    pub rabbitmq: String,
    /// Cargo profile of the operator and the bench binary (`release` or `debug`).
    pub profile: String,
    /// The load each conversion ran under, in words.
    pub load: String,
    pub conversions: Vec<ConversionRun>,
    pub baselines: Baselines,
    /// A large parked backlog drained by a Shovel upgrade and by a raw shovel, side by side.
    #[serde(default)]
    pub parked: Option<ParkedDrain>,
    /// Publish throughput per cluster (1 publisher, 64 in flight, 5 s; msg/s).
    pub publish_throughput: Vec<(String, f64)>,
    /// Figure name → how it was measured.
    pub methods: Vec<(String, String)>,
    /// Anything the run could not measure, with the reason.
    pub notes: Vec<String>,
}

/// `git rev-parse --short HEAD`, with `-dirty` when tracked files differ from it: the code a
/// run measured (empty outside a git checkout).
pub fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let c = git(&["rev-parse", "--short", "HEAD"]);
    if git(&["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        c
    } else {
        format!("{c}-dirty")
    }
}

/// The head of a report's run table: date, commit and machine (the bench and the scale bench).
pub fn run_rows(s: &mut String, date: &str, commit: &str, m: &Machine) {
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| date | {date} |");
    let _ = writeln!(s, "| commit | `{commit}` |");
    let _ = writeln!(
        s,
        "| machine | {} cores, {:.1} GiB RAM, {} |",
        m.cores, m.ram_gib, m.cpu_model
    );
}

/// The machine the run used.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub ram_gib: f64,
    /// `/proc/loadavg` (1, 5, 15 min) when the run started and when it ended: other work on the
    /// machine (with 2 cores, a load above 2 means the bench shared them).
    #[serde(default)]
    pub load_at_start: String,
    #[serde(default)]
    pub load_at_end: String,
}

impl Machine {
    /// Reads `/proc/cpuinfo` and `/proc/meminfo` (Linux); unknown fields stay empty.
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let ram_kib: f64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        Machine {
            cpu_model,
            cores,
            ram_gib: ram_kib / 1024.0 / 1024.0,
            load_at_start: load_average(),
            load_at_end: String::new(),
        }
    }
}

/// The 1, 5 and 15 minute load averages (Linux), e.g. `0.52 0.58 0.59`; empty elsewhere.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One conversion under load.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ConversionRun {
    /// `Shared` or `Dedicated`.
    pub from: String,
    pub to: String,
    /// `Consume` or `Shovel`.
    pub drain: String,
    /// Confirmed and not yet consumed when the tier was flipped (the load's ledger).
    pub backlog_at_flip: u64,
    /// The source queue's depth (management API) last sampled before `DrainingSource`.
    pub backlog_at_drain_start: Option<u64>,
    pub sent: u64,
    pub confirmed: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub reconnects: u64,
    /// Longest time without any publisher confirm (s).
    pub max_write_gap_s: f64,
    /// Per consumer outage: seconds from the close the client saw to its next delivery.
    pub consumer_resumes_s: Vec<f64>,
    /// Consumer outages with no delivery afterwards.
    pub consumer_never_resumed: u64,
    /// Longest time no consumer received anything, from the timeline (s; see
    /// [`ConversionRun::delivery_gap_from_samples`]).
    #[serde(default)]
    pub longest_delivery_gap_s: f64,
    /// Flip until `Stable` on the new tier (s).
    pub total_s: f64,
    pub phases: Vec<PhaseTime>,
    /// Flip until the destination broker's management API first answered (s): the StatefulSet,
    /// pod start and broker boot on an upgrade; 0 when the destination was up already.
    pub provisioning_s: f64,
    /// `DrainingSource` (s).
    pub drain_s: f64,
    /// The grace period the operator applied: max(spec, 2 × measured statistics lag) (s).
    pub grace_s: f64,
    /// total − provisioning − drain − grace (s).
    pub overhead_s: f64,
    /// `backlog_at_drain_start / drain_s` (msg/s).
    pub drain_throughput: Option<f64>,
    /// Where the seconds of each phase went (from the operator log).
    pub attribution: Vec<Attribution>,
    /// Timeline, every ~250 ms.
    pub samples: Vec<Sample>,
}

impl ConversionRun {
    /// `Shared -> Dedicated`.
    pub fn direction(&self) -> String {
        format!("{} -> {}", self.from, self.to)
    }

    /// Seconds in `phase`.
    pub fn phase_s(&self, phase: &str) -> f64 {
        self.phases
            .iter()
            .filter(|p| p.phase == phase)
            .map(|p| p.seconds)
            .sum()
    }

    /// Longest consumer outage (s).
    pub fn max_consumer_resume_s(&self) -> Option<f64> {
        self.consumer_resumes_s.iter().copied().reduce(f64::max)
    }

    /// Seconds of `phase` (all phases: `None`) the operator spent waiting between reconcile
    /// passes, and working inside them, by the attribution.
    pub fn wait_and_work(&self, phase: Option<&str>) -> (f64, f64) {
        let mut out = (0.0, 0.0);
        for a in self
            .attribution
            .iter()
            .filter(|a| phase.is_none_or(|p| a.phase == p))
        {
            // Rows of a split phase carry a "<part>: " prefix.
            if a.what.contains("between passes") || a.what.contains("after a failed") {
                out.0 += a.seconds;
            } else if !a.what.contains("unknown (") {
                out.1 += a.seconds;
            }
        }
        out
    }

    /// Longest stretch of the timeline (s) in which no consumer received anything, once
    /// consuming had started: from the last sample with deliveries to the next with some.
    pub fn delivery_gap_from_samples(&self) -> f64 {
        let mut longest: f64 = 0.0;
        let mut since: Option<f64> = None;
        let mut started = false;
        let mut prev_t = None;
        for s in &self.samples {
            if s.consume_rate > 0.0 {
                if let Some(from) = since.take() {
                    longest = longest.max(s.t - from);
                }
                started = true;
            } else if started && since.is_none() {
                // The gap began after the previous sample, which still saw deliveries.
                since = Some(prev_t.unwrap_or(s.t));
            }
            prev_t = Some(s.t);
        }
        longest
    }

    /// Is it an upgrade (shared → dedicated)?
    pub fn upgrade(&self) -> bool {
        self.to == "Dedicated"
    }
}

/// Time in one phase, and when it started (s since the flip).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PhaseTime {
    pub phase: String,
    pub start_s: f64,
    pub seconds: f64,
}

/// Seconds of a phase spent on one thing.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Attribution {
    pub phase: String,
    pub what: String,
    pub seconds: f64,
}

/// One timeline sample (s since the flip; rates in msg/s over the last interval).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Sample {
    pub t: f64,
    pub publish_rate: f64,
    pub consume_rate: f64,
    /// Source queue depth (management API; its statistics lag by up to one interval).
    pub source_backlog: Option<u64>,
}

/// The baselines, measured in the same run with the same load and backlog.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Baselines {
    pub naive_cutover: Option<NaiveCutover>,
    pub raw_shovel: Option<RawDrain>,
    pub raw_consumer: Option<RawDrain>,
}

/// Repoint the Service to the destination and delete the source vhost, no drain.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NaiveCutover {
    pub backlog_at_cutover: u64,
    pub confirmed: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub max_write_gap_s: f64,
}

/// A backlog moved or consumed without the operator.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RawDrain {
    pub messages: u64,
    pub seconds: f64,
}

impl RawDrain {
    /// msg/s.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.messages as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// A backlog parked on the source (no publishers, no consumers) moved by a Shovel upgrade, and
/// the same number of messages moved by a raw shovel between the same brokers: large enough that
/// the phase's fixed costs (starting the shovels, two fresh empty samples) do not hide the
/// transfer rate, which the load's small backlog cannot show.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ParkedDrain {
    /// Messages confirmed into the source queue before the flip.
    pub messages: u64,
    /// Messages in the destination queue once the conversion finished (a passive declare).
    pub at_destination: u64,
    /// Seconds in `DrainingSource`.
    pub drain_s: f64,
    /// Seconds from the flip until `Stable` on the destination.
    pub total_s: f64,
    /// The raw shovel with as many messages; `None` when it could not be measured.
    pub raw: Option<RawDrain>,
}

impl ParkedDrain {
    /// The operator's Shovel drain in msg/s (messages / `DrainingSource`).
    pub fn rate(&self) -> f64 {
        RawDrain {
            messages: self.messages,
            seconds: self.drain_s,
        }
        .rate()
    }

    /// Operator Shovel drain / raw shovel throughput.
    pub fn ratio(&self) -> Option<f64> {
        let raw = self.raw.as_ref()?.rate();
        (raw > 0.0).then(|| self.rate() / raw)
    }
}

/// A goal of issue 14, item 6, and what the run measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Goal {
    pub goal: String,
    pub measured: String,
    pub met: Option<bool>,
    pub why: String,
}

/// Checks the goals this bench covers against the results.
pub fn goals(r: &BenchResults) -> Vec<Goal> {
    let mut out = Vec::new();
    let lost: u64 = r.conversions.iter().map(|c| c.lost).sum();
    out.push(Goal {
        goal: "0 lost (every conversion)".into(),
        measured: r
            .conversions
            .iter()
            .map(|c| format!("{} {}: {}", c.drain, c.direction(), c.lost))
            .collect::<Vec<_>>()
            .join("; "),
        met: (!r.conversions.is_empty()).then_some(lost == 0),
        why: if lost == 0 {
            String::new()
        } else {
            "confirmed messages were never consumed; see the rows above".into()
        },
    });
    let ups: Vec<&ConversionRun> = r.conversions.iter().filter(|c| c.upgrade()).collect();
    let gap = ups.iter().map(|c| c.max_write_gap_s).reduce(f64::max);
    out.push(Goal {
        goal: "write gap <= 1 s on upgrade".into(),
        measured: gap.map_or("-".into(), |g| format!("{g:.2} s (worst upgrade)")),
        met: gap.map(|g| g <= 1.0),
        why: match gap {
            Some(g) if g > 1.0 => "publishers saw no confirm for this long around the write cutover (SingleWriteDualRead: source frozen, publishing connections closed, clients reconnect through the Service with backoff)".into(),
            _ => String::new(),
        },
    });
    let downs: Vec<&ConversionRun> = r.conversions.iter().filter(|c| !c.upgrade()).collect();
    let resume = downs
        .iter()
        .filter_map(|c| c.max_consumer_resume_s())
        .reduce(f64::max);
    let never: u64 = downs.iter().map(|c| c.consumer_never_resumed).sum();
    out.push(Goal {
        goal: "reconnect <= 2 s on downgrade (consumer: forced close to consuming again)".into(),
        measured: match resume {
            Some(s) => format!("{s:.2} s (worst downgrade consumer outage){}", if never > 0 { format!(", {never} outage(s) never resumed") } else { String::new() }),
            None => "no consumer was closed".into(),
        },
        met: resume.map(|s| s <= 2.0 && never == 0),
        why: match resume {
            Some(s) if s > 2.0 => "a consumer stayed without deliveries that long after its close: reconnect backoff plus refused logins while the destination was not yet writable/readable for it".into(),
            _ => String::new(),
        },
    });
    let worst = r
        .conversions
        .iter()
        .max_by(|a, b| a.overhead_s.total_cmp(&b.overhead_s));
    out.push(Goal {
        goal: "operator overhead <= 5 s (total - provisioning - drain - grace)".into(),
        measured: worst.map_or("-".into(), |c| {
            format!(
                "{:.1} s (worst: {} {}; all: {})",
                c.overhead_s,
                c.drain,
                c.direction(),
                r.conversions
                    .iter()
                    .map(|c| format!("{:.1}", c.overhead_s))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }),
        met: worst.map(|c| c.overhead_s <= 5.0),
        why: match worst {
            Some(c) if c.overhead_s > 5.0 => {
                let (wait, work) = c.wait_and_work(None);
                format!(
                    "of that conversion's {:.1} s, {wait:.1} s were waits between reconcile passes and {work:.1} s work inside them: \
the operator looks again 100-200 ms after a phase change or after the steps its phase waits for, and a statistics \
interval after a sample that found the source empty, but a draining backlog is polled at the drain poll \
(see the table of work and waits per phase)",
                    c.total_s
                )
            }
            _ => String::new(),
        },
    });
    let raw = r.baselines.raw_shovel.as_ref().map(RawDrain::rate);
    let loaded = busy_machine(&r.machine);
    let shovel = r
        .conversions
        .iter()
        .filter(|c| c.drain == "Shovel")
        .filter_map(|c| c.drain_throughput)
        .reduce(f64::min);
    let small = match (shovel, raw) {
        (Some(s), Some(r)) if r > 0.0 => Some(s / r),
        _ => None,
    };
    let small_text = small.map(|x| {
        format!(
            "{x:.2} x with the load's backlog ({:.0} vs {:.0} msg/s)",
            shovel.unwrap_or(0.0),
            raw.unwrap_or(0.0)
        )
    });
    let floor = || {
        format!(
            "with the load's small backlog the raw shovel needed {:.2} s, while DrainingSource lasted {} s: \
the source counts as drained only after two consecutive fresh samples show it empty (the first drain poll after the \
write cutover still finds the backlog, the next finds it moved, a statistics interval later the second confirms it), \
a floor the shovel's speed does not change",
            r.baselines.raw_shovel.as_ref().map_or(0.0, |b| b.seconds),
            r.conversions
                .iter()
                .filter(|c| c.drain == "Shovel")
                .map(|c| format!("{:.1}", c.drain_s))
                .collect::<Vec<_>>()
                .join(" and ")
        )
    };
    // Judged on the parked backlog when it was measured: the goal is about the drain's
    // throughput, which a sub-second transfer cannot show.
    let (measured, met, why) = match r.parked.as_ref().and_then(|p| Some((p, p.ratio()?))) {
        Some((p, x)) => (
            format!(
                "{x:.2} x with {} parked messages ({:.0} vs {:.0} msg/s){}",
                p.messages,
                p.rate(),
                p.raw.as_ref().map_or(0.0, RawDrain::rate),
                small_text
                    .as_ref()
                    .map_or(String::new(), |t| format!("; {t}"))
            ),
            Some(x >= 0.9),
            if x < 0.9 {
                format!(
                    "with {} messages the shovel moved them at {:.0} msg/s but DrainingSource also holds the start of the shovels and the \
two fresh empty samples (about 2 s); {}",
                    p.messages,
                    p.rate(),
                    floor()
                )
            } else {
                small
                    .filter(|x| *x < 0.9)
                    .map_or(String::new(), |_| floor())
            },
        ),
        None => (
            small_text.unwrap_or_else(|| "-".into()),
            small.map(|x| x >= 0.9),
            match small {
                Some(x) if x < 0.9 => floor(),
                _ => String::new(),
            },
        ),
    };
    out.push(Goal {
        goal: "Shovel drain >= 0.9 x raw shovel throughput".into(),
        measured,
        met,
        why,
    });
    if let Some(note) = loaded {
        for g in out.iter_mut().filter(|g| g.met == Some(false)) {
            g.why = format!("{}; {note}", g.why);
        }
    }
    out
}

/// A note when other work shared the machine during the run (a 1-minute load average above
/// the core count at its start or end), which stretches every timing.
fn busy_machine(m: &Machine) -> Option<String> {
    let first = |l: &str| l.split_whitespace().next()?.parse::<f64>().ok();
    let worst = [first(&m.load_at_start), first(&m.load_at_end)]
        .into_iter()
        .flatten()
        .reduce(f64::max)?;
    (m.cores > 0 && worst > m.cores as f64).then(|| {
        format!(
            "this run shared the machine with other work (load average up to {worst:.1} on {} cores), which stretches these timings",
            m.cores
        )
    })
}

/// One line of the operator's JSON log, as the attribution needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct LogLine {
    /// Seconds since the flip (the log time minus the epoch [`parse_operator_line`] is given).
    pub t: f64,
    pub message: String,
    /// The executor step of a `running step` line.
    pub step: Option<String>,
    /// The requeue delay of a `pass done` line (ms).
    pub requeue_ms: Option<u64>,
}

/// What the operator was doing after a log line, until the next line that starts something
/// else; `None`: the line continues what was going on (e.g. a broker call's own log line).
fn activity(lines: &[LogLine], i: usize) -> Option<String> {
    let l = &lines[i];
    let m = l.message.as_str();
    Some(match m {
        "pass started" => "observe (reads from the API server and the management APIs)".into(),
        "planned" => "plan and placement".into(),
        "running step" => format!("step {}", l.step.as_deref().unwrap_or("?")),
        "status recorded" => "status write, Events, metrics".into(),
        "pass done" => {
            let next = lines[i + 1..]
                .iter()
                .find(|n| n.message == "pass started")
                .map(|n| n.t);
            let req = l.requeue_ms.unwrap_or(0) as f64 / 1000.0;
            match next {
                Some(n) if n - l.t < 0.9 * req => {
                    "between passes: woken early by a watch event".into()
                }
                _ => format!("between passes: requeue interval ({req:.0} s)"),
            }
        }
        _ if m.starts_with("step failed") || m == "reconcile failed" => {
            "after a failed pass: error backoff until the next pass".into()
        }
        _ => return None,
    })
}

/// Statements the figures support, with their numbers (for the report's reader).
pub fn observations(r: &BenchResults) -> Vec<String> {
    let mut out = Vec::new();
    let gap = r.conversions.iter().max_by(|a, b| {
        a.longest_delivery_gap_s
            .total_cmp(&b.longest_delivery_gap_s)
    });
    let resume = r
        .conversions
        .iter()
        .filter_map(|c| c.max_consumer_resume_s())
        .reduce(f64::max);
    if let (Some(g), Some(res)) = (gap, resume)
        && g.longest_delivery_gap_s > 2.0 * res
    {
        out.push(format!(
            "A forced close costs a consumer at most {res:.2} s, yet consumers got no deliveries for up to {:.1} s ({} {}): \
once the source is empty they stay on it until the operator has seen it empty in two fresh samples (a drain poll and a \
statistics interval apart) and moved to DestinationOnly, which closes them; meanwhile new messages wait on the destination. The reconnect goal counts only the first part.",
            g.longest_delivery_gap_s,
            g.drain,
            g.direction()
        ));
    }
    let dual: Vec<f64> = r
        .conversions
        .iter()
        .map(|c| c.phase_s("DualWriteDualRead"))
        .filter(|d| *d > 0.0)
        .collect();
    if !dual.is_empty() {
        let work = r
            .conversions
            .iter()
            .map(|c| c.wait_and_work(Some("DualWriteDualRead")).1)
            .fold(0.0, f64::max);
        out.push(format!(
            "DualWriteDualRead, which needs one pass of at most {work:.1} s work, lasted {} s; the operator acts on a recorded \
phase change after 100 ms (`requeue()` in crates/tiermq-operator/src/controller/plan/requeue.rs), so the rest of each phase is \
the broker's own time, the drain's samples and the grace period.",
            dual.iter()
                .map(|d| format!("{d:.1}"))
                .collect::<Vec<_>>()
                .join("/")
        ));
    }
    if let Some(n) = &r.baselines.naive_cutover {
        let lost: u64 = r.conversions.iter().map(|c| c.lost).sum();
        out.push(format!(
            "The naive cutover lost {} confirmed messages ({} waited on the source at the cutover, the rest were confirmed there \
until the publishers reconnected); the four operator conversions with the same load and backlog lost {lost}.",
            n.lost, n.backlog_at_cutover
        ));
    }
    out
}

/// Where the seconds of a phase went, from the operator's log lines about the instance (sorted
/// by time, `t` in s since the flip). Each pass logs `pass started`, `planned` (observed),
/// `running step` per step, `status recorded` (when it wrote) and `pass done` with its requeue
/// delay; the time from one of these lines to the next is the activity the first one began.
/// `window` is the phase's interval (from the watch); time before the first line is "unknown".
pub fn attribute_phase(phase: &str, window: (f64, f64), lines: &[LogLine]) -> Vec<Attribution> {
    let (start, end) = window;
    let mut per: Vec<(String, f64)> = Vec::new();
    let mut add = |what: String, d: f64| {
        if d <= 0.0 {
            return;
        }
        match per.iter_mut().find(|(w, _)| *w == what) {
            Some(e) => e.1 += d,
            None => per.push((what, d)),
        }
    };
    // Segments: (from, activity) at each line that starts one.
    let mut segments: Vec<(f64, String)> = Vec::new();
    for i in 0..lines.len() {
        if let Some(a) = activity(lines, i) {
            segments.push((lines[i].t, a));
        }
    }
    let first = segments.first().map_or(end, |s| s.0);
    add(
        "unknown (before the first log line)".into(),
        first.min(end) - start,
    );
    for (k, (from, what)) in segments.iter().enumerate() {
        let to = segments.get(k + 1).map_or(f64::INFINITY, |n| n.0);
        let (a, b) = (from.max(start), to.min(end));
        add(what.clone(), b - a);
    }
    per.sort_by(|a, b| b.1.total_cmp(&a.1));
    per.into_iter()
        .map(|(what, seconds)| Attribution {
            phase: phase.into(),
            what,
            seconds,
        })
        .collect()
}

/// [`attribute_phase`] for consecutive parts of a phase: `parts` are (start, label) in time order,
/// each running until the next one (the last until the window's end); each part's rows are
/// prefixed with its label. Parts outside the window are cut away.
pub fn attribute_parts(
    phase: &str,
    window: (f64, f64),
    parts: &[(f64, &str)],
    lines: &[LogLine],
) -> Vec<Attribution> {
    let mut out = Vec::new();
    for (k, (from, label)) in parts.iter().enumerate() {
        let to = parts.get(k + 1).map_or(window.1, |n| n.0);
        let (a, b) = (from.max(window.0), to.min(window.1));
        if b <= a {
            continue;
        }
        out.extend(
            attribute_phase(phase, (a, b), lines)
                .into_iter()
                .filter(|x| x.seconds > 0.0)
                .map(|mut x| {
                    x.what = format!("{label}: {}", x.what);
                    x
                }),
        );
    }
    out
}

/// Parses one operator JSON log line; `t` is the line's UTC time in seconds since `epoch`.
pub fn parse_operator_line(line: &str, epoch: chrono::DateTime<chrono::Utc>) -> Option<LogLine> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let ts = v.get("timestamp")?.as_str()?;
    let t = chrono::DateTime::parse_from_rfc3339(ts).ok()?.to_utc();
    let fields = v.get("fields")?;
    let message = fields.get("message")?.as_str()?.to_string();
    let step = (message == "running step")
        .then(|| {
            fields
                .get("step")
                .and_then(|s| s.as_str())
                .map(String::from)
        })
        .flatten();
    Some(LogLine {
        t: (t - epoch).as_seconds_f64(),
        message,
        step,
        requeue_ms: fields.get("requeue_ms").and_then(|r| r.as_u64()),
    })
}

fn f1(x: f64) -> String {
    format!("{x:.1}")
}

fn met(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "MET",
        Some(false) => "SHORT",
        None => "not measured",
    }
}

/// `BENCHMARKS.md`. `svgs` are the plots' paths relative to the repository root, one per
/// conversion (same order), or empty.
pub fn render_markdown(r: &BenchResults, svgs: &[String]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# tiermq benchmarks\n");
    let _ = writeln!(
        s,
        "Written by `make bench` (`tiermq-demo bench`); every figure with how it was measured is also in \
[docs/bench/bench.json](docs/bench/bench.json). Numbers from one run on a shared 2-core machine: expect noise.\n"
    );
    let _ = writeln!(
        s,
        "Many instances on one operator (1,000 shared-tier instances, then 50 conversions at once) are measured by \
`make bench-scale`: [docs/bench/SCALE.md](docs/bench/SCALE.md).\n"
    );
    run_rows(&mut s, &r.date, &r.commit, &r.machine);
    let _ = writeln!(
        s,
        "| load average (1/5/15 min) | {} at the start, {} at the end |",
        r.machine.load_at_start, r.machine.load_at_end
    );
    let _ = writeln!(
        s,
        "| RabbitMQ | {} (kubesim, one broker per cluster) |",
        r.rabbitmq
    );
    let _ = writeln!(s, "| build profile | {} |", r.profile);
    let _ = writeln!(s, "| load | {} |\n", r.load);

    let _ = writeln!(
        s,
        "## Goals (issue 14, item 6; the part this bench covers)\n"
    );
    let _ = writeln!(
        s,
        "| goal | measured | result | why short |\n|---|---|---|---|"
    );
    for g in goals(r) {
        let _ = writeln!(
            s,
            "| {} | {} | **{}** | {} |",
            g.goal,
            g.measured,
            met(g.met),
            g.why
        );
    }

    let obs = observations(r);
    if !obs.is_empty() {
        let _ = writeln!(s, "\nObservations from the figures below:\n");
        for o in obs {
            let _ = writeln!(s, "- {o}");
        }
    }

    let _ = writeln!(s, "\n## Per direction and drain strategy\n");
    let _ = writeln!(
        s,
        "| conversion | drain | backlog at flip | lost | dup | longest write gap | consumer close → consuming (max; n) | longest time without deliveries | total | provisioning | drain | grace | **overhead** | reconnects |"
    );
    let _ = writeln!(
        s,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for c in &r.conversions {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} s | {} | {} s | {} s | {} s | {} s | {} s | **{} s** | {} |",
            c.direction(),
            c.drain,
            c.backlog_at_flip,
            c.lost,
            c.duplicates,
            format_args!("{:.2}", c.max_write_gap_s),
            match c.max_consumer_resume_s() {
                Some(m) => format!(
                    "{m:.2} s; {}{}",
                    c.consumer_resumes_s.len(),
                    if c.consumer_never_resumed > 0 {
                        format!(" (+{} never)", c.consumer_never_resumed)
                    } else {
                        String::new()
                    }
                ),
                None => "no close".into(),
            },
            f1(c.longest_delivery_gap_s),
            f1(c.total_s),
            f1(c.provisioning_s),
            f1(c.drain_s),
            f1(c.grace_s),
            f1(c.overhead_s),
            c.reconnects
        );
    }
    let _ = writeln!(
        s,
        "\nTime per phase (s, as seen by a watch on the instance):\n"
    );
    let names = [
        "PreparingDestination",
        "DualWriteDualRead",
        "SingleWriteDualRead",
        "DrainingSource",
        "DestinationOnly",
        "Completed",
    ];
    let _ = writeln!(s, "| conversion | drain | {} |", names.join(" | "));
    let _ = writeln!(s, "|---|---|{}", "---:|".repeat(names.len()));
    for c in &r.conversions {
        let cells: Vec<String> = names.iter().map(|p| f1(c.phase_s(p))).collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            c.direction(),
            c.drain,
            cells.join(" | ")
        );
    }

    let _ = writeln!(
        s,
        "\nOf each phase, seconds the operator waited between reconcile passes / worked inside passes (from its log, \
see below; the waits include the broker boot on an upgrade and the grace period):\n"
    );
    let _ = writeln!(s, "| conversion | drain | {} | all |", names.join(" | "));
    let _ = writeln!(s, "|---|---|{}---:|", "---:|".repeat(names.len()));
    for c in &r.conversions {
        let cell = |p: Option<&str>| {
            let (wait, work) = c.wait_and_work(p);
            format!("{wait:.1} / {work:.1}")
        };
        let cells: Vec<String> = names.iter().map(|p| cell(Some(p))).collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            c.direction(),
            c.drain,
            cells.join(" | "),
            cell(None)
        );
    }
    let _ = writeln!(s, "\n## Baselines (same run, same load and backlog)\n");
    match &r.baselines.naive_cutover {
        Some(n) => {
            let _ = writeln!(
                s,
                "- **Naive cutover** (Service repointed to the destination, source vhost deleted, no drain): \
backlog {} at the cutover, confirmed {}, received {}, **lost {}**, duplicates {}, longest write gap {:.2} s.",
                n.backlog_at_cutover,
                n.confirmed,
                n.received,
                n.lost,
                n.duplicates,
                n.max_write_gap_s
            );
        }
        None => {
            let _ = writeln!(s, "- Naive cutover: not measured (see notes).");
        }
    }
    let drain_tp = |d: &str| {
        r.conversions
            .iter()
            .filter(|c| c.drain == d)
            .filter_map(|c| {
                c.drain_throughput
                    .map(|t| format!("{} {t:.0} msg/s", c.direction()))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (label, raw, d) in [
        ("Raw dynamic shovel", &r.baselines.raw_shovel, "Shovel"),
        ("Raw consumer", &r.baselines.raw_consumer, "Consume"),
    ] {
        match raw {
            Some(b) => {
                let ratios: Vec<String> = r
                    .conversions
                    .iter()
                    .filter(|c| c.drain == d)
                    .filter_map(|c| {
                        c.drain_throughput
                            .map(|t| format!("{} {:.2}", c.direction(), t / b.rate().max(1e-9)))
                    })
                    .collect();
                let _ = writeln!(
                    s,
                    "- **{label}**: {} messages in {:.2} s = {:.0} msg/s. {d} drain in the conversions: {}. \
**{d} drain / {label}: {}**.",
                    b.messages,
                    b.seconds,
                    b.rate(),
                    drain_tp(d),
                    ratios.join(", ")
                );
            }
            None => {
                let _ = writeln!(s, "- {label}: not measured (see notes).");
            }
        }
    }
    if let Some(p) = &r.parked {
        let raw = match (&p.raw, p.ratio()) {
            (Some(b), Some(x)) => format!(
                "the raw shovel moved as many in {:.2} s ({:.0} msg/s). **Shovel drain / raw shovel: {x:.2}**",
                b.seconds,
                b.rate()
            ),
            _ => "the raw shovel could not be measured (see notes)".into(),
        };
        let _ = writeln!(
            s,
            "- **Parked backlog** ({} messages on the source, no publisher, no consumer): the Shovel upgrade spent {:.2} s in \
DrainingSource ({:.0} msg/s; {:.1} s from the flip to Stable) and the destination queue then held {} ({} missing); {raw}.",
            p.messages,
            p.drain_s,
            p.rate(),
            p.total_s,
            p.at_destination,
            p.messages.saturating_sub(p.at_destination)
        );
    }

    if !r.publish_throughput.is_empty() {
        let tp: Vec<String> = r
            .publish_throughput
            .iter()
            .map(|(c, t)| format!("{c} {t:.0} msg/s"))
            .collect();
        let _ = writeln!(
            s,
            "- Publish throughput (1 publisher, 64 unconfirmed in flight, 5 s; both clusters share this machine): {}.",
            tp.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "\n## Where the seconds of PreparingDestination and DestinationOnly go\n"
    );
    let _ = writeln!(
        s,
        "From the operator's own log (JSON, debug level for `tiermq_operator::controller`): each reconcile pass logs \
`pass started`, `planned` (observed), `running step` per step, `status recorded` and `pass done` with its requeue delay; \
the time from one of these lines to the next is the activity the first began, cut to the phase's window as the watch saw it. \
A requeue wait shorter than its delay was cut short by a watch event. The grace period is spent in `DestinationOnly` \
between passes.\n"
    );
    for c in &r.conversions {
        let rows: Vec<&Attribution> = c
            .attribution
            .iter()
            .filter(|a| a.phase == "PreparingDestination" || a.phase == "DestinationOnly")
            .collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            "**{} ({})**: PreparingDestination {} s (destination broker answering after {} s), DestinationOnly {} s (grace {} s)\n",
            c.direction(),
            c.drain,
            f1(c.phase_s("PreparingDestination")),
            f1(c.provisioning_s),
            f1(c.phase_s("DestinationOnly")),
            f1(c.grace_s)
        );
        let _ = writeln!(s, "| phase | what | s |\n|---|---|---:|");
        for a in rows {
            let _ = writeln!(s, "| {} | {} | {:.2} |", a.phase, a.what, a.seconds);
        }
        let _ = writeln!(s);
    }

    if !svgs.is_empty() {
        let _ = writeln!(s, "## Timelines\n");
        for (c, p) in r.conversions.iter().zip(svgs) {
            let _ = writeln!(s, "![{} {}]({p})\n", c.direction(), c.drain);
        }
        let _ = writeln!(
            s,
            "Bands: PD PreparingDestination, DWDR DualWriteDualRead, SWDR SingleWriteDualRead, DS DrainingSource, \
DO DestinationOnly, C Completed (as the watch saw them).\n"
        );
    }
    let _ = writeln!(s, "## How each figure was measured\n");
    for (k, v) in &r.methods {
        let _ = writeln!(s, "- **{k}**: {v}");
    }
    if !r.notes.is_empty() {
        let _ = writeln!(s, "\n## Notes\n");
        for n in &r.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}

/// The JSON file: the results plus the goals.
pub fn render_json(r: &BenchResults) -> String {
    #[derive(Serialize)]
    struct Out<'a> {
        #[serde(flatten)]
        results: &'a BenchResults,
        goals: Vec<Goal>,
    }
    serde_json::to_string_pretty(&Out {
        results: r,
        goals: goals(r),
    })
    .unwrap_or_default()
}

/// Reads one series' value from a sample.
type Pick = Box<dyn Fn(&Sample) -> Option<f64>>;

/// An SVG of publish rate, consume rate and source backlog over time with the phases marked.
pub fn render_svg(c: &ConversionRun) -> Result<String, String> {
    use plotters::prelude::*;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (900, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let t_max = c
            .samples
            .last()
            .map_or(c.total_s, |s| s.t)
            .max(c.total_s)
            .max(1.0);
        let y_max = c
            .samples
            .iter()
            .flat_map(|s| {
                [
                    s.publish_rate,
                    s.consume_rate,
                    s.source_backlog.unwrap_or(0) as f64,
                ]
            })
            .fold(10.0, f64::max)
            // Head room for the phase names and the legend above the lines.
            * 1.6;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{} ({} drain)", c.direction(), c.drain),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..t_max, 0f64..y_max)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("seconds since the flip")
            .y_desc("msg/s | messages")
            .disable_mesh()
            .draw()
            .map_err(|e| e.to_string())?;
        // Phases: alternate shaded bands with their names at the top.
        for (i, p) in c.phases.iter().enumerate() {
            let (a, b) = (p.start_s, (p.start_s + p.seconds).min(t_max));
            let color = if i % 2 == 0 {
                RGBColor(235, 240, 250)
            } else {
                RGBColor(250, 245, 230)
            };
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(a, 0.0), (b, y_max)],
                    color.filled(),
                )))
                .map_err(|e| e.to_string())?;
            let short: String = p.phase.chars().filter(|ch| ch.is_uppercase()).collect();
            chart
                .draw_series(std::iter::once(Text::new(
                    short,
                    (a + 0.1, y_max * (0.97 - 0.04 * (i % 2) as f64)),
                    ("sans-serif", 12),
                )))
                .map_err(|e| e.to_string())?;
        }
        let series: [(&str, RGBColor, Pick); 3] = [
            (
                "publish rate (confirmed msg/s)",
                BLUE,
                Box::new(|s| Some(s.publish_rate)),
            ),
            (
                "consume rate (msg/s)",
                RGBColor(0, 140, 0),
                Box::new(|s| Some(s.consume_rate)),
            ),
            (
                "source backlog (messages, mgmt API)",
                RED,
                Box::new(|s| s.source_backlog.map(|b| b as f64)),
            ),
        ];
        for (label, color, f) in series {
            chart
                .draw_series(LineSeries::new(
                    c.samples.iter().filter_map(|s| f(s).map(|v| (s.t, v))),
                    color.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::Coordinate(560, 42))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_run() -> BenchResults {
        let conv = |to: &str, drain: &str| ConversionRun {
            from: if to == "Dedicated" {
                "Shared"
            } else {
                "Dedicated"
            }
            .into(),
            to: to.into(),
            drain: drain.into(),
            backlog_at_flip: 800,
            backlog_at_drain_start: Some(300),
            sent: 2000,
            confirmed: 2000,
            received: 2000,
            lost: 0,
            duplicates: 1,
            reconnects: 4,
            max_write_gap_s: 0.8,
            longest_delivery_gap_s: 0.5,
            consumer_resumes_s: vec![0.4, 1.1],
            consumer_never_resumed: 0,
            total_s: 20.0,
            phases: vec![
                PhaseTime {
                    phase: "PreparingDestination".into(),
                    start_s: 0.0,
                    seconds: 8.0,
                },
                PhaseTime {
                    phase: "DualWriteDualRead".into(),
                    start_s: 8.0,
                    seconds: 1.0,
                },
                PhaseTime {
                    phase: "DrainingSource".into(),
                    start_s: 9.0,
                    seconds: 3.0,
                },
                PhaseTime {
                    phase: "DestinationOnly".into(),
                    start_s: 12.0,
                    seconds: 8.0,
                },
            ],
            provisioning_s: 6.0,
            drain_s: 4.0,
            grace_s: 5.0,
            overhead_s: 5.0,
            drain_throughput: Some(75.0),
            attribution: attribute_phase(
                "PreparingDestination",
                (0.0, 8.0),
                &[
                    line(0.5, "pass started", None, None),
                    line(0.7, "planned", None, None),
                    line(1.0, "running step", Some("EnsureDedicatedCluster"), None),
                    line(1.5, "pass done", None, Some(1000)),
                    line(7.0, "pass started", None, None),
                    line(7.2, "status recorded", None, None),
                    line(7.3, "pass done", None, Some(1000)),
                ],
            ),
            samples: (0..80)
                .map(|i| Sample {
                    t: i as f64 * 0.25,
                    publish_rate: 80.0,
                    consume_rate: if i < 40 { 120.0 } else { 80.0 },
                    source_backlog: (i % 3 != 0).then_some(800u64.saturating_sub(i * 20)),
                })
                .collect(),
        };
        BenchResults {
            date: "2026-12-01 21:00 UTC".into(),
            commit: "abc1234".into(),
            machine: Machine {
                cpu_model: "test cpu".into(),
                cores: 2,
                ram_gib: 4.0,
                load_at_start: "0.50 0.40 0.30".into(),
                load_at_end: "1.00 0.50 0.40".into(),
            },
            rabbitmq: "3.10.x".into(),
            profile: "debug".into(),
            load: "synthetic".into(),
            conversions: vec![
                conv("Dedicated", "Consume"),
                conv("Shared", "Consume"),
                conv("Dedicated", "Shovel"),
                conv("Shared", "Shovel"),
            ],
            baselines: Baselines {
                naive_cutover: Some(NaiveCutover {
                    backlog_at_cutover: 800,
                    lost: 790,
                    ..Default::default()
                }),
                raw_shovel: Some(RawDrain {
                    messages: 800,
                    seconds: 0.5,
                }),
                raw_consumer: None,
            },
            parked: None,
            publish_throughput: vec![("shared".into(), 4000.0)],
            methods: vec![("lost".into(), "the ledger".into())],
            notes: vec![],
        }
    }

    fn line(t: f64, m: &str, step: Option<&str>, requeue_ms: Option<u64>) -> LogLine {
        LogLine {
            t,
            message: m.into(),
            step: step.map(String::from),
            requeue_ms,
        }
    }

    #[test]
    fn attribution_covers_the_phase_window() {
        let a = attribute_phase(
            "P",
            (1.0, 10.0),
            &[
                line(0.0, "pass started", None, None),
                line(0.5, "planned", None, None),
                line(2.0, "running step", Some("A"), None),
                line(2.5, "tenant ensured", None, None),
                line(3.0, "running step", Some("B"), None),
                line(3.5, "status recorded", None, None),
                line(4.0, "pass done", None, Some(1000)),
                line(5.0, "pass started", None, None),
                line(5.5, "running step", Some("A"), None),
                line(6.0, "step failed; nothing recorded, will retry", None, None),
                line(7.0, "pass started", None, None),
                line(7.5, "pass done", None, Some(5000)),
                line(8.0, "pass started", None, None),
                line(12.0, "running step", Some("C"), None),
            ],
        );
        let total: f64 = a.iter().map(|x| x.seconds).sum();
        assert!((total - 9.0).abs() < 1e-9, "{a:?}");
        let get = |w: &str| a.iter().find(|x| x.what == w).map(|x| x.seconds);
        assert_eq!(get("step A"), Some(1.5));
        assert_eq!(get("step B"), Some(0.5));
        assert_eq!(get("between passes: requeue interval (1 s)"), Some(1.0));
        assert_eq!(
            get("between passes: woken early by a watch event"),
            Some(0.5)
        );
        assert_eq!(
            get("after a failed pass: error backoff until the next pass"),
            Some(1.0)
        );
        assert_eq!(
            get("observe (reads from the API server and the management APIs)"),
            Some(0.5 + 0.5 + 2.0)
        );
        assert_eq!(get("plan and placement"), Some(1.0));
    }

    #[test]
    fn parts_split_a_phase_and_keep_its_total() {
        let lines = [
            line(0.0, "pass started", None, None),
            line(0.5, "running step", Some("RevokeAll"), None),
            line(0.7, "pass done", None, Some(1000)),
            line(1.7, "pass started", None, None),
            line(1.9, "pass done", None, Some(1000)),
        ];
        let a = attribute_parts(
            "DestinationOnly",
            (0.0, 3.0),
            &[(0.0, "before"), (0.5, "grace")],
            &lines,
        );
        let total: f64 = a.iter().map(|x| x.seconds).sum();
        assert!((total - 3.0).abs() < 1e-9, "{a:?}");
        assert_eq!(
            a[0].what,
            "before: observe (reads from the API server and the management APIs)"
        );
        assert!(
            a.iter()
                .any(|x| x.what == "grace: step RevokeAll" && (x.seconds - 0.2).abs() < 1e-9)
        );
        let run = ConversionRun {
            attribution: a,
            ..Default::default()
        };
        let (wait, work) = run.wait_and_work(Some("DestinationOnly"));
        assert!(
            (wait - 2.1).abs() < 1e-9 && (work - 0.9).abs() < 1e-9,
            "{wait} {work}"
        );
    }

    #[test]
    fn parses_an_operator_log_line() {
        let epoch = chrono::DateTime::parse_from_rfc3339("2026-12-01T13:29:15Z")
            .unwrap()
            .to_utc();
        let l = r#"{"timestamp":"2026-12-01T13:29:15.5Z","level":"DEBUG","fields":{"message":"running step","step":"CopyTopology"},"target":"tiermq_operator::controller::execute"}"#;
        let got = parse_operator_line(l, epoch).unwrap();
        assert_eq!(got, line(0.5, "running step", Some("CopyTopology"), None));
        let l = r#"{"timestamp":"2026-12-01T13:29:14Z","level":"DEBUG","fields":{"message":"pass done","phase":"Stable","requeue_ms":1000}}"#;
        assert_eq!(
            parse_operator_line(l, epoch).unwrap(),
            line(-1.0, "pass done", None, Some(1000))
        );
        assert!(parse_operator_line("not json", epoch).is_none());
    }

    /// The CI smoke of `make bench`: a synthetic run renders to Markdown, JSON that parses back
    /// and an SVG that is well-formed enough to hold every series.
    #[test]
    fn renders_report_json_and_plot_from_a_synthetic_run() {
        let r = sample_run();
        let md = render_markdown(&r, &["docs/bench/a.svg".into()]);
        assert!(md.contains("| 0 lost (every conversion)"), "{md}");
        assert!(
            md.contains("**SHORT**"),
            "the Shovel ratio 75/1600 must be short:\n{md}"
        );
        assert!(md.contains("lost 790"));
        assert!(md.contains("The naive cutover lost 790"), "{md}");
        assert!(!md.contains("shared the machine"), "{md}");
        let mut busy = r.clone();
        busy.machine.load_at_start = "3.10 2.00 1.00".into();
        let busy_md = render_markdown(&busy, &[]);
        assert!(
            busy_md.contains("load average up to 3.1 on 2 cores"),
            "{busy_md}"
        );
        assert!(md.contains("after 100 ms"), "{md}");
        // A parked backlog judges the Shovel goal; the small backlog's ratio stays beside it.
        let mut parked = r.clone();
        parked.parked = Some(ParkedDrain {
            messages: 50_000,
            at_destination: 50_000,
            drain_s: 9.0,
            total_s: 30.0,
            raw: Some(RawDrain {
                messages: 50_000,
                seconds: 8.5,
            }),
        });
        let g = goals(&parked);
        let shovel = g.iter().find(|g| g.goal.starts_with("Shovel")).unwrap();
        assert_eq!(shovel.met, Some(true), "{shovel:?}");
        assert!(
            shovel
                .measured
                .starts_with("0.94 x with 50000 parked messages")
                && shovel.measured.contains("0.05 x with the load's backlog"),
            "{shovel:?}"
        );
        assert!(
            shovel.why.contains("two consecutive fresh samples"),
            "{shovel:?}"
        );
        let parked_md = render_markdown(&parked, &[]);
        assert!(
            parked_md.contains("the destination queue then held 50000 (0 missing)"),
            "{parked_md}"
        );
        let back: BenchResults = serde_json::from_str(&render_json(&parked)).unwrap();
        assert_eq!(back.parked.unwrap().messages, 50_000);
        assert!(md.contains("![Shared -> Dedicated Consume](docs/bench/a.svg)"));
        let json = render_json(&r);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["conversions"].as_array().unwrap().len(), 4);
        assert_eq!(v["goals"].as_array().unwrap().len(), 5);
        let back: BenchResults = serde_json::from_str(&json).unwrap();
        assert_eq!(back.conversions[0].samples.len(), 80);
        let svg = render_svg(&r.conversions[0]).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{svg}"
        );
        assert!(svg.contains("source backlog"));
        assert!(svg.contains("PD"), "phase marks");
        assert!(svg.matches("<polyline").count() >= 3, "three series");
        // Deliveries stop in no sample of the synthetic run.
        assert_eq!(r.conversions[0].delivery_gap_from_samples(), 0.0);
        let mut c = r.conversions[0].clone();
        for s in c.samples.iter_mut().filter(|s| s.t >= 5.0 && s.t < 7.0) {
            s.consume_rate = 0.0;
        }
        // Last sample with deliveries at 4.75 s, next at 7.0 s.
        assert!((c.delivery_gap_from_samples() - 2.25).abs() < 1e-9);
    }
}
