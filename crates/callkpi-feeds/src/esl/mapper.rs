//! ESL events → [`FeedEvent`]s. See the [module documentation](super) for the table.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use callkpi_core::event::{
    AgentState, DialOutcome, Direction, EventKind, HangupBy, LeaveReason, MissReason, TransferKind, UnixNanos,
};

use super::framing::{EslEvent, EslFrame, frames};
use crate::{FeedEvent, Unparsed};

/// The `Event-Subclass` of mod_callcenter's events.
pub const CALLCENTER_SUBCLASS: &str = "callcenter::info";

// === config ===

/// Limits of [`EslMapper`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EslMapperConfig {
    /// Most channels (and, separately, pending offers and learnt agent
    /// extensions) tracked at once. When a map reaches it, that map is
    /// cleared and [`EslMapper::evictions`] counts it: a lost hang-up must
    /// not make memory grow without bound. Default: 65 536.
    pub max_tracked: usize,
}

impl Default for EslMapperConfig {
    fn default() -> Self {
        Self { max_tracked: 65_536 }
    }
}

// === state ===

/// What the mapper knows about one channel (keyed by its `Unique-ID`).
#[derive(Debug)]
struct Leg {
    /// Call id of the call the channel belongs to.
    call: String,
    role: Role,
    /// A hang-up event was seen (`CHANNEL_HANGUP` then `_COMPLETE` give one).
    ended: bool,
}

#[derive(Debug)]
enum Role {
    /// The first channel of an inbound call (its own call UUID).
    Origin {
        /// Directory user that placed the call, if one did.
        user: Option<String>,
    },
    /// The caller's channel in a mod_callcenter queue.
    Member,
    /// A channel mod_callcenter connected (or tries to connect) to an agent.
    Agent {
        name: String,
        queue: Option<String>,
        /// `bridge-agent-start` was seen: `bridge-agent-end` will follow.
        bridged: bool,
        /// The conversation's end has not been emitted yet.
        segment_open: bool,
    },
    /// A leg to a gateway: an outbound dial attempt.
    Outbound { agent: Option<String>, dialled: String, trunk: Option<String>, resolved: bool },
}

/// Turns ESL events into [`FeedEvent`]s; keeps the little state that needs.
#[derive(Debug, Default)]
pub struct EslMapper {
    config: EslMapperConfig,
    /// Unique-ID → leg.
    legs: HashMap<String, Leg>,
    /// (member session UUID, agent) offered and not yet answered or failed.
    offered: HashSet<(String, String)>,
    /// Directory user (`1001`, `1001@example.com`) → agent name, learnt
    /// from the channels mod_callcenter sets up to agents.
    agents_by_user: HashMap<String, String>,
    unparsed: Unparsed,
    evictions: u64,
}

/// What every mapped event carries.
#[derive(Clone, Copy)]
struct At {
    time: Option<UnixNanos>,
}

impl At {
    fn event(self, call: &str, leg: &str, kind: EventKind) -> FeedEvent {
        FeedEvent { call_id: call.to_owned(), leg_id: leg.to_owned(), source_time: self.time, kind }
    }
}

impl EslMapper {
    /// A mapper with the given limits.
    pub fn new(config: EslMapperConfig) -> Self {
        Self { config, ..Self::default() }
    }

    /// The configuration in use.
    pub fn config(&self) -> &EslMapperConfig {
        &self.config
    }

    /// What was not mapped so far.
    pub fn unparsed(&self) -> &Unparsed {
        &self.unparsed
    }

    /// How many times a state map hit [`EslMapperConfig::max_tracked`] and
    /// was cleared.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Channels currently tracked (for diagnostics and tests).
    pub fn tracked_channels(&self) -> usize {
        self.legs.len()
    }

    /// Agent name learnt for a directory user (`1001` or `1001@domain`).
    pub fn agent_for_user(&self, user: &str) -> Option<&str> {
        self.agents_by_user.get(user).map(String::as_str)
    }

    /// Counts one input that could not be framed or parsed (for callers that
    /// own the framing loop).
    pub fn count_malformed(&mut self) {
        self.unparsed.malformed += 1;
    }

    /// Frames and maps a complete recording (a raw event-socket stream);
    /// framing errors and unparsable event bodies count as malformed.
    pub fn map_bytes(&mut self, buf: &[u8], out: &mut Vec<FeedEvent>) {
        for frame in frames(buf) {
            match frame {
                Ok(frame) => self.map_frame(&frame, out),
                Err(_) => self.count_malformed(),
            }
        }
    }

    /// Maps a frame: the event of a `text/event-plain` frame; other frames
    /// (replies, notices) produce nothing and are not counted.
    pub fn map_frame(&mut self, frame: &EslFrame<'_>, out: &mut Vec<FeedEvent>) {
        match frame.event() {
            Some(Ok(ev)) => self.map_event(&ev, out),
            Some(Err(_)) => self.count_malformed(),
            None => {}
        }
    }

    /// Maps one event, appending zero or more events to `out`.
    ///
    /// Events without a mapping rule are counted in [`Unparsed::by_name`]
    /// (`CUSTOM` ones as `CUSTOM/<subclass>`, unknown mod_callcenter actions
    /// as `callcenter::info/<action>`); mapped events missing a header they
    /// need in [`Unparsed::malformed`].
    pub fn map_event(&mut self, ev: &EslEvent<'_>, out: &mut Vec<FeedEvent>) {
        let Some(name) = ev.name() else {
            self.unparsed.malformed += 1;
            return;
        };
        let at = At { time: ev.timestamp() };
        let ok = match &*name {
            "CHANNEL_CREATE" => self.channel_create(ev, at, out),
            "CHANNEL_ANSWER" => self.channel_answer(ev, at, out),
            "CHANNEL_BRIDGE" => self.channel_bridge(ev),
            "CHANNEL_HOLD" => self.hold(ev, at, true, out),
            "CHANNEL_UNHOLD" => self.hold(ev, at, false, out),
            "CHANNEL_HANGUP" => self.hangup(ev, at, false, out),
            "CHANNEL_HANGUP_COMPLETE" => self.hangup(ev, at, true, out),
            // Understood, nothing the engine needs: see the module docs.
            "CHANNEL_PROGRESS" | "CHANNEL_PROGRESS_MEDIA" | "HEARTBEAT" => true,
            "CUSTOM" => match ev.subclass() {
                Some(sub) if sub == CALLCENTER_SUBCLASS => self.callcenter(ev, at, out),
                sub => {
                    count(&mut self.unparsed, &format!("CUSTOM/{}", sub.unwrap_or_default()));
                    true
                }
            },
            other => {
                count(&mut self.unparsed, other);
                true
            }
        };
        if !ok {
            self.unparsed.malformed += 1;
        }
    }

    // --- channels ---

    fn channel_create(&mut self, ev: &EslEvent<'_>, at: At, out: &mut Vec<FeedEvent>) -> bool {
        let Some(uuid) = ev.get_nonempty("Unique-ID") else {
            return false;
        };
        if let Some(agent) = agent_side(ev) {
            let call = self.agent_leg_call(ev, &uuid);
            self.learn_agent_user(ev, &agent);
            let queue = owned(ev.get_nonempty("variable_cc_queue"));
            self.track(&uuid, call, Role::Agent { name: agent, queue, bridged: false, segment_open: false });
            return true;
        }
        let call = ev.get_nonempty("Channel-Call-UUID").unwrap_or_else(|| uuid.clone());
        let direction = ev.get("Call-Direction").unwrap_or_default();
        if call == uuid && direction == "inbound" {
            let user = owned(ev.get_nonempty("variable_user_name"));
            // A directory user calling is an extension: internal (an outbound
            // dial shows up as its gateway leg below).
            let direction = if user.is_some() { Direction::Internal } else { Direction::Inbound };
            let kind = EventKind::CallOffered {
                direction,
                caller: owned(ev.get_nonempty("Caller-Caller-ID-Number")).unwrap_or_default(),
                called: owned(ev.get_nonempty("Caller-Destination-Number")).unwrap_or_default(),
                trunk: None,
            };
            out.push(at.event(&call, &uuid, kind));
            self.track(&uuid, call.into_owned(), Role::Origin { user });
        } else if direction == "outbound"
            && call != uuid
            && let Some(trunk) = ev.get("Channel-Name").as_deref().and_then(gateway_of)
        {
            let agent = match self.legs.get(&*call).map(|l| &l.role) {
                Some(Role::Origin { user: Some(u) }) => {
                    Some(self.agents_by_user.get(u).cloned().unwrap_or_else(|| u.clone()))
                }
                _ => None,
            };
            let dialled = owned(ev.get_nonempty("Caller-Destination-Number")).unwrap_or_default();
            let trunk = Some(trunk.to_owned());
            let kind = EventKind::CallOffered {
                direction: Direction::Outbound,
                caller: agent.clone().unwrap_or_default(),
                called: dialled.clone(),
                trunk: trunk.clone(),
            };
            out.push(at.event(&call, &uuid, kind));
            self.track(&uuid, call.into_owned(), Role::Outbound { agent, dialled, trunk, resolved: false });
        }
        true
    }

    fn channel_answer(&mut self, ev: &EslEvent<'_>, at: At, out: &mut Vec<FeedEvent>) -> bool {
        let Some(uuid) = ev.get_nonempty("Unique-ID") else {
            return false;
        };
        if let Some(Leg { call, role: Role::Outbound { agent, dialled, trunk, resolved }, .. }) =
            self.legs.get_mut(&*uuid)
            && !*resolved
        {
            *resolved = true;
            let kind = EventKind::DialResult {
                agent: agent.clone(),
                dialled: dialled.clone(),
                trunk: trunk.clone(),
                outcome: DialOutcome::Answered,
                cause: None,
            };
            out.push(at.event(call, &uuid, kind));
        }
        true
    }

    /// A bridge puts a tracked agent or outbound leg in its partner's call
    /// (agents reached through a loopback or `uuid-standby` channel).
    fn channel_bridge(&mut self, ev: &EslEvent<'_>) -> bool {
        let a = ev.get_nonempty("Bridge-A-Unique-ID").or_else(|| ev.get_nonempty("Unique-ID"));
        let b = ev.get_nonempty("Bridge-B-Unique-ID").or_else(|| ev.get_nonempty("Other-Leg-Unique-ID"));
        let (Some(a), Some(b)) = (a, b) else {
            return false;
        };
        let anchor = |l: &Leg| matches!(l.role, Role::Origin { .. } | Role::Member);
        let (from, to) = match (self.legs.get(&*a), self.legs.get(&*b)) {
            (Some(x), Some(_)) if anchor(x) => (a, b),
            (Some(_), Some(y)) if anchor(y) => (b, a),
            _ => return true,
        };
        if let Some(call) = self.legs.get(&*from).map(|l| l.call.clone())
            && let Some(leg) = self.legs.get_mut(&*to)
            && matches!(leg.role, Role::Agent { .. } | Role::Outbound { .. })
        {
            leg.call = call;
        }
        true
    }

    fn hold(&mut self, ev: &EslEvent<'_>, at: At, hold: bool, out: &mut Vec<FeedEvent>) -> bool {
        let Some(uuid) = ev.get_nonempty("Unique-ID") else {
            return false;
        };
        let (call, agent) = match self.legs.get(&*uuid) {
            Some(Leg { call, role: Role::Agent { name, .. }, .. }) => (call.clone(), Some(name.clone())),
            Some(leg) => (leg.call.clone(), None),
            None => match agent_side(ev) {
                Some(agent) => (self.agent_leg_call(ev, &uuid), Some(agent)),
                None => (ev.get_nonempty("Channel-Call-UUID").unwrap_or_else(|| uuid.clone()).into_owned(), None),
            },
        };
        let kind = if hold { EventKind::Hold { agent } } else { EventKind::Resume { agent } };
        out.push(at.event(&call, &uuid, kind));
        true
    }

    fn hangup(&mut self, ev: &EslEvent<'_>, at: At, complete: bool, out: &mut Vec<FeedEvent>) -> bool {
        let Some(uuid) = ev.get_nonempty("Unique-ID") else {
            return false;
        };
        let Some(leg) = self.legs.get_mut(&*uuid) else {
            // Not a channel any KPI is about (an IVR leg, a loopback half).
            return true;
        };
        if !leg.ended {
            leg.ended = true;
            let cause = q850(ev);
            let leg_hangup =
                EventKind::Hangup { queue: None, agent: None, by: HangupBy::Unknown, cause, reported_talk_ms: None };
            match &mut leg.role {
                Role::Agent { name, queue, segment_open, .. } => {
                    if *segment_open {
                        *segment_open = false;
                        // The agent leg's billable time is the conversation
                        // (it was answered just before the bridge).
                        let talk = if complete { billed_ms(ev) } else { None };
                        out.push(at.event(&leg.call, &uuid, segment_end(ev, queue.clone(), name.clone(), talk)));
                    }
                }
                Role::Outbound { agent, dialled, trunk, resolved } => {
                    if !*resolved {
                        *resolved = true;
                        let kind = EventKind::DialResult {
                            agent: agent.clone(),
                            dialled: dialled.clone(),
                            trunk: trunk.clone(),
                            outcome: dial_outcome(ev.get("Hangup-Cause").as_deref().unwrap_or_default()),
                            cause,
                        };
                        out.push(at.event(&leg.call, &uuid, kind));
                    }
                    out.push(at.event(&leg.call, &uuid, leg_hangup));
                }
                Role::Origin { .. } | Role::Member => out.push(at.event(&leg.call, &uuid, leg_hangup)),
            }
        }
        // A bridged agent leg stays until `bridge-agent-end`, which follows.
        let keep = matches!(self.legs.get(&*uuid), Some(Leg { role: Role::Agent { bridged: true, .. }, .. }));
        if complete && !keep {
            self.legs.remove(&*uuid);
        }
        true
    }

    // --- mod_callcenter ---

    fn callcenter(&mut self, ev: &EslEvent<'_>, at: At, out: &mut Vec<FeedEvent>) -> bool {
        let Some(action) = ev.get_nonempty("CC-Action") else {
            return false;
        };
        match &*action {
            "member-queue-start" | "member-queue-resume" => self.member_join(ev, at, out),
            "member-queue-end" => self.member_end(ev, at, out),
            "agent-offering" => self.agent_offering(ev, at, out),
            "bridge-agent-start" => self.bridge_start(ev, at, out),
            "bridge-agent-end" => self.bridge_end(ev, at, out),
            "bridge-agent-fail" => self.bridge_fail(ev, at, out),
            "agent-status-change" => self.agent_status(ev, at, out),
            // Activity the call events already give, with the call's identity.
            "agent-state-change" | "members-count" => true,
            other => {
                count(&mut self.unparsed, &format!("{CALLCENTER_SUBCLASS}/{other}"));
                true
            }
        }
    }

    fn member_join(&mut self, ev: &EslEvent<'_>, at: At, out: &mut Vec<FeedEvent>) -> bool {
        let (Some(queue), Some(member)) = (ev.get_nonempty("CC-Queue"), member_uuid(ev)) else {
            return false;
        };
        let call = match self.legs.get_mut(&*member) {
            Some(leg) => {
                leg.role = Role::Member;
                leg.call.clone()
            }
            None => {
                // The event carries the member channel's own data.
                let own = ev.get("Unique-ID").is_some_and(|u| u == member);
                let call = own.then(|| ev.get_nonempty("Channel-Call-UUID")).flatten().unwrap_or(member.clone());
                let call = call.into_owned();
                self.track(&member, call.clone(), Role::Member);
                call
            }
        };
        let caller = owned(ev.get_nonempty("CC-Member-CID-Number"));
        out.push(at.event(&call, &member, EventKind::QueueJoin { queue: queue.into_owned(), caller, position: None }));
        true
    }

    fn member_end(&mut self, ev: &EslEvent<'_>, at: At, out: &mut Vec<FeedEvent>) -> bool {
        let (Some(queue), Some(member), Some(cause)) =
            (ev.get_nonempty("CC-Queue"), member_uuid(ev), ev.get_nonempty("CC-Cause"))
        else {
            return false;
        };
        let reason = match &*cause {
            // The visit was answered (bridge-agent-start) and the call is over.
            "Terminated" => return true,
            "Cancel" => match ev.get("CC-Cancel-Reason").as_deref().unwrap_or_default() {
                "TIMEOUT" => LeaveReason::Timeout,
                "NO_AGENT_TIMEOUT" => LeaveReason::LeaveEmpty,
                "EXIT_WITH_KEY" => LeaveReason::ExitWithKey,
                // The wait was broken without an agent: by the caller hanging
                // up, or by a transfer/break while the channel stays up.
                "BREAK_OUT" if channel_up(ev) => LeaveReason::Transfer,
                "BREAK_OUT" => LeaveReason::Abandon,
                _ => LeaveReason::Unspecified,
            },
            _ => return false,
        };
        let call = self.call_of(&member);
        out.push(at.event(
            &call,
            &member,
            EventKind::QueueLeave { queue: queue.into_owned(), reason, reported_wait_ms: None },
        ));
        true
    }

    fn agent_offering(&mut self, ev: &EslEvent<'_>, at: At, out: &mut Vec<FeedEvent>) -> bool {
        let (Some(queue), Some(agent), Some(member)) =
            (ev.get_nonempty("CC-Queue"), ev.get_nonempty("CC-Agent"), member_uuid(ev))
        else {
            return false;
        };
        let call = self.call_of(&member);
        if self.offered.len() >= self.config.max_tracked {
            self.offered.clear();
            self.evictions += 1;
        }
        self.offered.insert((member.to_string(), agent.to_string()));
        out.push(at.event(
            &call,
            &member,
            EventKind::Ringing { queue: Some(queue.into_owned()), agent: agent.into_owned() },
        ));
        true
    }

    fn bridge_start(&mut self, ev: &EslEvent<'_>, at: At, out: &mut Vec<FeedEvent>) -> bool {
        let (Some(queue), Some(agent), Some(member)) =
            (ev.get_nonempty("CC-Queue"), ev.get_nonempty("CC-Agent"), member_uuid(ev))
        else {
            return false;
        };
        let agent_uuid = ev.get_nonempty("CC-Agent-UUID").or_else(|| ev.get_nonempty("Unique-ID")).unwrap_or_default();
        let call = self.call_of(&member);
        self.offered.remove(&(member.to_string(), agent.to_string()));
        self.learn_agent_user(ev, &agent);
        let role =
            Role::Agent { name: agent.to_string(), queue: Some(queue.to_string()), bridged: true, segment_open: true };
        if !agent_uuid.is_empty() {
            // Replaces what CHANNEL_CREATE said of the channel.
            self.legs.remove(&*agent_uuid);
            self.track(&agent_uuid, call.clone(), role);
        }
        let ring = seconds_between(ev, "CC-Agent-Called-Time", "CC-Agent-Answered-Time");
        let kind = EventKind::Answered {
            queue: Some(queue.into_owned()),
            agent: agent.into_owned(),
            reported_wait_ms: None,
            reported_ring_ms: ring,
        };
        out.push(at.event(&call, &agent_uuid, kind));
        true
    }

    fn bridge_end(&mut self, ev: &EslEvent<'_>, at: At, out: &mut Vec<FeedEvent>) -> bool {
        let (Some(queue), Some(agent), Some(member)) =
            (ev.get_nonempty("CC-Queue"), ev.get_nonempty("CC-Agent"), member_uuid(ev))
        else {
            return false;
        };
        let agent_uuid = ev.get_nonempty("CC-Agent-UUID").or_else(|| ev.get_nonempty("Unique-ID")).unwrap_or_default();
        let (call, open) = match self.legs.remove(&*agent_uuid) {
            Some(Leg { call, role: Role::Agent { segment_open, .. }, .. }) => (call, segment_open),
            Some(Leg { call, .. }) => (call, true),
            // The start was not seen (the mapper started mid-call): say it
            // anyway, the engine ignores an end without a conversation.
            None => (self.call_of(&member), true),
        };
        if open {
            out.push(at.event(&call, &agent_uuid, segment_end(ev, Some(queue.into_owned()), agent.into_owned(), None)));
        }
        true
    }

    fn bridge_fail(&mut self, ev: &EslEvent<'_>, at: At, out: &mut Vec<FeedEvent>) -> bool {
        let (Some(queue), Some(agent), Some(member)) =
            (ev.get_nonempty("CC-Queue"), ev.get_nonempty("CC-Agent"), member_uuid(ev))
        else {
            return false;
        };
        let call = self.call_of(&member);
        let reason = match ev.get("CC-Hangup-Cause").as_deref().unwrap_or_default() {
            // The caller left, or another agent answered first (ring-all).
            "ORIGINATOR_CANCEL" | "LOSE_RACE" | "PICKED_OFF" => MissReason::Canceled,
            "USER_BUSY" | "CALL_REJECTED" | "NORMAL_CIRCUIT_CONGESTION" => MissReason::Rejected,
            _ => MissReason::NoAnswer,
        };
        // With the offer seen, the engine times the ring from it to the
        // microsecond; else mod_callcenter's whole seconds.
        let reported_ring_ms = if self.offered.remove(&(member.to_string(), agent.to_string())) {
            None
        } else {
            seconds_between(ev, "CC-Agent-Called-Time", "CC-Agent-Aborted-Time")
        };
        let kind = EventKind::OfferMissed {
            queue: Some(queue.into_owned()),
            agent: agent.into_owned(),
            reason,
            reported_ring_ms,
        };
        out.push(at.event(&call, &member, kind));
        true
    }

    fn agent_status(&mut self, ev: &EslEvent<'_>, at: At, out: &mut Vec<FeedEvent>) -> bool {
        let (Some(agent), Some(status)) = (ev.get_nonempty("CC-Agent"), ev.get_nonempty("CC-Agent-Status")) else {
            return false;
        };
        let states = match &*status {
            "Available" | "Available (On Demand)" => vec![AgentState::Login, AgentState::Available],
            "On Break" => vec![AgentState::Login, AgentState::Paused { reason: status.to_string() }],
            "Logged Out" => vec![AgentState::Logout],
            other => {
                count(&mut self.unparsed, &format!("{CALLCENTER_SUBCLASS}/agent-status-change/{other}"));
                return true;
            }
        };
        for state in states {
            out.push(at.event("", "", EventKind::AgentState { agent: agent.to_string(), queue: None, state }));
        }
        true
    }

    // --- state helpers ---

    /// The call a member (or any tracked channel) belongs to; itself if unknown.
    fn call_of(&self, uuid: &str) -> String {
        self.legs.get(uuid).map_or_else(|| uuid.to_owned(), |l| l.call.clone())
    }

    /// An agent channel's call: its member's, else what is known of it.
    fn agent_leg_call(&self, ev: &EslEvent<'_>, uuid: &str) -> String {
        if let Some(member) = ev.get_nonempty("variable_cc_member_session_uuid") {
            return self.call_of(&member);
        }
        if let Some(leg) = self.legs.get(uuid) {
            return leg.call.clone();
        }
        ev.get_nonempty("Channel-Call-UUID").map_or_else(|| uuid.to_owned(), Cow::into_owned)
    }

    /// Learns `dialed_user[@dialed_domain] → agent` from a channel that
    /// mod_callcenter originated to `user/...`, so an agent's own outbound
    /// calls carry the agent's name.
    fn learn_agent_user(&mut self, ev: &EslEvent<'_>, agent: &str) {
        let Some(user) = ev.get_nonempty("variable_dialed_user") else {
            return;
        };
        if self.agents_by_user.get(&*user).is_some_and(|a| a == agent) {
            return;
        }
        if self.agents_by_user.len() + 2 > self.config.max_tracked {
            self.agents_by_user.clear();
            self.evictions += 1;
        }
        if let Some(domain) = ev.get_nonempty("variable_dialed_domain") {
            self.agents_by_user.insert(format!("{user}@{domain}"), agent.to_owned());
        }
        self.agents_by_user.insert(user.into_owned(), agent.to_owned());
    }

    fn track(&mut self, uuid: &str, call: String, role: Role) {
        if uuid.is_empty() || self.legs.contains_key(uuid) {
            return;
        }
        if self.legs.len() >= self.config.max_tracked {
            self.legs.clear();
            self.evictions += 1;
        }
        self.legs.insert(uuid.to_owned(), Leg { call, role, ended: false });
    }
}

// === field helpers ===

/// Counts without allocating when the name was seen before.
fn count(unparsed: &mut Unparsed, name: &str) {
    match unparsed.by_name.get_mut(name) {
        Some(n) => *n += 1,
        None => unparsed.count(name),
    }
}

fn owned(v: Option<Cow<'_, str>>) -> Option<String> {
    v.map(Cow::into_owned)
}

/// The agent of a channel mod_callcenter set up to an agent: its
/// `cc_agent` variable, unless the channel is the member's own (which gets
/// `cc_agent` too once bridged, with `cc_side=member`).
fn agent_side(ev: &EslEvent<'_>) -> Option<String> {
    let agent = ev.get_nonempty("variable_cc_agent")?;
    let side = ev.get("variable_cc_side");
    let is_agent = match side.as_deref() {
        Some("agent") => true,
        Some(_) => false,
        None => ev.get_nonempty("variable_cc_member_session_uuid").is_some(),
    };
    is_agent.then(|| agent.into_owned())
}

/// `CC-Member-Session-UUID`, the caller's channel.
fn member_uuid<'a>(ev: &EslEvent<'a>) -> Option<Cow<'a, str>> {
    ev.get_nonempty("CC-Member-Session-UUID")
}

/// `sofia/gateway/<gateway>/<number>` → `<gateway>`.
fn gateway_of(channel: &str) -> Option<&str> {
    let rest = channel.strip_prefix("sofia/gateway/")?;
    let gw = rest.split('/').next().unwrap_or(rest);
    (!gw.is_empty()).then_some(gw)
}

/// Whether the event's channel is still up (not hanging up), from the
/// channel data mod_callcenter attaches; unknown counts as gone.
fn channel_up(ev: &EslEvent<'_>) -> bool {
    let state = ev.get("Channel-State");
    let call_state = ev.get("Channel-Call-State");
    let answer = ev.get("Answer-State");
    if state.is_none() && call_state.is_none() && answer.is_none() {
        return false;
    }
    let gone_state = state.as_deref().is_some_and(|s| matches!(s, "CS_HANGUP" | "CS_REPORTING" | "CS_DESTROY"));
    !(gone_state || call_state.as_deref() == Some("HANGUP") || answer.as_deref() == Some("hangup"))
}

/// Whole seconds between two mod_callcenter epoch headers, in ms.
fn seconds_between(ev: &EslEvent<'_>, from: &str, to: &str) -> Option<u64> {
    let secs = |k: &str| ev.get(k).and_then(|v| v.trim().parse::<u64>().ok()).filter(|&s| s > 0);
    let (a, b) = (secs(from)?, secs(to)?);
    b.checked_sub(a).map(|d| d.saturating_mul(1000))
}

/// `variable_billmsec`, else `variable_billsec` in ms.
fn billed_ms(ev: &EslEvent<'_>) -> Option<u64> {
    let num = |k: &str| ev.get(k).and_then(|v| v.trim().parse::<u64>().ok());
    num("variable_billmsec").or_else(|| num("variable_billsec").map(|s| s.saturating_mul(1000)))
}

/// How an agent's conversation ended, from its channel's hang-up data.
///
/// A transfer shows as a `BLIND_TRANSFER`/`ATTENDED_TRANSFER` hang-up cause
/// (the bridge partner was transferred) or as `sip_hangup_disposition =
/// recv_refer` (the agent's phone sent REFER; a `Replaces` in `Refer-To`
/// makes it attended). Otherwise `recv_bye` means the agent hung up and
/// `send_bye` that the switch did, for the caller.
fn segment_end(ev: &EslEvent<'_>, queue: Option<String>, agent: String, talk: Option<u64>) -> EventKind {
    let cause = ev.get("Hangup-Cause").or_else(|| ev.get("variable_hangup_cause"));
    let cause = cause.as_deref().unwrap_or_default();
    let disposition = ev.get("variable_sip_hangup_disposition");
    let disposition = disposition.as_deref().unwrap_or_default();
    let refer_to = ev.get("variable_sip_refer_to");
    let refer_to = refer_to.as_deref().unwrap_or_default();
    if matches!(cause, "BLIND_TRANSFER" | "ATTENDED_TRANSFER") || disposition == "recv_refer" {
        let attended = cause == "ATTENDED_TRANSFER" || refer_to.to_ascii_lowercase().contains("replaces");
        return EventKind::Transfer {
            kind: if attended { TransferKind::Attended } else { TransferKind::Blind },
            queue,
            agent: Some(agent),
            target: refer_target(refer_to).to_owned(),
            reported_talk_ms: talk,
        };
    }
    let by = match disposition {
        "recv_bye" => HangupBy::Agent,
        "send_bye" => HangupBy::Caller,
        _ => HangupBy::Unknown,
    };
    EventKind::Hangup { queue, agent: Some(agent), by, cause: q850(ev), reported_talk_ms: talk }
}

/// `<sip:1003@pbx;transport=udp?Replaces=...>` → `1003`.
fn refer_target(refer_to: &str) -> &str {
    let s = refer_to.trim().trim_start_matches('<');
    let s = ["sip:", "sips:", "tel:"].iter().find_map(|p| s.strip_prefix(p)).unwrap_or(s);
    let end = s.find(['@', '>', ';', '?']).unwrap_or(s.len());
    &s[..end]
}

/// The Q.850 cause of a hang-up: from `Hangup-Cause`'s name when it is a
/// Q.850 one, else `variable_hangup_cause_q850` when there is no name.
/// FreeSWITCH's own causes (`ORIGINATOR_CANCEL`, `LOSE_RACE`, ...) have none.
fn q850(ev: &EslEvent<'_>) -> Option<u16> {
    match ev.get_nonempty("Hangup-Cause") {
        Some(name) => q850_of(&name),
        None => ev
            .get("variable_hangup_cause_q850")
            .and_then(|v| v.trim().parse::<u16>().ok())
            .filter(|c| (1..=127).contains(c)),
    }
}

/// FreeSWITCH cause names of the Q.850 range (`switch_types.h`).
fn q850_of(name: &str) -> Option<u16> {
    Some(match name {
        "UNALLOCATED_NUMBER" => 1,
        "NO_ROUTE_TRANSIT_NET" => 2,
        "NO_ROUTE_DESTINATION" => 3,
        "CHANNEL_UNACCEPTABLE" => 6,
        "CALL_AWARDED_DELIVERED" => 7,
        "NORMAL_CLEARING" => 16,
        "USER_BUSY" => 17,
        "NO_USER_RESPONSE" => 18,
        "NO_ANSWER" => 19,
        "SUBSCRIBER_ABSENT" => 20,
        "CALL_REJECTED" => 21,
        "NUMBER_CHANGED" => 22,
        "REDIRECTION_TO_NEW_DESTINATION" => 23,
        "EXCHANGE_ROUTING_ERROR" => 25,
        "DESTINATION_OUT_OF_ORDER" => 27,
        "INVALID_NUMBER_FORMAT" => 28,
        "FACILITY_REJECTED" => 29,
        "RESPONSE_TO_STATUS_ENQUIRY" => 30,
        "NORMAL_UNSPECIFIED" => 31,
        "NORMAL_CIRCUIT_CONGESTION" => 34,
        "NETWORK_OUT_OF_ORDER" => 38,
        "NORMAL_TEMPORARY_FAILURE" => 41,
        "SWITCH_CONGESTION" => 42,
        "ACCESS_INFO_DISCARDED" => 43,
        "REQUESTED_CHAN_UNAVAIL" => 44,
        "PRE_EMPTED" => 45,
        "FACILITY_NOT_SUBSCRIBED" => 50,
        "OUTGOING_CALL_BARRED" => 52,
        "INCOMING_CALL_BARRED" => 54,
        "BEARERCAPABILITY_NOTAUTH" => 57,
        "BEARERCAPABILITY_NOTAVAIL" => 58,
        "SERVICE_UNAVAILABLE" => 63,
        "BEARERCAPABILITY_NOTIMPL" => 65,
        "CHAN_NOT_IMPLEMENTED" => 66,
        "FACILITY_NOT_IMPLEMENTED" => 69,
        "SERVICE_NOT_IMPLEMENTED" => 79,
        "INVALID_CALL_REFERENCE" => 81,
        "INCOMPATIBLE_DESTINATION" => 88,
        "INVALID_MSG_UNSPECIFIED" => 95,
        "MANDATORY_IE_MISSING" => 96,
        "MESSAGE_TYPE_NONEXIST" => 97,
        "WRONG_MESSAGE" => 98,
        "IE_NONEXIST" => 99,
        "INVALID_IE_CONTENTS" => 100,
        "WRONG_CALL_STATE" => 101,
        "RECOVERY_ON_TIMER_EXPIRE" => 102,
        "MANDATORY_IE_LENGTH_ERROR" => 103,
        "PROTOCOL_ERROR" => 111,
        "INTERWORKING" => 127,
        _ => return None,
    })
}

/// The outcome of an outbound attempt that was not answered, by cause.
fn dial_outcome(cause: &str) -> DialOutcome {
    match cause {
        "USER_BUSY" | "CALL_REJECTED" => DialOutcome::Busy,
        "NO_ANSWER" | "NO_USER_RESPONSE" | "ALLOTTED_TIMEOUT" | "PROGRESS_TIMEOUT" => DialOutcome::NoAnswer,
        "NORMAL_CIRCUIT_CONGESTION" | "SWITCH_CONGESTION" => DialOutcome::Congestion,
        "UNALLOCATED_NUMBER"
        | "NO_ROUTE_DESTINATION"
        | "NO_ROUTE_TRANSIT_NET"
        | "INVALID_NUMBER_FORMAT"
        | "SUBSCRIBER_ABSENT"
        | "NUMBER_CHANGED"
        | "USER_NOT_REGISTERED" => DialOutcome::Unavailable,
        "ORIGINATOR_CANCEL" => DialOutcome::AgentAbandoned,
        _ => DialOutcome::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(gateway_of("sofia/gateway/ovh/0611111119"), Some("ovh"));
        assert_eq!(gateway_of("sofia/internal/1001@pbx"), None);
        assert_eq!(refer_target("<sip:1003@10.0.0.1;transport=udp>"), "1003");
        assert_eq!(refer_target("sip:queue-sales@pbx?Replaces=abc"), "queue-sales");
        assert_eq!(refer_target(""), "");
        assert_eq!(q850_of("NORMAL_CLEARING"), Some(16));
        assert_eq!(q850_of("ORIGINATOR_CANCEL"), None);
        assert_eq!(dial_outcome("USER_BUSY"), DialOutcome::Busy);
        assert_eq!(dial_outcome("WHATEVER"), DialOutcome::Failed);
    }
}
