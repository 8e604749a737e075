//! Work queue: publishers to the default exchange into one durable queue, competing consumers.
//! Three variants: the original on a classic queue with confirms, the same on a quorum queue,
//! and publishers without confirms (what they wrote vs what arrived; nothing was promised, so a
//! shortfall is reported as "unconfirmed", not as lost).

use super::{Declare, Pattern, Plan, UnitPlan, text};
use crate::load::config::LoadConfig;
use crate::load::consumer::Source;
use crate::load::ledger::{Expect, Unit};
use crate::load::report::PatternReport;

pub(super) fn plan(pattern: Pattern, clients: String, queue: String, cfg: &LoadConfig) -> Plan {
    let args = match pattern {
        Pattern::Quorum => vec![("x-queue-type", text("quorum"))],
        _ => vec![],
    };
    Plan {
        pattern,
        clients,
        topology: vec![Declare::Queue {
            name: queue.clone(),
            args,
        }],
        exchange: String::new(),
        routes: vec![queue.clone()],
        mandatory: pattern != Pattern::WorkQueueNoConfirm,
        confirms: pattern != Pattern::WorkQueueNoConfirm,
        units: vec![UnitPlan {
            unit: Unit::new(queue.clone(), Some(queue.clone()), Expect::All),
            consumers: (0..cfg.consumers)
                .map(|_| Source::Queue(queue.clone()))
                .collect(),
            start_after_offset: None,
        }],
        more_consumers_of_unit0: Some(Source::Queue(queue)),
    }
}

/// Without confirms, what never arrived is "unconfirmed", not lost.
pub(super) fn refine_unconfirmed(r: &mut PatternReport) {
    r.unconfirmed_missing = r.lost;
    r.lost = 0;
    for u in &mut r.units {
        if u.lost > 0 {
            u.notes.push(format!(
                "written but never received: {} (no confirms: not counted as lost)",
                u.lost
            ));
        }
        u.lost = 0;
    }
    r.notes.push(format!(
        "publishers without confirms: written {} distinct, never received {}",
        r.units.first().map_or(0, |u| u.expected),
        r.unconfirmed_missing
    ));
    r.lost_sample.clear();
}
