//! Random call centres shared by the property tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

use callkpi_core::event::*;
use proptest::prelude::*;

pub const T0: i64 = 1_795_356_000;

#[derive(Debug, Clone)]
pub enum Outcome {
    Answered { wait: u32, talk: u32, hold: Option<(u32, u32)>, transfer_to: Option<u8>, survey: Option<u8> },
    Abandon { wait: u32 },
    Timeout { wait: u32 },
    Key { wait: u32 },
    Full,
}

#[derive(Debug, Clone)]
pub struct CallSpec {
    pub enter: u32,
    pub queue: u8,
    pub caller: u8,
    pub agent: u8,
    pub outcome: Outcome,
}

pub fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        4 => (0u32..120, 1u32..600, proptest::option::of((0u32..100, 1u32..100)), proptest::option::of(0u8..3), proptest::option::of(1u8..=5))
            .prop_map(|(wait, talk, hold, transfer_to, survey)| Outcome::Answered { wait, talk, hold, transfer_to, survey }),
        2 => (0u32..200).prop_map(|wait| Outcome::Abandon { wait }),
        1 => (0u32..300).prop_map(|wait| Outcome::Timeout { wait }),
        1 => (0u32..60).prop_map(|wait| Outcome::Key { wait }),
        1 => Just(Outcome::Full),
    ]
}

pub fn call_spec() -> impl Strategy<Value = CallSpec> {
    (0u32..7200, 0u8..2, 0u8..6, 0u8..3, outcome()).prop_map(|(enter, queue, caller, agent, outcome)| CallSpec {
        enter,
        queue,
        caller,
        agent,
        outcome,
    })
}

pub const AGENTS: [&str; 3] = ["Alice", "Bob", "Carla"];

pub fn events_of(i: usize, c: &CallSpec, seq: &mut u64) -> Vec<Event> {
    let call = format!("call-{i}");
    let queue = if c.queue == 0 { "support" } else { "sales" }.to_owned();
    let agent = AGENTS[usize::from(c.agent)].to_owned();
    let mut out = Vec::new();
    let mut push = |secs: u32, kind: EventKind| {
        *seq += 1;
        out.push(Event {
            id: EventId { agent_id: "p".into(), seq: *seq },
            site: "hq".into(),
            source: SourceKind::Synthetic,
            call_id: call.clone(),
            leg_id: String::new(),
            time: EventTime::from_source((T0 + i64::from(secs)) * NANOS_PER_SEC),
            kind,
        });
    };
    let e = c.enter;
    let leave = |reason, wait: u32| EventKind::QueueLeave {
        queue: queue.clone(),
        reason,
        reported_wait_ms: Some(u64::from(wait) * 1000),
    };
    if !matches!(c.outcome, Outcome::Full) {
        push(
            e,
            EventKind::QueueJoin {
                queue: queue.clone(),
                caller: Some(format!("06000000{}", c.caller)),
                position: Some(1),
            },
        );
    }
    match &c.outcome {
        Outcome::Answered { wait, talk, hold, transfer_to, survey } => {
            let a = e + wait;
            push(
                a,
                EventKind::Answered {
                    queue: Some(queue.clone()),
                    agent: agent.clone(),
                    reported_wait_ms: None,
                    reported_ring_ms: None,
                },
            );
            if let Some((h0, hl)) = hold {
                push(a + h0.min(talk), EventKind::Hold { agent: Some(agent.clone()) });
                push(a + h0.min(talk) + hl, EventKind::Resume { agent: Some(agent.clone()) });
            }
            let end = a + talk + hold.map_or(0, |(_, hl)| hl);
            match transfer_to.map(|t| AGENTS[usize::from(t)]).filter(|t| *t != agent) {
                Some(other) => {
                    let kind = EventKind::Transfer {
                        kind: TransferKind::Blind,
                        queue: Some(queue.clone()),
                        agent: Some(agent.clone()),
                        target: other.into(),
                        reported_talk_ms: None,
                    };
                    push(end, kind);
                    let ans = EventKind::Answered {
                        queue: Some(queue.clone()),
                        agent: other.into(),
                        reported_wait_ms: None,
                        reported_ring_ms: None,
                    };
                    push(end + 2, ans);
                    let hang = EventKind::Hangup {
                        queue: None,
                        agent: Some(other.into()),
                        by: HangupBy::Caller,
                        cause: Some(16),
                        reported_talk_ms: None,
                    };
                    push(end + 60, hang);
                }
                None => {
                    let hang = EventKind::Hangup {
                        queue: None,
                        agent: Some(agent.clone()),
                        by: HangupBy::Agent,
                        cause: Some(16),
                        reported_talk_ms: None,
                    };
                    push(end, hang);
                }
            }
            if let Some(score) = survey {
                let s = EventKind::SurveyAnswer {
                    metric: SurveyMetric::Csat,
                    score: f64::from(*score),
                    scale_min: 1.0,
                    scale_max: 5.0,
                    queue: None,
                    agent: None,
                };
                push(end + 70, s);
            }
        }
        Outcome::Abandon { wait } => push(e + wait, leave(LeaveReason::Abandon, *wait)),
        Outcome::Timeout { wait } => push(e + wait, leave(LeaveReason::Timeout, *wait)),
        Outcome::Key { wait } => push(e + wait, leave(LeaveReason::ExitWithKey, *wait)),
        Outcome::Full => push(e, leave(LeaveReason::Full, 0)),
    }
    out
}
