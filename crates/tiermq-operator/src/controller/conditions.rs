//! Kubernetes `Condition`s, the one place that builds them (pure): every condition carries the
//! object's `observedGeneration`, and its `lastTransitionTime` moves only when its status flips.
//!
//! Which conditions an object has, and when each is True, is decided by one pure function per
//! condition: the instance's in [`super::plan::conditions`], the SharedCluster's `Ready` in
//! [`super::shared_cluster::desired_status`]. Their types and reasons are in
//! [`tiermq_crd::conditions`].

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::controller::plan::to_time;

/// `"True"` or `"False"`.
fn status_str(on: bool) -> &'static str {
    if on { "True" } else { "False" }
}

/// The condition `type_` with this status, reason and message at `generation`. Its transition
/// time is kept from `previous` when a condition of that type already had this status there,
/// else it is `now`.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    on: bool,
    reason: &str,
    message: String,
    generation: i64,
    now: DateTime<Utc>,
) -> Condition {
    let status = status_str(on);
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| to_time(now), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: Some(generation),
        last_transition_time: since,
    }
}

/// Sets the condition of `c.type_` in `conds` (replacing one of the same type, in place).
pub fn set(conds: &mut Vec<Condition>, c: Condition) {
    match conds.iter_mut().find(|o| o.type_ == c.type_) {
        Some(old) => *old = c,
        None => conds.push(c),
    }
}

/// `conds` with condition `c` computed against them and set (a shorthand for the common case).
pub fn update(
    conds: &mut Vec<Condition>,
    type_: &str,
    on: bool,
    reason: &str,
    message: String,
    generation: i64,
    now: DateTime<Utc>,
) {
    let c = condition(conds, type_, on, reason, message, generation, now);
    set(conds, c);
}

/// True when `conds` already holds `type_` with this status, reason and message: then the
/// matching Warning Event was already emitted.
pub fn holds(conds: &[Condition], type_: &str, on: bool, reason: &str, message: &str) -> bool {
    let status = status_str(on);
    conds.iter().any(|c| {
        c.type_ == type_ && c.status == status && c.reason == reason && c.message == message
    })
}

/// True when `conds` holds `type_` as True.
pub fn is_true(conds: &[Condition], type_: &str) -> bool {
    conds.iter().any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transition_time_moves_only_when_the_status_flips() {
        let t0 = Utc::now();
        let t1 = t0 + chrono::Duration::seconds(60);
        let mut conds = Vec::new();
        update(&mut conds, "Ready", true, "InService", "a".into(), 1, t0);
        update(&mut conds, "Ready", true, "InService", "b".into(), 2, t1);
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].last_transition_time, to_time(t0));
        assert_eq!(
            (conds[0].message.as_str(), conds[0].observed_generation),
            ("b", Some(2))
        );
        assert!(holds(&conds, "Ready", true, "InService", "b"));
        assert!(!holds(&conds, "Ready", false, "InService", "b"));
        update(
            &mut conds,
            "Ready",
            false,
            "Provisioning",
            "c".into(),
            2,
            t1,
        );
        assert_eq!(conds[0].last_transition_time, to_time(t1));
        assert!(!is_true(&conds, "Ready"));
    }
}
