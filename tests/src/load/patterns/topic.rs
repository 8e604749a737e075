//! Topic routing: publishers with confirms (mandatory) to a durable topic exchange, cycling
//! through four routing keys; four durable queues bound with different keys, one consumer each.
//! Every confirmed message must reach every queue whose binding matches its key, once; a queue
//! that receives a message its binding does not match reports it as misrouted. The `audit`
//! queue matches no key: it must stay empty.

use lapin::ExchangeKind;

use super::{Declare, Pattern, Plan, UnitPlan};
use crate::load::consumer::Source;
use crate::load::ledger::{Expect, Unit};
use crate::load::report::PatternReport;

/// Routing keys the publishers cycle through.
const KEYS: [&str; 4] = [
    "orders.eu.created",
    "orders.us.created",
    "orders.eu.shipped",
    "orders.us.shipped",
];

/// Queue suffix and binding key.
const BINDINGS: [(&str, &str); 4] = [
    ("eu", "orders.eu.*"),
    ("created", "orders.*.created"),
    ("all", "orders.#"),
    ("audit", "audit.#"),
];

pub(super) fn plan(clients: String, exchange: String) -> Plan {
    let routes: Vec<String> = KEYS.iter().map(|k| k.to_string()).collect();
    let mut topology = vec![Declare::Exchange {
        name: exchange.clone(),
        kind: ExchangeKind::Topic,
    }];
    let mut units = Vec::new();
    for (suffix, binding) in BINDINGS {
        let queue = format!("{exchange}.{suffix}");
        topology.push(Declare::Queue {
            name: queue.clone(),
            args: vec![],
        });
        topology.push(Declare::Bind {
            queue: queue.clone(),
            exchange: exchange.clone(),
            key: binding.into(),
        });
        let matching = routes
            .iter()
            .enumerate()
            .filter(|(_, k)| topic_matches(binding, k))
            .map(|(i, _)| i)
            .collect();
        units.push(UnitPlan {
            unit: Unit::new(queue.clone(), Some(queue.clone()), Expect::Routes(matching)),
            consumers: vec![Source::Queue(queue)],
            start_after_offset: None,
        });
    }
    Plan {
        pattern: Pattern::TopicRouting,
        clients,
        topology,
        exchange,
        routes,
        mandatory: true,
        confirms: true,
        units,
        more_consumers_of_unit0: None,
    }
}

/// AMQP topic matching: words separated by `.`, `*` matches one word, `#` zero or more.
pub(super) fn topic_matches(binding: &str, key: &str) -> bool {
    fn m(b: &[&str], k: &[&str]) -> bool {
        match (b.first(), k.first()) {
            (None, None) => true,
            (Some(&"#"), _) => m(&b[1..], k) || (!k.is_empty() && m(b, &k[1..])),
            (Some(&"*"), Some(_)) => m(&b[1..], &k[1..]),
            (Some(w), Some(v)) => w == v && m(&b[1..], &k[1..]),
            _ => false,
        }
    }
    let b: Vec<&str> = binding.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    m(&b, &k)
}

pub(super) fn refine(r: &mut PatternReport) {
    for (u, (_, binding)) in r.units.iter_mut().zip(BINDINGS) {
        u.notes.push(format!("bound {binding}"));
        if u.unexpected > 0 {
            u.notes.push(format!("MISROUTED {}", u.unexpected));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_keys_match_like_the_broker() {
        assert!(topic_matches("orders.eu.*", "orders.eu.created"));
        assert!(!topic_matches("orders.eu.*", "orders.us.created"));
        assert!(!topic_matches("orders.eu.*", "orders.eu.created.late"));
        assert!(topic_matches("orders.*.created", "orders.us.created"));
        assert!(topic_matches("orders.#", "orders.us.shipped"));
        assert!(topic_matches("orders.#", "orders"));
        assert!(topic_matches("#", "anything.at.all"));
        assert!(topic_matches("#.shipped", "orders.us.shipped"));
        assert!(!topic_matches("audit.#", "orders.eu.created"));
    }
}
