//! Live state: who is waiting in which queue, and what each agent is doing,
//! as of the engine's last refresh. Wallboards and `WatchKpis` read it; the
//! counters and reports do not depend on it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::agent::{Base, StateChange};
use crate::call::CallRecord;
use crate::event::{AgentState, UnixNanos};

/// One queue, now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LiveQueue {
    /// Queue name.
    pub queue: String,
    /// Callers waiting (entered, not answered, not left).
    pub waiting: u32,
    /// Longest current wait, ns.
    pub longest_wait_ns: i64,
    /// Members available (logged in, not paused, not on a call).
    pub available: u32,
    /// Members on a call.
    pub busy: u32,
    /// Members paused.
    pub paused: u32,
    /// Members in after-call work.
    pub wrap_up: u32,
}

/// What an agent is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "activity")]
pub enum Activity {
    /// Not logged into any queue.
    LoggedOut,
    /// Logged in and free.
    Available,
    /// In a conversation.
    Talking {
        /// Call.
        call_id: String,
    },
    /// After-call work.
    WrapUp,
    /// Paused in every queue it is logged into.
    Paused {
        /// Reason given by the PBX.
        reason: String,
    },
}

/// One agent, now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveAgent {
    /// Site.
    pub site: String,
    /// Agent.
    pub agent: String,
    /// Current activity.
    pub activity: Activity,
    /// Queues it is a member of.
    pub queues: BTreeSet<String>,
}

/// Logged in, and the pause reason while paused.
type Membership = (bool, Option<String>);

/// Builds the live view from open calls and agent presence.
///
/// `agents` yields each agent's site, name, presence changes (any order)
/// and queues it was seen working in (static members).
pub(crate) fn build<'a>(
    open_calls: impl Iterator<Item = &'a CallRecord>,
    agents: impl Iterator<Item = (&'a str, &'a str, Option<&'a Base>, &'a [StateChange], BTreeSet<String>)>,
    now: UnixNanos,
) -> (Vec<LiveQueue>, Vec<LiveAgent>) {
    let mut queues: BTreeMap<String, LiveQueue> = BTreeMap::new();
    let mut on_call: BTreeMap<(String, String), Activity> = BTreeMap::new();
    for r in open_calls {
        for v in r.visits.iter().filter(|v| v.outcome.is_none()) {
            let q = queues
                .entry(v.queue.clone())
                .or_insert_with(|| LiveQueue { queue: v.queue.clone(), ..Default::default() });
            q.waiting += 1;
            q.longest_wait_ns = q.longest_wait_ns.max(now - v.enter);
        }
        for s in &r.segments {
            let key = (r.site.clone(), s.agent.clone());
            if s.end.is_none() {
                on_call.insert(key, Activity::Talking { call_id: r.call_id.clone() });
            } else if matches!(s.wrap, Some((_, None))) {
                on_call.entry(key).or_insert(Activity::WrapUp);
            }
        }
    }
    let mut out = Vec::new();
    for (site, agent, base, changes, inferred) in agents {
        let mut sorted: Vec<&StateChange> = changes.iter().collect();
        sorted.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
        // Per queue: logged in, paused (with reason). Inferred static members start logged in.
        let mut member: BTreeMap<Option<String>, Membership> = BTreeMap::new();
        let mut explicit: BTreeSet<&str> = sorted.iter().filter_map(|c| c.queue.as_deref()).collect();
        if let Some(b) = base {
            // State at the folded boundary, then what changed since.
            for (q, logged, reason) in b.memberships() {
                member.insert(q.clone(), (logged, reason.cloned()));
            }
            explicit.extend(b.explicit_queues().iter().map(String::as_str));
        }
        for q in inferred.iter().filter(|q| !explicit.contains(q.as_str())) {
            member.entry(Some(q.clone())).or_insert((true, None));
        }
        for c in sorted.iter().filter(|c| c.at <= now) {
            match (&c.queue, &c.state) {
                (q, AgentState::Login) => {
                    member.entry(q.clone()).or_insert((true, None)).0 = true;
                }
                (None, AgentState::Logout) => member.values_mut().for_each(|m| *m = (false, None)),
                (q, AgentState::Logout) => {
                    member.insert(q.clone(), (false, None));
                }
                (None, st) => {
                    let p = if let AgentState::Paused { reason } = st { Some(reason.clone()) } else { None };
                    member.values_mut().for_each(|m| m.1 = p.clone());
                }
                (q, st) => {
                    let p = if let AgentState::Paused { reason } = st { Some(reason.clone()) } else { None };
                    *member.entry(q.clone()).or_insert((true, None)) = (true, p);
                }
            }
        }
        let logged: Vec<(&Option<String>, &Membership)> = member.iter().filter(|(_, m)| m.0).collect();
        let key = (site.to_owned(), agent.to_owned());
        let activity = if let Some(a) = on_call.remove(&key) {
            a
        } else if logged.is_empty() {
            Activity::LoggedOut
        } else if let Some(reason) = logged.iter().map(|(_, m)| m.1.clone()).collect::<Option<Vec<String>>>() {
            Activity::Paused { reason: reason.into_iter().next().unwrap_or_default() }
        } else {
            Activity::Available
        };
        let member_queues: BTreeSet<String> = logged.iter().filter_map(|(q, _)| (*q).clone()).collect();
        for q in &member_queues {
            let lq = queues.entry(q.clone()).or_insert_with(|| LiveQueue { queue: q.clone(), ..Default::default() });
            match activity {
                Activity::Available => lq.available += 1,
                Activity::Talking { .. } => lq.busy += 1,
                Activity::WrapUp => lq.wrap_up += 1,
                Activity::Paused { .. } => lq.paused += 1,
                Activity::LoggedOut => {}
            }
        }
        out.push(LiveAgent { site: site.to_owned(), agent: agent.to_owned(), activity, queues: member_queues });
    }
    (queues.into_values().collect(), out)
}
