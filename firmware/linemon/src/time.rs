//! Millisecond ticks that wrap.
//!
//! Every timestamp in this crate is a `u32` count of milliseconds from an
//! arbitrary origin (the board uses "since boot"). It wraps after 2^32 ms
//! (49.7 days), so ticks are never compared directly: only differences,
//! computed with wrapping arithmetic, are meaningful. Any two ticks compared
//! by the logic are at most minutes apart, far below the wrap period.

/// Milliseconds from `since` to `now`, correct across a wrap of the tick.
#[inline]
#[must_use]
pub const fn elapsed(now: u32, since: u32) -> u32 {
    now.wrapping_sub(since)
}

/// Milliseconds from `from` to `to`, or 0 when `to` is before `from`.
///
/// Used for durations between estimated instants (for instance the gap
/// between the estimated end of one ring burst and the start of the next),
/// where estimation error can put them in the wrong order.
#[inline]
#[must_use]
pub const fn gap(from: u32, to: u32) -> u32 {
    let d = to.wrapping_sub(from);
    if d > i32::MAX as u32 { 0 } else { d }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_wraps() {
        assert_eq!(elapsed(5, u32::MAX - 4), 10);
        assert_eq!(elapsed(100, 40), 60);
    }

    #[test]
    fn gap_clamps_negative() {
        assert_eq!(gap(100, 90), 0);
        assert_eq!(gap(u32::MAX - 9, 10), 20);
    }
}
