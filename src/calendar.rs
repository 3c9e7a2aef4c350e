//! Local calendar days in a configured time zone (Asia/Shanghai by
//! default): daily windows start at local midnight, not UTC midnight, and
//! are 23 or 25 hours long where the zone changes clocks.

use chrono::{Days, NaiveTime, TimeZone};
use chrono_tz::Tz;

#[derive(Clone, Copy, Debug)]
pub struct Calendar {
    pub tz: Tz,
}

impl Calendar {
    /// Start of the local day holding `ms`, as epoch ms.
    pub fn day_start(&self, ms: i64) -> i64 {
        let Some(local) = self.tz.timestamp_millis_opt(ms).single() else {
            return ms;
        };
        self.midnight(local.date_naive()).unwrap_or(ms)
    }

    /// End (the next day's start) of the local day starting at `start`.
    pub fn day_end(&self, start: i64) -> i64 {
        let next = self
            .tz
            .timestamp_millis_opt(start)
            .single()
            .and_then(|d| d.date_naive().checked_add_days(Days::new(1)))
            .and_then(|d| self.midnight(d));
        next.unwrap_or(start + 86_400_000)
    }

    /// The local date of `ms`, as text (for logs and reports).
    pub fn date(&self, ms: i64) -> String {
        self.tz
            .timestamp_millis_opt(ms)
            .single()
            .map(|d| d.date_naive().to_string())
            .unwrap_or_default()
    }

    fn midnight(&self, date: chrono::NaiveDate) -> Option<i64> {
        // Where midnight does not exist (a zone that springs forward at
        // 00:00), the day starts at the first instant that does.
        let mut t = date.and_time(NaiveTime::MIN);
        for _ in 0..4 {
            if let Some(dt) = self.tz.from_local_datetime(&t).earliest() {
                return Some(dt.timestamp_millis());
            }
            t += chrono::Duration::minutes(30);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beijing_days_start_at_16_utc() {
        let cal = Calendar {
            tz: chrono_tz::Asia::Shanghai,
        };
        // 2026-11-26T01:00:00Z is 09:00 in Beijing, on the 26th; the day
        // began 2026-11-25T16:00:00Z.
        let t = 1_795_654_800_000;
        assert_eq!(cal.day_start(t), 1_795_622_400_000);
        assert_eq!(cal.day_end(1_795_622_400_000), 1_795_708_800_000);
        assert_eq!(cal.date(t), "2026-11-26");
        // 2026-11-25T17:00Z is already the 26th locally.
        assert_eq!(cal.date(1_795_626_000_000), "2026-11-26");
    }

    #[test]
    fn daylight_saving_days_are_23_or_25_hours() {
        let cal = Calendar {
            tz: chrono_tz::Europe::Berlin,
        };
        // 2026-03-29 (spring forward) and 2026-10-25 (fall back).
        let spring = cal.day_start(1_774_785_600_000); // 2026-03-29T12:00Z
        assert_eq!(cal.day_end(spring) - spring, 23 * 3_600_000);
        let fall = cal.day_start(1_792_929_600_000); // 2026-10-25T12:00Z
        assert_eq!(cal.day_end(fall) - fall, 25 * 3_600_000);
    }
}
