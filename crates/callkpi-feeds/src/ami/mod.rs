//! Asterisk Manager Interface: framing of the TCP byte stream, and mapping
//! of the call-centre events onto [`FeedEvent`](crate::FeedEvent)s.
//!
//! Checked against a real Asterisk 22.10.1 recording
//! (`tests/fixtures/asterisk/run-a/ami.log`, AMI 11.0.0, `timestampevents = yes`).
//!
//! # Framing ([`parse_frame`], [`parse_message`], [`frames`])
//!
//! - On connect Asterisk sends one banner line, `Asterisk Call Manager/11.0.0\r\n`,
//!   with no empty line after it ([`parse_banner`], [`Frame::Banner`]).
//! - Then messages: `Key: Value` lines ended by one empty line. Lines end in
//!   CRLF; a bare LF is accepted too. Empty lines between messages are skipped.
//! - A header splits at the first colon; one space after it is dropped, so a
//!   value may contain `": "` (`CallerIDName: ACME, Inc: Billing`). Keys are
//!   looked up ASCII case-insensitively; repeated keys (`ChanVariable`,
//!   `Output`) are all kept, in order ([`AmiMessage::get_all`]).
//! - Nothing is assumed about the encoding: headers are `&[u8]` borrowed from
//!   the buffer, decoded lossily on access ([`AmiMessage::get`] borrows when
//!   the bytes are valid UTF-8, which Asterisk sends; caller names such as
//!   `李雷` are UTF-8 in the recording).
//! - `Response: Follows` (the `Command` action of Asterisk up to 13) carries
//!   free text after its `Privilege`/`ActionID` headers, possibly with empty
//!   lines in it, up to `--END COMMAND--`: that text is
//!   [`AmiMessage::body`]. In any other message a line without a `Key:` part
//!   starts a body that runs to the empty line.
//! - An event has `Event:` (even `OriginateResponse`, which also has
//!   `Response:`); a reply to an action has `Response:` and no `Event:`
//!   ([`MessageKind`]). List replies (`QueueStatus`) are events with the
//!   action's `ActionID`.
//! - Incomplete input is [`Status::Partial`](crate::Status::Partial). A message
//!   larger than the limit (1 MiB by default, [`DEFAULT_MAX_MESSAGE_SIZE`]) is
//!   [`ParseErrorKind::TooLarge`]: the reader drops it and resynchronises at
//!   the next empty line with [`skip_message`]. Parsers never panic.
//!
//! # Mapping ([`AmiMapper`])
//!
//! Every event carries `call_id` = `Linkedid` (else `Uniqueid`), `source_time`
//! = `Timestamp:` (epoch seconds with microseconds, to ns; `None` when
//! `timestampevents` is off, Asterisk's default: the live agent then uses
//! the time it read the bytes, and `callkpi analyze` the receive times of a
//! [`RecvIndex`] side file when given one). `leg_id` is the channel's `Uniqueid`, except
//! where the member's channel is meant (`DestUniqueid`). Agents are named by
//! `MemberName`, as queue_log names them with `log_membername_as_agent`;
//! `Interface → MemberName` is learnt from `QueueMember`, `QueueMemberAdded`,
//! `QueueMemberStatus`, `AgentCalled`, ... so that an event naming only a
//! channel (`Hold`, an outbound `DialBegin`) is attributed too.
//!
//! | AMI event | event kind | notes |
//! |---|---|---|
//! | `QueueCallerJoin` (`Join`) | `QueueJoin` | caller = `CallerIDNum` (1.4: `CallerID`), `Position` |
//! | `QueueCallerAbandon` | `QueueLeave { Abandon / Timeout / LeaveEmpty }` | wait = `HoldTime` s; which one: see "Queue() exits" |
//! | `VarSet QUEUESTATUS=FULL/JOINEMPTY` | `QueueLeave { Full / JoinEmpty }` | queue from the `Newexten` running `Queue()`; wait 0 |
//! | `QueueCallerLeave` (`Leave`) | `QueueLeave { Unspecified }` | sent for *every* exit, see below |
//! | `AgentCalled` | `Ringing` | leg = member channel; before 12 the member is `AgentName` (interface `AgentCalled`) |
//! | `AgentRingNoAnswer` | `OfferMissed { NoAnswer }` (`Rejected` when `RingTime` is 0, as queue_log's `RINGNOANSWER`) | ring = `RingTime`, already in **ms** |
//! | `AgentDump` | `OfferMissed { Rejected }` | ring from the `AgentCalled` timestamp |
//! | `DialEnd` `CANCEL` of a ringing member | `OfferMissed { Canceled }` | queue_log RINGCANCELED; ring from timestamps |
//! | `AgentConnect` | `Answered` | wait = `HoldTime` s, ring = `RingTime` **s**; leg = `DestUniqueid` |
//! | `AgentComplete` `Reason: agent`/`caller` | `Hangup { by Agent/Caller }` | talk = `TalkTime` s |
//! | `AgentComplete` `Reason: transfer` | `Transfer` | kind and target from the call's last `BlindTransfer`/`AttendedTransfer` (Blind, empty target, if none) |
//! | `Hold` / `Unhold` | `Hold` / `Resume` | agent when the channel is a known member's; a `Hold` with `Status: Off` (1.6 to 11, which have no `Unhold`) is a `Resume` |
//! | `Hangup` | `Hangup { by Unknown, cause }` | only the call's origin channel and tracked legs, see below; cause 0 → `None` |
//! | `DialBegin` from a channel into an outbound context or trunk | `CallOffered { Outbound }` | caller = agent, called = number, trunk = context |
//! | matching `DialEnd` | `DialResult` | `ANSWER`, `BUSY`, `NOANSWER`, `CONGESTION`, `CHANUNAVAIL` → Unavailable, `CANCEL` → AgentAbandoned, else Failed |
//! | `QueueMemberAdded` / `QueueMemberRemoved` | `AgentState` Login (+ Paused if added paused) / Logout | per queue |
//! | `AgentLogin` / `AgentLogoff` (app_agent_pool, 12+; `Agentlogin`... before) | `AgentState` Login / Logout, queue `None` | agent = the member name of `Agent/<Agent>` when known, else the `Agent:` id (queue_log's `AGENTLOGIN` names the id) |
//! | `QueueMemberPause` (`QueueMemberPaused`) | `AgentState` Paused { `PausedReason` } / Available | by `Paused: 1/0` |
//! | `QueueMember` (`QueueStatus` reply) | `AgentState` Login at `LoginTime` (+ Paused at `LastPause`) | state assertions: a repeated Login is a no-op downstream |
//! | `UserEvent` named in [`AmiMapperConfig::survey_events`] | `SurveyAnswer` | `Score`, `Queue`, `Agent` (else the call's last agent) |
//! | `UserEvent` named in [`AmiMapperConfig::disposition_events`] | `Disposition` | `Code`, `Resolved` |
//!
//! Real order around an answer (Asterisk 22): `DialEnd ANSWER` (member leg),
//! `QueueCallerLeave`, `AgentConnect`, `BridgeEnter` ×2, then at the end
//! `AgentComplete` (which may come after the member channel's `Hangup`).
//! Around an abandon: the caller's `Hangup`, `DialEnd CANCEL` to ringing
//! members, `QueueCallerAbandon`, then `QueueCallerLeave`. So
//! `QueueCallerLeave` comes for every exit, answered ones included, right
//! before `AgentConnect` or right after `QueueCallerAbandon`; it is mapped as
//! `Unspecified` and the engine resolves it from those neighbours.
//!
//! ## Queue() exits
//!
//! app_queue (Asterisk 12 to 22) sends `QueueCallerAbandon` not only when
//! the caller hangs up but for every exit it counts in its `Abandoned`
//! figure: Queue()'s timeout (queue_log `EXITWITHTIMEOUT`), leave-when-empty
//! (`EXITEMPTY`) and `QueueWithdrawCaller` (`WITHDRAW`). Then come
//! `QueueCallerLeave` and, as Queue() returns, `VarSet` of `QUEUESTATUS` on
//! the caller's channel (no `QUEUESTATUS` after a real abandon). So the
//! mapper holds each `QueueCallerAbandon` back until it knows which it was:
//!
//! - **`QUEUESTATUS`** (the manager user reads the `dialplan` class, which
//!   carries `VarSet`): `TIMEOUT` → `Timeout`, `LEAVEEMPTY` → `LeaveEmpty`,
//!   `WITHDRAW` → `Unspecified`, anything else → `Abandon`.
//! - **Fallback** (no `QUEUESTATUS` before the channel's next other event,
//!   or the end of the input): `Abandon` when the caller's channel had a
//!   `HangupRequest`/`SoftHangupRequest` while queued, or the call's origin
//!   channel (`Uniqueid` = `Linkedid`) had hung up (the caller hung up;
//!   class `call`), else `Timeout`: the queue let a live caller go, and
//!   without `QUEUESTATUS` a leave-when-empty cannot be told from a timeout.
//!
//! [`AmiMapper::exit_resolution`] says which rule resolved how many exits;
//! `callkpi analyze` logs it. Against queue_log, exit by exit:
//!
//! | Queue() exit | queue_log | AMI | callkpi, both paths |
//! |---|---|---|---|
//! | caller hangs up | `ABANDON` | `QueueCallerAbandon`, `QueueCallerLeave` | abandoned |
//! | timeout | `EXITWITHTIMEOUT` | the same + `QUEUESTATUS=TIMEOUT` | timed_out |
//! | leave-when-empty | `EXITEMPTY` | the same + `QUEUESTATUS=LEAVEEMPTY` | leave_empty |
//! | key pressed | `EXITWITHKEY` | `QueueCallerLeave` only, no `QUEUESTATUS` | queue_log: exit_with_key; AMI: left_unspecified (nothing tells it apart) |
//! | answered, `c` option (`CONTINUE`) | `CONNECT` | `AgentConnect`; `QUEUESTATUS=CONTINUE` later | answered |
//! | refused: `FULL` / `JOINEMPTY` | nothing (Asterisk 22 logs no line) | `QUEUESTATUS` only | AMI: full / join_empty; queue_log: not seen |
//!
//! ## Not mapped, and why
//!
//! - `BlindTransfer` / `AttendedTransfer` produce no event of their own: they
//!   are remembered per `Linkedid` and give the kind and target of the
//!   `AgentComplete` with `Reason: transfer` that follows (blind target
//!   `Extension@Context`, e.g. `700@transfer`; attended target the
//!   destination bridge id, as queue_log's `BRIDGE|<id>`). **A transfer made
//!   outside a queue conversation is therefore not counted.**
//! - `DialBegin`/`DialEnd` of queues ringing members, of call files and of
//!   `Originate` (no calling `Channel`) are context, not outbound calls.
//! - `Hangup` of other channels (the `;2` halves of Local channels, transfer
//!   helper channels) says nothing the engine can use.
//! - `QueueMemberStatus` (device state) only teaches member names. No event
//!   gives wrap-up: Asterisk enforces `wrapuptime` silently.
//! - `Shutdown` clears per-call state (every channel is gone). The event
//!   model has no "PBX restarted" kind, so calls open at that moment are
//!   closed downstream by the engine's timeout.
//! - Everything else (`VarSet` and `Newexten` other than the above, `Newchannel`, `Cdr`, `Bridge*`,
//!   `QueueSummary`, `QueueParams`, `OriginateResponse`, unknown `UserEvent`s
//!   as `UserEvent/<name>`, ...) is counted in
//!   [`Unparsed::by_name`](crate::Unparsed::by_name); a mapped event that
//!   lacks a header it needs (no `Queue:`, an unparsable `Score:`) in
//!   `Unparsed::malformed`. Replies to actions are not events and are not counted.
//!
//! # Local channels, `;1`/`;2` halves and `Linkedid`
//!
//! A Local channel is two channels: `;1` faces whoever dialled it, `;2` runs
//! the dialplan. In the recording each caller is `Local/<queue>@inbound-N`:
//! its `;1` half is created first, so its `Uniqueid` becomes the `Linkedid`
//! of every channel of the call (both halves, every member channel rung, the
//! transfer helper channels), across transfers and across queues. The `;2`
//! half is the channel that sits in the queue, so queue events carry its
//! `Uniqueid`, which is also the `callid` queue_log writes: the AMI `call_id`
//! of a call is therefore not queue_log's callid, but the queue leg's
//! `leg_id` is (one `Linkedid` per queue_log callid in the recording).
//! The mapper never pairs halves by name: it keys calls by `Linkedid` and
//! channels by `Uniqueid`. A member is rung through `Local/<ext>@agents-N;1`
//! (`DestUniqueid`), which is the leg of `Ringing`, `Answered` and of the
//! segment's end; `Hold` comes from that same channel.
//!
//! A `Hangup` event is emitted for the call's origin channel (`Uniqueid ==
//! Linkedid`: the caller's `;1` half, or the agent channel of an outbound
//! call) and for each channel the mapper has already used as a leg (the
//! queued channel, member channels rung, outbound dial legs), one per
//! channel, so every leg the engine has heard of gets its end. Per-call
//! state is dropped once the origin channel and every tracked leg have hung
//! up, and every map is bounded by [`AmiMapperConfig::max_tracked`].

mod framing;
mod mapper;
#[cfg(test)]
mod tests;

pub use framing::{
    AmiMessage, Banner, DEFAULT_MAX_MESSAGE_SIZE, Frame, Frames, Header, MessageKind, ParseError, ParseErrorKind,
    RecvIndex, RecvIndexError, frames, parse_banner, parse_frame, parse_message, parse_message_with_limit,
    skip_message,
};
pub use mapper::{AmiMapper, AmiMapperConfig, ExitResolution, SurveyEventConfig};
