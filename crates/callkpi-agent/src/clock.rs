//! The agent's clocks: wall clock, monotonic clock, and whether the wall
//! clock can be trusted.
//!
//! The monotonic clock counts ns from the moment the [`Clock`] was made
//! (one per [`crate::run`]); the contract only needs it to be monotonic on
//! this agent, for ordering and round-trip measurements.
//!
//! **Sync state.** Reading the kernel's NTP state (`adjtimex`) needs
//! `unsafe` FFI, which this workspace forbids, and the daemons (chrony,
//! ntpd, systemd-timesyncd) each report it differently. The agent therefore
//! assumes the clock is synchronised unless it is plainly not: a wall clock
//! before 2020-01-01 is what an appliance without a battery-backed RTC shows
//! before NTP has run, and is reported as unsynchronised. The aggregator
//! measures each agent's real offset at connect time anyway (see
//! [`crate::uplink`]), so a wrongly "synced" clock is still visible there.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use callkpi_feeds::CaptureTime;

/// 2020-01-01T00:00:00Z in ns: a wall clock before it is not synchronised.
const PLAUSIBLE_SINCE_NS: i64 = 1_577_836_800_000_000_000;

/// Wall and monotonic clocks of this agent.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock whose monotonic origin is now.
    pub fn new() -> Self {
        Self { origin: Instant::now() }
    }

    /// Wall clock, ns since the Unix epoch (negative before it).
    pub fn wall_ns(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
        }
    }

    /// Monotonic clock, ns since this clock was made.
    pub fn monotonic_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether the wall clock is believed synchronised (see the module docs).
    pub fn synced(&self) -> bool {
        self.wall_ns() >= PLAUSIBLE_SINCE_NS
    }

    /// The capture time of bytes read now.
    pub fn capture(&self) -> CaptureTime {
        let wall = self.wall_ns();
        CaptureTime { wall, monotonic: self.monotonic_ns(), clock_synced: wall >= PLAUSIBLE_SINCE_NS }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_reads_both_clocks() {
        let clock = Clock::new();
        let a = clock.capture();
        let b = clock.capture();
        assert!(b.monotonic >= a.monotonic);
        assert!(a.wall > PLAUSIBLE_SINCE_NS && a.clock_synced);
    }
}
