//! Agent presence over time: logged-in and paused time per queue membership
//! and overall, spread over the quarter hours it covers.
//!
//! Asterisk logs in and pauses members per queue, so membership is tracked
//! per queue; a state change that names no queue applies to every queue of
//! the agent. An agent is "present" while logged into at least one queue,
//! and "paused" overall while paused in every queue it is logged into.
//!
//! Statically configured queue members never log in: Asterisk's queue_log
//! only says QUEUESTART. For an (agent, queue) pair that is seen handling or
//! being offered calls but never has a login or logout event, the agent is
//! taken as logged in from the site's queue start (else its first event)
//! until the engine's clock, and the time is also counted as inferred so
//! reports can flag it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::counters::{CounterSet, Counters, FineKey};
use crate::event::{AgentState, EventId, NANOS_PER_MS, UnixNanos};
use crate::time::{BUCKET_NS, bucket_of};

/// One recorded presence change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateChange {
    /// When.
    pub at: UnixNanos,
    /// Event id (tie-break and de-duplication).
    pub id: EventId,
    /// Queue, or `None` for all of the agent's queues.
    pub queue: Option<String>,
    /// New state.
    pub state: AgentState,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct QState {
    logged: bool,
    paused: bool,
    inferred: bool,
}

/// An agent's presence folded at a quarter-hour boundary: its state in every
/// queue at `at`, and what of its history still matters later (whether it
/// ever logged in or out explicitly, which decides inferred membership).
/// Presence before `at` is final and lives in rollups; only changes from
/// `at` on are replayed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Base {
    /// The boundary (a quarter-hour start).
    pub at: UnixNanos,
    /// State per queue (`None`: the agent-wide state) at `at`, with the pause reason.
    states: BTreeMap<Option<String>, (QState, Option<String>)>,
    /// A login or logout naming no queue was seen.
    explicit_global: bool,
    /// Queues with an explicit login or logout.
    explicit: BTreeSet<String>,
}

impl Base {
    /// Membership at the boundary, for the live view: queue (`None`: agent-wide),
    /// logged in, pause reason when paused.
    pub fn memberships(&self) -> impl Iterator<Item = (&Option<String>, bool, Option<&String>)> {
        self.states.iter().map(|(q, (s, reason))| (q, s.logged, if s.paused { reason.as_ref() } else { None }))
    }

    /// Queues the agent logged into or out of explicitly before the boundary.
    pub fn explicit_queues(&self) -> &BTreeSet<String> {
        &self.explicit
    }
}

/// Computes an agent's presence counters from `base` (or from the start of
/// its history) up to `now`.
///
/// `changes` need not be sorted; with a base, they are all at or after
/// `base.at`. `inferred_queues` are queues the agent was seen working in;
/// `inferred_from` is when static members logged in (with a base, no
/// earlier than the base).
pub fn contribution(
    site: &str,
    agent: &str,
    base: Option<&Base>,
    changes: &mut [StateChange],
    inferred_queues: &BTreeSet<String>,
    inferred_from: UnixNanos,
    now: UnixNanos,
) -> CounterSet {
    replay(site, agent, base, changes, inferred_queues, inferred_from, now).0
}

/// Folds an agent's presence at `at` (a quarter-hour start): returns the
/// contribution of the time before `at`, which is final, and the new base;
/// `changes` keeps only those at or after `at`.
pub fn fold(
    site: &str,
    agent: &str,
    base: Option<&Base>,
    changes: &mut Vec<StateChange>,
    inferred_queues: &BTreeSet<String>,
    inferred_from: UnixNanos,
    at: UnixNanos,
) -> (CounterSet, Base) {
    changes.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
    let split = changes.partition_point(|c| c.at < at);
    let before: Vec<StateChange> = changes.drain(..split).collect();
    let (set, states, reasons) = replay(site, agent, base, &mut before.clone(), inferred_queues, inferred_from, at);
    let mut explicit_global = base.is_some_and(|b| b.explicit_global);
    let mut explicit = base.map(|b| b.explicit.clone()).unwrap_or_default();
    for c in before.iter().filter(|c| matches!(c.state, AgentState::Login | AgentState::Logout)) {
        match &c.queue {
            None => explicit_global = true,
            Some(q) => {
                explicit.insert(q.clone());
            }
        }
    }
    let states = states.into_iter().map(|(q, s)| (q.clone(), (s, reasons.get(&q).cloned().flatten()))).collect();
    (set, Base { at, states, explicit_global, explicit })
}

type Reasons = BTreeMap<Option<String>, Option<String>>;

fn replay(
    site: &str,
    agent: &str,
    base: Option<&Base>,
    changes: &mut [StateChange],
    inferred_queues: &BTreeSet<String>,
    inferred_from: UnixNanos,
    until: UnixNanos,
) -> (CounterSet, BTreeMap<Option<String>, QState>, Reasons) {
    changes.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
    let explicit_global = base.is_some_and(|b| b.explicit_global)
        || changes.iter().any(|c| c.queue.is_none() && matches!(c.state, AgentState::Login | AgentState::Logout));
    let mut explicit: BTreeSet<&str> = changes
        .iter()
        .filter(|c| matches!(c.state, AgentState::Login | AgentState::Logout))
        .filter_map(|c| c.queue.as_deref())
        .collect();
    if let Some(b) = base {
        explicit.extend(b.explicit.iter().map(String::as_str));
    }

    let mut states: BTreeMap<Option<String>, QState> = BTreeMap::new();
    let mut reasons: Reasons = BTreeMap::new();
    if let Some(b) = base {
        for (q, (s, r)) in &b.states {
            states.insert(q.clone(), *s);
            reasons.insert(q.clone(), r.clone());
        }
    }
    let inferred_from = base.map_or(inferred_from, |b| inferred_from.max(b.at));
    let mut points: Vec<(UnixNanos, Option<&StateChange>, Option<&str>)> = Vec::new();
    if !explicit_global {
        for q in inferred_queues.iter().filter(|q| !explicit.contains(q.as_str())) {
            points.push((inferred_from, None, Some(q.as_str())));
        }
    }
    for c in changes.iter() {
        points.push((c.at, Some(c), None));
    }
    points.sort_by_key(|p| p.0);

    let mut set = CounterSet::default();
    let mut prev: Option<UnixNanos> = base.map(|b| b.at);
    for (t, change, inferred_q) in points.into_iter().take_while(|p| p.0 < until) {
        if let Some(p) = prev {
            accumulate(&mut set, site, agent, &states, p, t);
        }
        prev = Some(prev.map_or(t, |p| p.max(t)));
        if let Some(q) = inferred_q {
            states.entry(Some(q.to_owned())).or_insert(QState { logged: true, paused: false, inferred: true });
        }
        if let Some(c) = change {
            apply(&mut states, c);
            note_reason(&mut reasons, &states, c);
        }
    }
    if let Some(p) = prev {
        accumulate(&mut set, site, agent, &states, p, until);
    }
    (set, states, reasons)
}

/// Keeps the pause reason of each queue in step with [`apply`] (the live view shows it).
fn note_reason(reasons: &mut Reasons, states: &BTreeMap<Option<String>, QState>, c: &StateChange) {
    let reason = if let AgentState::Paused { reason } = &c.state { Some(reason.clone()) } else { None };
    match (&c.queue, &c.state) {
        (None, AgentState::Login | AgentState::Logout) => {
            if matches!(c.state, AgentState::Logout) {
                reasons.clear();
            }
        }
        (q @ Some(_), AgentState::Login | AgentState::Logout) => {
            if matches!(c.state, AgentState::Logout) {
                reasons.remove(q);
            }
        }
        (None, _) => {
            for q in states.keys() {
                reasons.insert(q.clone(), reason.clone());
            }
        }
        (q @ Some(_), _) => {
            reasons.insert(q.clone(), reason);
        }
    }
}

fn apply(states: &mut BTreeMap<Option<String>, QState>, c: &StateChange) {
    match (&c.queue, &c.state) {
        (q, AgentState::Login) => {
            let s = states.entry(q.clone()).or_default();
            s.logged = true;
            s.inferred = false;
        }
        (None, AgentState::Logout) => {
            for s in states.values_mut() {
                *s = QState::default();
            }
        }
        (q @ Some(_), AgentState::Logout) => {
            states.insert(q.clone(), QState::default());
        }
        (None, st) => {
            let paused = matches!(st, AgentState::Paused { .. });
            for s in states.values_mut() {
                s.paused = paused;
            }
        }
        (q @ Some(_), st) => {
            let paused = matches!(st, AgentState::Paused { .. });
            let s = states.entry(q.clone()).or_default();
            // A pause or unpause implies membership (it is logged by members only).
            s.logged = true;
            s.paused = paused;
        }
    }
}

fn accumulate(
    set: &mut CounterSet,
    site: &str,
    agent: &str,
    states: &BTreeMap<Option<String>, QState>,
    from: UnixNanos,
    to: UnixNanos,
) {
    if to <= from {
        return;
    }
    let logged: Vec<&QState> = states.values().filter(|s| s.logged).collect();
    let present = !logged.is_empty();
    if !present {
        // Nothing to count: don't walk the quarter hours (a span may be long).
        return;
    }
    let all_paused = present && logged.iter().all(|s| s.paused);
    let inferred = present && logged.iter().all(|s| s.inferred);
    let mut t = from;
    while t < to {
        let b = bucket_of(t);
        let e = (b + BUCKET_NS).min(to);
        let d = (e - t) / NANOS_PER_MS;
        let key = |queue: Option<String>| FineKey {
            bucket: b,
            site: site.to_owned(),
            queue,
            agent: Some(agent.to_owned()),
            did: None,
            trunk: None,
        };
        for (q, s) in states.iter().filter(|(q, s)| q.is_some() && s.logged) {
            let c: &mut Counters = set.cell(key(q.clone()));
            c.member_logged_in_ms += d;
            if s.paused {
                c.member_paused_ms += d;
            }
        }
        if present {
            let c = set.cell(key(None));
            c.presence_logged_in_ms += d;
            if all_paused {
                c.presence_paused_ms += d;
            }
            if inferred {
                c.inferred_logged_in_ms += d;
            }
        }
        t = e;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::NANOS_PER_SEC;

    fn ch(at_s: i64, seq: u64, queue: Option<&str>, state: AgentState) -> StateChange {
        StateChange {
            at: at_s * NANOS_PER_SEC,
            id: EventId { agent_id: "a".into(), seq },
            queue: queue.map(str::to_owned),
            state,
        }
    }

    fn sum(set: &CounterSet, queue: Option<&str>) -> Counters {
        let mut c = Counters::default();
        for (k, v) in &set.0 {
            if k.queue.as_deref() == queue {
                c.add(v, 1);
            }
        }
        c
    }

    #[test]
    fn pause_in_one_of_two_queues_is_not_an_overall_pause() {
        let mut changes = vec![
            ch(100, 1, Some("support"), AgentState::Paused { reason: "lunch".into() }),
            ch(170, 2, Some("support"), AgentState::Available),
        ];
        let queues: BTreeSet<String> = ["support".to_owned(), "sales".to_owned()].into();
        let set = contribution("s", "Bob", None, &mut changes, &queues, 0, 349 * NANOS_PER_SEC);
        let support = sum(&set, Some("support"));
        assert_eq!(support.member_logged_in_ms, 349_000);
        assert_eq!(support.member_paused_ms, 70_000);
        assert_eq!(sum(&set, Some("sales")).member_logged_in_ms, 349_000);
        let presence = sum(&set, None);
        assert_eq!(presence.presence_logged_in_ms, 349_000);
        assert_eq!(presence.presence_paused_ms, 0);
        assert_eq!(presence.inferred_logged_in_ms, 349_000);
    }

    #[test]
    fn dynamic_member_counts_from_add_to_remove() {
        let mut changes =
            vec![ch(7, 1, Some("support"), AgentState::Login), ch(261, 2, Some("support"), AgentState::Logout)];
        let queues: BTreeSet<String> = ["support".to_owned()].into();
        let set = contribution("s", "Carla", None, &mut changes, &queues, 0, 400 * NANOS_PER_SEC);
        assert_eq!(sum(&set, Some("support")).member_logged_in_ms, 254_000);
        assert_eq!(sum(&set, None).inferred_logged_in_ms, 0);
    }

    #[test]
    fn global_pause_pauses_every_queue_and_spans_buckets() {
        let mut changes = vec![
            ch(0, 1, None, AgentState::Login),
            ch(0, 2, Some("a"), AgentState::Login),
            ch(800, 3, None, AgentState::Paused { reason: String::new() }),
            ch(1000, 4, None, AgentState::Available),
            ch(1200, 5, None, AgentState::Logout),
        ];
        let set = contribution("s", "x", None, &mut changes, &BTreeSet::new(), 0, 5000 * NANOS_PER_SEC);
        let p = sum(&set, None);
        assert_eq!(p.presence_logged_in_ms, 1_200_000);
        assert_eq!(p.presence_paused_ms, 200_000);
        assert_eq!(sum(&set, Some("a")).member_paused_ms, 200_000);
        // 0..900 s and 900..1200 s fall in two quarter hours.
        assert_eq!(set.0.keys().filter(|k| k.queue.is_none()).count(), 2);
    }
}
