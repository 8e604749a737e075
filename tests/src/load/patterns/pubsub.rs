//! Fanout pub/sub: publishers with confirms to a durable fanout exchange (not mandatory: a
//! message nobody is subscribed to is owed to nobody); each subscriber declares an exclusive,
//! server-named queue, binds it, consumes, and on any close reconnects and subscribes again with
//! a new queue. A subscriber is owed what was sent after a bind-ok and confirmed before that
//! subscription's close; messages of its reconnect gaps are excused.

use std::time::Duration;

use lapin::ExchangeKind;

use super::{Declare, Pattern, Plan, UnitPlan};
use crate::load::config::{LoadConfig, PatternKnobs};
use crate::load::consumer::Source;
use crate::load::ledger::{Expect, Ledger, Unit};
use crate::load::report::PatternReport;

/// Subscriber `i` of a fanout exchange: its own accounting unit, one reconnecting client.
pub(crate) fn subscriber(clients: &str, exchange: &str, i: u32) -> UnitPlan {
    UnitPlan {
        unit: Unit::new(format!("{clients}-sub-{i}"), None, Expect::WhileSubscribed),
        consumers: vec![Source::Subscriber {
            exchange: exchange.to_string(),
            keys: vec![String::new()],
        }],
        start_after_offset: None,
    }
}

pub(super) fn plan(clients: String, exchange: String, cfg: &LoadConfig) -> Plan {
    Plan {
        pattern: Pattern::FanoutPubSub,
        topology: vec![Declare::Exchange {
            name: exchange.clone(),
            kind: ExchangeKind::Fanout,
        }],
        routes: vec![String::new()],
        mandatory: false,
        confirms: true,
        units: (0..cfg.consumers.max(1))
            .map(|i| subscriber(&clients, &exchange, i))
            .collect(),
        more_consumers_of_unit0: None,
        exchange,
        clients,
    }
}

pub(super) fn refine(r: &mut PatternReport, ledger: &Ledger, knobs: &PatternKnobs) {
    let boundary = knobs.close_boundary.as_millis();
    for (u, unit) in r.units.iter_mut().zip(ledger.units()) {
        let subs = unit.subscriptions();
        u.subscriptions = subs.len() as u32;
        u.gap_time = subs
            .windows(2)
            .map(|w| {
                w[1].bound_at
                    .saturating_sub(w[0].closed_at.unwrap_or(w[1].bound_at))
            })
            .sum::<Duration>();
        u.notes.push(format!(
            "subscribed {}x, gaps {:.1}s{}; missed {} strict, {} outside {boundary} ms before a close",
            u.subscriptions,
            u.gap_time.as_secs_f64(),
            if subs.last().is_some_and(|s| s.closed_at.is_some()) {
                ", not subscribed at the end"
            } else {
                ""
            },
            u.lost,
            u.lost - u.lost_near_close,
        ));
        if u.unexpected > 0 {
            u.notes.push(format!(
                "also got {} not owed (sent before a bind-ok or confirmed after a close)",
                u.unexpected
            ));
        }
    }
    let near: u64 = r.units.iter().map(|u| u.lost_near_close).sum();
    r.notes.push(format!(
        "subscribers {}; lost = missed while subscribed, strict ({} of them confirmed within {boundary} ms before a close)",
        r.units.len(),
        near
    ));
}
