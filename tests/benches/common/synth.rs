//! Seeded synthetic inbound calls for the query benches (`getkpis_pg`):
//! queues, agents, arrivals spread over N days, waits, abandons, timeouts,
//! talk, hold and wrap-up. Each call is one queue visit, so it maps both to
//! the engine's normalised events and to one row of a normalised SQL table.
//!
//! The mix follows `crates/callkpi-core/benches/engine.rs` (same xorshift,
//! same kinds of events), which lives in another crate's bench and cannot be
//! shared; times here have millisecond precision so that thresholds (short
//! abandons, service level) are exercised at their edges.

#![allow(dead_code, unreachable_pub)]

use callkpi_core::event::*;

/// Start of the generated range: 2026-11-23T00:00:00Z, a quarter-hour boundary.
pub const T0_MS: i64 = 1_795_392_000_000;

/// xorshift64: deterministic, no dependency.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced: xorshift needs a non-zero state).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 { 0x9e37_79b9_7f4a_7c15 } else { seed })
    }

    /// Uniform in `0..n`.
    pub fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// How a queue visit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An agent answered.
    Answered,
    /// The caller hung up while waiting.
    Abandoned,
    /// The queue's timeout sent the caller elsewhere.
    Timeout,
}

impl Outcome {
    /// The SQL enum label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::Abandoned => "abandoned",
            Outcome::Timeout => "timeout",
        }
    }
}

/// One call: one visit of one queue.
#[derive(Debug, Clone)]
pub struct Call {
    /// Index, unique: the call id is `c<index>`.
    pub index: u64,
    /// Queue name.
    pub queue: &'static str,
    /// Caller number (repeat callers share one).
    pub caller: String,
    /// Answering agent (meaningful when answered).
    pub agent: u32,
    /// Queue entry, Unix ms.
    pub entered_ms: i64,
    /// Entry to answer or to leaving the queue, ms.
    pub wait_ms: i64,
    /// How it ended.
    pub outcome: Outcome,
    /// Conversation without hold, ms (0 unless answered).
    pub talk_ms: i64,
    /// Hold, ms (0 unless answered).
    pub hold_ms: i64,
    /// After-call work, ms (0 unless answered).
    pub wrap_ms: i64,
}

impl Call {
    /// Answer time, Unix ms, when answered.
    pub fn answered_ms(&self) -> Option<i64> {
        (self.outcome == Outcome::Answered).then_some(self.entered_ms + self.wait_ms)
    }

    /// When the caller left: hang-up after the conversation, or leaving the queue.
    pub fn left_ms(&self) -> i64 {
        self.entered_ms + self.wait_ms + self.talk_ms + self.hold_ms
    }
}

/// The eight queues.
pub const QUEUES: [&str; 8] = ["support", "sales", "billing", "claims", "vip", "tech", "retention", "general"];

/// Generates `calls` calls over `days` days from `seed`, in arrival order:
/// 70 % answered (wait 0-120 s, talk 30-600 s, a 10-60 s hold in one call
/// of five, 5-60 s of wrap-up), 22 % abandoned (wait 0-180 s, so some are
/// short abandons), 8 % timed out after 300 s. Calls arrive round the
/// clock; the answering agent is one on shift ([`shift_of`]) serving the
/// queue ([`queues_of`]). A third as many caller numbers as calls, so
/// callers repeat.
pub fn calls(calls: u64, days: u64, agents: u32, seed: u64) -> impl Iterator<Item = Call> {
    calls_from(T0_MS, calls, days, agents, seed)
}

/// [`calls`] from `t0_ms` (a day boundary) instead of [`T0_MS`].
pub fn calls_from(t0_ms: i64, calls: u64, days: u64, agents: u32, seed: u64) -> impl Iterator<Item = Call> {
    let mut rng = Rng::new(seed);
    let span_ms = i64::try_from(days.max(1) * 86_400_000).unwrap_or(i64::MAX);
    let step = (span_ms / i64::try_from(calls.max(1)).unwrap_or(i64::MAX)).max(1);
    let callers = calls / 3 + 1;
    (0..calls).map(move |i| {
        // Exact spread over the whole span (a truncated step would end it early).
        let slot = i64::try_from(i128::from(i) * i128::from(span_ms) / i128::from(calls.max(1))).unwrap_or(0);
        let entered_ms = t0_ms + slot + rng.next(step as u64) as i64;
        let queue = QUEUES[rng.next(QUEUES.len() as u64) as usize];
        let caller = format!("06{:08}", rng.next(callers));
        let agent = pick_agent(&mut rng, queue_index(queue), shift_at(entered_ms), agents);
        let r = rng.next(100);
        let (outcome, wait_ms) = if r < 70 {
            (Outcome::Answered, rng.next(120_001) as i64)
        } else if r < 92 {
            (Outcome::Abandoned, rng.next(180_001) as i64)
        } else {
            (Outcome::Timeout, 300_000)
        };
        let (talk_ms, hold_ms, wrap_ms) = if outcome == Outcome::Answered {
            let talk = 30_000 + rng.next(570_001) as i64;
            let hold = if rng.next(5) == 0 { 10_000 + rng.next(50_001) as i64 } else { 0 };
            (talk, hold, 5_000 + rng.next(55_001) as i64)
        } else {
            (0, 0, 0)
        };
        Call { index: i, queue, caller, agent, entered_ms, wait_ms, outcome, talk_ms, hold_ms, wrap_ms }
    })
}

/// Agents needed so that every queue has agents on every shift.
pub const MIN_AGENTS: u32 = 24;

/// The two queues (indexes into [`QUEUES`]) agent `a` serves.
pub fn queues_of(a: u32) -> [usize; 2] {
    [a as usize % 8, (a as usize + 3) % 8]
}

/// Agent `a`'s daily shift: 0 = 00:00-08:00 UTC, 1 = 08:00-16:00, 2 = 16:00-24:00.
pub fn shift_of(a: u32) -> u32 {
    a % 3
}

fn shift_at(ms: i64) -> u32 {
    (ms.rem_euclid(86_400_000) / 28_800_000) as u32
}

fn queue_index(q: &str) -> usize {
    QUEUES.iter().position(|x| *x == q).unwrap_or(0)
}

/// An agent of the `agents` (at least [`MIN_AGENTS`]) on `shift` serving queue `q`.
fn pick_agent(rng: &mut Rng, q: usize, shift: u32, agents: u32) -> u32 {
    let agents = agents.max(MIN_AGENTS);
    // Agents repeat the pattern every 24 (8 queues x 3 shifts): two residues
    // serve q on that shift; pick one, then one of its copies.
    let residues: Vec<u32> = (0..MIN_AGENTS).filter(|&x| shift_of(x) == shift && queues_of(x).contains(&q)).collect();
    let x = residues[rng.next(residues.len() as u64) as usize];
    let copies = (agents - x).div_ceil(MIN_AGENTS);
    x + MIN_AGENTS * rng.next(u64::from(copies)) as u32
}

/// Agent name of agent number `a`.
pub fn agent_name(a: u32) -> String {
    format!("agent{a:03}")
}

/// Shift logins and logouts (no queue named: all the agent's queues) of
/// `agents` agents over `days` days from [`T0_MS`], as events of `site`.
pub fn shifts(agents: u32, days: u64, site: &str, seq: &mut u64) -> Vec<Event> {
    shifts_from(T0_MS, agents, days, site, seq)
}

/// [`shifts`] from `t0_ms` (a day boundary) instead of [`T0_MS`].
pub fn shifts_from(t0_ms: i64, agents: u32, days: u64, site: &str, seq: &mut u64) -> Vec<Event> {
    let mut out = Vec::new();
    for day in 0..days.max(1) as i64 {
        for a in 0..agents.max(MIN_AGENTS) {
            let start = t0_ms + day * 86_400_000 + i64::from(shift_of(a)) * 28_800_000;
            for (t, state) in [(start, AgentState::Login), (start + 28_800_000, AgentState::Logout)] {
                *seq += 1;
                out.push(Event {
                    id: EventId { agent_id: "synth".into(), seq: *seq },
                    site: site.to_owned(),
                    source: SourceKind::Synthetic,
                    call_id: String::new(),
                    leg_id: String::new(),
                    time: EventTime::from_source(t * NANOS_PER_MS),
                    kind: EventKind::AgentState { agent: agent_name(a), queue: None, state },
                });
            }
        }
    }
    out
}

/// The normalised events of `call`, as a PBX feed would give them; `seq`
/// numbers them.
pub fn events(call: &Call, site: &str, seq: &mut u64, out: &mut Vec<Event>) {
    let call_id = format!("c{}", call.index);
    let mut ev = |t_ms: i64, kind: EventKind| {
        *seq += 1;
        out.push(Event {
            id: EventId { agent_id: "synth".into(), seq: *seq },
            site: site.to_owned(),
            source: SourceKind::Synthetic,
            call_id: call_id.clone(),
            leg_id: String::new(),
            time: EventTime::from_source(t_ms * NANOS_PER_MS),
            kind,
        });
    };
    let queue = call.queue.to_owned();
    let enter = call.entered_ms;
    ev(enter, EventKind::QueueJoin { queue: queue.clone(), caller: Some(call.caller.clone()), position: Some(1) });
    match call.outcome {
        Outcome::Answered => {
            let agent = agent_name(call.agent);
            let answer = enter + call.wait_ms;
            let kind = EventKind::Answered {
                queue: Some(queue.clone()),
                agent: agent.clone(),
                reported_wait_ms: None,
                reported_ring_ms: None,
            };
            ev(answer, kind);
            if call.hold_ms > 0 {
                let at = answer + call.talk_ms / 2;
                ev(at, EventKind::Hold { agent: Some(agent.clone()) });
                ev(at + call.hold_ms, EventKind::Resume { agent: Some(agent.clone()) });
            }
            let end = call.left_ms();
            let hang = EventKind::Hangup {
                queue: Some(queue.clone()),
                agent: Some(agent.clone()),
                by: HangupBy::Caller,
                cause: Some(16),
                reported_talk_ms: None,
            };
            ev(end, hang);
            ev(end, EventKind::WrapUpStart { agent: agent.clone(), queue: Some(queue.clone()) });
            ev(end + call.wrap_ms, EventKind::WrapUpEnd { agent, queue: Some(queue) });
        }
        Outcome::Abandoned | Outcome::Timeout => {
            let reason = if call.outcome == Outcome::Abandoned { LeaveReason::Abandon } else { LeaveReason::Timeout };
            ev(enter + call.wait_ms, EventKind::QueueLeave { queue, reason, reported_wait_ms: None });
        }
    }
}
