//! Whether each agent is connected, and how late its data is, measured
//! three ways an operator needs apart:
//!
//! - **delivery lag**: how old the data the agent holds and has not had
//!   acknowledged is. 0 while it is connected and caught up, however quiet
//!   the PBX is (`ListAgents.lag_s`, `callkpi_agent_delivery_lag_seconds`).
//!   Behind: now minus the capture time of its oldest unacked event when it
//!   said so (Hello/Heartbeat `spool_first_captured_ns`), else minus that of
//!   the last event stored (the oldest unacked one is not older). Caught up
//!   but disconnected: now minus its last contact, since anything may have
//!   happened on its PBX since.
//! - **since contact**: now minus the last message received (Hello, Batch
//!   or Heartbeat), on the aggregator's clock.
//! - **since event**: now minus the capture time of the last event stored,
//!   moved onto the aggregator's clock. It grows on every quiet night: it
//!   says the PBX is quiet, not that delivery is late.
//!
//! Connection state is in memory ([`Presence`]): after a restart every agent
//! is disconnected until it opens a stream again.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::store::AgentRecord;

/// The agents with a live Ingest stream, and since when (Unix ns).
#[derive(Debug, Default)]
pub(crate) struct Presence(Mutex<HashMap<String, i64>>);

impl Presence {
    /// A stream of `agent_id` opened at `now_ns` (it replaces any other).
    pub(crate) fn connected(&self, agent_id: &str, now_ns: i64) {
        self.lock().insert(agent_id.to_owned(), now_ns);
    }

    /// The agent's last stream ended.
    pub(crate) fn disconnected(&self, agent_id: &str) {
        self.lock().remove(agent_id);
    }

    /// When the agent's live stream opened, if it has one.
    pub(crate) fn since(&self, agent_id: &str) -> Option<i64> {
        self.lock().get(agent_id).copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One agent's liveness at an instant (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Liveness {
    /// Whether its spool held nothing unacknowledged at its last contact.
    pub(crate) caught_up: bool,
    /// Delivery lag, s.
    pub(crate) delivery_lag_s: f64,
    /// Time since its last message, s; `None` when never seen.
    pub(crate) since_contact_s: Option<f64>,
    /// Time since the capture of its last stored event, s; `None` when none.
    pub(crate) since_event_s: Option<f64>,
    /// Capture time of its oldest unacked event (agent clock), when known.
    pub(crate) oldest_unacked_ns: Option<i64>,
}

/// Liveness of `a` at `now_ns`, connected or not. `delivered_until_ns` is
/// the reports' watermark of `a` (its last stored event's capture time on
/// the aggregator's clock when it is behind), so that lag and row
/// completeness agree.
pub(crate) fn liveness(a: &AgentRecord, connected: bool, delivered_until_ns: i64, now_ns: i64) -> Liveness {
    let since = |t: i64| now_ns.saturating_sub(t).max(0) as f64 / 1e9;
    let offset = a.clock_offset_ns.unwrap_or(0);
    let caught_up = a.spool_last_seq <= a.hwm;
    // The spool's first seq is only the oldest unacked one while it is above
    // what was acked since the agent reported it.
    let oldest_unacked_ns = (!caught_up && a.spool_first_seq > a.hwm && a.spool_first_captured_ns != 0)
        .then_some(a.spool_first_captured_ns);
    let last_event = a.last_captured_ns.map(|t| t.saturating_sub(offset));
    let since_contact_s = (a.last_seen_ns != 0).then(|| since(a.last_seen_ns));
    let delivery_lag_s = match (caught_up, oldest_unacked_ns) {
        (true, _) if connected => 0.0,
        (true, _) => since_contact_s.unwrap_or(0.0),
        (false, Some(t)) => since(t.saturating_sub(offset)),
        (false, None) if delivered_until_ns != 0 => since(delivered_until_ns),
        (false, None) => since_contact_s.unwrap_or(0.0),
    };
    Liveness { caught_up, delivery_lag_s, since_contact_s, since_event_s: last_event.map(since), oldest_unacked_ns }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;
    const NOW: i64 = 1_795_356_000 * S;

    fn record(hwm: u64, spool_last_seq: u64) -> AgentRecord {
        AgentRecord {
            hwm,
            spool_last_seq,
            last_seen_ns: NOW - 2 * S,
            last_captured_ns: Some(NOW - 3_600 * S),
            clock_offset_ns: Some(S),
            ..AgentRecord::default()
        }
    }

    #[test]
    fn a_connected_caught_up_agent_has_no_delivery_lag_however_quiet_its_pbx() {
        let l = liveness(&record(100, 100), true, 0, NOW);
        assert_eq!(l.delivery_lag_s, 0.0);
        assert_eq!(l.since_contact_s, Some(2.0));
        // The last event was captured an hour ago on a clock 1 s ahead.
        assert_eq!(l.since_event_s, Some(3_601.0));
        assert!(l.caught_up);
        // A spool that reported fewer events than were acked since is caught up too.
        assert_eq!(liveness(&record(120, 100), true, 0, NOW).delivery_lag_s, 0.0);
    }

    #[test]
    fn disconnected_or_behind_agents_lag() {
        // Caught up when last heard of, 2 s ago, gone since.
        assert_eq!(liveness(&record(100, 100), false, 0, NOW).delivery_lag_s, 2.0);
        // Behind, oldest unacked event captured 90 s ago (agent clock 1 s ahead).
        let behind = AgentRecord { spool_first_seq: 101, spool_first_captured_ns: NOW - 90 * S, ..record(100, 150) };
        let l = liveness(&behind, true, 0, NOW);
        assert_eq!((l.delivery_lag_s, l.oldest_unacked_ns, l.caught_up), (91.0, Some(NOW - 90 * S), false));
        // Acks went past what the agent reported as its oldest: fall back to
        // the last stored event, which the oldest unacked one is not older than.
        let stale = AgentRecord { hwm: 120, ..behind };
        let l = liveness(&stale, true, NOW - 3_601 * S, NOW);
        assert_eq!((l.delivery_lag_s, l.oldest_unacked_ns), (3_601.0, None));
        // Never seen at all.
        let never = liveness(&AgentRecord::default(), false, 0, NOW);
        assert_eq!((never.delivery_lag_s, never.since_contact_s, never.since_event_s), (0.0, None, None));
    }

    #[test]
    fn presence_follows_streams() {
        let p = Presence::default();
        p.connected("a", 5);
        p.connected("a", 7);
        assert_eq!(p.since("a"), Some(7));
        p.disconnected("a");
        assert_eq!(p.since("a"), None);
    }
}
