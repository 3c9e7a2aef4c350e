//! Arrival times that a step of the system clock cannot poison. A reading
//! without a timestamp takes its arrival time, and stream time only moves
//! forward (and is saved): one message stamped during a clock that jumped a
//! year ahead would close every window and wake every deadman.
//!
//! The wall clock is followed while it agrees with the monotonic clock
//! (within [`TOLERANCE_MS`]: NTP slews, it does not step). When it steps,
//! arrival times go on from the monotonic clock; only once the new wall
//! time has held for [`CONFIRM_MS`] (a clock set right after boot, say)
//! is it followed again. Imports nothing of the crate.

use std::sync::Mutex;
use std::time::Instant;

use tracing::{info, warn};

/// Disagreement between the wall and the monotonic clock taken as drift.
pub const TOLERANCE_MS: i64 = 5_000;
/// How long a stepped wall clock must hold before it is believed.
pub const CONFIRM_MS: i64 = 600_000;

/// A guarded wall clock (ms since the Unix epoch). Cheap to share.
#[derive(Debug)]
pub struct ArrivalClock {
    start: Instant,
    state: Mutex<Guard>,
}

impl Default for ArrivalClock {
    fn default() -> Self {
        ArrivalClock {
            start: Instant::now(),
            state: Mutex::new(Guard::default()),
        }
    }
}

impl ArrivalClock {
    pub fn now_ms(&self) -> i64 {
        let wall = chrono::Utc::now().timestamp_millis();
        let mono = i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX);
        let mut g = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.stamp(wall, mono)
    }
}

/// The state of the guard: pure, so tests drive both clocks.
#[derive(Debug, Default)]
pub struct Guard {
    /// Wall minus monotonic, as last believed; None before the first call.
    offset: Option<i64>,
    /// A stepped wall clock being watched: (its offset, since when, mono).
    pending: Option<(i64, i64)>,
}

impl Guard {
    /// The arrival time for wall-clock `wall` at monotonic `mono` (ms).
    pub fn stamp(&mut self, wall: i64, mono: i64) -> i64 {
        let seen = wall - mono;
        let Some(offset) = self.offset else {
            self.offset = Some(seen);
            return wall;
        };
        if (seen - offset).abs() <= TOLERANCE_MS {
            if self.pending.take().is_some() {
                info!("system clock back in step; arrival times follow it");
            }
            self.offset = Some(seen);
            return wall;
        }
        match self.pending {
            Some((off, since)) if (seen - off).abs() <= TOLERANCE_MS => {
                if mono - since >= CONFIRM_MS {
                    info!(
                        step_ms = seen - offset,
                        "system clock step held for 10 minutes; arrival times follow it from now"
                    );
                    self.offset = Some(seen);
                    self.pending = None;
                    return wall;
                }
            }
            _ => {
                warn!(
                    step_ms = seen - offset,
                    "system clock stepped; arrival times follow the monotonic clock until the step has held for 10 minutes"
                );
                self.pending = Some((seen, mono));
            }
        }
        mono + offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_764_144_000_000;
    const YEAR: i64 = 365 * 86_400_000;

    #[test]
    fn a_step_forward_and_back_never_reaches_the_arrival_times() {
        let mut g = Guard::default();
        assert_eq!(g.stamp(T0, 0), T0);
        // Drift within the tolerance is followed.
        assert_eq!(g.stamp(T0 + 1_002, 1_000), T0 + 1_002);
        // The clock jumps a year ahead for a minute, then back.
        assert_eq!(g.stamp(T0 + YEAR + 2_000, 2_000), T0 + 2_002);
        assert_eq!(g.stamp(T0 + YEAR + 62_000, 62_000), T0 + 62_002);
        assert_eq!(g.stamp(T0 + 63_002, 63_000), T0 + 63_002);
    }

    #[test]
    fn a_step_that_holds_is_believed_after_ten_minutes() {
        let mut g = Guard::default();
        assert_eq!(g.stamp(T0, 0), T0);
        // Set right (an hour ahead) and kept there.
        let hour = 3_600_000;
        assert_eq!(g.stamp(T0 + hour + 1_000, 1_000), T0 + 1_000);
        assert_eq!(g.stamp(T0 + hour + 300_000, 300_000), T0 + 300_000);
        let confirmed = 1_000 + CONFIRM_MS;
        assert_eq!(
            g.stamp(T0 + hour + confirmed, confirmed),
            T0 + hour + confirmed
        );
        assert_eq!(
            g.stamp(T0 + hour + confirmed + 5, confirmed + 5),
            T0 + hour + confirmed + 5
        );
    }
}
