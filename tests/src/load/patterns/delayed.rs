//! Delayed delivery with TTL + dead-lettering: publishers with confirms into a "delay" queue that
//! has no consumers, `x-message-ttl` and a dead-letter route (default exchange) to the target
//! queue, which the consumers read. A confirmed message that never reaches the target is lost;
//! one that arrives before the delay has passed since it was sent is early.

use std::time::Duration;

use lapin::types::AMQPValue;

use super::{Declare, Pattern, Plan, UnitPlan, text};
use crate::load::config::{LoadConfig, PatternKnobs};
use crate::load::consumer::Source;
use crate::load::ledger::{Expect, Ledger, Unit};
use crate::load::report::PatternReport;

pub(super) fn plan(clients: String, q: String, cfg: &LoadConfig, knobs: &PatternKnobs) -> Plan {
    let delay = format!("{q}.wait");
    let target = format!("{q}.ready");
    Plan {
        pattern: Pattern::DelayedDelivery,
        clients,
        topology: vec![
            Declare::Queue {
                name: target.clone(),
                args: vec![],
            },
            Declare::Queue {
                name: delay.clone(),
                args: vec![
                    (
                        "x-message-ttl",
                        AMQPValue::LongLongInt(knobs.delay.as_millis() as i64),
                    ),
                    ("x-dead-letter-exchange", text("")),
                    ("x-dead-letter-routing-key", text(&target)),
                ],
            },
        ],
        exchange: String::new(),
        routes: vec![delay],
        mandatory: true,
        confirms: true,
        units: vec![UnitPlan {
            unit: Unit::new(target.clone(), Some(target.clone()), Expect::All),
            consumers: (0..cfg.consumers.max(1))
                .map(|_| Source::Queue(target.clone()))
                .collect(),
            start_after_offset: None,
        }],
        more_consumers_of_unit0: Some(Source::Queue(target)),
    }
}

pub(super) fn refine(r: &mut PatternReport, ledger: &Ledger, knobs: &PatternKnobs) {
    let published = ledger.published();
    for (u, unit) in r.units.iter_mut().zip(ledger.units()) {
        let mut delays: Vec<Duration> = unit
            .log()
            .iter()
            .filter_map(|d| {
                published
                    .get(&d.id)
                    .map(|p| d.received_at.saturating_sub(p.first_sent_at))
            })
            .collect();
        delays.sort();
        u.early = delays.iter().filter(|d| **d < knobs.delay).count() as u64;
        if let (Some(min), Some(max)) = (delays.first(), delays.last()) {
            u.notes.push(format!(
                "delay {} ms: seen {}..{} ms (median {} ms)",
                knobs.delay.as_millis(),
                min.as_millis(),
                max.as_millis(),
                delays[delays.len() / 2].as_millis()
            ));
        }
    }
}
