//! SIP, as a proxy or SBC mirrors it in HEP: a small parser and a call
//! tracker that turns dialogs into call-centre [`FeedEvent`](crate::FeedEvent)s.
//!
//! Checked against a real Kamailio 5.6.3 proxying sipp callers and agents
//! (`tests/fixtures/sip-hep/`: 50 calls: answered, ring group, abandoned,
//! busy, unavailable, not found, ring timeout, blind transfer, hold).
//!
//! # Parser ([`SipMessage`])
//!
//! Why not a crate: `rsip`, the most complete Rust SIP crate, parses every
//! header into owned `String`s with nom at parse time and reports errors as
//! strings; a capture point sees every message of a site twice (received
//! and forwarded) and needs five headers of each. This parser finds the
//! start line and the header block (line folding, CRLF or bare LF, compact
//! header names) and nothing else eagerly; [`SipMessage::call_id`],
//! [`cseq`](SipMessage::cseq), [`from`](SipMessage::from),
//! [`to`](SipMessage::to) (tags), [`vias`](SipMessage::vias) (branch),
//! [`contact`](SipMessage::contact), [`refer_to`](SipMessage::refer_to),
//! [`referred_by`](SipMessage::referred_by), [`reasons`](SipMessage::reasons),
//! [`content_type`](SipMessage::content_type),
//! [`content_length`](SipMessage::content_length),
//! [`event`](SipMessage::event),
//! [`session_expires`](SipMessage::session_expires),
//! [`replaces_call_id`](SipMessage::replaces_call_id) and the SDP direction
//! ([`sdp`]) are typed on access and borrow from the input. Compact forms:
//! `i` Call-ID, `f` From, `t` To, `v` Via, `m` Contact, `l` Content-Length,
//! `c` Content-Type, `r` Refer-To, `b` Referred-By, `o` Event, `x`
//! Session-Expires. Errors are a `Copy`
//! [`SipError`] with the byte offset; nothing panics on any input (fuzzed:
//! `fuzz/fuzz_targets/sip.rs`). A datagram is one message
//! ([`SipMessage::parse_datagram`]); a stream is framed by `Content-Length`
//! ([`SipMessage::parse`]), and so is a HEP payload captured on TCP that
//! holds several messages.
//!
//! # Tracker ([`SipTracker`])
//!
//! One state per SIP Call-ID, fed every message in capture order
//! ([`SipTracker::push_datagram`] for HEP). Events carry the HEP timestamp
//! as `source_time`, the Call-ID as `call_id` and `leg_id` (a transfer's new
//! leg keeps its own Call-ID as `leg_id` and takes the original call's as
//! `call_id`). Output depends only on the input bytes and their order, so
//! reading the same capture again yields the same events in the same order,
//! and the spool's sequence numbers, hence event ids, come out the same.
//!
//! ## Copies, retransmissions, forks: how a message is placed
//!
//! A proxy mirrors a message twice, as received and as forwarded, with
//! different Via stacks; it mirrors retransmissions too (Kamailio's core
//! mode) and generates messages of its own. Nothing is deduplicated by
//! content: every rule below is a state transition that happens once, so a
//! second copy finds nothing to do. Three facts place a message:
//!
//! - the **caller's transaction**: the bottom Via branch of the initial
//!   INVITE (every copy of it, forwarded or not, ends with the caller's Via;
//!   a Via without branch, RFC 2543 style, is told apart by its sent-by).
//!   A CANCEL whose bottom Via branch is that one comes from the caller; a
//!   proxy's own CANCEL (to a losing fork, on ring timeout) does not.
//! - **caller-facing responses**: a response whose top Via branch is the
//!   caller's is on its way to the caller (the proxy removed its own Via):
//!   its final status is the call's outcome. Other copies are on a branch.
//! - **branches**: responses to the INVITE are grouped by To-tag; each tag
//!   is one phone offered the call (a ring group forks to several). The
//!   phone is named from, in order: the address of the copy it sent (HEP
//!   source) or its Contact host matched against
//!   [`agents`](SipTrackerConfig::agents); the extension it was rung at (the
//!   Request-URI of the forwarded INVITE whose top Via branch the response
//!   carries), its Contact user, or the dialled number when there is no
//!   fork, matched against the agent extension rules; an agent network.
//!   With no agent rule configured every phone is an agent, named by the
//!   extension it was rung at. A tagged response after a tagless 18x
//!   (early media sent before the To-tag was chosen) is the same branch.
//!   Branches of one agent ringing at once (a desk phone and a softphone on
//!   one extension) are one offer: one `Ringing`, no miss while another of
//!   them rings or answered.
//!
//! Responses to an INVITE not seen yet (captures merged from two nodes put
//! a phone's 180 a few ms before the proxy's INVITE) are kept for 2 s of
//! capture time and replayed after the INVITE; then they are orphans.
//!
//! ## Events
//!
//! | SIP | event | notes |
//! |---|---|---|
//! | initial INVITE (first copy) | `CallOffered` | direction: caller an agent (extension rule, or its address) → outbound, or internal if the callee is one too; else inbound. caller = From user, called = To user (else Request-URI user) |
//! | the same, inbound, with a queue | `QueueJoin` | queue from [`queue_header`](SipTrackerConfig::queue_header), then the dialled number's rule, then [`default_queue`](SipTrackerConfig::default_queue), then a queue named after the dialled number ([`queue_by_dialled_number`](SipTrackerConfig::queue_by_dialled_number)); counted in [`SipTracker::placements`] |
//! | first 180/183 of a branch | `Ringing { agent }` | at the 18x's time; sent once the agent is named |
//! | first 2xx to the INVITE | `Answered { agent }` | ring time reported; later 2xx (retransmissions, a second fork answering) ignored |
//! | branch final 486, 600, 603, 403, other 4xx/6xx | `OfferMissed { Rejected }` | ring time from its 18x, else 0 |
//! | branch final 408, 480, 5xx, 3xx; 487 after a proxy timeout | `OfferMissed { NoAnswer }` | |
//! | branch 487 after the caller's CANCEL, after another branch answered, or after a CANCEL with `Reason: SIP;cause=200` (RFC 3326, "call completed elsewhere") | `OfferMissed { Canceled }` | a fork's losers are not abandons; a fork whose final is never seen rang until the answer (else the call's end) |
//! | caller-facing final after a CANCEL with `Reason: SIP;cause=200` | `QueueLeave { Unspecified }`, `Hangup { by Unknown }`, cause 26 | the upstream PBX rang agents on parallel legs and one answered: no abandon |
//! | caller-facing 3xx | nothing yet | the caller may follow it with a new INVITE on the same Call-ID and a higher CSeq (RFC 3261 section 8.1.3.4), which goes on as the same call; if none comes within [`linger_s`](SipTrackerConfig::linger_s): `QueueLeave { Unspecified }`, `Hangup` at the 3xx's time |
//! | caller-facing final after the caller's CANCEL | `QueueLeave { Abandon }`, `Hangup { by Caller }` | at the final's time (the CANCEL's if it never comes) |
//! | caller-facing 408, or 487 without the caller's CANCEL | `QueueLeave { Timeout }`, `Hangup` | the proxy's ring-no-answer timeout |
//! | caller-facing 486, 480, 600, 603 | `QueueLeave { LeaveEmpty }`, `Hangup` | no agent could take the call |
//! | caller-facing 404, 410, 484, 485, 604 | `QueueLeave { JoinEmpty }`, `Hangup` | nobody behind the number |
//! | other caller-facing 4xx-6xx | `QueueLeave { Unspecified }`, `Hangup` | 401/407 challenges are not finals: the caller retries with a new CSeq |
//! | BYE on an answered call | `Hangup { agent, by }` | by: From-tag = the caller's tag → Caller, = the answering branch's → Agent; cause from `Reason: Q.850`, else 16 |
//! | REFER from the agent, then NOTIFY sipfrag 2xx, or the agent's BYE | `Transfer { Blind, target }` | at the REFER's time; `Attended` when Refer-To carries `Replaces`; target = Refer-To user; no Hangup follows for that agent. A REFER refused (≥ 300, or a NOTIFY sipfrag ≥ 300 whose `Event: refer;id=` is that REFER's CSeq) ends nothing, and the agent may REFER again |
//! | new INVITE from the transferred caller to the REFER target within [`transfer_window_s`](SipTrackerConfig::transfer_window_s) (blind, or attended: the INVITE with `Replaces`, RFC 3891) | its `Ringing`, `Answered`, `Hangup` on the original `call_id` | no new `CallOffered`; `QueueJoin` only if the target is itself a queue number. An inbound INVITE whose `Replaces` names a tracked dialog continues that dialog's call likewise |
//! | re-INVITE/UPDATE from the agent with SDP `sendonly`, `inactive` or `c=0.0.0.0` | `Hold { agent }` | once per change, at the request's time, emitted when a 2xx accepts it; a refused offer (491 glare, 488) changes nothing; with no final seen it is taken as accepted at the next change, REFER, BYE or end |
//! | the same with `sendrecv` (or no attribute) while held | `Resume { agent }` | likewise; a session refresh or codec change is neither |
//! | outbound: final to the INVITE | `DialResult` | 2xx Answered, 486/600 Busy, 408/480/487 NoAnswer, CANCEL by the agent AgentAbandoned, 404/410/484/485/604 Unavailable, 502/503 Congestion, else Failed; BYE → `Hangup { agent }` |
//!
//! A caller-facing final response generated by the proxy itself (its 408
//! on ring timeout, a stateless 404) belongs to no branch; the agent's own
//! 487 that follows a 408 is a `NoAnswer` missed offer.
//!
//! Not mapped: holds placed by the caller's side, and calls of internal
//! direction beyond `CallOffered` (consultation calls). Calls a PBX answers
//! itself and queues (Asterisk, FreeSWITCH behind the proxy) show the PBX as
//! the answering party: read such a PBX's own feed (AMI, ESL) for queue
//! KPIs.
//!
//! ## B2BUA legs
//!
//! A B2BUA (SBC, PBX) gives each side of a call its own Call-ID. A new
//! INVITE is the next leg of a tracked call when its HEP correlation id
//! (chunk 0x0011), or the value of one of
//! [`link_headers`](SipTrackerConfig::link_headers), is that call's Call-ID
//! (`X-CID: <the caller leg's Call-ID>`, as SBCs and Kamailio's `topoh`
//! add) or a value that call's INVITE carried too (the local UUID of
//! `Session-ID`, RFC 7989, which a compliant B2BUA passes on). The leg seen
//! first faces the caller; the linked one, towards the agents, takes its
//! `call_id` and queue and emits no `CallOffered`/`QueueJoin`. From then on
//! each leg reports its own side once: the caller leg `CallOffered`,
//! `QueueJoin`, `QueueLeave` and a hang-up naming no agent (an abandon); the
//! agent leg `Ringing`, `Answered`, missed offers, hold, transfer and the
//! agent's hang-up. What the B2BUA itself answers on the caller leg is
//! dropped. A capture that shows the agent leg before the caller leg
//! (merged from two nodes out of order) takes the agent leg for the caller's.
//! [`SipStats::linked_legs`] counts the links.
//!
//! ## Memory and time
//!
//! Time is the packets' own (HEP timestamps), so a capture read offline
//! behaves as it did live. Every second of it, calls are dropped: ended
//! ones after [`linger_s`](SipTrackerConfig::linger_s), unanswered ones
//! idle for [`setup_timeout_s`](SipTrackerConfig::setup_timeout_s), answered
//! ones idle for [`call_timeout_s`](SipTrackerConfig::call_timeout_s), or for
//! their negotiated `Session-Expires` plus `linger_s` when shorter (RFC 4028:
//! a session not refreshed in its interval is over); at
//! most [`max_dialogs`](SipTrackerConfig::max_dialogs) are kept (the least
//! recently active one is dropped first). A dropped call first emits what
//! its facts imply: a CANCEL whose final was lost is an abandon, an
//! accepted REFER a transfer, a branch that rang a missed offer; an answered
//! call whose BYE was lost gets no invented hang-up, so the engine closes it
//! as "unknown end". [`SipTracker::finish`] does the same for every call at
//! the end of a file. Forks per call, forwarded copies per call and REFERs
//! waiting for their new leg are capped too.

mod config;
mod message;
pub mod sdp;
#[cfg(test)]
mod tests;
mod tracker;

pub use config::{AgentEntry, Network, QueueEntry, QueuePlacements, SipTrackerConfig};
pub use message::{
    CSeq, Header, Headers, MAX_HEADER_BLOCK, Method, NameAddr, Reason, SipError, SipErrorKind, SipMessage, SipUri,
    StartLine, Via,
};
pub use tracker::{PacketMeta, SipStats, SipTracker};
