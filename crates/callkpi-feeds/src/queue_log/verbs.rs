//! What each verb becomes: the mapping tables of the module docs, in code.

use std::collections::HashMap;

use callkpi_core::event::{
    AgentState, DialOutcome, Direction, EventKind, HangupBy, LeaveReason, MissReason, SurveyMetric, TransferKind,
};

use super::record::{Data, QueueLogRecord};
use super::{MAX_OPEN_OUTDIALS, NONE};

/// Outcome of mapping one record.
pub(super) enum Mapped {
    Event { kind: EventKind, leg_id: String, call_scoped: bool },
    Informational,
    Unknown,
    Malformed,
}

/// `NONE` reads as empty.
pub(super) fn none_empty(s: &str) -> &str {
    if s == NONE { "" } else { s }
}

/// `NONE` or empty reads as `None`.
fn opt(s: &str) -> Option<String> {
    match none_empty(s) {
        "" => None,
        s => Some(s.to_owned()),
    }
}

/// Seconds as logged, in ms.
fn secs_ms(s: &str) -> Option<u64> {
    s.parse::<u64>().ok()?.checked_mul(1000)
}

fn ms(s: &str) -> Option<u64> {
    s.parse().ok()
}

/// Data fields without the trailing empty ones (CSV rows pad with them).
fn trimmed_fields<'a>(data: &Data<'a>) -> Vec<&'a str> {
    let mut fields: Vec<&str> = data.iter().collect();
    while fields.last() == Some(&"") {
        fields.pop();
    }
    fields
}

pub(super) fn map_record(rec: &QueueLogRecord<'_>, outdials: &mut HashMap<String, (String, Option<String>)>) -> Mapped {
    let d = |i: usize| rec.data.get(i);
    let queue = || none_empty(rec.queue).to_owned();
    let agent = || none_empty(rec.agent).to_owned();
    let event = |kind: EventKind| Mapped::Event { kind, leg_id: String::new(), call_scoped: true };
    let leave = |reason: LeaveReason, wait: Option<&str>| {
        event(EventKind::QueueLeave { queue: queue(), reason, reported_wait_ms: wait.and_then(secs_ms) })
    };
    let missed = |reason: MissReason, ring: Option<u64>| {
        event(EventKind::OfferMissed { queue: opt(rec.queue), agent: agent(), reason, reported_ring_ms: ring })
    };
    let agent_state = |state: AgentState, queue: Option<String>| match opt(rec.agent) {
        Some(agent) => Mapped::Event {
            kind: EventKind::AgentState { agent, queue, state },
            leg_id: String::new(),
            call_scoped: false,
        },
        None => Mapped::Malformed,
    };
    match rec.verb {
        "ENTERQUEUE" => {
            let fields = trimmed_fields(&rec.data);
            // url|callerid|origposition[|calleridname]: Asterisk appends the
            // caller's name when queues.conf sets `log_cidname` ("Queue Logs"
            // reference). With four or more fields and a number in the third,
            // the third is the position and the rest the name; otherwise the
            // last field is the position and a callerid holding `|` keeps its
            // pieces.
            let named = fields.len() >= 4 && fields[2].parse::<u32>().is_ok();
            let (caller, position) = match fields.len() {
                0 | 1 => (String::new(), None),
                2 => (fields[1].to_owned(), None),
                _ if named => (fields[1].to_owned(), fields[2].parse().ok()),
                n => (fields[1..n - 1].join("|"), fields[n - 1].parse().ok()),
            };
            let caller = Some(caller).filter(|c| !c.is_empty());
            event(EventKind::QueueJoin { queue: queue(), caller, position })
        }
        "CONNECT" => Mapped::Event {
            kind: EventKind::Answered {
                queue: opt(rec.queue),
                agent: agent(),
                reported_wait_ms: secs_ms(d(0)),
                reported_ring_ms: secs_ms(d(2)),
            },
            leg_id: d(1).to_owned(),
            call_scoped: true,
        },
        verb @ ("COMPLETEAGENT" | "COMPLETECALLER") => event(EventKind::Hangup {
            queue: opt(rec.queue),
            agent: opt(rec.agent),
            by: if verb == "COMPLETEAGENT" { HangupBy::Agent } else { HangupBy::Caller },
            cause: None,
            reported_talk_ms: secs_ms(d(1)),
        }),
        "ABANDON" => leave(LeaveReason::Abandon, Some(d(2))),
        "EXITWITHTIMEOUT" => leave(LeaveReason::Timeout, Some(d(2))),
        "EXITWITHKEY" => leave(LeaveReason::ExitWithKey, Some(d(3))),
        "EXITEMPTY" | "LEAVEEMPTY" => leave(LeaveReason::LeaveEmpty, Some(d(2))),
        "FULL" => leave(LeaveReason::Full, None),
        "JOINEMPTY" => leave(LeaveReason::JoinEmpty, None),
        "RINGNOANSWER" => {
            let ring = ms(d(0));
            missed(refused_at_once(ring), ring)
        }
        "RINGCANCELED" => missed(MissReason::Canceled, ms(d(0))),
        "AGENTDUMP" => missed(MissReason::Rejected, None),
        "BLINDTRANSFER" | "TRANSFER" => {
            let (exten, context) = (d(0), d(1));
            let target = if context.is_empty() { exten.to_owned() } else { format!("{exten}@{context}") };
            event(EventKind::Transfer {
                kind: TransferKind::Blind,
                queue: opt(rec.queue),
                agent: opt(rec.agent),
                target,
                reported_talk_ms: secs_ms(d(3)),
            })
        }
        "ATTENDEDTRANSFER" => {
            let fields = trimmed_fields(&rec.data);
            let Some((&method, rest)) = fields.split_first() else { return Mapped::Malformed };
            // method|key...|holdtime|calltime|origposition
            let (key, talk) = match rest.len() {
                n if n >= 4 => (rest[..n - 3].join("|"), secs_ms(rest[n - 2])),
                _ => (rest.join("|"), None),
            };
            let target = if key.is_empty() { method.to_owned() } else { format!("{method}:{key}") };
            event(EventKind::Transfer {
                kind: TransferKind::Attended,
                queue: opt(rec.queue),
                agent: opt(rec.agent),
                target,
                reported_talk_ms: talk,
            })
        }
        // A member added paused (AMI QueueAdd with `Paused: true`, or the
        // dialplan's equivalent) is logged in but takes no calls: counting it as
        // available would inflate available time until its first UNPAUSE.
        "ADDMEMBER" if d(0) == "PAUSED" => agent_state(AgentState::Paused { reason: String::new() }, opt(rec.queue)),
        "ADDMEMBER" => agent_state(AgentState::Login, opt(rec.queue)),
        "REMOVEMEMBER" => agent_state(AgentState::Logout, opt(rec.queue)),
        "AGENTLOGIN" | "AGENTCALLBACKLOGIN" => agent_state(AgentState::Login, opt(rec.queue)),
        "AGENTLOGOFF" | "AGENTCALLBACKLOGOFF" => agent_state(AgentState::Logout, opt(rec.queue)),
        "PAUSE" => agent_state(AgentState::Paused { reason: d(0).to_owned() }, opt(rec.queue)),
        "PAUSEALL" => agent_state(AgentState::Paused { reason: d(0).to_owned() }, None),
        "UNPAUSE" => agent_state(AgentState::Available, opt(rec.queue)),
        "UNPAUSEALL" => agent_state(AgentState::Available, None),
        "QUEUESTART" => Mapped::Event { kind: EventKind::QueueStart, leg_id: String::new(), call_scoped: false },
        "DID" => match d(0) {
            "" => Mapped::Malformed,
            did => event(EventKind::CallOffered {
                direction: Direction::Inbound,
                caller: String::new(),
                called: did.to_owned(),
                trunk: None,
            }),
        },
        // "A call was answered by an agent, but the call was dropped because
        // the channels were not compatible" (Queue Logs): app_queue hangs the
        // member up and returns, so the caller's stay in the queue ends here,
        // neither answered nor abandoned by the caller. Some versions log an
        // ABANDON after it, which then gives the reason.
        "SYSCOMPAT" => leave(LeaveReason::Unspecified, None),
        // position|origposition|waittime|info: removed by the
        // QueueWithdrawCaller action (Asterisk 21+), neither abandoned by the
        // caller nor let go by the queue's limits; as on the AMI path.
        "WITHDRAW" => leave(LeaveReason::Unspecified, Some(d(2))),
        "CONFIGRELOAD" | "INFO" => Mapped::Informational,
        "SURVEY" => match survey(rec) {
            Some(kind) => event(kind),
            None => Mapped::Malformed,
        },
        "DISPOSITION" => {
            let resolved = match d(1).to_ascii_lowercase().as_str() {
                "1" | "yes" | "true" => true,
                "0" | "no" | "false" => false,
                _ => return Mapped::Malformed,
            };
            event(EventKind::Disposition { resolved, code: d(0).to_owned(), agent: opt(rec.agent) })
        }
        "OUTDIAL" => {
            let called = d(0);
            if called.is_empty() {
                return Mapped::Malformed;
            }
            let trunk = opt(d(1));
            let call_id = none_empty(rec.call_id);
            if !call_id.is_empty() {
                if outdials.len() >= MAX_OPEN_OUTDIALS {
                    outdials.clear();
                }
                outdials.insert(call_id.to_owned(), (called.to_owned(), trunk.clone()));
            }
            event(EventKind::CallOffered {
                direction: Direction::Outbound,
                caller: agent(),
                called: called.to_owned(),
                trunk,
            })
        }
        verb @ ("OUTRESULT" | "OUTANSWER") => {
            let (outcome, cause, number) = if verb == "OUTANSWER" {
                (Some(DialOutcome::Answered), None, d(0))
            } else {
                (dial_outcome(d(0)), d(1).parse::<u16>().ok(), d(2))
            };
            let Some(outcome) = outcome else { return Mapped::Malformed };
            let open = outdials.remove(none_empty(rec.call_id));
            let (dialled, trunk) = match (number, open) {
                ("", Some((dialled, trunk))) => (dialled, trunk),
                (number, open) => (number.to_owned(), open.and_then(|(_, trunk)| trunk)),
            };
            event(EventKind::DialResult { agent: opt(rec.agent), dialled, trunk, outcome, cause })
        }
        verb @ ("WRAPUPSTART" | "WRAPUPEND") => {
            let Some(agent) = opt(rec.agent) else { return Mapped::Malformed };
            let queue = opt(rec.queue);
            event(if verb == "WRAPUPSTART" {
                EventKind::WrapUpStart { agent, queue }
            } else {
                EventKind::WrapUpEnd { agent, queue }
            })
        }
        _ => Mapped::Unknown,
    }
}

/// A ring-no-answer whose ring time is 0 was no ring-out: app_queue logs the
/// ring time in whole seconds (times 1000) when the member's channel reports
/// busy or congestion or fails, so 0 means the device refused within the
/// second it was called. The agent did not let it ring: a rejected offer.
/// Shared with the AMI mapper (`AgentRingNoAnswer`), so both feeds agree.
pub(crate) fn refused_at_once(ring_ms: Option<u64>) -> MissReason {
    if ring_ms == Some(0) { MissReason::Rejected } else { MissReason::NoAnswer }
}

/// Asterisk's `DIALSTATUS`.
fn dial_outcome(status: &str) -> Option<DialOutcome> {
    Some(match status.to_ascii_uppercase().as_str() {
        "ANSWER" | "ANSWERED" => DialOutcome::Answered,
        "BUSY" => DialOutcome::Busy,
        "NOANSWER" | "NO ANSWER" => DialOutcome::NoAnswer,
        "CONGESTION" => DialOutcome::Congestion,
        "CHANUNAVAIL" => DialOutcome::Unavailable,
        "CANCEL" => DialOutcome::AgentAbandoned,
        "FAILED" | "INVALIDARGS" | "DONTCALL" | "TORTURE" => DialOutcome::Failed,
        _ => return None,
    })
}

/// `SURVEY`: score|metric|min|max.
fn survey(rec: &QueueLogRecord<'_>) -> Option<EventKind> {
    let score: f64 = rec.data.get(0).trim().parse().ok()?;
    let (metric, min, max) = match rec.data.get(1).trim().to_ascii_lowercase().as_str() {
        "" | "csat" => (SurveyMetric::Csat, 1.0, 5.0),
        "nps" => (SurveyMetric::Nps, 0.0, 10.0),
        "ces" => (SurveyMetric::Ces, 1.0, 7.0),
        _ => return None,
    };
    let bound = |i: usize, default: f64| match rec.data.get(i).trim() {
        "" => Some(default),
        s => s.parse::<f64>().ok(),
    };
    let (scale_min, scale_max) = (bound(2, min)?, bound(3, max)?);
    let valid = score.is_finite() && scale_min.is_finite() && scale_max.is_finite() && scale_min < scale_max;
    if !valid || score < scale_min || score > scale_max {
        return None;
    }
    Some(EventKind::SurveyAnswer { metric, score, scale_min, scale_max, queue: opt(rec.queue), agent: opt(rec.agent) })
}
