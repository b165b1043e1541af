//! Jittered exponential backoff, shared by the uplink and the AMI source.
//!
//! Each failure doubles the base delay, from `initial` up to `max`; the delay
//! actually slept is drawn uniformly from [base/2, base] ("equal jitter"), so
//! a fleet of agents cut off by the same WAN outage does not reconnect in
//! lockstep. A success [`reset`](Backoff::reset)s the base.

use std::time::Duration;

use rand::Rng as _;

/// Reconnect delays.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Delays from `initial` doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Self { initial, max: max.max(initial), current: initial }
    }

    /// The next delay to sleep (jittered), doubling the base for the next call.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        jitter(base)
    }

    /// The longest delay, jittered: the retry period when an operator must act.
    pub fn max_delay(&self) -> Duration {
        jitter(self.max)
    }

    /// Back to the initial delay, after a success.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

/// A duration drawn uniformly from [d/2, d].
fn jitter(d: Duration) -> Duration {
    let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let half = nanos / 2;
    Duration::from_nanos(half + rand::rng().random_range(0..=nanos - half))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_max_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let mut bases = Vec::new();
        for _ in 0..6 {
            let d = b.next_delay();
            bases.push(d);
        }
        let bounds = [100, 200, 400, 800, 1000, 1000];
        for (d, hi) in bases.iter().zip(bounds) {
            assert!(*d <= Duration::from_millis(hi) && *d >= Duration::from_millis(hi / 2), "{d:?} vs {hi}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
        assert!(b.max_delay() >= Duration::from_millis(500));
    }
}
