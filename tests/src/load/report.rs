//! What a run reports: live counters ([`LoadStats`]), the original single-queue report
//! ([`LoadReport`]), and the per-pattern table ([`WorkloadReport`], one [`PatternReport`] per
//! pattern with one [`UnitReport`] per queue or subscriber).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::client::Interruption;
use super::config::PatternKnobs;
use super::ledger::{Expect, Ledger};
use super::patterns::{self, Pattern};

/// Live counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Publishes written (including re-sends after a failure).
    pub sent: u64,
    /// Distinct messages the broker confirmed.
    pub confirmed: u64,
    /// Deliveries consumed and acknowledged (including duplicates).
    pub received: u64,
    /// Deliveries of an id that had been consumed before (by the same queue or subscriber).
    pub duplicates: u64,
    /// Messages owed to a queue or subscriber and not consumed yet (while running: in flight; at
    /// the end: lost).
    pub unconsumed: u64,
    pub reconnects: u64,
    /// Publishes the broker refused or did not confirm (re-sent later).
    pub refused: u64,
    /// Longest time without any publisher confirm since the first one (publishers stalled).
    pub max_confirm_gap: Duration,
}

impl std::ops::AddAssign for LoadStats {
    fn add_assign(&mut self, o: LoadStats) {
        self.sent += o.sent;
        self.confirmed += o.confirmed;
        self.received += o.received;
        self.duplicates += o.duplicates;
        self.unconsumed += o.unconsumed;
        self.reconnects += o.reconnects;
        self.refused += o.refused;
        self.max_confirm_gap = self.max_confirm_gap.max(o.max_confirm_gap);
    }
}

/// The final account of a work-queue load run (see [`super::Load`]).
#[derive(Clone, Debug)]
pub struct LoadReport {
    pub stats: LoadStats,
    /// Confirmed messages never consumed.
    pub lost: u64,
    /// Up to 20 of the lost ids, for the failure message.
    pub lost_sample: Vec<String>,
    pub duplicates: u64,
    pub interruptions: Vec<Interruption>,
    pub duration: Duration,
    /// Connections opened, per role.
    pub connections: HashMap<&'static str, u64>,
}

impl LoadReport {
    /// Interruption reasons, deduplicated, for test output.
    pub fn reasons(&self) -> Vec<String> {
        reasons(&self.interruptions)
    }
}

fn reasons(interruptions: &[Interruption]) -> Vec<String> {
    let mut v: Vec<String> = interruptions.iter().map(|i| i.reason.clone()).collect();
    v.sort();
    v.dedup();
    v
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        write!(
            f,
            "sent {} confirmed {} received {} lost {} duplicates {} reconnects {} refused {} in {:.1}s",
            s.sent,
            s.confirmed,
            s.received,
            self.lost,
            self.duplicates,
            s.reconnects,
            s.refused,
            self.duration.as_secs_f64()
        )
    }
}

/// One queue or subscriber of a pattern.
#[derive(Clone, Debug, Default)]
pub struct UnitReport {
    /// Queue name, or the subscriber's connection name.
    pub name: String,
    /// Messages this unit was owed: confirmed (without confirms: written) and routed to it; for a
    /// subscriber, sent after one of its bind-oks and confirmed before that subscription's close.
    pub expected: u64,
    /// Deliveries acknowledged, duplicates included.
    pub received: u64,
    /// Owed and never received (and not dead-lettered out of this queue). For a subscriber: the
    /// strict miss count.
    pub lost: u64,
    /// Deliveries of an id this unit had received before.
    pub duplicates: u64,
    /// Up to 20 lost ids.
    pub lost_sample: Vec<String>,
    /// Subscribers: of `lost`, the ones confirmed less than the close boundary before a close.
    pub lost_near_close: u64,
    /// Subscribers: subscriptions (one per bind-ok) and the gaps between them.
    pub subscriptions: u32,
    pub gap_time: Duration,
    /// Owed, never received, dead-lettered out of this queue (max-length drops).
    pub dead_lettered: u64,
    /// Max-length: publishes to this queue the broker nacked (refused, then re-sent).
    pub nacked: u64,
    /// Max-length: dead-lettered copies of refused publishes (`reject-publish-dlx`).
    pub rejected_copies: u64,
    /// Distinct ids received that were not owed (topic: misrouted; subscriber: sent before a
    /// bind-ok or confirmed after a close).
    pub unexpected: u64,
    /// Ids first received after a later id of the same publisher (stream, single active consumer).
    pub out_of_order: u64,
    /// Single active consumer: deliveries processed while another consumer was processing one.
    pub overlapping: u64,
    /// Delayed delivery: deliveries that arrived before the delay had passed since the publish.
    pub early: u64,
    /// Deliveries of other runs (by their run header), acked and set aside.
    pub other_runs: u64,
    /// Stream: the first offset this reader received, and whether it is not the one it asked for.
    pub first_offset: Option<u64>,
    pub wrong_start: bool,
    pub notes: Vec<String>,
}

/// One pattern's account.
#[derive(Clone, Debug)]
pub struct PatternReport {
    pub pattern: Pattern,
    /// Publishes written (re-sends included).
    pub sent: u64,
    /// Distinct messages confirmed; `None` for publishers without confirms.
    pub confirmed: Option<u64>,
    /// Deliveries acknowledged over all units (dead-letter sinks included).
    pub received: u64,
    /// Sum of the units' `lost`.
    pub lost: u64,
    /// Sum of the units' `duplicates`, dead-letter sinks excluded.
    pub duplicates: u64,
    /// Publishers without confirms: distinct messages written and never received. Not `lost`:
    /// nothing was promised.
    pub unconfirmed_missing: u64,
    /// Publishes not confirmed and re-sent: nacked (e.g. `reject-publish` on a full queue),
    /// returned as unroutable, or unanswered when the connection failed.
    pub refused: u64,
    pub nacked: u64,
    pub returned: u64,
    pub reconnects: u64,
    pub publisher_connections: u64,
    pub consumer_connections: u64,
    pub max_confirm_gap: Duration,
    pub units: Vec<UnitReport>,
    pub notes: Vec<String>,
    /// Up to 20 lost ids over all units (`unit: id`).
    pub lost_sample: Vec<String>,
}

impl PatternReport {
    /// The accounting of `ledger` with what only this pattern checks.
    pub(crate) fn build(ledger: &Ledger, confirms: bool, knobs: &PatternKnobs) -> PatternReport {
        let units = ledger.units();
        let accounts = ledger.account(knobs.close_boundary);
        let c = &ledger.counters;
        let mut r = PatternReport {
            pattern: ledger.pattern,
            sent: c.sent.load(Ordering::Relaxed),
            confirmed: confirms.then(|| c.confirmed.load(Ordering::Relaxed)),
            received: 0,
            lost: 0,
            duplicates: 0,
            unconfirmed_missing: 0,
            refused: c.refused.load(Ordering::Relaxed),
            nacked: c.nacked.load(Ordering::Relaxed),
            returned: c.returned.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            publisher_connections: c.publisher_connections.load(Ordering::Relaxed),
            consumer_connections: c.consumer_connections.load(Ordering::Relaxed),
            max_confirm_gap: c.max_confirm_gap(),
            units: Vec::new(),
            notes: Vec::new(),
            lost_sample: Vec::new(),
        };
        for (u, a) in units.iter().zip(accounts) {
            let mut ur = UnitReport {
                name: u.name.clone(),
                expected: a.expected,
                received: a.deliveries,
                lost: a.missing.len() as u64,
                duplicates: a.duplicates,
                lost_sample: a.missing.iter().take(20).cloned().collect(),
                lost_near_close: a.missing_near_close,
                dead_lettered: a.dead_lettered,
                unexpected: a.unexpected,
                other_runs: u.foreign_count(),
                ..Default::default()
            };
            if ur.other_runs > 0 {
                ur.notes
                    .push(format!("set aside {} of other runs", ur.other_runs));
            }
            let sink = u.expect == Expect::Nothing;
            if sink {
                ur.notes.push(
                    "dead-letter sink: nothing owed (a repeat is one refused id dead-lettered again)"
                        .into(),
                );
            }
            for id in a.missing.iter().take(20 - r.lost_sample.len().min(20)) {
                r.lost_sample.push(format!("{}: {id}", u.name));
            }
            r.received += ur.received;
            r.lost += ur.lost;
            if !sink {
                r.duplicates += ur.duplicates;
            }
            r.units.push(ur);
        }
        patterns::refine(&mut r, ledger, knobs);
        r
    }

    /// The unit called `name`, or whose name ends with `name`.
    pub fn unit(&self, name: &str) -> Option<&UnitReport> {
        self.units
            .iter()
            .find(|u| u.name == name)
            .or_else(|| self.units.iter().find(|u| u.name.ends_with(name)))
    }

    /// Lost messages plus every pattern-specific violation (out of order, overlapping active
    /// consumers, early delayed deliveries, a stream reader that started elsewhere than asked,
    /// misrouted topic messages): 0 on a clean run.
    pub fn problems(&self) -> u64 {
        self.lost
            + self
                .units
                .iter()
                .map(|u| u.out_of_order + u.overlapping + u.early + u64::from(u.wrong_start))
                .sum::<u64>()
            + if self.pattern == Pattern::TopicRouting {
                self.units.iter().map(|u| u.unexpected).sum()
            } else {
                0
            }
    }

    fn row_notes(&self) -> String {
        let mut n = self.notes.clone();
        if self.reconnects > 0 {
            n.push(format!("reconnects {}", self.reconnects));
        }
        if self.refused > 0 {
            n.push(format!(
                "re-sent {} (nacked {}, returned {})",
                self.refused, self.nacked, self.returned
            ));
        }
        n.join("; ")
    }
}

fn unit_notes(u: &UnitReport) -> String {
    let mut n = u.notes.clone();
    if u.out_of_order > 0 {
        n.push(format!("OUT OF ORDER {}", u.out_of_order));
    }
    if u.overlapping > 0 {
        n.push(format!("OVERLAPPING {}", u.overlapping));
    }
    if u.early > 0 {
        n.push(format!("EARLY {}", u.early));
    }
    if u.lost > 0 {
        let sample: Vec<&str> = u.lost_sample.iter().take(5).map(String::as_str).collect();
        n.push(format!("lost e.g. {}", sample.join(" ")));
    }
    n.join("; ")
}

/// The account of a [`super::Workload`]: one [`PatternReport`] per pattern, printable as a table.
#[derive(Clone, Debug)]
pub struct WorkloadReport {
    pub patterns: Vec<PatternReport>,
    pub interruptions: Vec<Interruption>,
    pub duration: Duration,
    /// The close boundary the subscriber rows use.
    pub close_boundary: Duration,
}

impl WorkloadReport {
    pub fn pattern(&self, p: Pattern) -> Option<&PatternReport> {
        self.patterns.iter().find(|r| r.pattern == p)
    }

    /// Lost messages over all patterns.
    pub fn lost(&self) -> u64 {
        self.patterns.iter().map(|p| p.lost).sum()
    }

    /// Interruption reasons, deduplicated.
    pub fn reasons(&self) -> Vec<String> {
        reasons(&self.interruptions)
    }
}

impl fmt::Display for WorkloadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header = [
            "pattern",
            "sent",
            "confirmed",
            "received",
            "lost",
            "duplicates",
            "notes",
        ];
        let mut rows: Vec<[String; 7]> = Vec::new();
        for p in &self.patterns {
            rows.push([
                p.pattern.to_string(),
                p.sent.to_string(),
                p.confirmed.map_or("-".into(), |c| c.to_string()),
                p.received.to_string(),
                if p.confirmed.is_some() {
                    p.lost.to_string()
                } else {
                    "-".into()
                },
                p.duplicates.to_string(),
                p.row_notes(),
            ]);
            for u in &p.units {
                rows.push([
                    format!("  └ {}", u.name),
                    String::new(),
                    u.expected.to_string(),
                    u.received.to_string(),
                    if p.confirmed.is_some() {
                        u.lost.to_string()
                    } else {
                        "-".into()
                    },
                    u.duplicates.to_string(),
                    unit_notes(u),
                ]);
            }
        }
        let mut width = header.map(str::len);
        for r in &rows {
            for (w, c) in width.iter_mut().zip(r.iter()).take(6) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, cells: &[&str]| -> fmt::Result {
            write!(f, "|")?;
            for (i, c) in cells.iter().enumerate() {
                if i == 0 || i == 6 {
                    write!(f, " {c:<w$} |", w = if i == 6 { 0 } else { width[i] })?;
                } else {
                    write!(f, " {c:>w$} |", w = width[i])?;
                }
            }
            writeln!(f)
        };
        line(f, &header)?;
        let sep: Vec<String> = (0..7)
            .map(|i| match i {
                0 | 6 => "-".repeat(width[i].max(3)),
                _ => format!("{}:", "-".repeat(width[i].max(3) - 1)),
            })
            .collect();
        line(f, &sep.iter().map(String::as_str).collect::<Vec<_>>())?;
        for r in &rows {
            line(f, &r.iter().map(String::as_str).collect::<Vec<_>>())?;
        }
        writeln!(
            f,
            "└ rows are queues or subscribers: `confirmed` there is what that queue or subscriber was owed \
(for a subscriber: sent after its bind-ok and confirmed before its close), `lost` what it never received; \
a subscriber's lost count is strict, its notes give the part confirmed within {} ms before a close.",
            self.close_boundary.as_millis()
        )
    }
}
