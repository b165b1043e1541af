//! AMI events → [`FeedEvent`]s. See the [module documentation](super) for the table.

use std::borrow::Cow;
use std::collections::HashMap;

use callkpi_core::event::{
    AgentState, DialOutcome, Direction, EventKind, HangupBy, LeaveReason, MissReason, NANOS_PER_MS, NANOS_PER_SEC,
    SurveyMetric, TransferKind, UnixNanos,
};

use super::framing::{AmiMessage, Frame, frames};
use crate::{FeedEvent, Unparsed};

// === config ===

/// How [`AmiMapper`] reads a site's dialplan conventions.
#[derive(Debug, Clone, PartialEq)]
pub struct AmiMapperConfig {
    /// Dialplan contexts that dial out to the PSTN. A `DialBegin` from a
    /// channel whose destination is in one of them (its `DestContext`, or
    /// the context of a `Local/<number>@<context>` destination) is an
    /// outbound call. Default: `["pstn", "outbound"]`.
    pub outbound_contexts: Vec<String>,
    /// Channel-name prefixes of trunks (e.g. `PJSIP/ovh-trunk`), for sites
    /// that dial a trunk directly rather than through a Local channel into
    /// an outbound context. Default: empty.
    pub outbound_trunks: Vec<String>,
    /// `UserEvent` names carrying a survey score in a `Score:` header (with
    /// optional `Queue:` and `Agent:` headers). Default: `SurveyResult`,
    /// CSAT on 1-5.
    pub survey_events: Vec<SurveyEventConfig>,
    /// `UserEvent` names carrying a disposition: `Code:` and `Resolved:`
    /// (`1`/`0`, `yes`/`no`, `true`/`false`), optional `Agent:`.
    /// Default: `["Disposition"]`.
    pub disposition_events: Vec<String>,
    /// Most channels (and, separately, calls and queue members) tracked at
    /// once. When a map reaches it, that map is cleared and
    /// [`AmiMapper::evictions`] counts it: a lost `Hangup` must not make
    /// memory grow without bound. Default: 65 536.
    pub max_tracked: usize,
}

impl Default for AmiMapperConfig {
    fn default() -> Self {
        Self {
            outbound_contexts: vec!["pstn".to_owned(), "outbound".to_owned()],
            outbound_trunks: Vec::new(),
            survey_events: vec![SurveyEventConfig::default()],
            disposition_events: vec!["Disposition".to_owned()],
            max_tracked: 65_536,
        }
    }
}

/// One survey `UserEvent` and the scale its `Score:` is on.
#[derive(Debug, Clone, PartialEq)]
pub struct SurveyEventConfig {
    /// The `UserEvent:` header value. Default: `SurveyResult`.
    pub name: String,
    /// Which metric the score is. Default: CSAT.
    pub metric: SurveyMetric,
    /// Lowest valid score. Default: 1.
    pub scale_min: f64,
    /// Highest valid score. Default: 5. Scores outside the scale are counted
    /// as malformed and dropped.
    pub scale_max: f64,
}

impl Default for SurveyEventConfig {
    fn default() -> Self {
        Self { name: "SurveyResult".to_owned(), metric: SurveyMetric::Csat, scale_min: 1.0, scale_max: 5.0 }
    }
}

// === state ===

/// What the mapper knows about one channel (keyed by its `Uniqueid`).
#[derive(Debug)]
struct Leg {
    /// Linkedid of the call the channel belongs to.
    call: String,
    role: Role,
}

#[derive(Debug)]
enum Role {
    /// The channel that sits in a queue (`QueueCallerJoin`'s `Uniqueid`).
    QueueCaller {
        /// Uniqueid of the member channel it is talking to (`AgentConnect`),
        /// for an `AgentComplete` that does not name it.
        member_leg: Option<String>,
        /// A `HangupRequest`/`SoftHangupRequest` came for it while queued:
        /// the caller is going, so a `QueueCallerAbandon` is an abandon.
        hangup_requested: bool,
    },
    /// A channel ringing a queue member (`AgentCalled`'s `DestUniqueid`).
    Member {
        name: String,
        queue: String,
        ring_start: Option<UnixNanos>,
        /// The offer ended (connected, missed or canceled).
        resolved: bool,
    },
    /// An outbound dial leg (`DialBegin` into an outbound context).
    Outbound { agent: Option<String>, dialled: String, trunk: Option<String>, open: bool },
}

/// Per-call (Linkedid) context.
#[derive(Debug, Default)]
struct CallCtx {
    /// Tracked legs of the call still up.
    open_legs: u32,
    /// The originating channel (Uniqueid == Linkedid) has hung up.
    origin_gone: bool,
    /// Last `BlindTransfer`/`AttendedTransfer` not yet matched by an
    /// `AgentComplete` with `Reason: transfer`.
    transfer: Option<(TransferKind, String)>,
    /// Last agent and queue connected, for surveys that do not name them.
    last_agent: Option<String>,
    last_queue: Option<String>,
}

/// Turns AMI messages into [`FeedEvent`]s; keeps the little state that needs.
#[derive(Debug, Default)]
pub struct AmiMapper {
    config: AmiMapperConfig,
    /// Member interface key ([`interface_key`]) → member name.
    members: HashMap<String, String>,
    /// Extension part of member interfaces (`1001`) → member name.
    members_by_exten: HashMap<String, String>,
    /// Uniqueid → leg.
    legs: HashMap<String, Leg>,
    /// Linkedid → call context.
    calls: HashMap<String, CallCtx>,
    unparsed: Unparsed,
    evictions: u64,
    /// `QueueCallerAbandon`s not yet told apart from a Queue() timeout or a
    /// leave-when-empty, by the queued channel's `Uniqueid`.
    pending_exits: HashMap<String, FeedEvent>,
    /// Queue named by the last `Newexten` running `Queue()`, by `Uniqueid`:
    /// a caller refused at the door (`QUEUESTATUS` `FULL`/`JOINEMPTY`) has
    /// no other event naming the queue.
    queue_app: HashMap<String, String>,
    exits: ExitResolution,
}

/// How the mapper told apart the exits Asterisk reports with the same
/// `QueueCallerAbandon` (a caller hanging up, a Queue() timeout, a
/// leave-when-empty), for the log: see "Queue() exits" in the module docs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExitResolution {
    /// `VarSet` events were received (the manager user reads the `dialplan`
    /// class), so `QUEUESTATUS` is available.
    pub varset_seen: bool,
    /// Exits resolved by the `QUEUESTATUS` the caller's channel got.
    pub by_queuestatus: u64,
    /// Exits resolved by the fallback: abandon when the caller's channel had
    /// a hang-up request while queued (or the call's origin channel hung
    /// up), timeout when it carried on alive.
    pub by_hangup_request: u64,
    /// Callers refused at the door (`QUEUESTATUS` `FULL` or `JOINEMPTY`).
    pub refused: u64,
}

/// Headers every call-related event carries.
struct Common<'m> {
    call_id: Cow<'m, str>,
    uniqueid: Cow<'m, str>,
    time: Option<UnixNanos>,
}

impl Common<'_> {
    fn event(&self, leg_id: &str, kind: EventKind) -> FeedEvent {
        FeedEvent { call_id: self.call_id.to_string(), leg_id: leg_id.to_owned(), source_time: self.time, kind }
    }
}

impl AmiMapper {
    /// A mapper with the given configuration.
    pub fn new(config: AmiMapperConfig) -> Self {
        Self { config, ..Self::default() }
    }

    /// The configuration in use.
    pub fn config(&self) -> &AmiMapperConfig {
        &self.config
    }

    /// What was not mapped so far.
    pub fn unparsed(&self) -> &Unparsed {
        &self.unparsed
    }

    /// How many times a state map hit [`AmiMapperConfig::max_tracked`] and
    /// was cleared.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// How queue exits were told apart so far (for the log).
    pub fn exit_resolution(&self) -> ExitResolution {
        self.exits
    }

    /// Resolves the exits still waiting for their `QUEUESTATUS` (at the end
    /// of a recording): by the fallback rule.
    pub fn flush(&mut self, out: &mut Vec<FeedEvent>) {
        let mut pending: Vec<String> = self.pending_exits.keys().cloned().collect();
        pending.sort_unstable();
        for u in pending {
            self.resolve_exit_by_fallback(&u, out);
        }
    }

    /// Member name known for an interface (`Local/1001@agents/n`) or one of
    /// its channels (`Local/1001@agents-00000036;1`).
    pub fn member_name(&self, interface_or_channel: &str) -> Option<&str> {
        self.members
            .get(interface_key(interface_or_channel))
            .or_else(|| self.members.get(channel_key(interface_or_channel)))
            .or_else(|| self.members_by_exten.get(exten_of(channel_key(interface_or_channel))))
            .map(String::as_str)
    }

    /// Counts one input that could not be framed (for callers that own the
    /// framing loop).
    pub fn count_malformed(&mut self) {
        self.unparsed.malformed += 1;
    }

    /// Frames and maps a complete recording (an AMI transcript file);
    /// framing errors are counted as malformed and skipped.
    pub fn map_bytes(&mut self, buf: &[u8], out: &mut Vec<FeedEvent>) {
        for frame in frames(buf) {
            match frame {
                Ok(frame) => self.map_frame(&frame, out),
                Err(_) => self.count_malformed(),
            }
        }
        self.flush(out);
    }

    /// Maps a frame; the banner produces nothing.
    pub fn map_frame(&mut self, frame: &Frame<'_>, out: &mut Vec<FeedEvent>) {
        if let Frame::Message(msg) = frame {
            self.map(msg, out);
        }
    }

    /// Maps one message, appending zero or more events to `out`.
    ///
    /// Responses to actions produce nothing and are not counted. Events
    /// without a mapping rule are counted in [`Unparsed::by_name`]; mapped
    /// events missing a required header in [`Unparsed::malformed`].
    pub fn map(&mut self, msg: &AmiMessage<'_>, out: &mut Vec<FeedEvent>) {
        let Some(name) = msg.event() else {
            return;
        };
        let uniqueid = msg.get("Uniqueid").unwrap_or_default();
        // Before Asterisk 12 most events carry no `Linkedid`: a channel the
        // mapper already knows (a member leg from `AgentConnect`) then
        // belongs to the call it was seen in, not to a call of its own.
        let call_id = match msg.get("Linkedid").filter(|l| !l.is_empty()) {
            Some(linked) => linked,
            None => match self.legs.get(&*uniqueid) {
                Some(leg) => Cow::Owned(leg.call.clone()),
                None => uniqueid.clone(),
            },
        };
        let c = Common { call_id, uniqueid, time: msg.get_bytes("Timestamp").and_then(parse_timestamp) };
        // A pending abandon waits through the `QueueCallerLeave` and the
        // `VarSet`s app_queue sends as the caller leaves; any other event of
        // the channel comes after `QUEUESTATUS` would have been set.
        if !matches!(&*name, "VarSet" | "QueueCallerLeave" | "Leave") && self.pending_exits.contains_key(&*c.uniqueid) {
            self.resolve_exit_by_fallback(&c.uniqueid, out);
        }
        let ok = match &*name {
            "VarSet" => {
                self.var_set(msg, &c, out);
                true
            }
            "Newexten" => {
                self.newexten(msg, &c);
                true
            }
            "HangupRequest" | "SoftHangupRequest" => {
                if let Some(Leg { role: Role::QueueCaller { hangup_requested, .. }, .. }) =
                    self.legs.get_mut(&*c.uniqueid)
                {
                    *hangup_requested = true;
                }
                count(&mut self.unparsed, &name);
                true
            }
            "QueueCallerJoin" | "Join" => self.queue_join(msg, &c, out),
            "QueueCallerAbandon" => self.queue_abandon(msg, &c, out),
            "QueueCallerLeave" | "Leave" => queue_leave(msg, &c, out),
            "AgentCalled" => self.agent_called(msg, &c, out),
            "AgentRingNoAnswer" => {
                let ring = msg.get("RingTime").and_then(|r| r.trim().parse::<u64>().ok());
                self.offer_missed(msg, &c, crate::queue_log::refused_at_once(ring), out)
            }
            "AgentDump" => self.offer_missed(msg, &c, MissReason::Rejected, out),
            "AgentConnect" => self.agent_connect(msg, &c, out),
            "AgentComplete" => self.agent_complete(msg, &c, out),
            "BlindTransfer" => self.blind_transfer(msg),
            "AttendedTransfer" => self.attended_transfer(msg),
            // Asterisk 1.6 to 11 send only `Hold`, with `Status: On` or
            // `Status: Off` (unhold); 12+ send `Hold` and `Unhold` without it.
            "Hold" => {
                let on = msg.get("Status").and_then(|s| parse_bool(&s)).unwrap_or(true);
                self.hold(msg, &c, on, out)
            }
            "Unhold" => self.hold(msg, &c, false, out),
            "Hangup" => self.hangup(msg, &c, out),
            "DialBegin" => self.dial_begin(msg, &c, out),
            "DialEnd" => self.dial_end(msg, &c, out),
            "QueueMemberAdded" => self.member_state(msg, &c, Some(AgentState::Login), out),
            "QueueMemberRemoved" => self.member_state(msg, &c, Some(AgentState::Logout), out),
            "QueueMemberPause" | "QueueMemberPaused" => self.member_state(msg, &c, None, out),
            "QueueMember" => self.queue_member(msg, out),
            // app_agent_pool (12+) and chan_agent (up to 11, lower-case names).
            "AgentLogin" | "Agentlogin" | "Agentcallbacklogin" => self.agent_login(msg, &c, AgentState::Login, out),
            "AgentLogoff" | "Agentlogoff" | "Agentcallbacklogoff" => self.agent_login(msg, &c, AgentState::Logout, out),
            "QueueMemberStatus" => {
                self.learn_member(msg);
                true
            }
            "UserEvent" => self.user_event(msg, &c, out),
            "Shutdown" => {
                // Every channel is gone; members are configuration and stay.
                self.flush(out);
                self.queue_app.clear();
                self.legs.clear();
                self.calls.clear();
                true
            }
            other => {
                count(&mut self.unparsed, other);
                true
            }
        };
        if !ok {
            self.unparsed.malformed += 1;
        }
    }

    // --- queue callers ---

    fn queue_join(&mut self, msg: &AmiMessage<'_>, c: &Common<'_>, out: &mut Vec<FeedEvent>) -> bool {
        let Some(queue) = msg.get("Queue") else {
            return false;
        };
        self.track(&c.uniqueid, &c.call_id, || Role::QueueCaller { member_leg: None, hangup_requested: false });
        // `CallerID` is the number in the `Join` of Asterisk 1.4 and older.
        let caller = msg.get("CallerIDNum").or_else(|| msg.get("CallerID")).filter(|n| known(n)).map(Cow::into_owned);
        let position = msg.get("Position").and_then(|p| p.trim().parse().ok());
        out.push(c.event(&c.uniqueid, EventKind::QueueJoin { queue: queue.into_owned(), caller, position }));
        true
    }

    fn queue_abandon(&mut self, msg: &AmiMessage<'_>, c: &Common<'_>, out: &mut Vec<FeedEvent>) -> bool {
        let Some(queue) = msg.get("Queue") else {
            return false;
        };
        let reported_wait_ms = seconds_ms(msg, "HoldTime");
        let ev = c.event(
            &c.uniqueid,
            EventKind::QueueLeave { queue: queue.into_owned(), reason: LeaveReason::Abandon, reported_wait_ms },
        );
        if c.uniqueid.is_empty() {
            out.push(ev);
            return true;
        }
        if self.pending_exits.len() >= self.config.max_tracked {
            self.evictions += 1;
            self.flush(out);
        }
        if let Some(older) = self.pending_exits.insert(c.uniqueid.to_string(), ev) {
            out.push(older);
        }
        true
    }

    /// `VarSet`: only `QUEUESTATUS` matters, which app_queue sets as Queue()
    /// returns: it tells a timeout or leave-when-empty from an abandon, and
    /// is the only trace of a caller refused at the door.
    fn var_set(&mut self, msg: &AmiMessage<'_>, c: &Common<'_>, out: &mut Vec<FeedEvent>) {
        self.exits.varset_seen = true;
        count(&mut self.unparsed, "VarSet");
        if !msg.get("Variable").is_some_and(|v| v.eq_ignore_ascii_case("QUEUESTATUS")) {
            return;
        }
        let status = msg.get("Value").unwrap_or_default().trim().to_ascii_uppercase();
        if let Some(mut ev) = self.pending_exits.remove(&*c.uniqueid) {
            if let EventKind::QueueLeave { reason, .. } = &mut ev.kind {
                *reason = match status.as_str() {
                    "TIMEOUT" => LeaveReason::Timeout,
                    "LEAVEEMPTY" => LeaveReason::LeaveEmpty,
                    // Removed by the QueueWithdrawCaller action: neither the
                    // caller's doing nor the queue's limits.
                    "WITHDRAW" => LeaveReason::Unspecified,
                    _ => LeaveReason::Abandon,
                };
            }
            self.exits.by_queuestatus += 1;
            out.push(ev);
            return;
        }
        let reason = match status.as_str() {
            "FULL" => LeaveReason::Full,
            "JOINEMPTY" => LeaveReason::JoinEmpty,
            _ => return,
        };
        // Refused callers never joined: no QueueCallerJoin, no queue_log line
        // (Asterisk 22), so the queue comes from the Queue() being run.
        let Some(queue) = self.queue_app.remove(&*c.uniqueid) else { return };
        self.exits.refused += 1;
        out.push(c.event(&c.uniqueid, EventKind::QueueLeave { queue, reason, reported_wait_ms: Some(0) }));
    }

    /// `Newexten` running `Queue(name,...)`: remembers the queue name.
    fn newexten(&mut self, msg: &AmiMessage<'_>, c: &Common<'_>) {
        count(&mut self.unparsed, "Newexten");
        if c.uniqueid.is_empty() || !msg.get("Application").is_some_and(|a| a.eq_ignore_ascii_case("Queue")) {
            return;
        }
        let data = msg.get("AppData").unwrap_or_default();
        let queue = data.split([',', '|']).next().unwrap_or_default().trim();
        if queue.is_empty() {
            return;
        }
        if self.queue_app.len() >= self.config.max_tracked {
            self.queue_app.clear();
            self.evictions += 1;
        }
        self.queue_app.insert(c.uniqueid.to_string(), queue.to_owned());
    }

    /// The fallback when no `QUEUESTATUS` came: a caller whose channel had a
    /// hang-up request while queued abandoned; one that left the queue alive
    /// was let go by the queue (its timeout, or leave-when-empty, which
    /// only `QUEUESTATUS` tells apart): counted as a timeout.
    fn resolve_exit_by_fallback(&mut self, uniqueid: &str, out: &mut Vec<FeedEvent>) {
        let Some(mut ev) = self.pending_exits.remove(uniqueid) else { return };
        // The caller is gone when its queued channel had a hang-up request,
        // or when the call's origin channel (the caller's own channel, of
        // which the queued one may be a Local half) has hung up.
        let hung_up = match self.legs.get(uniqueid) {
            Some(Leg { role: Role::QueueCaller { hangup_requested, .. }, call }) => {
                *hangup_requested || self.calls.get(call).is_some_and(|ctx| ctx.origin_gone)
            }
            // Not tracked (state evicted): the common case.
            _ => true,
        };
        if !hung_up && let EventKind::QueueLeave { reason, .. } = &mut ev.kind {
            *reason = LeaveReason::Timeout;
        }
        self.exits.by_hangup_request += 1;
        out.push(ev);
    }

    // --- offers to members ---

    fn agent_called(&mut self, msg: &AmiMessage<'_>, c: &Common<'_>, out: &mut Vec<FeedEvent>) -> bool {
        self.learn_member(msg);
        let (Some(queue), Some(agent)) = (msg.get("Queue"), self.agent_of(msg)) else {
            return false;
        };
        let leg = dest_leg(msg);
        let role = Role::Member { name: agent.clone(), queue: queue.to_string(), ring_start: c.time, resolved: false };
        if !leg.is_empty() {
            self.track(&leg, &c.call_id, || role);
        }
        out.push(c.event(&leg, EventKind::Ringing { queue: Some(queue.into_owned()), agent }));
        true
    }

    fn offer_missed(
        &mut self,
        msg: &AmiMessage<'_>,
        c: &Common<'_>,
        reason: MissReason,
        out: &mut Vec<FeedEvent>,
    ) -> bool {
        let Some(agent) = self.agent_of(msg) else {
            return false;
        };
        let leg = dest_leg(msg);
        let ring_start = self.resolve_offer(&leg);
        let reported_ring_ms = match msg.get("RingTime").and_then(|r| r.trim().parse::<u64>().ok()) {
            // AgentRingNoAnswer's RingTime is in milliseconds.
            Some(ms) => Some(ms),
            None => elapsed_ms(ring_start, c.time),
        };
        let queue = msg.get("Queue").map(Cow::into_owned);
        out.push(c.event(&leg, EventKind::OfferMissed { queue, agent, reason, reported_ring_ms }));
        true
    }

    fn agent_connect(&mut self, msg: &AmiMessage<'_>, c: &Common<'_>, out: &mut Vec<FeedEvent>) -> bool {
        self.learn_member(msg);
        let Some(agent) = self.agent_of(msg) else {
            return false;
        };
        let queue = msg.get("Queue").map(Cow::into_owned);
        // Asterisk 1.4 to 11 name the member channel's uniqueid
        // `BridgedChannel` (no `DestUniqueid`, and no `AgentCalled` leg):
        // track it, so its `Hold` and `Hangup` find the call.
        let leg = match msg.get("DestUniqueid").filter(|u| !u.is_empty()) {
            Some(u) => u.into_owned(),
            None => msg.get("BridgedChannel").map(Cow::into_owned).unwrap_or_default(),
        };
        if !leg.is_empty() && !self.legs.contains_key(&leg) {
            let role = Role::Member {
                name: agent.clone(),
                queue: queue.clone().unwrap_or_default(),
                ring_start: None,
                resolved: true,
            };
            self.track(&leg, &c.call_id, || role);
        }
        self.resolve_offer(&leg);
        if let Some(Leg { role: Role::QueueCaller { member_leg, .. }, .. }) = self.legs.get_mut(&*c.uniqueid) {
            *member_leg = Some(leg.clone());
        }
        let ctx = self.call_ctx(&c.call_id);
        ctx.transfer = None;
        ctx.last_agent = Some(agent.clone());
        ctx.last_queue.clone_from(&queue);
        out.push(c.event(
            &leg,
            EventKind::Answered {
                queue,
                agent,
                reported_wait_ms: seconds_ms(msg, "HoldTime"),
                // AgentConnect's RingTime is in seconds.
                reported_ring_ms: seconds_ms(msg, "RingTime"),
            },
        ));
        true
    }

    fn agent_complete(&mut self, msg: &AmiMessage<'_>, c: &Common<'_>, out: &mut Vec<FeedEvent>) -> bool {
        let Some(agent) = self.agent_of(msg) else {
            return false;
        };
        let queue = msg.get("Queue").map(Cow::into_owned);
        let remembered = match self.legs.get_mut(&*c.uniqueid) {
            Some(Leg { role: Role::QueueCaller { member_leg, .. }, .. }) => member_leg.take(),
            _ => None,
        };
        let leg = match msg.get("DestUniqueid").filter(|u| !u.is_empty()) {
            Some(u) => u.into_owned(),
            None => remembered.unwrap_or_else(|| c.uniqueid.to_string()),
        };
        let reported_talk_ms = seconds_ms(msg, "TalkTime");
        let reason = msg.get("Reason").unwrap_or_default();
        let kind = if reason.eq_ignore_ascii_case("transfer") {
            let (kind, target) = self
                .calls
                .get_mut(&*c.call_id)
                .and_then(|ctx| ctx.transfer.take())
                .unwrap_or((TransferKind::Blind, String::new()));
            EventKind::Transfer { kind, queue, agent: Some(agent), target, reported_talk_ms }
        } else {
            let by = if reason.eq_ignore_ascii_case("agent") {
                HangupBy::Agent
            } else if reason.eq_ignore_ascii_case("caller") {
                HangupBy::Caller
            } else {
                HangupBy::Unknown
            };
            EventKind::Hangup { queue, agent: Some(agent), by, cause: None, reported_talk_ms }
        };
        out.push(c.event(&leg, kind));
        true
    }

    // --- transfers (context only) ---

    fn blind_transfer(&mut self, msg: &AmiMessage<'_>) -> bool {
        let target = match (msg.get("Extension"), msg.get("Context")) {
            (Some(e), Some(ctx)) if !ctx.is_empty() => format!("{e}@{ctx}"),
            (Some(e), _) => e.into_owned(),
            (None, _) => String::new(),
        };
        self.remember_transfer(msg, &["TransfereeLinkedid", "TransfererLinkedid"], TransferKind::Blind, target);
        true
    }

    fn attended_transfer(&mut self, msg: &AmiMessage<'_>) -> bool {
        let target = ["DestBridgeUniqueid", "DestApp", "DestThreewayBridgeUniqueid", "LocalOneChannel", "DestType"]
            .iter()
            .find_map(|k| msg.get(k).filter(|v| !v.is_empty()))
            .map(Cow::into_owned)
            .unwrap_or_default();
        let keys = ["TransfereeLinkedid", "OrigTransfererLinkedid", "SecondTransfererLinkedid"];
        self.remember_transfer(msg, &keys, TransferKind::Attended, target);
        true
    }

    fn remember_transfer(&mut self, msg: &AmiMessage<'_>, keys: &[&str], kind: TransferKind, target: String) {
        if msg.get("Result").is_some_and(|r| !r.eq_ignore_ascii_case("Success")) {
            return;
        }
        let Some(call) = keys.iter().find_map(|k| msg.get(k).filter(|v| !v.is_empty())) else {
            return;
        };
        self.call_ctx(&call).transfer = Some((kind, target));
    }

    // --- channels ---

    fn hold(&mut self, msg: &AmiMessage<'_>, c: &Common<'_>, hold: bool, out: &mut Vec<FeedEvent>) -> bool {
        let agent = match self.legs.get(&*c.uniqueid) {
            Some(Leg { role: Role::Member { name, .. }, .. }) => Some(name.clone()),
            _ => msg.get("Channel").and_then(|ch| self.member_name(&ch).map(str::to_owned)),
        };
        let kind = if hold { EventKind::Hold { agent } } else { EventKind::Resume { agent } };
        out.push(c.event(&c.uniqueid, kind));
        true
    }

    fn hangup(&mut self, msg: &AmiMessage<'_>, c: &Common<'_>, out: &mut Vec<FeedEvent>) -> bool {
        let is_origin = !c.uniqueid.is_empty() && c.uniqueid == c.call_id;
        self.queue_app.remove(&*c.uniqueid);
        let tracked = self.legs.remove(&*c.uniqueid);
        if let Some(leg) = &tracked {
            self.leave_call(&leg.call, |ctx| ctx.open_legs = ctx.open_legs.saturating_sub(1));
        }
        if is_origin {
            self.leave_call(&c.call_id, |ctx| ctx.origin_gone = true);
        }
        if is_origin || tracked.is_some() {
            let cause = msg.get("Cause").and_then(|v| v.trim().parse::<u16>().ok()).filter(|&v| v != 0);
            out.push(c.event(
                &c.uniqueid,
                EventKind::Hangup { queue: None, agent: None, by: HangupBy::Unknown, cause, reported_talk_ms: None },
            ));
        }
        true
    }

    fn dial_begin(&mut self, msg: &AmiMessage<'_>, c: &Common<'_>, out: &mut Vec<FeedEvent>) -> bool {
        // Without a calling channel this is an originate or a call file.
        let Some(channel) = msg.get("Channel").filter(|ch| !ch.is_empty()) else {
            return true;
        };
        let leg = dest_leg(msg);
        if leg.is_empty() || self.legs.contains_key(&leg) {
            // A queue ringing a member (already tracked by AgentCalled).
            return true;
        }
        let Some((dialled, trunk)) = self.outbound_destination(msg) else {
            return true;
        };
        let caller_num = msg.get("CallerIDNum").filter(|n| known(n));
        let agent = self
            .member_name(&channel)
            .map(str::to_owned)
            .or_else(|| caller_num.as_deref().and_then(|n| self.members_by_exten.get(n)).cloned())
            .or_else(|| caller_num.map(Cow::into_owned));
        let role = Role::Outbound { agent: agent.clone(), dialled: dialled.clone(), trunk: trunk.clone(), open: true };
        self.track(&leg, &c.call_id, || role);
        out.push(c.event(
            &leg,
            EventKind::CallOffered {
                direction: Direction::Outbound,
                caller: agent.unwrap_or_default(),
                called: dialled,
                trunk,
            },
        ));
        true
    }

    /// `(dialled number, trunk)` when the dial destination is outbound.
    fn outbound_destination(&self, msg: &AmiMessage<'_>) -> Option<(String, Option<String>)> {
        let dest_channel = msg.get("DestChannel").unwrap_or_default();
        let dest_context = msg.get("DestContext").unwrap_or_default();
        let dest_exten = msg.get("DestExten").filter(|e| !e.is_empty() && e != "s");
        let is_outbound = |ctx: &str| self.config.outbound_contexts.iter().any(|o| o == ctx);
        if let Some((exten, ctx)) = local_exten_context(&dest_channel)
            && is_outbound(ctx)
        {
            return Some((exten.to_owned(), Some(ctx.to_owned())));
        }
        let dialled = || {
            dest_exten.as_deref().map(str::to_owned).or_else(|| {
                // PJSIP/0611111119@trunk or SIP/trunk/0611111119.
                let ds = msg.get("DialString")?;
                let ds = ds.split_once('@').map_or(&*ds, |(n, _)| n);
                Some(ds.rsplit('/').next().unwrap_or(ds).to_owned())
            })
        };
        if is_outbound(&dest_context) {
            return Some((dialled().unwrap_or_default(), Some(dest_context.into_owned())));
        }
        let trunk = self.config.outbound_trunks.iter().find(|t| dest_channel.starts_with(t.as_str()))?;
        Some((dialled().unwrap_or_default(), Some(trunk.clone())))
    }

    fn dial_end(&mut self, msg: &AmiMessage<'_>, c: &Common<'_>, out: &mut Vec<FeedEvent>) -> bool {
        let leg = dest_leg(msg);
        let status = msg.get("DialStatus").unwrap_or_default();
        match self.legs.get_mut(&leg).map(|l| &mut l.role) {
            Some(Role::Outbound { agent, dialled, trunk, open }) if *open => {
                *open = false;
                let outcome = match &*status {
                    "ANSWER" => DialOutcome::Answered,
                    "BUSY" => DialOutcome::Busy,
                    "NOANSWER" => DialOutcome::NoAnswer,
                    "CONGESTION" => DialOutcome::Congestion,
                    "CHANUNAVAIL" => DialOutcome::Unavailable,
                    "CANCEL" => DialOutcome::AgentAbandoned,
                    _ => DialOutcome::Failed,
                };
                let kind = EventKind::DialResult {
                    agent: agent.clone(),
                    dialled: dialled.clone(),
                    trunk: trunk.clone(),
                    outcome,
                    cause: None,
                };
                out.push(c.event(&leg, kind));
            }
            Some(Role::Member { name, queue, ring_start, resolved }) if !*resolved && status == "CANCEL" => {
                // RINGCANCELED: the caller left or another member answered.
                *resolved = true;
                let kind = EventKind::OfferMissed {
                    queue: Some(queue.clone()),
                    agent: name.clone(),
                    reason: MissReason::Canceled,
                    reported_ring_ms: elapsed_ms(*ring_start, c.time),
                };
                out.push(c.event(&leg, kind));
            }
            _ => {}
        }
        true
    }

    // --- members ---

    fn member_state(
        &mut self,
        msg: &AmiMessage<'_>,
        c: &Common<'_>,
        state: Option<AgentState>,
        out: &mut Vec<FeedEvent>,
    ) -> bool {
        self.learn_member(msg);
        let Some(agent) = self.agent_of(msg) else {
            return false;
        };
        let queue = msg.get("Queue").map(Cow::into_owned);
        let paused = is_true(msg.get("Paused").as_deref());
        let event = |state| FeedEvent {
            call_id: String::new(),
            leg_id: String::new(),
            source_time: c.time,
            kind: EventKind::AgentState { agent: agent.clone(), queue: queue.clone(), state },
        };
        match state {
            Some(AgentState::Login) => {
                out.push(event(AgentState::Login));
                if paused {
                    out.push(event(AgentState::Paused { reason: pause_reason(msg) }));
                }
            }
            Some(state) => out.push(event(state)),
            // QueueMemberPause: the new pause state.
            None if paused => out.push(event(AgentState::Paused { reason: pause_reason(msg) })),
            None => out.push(event(AgentState::Available)),
        }
        true
    }

    /// `AgentLogin`/`AgentLogoff` of an `Agent:` (app_agent_pool): presence
    /// in no queue in particular, as queue_log's `AGENTLOGIN` (queue `NONE`).
    /// The agent is named as its queue member `Agent/<id>` is, when known, so
    /// that its calls and its login fall on one name.
    fn agent_login(
        &mut self,
        msg: &AmiMessage<'_>,
        c: &Common<'_>,
        state: AgentState,
        out: &mut Vec<FeedEvent>,
    ) -> bool {
        let Some(id) = msg.get("Agent").map(|a| a.trim().to_owned()).filter(|a| !a.is_empty()) else {
            return false;
        };
        let agent = self.member_name(&format!("Agent/{id}")).map_or(id, str::to_owned);
        out.push(FeedEvent {
            call_id: String::new(),
            leg_id: String::new(),
            source_time: c.time,
            kind: EventKind::AgentState { agent, queue: None, state },
        });
        true
    }

    /// `QueueMember`, one entry of a `QueueStatus` reply: a state assertion.
    fn queue_member(&mut self, msg: &AmiMessage<'_>, out: &mut Vec<FeedEvent>) -> bool {
        self.learn_member(msg);
        let (Some(agent), Some(queue)) = (self.agent_of(msg), msg.get("Queue")) else {
            return false;
        };
        let secs = |k: &str| {
            msg.get(k)
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|&s| s > 0)
                .map(|s| s.saturating_mul(NANOS_PER_SEC))
        };
        let now = msg.get_bytes("Timestamp").and_then(parse_timestamp);
        let login_time = secs("LoginTime").or(now);
        let event = |state, source_time| FeedEvent {
            call_id: String::new(),
            leg_id: String::new(),
            source_time,
            kind: EventKind::AgentState { agent: agent.clone(), queue: Some(queue.to_string()), state },
        };
        out.push(event(AgentState::Login, login_time));
        if is_true(msg.get("Paused").as_deref()) {
            out.push(event(AgentState::Paused { reason: pause_reason(msg) }, secs("LastPause").or(login_time)));
        }
        true
    }

    // --- user events ---

    fn user_event(&mut self, msg: &AmiMessage<'_>, c: &Common<'_>, out: &mut Vec<FeedEvent>) -> bool {
        let name = msg.get("UserEvent").unwrap_or_default();
        let ctx = self.calls.get(&*c.call_id);
        let agent = msg
            .get("Agent")
            .filter(|a| !a.is_empty())
            .map(Cow::into_owned)
            .or_else(|| ctx.and_then(|x| x.last_agent.clone()));
        if let Some(survey) = self.config.survey_events.iter().find(|s| s.name == *name) {
            let Some(score) = msg.get("Score").and_then(|s| s.trim().parse::<f64>().ok()) else {
                return false;
            };
            if !(survey.scale_min..=survey.scale_max).contains(&score) {
                return false;
            }
            let queue =
                msg.get("Queue").filter(|q| !q.is_empty()).map(Cow::into_owned).or_else(|| ctx?.last_queue.clone());
            out.push(c.event(
                &c.uniqueid,
                EventKind::SurveyAnswer {
                    metric: survey.metric,
                    score,
                    scale_min: survey.scale_min,
                    scale_max: survey.scale_max,
                    queue,
                    agent,
                },
            ));
            return true;
        }
        if self.config.disposition_events.iter().any(|d| *d == *name) {
            let Some(resolved) = msg.get("Resolved").and_then(|r| parse_bool(&r)) else {
                return false;
            };
            let code = msg.get("Code").unwrap_or_default().into_owned();
            out.push(c.event(&c.uniqueid, EventKind::Disposition { resolved, code, agent }));
            return true;
        }
        count(&mut self.unparsed, &format!("UserEvent/{name}"));
        true
    }

    // --- state helpers ---

    /// Learns `Interface → MemberName` from any event naming both.
    fn learn_member(&mut self, msg: &AmiMessage<'_>) {
        // Header names of Asterisk 12+, then of 1.8-11 (see `agent_of`).
        let name = ["MemberName", "Name", "AgentName"].iter().find_map(|k| msg.get(k).filter(|n| !n.is_empty()));
        let interface = ["Interface", "Location", "Member", "AgentCalled"]
            .iter()
            .find_map(|k| msg.get(k).filter(|i| !i.is_empty()));
        let (Some(name), Some(interface)) = (name, interface) else {
            return;
        };
        let key = interface_key(&interface);
        if self.members.get(key).is_some_and(|n| *n == *name) {
            return;
        }
        if self.members.len() >= self.config.max_tracked {
            self.members.clear();
            self.members_by_exten.clear();
            self.evictions += 1;
        }
        self.members.insert(key.to_owned(), name.to_string());
        let exten = exten_of(key);
        if !exten.is_empty() {
            self.members_by_exten.insert(exten.to_owned(), name.into_owned());
        }
    }

    /// The member an agent event is about: `MemberName`, else the name known
    /// for its `Interface`, else the interface itself.
    fn agent_of(&self, msg: &AmiMessage<'_>) -> Option<String> {
        // Before Asterisk 12, `AgentCalled` names the member `AgentName` and
        // its interface `AgentCalled`; other events say `MemberName`, and
        // `Member` or `Location` for the interface.
        let name = msg.get("MemberName").or_else(|| msg.get("Name")).or_else(|| msg.get("AgentName"));
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            return Some(name.into_owned());
        }
        let interface = ["Interface", "Location", "Member", "AgentCalled"]
            .iter()
            .find_map(|k| msg.get(k).filter(|i| !i.is_empty()))?;
        Some(self.member_name(&interface).map_or_else(|| interface.into_owned(), str::to_owned))
    }

    /// Marks a ringing member leg as resolved; returns when it started ringing.
    fn resolve_offer(&mut self, leg: &str) -> Option<UnixNanos> {
        match self.legs.get_mut(leg).map(|l| &mut l.role) {
            Some(Role::Member { resolved, ring_start, .. }) => {
                *resolved = true;
                *ring_start
            }
            _ => None,
        }
    }

    fn track(&mut self, uniqueid: &str, call: &str, role: impl FnOnce() -> Role) {
        if uniqueid.is_empty() || self.legs.contains_key(uniqueid) {
            return;
        }
        if self.legs.len() >= self.config.max_tracked {
            self.legs.clear();
            self.calls.clear();
            self.evictions += 1;
        }
        self.legs.insert(uniqueid.to_owned(), Leg { call: call.to_owned(), role: role() });
        self.call_ctx(call).open_legs += 1;
    }

    /// Updates a call's context, and drops it once its origin channel and
    /// every tracked leg have hung up.
    fn leave_call(&mut self, call: &str, update: impl FnOnce(&mut CallCtx)) {
        if let Some(ctx) = self.calls.get_mut(call) {
            update(ctx);
            if ctx.origin_gone && ctx.open_legs == 0 {
                self.calls.remove(call);
            }
        }
    }

    fn call_ctx(&mut self, call: &str) -> &mut CallCtx {
        if !self.calls.contains_key(call) && self.calls.len() >= self.config.max_tracked {
            self.calls.clear();
            self.evictions += 1;
        }
        self.calls.entry(call.to_owned()).or_default()
    }

    /// Linkedid of a tracked channel (for tests and diagnostics).
    #[cfg(test)]
    pub(super) fn call_of(&self, uniqueid: &str) -> Option<&str> {
        self.legs.get(uniqueid).map(|l| l.call.as_str())
    }

    /// Number of tracked channels and calls (for tests).
    #[cfg(test)]
    pub(super) fn tracked(&self) -> (usize, usize) {
        (self.legs.len(), self.calls.len())
    }
}

fn queue_leave(msg: &AmiMessage<'_>, c: &Common<'_>, out: &mut Vec<FeedEvent>) -> bool {
    let Some(queue) = msg.get("Queue") else {
        return false;
    };
    out.push(c.event(
        &c.uniqueid,
        EventKind::QueueLeave { queue: queue.into_owned(), reason: LeaveReason::Unspecified, reported_wait_ms: None },
    ));
    true
}

// === field helpers ===

/// Counts without allocating when the name was seen before.
fn count(unparsed: &mut Unparsed, name: &str) {
    match unparsed.by_name.get_mut(name) {
        Some(n) => *n += 1,
        None => unparsed.count(name),
    }
}

/// The member channel of an agent or dial event (`DestUniqueid`).
fn dest_leg(msg: &AmiMessage<'_>) -> String {
    msg.get("DestUniqueid").map(Cow::into_owned).unwrap_or_default()
}

/// A whole-second header as milliseconds.
fn seconds_ms(msg: &AmiMessage<'_>, key: &str) -> Option<u64> {
    msg.get(key).and_then(|v| v.trim().parse::<u64>().ok()).map(|s| s.saturating_mul(1000))
}

fn elapsed_ms(from: Option<UnixNanos>, to: Option<UnixNanos>) -> Option<u64> {
    let d = to?.checked_sub(from?)?;
    u64::try_from(d / NANOS_PER_MS).ok()
}

fn pause_reason(msg: &AmiMessage<'_>) -> String {
    msg.get("PausedReason").or_else(|| msg.get("Reason")).unwrap_or_default().into_owned()
}

fn is_true(v: Option<&str>) -> bool {
    v.and_then(parse_bool).unwrap_or(false)
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "y" | "on" => Some(true),
        "0" | "no" | "false" | "n" | "off" => Some(false),
        _ => None,
    }
}

/// Caller ID numbers Asterisk fills in when it has none.
fn known(num: &str) -> bool {
    !num.is_empty() && num != "<unknown>"
}

/// `Timestamp: 1795356686.635456` (epoch seconds, up to 9 fraction digits
/// used) → nanoseconds.
pub(super) fn parse_timestamp(v: &[u8]) -> Option<UnixNanos> {
    let v = v.trim_ascii();
    let (int, frac) = match memchr::memchr(b'.', v) {
        Some(dot) => (&v[..dot], &v[dot + 1..]),
        None => (v, &b""[..]),
    };
    if int.is_empty() || !int.iter().all(u8::is_ascii_digit) || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let secs = std::str::from_utf8(int).ok()?.parse::<i64>().ok()?;
    let mut nanos: i64 = 0;
    for i in 0..9 {
        nanos = nanos * 10 + frac.get(i).map_or(0, |d| i64::from(d - b'0'));
    }
    secs.checked_mul(NANOS_PER_SEC)?.checked_add(nanos)
}

/// `Local/1001@agents/n` → `Local/1001@agents`: a Local interface without
/// its `/options`; any other interface unchanged.
fn interface_key(interface: &str) -> &str {
    if let Some(rest) = interface.strip_prefix("Local/")
        && let Some(at) = rest.find('@')
        && let Some(slash) = rest[at..].find('/')
    {
        return &interface[..6 + at + slash];
    }
    interface
}

/// `Local/1001@agents-00000036;1` → `Local/1001@agents`,
/// `PJSIP/1001-0000000a` → `PJSIP/1001`: the device a channel belongs to.
fn channel_key(channel: &str) -> &str {
    let mut s = channel;
    if let Some((head, half)) = s.rsplit_once(';')
        && !half.is_empty()
        && half.bytes().all(|b| b.is_ascii_digit())
    {
        s = head;
    }
    if let Some((head, seq)) = s.rsplit_once('-')
        && !seq.is_empty()
        && head.contains('/')
        && seq.bytes().all(|b| b.is_ascii_hexdigit())
    {
        s = head;
    }
    s
}

/// `Local/1001@agents` or `PJSIP/1001` → `1001`.
fn exten_of(key: &str) -> &str {
    let resource = key.split_once('/').map_or("", |(_, r)| r);
    resource.split_once('@').map_or(resource, |(e, _)| e)
}

/// `Local/0611111119@pstn-00000037;1` → `("0611111119", "pstn")`.
fn local_exten_context(channel: &str) -> Option<(&str, &str)> {
    let rest = channel_key(channel).strip_prefix("Local/")?;
    let (exten, ctx) = rest.split_once('@')?;
    let ctx = ctx.split_once('/').map_or(ctx, |(c, _)| c);
    Some((exten, ctx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp(b"1795356686.635456"), Some(1_795_356_686_635_456_000));
        assert_eq!(parse_timestamp(b"1795356686"), Some(1_795_356_686_000_000_000));
        assert_eq!(parse_timestamp(b"1.1234567891"), Some(1_123_456_789));
        assert_eq!(parse_timestamp(b"x"), None);
        assert_eq!(parse_timestamp(b"-1.5"), None);
        assert_eq!(parse_timestamp(b"99999999999999999999"), None);
    }

    /// The AMI counterpart of queue_log's `log_membername_as_agent` split:
    /// presence and call events all name the member `MemberName`, and an
    /// event naming only the interface gets the name learnt for it, so one
    /// person is one agent whatever queues.conf says.
    #[test]
    fn presence_and_calls_name_the_member_not_the_interface() {
        let member = "Queue: support\r\nInterface: PJSIP/1001\r\nMemberName: Alice\r\nStateInterface: PJSIP/1001\r\n";
        let call = "Uniqueid: 1.1\r\nLinkedid: 1.1\r\nDestUniqueid: 1.2\r\n";
        let events = [
            format!("Event: QueueMemberAdded\r\n{member}Membership: dynamic\r\nPaused: 0\r\n"),
            format!("Event: QueueMemberPause\r\n{member}Paused: 1\r\nPausedReason: lunch\r\n"),
            format!("Event: QueueMemberPause\r\n{member}Paused: 0\r\n"),
            format!("Event: AgentCalled\r\n{call}{member}"),
            format!("Event: AgentConnect\r\n{call}{member}HoldTime: 5\r\nRingTime: 3\r\n"),
            format!("Event: AgentComplete\r\n{call}{member}HoldTime: 5\r\nTalkTime: 60\r\nReason: caller\r\n"),
            // Asterisk 1.8-11 pause event naming only the interface.
            "Event: QueueMemberPaused\r\nQueue: support\r\nLocation: PJSIP/1001\r\nPaused: 1\r\n".to_owned(),
            format!("Event: QueueMemberRemoved\r\n{member}"),
        ];
        let mut m = AmiMapper::new(AmiMapperConfig::default());
        let mut out = Vec::new();
        for e in &events {
            m.map_bytes(format!("{e}\r\n").as_bytes(), &mut out);
        }
        let agents: Vec<&str> = out
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::AgentState { agent, .. }
                | EventKind::Ringing { agent, .. }
                | EventKind::Answered { agent, .. } => Some(agent.as_str()),
                EventKind::Hangup { agent, .. } => agent.as_deref(),
                _ => None,
            })
            .collect();
        // Login, pause, unpause, ringing, answered, hang-up, pause, logout.
        assert_eq!(agents, ["Alice"; 8]);
    }

    #[test]
    fn channel_and_interface_keys() {
        assert_eq!(interface_key("Local/1001@agents/n"), "Local/1001@agents");
        assert_eq!(interface_key("PJSIP/1001"), "PJSIP/1001");
        assert_eq!(channel_key("Local/1001@agents-00000036;1"), "Local/1001@agents");
        assert_eq!(channel_key("PJSIP/alice-desk-0000000a"), "PJSIP/alice-desk");
        assert_eq!(channel_key("PJSIP/1001"), "PJSIP/1001");
        assert_eq!(exten_of("Local/1001@agents"), "1001");
        assert_eq!(exten_of("PJSIP/1001"), "1001");
        assert_eq!(local_exten_context("Local/0611111119@pstn-00000037;1"), Some(("0611111119", "pstn")));
    }
}
