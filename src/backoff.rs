//! Capped exponential backoff with jitter, for every retry loop (MQTT
//! reconnects, InfluxDB and archive writes, webhook deliveries). A leaf.
//!
//! Each wait is the current step less up to a quarter (jitter, so that
//! many clients that failed together do not retry together); the step
//! doubles after each wait up to the cap, and a success resets it.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Backoff {
    /// The first step, and the step after a reset.
    initial: Duration,
    /// The step never grows past this.
    max: Duration,
    /// Waits since the last reset.
    failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            failures: 0,
        }
    }

    /// The wait before the next attempt; the step then doubles, up to the
    /// cap.
    pub fn next_wait(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        wait_after(self.initial, self.max, self.failures)
    }

    /// After a success: the next failure waits the initial step again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// The wait after the `failures`-th failure in a row (1 = the first):
/// `initial` doubled `failures - 1` times, capped at `max`, less up to a
/// quarter at random. For loops whose limits can change between attempts.
pub fn wait_after(initial: Duration, max: Duration, failures: u32) -> Duration {
    let step = initial
        .saturating_mul(1 << failures.clamp(1, 21).saturating_sub(1))
        .min(max.max(initial));
    jitter(step)
}

/// `d` less up to a quarter, at random.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(1.0 - fastrand::f64() * 0.25)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_double_up_to_the_cap_with_jitter_below_each_step() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000));
        for step in [100, 200, 400, 800, 1000, 1000] {
            let w = b.next_wait();
            assert!(
                w <= ms(step) && w >= ms(step * 3 / 4),
                "{w:?} for step {step}"
            );
        }
        b.reset();
        assert!(b.next_wait() <= ms(100));
    }
}
