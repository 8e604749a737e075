//! The allowed phase transitions, written down once as data. The planner's tests check every
//! transition it makes against this table; staying in a phase is always allowed.

use tiermq_crd::MigrationPhase::{self, *};

/// Every transition between two different phases the planner may make, with the rule that makes it.
pub const EDGES: &[(MigrationPhase, MigrationPhase, &str)] = &[
    (
        Stable,
        Blocked,
        "tier flipped while not in service / no destination capacity",
    ),
    (
        Stable,
        PreparingDestination,
        "tier flipped while in service",
    ),
    (
        Blocked,
        Stable,
        "flip withdrawn (spec.tier equals status.tier again)",
    ),
    (Blocked, PreparingDestination, "the blocking reason cleared"),
    (
        PreparingDestination,
        DualWriteDualRead,
        "destination ready, tenant and topology in place",
    ),
    (
        PreparingDestination,
        Aborting,
        "flip back before the write cutover",
    ),
    (
        DualWriteDualRead,
        SingleWriteDualRead,
        "Service routes to both: write cutover",
    ),
    (
        DualWriteDualRead,
        Aborting,
        "flip back before the write cutover",
    ),
    (
        SingleWriteDualRead,
        DrainingSource,
        "source left the Service and refuses writes",
    ),
    (
        DrainingSource,
        DestinationOnly,
        "two consecutive fresh empty samples",
    ),
    (
        DestinationOnly,
        DrainingSource,
        "a fresh sample found messages on the source again",
    ),
    (
        DestinationOnly,
        Completed,
        "grace period over: source retired",
    ),
    (
        Completed,
        Stable,
        "history recorded, status.tier is the new tier",
    ),
    (
        Aborting,
        Stable,
        "destination drained back and removed; source is the sole cluster",
    ),
];

/// `from → to` is allowed (staying put always is).
pub fn is_allowed(from: MigrationPhase, to: MigrationPhase) -> bool {
    from == to || EDGES.iter().any(|(f, t, _)| *f == from && *t == to)
}
