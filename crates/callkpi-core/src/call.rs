//! One call rebuilt from its events: queue visits, agent segments, offers,
//! outbound dials and surveys, and the counters it contributes.
//!
//! A call is always rebuilt from all of its events, sorted by KPI time, then
//! by their place in a call's life (an entry before its exit, an answer
//! before its hang-up, for events of the same instant), then by event id, so
//! the result does not depend on the order in which events arrived, and a
//! late event simply produces a new record whose contribution replaces the
//! old one. An event that repeats another of the same instant (same leg,
//! kind and data) is replayed once.
//!
//! Rules, in the order events are replayed:
//! - A queue visit opens at `QueueJoin` and takes the first definite outcome:
//!   `Answered`, or a `QueueLeave` with a reason. A bare `QueueLeave
//!   { Unspecified }` (AMI `QueueCallerLeave`, also sent when an agent
//!   answers) only marks the visit as left; if no answer follows at the same
//!   call, the visit ends as "left, reason unknown".
//! - A segment is one agent's conversation: from `Answered` to that agent's
//!   `Hangup` or `Transfer`. Its talk time is the PBX's own measure when
//!   reported, else the span minus hold. Hold spans come from `Hold`/`Resume`
//!   within the segment; after-call work from `WrapUpStart`/`WrapUpEnd` of the
//!   same agent after it.
//! - A visit or segment with no end is left open while the call may still be
//!   active and closed as "unknown end" once the engine's clock is past the
//!   last event by the configured timeout (or when offline input ends).
//!   A segment closed so has no known talk time: it is counted apart
//!   (`segments_unknown_end`, flagged in reports), not as a handled call,
//!   so that it cannot pull the handle times of the calls whose end is known
//!   towards zero.
//! - A hang-up or transfer naming an agent with no conversation in the call,
//!   and carrying the PBX's talk time (the answer is before the start of the
//!   input), is that agent's conversation: it started that long before.
//! - A call answered from a queue it was never seen entering (the input
//!   starts mid-call: the entry is in an earlier, rotated file) counts once
//!   as a handled call of that queue, so that the queue's talk time and its
//!   handled calls cover the same calls. It is not an offered call: its
//!   entry was not seen.

use serde::{Deserialize, Serialize};

use crate::counters::{CounterSet, FineKey, Hist};
use crate::event::{
    DialOutcome, Direction, Event, EventKind, HangupBy, LeaveReason, MissReason, NANOS_PER_MS, SurveyMetric,
    TransferKind, UnixNanos,
};
use crate::time::{BUCKET_NS, bucket_of};

/// How a queue visit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisitOutcome {
    /// An agent answered.
    Answered,
    /// Left with this reason.
    Left(LeaveReason),
    /// No exit event; closed by timeout.
    UnknownEnd,
}

/// One stay of the caller in one queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Visit {
    /// Queue.
    pub queue: String,
    /// Entry time.
    pub enter: UnixNanos,
    /// Exit time, once known.
    pub exit: Option<UnixNanos>,
    /// Outcome, once known.
    pub outcome: Option<VisitOutcome>,
    /// Wait (entry to answer or exit), ms.
    pub wait_ms: u64,
    /// Agent who answered.
    pub agent: Option<String>,
    /// Calling number given at entry.
    pub caller: Option<String>,
    /// Whether a bare leave was seen.
    left_unspecified_at: Option<UnixNanos>,
}

impl Visit {
    fn entered(queue: &str, at: UnixNanos, caller: Option<String>) -> Self {
        Self {
            queue: queue.to_owned(),
            enter: at,
            exit: None,
            outcome: None,
            wait_ms: 0,
            agent: None,
            caller,
            left_unspecified_at: None,
        }
    }
}

/// How a segment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentEnd {
    /// Someone hung up.
    Hangup(HangupBy),
    /// The agent transferred the call.
    Transfer(TransferKind),
    /// No end event; closed by timeout.
    UnknownEnd,
}

/// One agent's conversation with the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Agent.
    pub agent: String,
    /// Queue it was answered from.
    pub queue: Option<String>,
    /// Index of that visit in [`CallRecord::visits`].
    pub visit: Option<usize>,
    /// Answer time.
    pub start: UnixNanos,
    /// Ring time before the answer, ms: the PBX's figure when reported,
    /// else from this agent's `Ringing` to the answer (0 when neither).
    pub ring_ms: u64,
    /// End time, once known.
    pub end: Option<UnixNanos>,
    /// How it ended.
    pub end_kind: Option<SegmentEnd>,
    /// Talk as reported by the PBX, ms.
    reported_talk_ms: Option<u64>,
    /// Closed hold spans.
    pub holds: Vec<(UnixNanos, UnixNanos)>,
    hold_open: Option<UnixNanos>,
    /// After-call work span.
    pub wrap: Option<(UnixNanos, Option<UnixNanos>)>,
}

impl Segment {
    /// A conversation answered at `start`, still going.
    fn answered(agent: &str, queue: Option<&String>, visit: Option<usize>, start: UnixNanos, ring_ms: u64) -> Self {
        Self {
            agent: agent.to_owned(),
            queue: queue.cloned(),
            visit,
            start,
            ring_ms,
            end: None,
            end_kind: None,
            reported_talk_ms: None,
            holds: Vec::new(),
            hold_open: None,
            wrap: None,
        }
    }

    /// Hold time, ms.
    pub fn hold_ms(&self) -> u64 {
        self.holds.iter().map(|(a, b)| ms(*b - *a)).sum()
    }

    /// Talk time (hold excluded), ms.
    pub fn talk_ms(&self) -> u64 {
        let hold = self.hold_ms();
        match self.reported_talk_ms {
            // The PBX's figure covers the whole conversation, hold included.
            Some(t) => t.saturating_sub(hold),
            None => self.end.map(|e| ms(e - self.start).saturating_sub(hold)).unwrap_or(0),
        }
    }

    /// After-call work, ms (0 when none reported or not yet ended).
    pub fn wrap_ms(&self) -> u64 {
        match self.wrap {
            Some((s, Some(e))) => ms(e - s),
            _ => 0,
        }
    }
}

impl Segment {
    /// End of the conversation, or of its after-call work when that ended.
    pub fn end_with_wrap(&self) -> Option<UnixNanos> {
        match self.wrap {
            Some((_, Some(we))) if self.end.is_some() => Some(we),
            _ => self.end,
        }
    }

    /// Who ended the conversation, when it ended with a hang-up that said so.
    pub fn ended_by(&self) -> HangupBy {
        match self.end_kind {
            Some(SegmentEnd::Hangup(by)) => by,
            _ => HangupBy::Unknown,
        }
    }

    /// Whether the conversation ended with an event that said how (a
    /// hang-up or a transfer), rather than being closed by the timeout.
    pub fn known_end(&self) -> bool {
        matches!(self.end_kind, Some(SegmentEnd::Hangup(_) | SegmentEnd::Transfer(_)))
    }

    /// Whether the conversation ended with a transfer.
    pub fn transferred(&self) -> bool {
        matches!(self.end_kind, Some(SegmentEnd::Transfer(_)))
    }
}

/// How a call, or one queue visit of it, ended, as call lists and timelines
/// show it (`CallOutcome` in `reports.proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// Not ended yet: a caller waiting, a conversation or its wrap-up going on.
    InProgress,
    /// An agent answered.
    Answered,
    /// The caller hung up while waiting, after the short-abandon threshold.
    Abandoned,
    /// The caller hung up within the short-abandon threshold.
    ShortAbandoned,
    /// The queue's wait limit expired.
    Timeout,
    /// The caller pressed a key to leave.
    ExitWithKey,
    /// No agent could take calls any more.
    LeaveEmpty,
    /// The queue was full.
    Full,
    /// No agent was available at join time.
    JoinEmpty,
    /// Transferred away before an agent answered.
    Transferred,
    /// Closed by timeout: the exit event never arrived.
    UnknownEnd,
    /// Left the queue and the source did not say why (an AMI
    /// `QueueCallerLeave` that no answer followed).
    LeftUnspecified,
    /// Not queued, and nobody answered.
    Unanswered,
    /// Outbound: the called party answered.
    OutboundConnected,
    /// Outbound: busy, no answer, failed, congestion or unavailable.
    OutboundUnreached,
    /// Outbound: the agent gave up before an answer.
    OutboundAgentAbandoned,
}

impl CallOutcome {
    /// Every value, for exhaustive tests and help texts.
    pub const ALL: [CallOutcome; 16] = [
        CallOutcome::InProgress,
        CallOutcome::Answered,
        CallOutcome::Abandoned,
        CallOutcome::ShortAbandoned,
        CallOutcome::Timeout,
        CallOutcome::ExitWithKey,
        CallOutcome::LeaveEmpty,
        CallOutcome::Full,
        CallOutcome::JoinEmpty,
        CallOutcome::Transferred,
        CallOutcome::UnknownEnd,
        CallOutcome::LeftUnspecified,
        CallOutcome::Unanswered,
        CallOutcome::OutboundConnected,
        CallOutcome::OutboundUnreached,
        CallOutcome::OutboundAgentAbandoned,
    ];

    /// The snake_case name used in JSON and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::InProgress => "in_progress",
            CallOutcome::Answered => "answered",
            CallOutcome::Abandoned => "abandoned",
            CallOutcome::ShortAbandoned => "short_abandoned",
            CallOutcome::Timeout => "timeout",
            CallOutcome::ExitWithKey => "exit_with_key",
            CallOutcome::LeaveEmpty => "leave_empty",
            CallOutcome::Full => "full",
            CallOutcome::JoinEmpty => "join_empty",
            CallOutcome::Transferred => "transferred",
            CallOutcome::UnknownEnd => "unknown_end",
            CallOutcome::LeftUnspecified => "left_unspecified",
            CallOutcome::Unanswered => "unanswered",
            CallOutcome::OutboundConnected => "outbound_connected",
            CallOutcome::OutboundUnreached => "outbound_unreached",
            CallOutcome::OutboundAgentAbandoned => "outbound_agent_abandoned",
        }
    }
}

impl Visit {
    /// How this visit ended (never an outbound value). `short_abandon_s`
    /// (0 = none) separates short abandons with the KPIs' rule (wait in
    /// whole seconds rounded up at most the threshold).
    pub fn call_outcome(&self, short_abandon_s: u32) -> CallOutcome {
        let Some(outcome) = self.outcome else { return CallOutcome::InProgress };
        match outcome {
            VisitOutcome::Answered | VisitOutcome::Left(LeaveReason::Answered) => CallOutcome::Answered,
            VisitOutcome::Left(LeaveReason::Abandon) => {
                if short_abandon_s > 0 && Hist::bucket(self.wait_ms) <= u64::from(short_abandon_s) {
                    CallOutcome::ShortAbandoned
                } else {
                    CallOutcome::Abandoned
                }
            }
            VisitOutcome::Left(LeaveReason::Timeout) => CallOutcome::Timeout,
            VisitOutcome::Left(LeaveReason::ExitWithKey) => CallOutcome::ExitWithKey,
            VisitOutcome::Left(LeaveReason::LeaveEmpty) => CallOutcome::LeaveEmpty,
            VisitOutcome::Left(LeaveReason::Full) => CallOutcome::Full,
            VisitOutcome::Left(LeaveReason::JoinEmpty) => CallOutcome::JoinEmpty,
            VisitOutcome::Left(LeaveReason::Transfer) => CallOutcome::Transferred,
            VisitOutcome::Left(LeaveReason::Unspecified) => CallOutcome::LeftUnspecified,
            VisitOutcome::UnknownEnd => CallOutcome::UnknownEnd,
        }
    }
}

/// An offer to an agent that did not become a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct MissedOffer {
    /// When it ended.
    pub at: UnixNanos,
    /// Queue.
    pub queue: Option<String>,
    /// Agent.
    pub agent: String,
    /// Why.
    pub reason: MissReason,
    /// Ring time, ms.
    pub ring_ms: u64,
}

/// A final outbound dial result.
#[derive(Debug, Clone, PartialEq)]
pub struct Dial {
    /// When.
    pub at: UnixNanos,
    /// Agent.
    pub agent: Option<String>,
    /// Trunk.
    pub trunk: Option<String>,
    /// Outcome.
    pub outcome: DialOutcome,
}

/// A survey score.
#[derive(Debug, Clone, PartialEq)]
pub struct Survey {
    /// When.
    pub at: UnixNanos,
    /// Metric.
    pub metric: SurveyMetric,
    /// Score normalised to 0..=1 on its scale.
    pub normalised: f64,
    /// Queue (from the event, else the call's last answered visit).
    pub queue: Option<String>,
    /// Agent (from the event, else the call's last segment).
    pub agent: Option<String>,
}

/// A call rebuilt from its events.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CallRecord {
    /// Site.
    pub site: String,
    /// PBX call id.
    pub call_id: String,
    /// Calling number (first one seen).
    pub caller: Option<String>,
    /// DID / called number of an inbound call.
    pub did: Option<String>,
    /// Direction from the first `CallOffered`, when there is one.
    pub direction: Option<Direction>,
    /// Called number whatever the direction: the first `CallOffered`'s, else
    /// the first dialled number.
    pub called: Option<String>,
    /// First and last event time.
    pub first: UnixNanos,
    /// Last event time.
    pub last: UnixNanos,
    /// Queue visits, in order.
    pub visits: Vec<Visit>,
    /// Agent segments, in order of answer.
    pub segments: Vec<Segment>,
    /// Missed offers.
    pub missed: Vec<MissedOffer>,
    /// Outbound dial results.
    pub dials: Vec<Dial>,
    /// Surveys.
    pub surveys: Vec<Survey>,
    /// Explicit disposition (last one wins).
    pub disposition: Option<bool>,
    /// Transfers not attached to a segment (no agent answered in this feed).
    pub loose_transfers: Vec<(UnixNanos, TransferKind, Option<String>)>,
    /// Whether anything is still open.
    pub open: bool,
}

/// Where an event stands in the life of a call, for events of the same
/// instant: offered, queued, rung, answered or left, held, ended, wrapped up,
/// surveyed.
fn causal_rank(kind: &EventKind) -> u8 {
    match kind {
        EventKind::CallOffered { .. } => 0,
        EventKind::QueueJoin { .. } => 1,
        EventKind::Ringing { .. } => 2,
        EventKind::Answered { .. }
        | EventKind::OfferMissed { .. }
        | EventKind::QueueLeave { .. }
        | EventKind::DialResult { .. } => 3,
        EventKind::Hold { .. } | EventKind::Resume { .. } => 4,
        EventKind::Transfer { .. } | EventKind::Hangup { .. } => 5,
        EventKind::WrapUpStart { .. } => 6,
        EventKind::WrapUpEnd { .. } => 7,
        EventKind::SurveyAnswer { .. }
        | EventKind::Disposition { .. }
        | EventKind::AgentState { .. }
        | EventKind::QueueStart => 8,
    }
}

/// Whether `ev` repeats an event of the same instant: same leg, same kind
/// and data. A line read twice (an overlapping copy of a rotated queue_log,
/// a collector that re-read its file) has a new event id, so the engine's
/// de-duplication by id cannot see it; a PBX never reports the same step of
/// a call twice in one instant. Surveys and dispositions are exempt: two
/// questions may well get the same score in the same second.
fn is_repeat(same_instant: &[Event], ev: &Event) -> bool {
    !matches!(ev.kind, EventKind::SurveyAnswer { .. } | EventKind::Disposition { .. })
        && same_instant.iter().any(|e| e.leg_id == ev.leg_id && e.kind == ev.kind)
}

fn ms(ns: i64) -> u64 {
    u64::try_from(ns.max(0) / NANOS_PER_MS).unwrap_or(0)
}

fn ns(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX / NANOS_PER_MS).saturating_mul(NANOS_PER_MS)
}

impl CallRecord {
    /// Rebuilds a call. `events` must all share site and call id; they are
    /// sorted here. When `closed` is true, whatever is still open is closed as
    /// unknown end at the last event's time.
    pub fn build(events: &mut [Event], closed: bool) -> CallRecord {
        // Events of the same instant are replayed in the order a call goes
        // through ([`causal_rank`]), then in arrival order. Sources that stamp
        // whole seconds (queue_log) put an entry and its exit, or an answer and
        // its hang-up, in the same second, and a realtime-table export sorted
        // by time gives them in any order within it.
        events.sort_by(|a, b| {
            a.kpi_time()
                .cmp(&b.kpi_time())
                .then_with(|| causal_rank(&a.kind).cmp(&causal_rank(&b.kind)))
                .then_with(|| a.id.cmp(&b.id))
        });
        let mut r = CallRecord::default();
        let Some(first) = events.first() else { return r };
        r.site = first.site.clone();
        r.call_id = first.call_id.clone();
        r.first = first.kpi_time();
        r.last = events.last().map_or(r.first, Event::kpi_time);
        let mut ringing: Vec<(String, UnixNanos)> = Vec::new();
        let mut same_instant = 0;
        for (i, ev) in events.iter().enumerate() {
            if i > 0 && events[i - 1].kpi_time() != ev.kpi_time() {
                same_instant = i;
            }
            if is_repeat(&events[same_instant..i], ev) {
                continue;
            }
            r.apply(ev, &mut ringing);
        }
        r.close(closed);
        r
    }

    fn open_visit(&mut self, queue: &str) -> Option<usize> {
        self.visits.iter().rposition(|v| v.queue == queue && v.outcome.is_none())
    }

    fn open_segment(&mut self, agent: Option<&str>) -> Option<usize> {
        self.segments.iter().rposition(|s| s.end.is_none() && agent.is_none_or(|a| s.agent == a))
    }

    fn apply(&mut self, ev: &Event, ringing: &mut Vec<(String, UnixNanos)>) {
        let t = ev.kpi_time();
        match &ev.kind {
            EventKind::CallOffered { caller, called, direction, .. } => {
                self.direction.get_or_insert(*direction);
                if self.called.is_none() && !called.is_empty() {
                    self.called = Some(called.clone());
                }
                if *direction == Direction::Inbound {
                    if self.caller.is_none() && !caller.is_empty() {
                        self.caller = Some(caller.clone());
                    }
                    if self.did.is_none() && !called.is_empty() {
                        self.did = Some(called.clone());
                    }
                }
            }
            EventKind::QueueJoin { queue, caller, .. } => {
                if self.caller.is_none() {
                    self.caller = caller.clone().filter(|c| !c.is_empty());
                }
                // A second join to the same queue without an exit means the
                // first exit was lost: close it so the new visit stands alone.
                if let Some(i) = self.open_visit(queue) {
                    self.visits[i].outcome = Some(VisitOutcome::UnknownEnd);
                    self.visits[i].exit = Some(t);
                    self.visits[i].wait_ms = ms(t - self.visits[i].enter);
                }
                self.visits.push(Visit::entered(queue, t, caller.clone()));
            }
            EventKind::QueueLeave { queue, reason, reported_wait_ms } => match reason {
                LeaveReason::Unspecified => {
                    if let Some(i) = self.open_visit(queue) {
                        self.visits[i].left_unspecified_at.get_or_insert(t);
                    }
                }
                LeaveReason::Answered => {}
                reason => {
                    let i = match self.open_visit(queue) {
                        Some(i) => i,
                        None if matches!(reason, LeaveReason::Full | LeaveReason::JoinEmpty) => {
                            // Refused at the door: Asterisk logs no ENTERQUEUE.
                            self.visits.push(Visit::entered(queue, t, None));
                            self.visits.len() - 1
                        }
                        None => return,
                    };
                    let v = &mut self.visits[i];
                    v.outcome = Some(VisitOutcome::Left(*reason));
                    v.exit = Some(t);
                    v.wait_ms = reported_wait_ms.unwrap_or_else(|| ms(t - v.enter));
                }
            },
            EventKind::Ringing { agent, .. } => ringing.push((agent.clone(), t)),
            EventKind::OfferMissed { queue, agent, reason, reported_ring_ms } => {
                let started = ringing.iter().rposition(|(a, _)| a == agent).map(|i| ringing.remove(i).1);
                let ring_ms = reported_ring_ms.unwrap_or_else(|| started.map_or(0, |s| ms(t - s)));
                self.missed.push(MissedOffer {
                    at: t,
                    queue: queue.clone(),
                    agent: agent.clone(),
                    reason: *reason,
                    ring_ms,
                });
            }
            EventKind::Answered { queue, agent, reported_wait_ms, reported_ring_ms } => {
                let rang_since = ringing.iter().rev().find(|(a, _)| a == agent).map(|(_, s)| *s);
                let ring_ms = reported_ring_ms.unwrap_or_else(|| rang_since.map_or(0, |s| ms(t - s)));
                ringing.retain(|(a, _)| a != agent);
                let visit = queue.as_deref().and_then(|q| self.open_visit(q));
                if let Some(i) = visit {
                    let v = &mut self.visits[i];
                    v.outcome = Some(VisitOutcome::Answered);
                    v.exit = Some(t);
                    v.agent = Some(agent.clone());
                    v.wait_ms = reported_wait_ms.unwrap_or_else(|| ms(t - v.enter));
                }
                // A repeated answer by the same agent (two feeds, or a
                // re-INVITE seen as answer) does not open a second segment.
                if self.open_segment(Some(agent)).is_none() {
                    self.segments.push(Segment::answered(agent, queue.as_ref(), visit, t, ring_ms));
                }
            }
            EventKind::Hold { agent } => {
                if let Some(i) = self.open_segment(agent.as_deref()).or_else(|| self.open_segment(None)) {
                    self.segments[i].hold_open.get_or_insert(t);
                }
            }
            EventKind::Resume { agent } => {
                let i = self
                    .segments
                    .iter()
                    .rposition(|s| s.hold_open.is_some() && agent.as_deref().is_none_or(|a| s.agent == a))
                    .or_else(|| self.segments.iter().rposition(|s| s.hold_open.is_some()));
                if let Some(i) = i {
                    let s = &mut self.segments[i];
                    if let Some(h) = s.hold_open.take() {
                        s.holds.push((h, t));
                    }
                }
            }
            EventKind::Transfer { kind, queue, agent, reported_talk_ms, target } => {
                let i = self
                    .open_segment(agent.as_deref())
                    .or_else(|| self.unseen_answer(queue, agent, *reported_talk_ms, t));
                match i {
                    Some(i) => self.end_segment(i, t, SegmentEnd::Transfer(*kind), *reported_talk_ms),
                    None => self.loose_transfers.push((t, *kind, Some(target.clone()))),
                }
            }
            EventKind::Hangup { queue, agent, by, reported_talk_ms, .. } => {
                // A hang-up that names no agent ends only a leg, unless it is
                // the only conversation in progress and the feed cannot name
                // agents (SIP, line monitor): then the call is over.
                let seg = match agent {
                    Some(a) => {
                        self.open_segment(Some(a)).or_else(|| self.unseen_answer(queue, agent, *reported_talk_ms, t))
                    }
                    None if reported_talk_ms.is_some() => self.open_segment(None),
                    None => None,
                };
                if let Some(i) = seg {
                    self.end_segment(i, t, SegmentEnd::Hangup(*by), *reported_talk_ms);
                }
            }
            EventKind::WrapUpStart { agent, .. } => {
                if let Some(s) = self.segments.iter_mut().rev().find(|s| &s.agent == agent && s.end.is_some()) {
                    s.wrap = Some((t, None));
                }
            }
            EventKind::WrapUpEnd { agent, .. } => {
                if let Some(s) = self.segments.iter_mut().rev().find(|s| &s.agent == agent)
                    && let Some((st, None)) = s.wrap
                {
                    s.wrap = Some((st, Some(t)));
                }
            }
            EventKind::DialResult { agent, trunk, outcome, dialled, .. } => {
                if self.called.is_none() && !dialled.is_empty() {
                    self.called = Some(dialled.clone());
                }
                self.dials.push(Dial { at: t, agent: agent.clone(), trunk: trunk.clone(), outcome: *outcome })
            }
            EventKind::SurveyAnswer { metric, score, scale_min, scale_max, queue, agent } => {
                let span = scale_max - scale_min;
                let normalised = if span > 0.0 { ((score - scale_min) / span).clamp(0.0, 1.0) } else { 0.0 };
                if normalised.is_finite() {
                    self.surveys.push(Survey {
                        at: t,
                        metric: *metric,
                        normalised,
                        queue: queue.clone(),
                        agent: agent.clone(),
                    });
                }
            }
            EventKind::Disposition { resolved, .. } => self.disposition = Some(*resolved),
            EventKind::AgentState { .. } | EventKind::QueueStart => {}
        }
    }

    /// The end of a conversation whose answer is not in the input (queue_log
    /// or AMI read from the middle of a call: `COMPLETECALLER`, `TRANSFER`,
    /// `AgentComplete` without their `CONNECT`). The PBX reports the talk
    /// time with the end, so the conversation is rebuilt as having started
    /// that long before; an agent who already has a segment in this call is
    /// not given another. Returns the new segment's index.
    fn unseen_answer(
        &mut self,
        queue: &Option<String>,
        agent: &Option<String>,
        reported_talk_ms: Option<u64>,
        t: UnixNanos,
    ) -> Option<usize> {
        let (agent, talk) = (agent.as_ref()?, reported_talk_ms?);
        if self.segments.iter().any(|s| &s.agent == agent) {
            return None;
        }
        self.segments.push(Segment::answered(agent, queue.as_ref(), None, t.saturating_sub(ns(talk)), 0));
        Some(self.segments.len() - 1)
    }

    fn end_segment(&mut self, i: usize, t: UnixNanos, kind: SegmentEnd, reported_talk_ms: Option<u64>) {
        let s = &mut self.segments[i];
        if let Some(h) = s.hold_open.take() {
            s.holds.push((h, t));
        }
        s.end = Some(t);
        s.end_kind = Some(kind);
        s.reported_talk_ms = reported_talk_ms;
    }

    fn close(&mut self, closed: bool) {
        let last = self.last;
        let mut open = false;
        for v in &mut self.visits {
            if v.outcome.is_none() {
                if let Some(at) = v.left_unspecified_at {
                    // Left, and no answer arrived at the same call: reason unknown.
                    if closed || at < last {
                        v.outcome = Some(VisitOutcome::Left(LeaveReason::Unspecified));
                        v.exit = Some(at);
                        v.wait_ms = ms(at - v.enter);
                        continue;
                    }
                }
                if closed {
                    v.outcome = Some(VisitOutcome::UnknownEnd);
                    v.exit = Some(last);
                    v.wait_ms = ms(last - v.enter);
                } else {
                    open = true;
                }
            }
        }
        for s in &mut self.segments {
            if s.end.is_none() {
                if closed {
                    if let Some(h) = s.hold_open.take() {
                        s.holds.push((h, last));
                    }
                    s.end = Some(last);
                    s.end_kind = Some(SegmentEnd::UnknownEnd);
                } else {
                    open = true;
                }
            }
            if let Some((_, None)) = s.wrap {
                open |= !closed;
            }
        }
        self.open = open;
    }

    /// Start of the contact for case purposes: first queue entry, else first event.
    pub fn contact_start(&self) -> UnixNanos {
        self.visits.first().map_or(self.first, |v| v.enter)
    }

    /// End of the contact: last segment end, else last visit exit, else last event.
    pub fn contact_end(&self) -> UnixNanos {
        let seg = self.segments.iter().filter_map(|s| s.end).max();
        let vis = self.visits.iter().filter_map(|v| v.exit).max();
        seg.or(vis).unwrap_or(self.last)
    }

    /// Whether an agent answered.
    pub fn handled(&self) -> bool {
        !self.segments.is_empty()
    }

    /// Whether the call went from one agent to another (FCR breaker).
    pub fn transferred_between_agents(&self) -> bool {
        let mut agents: Vec<&str> = self.segments.iter().map(|s| s.agent.as_str()).collect();
        agents.dedup();
        agents.len() > 1 || self.segments.iter().any(|s| matches!(s.end_kind, Some(SegmentEnd::Transfer(_))))
    }

    /// Treatment time of all segments (talk + hold + wrap-up), ms.
    pub fn treatment_ms(&self) -> u64 {
        self.segments.iter().map(|s| s.talk_ms() + s.hold_ms() + s.wrap_ms()).sum()
    }

    /// Queue and agent the call "belongs to" for case and survey attribution.
    pub fn home(&self) -> (Option<String>, Option<String>) {
        let queue = self.visits.first().map(|v| v.queue.clone());
        let agent = self.segments.first().map(|s| s.agent.clone());
        (queue, agent)
    }

    /// How the call ended: its last outbound dial for outbound calls, its
    /// last queue visit for queued calls, else whether an agent answered.
    /// `short_abandon_s` (0 = none) separates short abandons as the KPIs do.
    pub fn outcome(&self, short_abandon_s: u32) -> CallOutcome {
        if self.open {
            return CallOutcome::InProgress;
        }
        if let Some(d) = self.dials.last() {
            return match d.outcome {
                DialOutcome::Answered => CallOutcome::OutboundConnected,
                DialOutcome::AgentAbandoned => CallOutcome::OutboundAgentAbandoned,
                DialOutcome::Busy
                | DialOutcome::NoAnswer
                | DialOutcome::Failed
                | DialOutcome::Congestion
                | DialOutcome::Unavailable => CallOutcome::OutboundUnreached,
            };
        }
        match self.visits.last() {
            Some(v) => v.call_outcome(short_abandon_s),
            None if self.segments.is_empty() => CallOutcome::Unanswered,
            None => CallOutcome::Answered,
        }
    }

    /// End of the call (its last event) once nothing is open.
    pub fn end(&self) -> Option<UnixNanos> {
        (!self.open).then_some(self.last)
    }

    /// The direction given by the source, else outbound when there are
    /// dial results, else inbound.
    pub fn direction_or_inferred(&self) -> Direction {
        self.direction.unwrap_or(if self.dials.is_empty() { Direction::Inbound } else { Direction::Outbound })
    }

    /// Total queue wait until answer or exit over all visits, ms.
    pub fn wait_ms(&self) -> u64 {
        self.visits.iter().map(|v| v.wait_ms).sum()
    }

    /// Total talk time over all segments (hold excluded), ms.
    pub fn talk_ms(&self) -> u64 {
        self.segments.iter().map(Segment::talk_ms).sum()
    }

    /// Transfers made: segments that ended in one, and transfers no
    /// segment of this feed explains.
    pub fn transfers(&self) -> usize {
        let ended = self.segments.iter().filter(|s| matches!(s.end_kind, Some(SegmentEnd::Transfer(_)))).count();
        ended + self.loose_transfers.len()
    }

    /// Agents who talked to the caller, in order of answer; an agent who
    /// answered twice in a row is listed once.
    pub fn agents(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.segments.iter().map(|s| s.agent.as_str()).collect();
        out.dedup();
        out
    }

    /// Whether the call visited `queue` (or was answered from it).
    pub fn visited(&self, queue: &str) -> bool {
        self.visits.iter().any(|v| v.queue == queue) || self.segments.iter().any(|s| s.queue.as_deref() == Some(queue))
    }

    /// Whether `agent` talked to the caller or was offered the call (rang).
    pub fn involves_agent(&self, agent: &str) -> bool {
        self.segments.iter().any(|s| s.agent == agent) || self.missed.iter().any(|m| m.agent == agent)
    }

    fn key(&self, t: UnixNanos, queue: Option<&String>, agent: Option<&String>) -> FineKey {
        FineKey {
            bucket: bucket_of(t),
            site: self.site.clone(),
            queue: queue.cloned(),
            agent: agent.cloned(),
            did: self.did.clone(),
            trunk: None,
        }
    }

    /// The counters this call contributes, apart from case facts.
    pub fn contribution(&self) -> CounterSet {
        let mut set = CounterSet::default();
        for (vi, v) in self.visits.iter().enumerate() {
            let Some(outcome) = v.outcome else { continue };
            let c = set.cell(self.key(v.enter, Some(&v.queue), v.agent.as_ref()));
            c.entered += 1;
            match outcome {
                VisitOutcome::Answered => c.answered_wait.record(v.wait_ms),
                VisitOutcome::Left(LeaveReason::Abandon) => c.abandoned_wait.record(v.wait_ms),
                VisitOutcome::Left(reason) => {
                    c.other_wait.record(v.wait_ms);
                    match reason {
                        LeaveReason::Timeout => c.timed_out += 1,
                        LeaveReason::ExitWithKey => c.exit_with_key += 1,
                        LeaveReason::LeaveEmpty => c.leave_empty += 1,
                        LeaveReason::Full => c.full += 1,
                        LeaveReason::JoinEmpty => c.join_empty += 1,
                        LeaveReason::Transfer => c.transferred_unanswered += 1,
                        LeaveReason::Unspecified | LeaveReason::Answered | LeaveReason::Abandon => {
                            c.left_unspecified += 1
                        }
                    }
                }
                VisitOutcome::UnknownEnd => {
                    c.other_wait.record(v.wait_ms);
                    c.unknown_end += 1;
                }
            }
            // The visit counts once as handled, where its last segment ended,
            // when at least one of its segments has a known end.
            if outcome == VisitOutcome::Answered {
                let segs: Vec<&Segment> = self.segments.iter().filter(|s| s.visit == Some(vi)).collect();
                if !segs.is_empty() && segs.iter().all(|s| s.end.is_some()) && segs.iter().any(|s| s.known_end()) {
                    let end = segs.iter().filter_map(|s| s.end).max().unwrap_or(v.enter);
                    set.cell(self.key(end, Some(&v.queue), v.agent.as_ref())).handled_visits += 1;
                }
            }
        }
        // Queues this call was answered from without its entry being seen
        // (input starting mid-call): the call counts once as handled there,
        // where its last conversation from that queue ended.
        let mut unseen: Vec<(&String, UnixNanos)> = Vec::new();
        for s in self.segments.iter().filter(|s| s.visit.is_none() && s.known_end()) {
            let (Some(q), Some(end)) = (s.queue.as_ref(), s.end) else { continue };
            if self.visits.iter().any(|v| &v.queue == q) {
                continue;
            }
            match unseen.iter_mut().find(|(u, _)| *u == q) {
                Some((_, e)) => *e = (*e).max(end),
                None => unseen.push((q, end)),
            }
        }
        for (q, end) in unseen {
            let agent = self.segments.iter().rev().find(|s| s.queue.as_ref() == Some(q)).map(|s| &s.agent);
            set.cell(self.key(end, Some(q), agent)).handled_visits += 1;
        }
        for s in &self.segments {
            let Some(end) = s.end else { continue };
            let (talk, hold, wrap) = (s.talk_ms(), s.hold_ms(), s.wrap_ms());
            let c = set.cell(self.key(end, s.queue.as_ref(), Some(&s.agent)));
            if s.known_end() {
                c.handled_segments += 1;
                c.talk_ms += i64::try_from(talk).unwrap_or(i64::MAX);
                c.hold_ms += i64::try_from(hold).unwrap_or(i64::MAX);
                c.wrap_ms += i64::try_from(wrap).unwrap_or(i64::MAX);
                c.holds += i64::try_from(s.holds.len()).unwrap_or(0);
                if matches!(s.wrap, Some((_, Some(_)))) {
                    c.wrap_segments += 1;
                }
            }
            match s.end_kind {
                Some(SegmentEnd::Transfer(k)) => {
                    c.transfers += 1;
                    if k == TransferKind::Blind {
                        c.transfers_blind += 1;
                    }
                }
                Some(SegmentEnd::UnknownEnd) => c.segments_unknown_end += 1,
                _ => {}
            }
            // Busy time is spread over the quarter hours it covers, so that
            // occupancy compares like with like.
            let conv_end = s.start + ns(talk + hold);
            self.spread_busy(&mut set, s, s.start, conv_end);
            if let Some((ws, Some(we))) = s.wrap {
                self.spread_busy(&mut set, s, ws, we);
            }
        }
        for (t, kind, _) in &self.loose_transfers {
            let (q, a) = self.home();
            let c = set.cell(self.key(*t, q.as_ref(), a.as_ref()));
            c.transfers += 1;
            if *kind == TransferKind::Blind {
                c.transfers_blind += 1;
            }
        }
        for m in &self.missed {
            let c = set.cell(self.key(m.at, m.queue.as_ref(), Some(&m.agent)));
            match m.reason {
                MissReason::NoAnswer | MissReason::Rejected => {
                    c.missed_offers += 1;
                    c.missed_ring_ms += i64::try_from(m.ring_ms).unwrap_or(i64::MAX);
                }
                MissReason::Canceled => c.ring_canceled += 1,
            }
        }
        for d in &self.dials {
            let mut key = self.key(d.at, None, d.agent.as_ref());
            key.did = None;
            key.trunk = d.trunk.clone();
            let c = set.cell(key);
            c.out_attempts += 1;
            match d.outcome {
                DialOutcome::Answered => c.out_connected += 1,
                DialOutcome::Busy => c.out_busy += 1,
                DialOutcome::NoAnswer => c.out_no_answer += 1,
                DialOutcome::Failed => c.out_failed += 1,
                DialOutcome::Congestion => c.out_congestion += 1,
                DialOutcome::Unavailable => c.out_unavailable += 1,
                DialOutcome::AgentAbandoned => c.out_agent_abandoned += 1,
            }
        }
        let (home_q, home_a) = self.home();
        for s in &self.surveys {
            let q = s.queue.clone().or_else(|| home_q.clone());
            let a =
                s.agent.clone().or_else(|| self.segments.last().map(|x| x.agent.clone())).or_else(|| home_a.clone());
            let c = set.cell(self.key(s.at, q.as_ref(), a.as_ref()));
            match s.metric {
                SurveyMetric::Csat => {
                    c.csat_n += 1;
                    // 4 and 5 on 1-5 normalise to 0.75 and 1.0.
                    if s.normalised >= 0.75 - 1e-9 {
                        c.csat_satisfied += 1;
                    }
                }
                SurveyMetric::Nps => {
                    c.nps_n += 1;
                    let on_ten = (s.normalised * 10.0).round();
                    if on_ten >= 9.0 {
                        c.nps_promoters += 1;
                    } else if on_ten <= 6.0 {
                        c.nps_detractors += 1;
                    }
                }
                SurveyMetric::Ces => {
                    c.ces_n += 1;
                    // Mapped onto 1-7, kept in thousandths to stay an integer sum.
                    c.ces_sum_milli += ((1.0 + 6.0 * s.normalised) * 1000.0).round() as i64;
                }
            }
        }
        set
    }

    fn spread_busy(&self, set: &mut CounterSet, s: &Segment, from: UnixNanos, to: UnixNanos) {
        let mut t = from;
        while t < to {
            let b = bucket_of(t);
            let e = (b + BUCKET_NS).min(to);
            set.cell(self.key(b, s.queue.as_ref(), Some(&s.agent))).busy_ms += (e - t) / NANOS_PER_MS;
            t = e;
        }
    }
}
