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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VisitOutcome {
    /// An agent answered.
    Answered,
    /// Left with this reason.
    Left(LeaveReason),
    /// No exit event; closed by timeout.
    UnknownEnd,
}

/// One stay of the caller in one queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SegmentEnd {
    /// Someone hung up.
    Hangup(HangupBy),
    /// The agent transferred the call.
    Transfer(TransferKind),
    /// No end event; closed by timeout.
    UnknownEnd,
}

/// One agent's conversation with the caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
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

mod contribution;
mod replay;

impl CallRecord {
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
}

pub(crate) fn ms(ns: i64) -> u64 {
    u64::try_from(ns.max(0) / NANOS_PER_MS).unwrap_or(0)
}

pub(crate) fn ns(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX / NANOS_PER_MS).saturating_mul(NANOS_PER_MS)
}
