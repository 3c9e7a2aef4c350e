//! Reading timestamps.
//!
//! A JSON `ts` is either an RFC 3339 string (`"2026-11-26T08:00:00+08:00"`)
//! or a number of seconds or milliseconds since the Unix epoch, told apart
//! by size: below 10^11 it is seconds (fractions allowed; 10^11 s is the
//! year 5138), from 10^11 up to 10^14 it is milliseconds (10^11 ms is
//! 1973-03-03). Anything larger looks like micro- or nanoseconds and is
//! rejected rather than guessed.

/// Numbers below this are seconds.
pub const SECONDS_BELOW: f64 = 1e11;
/// Numbers from [`SECONDS_BELOW`] below this are milliseconds.
pub const MILLIS_BELOW: f64 = 1e14;

/// Epoch number → milliseconds.
pub fn from_epoch_number(n: f64) -> Result<i64, String> {
    if !n.is_finite() || n < 0.0 {
        return Err(format!("ts {n} is not a time after 1970"));
    }
    if n < SECONDS_BELOW {
        Ok((n * 1000.0).round() as i64)
    } else if n < MILLIS_BELOW {
        Ok(n.round() as i64)
    } else {
        Err(format!(
            "ts {n} is too large for seconds or milliseconds (micro/nanoseconds are not accepted)"
        ))
    }
}

/// RFC 3339 string → milliseconds.
pub fn from_rfc3339(s: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("ts {s:?} is not RFC 3339: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_milliseconds_are_told_apart_by_size() {
        assert_eq!(from_epoch_number(1_764_144_000.0), Ok(1_764_144_000_000));
        assert_eq!(from_epoch_number(1_764_144_000.25), Ok(1_764_144_000_250));
        assert_eq!(
            from_epoch_number(1_764_144_000_123.0),
            Ok(1_764_144_000_123)
        );
        assert!(from_epoch_number(1_764_144_000_000_000.0).is_err());
        assert!(from_epoch_number(-1.0).is_err());
    }

    #[test]
    fn rfc3339_with_offsets() {
        assert_eq!(
            from_rfc3339("2025-11-26T16:00:00+08:00"),
            Ok(1_764_144_000_000)
        );
        assert_eq!(
            from_rfc3339("2025-11-26T08:00:00.5Z"),
            Ok(1_764_144_000_500)
        );
        assert!(from_rfc3339("yesterday").is_err());
    }
}
