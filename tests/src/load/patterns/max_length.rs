//! Max-length: one durable queue per overflow mode (`drop-head`, `reject-publish`,
//! `reject-publish-dlx`), each with `x-max-length` and a dead-letter route to one `dead` queue;
//! publishers with confirms cycle through the three queues, one consumer per queue and one on the
//! dead-letter queue. The length is large enough that nothing overflows while consumers keep up.
//!
//! What overflow does, and how it is reported:
//! - `drop-head` drops the oldest message, which was confirmed: it is dead-lettered, and shows as
//!   `dead-lettered` (dropped), not as lost; lost is confirmed, never consumed and never
//!   dead-lettered.
//! - `reject-publish` nacks the publish: a refused publish (the publisher sends it again), not a
//!   loss; counted per queue as `nacked`.
//! - `reject-publish-dlx` nacks it and also dead-letters the rejected copy; counted as `nacked`
//!   and `rejected copies dead-lettered`.

use std::collections::HashSet;

use lapin::types::AMQPValue;

use super::{Declare, Pattern, Plan, UnitPlan, text};
use crate::load::config::PatternKnobs;
use crate::load::consumer::Source;
use crate::load::ledger::{Expect, Ledger, Unit};
use crate::load::report::PatternReport;

const MODES: [&str; 3] = ["drop-head", "reject-publish", "reject-publish-dlx"];

pub(super) fn plan(clients: String, q: String, knobs: &PatternKnobs) -> Plan {
    let dead = format!("{q}.dead");
    let mut topology = vec![Declare::Queue {
        name: dead.clone(),
        args: vec![],
    }];
    let mut units = Vec::new();
    let mut routes = Vec::new();
    for (i, mode) in MODES.iter().enumerate() {
        let queue = format!("{q}.{mode}");
        topology.push(Declare::Queue {
            name: queue.clone(),
            args: vec![
                (
                    "x-max-length",
                    AMQPValue::LongLongInt(i64::from(knobs.max_length)),
                ),
                ("x-overflow", text(mode)),
                ("x-dead-letter-exchange", text("")),
                ("x-dead-letter-routing-key", text(&dead)),
            ],
        });
        routes.push(queue.clone());
        units.push(UnitPlan {
            unit: Unit::new(queue.clone(), Some(queue.clone()), Expect::Routes(vec![i])),
            consumers: vec![Source::Queue(queue)],
            start_after_offset: None,
        });
    }
    units.push(UnitPlan {
        unit: Unit::new(dead.clone(), Some(dead.clone()), Expect::Nothing),
        consumers: vec![Source::Queue(dead)],
        start_after_offset: None,
    });
    Plan {
        pattern: Pattern::MaxLength,
        clients,
        topology,
        exchange: String::new(),
        routes,
        mandatory: true,
        confirms: true,
        units,
        more_consumers_of_unit0: None,
    }
}

pub(super) fn refine(r: &mut PatternReport, ledger: &Ledger) {
    let units = ledger.units();
    let Some(dead) = units.last() else { return };
    let dead_log = dead.log();
    let published = ledger.published();
    let nacked = ledger.nacked_by_route();
    let mut total_nacked = 0;
    let mut total_dropped = 0;
    for (i, (u, unit)) in r.units.iter_mut().zip(&units).take(MODES.len()).enumerate() {
        let received: HashSet<String> = unit.log().into_iter().map(|d| d.id).collect();
        let copies = dead_log
            .iter()
            .filter(|d| d.died_in.as_deref() == unit.queue.as_deref())
            .collect::<Vec<_>>();
        // A dead-lettered copy of a message that was later consumed or never confirmed: the
        // copy of a rejected publish, not a drop.
        let rejected_copies = copies
            .iter()
            .filter(|d| received.contains(&d.id) || !published.contains_key(&d.id))
            .count();
        let reasons: HashSet<&str> = copies
            .iter()
            .filter_map(|d| d.death_reason.as_deref())
            .collect();
        let n = nacked.get(&i).copied().unwrap_or(0);
        u.nacked = n;
        u.rejected_copies = rejected_copies as u64;
        total_nacked += n;
        total_dropped += u.dead_lettered;
        u.notes.push(format!(
            "x-overflow {}: dropped {}, nacked {n}, rejected copies dead-lettered {rejected_copies}{}",
            MODES[i],
            u.dead_lettered,
            if reasons.is_empty() {
                String::new()
            } else {
                let mut r: Vec<_> = reasons.into_iter().collect();
                r.sort();
                format!(" (x-first-death-reason {})", r.join(","))
            }
        ));
    }
    r.notes.push(format!(
        "overflow: dropped {total_dropped} (confirmed, then dead-lettered unconsumed), nacked {total_nacked} (refused publishes, re-sent)"
    ));
}
