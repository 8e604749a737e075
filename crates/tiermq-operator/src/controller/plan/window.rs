//! R-window: whether a tier flip may start now, by `spec.migration.window` (UTC, so no daylight
//! saving shifts), and when the window next opens or closes.

use chrono::{DateTime, Datelike, Duration, NaiveTime, Utc};
use tiermq_crd::MaintenanceWindow;

/// Where `now` lies relative to a maintenance window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowState {
    /// Inside a window, which closes at `closes_at`.
    Open {
        /// The end of the window `now` is in.
        closes_at: DateTime<Utc>,
    },
    /// Outside every window; the next one opens at `opens_at` (always after `now`).
    Closed {
        /// The start of the next window.
        opens_at: DateTime<Utc>,
    },
}

/// The state of window `w` at `now`, or why `w` cannot be read (a time that is not `HH:MM`, or
/// a start equal to the end).
///
/// A window belongs to the day it opens on: `days: [Sat]`, `22:00`–`02:00` runs from Saturday
/// 22:00 to Sunday 02:00. Windows are shorter than a day, so they never overlap.
pub fn window_state(w: &MaintenanceWindow, now: DateTime<Utc>) -> Result<WindowState, String> {
    let (start, end) = w.minutes()?;
    let length = Duration::minutes(i64::from((end + 24 * 60 - start) % (24 * 60)));
    let start_time = NaiveTime::from_num_seconds_from_midnight_opt(start * 60, 0)
        .expect("minutes() keeps the start within a day");
    let today = now.date_naive();
    // A window opened yesterday may still be open; within 8 days every listed day comes again.
    let mut next = None;
    for offset in -1..=7 {
        let day = today + Duration::days(offset);
        if !w.days.is_empty() && !w.days.contains(&day.weekday().into()) {
            continue;
        }
        let opens = day.and_time(start_time).and_utc();
        let closes = opens + length;
        if opens <= now && now < closes {
            return Ok(WindowState::Open { closes_at: closes });
        }
        if opens > now && next.is_none() {
            next = Some(opens);
        }
    }
    let opens_at = next.expect("every listed weekday comes again within 8 days");
    Ok(WindowState::Closed { opens_at })
}

/// The window in words: `Sat 22:00-02:00 UTC`, `Mon,Tue 03:00-04:00 UTC`, `every day 02:00-03:00 UTC`.
pub fn describe_window(w: &MaintenanceWindow) -> String {
    let days = if w.days.is_empty() {
        "every day".to_string()
    } else {
        w.days
            .iter()
            .map(|d| format!("{d:?}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    format!("{days} {}-{} UTC", w.start_time, w.end_time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use tiermq_crd::Weekday::{self, *};

    fn w(days: &[Weekday], start: &str, end: &str) -> MaintenanceWindow {
        MaintenanceWindow {
            days: days.to_vec(),
            start_time: start.into(),
            end_time: end.into(),
        }
    }

    /// 2026-12-05 is a Saturday.
    fn at(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, d, h, m, 0).unwrap()
    }

    fn open(closes_at: DateTime<Utc>) -> Result<WindowState, String> {
        Ok(WindowState::Open { closes_at })
    }

    fn closed(opens_at: DateTime<Utc>) -> Result<WindowState, String> {
        Ok(WindowState::Closed { opens_at })
    }

    #[test]
    fn a_daily_window_is_open_from_its_start_up_to_but_excluding_its_end() {
        let win = w(&[], "02:00", "04:30");
        assert_eq!(window_state(&win, at(5, 1, 59)), closed(at(5, 2, 0)));
        assert_eq!(window_state(&win, at(5, 2, 0)), open(at(5, 4, 30)));
        assert_eq!(window_state(&win, at(5, 4, 29)), open(at(5, 4, 30)));
        assert_eq!(window_state(&win, at(5, 4, 30)), closed(at(6, 2, 0)));
    }

    #[test]
    fn a_window_crossing_midnight_belongs_to_the_day_it_opens_on() {
        let win = w(&[Sat], "22:00", "02:00");
        // Saturday 23:00 and Sunday 01:00 are inside Saturday's window.
        assert_eq!(window_state(&win, at(5, 23, 0)), open(at(6, 2, 0)));
        assert_eq!(window_state(&win, at(6, 1, 0)), open(at(6, 2, 0)));
        // Saturday 01:00 is not: Friday has no window.
        assert_eq!(window_state(&win, at(5, 1, 0)), closed(at(5, 22, 0)));
        // Sunday 02:00: the next window is next Saturday's.
        assert_eq!(window_state(&win, at(6, 2, 0)), closed(at(12, 22, 0)));
    }

    #[test]
    fn the_next_window_wraps_over_the_week_end() {
        let win = w(&[Mon], "03:00", "04:00");
        // Saturday 2026-12-05 → Monday 2026-12-07.
        assert_eq!(window_state(&win, at(5, 12, 0)), closed(at(7, 3, 0)));
        // Monday after the window → the Monday after.
        assert_eq!(window_state(&win, at(7, 4, 0)), closed(at(14, 3, 0)));
        // Across a month and a year end: Thursday 2026-12-31 → Monday 2027-01-04.
        let new_year = Utc.with_ymd_and_hms(2026, 12, 31, 9, 0, 0).unwrap();
        let next = Utc.with_ymd_and_hms(2027, 1, 4, 3, 0, 0).unwrap();
        assert_eq!(window_state(&win, new_year), closed(next));
    }

    #[test]
    fn utc_has_no_daylight_saving_shift() {
        // The last Sunday of March 2027 (Europe's shift): the window stays at 01:00 UTC.
        let win = w(&[Sun], "01:00", "02:00");
        let sat = Utc.with_ymd_and_hms(2027, 3, 27, 12, 0, 0).unwrap();
        let sun = Utc.with_ymd_and_hms(2027, 3, 28, 1, 0, 0).unwrap();
        assert_eq!(window_state(&win, sat), closed(sun));
    }

    #[test]
    fn unreadable_or_empty_windows_are_errors_naming_the_field() {
        let e = window_state(&w(&[], "24:00", "01:00"), at(5, 0, 0)).unwrap_err();
        assert!(e.contains("startTime"), "{e}");
        let e = window_state(&w(&[], "01:00", "1:5"), at(5, 0, 0)).unwrap_err();
        assert!(e.contains("endTime"), "{e}");
        let e = window_state(&w(&[], "01:00", "01:00"), at(5, 0, 0)).unwrap_err();
        assert!(e.contains("must differ"), "{e}");
    }

    fn any_window() -> impl Strategy<Value = MaintenanceWindow> {
        let days = proptest::sample::subsequence(vec![Mon, Tue, Wed, Thu, Fri, Sat, Sun], 0..=7);
        (days, 0u32..1440, 1u32..1440).prop_map(|(days, start, len)| {
            let end = (start + len) % 1440;
            let hm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
            MaintenanceWindow {
                days,
                start_time: hm(start),
                end_time: hm(end),
            }
        })
    }

    proptest! {
        /// A closed window opens after `now` and is open at that instant (closing after it); an
        /// open one closes after `now`, within a day.
        #[test]
        fn the_next_opening_is_ahead_and_open(
            win in any_window(),
            secs in 1_700_000_000i64..1_900_000_000,
        ) {
            let now = Utc.timestamp_opt(secs, 0).unwrap();
            match window_state(&win, now).unwrap() {
                WindowState::Closed { opens_at } => {
                    prop_assert!(opens_at > now);
                    prop_assert!(opens_at - now <= Duration::days(7));
                    let at_start = window_state(&win, opens_at).unwrap();
                    prop_assert!(
                        matches!(at_start, WindowState::Open { closes_at } if closes_at > opens_at),
                        "{at_start:?}"
                    );
                    // Just before it opens, it is still closed with the same next start.
                    let before = window_state(&win, opens_at - Duration::seconds(1)).unwrap();
                    prop_assert_eq!(before, WindowState::Closed { opens_at });
                }
                WindowState::Open { closes_at } => {
                    prop_assert!(closes_at > now);
                    prop_assert!(closes_at - now < Duration::days(1));
                }
            }
        }
    }
}
