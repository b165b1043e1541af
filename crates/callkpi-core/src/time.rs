//! Reporting intervals in an IANA time zone.
//!
//! The engine stores counters in UTC quarter hours ([`BUCKET_NS`]). Every UTC
//! offset in use today is a multiple of 15 minutes, so a quarter hour never
//! straddles a local 15-minute, 30-minute, hour or day boundary, and every
//! report interval is an exact union of buckets. Local days on a DST change
//! have 23 or 25 hours, and local hours are enumerated through the zone's
//! transitions rather than by adding 3600 s to a local time.

use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, ZonedDateTime};
use serde::{Deserialize, Serialize};

use crate::event::{NANOS_PER_SEC, UnixNanos};

/// Width of a storage bucket: one quarter hour.
pub const BUCKET_NS: i64 = 15 * 60 * NANOS_PER_SEC;

/// Start of the UTC quarter hour containing `t`.
pub fn bucket_of(t: UnixNanos) -> UnixNanos {
    t.div_euclid(BUCKET_NS) * BUCKET_NS
}

/// Reporting interval length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Interval {
    /// 15 minutes.
    #[serde(rename = "15m")]
    Min15,
    /// 30 minutes.
    #[serde(rename = "30m")]
    Min30,
    /// One local hour.
    #[serde(rename = "1h")]
    Hour,
    /// One local day (23, 24 or 25 hours).
    #[serde(rename = "1d")]
    Day,
    /// The whole range as one row.
    #[serde(rename = "all")]
    All,
}

impl Interval {
    /// The name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Min15 => "15m",
            Interval::Min30 => "30m",
            Interval::Hour => "1h",
            Interval::Day => "1d",
            Interval::All => "all",
        }
    }
}

impl std::str::FromStr for Interval {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "15m" => Interval::Min15,
            "30m" => Interval::Min30,
            "1h" | "60m" => Interval::Hour,
            "1d" | "24h" => Interval::Day,
            "all" => Interval::All,
            other => return Err(format!("unknown interval {other:?}: expected 15m, 30m, 1h, 1d or all")),
        })
    }
}

fn zoned(t: UnixNanos, tz: &TimeZone) -> ZonedDateTime {
    // Every i64 nanosecond count is within jiff's supported range except the
    // extreme ends; clamp rather than panic on a corrupt timestamp.
    let ts = Timestamp::from_nanosecond(i128::from(t)).unwrap_or(if t < 0 { Timestamp::MIN } else { Timestamp::MAX });
    ts.to_zoned_datetime(tz.clone())
}

fn nanos(z: &ZonedDateTime) -> UnixNanos {
    i64::try_from(z.timestamp().as_nanosecond()).unwrap_or(i64::MAX)
}

/// Start of the local interval containing `t`. For [`Interval::All`], `t` itself.
pub fn interval_start(t: UnixNanos, interval: Interval, tz: &TimeZone) -> UnixNanos {
    match interval {
        Interval::All => t,
        Interval::Min15 | Interval::Min30 => {
            let z = zoned(t, tz);
            let step = if interval == Interval::Min15 { 15 } else { 30 };
            // Local minute-of-hour is what users see; offsets are multiples of
            // 15 min, so flooring the local minute floors the instant too.
            let local_min = i64::from(z.minute());
            let into = (local_min % step) * 60 * NANOS_PER_SEC
                + i64::from(z.second()) * NANOS_PER_SEC
                + i64::from(z.subsec_nanosecond());
            t - into
        }
        Interval::Hour => {
            let z = zoned(t, tz);
            let into = i64::from(z.minute()) * 60 * NANOS_PER_SEC
                + i64::from(z.second()) * NANOS_PER_SEC
                + i64::from(z.subsec_nanosecond());
            t - into
        }
        Interval::Day => {
            let z = zoned(t, tz);
            match z.start_of_day() {
                Ok(s) => nanos(&s),
                Err(_) => t,
            }
        }
    }
}

/// End (exclusive) of the local interval starting at `start`.
pub fn interval_end(start: UnixNanos, interval: Interval, tz: &TimeZone) -> UnixNanos {
    match interval {
        Interval::Min15 => start + BUCKET_NS,
        Interval::Min30 => start + 2 * BUCKET_NS,
        Interval::Hour => start + 4 * BUCKET_NS,
        Interval::Day => {
            let z = zoned(start, tz);
            match z.date().checked_add(1.day()).and_then(|d| d.to_zoned_datetime(tz.clone())) {
                Ok(next) => nanos(&next),
                Err(_) => start + 96 * BUCKET_NS,
            }
        }
        Interval::All => i64::MAX,
    }
}

/// Every interval overlapping `[from, to)`, in order, as `(start, end)`.
///
/// With [`Interval::All`], the single interval `[from, to)`.
pub fn intervals(from: UnixNanos, to: UnixNanos, interval: Interval, tz: &TimeZone) -> Vec<(UnixNanos, UnixNanos)> {
    let mut out = Vec::new();
    if to <= from {
        return out;
    }
    if interval == Interval::All {
        out.push((from, to));
        return out;
    }
    let mut s = interval_start(from, interval, tz);
    while s < to {
        let e = interval_end(s, interval, tz);
        out.push((s, e));
        if e <= s {
            break;
        }
        s = e;
    }
    out
}

/// Parses a time zone name, `UTC`, or `local` (the system zone).
///
/// # Errors
/// When the name is not in the bundled or system tz database.
pub fn parse_tz(name: &str) -> Result<TimeZone, String> {
    match name {
        "UTC" | "utc" | "Z" => Ok(TimeZone::UTC),
        "local" => Ok(TimeZone::system()),
        other => TimeZone::get(other).map_err(|e| format!("unknown time zone {other:?}: {e}")),
    }
}

/// Formats `t` as RFC 3339 in `tz` (offset included), e.g. `2026-03-29T03:00:00+02:00`.
pub fn rfc3339(t: UnixNanos, tz: &TimeZone) -> String {
    let z = zoned(t, tz);
    z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> UnixNanos {
        i64::try_from(s.parse::<Timestamp>().unwrap().as_nanosecond()).unwrap()
    }

    #[test]
    fn paris_spring_forward_day_has_23_hours() {
        let tz = parse_tz("Europe/Paris").unwrap();
        let day_start = ts("2026-03-28T23:00:00Z");
        let end = interval_end(day_start, Interval::Day, &tz);
        assert_eq!(end - day_start, 23 * 3600 * NANOS_PER_SEC);
        let hours = intervals(day_start, end, Interval::Hour, &tz);
        assert_eq!(hours.len(), 23);
        assert_eq!(rfc3339(hours[2].0, &tz), "2026-03-29T03:00:00+02:00");
    }

    #[test]
    fn paris_fall_back_day_has_25_hours() {
        let tz = parse_tz("Europe/Paris").unwrap();
        let day_start = ts("2026-10-24T22:00:00Z");
        let end = interval_end(day_start, Interval::Day, &tz);
        assert_eq!(end - day_start, 25 * 3600 * NANOS_PER_SEC);
        let hours = intervals(day_start, end, Interval::Hour, &tz);
        assert_eq!(hours.len(), 25);
        // 02:00 local happens twice, once at +02:00 and once at +01:00.
        assert_eq!(rfc3339(hours[2].0, &tz), "2026-10-25T02:00:00+02:00");
        assert_eq!(rfc3339(hours[3].0, &tz), "2026-10-25T02:00:00+01:00");
    }

    #[test]
    fn half_hour_offset_zone_aligns_hours_on_local_clock() {
        let tz = parse_tz("Asia/Kolkata").unwrap();
        let t = ts("2026-05-01T10:10:00Z"); // 15:40 local
        let s = interval_start(t, Interval::Hour, &tz);
        assert_eq!(rfc3339(s, &tz), "2026-05-01T15:00:00+05:30");
        let s30 = interval_start(t, Interval::Min30, &tz);
        assert_eq!(rfc3339(s30, &tz), "2026-05-01T15:30:00+05:30");
        assert_eq!(bucket_of(s), s, "local hours start on UTC quarter hours");
    }

    #[test]
    fn day_start_is_local_midnight() {
        let tz = parse_tz("America/New_York").unwrap();
        let t = ts("2026-07-04T03:00:00Z"); // 23:00 on the 3rd, local
        let s = interval_start(t, Interval::Day, &tz);
        assert_eq!(rfc3339(s, &tz), "2026-07-03T00:00:00-04:00");
    }

    #[test]
    fn unknown_zone_is_a_clear_error() {
        let err = parse_tz("Mars/Olympus").unwrap_err();
        assert!(err.contains("Mars/Olympus"), "{err}");
    }
}
