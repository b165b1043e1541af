//! FreeSWITCH event socket (ESL, `mod_event_socket`, TCP port 8021): framing
//! of the byte stream, a sans-IO client for the agent's login and
//! subscription, and mapping of channel and `mod_callcenter` events onto
//! [`FeedEvent`](crate::FeedEvent)s.
//!
//! Checked against a real recorded stream (`tests/fixtures/freeswitch/
//! eventstream.txt`) and, for what that recording lacks, against the
//! FreeSWITCH sources: `switch_event_serialize` (`switch_event.c`) for the
//! event-plain body, `mod_callcenter.c` for which `callcenter::info` event is
//! fired when, with which headers and on which channel's data, and
//! `switch_ivr.c` for transfers. No FreeSWITCH runs on our machines, so the
//! call-centre scenarios in the tests are written from that code.
//!
//! # Framing ([`parse_frame`], [`frames`], [`parse_event`])
//!
//! - A frame is `Name: value` lines ended by one empty line; lines end in LF
//!   (CRLF accepted). Empty lines before a frame are skipped (the recording
//!   has one after each body).
//! - With `Content-Length: N`, exactly N bytes of body follow the empty
//!   line; nothing else says where a body ends (a `text/disconnect-notice`
//!   body holds line breaks, an event body holds empty lines in raw SDP).
//! - `Content-Type` tells the frame ([`ContentType`]): `auth/request`,
//!   `command/reply` (`Reply-Text: +OK ...` / `-ERR ...`), `api/response`,
//!   `text/event-plain`, `text/disconnect-notice`, `text/rude-rejection`, ...
//! - A `text/event-plain` body is itself a header block ([`EslEvent`]):
//!   values URL-encoded by `switch_event_serialize` (decoded on access with
//!   `percent-encoding`; `+` stays `+`, as FreeSWITCH's own decoder leaves
//!   it; an empty value is sent as `_undef_`), then either an empty line or,
//!   for an event with a body (`BACKGROUND_JOB`), `Content-Length: N`, an
//!   empty line and N bytes.
//! - Recordings made with decoding on (the fixture) carry raw values: a line
//!   that is not `Name: value` (a name holds no blank and no `=`, so SDP's
//!   `a=rtpmap:0 PCMU/8000` is not one) continues the previous value, and the
//!   value keeps its line breaks. An event body may also end without its
//!   empty line.
//! - Header names are looked up ASCII case-insensitively, as FreeSWITCH does.
//! - Incomplete input is [`Status::Partial`](crate::Status::Partial); a frame
//!   over the limit (8 MiB, [`DEFAULT_MAX_FRAME_SIZE`]) is
//!   [`ParseErrorKind::TooLarge`]; [`skip_frame`] resynchronises. Parsers
//!   never panic.
//!
//! # Client ([`EslClient`])
//!
//! Inbound mode: answers `auth/request` with `auth <password>\n\n`, then sends
//! `event plain <DEFAULT_EVENTS> CUSTOM callcenter::info\n\n` ([`Subscription`]),
//! reports `-ERR` replies, `text/rude-rejection` and
//! `text/disconnect-notice`, and hands every event to the caller.
//!
//! # Mapping ([`EslMapper`])
//!
//! Every event carries `source_time` = `Event-Date-Timestamp` (microseconds,
//! to ns). `call_id` is the caller's channel for queue calls (mod_callcenter's
//! `CC-Member-Session-UUID`, or the call UUID already known for that
//! channel), else the FreeSWITCH call UUID (`Channel-Call-UUID`: the a-leg's
//! UUID on every leg a bridge created). An agent channel belongs to its
//! member's call through its `cc_member_session_uuid` variable (mod_callcenter
//! sets it when it originates to the agent) or the `CC-Agent-UUID` of
//! `bridge-agent-start`. `leg_id` is the channel's `Unique-ID`, or the
//! member's channel for offers. Agents are mod_callcenter agent names
//! (`CC-Agent`, `variable_cc_agent`).
//!
//! | event | event kind | notes |
//! |---|---|---|
//! | `CHANNEL_CREATE` of an inbound a-leg | `CallOffered` | `Inbound`, or `Internal` when a directory user called (`variable_user_name`); caller `Caller-Caller-ID-Number`, called `Caller-Destination-Number` |
//! | `CHANNEL_CREATE` of an outbound leg `sofia/gateway/<gw>/...` | `CallOffered { Outbound }` | caller = the calling user's agent name (learnt, else the user), trunk = `<gw>` |
//! | `CHANNEL_ANSWER` of that leg | `DialResult { Answered }` | |
//! | its hang-up unanswered | `DialResult` | by `Hangup-Cause`: `USER_BUSY`/`CALL_REJECTED` busy, `NO_ANSWER`/`NO_USER_RESPONSE` no answer, `*_CONGESTION`, unallocated/unregistered → unavailable, `ORIGINATOR_CANCEL` → agent abandoned, else failed |
//! | `CHANNEL_HOLD` / `CHANNEL_UNHOLD` | `Hold` / `Resume` | on the channel that put the other on hold; agent when it is an agent channel |
//! | `CHANNEL_HANGUP` or `_COMPLETE` (the first) of a tracked a-leg, member or gateway leg | `Hangup { by Unknown, cause }` | cause = Q.850 number of `Hangup-Cause` |
//! | the same on a bridged agent channel | ends the conversation, see `bridge-agent-end` | `_COMPLETE`'s `variable_billmsec` (else `billsec`) is the reported talk |
//! | `callcenter::info` `member-queue-start` (`-resume`) | `QueueJoin` | caller `CC-Member-CID-Number` |
//! | `member-queue-end`, `CC-Cause: Cancel` | `QueueLeave` | `CC-Cancel-Reason`: `TIMEOUT` → timeout, `NO_AGENT_TIMEOUT` → leave-empty, `EXIT_WITH_KEY` → exit-with-key, `BREAK_OUT` → abandon when the member channel is hanging up, transfer when it is still up |
//! | `member-queue-end`, `CC-Cause: Terminated` | nothing | the answered visit's conversation ended (already said by the agent side) |
//! | `agent-offering` | `Ringing` | |
//! | `bridge-agent-start` | `Answered` | ring = `CC-Agent-Answered-Time - CC-Agent-Called-Time` (s) |
//! | `bridge-agent-end` | `Hangup` or `Transfer` (agent) | unless the agent channel's hang-up came first; `recv_bye` agent, `send_bye` caller; `BLIND_TRANSFER`/`ATTENDED_TRANSFER` cause or `recv_refer` → transfer (target: `sip_refer_to`'s user) |
//! | `bridge-agent-fail` | `OfferMissed` | `CC-Hangup-Cause`: `ORIGINATOR_CANCEL`/`LOSE_RACE`/`PICKED_OFF` canceled, `USER_BUSY`/`CALL_REJECTED` rejected, else no answer |
//! | `agent-status-change` | `AgentState` (all queues) | `Available`, `Available (On Demand)` → login + available; `On Break` → login + paused "On Break"; `Logged Out` → logout |
//!
//! Why these events (mod_callcenter, `outbound_agent_thread_run`): the
//! member's channel runs the `callcenter` application, which fires
//! `member-queue-start` with the member channel's data; for each agent tried,
//! `agent-offering` (no channel data) then either `bridge-agent-start` (agent
//! channel data, `CC-Agent-UUID`) or `bridge-agent-fail` (`CC-Hangup-Cause`
//! of the originate, `CC-Agent-Aborted-Time`). The thread then waits until
//! the agent channel is down and fires `bridge-agent-end` and `member-queue-end`
//! `Terminated`. A caller who leaves unanswered gets `member-queue-end`
//! `Cancel` with the reason. Timestamps in `CC-*-Time` headers are whole
//! seconds, so the engine works from `Event-Date-Timestamp` (wait = join to
//! answer or leave; talk = answer to the end, less hold) and reported figures
//! are given only where the PBX measures in finer units (`billmsec`).
//!
//! ## Understood, not mapped
//!
//! - `CHANNEL_PROGRESS`, `CHANNEL_PROGRESS_MEDIA`: ringing of a leg; the offer
//!   is already `agent-offering`, an outbound attempt's outcome its answer or
//!   hang-up. `HEARTBEAT`: liveness only.
//! - `agent-state-change` (`Waiting`, `Receiving`, `In a queue call`, `Idle`)
//!   and `members-count`: the call events give the same facts with the call's
//!   identity. mod_callcenter enforces `wrap-up-time` silently, so there is
//!   no wrap-up event.
//! - `CHANNEL_BRIDGE` maps nothing: it moves a tracked agent or gateway leg
//!   into its partner's call.
//! - Agent status is global in mod_callcenter (tiers are configuration, not
//!   events), so agent states name no queue.
//!
//! Not mapped, counted in [`Unparsed::by_name`](crate::Unparsed::by_name):
//! other events (`CHANNEL_DESTROY`, `CHANNEL_EXECUTE`, ...), other `CUSTOM`
//! subclasses as `CUSTOM/<subclass>`, other mod_callcenter actions as
//! `callcenter::info/<action>`. Calls that reach an agent without a queue
//! (a direct call to an extension) are not attributed to an agent. A mapped
//! event without a header it needs is `Unparsed::malformed`.
//!
//! State: one entry per tracked channel, dropped at its hang-up (a bridged
//! agent channel at `bridge-agent-end`), plus pending offers and the learnt
//! user → agent names, each bounded by [`EslMapperConfig::max_tracked`]. The
//! mapper's output depends only on its input, in order: reading a recording
//! twice gives identical events.

mod client;
mod framing;
mod mapper;

pub use client::{ClientError, ClientState, DEFAULT_CUSTOM, DEFAULT_EVENTS, EslClient, Subscription};
pub use framing::{
    ContentType, DEFAULT_MAX_FRAME_SIZE, EslEvent, EslFrame, Frames, Header, ParseError, ParseErrorKind, frames,
    parse_event, parse_frame, skip_frame,
};
pub use mapper::{CALLCENTER_SUBCLASS, EslMapper, EslMapperConfig};
