//! Conversions between the planner's clock (`chrono`) and Kubernetes `Time` and `MicroTime`
//! (`jiff` inside).
//!
//! `Time` is stored to the second (its JSON drops the fraction), `MicroTime` to the
//! microsecond. Status fields the planner measures sub-second waits from (the grace period, the
//! subscriber settle, the drain baseline) are `MicroTime`: read back as `Time`, an instant
//! recorded at 10.9 s would return as 10 s and shorten the wait by up to a second.

use chrono::{DateTime, TimeZone, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;

/// A Kubernetes timestamp type: `Time` or `MicroTime`.
pub trait KubeTime {
    fn from_timestamp(ts: Timestamp) -> Self;
    fn timestamp(&self) -> Timestamp;
}

impl KubeTime for Time {
    fn from_timestamp(ts: Timestamp) -> Self {
        Time(ts)
    }
    fn timestamp(&self) -> Timestamp {
        self.0
    }
}

impl KubeTime for MicroTime {
    fn from_timestamp(ts: Timestamp) -> Self {
        MicroTime(ts)
    }
    fn timestamp(&self) -> Timestamp {
        self.0
    }
}

/// `t` as a Kubernetes `Time` or `MicroTime` (clamped to the range Kubernetes can represent).
pub fn to_time<T: KubeTime>(t: DateTime<Utc>) -> T {
    let nanos = i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos());
    let ts = Timestamp::from_nanosecond(nanos).unwrap_or(if nanos < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    });
    T::from_timestamp(ts)
}

/// A Kubernetes `Time` or `MicroTime` as a `chrono` instant.
pub fn from_time<T: KubeTime>(t: &T) -> DateTime<Utc> {
    let nanos = t.timestamp().as_nanosecond();
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
            assert_eq!(from_time(&to_time::<Time>(t)), t);
        }
    }

    #[test]
    fn instants_kubernetes_cannot_hold_are_clamped_not_panicking() {
        let far = Utc.with_ymd_and_hms(200_000, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(to_time::<Time>(far).0, Timestamp::MAX);
        assert!(from_time(&to_time::<Time>(far)) < far);
    }

    /// Through JSON (what the API server stores), `Time` loses the fraction and `MicroTime`
    /// keeps the microseconds: the reason the planner's sub-second instants are `MicroTime`.
    #[test]
    fn stored_as_json_time_keeps_seconds_and_micro_time_microseconds() {
        let t = Utc.with_ymd_and_hms(2026, 12, 2, 4, 0, 10).unwrap()
            + chrono::Duration::microseconds(912_345);
        fn through_json<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) -> T {
            serde_json::from_value(serde_json::to_value(v).unwrap()).unwrap()
        }
        let whole = t - chrono::Duration::microseconds(912_345);
        assert_eq!(from_time(&through_json(&to_time::<Time>(t))), whole);
        assert_eq!(from_time(&through_json(&to_time::<MicroTime>(t))), t);
        // A value stored before a field became MicroTime (whole seconds) still reads.
        let old: MicroTime = serde_json::from_str("\"2026-12-02T04:00:10Z\"").unwrap();
        assert_eq!(from_time(&old), whole);
    }
}
