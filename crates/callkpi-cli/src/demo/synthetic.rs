//! A synthetic call centre that speaks AMI, so the demo can run forever.
//!
//! A small discrete-event simulation: callers arrive in `support` and
//! `sales` at random (Poisson), wait with a random patience, are offered to
//! the longest-idle free member (who sometimes does not answer), talk, and
//! leave; members take a short unannounced wrap-up, as Asterisk's
//! `wrapuptime` does, and now and then a break (a pause). Every step is
//! written as the events a real Asterisk 22 sends for it (the same headers
//! as in the bundled recording), in real time, so the agent's AMI reader
//! and the engine see nothing they would not see from a PBX. The same seed
//! and start time give the same bytes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use callkpi_core::event::NANOS_PER_SEC;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{FeedStatus, Phase, now_ns};

/// A queue and its traffic.
struct QueueSpec {
    name: &'static str,
    /// Mean time between two callers, s.
    mean_gap_s: f64,
    /// Mean time a caller waits before hanging up, s.
    mean_patience_s: f64,
}

/// The recording's queues and agents, so that the synthetic centre looks
/// like the same one going on.
const QUEUES: [QueueSpec; 2] = [
    QueueSpec { name: "support", mean_gap_s: 14.0, mean_patience_s: 50.0 },
    QueueSpec { name: "sales", mean_gap_s: 35.0, mean_patience_s: 70.0 },
];

/// A member: name, extension, queues (indexes into [`QUEUES`]).
const AGENTS: [(&str, &str, &[usize]); 4] = [
    ("Alice Martin", "1001", &[0]),
    ("Bob Nguyen", "1002", &[0, 1]),
    ("Carla Jiménez", "1003", &[0]),
    ("Dmitri Petrov", "2001", &[1]),
];

const CALLER_NAMES: [&str; 8] = [
    "José Müller",
    "Zoë Ørsted",
    "李雷",
    "O'Brien, Patrick",
    "Nguyễn Văn An",
    "Ahmed Al-Farsi",
    "Łukasz Wiśniewski",
    "Marie Dubois",
];

/// A member's ring timeout, s (as `timeout` in queues.conf).
const RING_TIMEOUT_S: f64 = 10.0;
/// Unannounced after-call work, s (as `wrapuptime`).
const WRAP_UP_S: f64 = 3.0;
/// Chance a member lets an offer ring out.
const NO_ANSWER_P: f64 = 0.08;
/// Chance a member takes a break after a call.
const BREAK_P: f64 = 0.05;
/// Chance a caller answers the survey after the agent hangs up.
const SURVEY_P: f64 = 0.5;
/// Chance a caller is one who called before (for first-call resolution).
const REPEAT_P: f64 = 0.15;

/// What happens next; ordered only to break ties deterministically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Login(usize),
    Arrival(usize),
    Answer(u64),
    RingOut(u64),
    GiveUp(u64),
    Complete(u64),
    Free(usize),
    Unpause(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AgentState {
    LoggedOut,
    Idle,
    Busy,
    Paused,
}

#[derive(Debug)]
struct Agent {
    state: AgentState,
    idle_since: i64,
}

/// A member channel rung for a call.
#[derive(Debug)]
struct Offer {
    agent: usize,
    uniqueid: String,
    channel: String,
    start: i64,
}

#[derive(Debug)]
struct Call {
    queue: usize,
    /// `;1` half: the caller's side, origin of the call (`Linkedid`).
    origin: String,
    origin_channel: String,
    /// `;2` half: the channel that sits in the queue.
    uniqueid: String,
    channel: String,
    number: String,
    name: &'static str,
    joined: i64,
    offer: Option<Offer>,
    /// Answered at.
    answered: Option<i64>,
}

/// Calls per queue, as the simulation made them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Callers who entered the queue.
    pub(crate) entered: u64,
    /// Answered by a member.
    pub(crate) answered: u64,
    /// Hung up while waiting.
    pub(crate) abandoned: u64,
}

/// The simulation: [`Synthetic::step`] runs the next action and returns the
/// AMI bytes it produced.
#[derive(Debug)]
pub(crate) struct Synthetic {
    rng: StdRng,
    now: i64,
    queue: BinaryHeap<Reverse<(i64, u64, Action)>>,
    order: u64,
    agents: Vec<Agent>,
    calls: BTreeMap<u64, Call>,
    next_call: u64,
    /// Uniqueids are `<start seconds>.<n>`, as Asterisk's.
    uid_base: i64,
    next_uid: u64,
    recent_numbers: VecDeque<String>,
    counts: [Counts; QUEUES.len()],
    out: String,
}

impl Synthetic {
    /// A call centre opening at `start_ns` (Unix ns), every member logging in.
    pub(crate) fn new(seed: u64, start_ns: i64) -> Self {
        let mut s = Self {
            rng: StdRng::seed_from_u64(seed),
            now: start_ns,
            queue: BinaryHeap::new(),
            order: 0,
            agents: AGENTS.iter().map(|_| Agent { state: AgentState::LoggedOut, idle_since: start_ns }).collect(),
            calls: BTreeMap::new(),
            next_call: 0,
            uid_base: start_ns.div_euclid(NANOS_PER_SEC),
            next_uid: 0,
            recent_numbers: VecDeque::new(),
            counts: [Counts::default(); QUEUES.len()],
            out: String::new(),
        };
        for a in 0..AGENTS.len() {
            s.at(start_ns, Action::Login(a));
        }
        for (q, spec) in QUEUES.iter().enumerate() {
            let gap = s.exp(spec.mean_gap_s);
            s.after(gap, Action::Arrival(q));
        }
        s
    }

    /// When the next action happens, Unix ns.
    pub(crate) fn next_time(&self) -> Option<i64> {
        self.queue.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Runs the next action; returns its time and the AMI messages it sent
    /// (possibly none: a caller who gave up after being answered).
    pub(crate) fn step(&mut self) -> Option<(i64, String)> {
        let Reverse((t, _, action)) = self.queue.pop()?;
        self.now = t;
        match action {
            Action::Login(a) => self.login(a),
            Action::Arrival(q) => self.arrival(q),
            Action::Answer(c) => self.answer(c),
            Action::RingOut(c) => self.ring_out(c),
            Action::GiveUp(c) => self.give_up(c),
            Action::Complete(c) => self.complete(c),
            Action::Free(a) => self.free(a),
            Action::Unpause(a) => self.unpause(a),
        }
        self.dispatch();
        Some((t, std::mem::take(&mut self.out)))
    }

    /// Calls per queue so far, in [`QUEUES`] order with their names.
    pub(crate) fn counts(&self) -> impl Iterator<Item = (&'static str, Counts)> + '_ {
        QUEUES.iter().map(|q| q.name).zip(self.counts.iter().copied())
    }

    // === scheduling ===

    fn at(&mut self, t: i64, action: Action) {
        self.order += 1;
        self.queue.push(Reverse((t, self.order, action)));
    }

    fn after(&mut self, secs: f64, action: Action) {
        self.at(self.now + (secs * 1e9) as i64, action);
    }

    /// Exponentially distributed, with this mean.
    fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.rng.random::<f64>()).ln()
    }

    fn uid(&mut self) -> String {
        self.next_uid += 1;
        format!("{}.{}", self.uid_base, self.next_uid)
    }

    // === actions ===

    fn login(&mut self, a: usize) {
        let (name, exten, queues) = AGENTS[a];
        for &q in queues {
            let login = (self.now.div_euclid(NANOS_PER_SEC)).to_string();
            self.event(
                "QueueMemberAdded",
                "agent,all",
                &[
                    ("Queue", QUEUES[q].name),
                    ("MemberName", name),
                    ("Interface", &format!("Local/{exten}@agents/n")),
                    ("StateInterface", &format!("Local/{exten}@agents/n")),
                    ("Membership", "dynamic"),
                    ("Penalty", "0"),
                    ("CallsTaken", "0"),
                    ("LastCall", "0"),
                    ("LastPause", "0"),
                    ("LoginTime", &login),
                    ("InCall", "0"),
                    ("Status", "1"),
                    ("Paused", "0"),
                    ("PausedReason", ""),
                ],
            );
        }
        self.agents[a] = Agent { state: AgentState::Idle, idle_since: self.now };
    }

    fn arrival(&mut self, q: usize) {
        let gap = self.exp(QUEUES[q].mean_gap_s);
        self.after(gap, Action::Arrival(q));
        let number = if self.rng.random_bool(REPEAT_P) && !self.recent_numbers.is_empty() {
            let i = self.rng.random_range(0..self.recent_numbers.len());
            self.recent_numbers[i].clone()
        } else {
            format!("06{:08}", self.rng.random_range(0..100_000_000))
        };
        self.recent_numbers.push_back(number.clone());
        if self.recent_numbers.len() > 50 {
            self.recent_numbers.pop_front();
        }
        let name = CALLER_NAMES[self.rng.random_range(0..CALLER_NAMES.len())];
        self.next_call += 1;
        let id = self.next_call;
        let local = format!("Local/{}@inbound-{id:08x}", QUEUES[q].name);
        let call = Call {
            queue: q,
            origin: self.uid(),
            origin_channel: format!("{local};1"),
            uniqueid: self.uid(),
            channel: format!("{local};2"),
            number,
            name,
            joined: self.now,
            offer: None,
            answered: None,
        };
        let position = (self.waiting(q) + 1).to_string();
        self.counts[q].entered += 1;
        let mut out = std::mem::take(&mut self.out);
        let join = [("Position", position.as_str()), ("Count", position.as_str())];
        write_event(&mut out, self.now, "QueueCallerJoin", "agent,all", &caller_headers(&call), &join);
        self.out = out;
        self.calls.insert(id, call);
        let patience = self.exp(QUEUES[q].mean_patience_s).max(2.0);
        self.after(patience, Action::GiveUp(id));
    }

    fn waiting(&self, q: usize) -> usize {
        self.calls.values().filter(|c| c.queue == q && c.answered.is_none()).count()
    }

    /// Offers waiting callers (oldest first) to free members (longest idle first).
    fn dispatch(&mut self) {
        loop {
            let mut free: Vec<usize> =
                (0..self.agents.len()).filter(|&a| self.agents[a].state == AgentState::Idle).collect();
            free.sort_by_key(|&a| (self.agents[a].idle_since, a));
            let pair = free.into_iter().find_map(|a| {
                let queues = AGENTS[a].2;
                self.calls
                    .iter()
                    .filter(|(_, c)| c.offer.is_none() && c.answered.is_none() && queues.contains(&c.queue))
                    .min_by_key(|(id, c)| (c.joined, **id))
                    .map(|(id, _)| (*id, a))
            });
            let Some((id, a)) = pair else { return };
            self.offer(id, a);
        }
    }

    fn offer(&mut self, id: u64, a: usize) {
        let uniqueid = self.uid();
        let channel = format!("Local/{}@agents-{:08x};1", AGENTS[a].1, self.next_uid);
        let offer = Offer { agent: a, uniqueid, channel, start: self.now };
        self.agents[a].state = AgentState::Busy;
        let call = &self.calls[&id];
        let text = self.member_headers(call, &offer);
        let headers: Vec<(&str, &str)> = text.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let call = &self.calls[&id];
        let mut out = std::mem::take(&mut self.out);
        write_event(&mut out, self.now, "AgentCalled", "agent,all", &caller_headers(call), &headers);
        self.out = out;
        if let Some(c) = self.calls.get_mut(&id) {
            c.offer = Some(offer);
        }
        if self.rng.random_bool(NO_ANSWER_P) {
            self.after(RING_TIMEOUT_S, Action::RingOut(id));
        } else {
            let ring = self.rng.random_range(1.0..5.0);
            self.after(ring, Action::Answer(id));
        }
    }

    fn answer(&mut self, id: u64) {
        let Some(call) = self.calls.get_mut(&id) else { return };
        if call.answered.is_some() {
            return;
        }
        let Some(offer) = &call.offer else { return };
        call.answered = Some(self.now);
        let q = call.queue;
        let hold = secs(self.now - call.joined);
        let ring = secs(self.now - offer.start);
        let call = &self.calls[&id];
        let offer = call.offer.as_ref().expect("offered");
        let member = self.member_headers(call, offer);
        let mut extra: Vec<(&str, &str)> = member.iter().map(|(k, v)| (*k, v.as_str())).collect();
        extra.push(("HoldTime", &hold));
        extra.push(("RingTime", &ring));
        let mut out = std::mem::take(&mut self.out);
        let position = [("Position", "1"), ("Count", "1")];
        write_event(&mut out, self.now, "QueueCallerLeave", "agent,all", &caller_headers(call), &position);
        write_event(&mut out, self.now, "AgentConnect", "agent,all", &caller_headers(call), &extra);
        self.out = out;
        self.counts[q].answered += 1;
        let talk = 8.0 + self.exp(25.0).min(240.0);
        self.after(talk, Action::Complete(id));
    }

    fn ring_out(&mut self, id: u64) {
        let Some(call) = self.calls.get_mut(&id) else { return };
        if call.answered.is_some() {
            return;
        }
        let Some(offer) = call.offer.take() else { return };
        let call = &self.calls[&id];
        let ring_ms = ((self.now - offer.start) / 1_000_000).to_string();
        let member = self.member_headers(call, &offer);
        let mut extra: Vec<(&str, &str)> = member.iter().map(|(k, v)| (*k, v.as_str())).collect();
        extra.push(("RingTime", &ring_ms));
        let mut out = std::mem::take(&mut self.out);
        write_event(&mut out, self.now, "AgentRingNoAnswer", "agent,all", &caller_headers(call), &extra);
        write_hangup(&mut out, self.now, &offer.channel, &offer.uniqueid, &call.origin);
        self.out = out;
        self.agents[offer.agent] = Agent { state: AgentState::Idle, idle_since: self.now };
    }

    fn give_up(&mut self, id: u64) {
        if self.calls.get(&id).is_none_or(|c| c.answered.is_some()) {
            return;
        }
        let Some(call) = self.calls.remove(&id) else { return };
        let mut out = std::mem::take(&mut self.out);
        write_hangup(&mut out, self.now, &call.origin_channel, &call.origin, &call.origin);
        if let Some(offer) = &call.offer {
            let mut h = caller_headers(&call);
            h.extend([
                ("DestChannel", offer.channel.as_str()),
                ("DestUniqueid", offer.uniqueid.as_str()),
                ("DestLinkedid", call.origin.as_str()),
                ("DialStatus", "CANCEL"),
            ]);
            write_event(&mut out, self.now, "DialEnd", "call,all", &h, &[]);
            write_hangup(&mut out, self.now, &offer.channel, &offer.uniqueid, &call.origin);
            self.agents[offer.agent] = Agent { state: AgentState::Idle, idle_since: self.now };
        }
        let hold = secs(self.now - call.joined);
        let abandon = [("Position", "1"), ("OriginalPosition", "1"), ("HoldTime", hold.as_str())];
        write_event(&mut out, self.now, "QueueCallerAbandon", "agent,all", &caller_headers(&call), &abandon);
        let leave = [("Position", "1"), ("Count", "0")];
        write_event(&mut out, self.now, "QueueCallerLeave", "agent,all", &caller_headers(&call), &leave);
        write_hangup(&mut out, self.now, &call.channel, &call.uniqueid, &call.origin);
        self.out = out;
        self.counts[call.queue].abandoned += 1;
    }

    fn complete(&mut self, id: u64) {
        let Some(call) = self.calls.remove(&id) else { return };
        let (Some(offer), Some(answered)) = (&call.offer, call.answered) else { return };
        let by_agent = self.rng.random_bool(0.85);
        let survey = by_agent && self.rng.random_bool(SURVEY_P);
        let score = [1, 2, 3, 4, 4, 5, 5, 5][self.rng.random_range(0..8)].to_string();
        let hold = secs(answered - call.joined);
        let talk = secs(self.now - answered);
        let (agent_name, exten, _) = AGENTS[offer.agent];
        let interface = format!("Local/{exten}@agents/n");
        let mut out = std::mem::take(&mut self.out);
        write_hangup(&mut out, self.now, &offer.channel, &offer.uniqueid, &call.origin);
        let extra = [
            ("Queue", QUEUES[call.queue].name),
            ("Interface", interface.as_str()),
            ("MemberName", agent_name),
            ("HoldTime", hold.as_str()),
            ("TalkTime", talk.as_str()),
            ("Reason", if by_agent { "agent" } else { "caller" }),
        ];
        let mut caller = caller_headers(&call);
        caller.retain(|(k, _)| *k != "Queue");
        write_event(&mut out, self.now, "AgentComplete", "agent,all", &caller, &extra);
        if survey {
            let extra = [
                ("UserEvent", "SurveyResult"),
                ("Queue", QUEUES[call.queue].name),
                ("Agent", agent_name),
                ("Score", score.as_str()),
            ];
            write_event(&mut out, self.now, "UserEvent", "user,all", &caller, &extra);
        }
        write_hangup(&mut out, self.now, &call.origin_channel, &call.origin, &call.origin);
        write_hangup(&mut out, self.now, &call.channel, &call.uniqueid, &call.origin);
        self.out = out;
        self.after(WRAP_UP_S, Action::Free(offer.agent));
    }

    fn free(&mut self, a: usize) {
        if self.rng.random_bool(BREAK_P) {
            self.pause(a, true);
            let length = self.rng.random_range(30.0..90.0);
            self.after(length, Action::Unpause(a));
        } else {
            self.agents[a] = Agent { state: AgentState::Idle, idle_since: self.now };
        }
    }

    fn unpause(&mut self, a: usize) {
        self.pause(a, false);
        self.agents[a] = Agent { state: AgentState::Idle, idle_since: self.now };
    }

    /// `QueuePause` without a queue: one event per queue of the member.
    fn pause(&mut self, a: usize, paused: bool) {
        let (name, exten, queues) = AGENTS[a];
        if paused {
            self.agents[a].state = AgentState::Paused;
        }
        let interface = format!("Local/{exten}@agents/n");
        for &q in queues {
            self.event(
                "QueueMemberPause",
                "agent,all",
                &[
                    ("Queue", QUEUES[q].name),
                    ("MemberName", name),
                    ("Interface", &interface),
                    ("StateInterface", &interface),
                    ("Membership", "dynamic"),
                    ("Paused", if paused { "1" } else { "0" }),
                    ("PausedReason", if paused { "break" } else { "" }),
                ],
            );
        }
    }

    // === AMI text ===

    fn event(&mut self, name: &str, privilege: &str, headers: &[(&str, &str)]) {
        let mut out = std::mem::take(&mut self.out);
        write_event(&mut out, self.now, name, privilege, headers, &[]);
        self.out = out;
    }

    /// The `Dest*`, `Interface` and `MemberName` headers of an offer (the
    /// caller's headers carry `Queue`).
    fn member_headers(&self, call: &Call, offer: &Offer) -> Vec<(&'static str, String)> {
        let (name, exten, _) = AGENTS[offer.agent];
        vec![
            ("DestChannel", offer.channel.clone()),
            ("DestContext", "agents".to_owned()),
            ("DestExten", QUEUES[call.queue].name.to_owned()),
            ("DestUniqueid", offer.uniqueid.clone()),
            ("DestLinkedid", call.origin.clone()),
            ("Interface", format!("Local/{exten}@agents/n")),
            ("MemberName", name.to_owned()),
        ]
    }
}

/// Whole seconds, as Asterisk reports durations.
fn secs(ns: i64) -> String {
    ((ns + NANOS_PER_SEC / 2).div_euclid(NANOS_PER_SEC)).to_string()
}

/// The channel headers of the caller's queued `;2` half.
fn caller_headers(call: &Call) -> Vec<(&'static str, &str)> {
    vec![
        ("Channel", call.channel.as_str()),
        ("CallerIDNum", call.number.as_str()),
        ("CallerIDName", call.name),
        ("Context", "inbound"),
        ("Exten", QUEUES[call.queue].name),
        ("Uniqueid", call.uniqueid.as_str()),
        ("Linkedid", call.origin.as_str()),
        ("Queue", QUEUES[call.queue].name),
    ]
}

fn write_event(out: &mut String, at: i64, name: &str, privilege: &str, a: &[(&str, &str)], b: &[(&str, &str)]) {
    let _ = write!(
        out,
        "Event: {name}\r\nPrivilege: {privilege}\r\nTimestamp: {}.{:06}\r\n",
        at.div_euclid(NANOS_PER_SEC),
        at.rem_euclid(NANOS_PER_SEC) / 1_000
    );
    for (k, v) in a.iter().chain(b) {
        let _ = write!(out, "{k}: {v}\r\n");
    }
    out.push_str("\r\n");
}

fn write_hangup(out: &mut String, at: i64, channel: &str, uniqueid: &str, linkedid: &str) {
    let h = [
        ("Channel", channel),
        ("Uniqueid", uniqueid),
        ("Linkedid", linkedid),
        ("Cause", "16"),
        ("Cause-txt", "Normal Clearing"),
    ];
    write_event(out, at, "Hangup", "call,all", &h, &[]);
}

/// Runs the simulation in real time, sending its messages to `tx`, until
/// `stop`.
pub(crate) async fn run(seed: u64, tx: &mpsc::Sender<Vec<u8>>, status: &FeedStatus, stop: &CancellationToken) {
    let start_ns = now_ns();
    let started = Instant::now();
    let mut sim = Synthetic::new(seed, start_ns);
    status.set(Phase::Synthetic { seed, calls: 0 });
    while let Some(t) = sim.next_time() {
        let due = started + Duration::from_nanos((t - start_ns).max(0) as u64);
        tokio::select! {
            () = tokio::time::sleep_until(due) => {}
            () = stop.cancelled() => return,
        }
        let now = start_ns + i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX);
        let mut chunk = String::new();
        while sim.next_time().is_some_and(|t| t <= now) {
            if let Some((_, text)) = sim.step() {
                chunk.push_str(&text);
            }
        }
        status.set(Phase::Synthetic { seed, calls: sim.counts().map(|(_, c)| c.entered).sum() });
        if chunk.is_empty() {
            continue;
        }
        tokio::select! {
            r = tx.send(chunk.into_bytes()) => if r.is_err() { return },
            () = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use callkpi_core::event::SourceKind;
    use callkpi_core::params::GroupBy;
    use callkpi_core::time::Interval;
    use callkpi_core::{Engine, EngineConfig, KpiParams};
    use callkpi_feeds::ami::AmiMapper;

    use super::*;

    const START: i64 = 1_800_000_000 * NANOS_PER_SEC;

    fn hour(seed: u64) -> (String, Synthetic) {
        let mut sim = Synthetic::new(seed, START);
        let mut text = String::new();
        while sim.next_time().is_some_and(|t| t < START + 3600 * NANOS_PER_SEC) {
            let (t, chunk) = sim.step().expect("a next action");
            assert!(t >= START, "time never goes before the start");
            text.push_str(&chunk);
        }
        (text, sim)
    }

    #[test]
    fn the_same_seed_gives_the_same_call_centre() {
        assert_eq!(hour(7).0, hour(7).0);
        assert_ne!(hour(7).0, hour(8).0);
    }

    #[test]
    fn an_hour_maps_cleanly_and_the_engine_counts_what_the_simulation_did() {
        let (text, sim) = hour(7);
        let mut mapper = AmiMapper::default();
        let mut events = Vec::new();
        mapper.map_bytes(text.as_bytes(), &mut events);
        assert_eq!(mapper.unparsed().malformed, 0, "every event has the headers its mapping needs");
        assert!(mapper.unparsed().by_name.is_empty(), "every event is mapped: {:?}", mapper.unparsed().by_name);

        let mut engine = Engine::new(EngineConfig::default());
        crate::analyze::ingest_all(&mut engine, events, "synthetic", "demo", SourceKind::AsteriskAmi);
        engine.refresh(None, true);
        let params = KpiParams {
            interval: Interval::All,
            group_by: vec![GroupBy::Queue],
            short_abandon_s: 0,
            ..KpiParams::default()
        };
        let report = engine.report(&params, &[]).expect("a report");
        for (queue, counts) in sim.counts() {
            let row = report
                .rows
                .iter()
                .find(|r| r.group.get("queue").cloned().flatten().as_deref() == Some(queue))
                .unwrap_or_else(|| panic!("a row for {queue}"));
            let k = &row.kpis;
            assert!(counts.answered > 10 && counts.abandoned > 0, "{queue}: a busy hour: {counts:?}");
            assert_eq!(k.entered, counts.entered, "{queue} entered");
            assert_eq!(k.answered, counts.answered, "{queue} answered");
            assert_eq!(k.abandoned, counts.abandoned, "{queue} abandoned");
            assert!(k.asa_s.is_some_and(|s| s > 0.0) && k.aht_s.is_some_and(|s| s >= 8.0), "{queue}: {k:?}");
            assert!(k.surveys > 0 && k.missed_offers > 0, "{queue}: surveys and missed offers: {k:?}");
        }
    }
}
