//! Stream: publishers with confirms into a stream queue (`x-queue-type: stream`, durable). Two
//! readers, as streams require over AMQP 0-9-1: a prefetch (`basic.qos`) and manual acks, the
//! start given with the consumer argument `x-stream-offset`. One reads from `first` and is owed
//! every confirmed message (messages of earlier runs, which a stream keeps, are skipped by their
//! run header); call F the first offset of this run it reads. The other starts at offset F + N
//! once the first reader has seen that offset exist, and is owed every confirmed message except
//! those the first reader saw below F + N; its first delivery must be F + N. After a reconnect a
//! reader continues at the offset after the last one it received. Each must see its messages in
//! publish order (per publisher).

use super::{Declare, Pattern, Plan, UnitPlan, out_of_order, text};
use crate::load::config::PatternKnobs;
use crate::load::consumer::{Source, StreamStart};
use crate::load::ledger::{Expect, Ledger, Unit};
use crate::load::report::PatternReport;

pub(super) fn plan(clients: String, queue: String, knobs: &PatternKnobs) -> Plan {
    let n = knobs.stream_offset;
    Plan {
        pattern: Pattern::Stream,
        clients,
        topology: vec![Declare::Queue {
            name: queue.clone(),
            args: vec![("x-queue-type", text("stream"))],
        }],
        exchange: String::new(),
        routes: vec![queue.clone()],
        mandatory: true,
        confirms: true,
        units: vec![
            UnitPlan {
                unit: Unit::new(
                    format!("{queue} from first"),
                    Some(queue.clone()),
                    Expect::All,
                ),
                consumers: vec![Source::Stream {
                    queue: queue.clone(),
                    start: StreamStart::First,
                }],
                start_after_offset: None,
            },
            UnitPlan {
                unit: Unit::new(
                    format!("{queue} from first+{n}"),
                    Some(queue.clone()),
                    Expect::StreamFrom { skip: n, reader: 0 },
                ),
                consumers: vec![Source::Stream {
                    queue,
                    start: StreamStart::Offset(n),
                }],
                start_after_offset: Some((0, n)),
            },
        ],
        more_consumers_of_unit0: None,
    }
}

pub(super) fn refine(r: &mut PatternReport, ledger: &Ledger, knobs: &PatternKnobs) {
    let units = ledger.units();
    let reader_first = units.first().and_then(|u| u.first_offset());
    for (i, (u, unit)) in r.units.iter_mut().zip(&units).enumerate() {
        let log = unit.log();
        u.out_of_order = out_of_order(&log);
        let first = log.first().and_then(|d| d.offset);
        u.first_offset = first;
        // The first reader asked for `first`: wherever this run's messages begin.
        let asked = if i == 0 {
            first
        } else {
            reader_first.map(|f| f + knobs.stream_offset)
        };
        u.wrong_start = first.is_some() && first != asked;
        match (first, asked) {
            (Some(o), Some(a)) if o == a => u.notes.push(format!("first offset {o}")),
            (Some(o), a) => u.notes.push(format!("FIRST OFFSET {o}, asked for {a:?}")),
            (None, _) => u.notes.push("nothing read".into()),
        }
        if u.unexpected > 0 {
            u.notes.push(format!("read {} not owed", u.unexpected));
        }
    }
}
