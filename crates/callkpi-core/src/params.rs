//! Report parameters: every threshold and formula variant a KPI depends on.
//! They are echoed in every report so a figure can always be checked.

use serde::{Deserialize, Serialize};

use crate::event::UnixNanos;
use crate::time::Interval;

/// A grouping dimension of report rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// Per queue.
    Queue,
    /// Per agent.
    Agent,
    /// Per site (branch office).
    Site,
    /// Per called number of inbound calls.
    Did,
    /// Per outbound trunk.
    Trunk,
}

impl GroupBy {
    /// Name used in JSON group objects and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Queue => "queue",
            GroupBy::Agent => "agent",
            GroupBy::Site => "site",
            GroupBy::Did => "did",
            GroupBy::Trunk => "trunk",
        }
    }

    /// Parses a comma-separated list; `none` gives an empty list.
    ///
    /// # Errors
    /// On an unknown dimension name.
    pub fn parse_list(s: &str) -> Result<Vec<GroupBy>, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let g = match part {
                "none" => continue,
                "queue" => GroupBy::Queue,
                "agent" => GroupBy::Agent,
                "site" => GroupBy::Site,
                "did" => GroupBy::Did,
                "trunk" => GroupBy::Trunk,
                other => {
                    return Err(format!("unknown grouping {other:?}: expected queue, agent, site, did, trunk or none"));
                }
            };
            if !out.contains(&g) {
                out.push(g);
            }
        }
        Ok(out)
    }
}

/// Service level formula family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlFormula {
    /// Answered within T / offered (abandons count against). The default.
    Offered,
    /// Answered within T / answered.
    Answered,
    /// (Answered within T + abandoned within T) / offered.
    AbandonsPositive,
    /// Answered within T / (offered - abandoned within T).
    AbandonsIgnored,
    /// What Asterisk's `queue show` and `QueueParams` print as
    /// `ServicelevelPerf`: completed within T / completed, with T the
    /// queue's `servicelevel`. A call counts as completed once answered.
    AsteriskPerf,
    /// Asterisk's `ServicelevelPerf2`: (completed within T + abandoned within
    /// T) / (completed + abandoned), where abandoned is Asterisk's counter:
    /// abandons (short ones included), timeouts and leave-when-empty exits.
    AsteriskPerf2,
}

impl SlFormula {
    /// Whether the formula reproduces a PBX's own figure (the report then
    /// also carries that PBX's completed and abandoned counters).
    pub fn is_asterisk(self) -> bool {
        matches!(self, SlFormula::AsteriskPerf | SlFormula::AsteriskPerf2)
    }
}

impl std::str::FromStr for SlFormula {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "offered" => SlFormula::Offered,
            "answered" => SlFormula::Answered,
            "abandons-positive" => SlFormula::AbandonsPositive,
            "abandons-ignored" => SlFormula::AbandonsIgnored,
            "asterisk-perf" => SlFormula::AsteriskPerf,
            "asterisk-perf2" => SlFormula::AsteriskPerf2,
            other => {
                return Err(format!(
                    "unknown service level formula {other:?}: expected offered, answered, abandons-positive, \
                     abandons-ignored, asterisk-perf or asterisk-perf2"
                ));
            }
        })
    }
}

/// Everything a report depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KpiParams {
    /// Start of the range (inclusive), ns; `None` = from the first data.
    pub from: Option<UnixNanos>,
    /// End of the range (exclusive), ns; `None` = up to the engine's clock.
    pub to: Option<UnixNanos>,
    /// Row interval.
    pub interval: Interval,
    /// Grouping dimensions (empty = one row per interval).
    pub group_by: Vec<GroupBy>,
    /// IANA zone intervals are aligned to.
    pub time_zone: String,
    /// Service level thresholds, seconds; all computed at once.
    pub sl_thresholds_s: Vec<u32>,
    /// Service level formula family.
    pub sl_formula: SlFormula,
    /// Abandons with a wait at or under this many seconds are short abandons,
    /// excluded from offered, abandoned and service level; 0 disables.
    pub short_abandon_s: u32,
    /// FCR and case window: a new call from the same number within this many
    /// seconds of a contact means it was not resolved (and joins its case).
    pub fcr_window_s: u64,
    /// Whether a transfer to another agent means not resolved at first contact.
    pub fcr_transfer_breaks: bool,
}

impl Default for KpiParams {
    fn default() -> Self {
        Self {
            from: None,
            to: None,
            interval: Interval::Min15,
            group_by: Vec::new(),
            time_zone: "UTC".to_owned(),
            sl_thresholds_s: vec![18, 20, 60],
            sl_formula: SlFormula::Offered,
            short_abandon_s: 5,
            fcr_window_s: 7 * 24 * 3600,
            fcr_transfer_breaks: true,
        }
    }
}

/// Parses a duration like `3600`, `90s`, `45m`, `24h`, `7d`, into seconds.
///
/// # Errors
/// On anything else.
pub fn parse_duration_s(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86_400),
        Some((i, 'w')) => (&s[..i], 7 * 86_400),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("invalid duration {s:?}: expected e.g. 3600, 90s, 45m, 24h or 7d"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_lists_parse() {
        assert_eq!(parse_duration_s("7d"), Ok(604_800));
        assert_eq!(parse_duration_s("48h"), Ok(172_800));
        assert_eq!(parse_duration_s("3600"), Ok(3600));
        assert!(parse_duration_s("soon").is_err());
        assert_eq!(GroupBy::parse_list("queue,agent"), Ok(vec![GroupBy::Queue, GroupBy::Agent]));
        assert_eq!(GroupBy::parse_list("none"), Ok(vec![]));
        assert!(GroupBy::parse_list("planet").is_err());
        assert_eq!("abandons-positive".parse::<SlFormula>(), Ok(SlFormula::AbandonsPositive));
        assert_eq!("asterisk-perf2".parse::<SlFormula>(), Ok(SlFormula::AsteriskPerf2));
        assert!("asterisk".parse::<SlFormula>().is_err());
    }
}
