//! SIP dialogs → [`FeedEvent`]s. See the [module documentation](super) for
//! the rules.

use std::collections::HashMap;
use std::net::IpAddr;

use callkpi_core::event::{
    DialOutcome, Direction, EventKind, HangupBy, LeaveReason, MissReason, NANOS_PER_MS, NANOS_PER_SEC, TransferKind,
    UnixNanos,
};

use super::config::{QueuePlacements, SipTrackerConfig};
use super::message::{Method, NameAddr, SipMessage, SipUri, Via};
use crate::hep::HepPacket;
use crate::{FeedEvent, Status, Unparsed};

/// Most agent branches (forks) kept per call.
const MAX_BRANCHES: usize = 32;
/// Most forwarded INVITE copies remembered per call.
const MAX_FORWARDS: usize = 32;
/// Most REFERs waiting for their new leg.
const MAX_PENDING_TRANSFERS: usize = 4_096;
/// Responses to an INVITE not seen yet are kept this long, ns: captures
/// merged from two nodes (or HEP from two agents) put a phone's 180 a few
/// ms before the proxy's copy of the INVITE.
const EARLY_WINDOW: UnixNanos = 2 * NANOS_PER_SEC;
/// Most such early responses kept, all calls together.
const MAX_EARLY: usize = 4_096;
/// Q.850 cause 26, "non-selected user clearing": answered elsewhere.
const CAUSE_ANSWERED_ELSEWHERE: u16 = 26;

/// Where and when one SIP message was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketMeta {
    /// Capture time (the HEP timestamp), ns since the epoch.
    pub time: UnixNanos,
    /// Sender of the captured packet.
    pub src: Option<IpAddr>,
    /// Receiver of the captured packet.
    pub dst: Option<IpAddr>,
}

/// Counters of what the tracker saw, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SipStats {
    /// Datagrams given to [`SipTracker::push_datagram`].
    pub datagrams: u64,
    /// Datagrams that were not well-formed HEP.
    pub hep_errors: u64,
    /// HEP packets not carrying SIP (RTCP reports, logs, keep-alives).
    pub not_sip: u64,
    /// SIP payloads that could not be parsed, or lacked Call-ID/CSeq.
    pub sip_errors: u64,
    /// SIP messages processed.
    pub messages: u64,
    /// Calls started (initial INVITEs).
    pub calls: u64,
    /// Calls dropped after their timeout without an end.
    pub expired: u64,
    /// Calls dropped because [`SipTrackerConfig::max_dialogs`] was reached.
    pub evicted: u64,
    /// Compressed payloads inflated (HEP chunk 0x0010).
    pub inflated: u64,
    /// Calls linked to another leg of a B2BUA as the same call.
    pub linked_legs: u64,
}

/// Turns SIP messages (from HEP) into [`FeedEvent`]s; see the [module
/// documentation](super).
#[derive(Debug)]
pub struct SipTracker {
    config: SipTrackerConfig,
    dialogs: HashMap<Box<[u8]>, Dialog>,
    transfers: Vec<PendingTransfer>,
    /// Responses that came before their INVITE, replayed after it.
    early: Vec<Early>,
    unparsed: Unparsed,
    stats: SipStats,
    placements: QueuePlacements,
    /// HEP correlation id of the packet being processed.
    correlation: Option<Box<[u8]>>,
    /// Link values (correlation ids, link header values) → the SIP Call-ID
    /// of the first leg that carried them; stale entries (their leg gone)
    /// are pruned when the map outgrows the dialogs.
    links: HashMap<Box<[u8]>, Box<[u8]>>,
    /// Latest packet time seen.
    now: UnixNanos,
    next_sweep: UnixNanos,
}

impl Default for SipTracker {
    fn default() -> Self {
        Self::new(SipTrackerConfig::default())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// INVITE sent, no final answer yet.
    Setup,
    /// A 2xx answered the INVITE.
    Answered,
    /// Over; kept for [`SipTrackerConfig::linger_s`] to absorb late copies.
    Ended(UnixNanos),
}

/// One agent phone offered the call (one To-tag of the INVITE's responses).
#[derive(Debug)]
struct Branch {
    tag: Box<[u8]>,
    /// Agent name, once known; `strong` when a configured rule named it.
    agent: Option<String>,
    strong: bool,
    ring_at: Option<UnixNanos>,
    ringing_sent: bool,
    resolved: bool,
}

/// Where a proxy forwarded the INVITE (one fork).
#[derive(Debug)]
struct Forward {
    /// The proxy's top Via branch: responses on this fork carry it.
    branch: Box<[u8]>,
    /// Request-URI user part: the extension the phone was rung at.
    user: Option<String>,
    /// Where the copy was sent: the phone (or the next hop).
    dst: Option<IpAddr>,
}

/// A REFER seen on an answered call.
#[derive(Debug, Clone)]
struct Refer {
    /// CSeq number of the REFER: its NOTIFYs' `Event: refer;id=`.
    seq: u32,
    at: UnixNanos,
    target: String,
    kind: TransferKind,
    failed: bool,
    emitted: bool,
}

/// A response captured before the INVITE it answers.
#[derive(Debug)]
struct Early {
    call_id: Box<[u8]>,
    meta: PacketMeta,
    bytes: Box<[u8]>,
}

/// An agent's re-INVITE or UPDATE that changes hold, until its answer:
/// a refused offer (491 glare, 488) changes nothing (RFC 3264 section 8).
#[derive(Debug, Clone, Copy)]
struct PendingHold {
    seq: u32,
    hold: bool,
    at: UnixNanos,
}

/// A REFER waiting for the INVITE of its new leg.
#[derive(Debug, Clone)]
struct PendingTransfer {
    at: UnixNanos,
    caller: String,
    target: String,
    call_id: String,
    queue: Option<String>,
}

#[derive(Debug)]
struct Dialog {
    /// SIP Call-ID of this leg.
    sip_call_id: String,
    /// Call id of the events (the original call's, for a transfer's leg).
    call_id: String,
    first: UnixNanos,
    last: UnixNanos,
    phase: Phase,
    /// Bottom Via branch of the initial INVITE: the caller's transaction.
    origin_branch: Option<Box<[u8]>>,
    caller_tag: Option<Box<[u8]>>,
    invite_cseq: u32,
    direction: Direction,
    /// Agent placing an outbound or internal call.
    calling_agent: Option<String>,
    caller: String,
    called: String,
    queue: Option<String>,
    /// Forwarded INVITE copies, one per branch the proxy created.
    forwards: Vec<Forward>,
    branches: Vec<Branch>,
    answered: Option<usize>,
    answered_at: Option<UnixNanos>,
    /// To-tag of the 2xx: the called party's side of the dialog.
    callee_tag: Option<Box<[u8]>>,
    /// When the caller sent CANCEL.
    cancel_at: Option<UnixNanos>,
    /// A CANCEL said `Reason: SIP;cause=200` (answered elsewhere, RFC 3326).
    elsewhere: bool,
    /// A caller-facing 3xx, time and code: the caller may follow it with a
    /// new INVITE on the same Call-ID (RFC 3261 section 8.1.3.4).
    redirect: Option<(UnixNanos, u16)>,
    /// Negotiated session interval (RFC 4028), s.
    session_expires: Option<u32>,
    held: bool,
    pending_hold: Option<PendingHold>,
    refer: Option<Refer>,
    /// Its part in a call that crosses a B2BUA, once another leg linked.
    role: Option<LegRole>,
}

/// A leg's part in a call whose legs a B2BUA (an SBC, a PBX) links: the
/// leg seen first faces the caller, the one linked to it the agents. Each
/// keeps only the events of its side, so the call is counted once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegRole {
    /// The caller's leg: offered, queue join and exit, the caller's hang-up
    /// before an answer. What the B2BUA answers on it is the agent leg's.
    Caller,
    /// The leg towards the agents: ringing, answer, missed offers, hold,
    /// transfer, the agent's hang-up.
    Agent,
}

impl LegRole {
    /// Whether a leg in this role reports `kind`.
    fn keeps(role: Option<Self>, kind: &EventKind) -> bool {
        let caller_side = matches!(
            kind,
            EventKind::CallOffered { .. }
                | EventKind::QueueJoin { .. }
                | EventKind::QueueLeave { .. }
                | EventKind::Hangup { agent: None, .. }
        );
        match role {
            None => true,
            Some(Self::Caller) => caller_side,
            Some(Self::Agent) => !caller_side,
        }
    }
}

/// Drops from `out[from..]` what legs of a linked call do not report; a
/// leg's role is `role_of(leg_id)`.
fn keep_roles(out: &mut Vec<FeedEvent>, from: usize, role_of: impl Fn(&str) -> Option<LegRole>) {
    if from >= out.len() {
        return;
    }
    let tail = out.split_off(from);
    out.extend(tail.into_iter().filter(|e| LegRole::keeps(role_of(&e.leg_id), &e.kind)));
}

impl Dialog {
    fn agent_tag(&self) -> Option<&[u8]> {
        self.answered.and_then(|i| self.branches.get(i)).map(|b| &*b.tag)
    }

    fn agent(&self) -> Option<String> {
        self.answered.and_then(|i| self.branches.get(i)).and_then(|b| b.agent.clone())
    }

    fn event(&self, time: UnixNanos, kind: EventKind) -> FeedEvent {
        FeedEvent { call_id: self.call_id.clone(), leg_id: self.sip_call_id.clone(), source_time: Some(time), kind }
    }

    fn is_inbound(&self) -> bool {
        self.direction == Direction::Inbound
    }
}

/// Who answered or rang, as far as one response copy tells.
struct Responder<'m> {
    msg: &'m SipMessage<'m>,
    meta: &'m PacketMeta,
    /// The copy travels towards the caller (its top Via is the caller's).
    caller_facing: bool,
}

impl SipTracker {
    /// A tracker with the given configuration.
    pub fn new(config: SipTrackerConfig) -> Self {
        Self {
            config,
            dialogs: HashMap::new(),
            transfers: Vec::new(),
            early: Vec::new(),
            unparsed: Unparsed::default(),
            stats: SipStats::default(),
            placements: QueuePlacements::default(),
            correlation: None,
            links: HashMap::new(),
            now: i64::MIN,
            next_sweep: i64::MIN,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &SipTrackerConfig {
        &self.config
    }

    /// What was not turned into events, by kind (`hep/error`,
    /// `hep/proto-5`, `sip/error`, `sip/REGISTER`, ...).
    pub fn unparsed(&self) -> &Unparsed {
        &self.unparsed
    }

    /// Counters.
    pub fn stats(&self) -> &SipStats {
        &self.stats
    }

    /// How the inbound calls seen so far were placed in queues.
    pub fn placements(&self) -> &QueuePlacements {
        &self.placements
    }

    /// Calls tracked now (ended ones included while they linger).
    pub fn active_calls(&self) -> usize {
        self.dialogs.len()
    }

    /// Decodes one HEP datagram and processes the SIP message it carries.
    /// `capture_time` (the pcap record's time, the receive time) is used
    /// when the packet has no time chunk.
    pub fn push_datagram(&mut self, datagram: &[u8], capture_time: Option<UnixNanos>, out: &mut Vec<FeedEvent>) {
        self.stats.datagrams += 1;
        match HepPacket::decode(datagram) {
            Ok(p) => self.push_hep(&p, capture_time, out),
            Err(_) => {
                self.stats.hep_errors += 1;
                self.unparsed.malformed += 1;
                count(&mut self.unparsed, "hep/error");
            }
        }
    }

    /// Processes the SIP message of a decoded HEP packet.
    pub fn push_hep(&mut self, p: &HepPacket<'_>, capture_time: Option<UnixNanos>, out: &mut Vec<FeedEvent>) {
        if p.payload.is_none() || !p.is_sip() {
            self.stats.not_sip += 1;
            let name = match p.proto_type {
                Some(t) => format!("hep/proto-{t}"),
                None if p.payload.is_some() => "hep/no-protocol-type".to_owned(),
                None => "hep/no-payload".to_owned(),
            };
            count(&mut self.unparsed, &name);
            return;
        }
        let payload = match p.message() {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(_) => {
                self.stats.hep_errors += 1;
                self.unparsed.malformed += 1;
                count(&mut self.unparsed, "hep/bad-compressed-payload");
                return;
            }
        };
        if p.payload_compressed {
            self.stats.inflated += 1;
        }
        let time = p.timestamp().or(capture_time).unwrap_or(self.now.max(0));
        let meta = PacketMeta { time, src: p.src_ip, dst: p.dst_ip };
        let correlation = p.correlation_id.filter(|c| !c.is_empty());
        self.correlation = correlation.map(Box::from);
        self.push_payload(&meta, &payload, out);
        self.correlation = None;
    }

    /// Processes the SIP message(s) of one captured payload.
    fn push_payload(&mut self, meta: &PacketMeta, payload: &[u8], out: &mut Vec<FeedEvent>) {
        let meta = *meta;
        // SIP over TCP or TLS: one captured segment may hold several
        // messages, each framed by its Content-Length (RFC 3261 section
        // 18.3). Without one, the message runs to the end of the payload.
        let mut rest = payload;
        loop {
            if let Ok(Status::Complete { value, consumed }) = SipMessage::parse(rest)
                && value.content_length().is_some()
            {
                self.push_sip(&meta, &value, out);
                rest = &rest[consumed..];
                if rest.trim_ascii().is_empty() {
                    return;
                }
                continue;
            }
            match SipMessage::parse_datagram(rest) {
                Ok(msg) => self.push_sip(&meta, &msg, out),
                Err(_) => {
                    self.stats.sip_errors += 1;
                    self.unparsed.malformed += 1;
                    count(&mut self.unparsed, "sip/error");
                }
            }
            return;
        }
    }

    /// Processes one SIP message seen at `meta`.
    pub fn push_sip(&mut self, meta: &PacketMeta, msg: &SipMessage<'_>, out: &mut Vec<FeedEvent>) {
        let from = out.len();
        self.push_sip_inner(meta, msg, out);
        keep_roles(out, from, |leg| self.dialogs.get(leg.as_bytes()).and_then(|d| d.role));
    }

    fn push_sip_inner(&mut self, meta: &PacketMeta, msg: &SipMessage<'_>, out: &mut Vec<FeedEvent>) {
        self.stats.messages += 1;
        if meta.time > self.now {
            self.now = meta.time;
        }
        if self.now >= self.next_sweep {
            self.sweep(self.now, out);
            self.next_sweep = self.now.saturating_add(NANOS_PER_SEC);
        }
        let (Some(call_id), Some(cseq)) = (msg.call_id(), msg.cseq()) else {
            self.stats.sip_errors += 1;
            self.unparsed.malformed += 1;
            count(&mut self.unparsed, "sip/no-call-id-or-cseq");
            return;
        };
        match msg.method() {
            Some(Method::Invite) if msg.to().and_then(|t| t.tag()).is_none() => {
                self.initial_invite(call_id, cseq.seq, meta, msg, out);
                self.replay_early(call_id, out);
            }
            Some(method) => self.request(call_id, method, meta, msg, out),
            None => self.response(call_id, cseq.seq, cseq.method, meta, msg, out),
        }
    }

    /// Processes the responses of `call_id` that were captured before its
    /// INVITE, in their capture order.
    fn replay_early(&mut self, call_id: &[u8], out: &mut Vec<FeedEvent>) {
        if !self.early.iter().any(|e| &*e.call_id == call_id) {
            return;
        }
        let (mine, rest): (Vec<Early>, Vec<Early>) =
            std::mem::take(&mut self.early).into_iter().partition(|e| &*e.call_id == call_id);
        self.early = rest;
        for e in mine {
            let Ok(msg) = SipMessage::parse_datagram(&e.bytes) else { continue };
            if let (Some(cseq), None) = (msg.cseq(), msg.method()) {
                self.response(call_id, cseq.seq, cseq.method, &e.meta, &msg, out);
            }
        }
    }

    /// Forgets early responses whose INVITE never came: orphans after all.
    fn prune_early(&mut self, now: UnixNanos) {
        let before = self.early.len();
        self.early.retain(|e| now.saturating_sub(e.meta.time) <= EARLY_WINDOW);
        for _ in self.early.len()..before {
            count(&mut self.unparsed, "sip/orphan");
        }
    }

    /// Drops calls whose timeout passed at `now` (source time), emitting
    /// what their known facts imply. An agent calls this when no packet
    /// came for a while; [`push_sip`](Self::push_sip) does it as time passes.
    pub fn expire(&mut self, now: UnixNanos, out: &mut Vec<FeedEvent>) {
        let from = out.len();
        self.sweep(now, out);
        keep_roles(out, from, |leg| self.dialogs.get(leg.as_bytes()).and_then(|d| d.role));
    }

    /// End of input: finishes every call still tracked, oldest first.
    pub fn finish(&mut self, out: &mut Vec<FeedEvent>) {
        let mut keys: Vec<(UnixNanos, Box<[u8]>)> = self.dialogs.iter().map(|(k, d)| (d.first, k.clone())).collect();
        keys.sort();
        for (_, k) in keys {
            if let Some(d) = self.dialogs.remove(&k) {
                self.finish_dialog(d, out);
            }
        }
        self.transfers.clear();
        self.prune_early(i64::MAX);
    }

    // --- requests ---

    fn initial_invite(
        &mut self,
        call_id: &[u8],
        seq: u32,
        meta: &PacketMeta,
        msg: &SipMessage<'_>,
        out: &mut Vec<FeedEvent>,
    ) {
        let top = msg.top_via().and_then(via_key);
        let bottom = msg.bottom_via().and_then(via_key);
        if let Some(d) = self.dialogs.get_mut(call_id) {
            d.last = d.last.max(meta.time);
            if d.phase == Phase::Setup && seq > d.invite_cseq {
                // Sent again after a 401/407 challenge, or to the target a
                // 3xx gave: a new transaction of the same call.
                d.invite_cseq = seq;
                d.origin_branch = bottom.map(Box::from);
                d.redirect = None;
            }
            remember_forward(d, msg, meta, top, bottom);
            return;
        }
        if self.dialogs.len() >= self.config.max_dialogs {
            self.evict_oldest(out);
        }
        self.stats.calls += 1;
        let from = msg.from();
        let to = msg.to();
        let ruri = msg.request_uri();
        let caller = from.as_ref().map(party).unwrap_or_default();
        let called =
            to.as_ref().and_then(NameAddr::user).or_else(|| ruri.and_then(|u| u.user)).map(lossy).unwrap_or_default();
        let sip_call_id = lossy(call_id);
        // The copy as the caller sent it (not forwarded) tells the caller's address.
        let origin_src = if top == bottom { meta.src } else { None };
        let calling_agent = self.calling_agent(&caller, origin_src);
        let callee_agent = self.config.agent_with_extension(&called).is_some()
            || ruri.and_then(|u| u.user).is_some_and(|u| self.config.agent_with_extension(&lossy(u)).is_some());
        let direction = match (&calling_agent, callee_agent) {
            (None, _) => Direction::Inbound,
            (Some(_), true) => Direction::Internal,
            (Some(_), false) => Direction::Outbound,
        };
        // A transfer's new leg: the transferred caller dialling the target soon after the REFER.
        let linked = (direction == Direction::Inbound)
            .then(|| self.take_transfer(meta.time, &caller, &called, ruri.as_ref()))
            .flatten()
            .or_else(|| {
                // An INVITE with Replaces (RFC 3891) takes over a dialog
                // already tracked: it continues that call, it is no new one.
                let replaced = msg.replaces_call_id().filter(|_| direction == Direction::Inbound)?;
                let old = self.dialogs.get(replaced)?;
                Some(PendingTransfer {
                    at: meta.time,
                    caller: String::new(),
                    target: String::new(),
                    call_id: old.call_id.clone(),
                    queue: old.queue.clone(),
                })
            });
        let explicit = self.explicit_queue(msg, &called, ruri.as_ref());
        let link_keys = self.link_keys(msg, call_id);
        let b2bua_parent = if linked.is_none() { self.linked_leg(&link_keys) } else { None };
        let mut d = Dialog {
            sip_call_id: sip_call_id.clone(),
            call_id: sip_call_id,
            first: meta.time,
            last: meta.time,
            phase: Phase::Setup,
            origin_branch: bottom.map(Box::from),
            caller_tag: from.and_then(|f| f.tag()).map(Box::from),
            invite_cseq: seq,
            direction,
            calling_agent,
            caller,
            called,
            queue: None,
            forwards: Vec::new(),
            branches: Vec::new(),
            answered: None,
            answered_at: None,
            callee_tag: None,
            cancel_at: None,
            elsewhere: false,
            redirect: None,
            session_expires: msg.session_expires(),
            held: false,
            pending_hold: None,
            refer: None,
            role: None,
        };
        remember_forward(&mut d, msg, meta, top, bottom);
        self.remember_links(link_keys, call_id);
        if let Some(parent) = b2bua_parent.and_then(|k| self.dialogs.get_mut(&k)) {
            // The B2BUA's leg towards the agents: the same call, whose
            // caller side the first leg reports.
            parent.role = Some(LegRole::Caller);
            d.role = Some(LegRole::Agent);
            d.call_id = parent.call_id.clone();
            d.queue = parent.queue.clone();
            self.stats.linked_legs += 1;
            self.dialogs.insert(Box::from(call_id), d);
            return;
        }
        match linked {
            Some(t) => {
                // Same call, new leg: a queue only when the target is one.
                d.call_id = t.call_id;
                let explicit_queue = explicit.map(|(q, _)| q);
                d.queue = explicit_queue.clone().or(t.queue);
                if let Some(q) = explicit_queue {
                    let kind = EventKind::QueueJoin { queue: q, caller: Some(d.caller.clone()), position: None };
                    out.push(d.event(meta.time, kind));
                }
            }
            None => {
                let (caller, called) = match d.direction {
                    Direction::Inbound => (d.caller.clone(), d.called.clone()),
                    _ => (d.calling_agent.clone().unwrap_or_else(|| d.caller.clone()), d.called.clone()),
                };
                let kind = EventKind::CallOffered { direction: d.direction, caller, called, trunk: None };
                out.push(d.event(meta.time, kind));
                if d.is_inbound() {
                    d.queue = self.place_inbound(explicit, &d.called);
                    if let Some(q) = d.queue.clone() {
                        let kind = EventKind::QueueJoin {
                            queue: q,
                            caller: Some(d.caller.clone()).filter(|c| !c.is_empty()),
                            position: None,
                        };
                        out.push(d.event(meta.time, kind));
                    }
                }
            }
        }
        self.dialogs.insert(Box::from(call_id), d);
    }

    fn request(
        &mut self,
        call_id: &[u8],
        method: Method<'_>,
        meta: &PacketMeta,
        msg: &SipMessage<'_>,
        out: &mut Vec<FeedEvent>,
    ) {
        let Some(d) = self.dialogs.get_mut(call_id) else {
            match method {
                Method::Ack | Method::Bye | Method::Cancel | Method::Invite | Method::Prack | Method::Update => {
                    count(&mut self.unparsed, "sip/orphan");
                }
                // Transfers' NOTIFYs, INFO... of calls seen from their start
                // only, and traffic that is not about calls.
                other => count(&mut self.unparsed, &format!("sip/{other}")),
            }
            return;
        };
        d.last = d.last.max(meta.time);
        let from_tag = msg.from().and_then(|f| f.tag());
        match method {
            Method::Cancel => {
                if d.phase != Phase::Setup {
                    return;
                }
                // A forking proxy or PBX cancelling a branch that lost (its
                // own CANCEL, or the caller's when the caller is a PBX
                // ringing agents on separate legs).
                if msg.completed_elsewhere() {
                    d.elsewhere = true;
                }
                let bottom = msg.bottom_via().and_then(via_key);
                if bottom.is_some() && bottom == d.origin_branch.as_deref() {
                    d.cancel_at.get_or_insert(meta.time);
                }
            }
            Method::Invite | Method::Update => {
                if d.phase == Phase::Answered
                    && let Some(se) = msg.session_expires()
                {
                    d.session_expires = Some(se);
                }
                let Some(sdp) = msg.sdp() else { return };
                let by_agent = from_tag.is_some() && from_tag == d.agent_tag();
                if d.phase != Phase::Answered || !by_agent || d.direction != Direction::Inbound {
                    return;
                }
                let hold = sdp.is_hold();
                if hold != d.pending_hold.map_or(d.held, |p| p.hold) {
                    // A change whose answer was not seen is taken as done.
                    commit_hold(d, out);
                    let seq = msg.cseq().map_or(0, |c| c.seq);
                    d.pending_hold = Some(PendingHold { seq, hold, at: meta.time });
                }
            }
            Method::Bye => {
                if d.phase != Phase::Answered {
                    return;
                }
                commit_hold(d, out);
                // By the SIP caller or callee; end_answered says which is the agent.
                let by = if from_tag.is_some() && from_tag == d.caller_tag.as_deref() {
                    HangupBy::Caller
                } else if from_tag.is_some() && from_tag == d.callee_tag.as_deref() {
                    HangupBy::Agent
                } else {
                    HangupBy::Unknown
                };
                d.phase = Phase::Ended(meta.time);
                let cause = msg.q850_cause().or(Some(16));
                end_answered(d, meta.time, by, cause, out);
            }
            Method::Refer => {
                let by_agent = from_tag.is_some() && from_tag == d.agent_tag();
                // A REFER after a refused one is the agent trying again.
                if d.phase != Phase::Answered || !by_agent || d.refer.as_ref().is_some_and(|r| !r.failed) {
                    return;
                }
                commit_hold(d, out);
                let target = msg.refer_to();
                let uri = target.as_ref().and_then(NameAddr::uri);
                let kind =
                    if uri.is_some_and(|u| u.has_replaces()) { TransferKind::Attended } else { TransferKind::Blind };
                let target = match (uri.and_then(|u| u.user), target) {
                    (Some(user), _) => lossy(user),
                    (None, Some(t)) => lossy(t.uri_raw),
                    (None, None) => String::new(),
                };
                let seq = msg.cseq().map_or(0, |c| c.seq);
                d.refer =
                    Some(Refer { seq, at: meta.time, target: target.clone(), kind, failed: false, emitted: false });
                // An attended transfer's new leg (the INVITE with Replaces)
                // goes to the target as a blind one's does.
                if !target.is_empty() {
                    if self.transfers.len() >= MAX_PENDING_TRANSFERS {
                        self.transfers.remove(0);
                    }
                    let t = PendingTransfer {
                        at: meta.time,
                        caller: d.caller.clone(),
                        target,
                        call_id: d.call_id.clone(),
                        queue: d.queue.clone(),
                    };
                    self.transfers.push(t);
                }
            }
            Method::Notify => {
                // The transferee reports the new leg's progress (RFC 3515).
                let Some(code) = msg.sipfrag_status() else { return };
                if !msg.event().is_some_and(|e| e.eq_ignore_ascii_case(b"refer")) {
                    return;
                }
                // A late NOTIFY about an earlier, refused REFER is not about this one.
                let id = msg.event_id().and_then(|i| std::str::from_utf8(i).ok()?.parse::<u32>().ok());
                if let Some(r) = d.refer.as_mut()
                    && id.is_none_or(|id| id == r.seq)
                {
                    if (200..300).contains(&code) {
                        emit_transfer(d, out);
                    } else if code >= 300 {
                        r.failed = true;
                    }
                }
            }
            _ => {}
        }
    }

    // --- responses ---

    fn response(
        &mut self,
        call_id: &[u8],
        seq: u32,
        method: Method<'_>,
        meta: &PacketMeta,
        msg: &SipMessage<'_>,
        out: &mut Vec<FeedEvent>,
    ) {
        let Some(code) = msg.status() else { return };
        let Some(d) = self.dialogs.get_mut(call_id) else {
            if method == Method::Invite && self.early.len() < MAX_EARLY {
                let bytes = msg.to_bytes().into_boxed_slice();
                self.early.push(Early { call_id: Box::from(call_id), meta: *meta, bytes });
            } else {
                count(&mut self.unparsed, "sip/orphan");
            }
            return;
        };
        d.last = d.last.max(meta.time);
        // Responses to the caller's INVITE carry the caller's From-tag; an
        // agent's re-INVITE may reuse the same CSeq number in its own space.
        let from_tag = msg.from().and_then(|f| f.tag());
        let callers = d.caller_tag.is_none() || from_tag == d.caller_tag.as_deref();
        // A refresh's answer carries the interval both sides agreed on.
        if matches!(method, Method::Invite | Method::Update)
            && d.phase == Phase::Answered
            && (200..300).contains(&code)
            && let Some(se) = msg.session_expires()
        {
            d.session_expires = Some(se);
        }
        if let Some(p) = d.pending_hold
            && p.seq == seq
            && code >= 200
            && matches!(method, Method::Invite | Method::Update)
            && from_tag.is_some()
            && from_tag == d.agent_tag()
        {
            if code < 300 {
                commit_hold(d, out);
            } else {
                d.pending_hold = None;
            }
            return;
        }
        match method {
            Method::Invite if seq == d.invite_cseq && callers => {}
            Method::Refer => {
                if code >= 300
                    && let Some(r) = d.refer.as_mut()
                    && r.seq == seq
                {
                    r.failed = true;
                }
                return;
            }
            _ => return,
        }
        // Trying, forwarding and queued notices, and authentication
        // challenges (the caller sends the INVITE again), are no one's answer.
        if matches!(code, 100..=179 | 181 | 182 | 184..=199 | 401 | 407) {
            return;
        }
        let top = msg.top_via().and_then(via_key);
        let caller_facing = top.is_some() && top == d.origin_branch.as_deref();
        let tag: Box<[u8]> = msg.to().and_then(|t| t.tag()).map(Box::from).unwrap_or_default();
        let who = Responder { msg, meta, caller_facing };
        let config = &self.config;

        // Branch side: one agent phone's answer. A caller-facing copy
        // stands for a branch only when it is one already seen, or when no
        // proxy is in the path (no forwarded INVITE copy): otherwise it is
        // the proxy's own answer (408 on ring timeout, a stateless 404).
        let known = d.branches.iter().position(|b| b.tag == tag).or_else(|| {
            // A phone (or gateway) that sent its early media before it
            // chose a To-tag: the tagged response is the same branch.
            if tag.is_empty() || (caller_facing && code >= 300) {
                return None;
            }
            let i = d.branches.iter().position(|b| b.tag.is_empty() && !b.resolved)?;
            d.branches[i].tag = tag.clone();
            Some(i)
        });
        // A 2xx or 18x comes from the answering or ringing phone whichever
        // copy arrives first.
        let is_branch = code < 300 || !caller_facing || known.is_some() || d.forwards.is_empty();
        let outbound = d.direction != Direction::Inbound;
        let idx = if is_branch && !outbound {
            let i = match known {
                Some(i) => Some(i),
                None if d.branches.len() < MAX_BRANCHES => {
                    d.branches.push(Branch {
                        tag: tag.clone(),
                        agent: None,
                        strong: false,
                        ring_at: None,
                        ringing_sent: false,
                        resolved: false,
                    });
                    Some(d.branches.len() - 1)
                }
                None => None,
            };
            if let Some(i) = i {
                identify(config, d, i, &who);
            }
            i
        } else {
            None
        };

        if code < 200 {
            if let Some(i) = idx {
                let b = &mut d.branches[i];
                b.ring_at.get_or_insert(meta.time);
                announce_ringing(config, d, i, out);
            }
            return;
        }
        if code < 300 {
            if d.phase != Phase::Setup {
                return;
            }
            d.phase = Phase::Answered;
            d.answered_at = Some(meta.time);
            d.callee_tag = (!tag.is_empty()).then(|| tag.clone());
            // An answer wins over a CANCEL it crossed.
            d.cancel_at = None;
            if outbound {
                let kind = dial_result(d, DialOutcome::Answered, None);
                out.push(d.event(meta.time, kind));
                return;
            }
            let Some(i) = idx else { return };
            d.answered = Some(i);
            let fallback = fallback_name(d);
            let b = &mut d.branches[i];
            b.resolved = true;
            b.agent.get_or_insert(fallback);
            announce_ringing(config, d, i, out);
            let b = &d.branches[i];
            let agent = b.agent.clone().unwrap_or_default();
            // Rung since the first of the agent's devices rang.
            let first_ring = d
                .branches
                .iter()
                .enumerate()
                .filter(|(j, x)| *j == i || (x.agent == b.agent && !x.resolved))
                .filter_map(|(_, x)| x.ring_at)
                .min();
            let ring = first_ring.map(|r| ms_between(r, meta.time));
            let kind =
                EventKind::Answered { queue: d.queue.clone(), agent, reported_wait_ms: None, reported_ring_ms: ring };
            out.push(d.event(meta.time, kind));
            return;
        }
        // A final failure.
        if let Some(i) = idx {
            miss_branch(config, d, i, code, meta.time, out);
        }
        if caller_facing && d.phase == Phase::Setup {
            if (300..400).contains(&code) {
                // The caller may follow the redirect on this Call-ID; the
                // call ends here only if it does not (see sweep).
                d.redirect.get_or_insert((meta.time, code));
                return;
            }
            d.phase = Phase::Ended(meta.time);
            end_unanswered(d, code, msg.q850_cause(), meta.time, out);
        }
    }

    // --- helpers needing the whole tracker ---

    /// The agent placing a call, from the caller's number or address.
    fn calling_agent(&self, caller: &str, origin_src: Option<IpAddr>) -> Option<String> {
        if let Some(name) = self.config.agent_with_extension(caller) {
            return Some(name.to_owned());
        }
        let ip = origin_src?;
        if let Some(name) = self.config.agent_at(ip) {
            return Some(name.to_owned());
        }
        self.config.in_agent_network(ip).then(|| if caller.is_empty() { ip.to_string() } else { caller.to_owned() })
    }

    /// The values that may link this INVITE's leg to another leg of the
    /// same call: the HEP correlation id, then each configured
    /// [`link_headers`](SipTrackerConfig::link_headers) value. Its own
    /// Call-ID is no link.
    fn link_keys(&self, msg: &SipMessage<'_>, call_id: &[u8]) -> Vec<Box<[u8]>> {
        let mut keys: Vec<Box<[u8]>> = self.correlation.iter().cloned().collect();
        for name in &self.config.link_headers {
            let Some(v) = msg.header(name) else { continue };
            let v = if name.eq_ignore_ascii_case("Session-ID") {
                // RFC 7989: `local-uuid;remote=remote-uuid`; the local UUID
                // is the session's across B2BUAs, hex in any case; all
                // zeros is the null UUID of a UA that has none yet.
                let uuid = v.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
                if uuid.iter().all(|&b| b == b'0') {
                    continue;
                }
                uuid.to_ascii_lowercase().into_boxed_slice()
            } else {
                Box::from(v.trim_ascii())
            };
            keys.push(v);
        }
        keys.retain(|k| !k.is_empty() && **k != *call_id);
        keys
    }

    /// The SIP Call-ID of a tracked leg that `keys` name: the Call-ID
    /// itself (X-CID, a correlation id), or a value that leg carried too
    /// (Session-ID).
    fn linked_leg(&self, keys: &[Box<[u8]>]) -> Option<Box<[u8]>> {
        keys.iter().find_map(|k| {
            if self.dialogs.contains_key(k) {
                return Some(k.clone());
            }
            self.links.get(k).filter(|leg| self.dialogs.contains_key(*leg)).cloned()
        })
    }

    /// Files `keys` as naming leg `call_id`, unless a live leg has them.
    fn remember_links(&mut self, keys: Vec<Box<[u8]>>, call_id: &[u8]) {
        if keys.is_empty() {
            return;
        }
        if self.links.len() >= 2 * self.config.max_dialogs {
            let dialogs = &self.dialogs;
            self.links.retain(|_, leg| dialogs.contains_key(leg));
        }
        for k in keys {
            if self.links.get(&k).is_none_or(|leg| !self.dialogs.contains_key(leg)) {
                self.links.insert(k, Box::from(call_id));
            }
        }
    }

    /// The queue named by the queue header or an explicit number rule, and
    /// whether the header placed it.
    fn explicit_queue(&self, msg: &SipMessage<'_>, called: &str, ruri: Option<&SipUri<'_>>) -> Option<(String, bool)> {
        if let Some(h) = self.config.queue_header.as_deref().and_then(|name| msg.header(name)) {
            let number = NameAddr::parse(h).and_then(|n| n.user()).map(lossy);
            match number {
                Some(n) => return Some((self.config.queue_for_number(&n).map_or(n, str::to_owned), true)),
                None if !h.is_empty() => return Some((lossy(h), true)),
                None => {}
            }
        }
        self.config
            .queue_for_number(called)
            .or_else(|| ruri.and_then(|u| u.user).and_then(|u| self.config.queue_for_number(&lossy(u))))
            .map(|q| (q.to_owned(), false))
    }

    /// The queue of a new inbound call, counted by the rule that placed it.
    fn place_inbound(&mut self, explicit: Option<(String, bool)>, called: &str) -> Option<String> {
        let p = &mut self.placements;
        match explicit {
            Some((q, true)) => {
                p.by_header += 1;
                Some(q)
            }
            Some((q, false)) => {
                *p.by_rule.entry(q.clone()).or_insert(0) += 1;
                Some(q)
            }
            None => {
                if let Some(q) = &self.config.default_queue {
                    p.by_default_queue += 1;
                    Some(q.clone())
                } else if self.config.queue_by_dialled_number && !called.is_empty() {
                    p.by_dialled_number += 1;
                    Some(called.to_owned())
                } else {
                    p.not_queued += 1;
                    None
                }
            }
        }
    }

    fn take_transfer(
        &mut self,
        now: UnixNanos,
        caller: &str,
        called: &str,
        ruri: Option<&SipUri<'_>>,
    ) -> Option<PendingTransfer> {
        let window = i64::try_from(self.config.transfer_window_s).unwrap_or(i64::MAX).saturating_mul(NANOS_PER_SEC);
        self.transfers.retain(|t| now.saturating_sub(t.at) <= window);
        let ruri_user = ruri.and_then(|u| u.user).map(lossy);
        let i = self.transfers.iter().position(|t| {
            !caller.is_empty() && t.caller == caller && (t.target == called || ruri_user.as_deref() == Some(&t.target))
        })?;
        Some(self.transfers.remove(i))
    }

    fn sweep(&mut self, now: UnixNanos, out: &mut Vec<FeedEvent>) {
        let secs = |s: u64| i64::try_from(s).unwrap_or(i64::MAX).saturating_mul(NANOS_PER_SEC);
        let (linger, setup, call) =
            (secs(self.config.linger_s), secs(self.config.setup_timeout_s), secs(self.config.call_timeout_s));
        let mut done: Vec<(UnixNanos, Box<[u8]>, bool)> = self
            .dialogs
            .iter()
            .filter_map(|(k, d)| {
                let idle = now.saturating_sub(d.last);
                let (over, expired) = match d.phase {
                    Phase::Ended(at) => (now.saturating_sub(at) > linger && idle > linger, false),
                    Phase::Setup => match d.redirect {
                        Some((at, _)) => (now.saturating_sub(at) > linger && idle > linger, false),
                        None => (idle > setup, true),
                    },
                    Phase::Answered => {
                        // RFC 4028: no refresh within the session interval
                        // means the session is over, BYE captured or not.
                        let limit =
                            d.session_expires.map_or(call, |se| call.min(secs(u64::from(se)).saturating_add(linger)));
                        (idle > limit, true)
                    }
                };
                over.then(|| (d.first, k.clone(), expired))
            })
            .collect();
        self.prune_early(now);
        if done.is_empty() {
            return;
        }
        // Emission order must not depend on the map's.
        done.sort();
        for (_, k, expired) in done {
            if let Some(d) = self.dialogs.remove(&k) {
                if expired {
                    self.stats.expired += 1;
                }
                self.finish_dialog(d, out);
            }
        }
    }

    fn evict_oldest(&mut self, out: &mut Vec<FeedEvent>) {
        let oldest = self.dialogs.iter().min_by(|a, b| (a.1.last, &a.0).cmp(&(b.1.last, &b.0))).map(|(k, _)| k.clone());
        if let Some(k) = oldest
            && let Some(d) = self.dialogs.remove(&k)
        {
            self.stats.evicted += 1;
            self.finish_dialog(d, out);
        }
    }

    /// Emits what a call's known facts imply before it is forgotten: a
    /// CANCEL whose 487 was not seen is an abandon, an accepted REFER with
    /// no NOTIFY a transfer, a branch that rang and never answered a missed
    /// offer. An answered call with no BYE gets no hang-up: the engine closes
    /// it as "unknown end", which is the truth.
    fn finish_dialog(&self, d: Dialog, out: &mut Vec<FeedEvent>) {
        let (from, role) = (out.len(), d.role);
        self.finish_dialog_inner(d, out);
        keep_roles(out, from, |_| role);
    }

    fn finish_dialog_inner(&self, mut d: Dialog, out: &mut Vec<FeedEvent>) {
        let config = &self.config;
        if d.phase == Phase::Setup
            && let Some(at) = d.cancel_at
        {
            for i in 0..d.branches.len() {
                if !d.branches[i].resolved {
                    miss_branch(config, &mut d, i, 487, at, out);
                }
            }
            d.phase = Phase::Ended(at);
            end_unanswered(&mut d, 487, None, at, out);
        }
        if d.phase == Phase::Setup
            && let Some((at, code)) = d.redirect
        {
            for i in 0..d.branches.len() {
                if !d.branches[i].resolved && d.branches[i].ring_at.is_some() {
                    miss_branch(config, &mut d, i, 480, at, out);
                }
            }
            d.phase = Phase::Ended(at);
            end_unanswered(&mut d, code, None, at, out);
        }
        if d.phase == Phase::Answered {
            commit_hold(&mut d, out);
        }
        if d.phase == Phase::Answered && d.refer.as_ref().is_some_and(|r| !r.failed) {
            emit_transfer(&mut d, out);
        }
        if d.phase != Phase::Setup {
            // A fork that rang and was never resolved stopped ringing when
            // another answered (or when the call ended), not at the call's
            // last message.
            let ended = match d.phase {
                Phase::Ended(at) => Some(at),
                _ => None,
            };
            let at = d.answered_at.or(ended).unwrap_or(d.last);
            for i in 0..d.branches.len() {
                if !d.branches[i].resolved && d.branches[i].ring_at.is_some() {
                    miss_branch(config, &mut d, i, 487, at, out);
                }
            }
        }
    }
}

// === per-dialog steps ===

/// Remembers where a forwarded copy of the INVITE went.
fn remember_forward(
    d: &mut Dialog,
    msg: &SipMessage<'_>,
    meta: &PacketMeta,
    top: Option<&[u8]>,
    bottom: Option<&[u8]>,
) {
    let Some(top) = top else { return };
    if Some(top) == bottom || d.forwards.len() >= MAX_FORWARDS || d.forwards.iter().any(|f| &*f.branch == top) {
        return;
    }
    let user = msg.request_uri().and_then(|u| u.user).map(lossy);
    d.forwards.push(Forward { branch: Box::from(top), user, dst: meta.dst });
}

/// Names the agent of branch `i` from one response copy, if a rule can.
fn identify(config: &SipTrackerConfig, d: &mut Dialog, i: usize, who: &Responder<'_>) {
    if d.branches[i].strong {
        return;
    }
    let contact = who.msg.contact();
    let contact_uri = contact.as_ref().and_then(NameAddr::uri);
    let contact_user = contact_uri.and_then(|u| u.user).map(lossy);
    let contact_ip = contact_uri.and_then(|u| parse_host_ip(u.host));
    // The responder's own address, when this copy comes from it.
    let src = if who.caller_facing && !d.forwards.is_empty() { None } else { who.meta.src };
    // The fork this response is on: where it was sent, at which extension.
    let fork = if who.caller_facing {
        None
    } else {
        let top = who.msg.top_via().and_then(via_key);
        d.forwards.iter().find(|f| Some(&*f.branch) == top)
    };
    let rung = fork.and_then(|f| f.user.clone());
    let strong = src
        .and_then(|ip| config.agent_at(ip))
        .or_else(|| fork.and_then(|f| f.dst).and_then(|ip| config.agent_at(ip)))
        .or_else(|| contact_ip.and_then(|ip| config.agent_at(ip)))
        .map(str::to_owned)
        .or_else(|| rung.as_deref().and_then(|e| config.agent_with_extension(e)).map(str::to_owned))
        .or_else(|| contact_user.as_deref().and_then(|e| config.agent_with_extension(e)).map(str::to_owned))
        .or_else(|| {
            // Only when nothing else tells the branches apart.
            (d.forwards.len() <= 1).then(|| config.agent_with_extension(&d.called).map(str::to_owned)).flatten()
        })
        .or_else(|| {
            let ip = src
                .filter(|ip| config.in_agent_network(*ip))
                .or(contact_ip.filter(|ip| config.in_agent_network(*ip)))?;
            Some(ip.to_string())
        });
    let b = &mut d.branches[i];
    match strong {
        Some(name) => {
            b.agent = Some(name);
            b.strong = true;
        }
        None if !config.has_agent_rules() && b.agent.is_none() => {
            b.agent = rung.or(contact_user.filter(|u| !u.is_empty()));
        }
        None => {}
    }
}

/// A name for a branch no rule named: the number the caller dialled.
fn fallback_name(d: &Dialog) -> String {
    if d.called.is_empty() { "unknown".to_owned() } else { d.called.clone() }
}

/// Emits `Ringing` for branch `i` once its agent is known.
fn announce_ringing(config: &SipTrackerConfig, d: &mut Dialog, i: usize, out: &mut Vec<FeedEvent>) {
    let b = &d.branches[i];
    if b.ringing_sent || !counts_as_agent(config, b) {
        return;
    }
    let (Some(at), Some(agent)) = (b.ring_at, b.agent.clone()) else { return };
    d.branches[i].ringing_sent = true;
    // Another device of the same agent (desk phone and softphone registered
    // on one extension, forked in parallel) already rings: one offer.
    if same_agent_live(d, i, |b| b.ringing_sent) {
        return;
    }
    out.push(d.event(at, EventKind::Ringing { queue: d.queue.clone(), agent }));
}

/// Whether a branch other than `i`, of the same agent and matching `also`,
/// still rings or answered.
fn same_agent_live(d: &Dialog, i: usize, also: impl Fn(&Branch) -> bool) -> bool {
    let agent = &d.branches[i].agent;
    agent.is_some()
        && d.branches
            .iter()
            .enumerate()
            .any(|(j, b)| j != i && &b.agent == agent && (!b.resolved || d.answered == Some(j)) && also(b))
}

fn counts_as_agent(config: &SipTrackerConfig, b: &Branch) -> bool {
    b.strong || (!config.has_agent_rules() && b.agent.is_some())
}

/// A branch's final failure: a missed offer for its agent.
fn miss_branch(
    config: &SipTrackerConfig,
    d: &mut Dialog,
    i: usize,
    code: u16,
    at: UnixNanos,
    out: &mut Vec<FeedEvent>,
) {
    if d.branches[i].resolved {
        return;
    }
    d.branches[i].resolved = true;
    if !config.has_agent_rules() && d.branches[i].agent.is_none() {
        let fallback = fallback_name(d);
        d.branches[i].agent = Some(fallback);
    }
    if !counts_as_agent(config, &d.branches[i]) {
        return;
    }
    announce_ringing(config, d, i, out);
    // The agent's other device still rings, or answered: not a miss yet.
    if same_agent_live(d, i, |_| true) {
        return;
    }
    let reason = match code {
        487 if d.cancel_at.is_some() || d.answered.is_some() || d.elsewhere => MissReason::Canceled,
        487 | 408 | 480 => MissReason::NoAnswer,
        486 | 600 | 603 | 403 => MissReason::Rejected,
        400..=499 | 600..=699 => MissReason::Rejected,
        _ => MissReason::NoAnswer,
    };
    let b = &d.branches[i];
    let ring = Some(b.ring_at.map_or(0, |r| ms_between(r, at)));
    let kind = EventKind::OfferMissed {
        queue: d.queue.clone(),
        agent: b.agent.clone().unwrap_or_default(),
        reason,
        reported_ring_ms: ring,
    };
    out.push(d.event(at, kind));
}

/// The caller's call ended without an answer.
fn end_unanswered(d: &mut Dialog, code: u16, cause: Option<u16>, at: UnixNanos, out: &mut Vec<FeedEvent>) {
    // Cancelled because another leg answered: not the caller giving up.
    let abandoned = d.cancel_at.is_some() && !d.elsewhere;
    let cause = cause.or_else(|| {
        if d.elsewhere {
            Some(CAUSE_ANSWERED_ELSEWHERE)
        } else if abandoned {
            Some(16)
        } else {
            q850_of_sip(code)
        }
    });
    if d.direction == Direction::Outbound {
        let outcome = match code {
            _ if abandoned => DialOutcome::AgentAbandoned,
            486 | 600 => DialOutcome::Busy,
            408 | 480 | 487 => DialOutcome::NoAnswer,
            404 | 410 | 484 | 485 | 604 => DialOutcome::Unavailable,
            502 | 503 => DialOutcome::Congestion,
            _ => DialOutcome::Failed,
        };
        let kind = dial_result(d, outcome, cause);
        out.push(d.event(at, kind));
        return;
    }
    if let Some(queue) = d.queue.clone() {
        let reason = match code {
            _ if d.elsewhere => LeaveReason::Unspecified,
            _ if abandoned => LeaveReason::Abandon,
            408 | 487 => LeaveReason::Timeout,
            480 | 486 | 600 | 603 => LeaveReason::LeaveEmpty,
            404 | 410 | 484 | 485 | 604 => LeaveReason::JoinEmpty,
            _ => LeaveReason::Unspecified,
        };
        let wait = Some(ms_between(d.first, at));
        out.push(d.event(at, EventKind::QueueLeave { queue, reason, reported_wait_ms: wait }));
    }
    let by = if abandoned { HangupBy::Caller } else { HangupBy::Unknown };
    let kind = EventKind::Hangup { queue: d.queue.clone(), agent: None, by, cause, reported_talk_ms: None };
    out.push(d.event(at, kind));
}

/// An answered call's BYE.
fn end_answered(d: &mut Dialog, at: UnixNanos, by: HangupBy, cause: Option<u16>, out: &mut Vec<FeedEvent>) {
    if d.direction == Direction::Outbound {
        let agent = d.calling_agent.clone();
        let by = match by {
            HangupBy::Caller => HangupBy::Agent,
            HangupBy::Agent => HangupBy::Caller,
            HangupBy::Unknown => HangupBy::Unknown,
        };
        out.push(d.event(at, EventKind::Hangup { queue: None, agent, by, cause, reported_talk_ms: None }));
        return;
    }
    // A REFER that was not refused: the agent's segment ended with it.
    if d.refer.as_ref().is_some_and(|r| !r.failed) {
        emit_transfer(d, out);
        return;
    }
    let agent = d.agent();
    out.push(d.event(at, EventKind::Hangup { queue: d.queue.clone(), agent, by, cause, reported_talk_ms: None }));
}

/// Applies the agent's hold change once its offer was accepted (or its
/// answer was never seen), at the request's time.
fn commit_hold(d: &mut Dialog, out: &mut Vec<FeedEvent>) {
    let Some(p) = d.pending_hold.take() else { return };
    if p.hold == d.held {
        return;
    }
    d.held = p.hold;
    let agent = d.agent();
    let kind = if p.hold { EventKind::Hold { agent } } else { EventKind::Resume { agent } };
    out.push(d.event(p.at, kind));
}

/// The agent's blind or attended transfer, at the REFER's time.
fn emit_transfer(d: &mut Dialog, out: &mut Vec<FeedEvent>) {
    let agent = d.agent();
    let queue = d.queue.clone();
    let Some(r) = d.refer.as_mut() else { return };
    if r.emitted {
        return;
    }
    r.emitted = true;
    let (at, kind, target) = (r.at, r.kind, r.target.clone());
    out.push(d.event(at, EventKind::Transfer { kind, queue, agent, target, reported_talk_ms: None }));
}

fn dial_result(d: &Dialog, outcome: DialOutcome, cause: Option<u16>) -> EventKind {
    EventKind::DialResult { agent: d.calling_agent.clone(), dialled: d.called.clone(), trunk: None, outcome, cause }
}

// === value helpers ===

/// RFC 3398 section 8.2.6.1: SIP final status → Q.850 cause.
fn q850_of_sip(code: u16) -> Option<u16> {
    Some(match code {
        400 | 481 | 500 | 503 => 41,
        401 | 402 | 403 | 407 | 603 => 21,
        404 | 485 | 604 => 1,
        405 | 406 | 415 | 501 => 79,
        408 | 504 => 102,
        410 => 22,
        480 => 18,
        482 | 483 => 25,
        484 => 28,
        486 | 600 => 17,
        487 => 16,
        488 | 606 => 65,
        502 => 38,
        413 | 414 | 416 | 420 | 421 | 423 | 505 | 513 => 127,
        _ => return None,
    })
}

/// What tells a Via's transaction apart: its branch, else (an RFC 2543
/// element, which sends none) its sent-by address.
fn via_key(v: Via<'_>) -> Option<&[u8]> {
    v.branch().or_else(|| Some(v.sent_by).filter(|s| !s.is_empty()))
}

fn ms_between(from: UnixNanos, to: UnixNanos) -> u64 {
    u64::try_from(to.saturating_sub(from).max(0) / NANOS_PER_MS).unwrap_or(0)
}

/// The calling party: the From URI's user, else its display name.
fn party(from: &NameAddr<'_>) -> String {
    from.user().or(from.display).map(lossy).unwrap_or_default()
}

fn parse_host_ip(host: &[u8]) -> Option<IpAddr> {
    let h = std::str::from_utf8(host).ok()?;
    h.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Counts without allocating when the name was seen before.
fn count(unparsed: &mut Unparsed, name: &str) {
    match unparsed.by_name.get_mut(name) {
        Some(n) => *n += 1,
        None => unparsed.count(name),
    }
}
