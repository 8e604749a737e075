//! Single active consumer: a durable queue with `x-single-active-consumer: true`, publishers with
//! confirms, several consumers of which the broker feeds one at a time. Besides loss, it checks
//! that no delivery was processed (taken from the channel until its ack was accepted) while
//! another consumer was processing one (`overlapping`), and that per publisher messages were
//! first processed in publish order (`out_of_order`; a publisher's own re-send after a failed
//! confirm also shows here).

use std::collections::HashMap;
use std::time::Duration;

use lapin::types::AMQPValue;

use super::{Declare, Pattern, Plan, UnitPlan, out_of_order};
use crate::load::config::PatternKnobs;
use crate::load::consumer::Source;
use crate::load::ledger::{Delivery, Expect, Ledger, Unit};
use crate::load::report::PatternReport;

pub(super) fn plan(clients: String, queue: String, knobs: &PatternKnobs) -> Plan {
    Plan {
        pattern: Pattern::SingleActiveConsumer,
        clients,
        topology: vec![Declare::Queue {
            name: queue.clone(),
            args: vec![("x-single-active-consumer", AMQPValue::Boolean(true))],
        }],
        exchange: String::new(),
        routes: vec![queue.clone()],
        mandatory: true,
        confirms: true,
        units: vec![UnitPlan {
            unit: Unit::new(queue.clone(), Some(queue.clone()), Expect::All),
            consumers: (0..knobs.sac_consumers.max(2))
                .map(|_| Source::Queue(queue.clone()))
                .collect(),
            start_after_offset: None,
        }],
        more_consumers_of_unit0: Some(Source::Queue(queue)),
    }
}

/// Deliveries that began while a different consumer was still processing one.
pub(super) fn overlapping(log: &[Delivery]) -> u64 {
    let mut v: Vec<&Delivery> = log.iter().collect();
    v.sort_by_key(|d| d.received_at);
    let mut busy_until: HashMap<u32, Duration> = HashMap::new();
    let mut n = 0;
    for d in v {
        if busy_until
            .iter()
            .any(|(c, end)| *c != d.consumer && *end > d.received_at)
        {
            n += 1;
        }
        let e = busy_until.entry(d.consumer).or_default();
        *e = (*e).max(d.done_at);
    }
    n
}

pub(super) fn refine(r: &mut PatternReport, ledger: &Ledger) {
    for (u, unit) in r.units.iter_mut().zip(ledger.units()) {
        let mut log = unit.log();
        log.sort_by_key(|d| d.received_at);
        u.overlapping = overlapping(&log);
        u.out_of_order = out_of_order(&log);
        let mut handovers = 0;
        let mut per_consumer: HashMap<u32, u64> = HashMap::new();
        for (i, d) in log.iter().enumerate() {
            *per_consumer.entry(d.consumer).or_default() += 1;
            if i > 0 && log[i - 1].consumer != d.consumer {
                handovers += 1;
            }
        }
        let mut active: Vec<_> = per_consumer.into_iter().collect();
        active.sort();
        let active: Vec<String> = active
            .iter()
            .map(|(c, n)| format!("con-{c}: {n}"))
            .collect();
        u.notes.push(format!(
            "processed by {} (handovers {handovers})",
            active.join(", ")
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(consumer: u32, from: u64, to: u64) -> Delivery {
        Delivery {
            id: format!("p0-{from}"),
            consumer,
            received_at: Duration::from_millis(from),
            done_at: Duration::from_millis(to),
            ..Default::default()
        }
    }

    #[test]
    fn processing_by_two_consumers_at_once_is_found() {
        assert_eq!(overlapping(&[d(0, 0, 5), d(0, 6, 9), d(1, 10, 12)]), 0);
        assert_eq!(overlapping(&[d(0, 0, 5), d(1, 4, 6), d(0, 7, 8)]), 1);
    }
}
