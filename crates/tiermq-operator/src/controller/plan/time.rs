//! Conversions between the planner's clock (`chrono`) and Kubernetes `Time` (`jiff` inside).

use chrono::{DateTime, TimeZone, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// `t` as a Kubernetes `Time` (clamped to the range Kubernetes can represent).
pub fn to_time(t: DateTime<Utc>) -> Time {
    let nanos = i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos());
    let ts = Timestamp::from_nanosecond(nanos).unwrap_or(if nanos < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    });
    Time(ts)
}

/// A Kubernetes `Time` as a `chrono` instant.
pub fn from_time(t: &Time) -> DateTime<Utc> {
    let nanos = t.0.as_nanosecond();
    let secs = nanos.div_euclid(1_000_000_000) as i64;
    let sub = nanos.rem_euclid(1_000_000_000) as u32;
    Utc.timestamp_opt(secs, sub)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_to_the_nanosecond_on_both_sides_of_the_epoch() {
        for t in [
            Utc.with_ymd_and_hms(2026, 11, 27, 6, 39, 17).unwrap()
                + chrono::Duration::nanoseconds(123_456_789),
            Utc.with_ymd_and_hms(1969, 12, 31, 23, 59, 59).unwrap()
                + chrono::Duration::nanoseconds(1),
        ] {
            assert_eq!(from_time(&to_time(t)), t);
        }
    }

    #[test]
    fn instants_kubernetes_cannot_hold_are_clamped_not_panicking() {
        let far = Utc.with_ymd_and_hms(200_000, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(to_time(far).0, Timestamp::MAX);
        assert!(from_time(&to_time(far)) < far);
    }
}
