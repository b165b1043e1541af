//! Tests of AMI framing and mapping: edge cases on small inputs, then the
//! real Asterisk 22 recording checked against its ground truth.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use callkpi_core::event::{
    AgentState, DialOutcome, Direction, EventKind, HangupBy, LeaveReason, MissReason, SurveyMetric, TransferKind,
};
use proptest::prelude::*;

use super::*;
use crate::{FeedEvent, Status};

// === helpers ===

/// `text` with every `\n` turned into CRLF.
fn crlf(text: &str) -> Vec<u8> {
    text.replace('\n', "\r\n").into_bytes()
}

/// An owned copy of a frame, to compare parses of differently split input.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owned {
    Banner(String),
    Message(Vec<(Vec<u8>, Vec<u8>)>, Option<Vec<u8>>),
}

fn own(frame: &Frame<'_>) -> Owned {
    match frame {
        Frame::Banner(b) => Owned::Banner(b.line.to_owned()),
        Frame::Message(m) => Owned::Message(
            m.headers().iter().map(|h| (h.name.to_vec(), h.value.to_vec())).collect(),
            m.body().map(<[u8]>::to_vec),
        ),
    }
}

/// Feeds `chunks` one after another into a growing buffer, as a socket
/// reader would, parsing every complete frame as soon as it is there.
fn decode_stream(chunks: &[&[u8]]) -> Vec<Owned> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match parse_frame(&buf, DEFAULT_MAX_MESSAGE_SIZE) {
                Ok(Status::Complete { value, consumed }) => {
                    out.push(own(&value));
                    buf.drain(..consumed);
                }
                Ok(Status::Partial) => break,
                Err(e) => panic!("unexpected error {e}"),
            }
        }
    }
    out
}

fn parse_one(bytes: &[u8]) -> AmiMessage<'_> {
    match parse_message(bytes) {
        Ok(Status::Complete { value, .. }) => value,
        other => panic!("expected a complete message, got {other:?}"),
    }
}

/// Maps `text` (messages separated by empty lines, `\n` line ends).
fn map_text(mapper: &mut AmiMapper, text: &str) -> Vec<FeedEvent> {
    let mut text = text.trim_end_matches('\n').to_owned();
    text.push_str("\n\n");
    let bytes = crlf(&text);
    let mut out = Vec::new();
    mapper.map_bytes(&bytes, &mut out);
    out
}

fn kinds(events: &[FeedEvent]) -> Vec<&EventKind> {
    events.iter().map(|e| &e.kind).collect()
}

const T: i64 = 1_795_356_687_137_073_000;

// === framing ===

const SAMPLE: &str = "Asterisk Call Manager/11.0.0
Response: Success
ActionID: login-1
Message: Authentication accepted

Event: FullyBooted
Privilege: system,all
Status: Fully Booted

Event: QueueCallerJoin
Privilege: agent,all
Timestamp: 1795356687.137073
Channel: Local/support@inbound-00000000;2
CallerIDNum: +442078707214
CallerIDName: ACME, Inc: Billing
AccountCode: 
Uniqueid: 1795356686.1
Linkedid: 1795356686.0
Queue: support
Position: 1

Response: Follows
Privilege: Command
ActionID: cmd-1
Channel              Location             State   Application(Data)

0 active channels
--END COMMAND--

Event: VarSet
ChanVariable: A=1
ChanVariable: B=2
Variable: X
Value: a: b: c

";

#[test]
fn sample_frames_in_order() {
    let bytes = crlf(SAMPLE);
    let all: Vec<_> = frames(&bytes).collect::<Result<_, _>>().unwrap();
    assert_eq!(all.len(), 6);
    let Frame::Banner(b) = &all[0] else { panic!("banner first") };
    assert_eq!((b.line, b.version), ("Asterisk Call Manager/11.0.0", "11.0.0"));
    let Frame::Message(login) = &all[1] else { panic!() };
    assert_eq!(login.kind(), MessageKind::Response);
    assert_eq!(login.action_id().as_deref(), Some("login-1"));
    let Frame::Message(join) = &all[3] else { panic!() };
    assert_eq!(join.kind(), MessageKind::Event);
    assert_eq!(join.event().as_deref(), Some("QueueCallerJoin"));
    // Only the first colon splits; case-insensitive lookup; empty value.
    assert_eq!(join.get("calleridname").as_deref(), Some("ACME, Inc: Billing"));
    assert_eq!(join.get("AccountCode").as_deref(), Some(""));
    assert_eq!(join.get("Missing"), None);
    let Frame::Message(follows) = &all[4] else { panic!() };
    assert_eq!(follows.response().as_deref(), Some("Follows"));
    assert_eq!(follows.headers().len(), 3);
    assert_eq!(
        follows.body(),
        Some(&b"Channel              Location             State   Application(Data)\r\n\r\n0 active channels\r\n"[..])
    );
    let Frame::Message(varset) = &all[5] else { panic!() };
    let vars: Vec<_> = varset.get_all("chanvariable").collect();
    assert_eq!(vars, [&b"A=1"[..], b"B=2"]);
    assert_eq!(varset.get("Value").as_deref(), Some("a: b: c"));
}

#[test]
fn split_at_every_offset_gives_the_same_frames() {
    let bytes = crlf(SAMPLE);
    let whole = decode_stream(&[&bytes]);
    assert_eq!(whole.len(), 6);
    for i in 0..=bytes.len() {
        let (a, b) = bytes.split_at(i);
        assert_eq!(decode_stream(&[a, b]), whole, "split at {i}");
    }
    // And byte by byte.
    let singles: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(decode_stream(&singles), whole);
}

#[test]
fn bare_lf_equals_crlf() {
    let lf = SAMPLE.as_bytes();
    let crlf = crlf(SAMPLE);
    // Same frames; only the raw body keeps the line ends it was sent with.
    let strip_cr = |frames: Vec<Owned>| -> Vec<Owned> {
        frames
            .into_iter()
            .map(|f| match f {
                Owned::Message(h, body) => {
                    Owned::Message(h, body.map(|b| b.into_iter().filter(|&c| c != b'\r').collect()))
                }
                banner => banner,
            })
            .collect()
    };
    assert_eq!(decode_stream(&[lf]), strip_cr(decode_stream(&[&crlf])));
    // Mixed line ends in one message.
    let mixed = b"Event: Hold\r\nUniqueid: 1.2\nLinkedid: 1.1\r\n\n";
    let m = parse_one(mixed);
    assert_eq!(m.get("Linkedid").as_deref(), Some("1.1"));
    assert_eq!(m.headers().len(), 3);
}

#[test]
fn consumed_and_partial() {
    let bytes = b"Event: A\r\nK: v\r\n\r\nEvent: B\r\n";
    match parse_message(bytes) {
        Ok(Status::Complete { consumed, value }) => {
            assert_eq!(consumed, 18);
            assert_eq!(value.event().as_deref(), Some("A"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(parse_message(&bytes[18..]), Ok(Status::Partial));
    assert_eq!(parse_message(b""), Ok(Status::Partial));
    assert_eq!(parse_message(b"\r"), Ok(Status::Partial));
    assert_eq!(parse_message(b"Event: A\r\n\r"), Ok(Status::Partial));
    // Leading empty lines are skipped and counted.
    match parse_message(b"\r\n\nEvent: A\r\n\r\n") {
        Ok(Status::Complete { consumed, .. }) => assert_eq!(consumed, 15),
        other => panic!("{other:?}"),
    }
}

#[test]
fn follows_body_waits_for_end_command() {
    let text = crlf("Response: Follows\nPrivilege: Command\nline one: not a header\n\nline three\n--END COMMAND--\n\n");
    // Not complete until the marker and the empty line after it.
    for cut in 0..text.len() {
        assert_eq!(parse_message(&text[..cut]), Ok(Status::Partial), "cut at {cut}");
    }
    let m = parse_one(&text);
    assert_eq!(m.headers().len(), 2);
    assert_eq!(m.body(), Some(&b"line one: not a header\r\n\r\nline three\r\n"[..]));
    // Old Asterisk glues the marker to the last output line.
    let glued = b"Response: Follows\r\nPrivilege: Command\r\nNo such command--END COMMAND--\r\n\r\nEvent: X\r\n\r\n";
    match parse_message(glued) {
        Ok(Status::Complete { value, consumed }) => {
            assert_eq!(value.body(), Some(&b"No such command"[..]));
            assert_eq!(&glued[consumed..], b"Event: X\r\n\r\n");
        }
        other => panic!("{other:?}"),
    }
    // A Follows with no body ends at the empty line.
    let empty = parse_one(b"Response: Follows\r\nActionID: 7\r\n\r\n");
    assert_eq!(empty.body(), None);
}

#[test]
fn free_text_outside_follows_is_body() {
    let m = parse_one(b"Event: Odd\r\njust text\r\nKey: after\r\n\r\n");
    assert_eq!(m.headers().len(), 1);
    assert_eq!(m.body(), Some(&b"just text\r\nKey: after\r\n"[..]));
}

#[test]
fn non_utf8_is_kept_and_decoded_lossily() {
    let bytes = b"Event: UserEvent\r\nCallerIDName: Jos\xe9 M\xfcller\r\nQueue: support\r\n\r\n";
    let m = parse_one(bytes);
    assert_eq!(m.get_bytes("CallerIDName"), Some(&b"Jos\xe9 M\xfcller"[..]));
    assert_eq!(m.get("CallerIDName").as_deref(), Some("Jos\u{fffd} M\u{fffd}ller"));
    assert_eq!(m.get("Queue").as_deref(), Some("support"));
    // Valid UTF-8 is borrowed, not copied.
    assert!(matches!(m.get("Queue"), Some(std::borrow::Cow::Borrowed(_))));
    let utf8 = "Event: X\r\nCallerIDName: 李雷 Ιωάννης\r\n\r\n";
    assert_eq!(parse_one(utf8.as_bytes()).get("CallerIDName").as_deref(), Some("李雷 Ιωάννης"));
}

#[test]
fn oversize_message_is_an_error_and_resyncs() {
    let mut big = b"Event: Big\r\n".to_vec();
    for i in 0..20 {
        big.extend_from_slice(format!("ChanVariable: V{i}=xxxxxxxxxxxxxxxx\r\n").as_bytes());
    }
    big.extend_from_slice(b"\r\nEvent: Small\r\n\r\n");
    let err = parse_message_with_limit(&big, 64).unwrap_err();
    assert_eq!(err, ParseError { kind: ParseErrorKind::TooLarge, offset: 64 });
    // Shorter than the limit without an end: just partial.
    assert_eq!(parse_message_with_limit(&big[..40], 64), Ok(Status::Partial));
    // Resynchronise at the next empty line.
    let Status::Complete { consumed, .. } = skip_message(&big) else { panic!() };
    assert_eq!(parse_one(&big[consumed..]).event().as_deref(), Some("Small"));
    // The iterator reports the error with its absolute offset and goes on.
    let got: Vec<_> = frames(&big).with_limit(64).collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], Err(ParseError { kind: ParseErrorKind::TooLarge, offset: 64 }));
    assert!(matches!(&got[1], Ok(Frame::Message(m)) if m.event().as_deref() == Some("Small")));
    // Endless empty lines cannot grow the buffer either.
    assert!(parse_message_with_limit(&[b'\n'; 100], 64).is_err());
}

#[test]
fn banner_rules() {
    let Ok(Status::Complete { value, consumed }) = parse_banner(b"Asterisk Call Manager/2.10.6\r\nResponse: x") else {
        panic!()
    };
    assert_eq!((value.version, consumed), ("2.10.6", 30));
    assert_eq!(parse_banner(b"Asterisk Call Man"), Ok(Status::Partial));
    assert_eq!(parse_banner(b"HTTP/1.1 200 OK\r\n").unwrap_err().kind, ParseErrorKind::InvalidBanner);
    assert_eq!(parse_banner(&[b'A'; 0]), Ok(Status::Partial));
    let long = [b"Asterisk Call Manager/".as_slice(), &[b'9'; 300]].concat();
    assert_eq!(parse_banner(&long).unwrap_err().kind, ParseErrorKind::TooLarge);
    // parse_frame tells the banner from a message, even split early.
    assert_eq!(parse_frame(b"As", 1024), Ok(Status::Partial));
    assert!(matches!(parse_frame(b"Action: x\r\n\r\n", 1024), Ok(Status::Complete { value: Frame::Message(_), .. })));
    // A banner again later (a second connection in one transcript) is recognised.
    let two = crlf("Asterisk Call Manager/11.0.0\nEvent: A\n\nAsterisk Call Manager/11.0.0\nEvent: B\n\n");
    let kinds: Vec<_> = frames(&two).map(|f| matches!(f, Ok(Frame::Banner(_)))).collect();
    assert_eq!(kinds, [true, false, true, false]);
}

#[test]
fn truncated_tail_is_reported_once() {
    let bytes = b"Event: A\r\n\r\nEvent: B\r\nKey: v";
    let got: Vec<_> = frames(bytes).collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1], Err(ParseError { kind: ParseErrorKind::Truncated, offset: 12 }));
    // A tail of empty lines is fine.
    assert_eq!(frames(b"Event: A\r\n\r\n\r\n\r\n").count(), 1);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_frame(&bytes, 512);
        let _ = parse_message(&bytes);
        let _ = parse_banner(&bytes);
        let _ = skip_message(&bytes);
        let mut mapper = AmiMapper::default();
        let mut out = Vec::new();
        mapper.map_bytes(&bytes, &mut out);
    }

    /// Inputs made of AMI-ish pieces reach the interesting paths; any split
    /// of them must frame like the whole.
    #[test]
    fn amiish_bytes_frame_the_same_when_split(
        parts in proptest::collection::vec(
            prop::sample::select(vec![
                "Event: ", "Response: Follows\r\n", "--END COMMAND--", "Asterisk Call Manager/1\r\n",
                "\r\n", "\n", "\r", ": ", ":", "Key", "Linkedid: 1.1\r\n", "Uniqueid: 1.1\r\n",
                "QueueCallerJoin\r\n", "AgentConnect\r\n", "Hangup\r\n", "DialBegin\r\n", "Queue: q\r\n",
                "Timestamp: 1.5\r\n", "\u{e9}", "x",
            ]),
            0..80,
        ),
        split in 0usize..4096,
    ) {
        let bytes: Vec<u8> = parts.concat().into_bytes();
        let split = split.min(bytes.len());
        let whole = decode_lenient(&[&bytes]);
        let (a, b) = bytes.split_at(split);
        prop_assert_eq!(decode_lenient(&[a, b]), whole);
        let mut mapper = AmiMapper::default();
        let mut out = Vec::new();
        mapper.map_bytes(&bytes, &mut out);
    }
}

/// Like [`decode_stream`], but an error ends decoding instead of panicking.
fn decode_lenient(chunks: &[&[u8]]) -> Vec<Result<Owned, ParseErrorKind>> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match parse_frame(&buf, 256) {
                Ok(Status::Complete { value, consumed }) => {
                    out.push(Ok(own(&value)));
                    buf.drain(..consumed);
                }
                Ok(Status::Partial) => break,
                Err(e) => {
                    out.push(Err(e.kind));
                    return out;
                }
            }
        }
    }
    out
}

// === mapping, small inputs ===

const JOIN: &str = "Event: QueueCallerJoin
Timestamp: 1795356687.137073
Channel: Local/support@inbound-00000000;2
CallerIDNum: 0639987952
Uniqueid: 1795356686.1
Linkedid: 1795356686.0
Queue: support
Position: 1
Count: 1
";

const CALLED: &str = "Event: AgentCalled
Timestamp: 1795356687.137262
Channel: Local/support@inbound-00000000;2
Uniqueid: 1795356686.1
Linkedid: 1795356686.0
DestChannel: Local/1001@agents-00000001;1
DestUniqueid: 1795356687.2
DestLinkedid: 1795356686.0
Queue: support
Interface: Local/1001@agents/n
MemberName: Alice Martin
";

const CONNECT: &str = "Event: AgentConnect
Timestamp: 1795356691.142530
Channel: Local/support@inbound-00000000;2
Uniqueid: 1795356686.1
Linkedid: 1795356686.0
DestChannel: Local/1001@agents-00000001;1
DestUniqueid: 1795356687.2
Queue: support
Interface: Local/1001@agents/n
MemberName: Alice Martin
HoldTime: 4
RingTime: 4
";

#[test]
fn queue_join_abandon_leave() {
    let mut m = AmiMapper::default();
    let ev = map_text(&mut m, JOIN);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].call_id, "1795356686.0");
    assert_eq!(ev[0].leg_id, "1795356686.1");
    assert_eq!(ev[0].source_time, Some(T));
    assert_eq!(
        ev[0].kind,
        EventKind::QueueJoin { queue: "support".into(), caller: Some("0639987952".into()), position: Some(1) }
    );
    // The caller hangs up: its channel gets a hang-up request, then app_queue
    // reports the abandon and the leave.
    let ev = map_text(
        &mut m,
        "Event: HangupRequest\nUniqueid: 1795356686.1\nLinkedid: 1795356686.0\n\n\
         Event: QueueCallerAbandon\nUniqueid: 1795356686.1\nLinkedid: 1795356686.0\nQueue: support\n\
         Position: 1\nOriginalPosition: 4\nHoldTime: 23\n\n\
         Event: QueueCallerLeave\nUniqueid: 1795356686.1\nLinkedid: 1795356686.0\nQueue: support\nPosition: 1\n",
    );
    assert_eq!(
        kinds(&ev),
        [
            &EventKind::QueueLeave {
                queue: "support".into(),
                reason: LeaveReason::Unspecified,
                reported_wait_ms: None
            },
            &EventKind::QueueLeave {
                queue: "support".into(),
                reason: LeaveReason::Abandon,
                reported_wait_ms: Some(23_000)
            },
        ]
    );
    assert_eq!(ev[1].source_time, None, "no Timestamp header, no source time");
    // No Queue header: malformed, not fatal.
    assert!(map_text(&mut m, "Event: QueueCallerJoin\nUniqueid: 1.1\n").is_empty());
    assert_eq!(m.unparsed().malformed, 1);
}

/// The events app_queue sends when a caller leaves Queue() without an agent
/// (apps/app_queue.c, Asterisk 22): `QueueCallerAbandon` for abandons,
/// timeouts and leave-when-empty alike, `QueueCallerLeave`, then, when the
/// exit has a result, `VarSet QUEUESTATUS`.
fn exit_events(status: Option<&str>, hangup_request: bool) -> String {
    let mut text = String::from(JOIN);
    text.push('\n');
    if hangup_request {
        text.push_str("Event: HangupRequest\nUniqueid: 1795356686.1\nLinkedid: 1795356686.0\n\n");
    }
    text.push_str(
        "Event: QueueCallerAbandon\nUniqueid: 1795356686.1\nLinkedid: 1795356686.0\nQueue: support\n\
         Position: 1\nOriginalPosition: 1\nHoldTime: 25\n\n\
         Event: VarSet\nUniqueid: 1795356686.1\nLinkedid: 1795356686.0\nVariable: QUEUENAME\nValue: support\n\n\
         Event: QueueCallerLeave\nUniqueid: 1795356686.1\nLinkedid: 1795356686.0\nQueue: support\nPosition: 1\n\n",
    );
    if let Some(status) = status {
        text.push_str(&format!(
            "Event: VarSet\nUniqueid: 1795356686.1\nLinkedid: 1795356686.0\nVariable: QUEUESTATUS\nValue: {status}\n\n"
        ));
    }
    text
}

fn exit_reason(events: &[FeedEvent]) -> Vec<LeaveReason> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::QueueLeave { reason, .. } if *reason != LeaveReason::Unspecified => Some(*reason),
            _ => None,
        })
        .collect()
}

#[test]
fn queue_exits_are_told_apart_by_queuestatus() {
    for (status, want) in
        [("TIMEOUT", LeaveReason::Timeout), ("LEAVEEMPTY", LeaveReason::LeaveEmpty), ("CONTINUE", LeaveReason::Abandon)]
    {
        let mut m = AmiMapper::default();
        let ev = map_text(&mut m, &exit_events(Some(status), false));
        assert_eq!(exit_reason(&ev), [want], "{status}");
        let r = m.exit_resolution();
        assert!(r.varset_seen);
        assert_eq!((r.by_queuestatus, r.by_hangup_request), (1, 0), "{status}");
        // The wait is the one QueueCallerAbandon reported.
        assert!(ev.iter().any(|e| matches!(
            e.kind,
            EventKind::QueueLeave { reported_wait_ms: Some(25_000), reason, .. } if reason == want
        )));
    }
}

#[test]
fn queue_exits_without_varset_fall_back_to_the_hangup_request() {
    // A caller who hung up: the hang-up request came while queued.
    let mut m = AmiMapper::default();
    let ev = map_text(&mut m, &exit_events(None, true));
    assert_eq!(exit_reason(&ev), [LeaveReason::Abandon]);
    assert_eq!(m.exit_resolution().by_hangup_request, 1);
    // No hang-up request, but the call's origin channel hung up first (a
    // Local channel's ;1 half, or a generator that sends no requests).
    let mut m = AmiMapper::default();
    let text = exit_events(None, false).replacen(
        "Event: QueueCallerAbandon",
        "Event: Hangup\nUniqueid: 1795356686.0\nLinkedid: 1795356686.0\nCause: 16\n\nEvent: QueueCallerAbandon",
        1,
    );
    assert_eq!(exit_reason(&map_text(&mut m, &text)), [LeaveReason::Abandon]);
    // A caller let go alive (Queue() timeout), whose channel carries on: the
    // next event of the channel (here an overflow into sales) resolves it.
    let mut m = AmiMapper::default();
    let mut text = exit_events(None, false);
    text.push_str(&JOIN.replace("Queue: support", "Queue: sales"));
    let ev = map_text(&mut m, &text);
    assert_eq!(exit_reason(&ev), [LeaveReason::Timeout]);
    let join_sales = ev.iter().position(|e| matches!(&e.kind, EventKind::QueueJoin { queue, .. } if queue == "sales"));
    let timeout = ev.iter().position(|e| matches!(&e.kind, EventKind::QueueLeave { reason: LeaveReason::Timeout, .. }));
    assert!(timeout < join_sales, "the timeout is resolved before the next queue's join: {ev:?}");
    // Still pending at the end of a recording: resolved by the fallback.
    let mut m = AmiMapper::default();
    assert_eq!(exit_reason(&map_text(&mut m, &exit_events(None, false))), [LeaveReason::Timeout]);
}

#[test]
fn refused_callers_are_counted_from_queuestatus() {
    let mut m = AmiMapper::default();
    let ev = map_text(
        &mut m,
        "Event: Newexten\nUniqueid: 1795356700.5\nLinkedid: 1795356700.4\nApplication: Queue\nAppData: sales,tc,,,30\n\n\
         Event: VarSet\nUniqueid: 1795356700.5\nLinkedid: 1795356700.4\nVariable: QUEUESTATUS\nValue: JOINEMPTY\n\n\
         Event: Newexten\nUniqueid: 1795356701.5\nLinkedid: 1795356701.4\nApplication: Queue\nAppData: support\n\n\
         Event: VarSet\nUniqueid: 1795356701.5\nLinkedid: 1795356701.4\nVariable: QUEUESTATUS\nValue: FULL\n",
    );
    assert_eq!(
        kinds(&ev),
        [
            &EventKind::QueueLeave { queue: "sales".into(), reason: LeaveReason::JoinEmpty, reported_wait_ms: Some(0) },
            &EventKind::QueueLeave { queue: "support".into(), reason: LeaveReason::Full, reported_wait_ms: Some(0) },
        ]
    );
    assert_eq!(m.exit_resolution().refused, 2);
}

#[test]
fn ringing_missed_answered_completed() {
    let mut m = AmiMapper::default();
    map_text(&mut m, JOIN);
    let ev = map_text(&mut m, CALLED);
    assert_eq!(ev[0].leg_id, "1795356687.2");
    assert_eq!(ev[0].kind, EventKind::Ringing { queue: Some("support".into()), agent: "Alice Martin".into() });
    let ev = map_text(
        &mut m,
        &CALLED
            .replace("AgentCalled", "AgentRingNoAnswer")
            .replace("MemberName: Alice Martin\n", "MemberName: Alice Martin\nRingTime: 10000\n"),
    );
    assert_eq!(
        ev[0].kind,
        EventKind::OfferMissed {
            queue: Some("support".into()),
            agent: "Alice Martin".into(),
            reason: MissReason::NoAnswer,
            reported_ring_ms: Some(10_000),
        }
    );
    // The DialEnds that follow a ring-no-answer add nothing.
    let dial_end = "Event: DialEnd\nTimestamp: 1795356697.2\nChannel: Local/support@inbound-00000000;2\n\
                    Uniqueid: 1795356686.1\nLinkedid: 1795356686.0\nDestUniqueid: 1795356687.2\nDialStatus: ";
    assert!(map_text(&mut m, &format!("{dial_end}NOANSWER\n\n{dial_end}CANCEL\n")).is_empty());

    // Connect: leg is the member channel, times in ms.
    let ev = map_text(&mut m, CONNECT);
    assert_eq!(ev[0].leg_id, "1795356687.2");
    assert_eq!(
        ev[0].kind,
        EventKind::Answered {
            queue: Some("support".into()),
            agent: "Alice Martin".into(),
            reported_wait_ms: Some(4000),
            reported_ring_ms: Some(4000),
        }
    );
    // AgentComplete without DestUniqueid (as the first one of the recording)
    // still lands on the member leg.
    let complete = "Event: AgentComplete\nUniqueid: 1795356686.1\nLinkedid: 1795356686.0\nQueue: support\n\
                    Interface: Local/1001@agents/n\nMemberName: Alice Martin\nHoldTime: 4\nTalkTime: 26\nReason: ";
    let ev = map_text(&mut m, &format!("{complete}agent\n"));
    assert_eq!(ev[0].leg_id, "1795356687.2");
    assert_eq!(
        ev[0].kind,
        EventKind::Hangup {
            queue: Some("support".into()),
            agent: Some("Alice Martin".into()),
            by: HangupBy::Agent,
            cause: None,
            reported_talk_ms: Some(26_000),
        }
    );
    let ev = map_text(&mut m, &format!("{complete}caller\n"));
    assert!(matches!(ev[0].kind, EventKind::Hangup { by: HangupBy::Caller, .. }));
    assert_eq!(ev[0].leg_id, "1795356686.1", "nothing remembered any more: the caller leg");
}

/// `AgentRingNoAnswer` with `RingTime: 0` is a refusal, as queue_log's
/// `RINGNOANSWER|0` of the same ring.
#[test]
fn ring_no_answer_of_zero_ms_is_a_refusal() {
    let mut m = AmiMapper::default();
    let ev = map_text(
        &mut m,
        "Event: AgentRingNoAnswer\nUniqueid: 1.1\nLinkedid: 1.0\nQueue: support\nMemberName: Bob Nguyen\n\
         Interface: Local/1002@agents/n\nDestUniqueid: 1.2\nRingTime: 0\n\n\
         Event: AgentRingNoAnswer\nUniqueid: 1.1\nLinkedid: 1.0\nQueue: support\nMemberName: Bob Nguyen\n\
         Interface: Local/1002@agents/n\nDestUniqueid: 1.3\nRingTime: 10000\n",
    );
    let reasons: Vec<_> = ev
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::OfferMissed { reason, reported_ring_ms, .. } => Some((*reason, *reported_ring_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, [(MissReason::Rejected, Some(0)), (MissReason::NoAnswer, Some(10_000))]);
}

#[test]
fn agent_dump_and_ring_canceled() {
    let mut m = AmiMapper::default();
    map_text(&mut m, JOIN);
    map_text(&mut m, CALLED);
    let ev = map_text(
        &mut m,
        "Event: DialEnd\nTimestamp: 1795356687.665262\nUniqueid: 1795356686.1\nLinkedid: 1795356686.0\n\
         Channel: Local/support@inbound-00000000;2\nDestUniqueid: 1795356687.2\nDialStatus: CANCEL\n\n\
         Event: DialEnd\nTimestamp: 1795356687.665300\nUniqueid: 1795356686.1\nLinkedid: 1795356686.0\n\
         Channel: Local/support@inbound-00000000;2\nDestUniqueid: 1795356687.2\nDialStatus: CANCEL\n",
    );
    assert_eq!(ev.len(), 1, "Asterisk sends CANCEL twice; one miss");
    assert_eq!(
        ev[0].kind,
        EventKind::OfferMissed {
            queue: Some("support".into()),
            agent: "Alice Martin".into(),
            reason: MissReason::Canceled,
            reported_ring_ms: Some(528),
        }
    );
    let mut m = AmiMapper::default();
    map_text(&mut m, CALLED);
    let ev = map_text(
        &mut m,
        "Event: AgentDump\nTimestamp: 1795356689.137262\nUniqueid: 1795356686.1\nLinkedid: 1795356686.0\n\
         DestUniqueid: 1795356687.2\nQueue: support\nInterface: Local/1001@agents/n\nMemberName: Alice Martin\n",
    );
    assert_eq!(
        ev[0].kind,
        EventKind::OfferMissed {
            queue: Some("support".into()),
            agent: "Alice Martin".into(),
            reason: MissReason::Rejected,
            reported_ring_ms: Some(2000),
        }
    );
}

#[test]
fn transfers_take_kind_and_target_from_the_transfer_event() {
    let complete = "Event: AgentComplete\nUniqueid: 1795356686.1\nLinkedid: 1795356686.0\nQueue: support\n\
                    DestUniqueid: 1795356687.2\nMemberName: Alice Martin\nTalkTime: 17\nReason: transfer\n";
    let blind = "Event: BlindTransfer\nResult: Success\nTransfererUniqueid: 1795356687.2\n\
                 TransfererLinkedid: 1795356686.0\nTransfereeUniqueid: 1795356686.1\n\
                 TransfereeLinkedid: 1795356686.0\nIsExternal: No\nContext: transfer\nExtension: 700\n";
    let attended = "Event: AttendedTransfer\nResult: Success\nOrigTransfererLinkedid: 1795356686.0\n\
                    TransfereeLinkedid: 1795356686.0\nDestType: Bridge\n\
                    DestBridgeUniqueid: 431e145d-3d0e-40d4-88c0-4f9b38092371\n";
    let mut m = AmiMapper::default();
    map_text(&mut m, CONNECT);
    let ev = map_text(&mut m, &format!("{blind}\n{complete}"));
    assert_eq!(ev.len(), 1, "the transfer event itself maps to nothing");
    assert_eq!(
        ev[0].kind,
        EventKind::Transfer {
            kind: TransferKind::Blind,
            queue: Some("support".into()),
            agent: Some("Alice Martin".into()),
            target: "700@transfer".into(),
            reported_talk_ms: Some(17_000),
        }
    );
    let ev = map_text(&mut m, &format!("{CONNECT}\n{attended}\n{complete}"));
    assert!(matches!(&ev[1].kind, EventKind::Transfer { kind: TransferKind::Attended, target, .. }
        if target == "431e145d-3d0e-40d4-88c0-4f9b38092371"));
    // None seen: blind, target unknown. A failed transfer is not remembered.
    let ev = map_text(&mut m, &format!("{CONNECT}\n{}\n{complete}", blind.replace("Success", "Fail")));
    assert!(matches!(&ev[1].kind, EventKind::Transfer { kind: TransferKind::Blind, target, .. } if target.is_empty()));
    assert_eq!(m.unparsed().by_name.get("BlindTransfer"), None);
}

#[test]
fn hold_names_the_member() {
    let mut m = AmiMapper::default();
    map_text(&mut m, CALLED);
    let hold = "Event: Hold\nChannel: Local/1001@agents-00000001;1\nUniqueid: 1795356687.2\nLinkedid: 1795356686.0\n";
    let ev = map_text(&mut m, &format!("{hold}\n{}", hold.replace("Hold", "Unhold")));
    assert_eq!(
        kinds(&ev),
        [
            &EventKind::Hold { agent: Some("Alice Martin".into()) },
            &EventKind::Resume { agent: Some("Alice Martin".into()) }
        ]
    );
    assert_eq!(ev[0].leg_id, "1795356687.2");
    // Another channel of a known interface, not tracked as a leg.
    let ev = map_text(&mut m, "Event: Hold\nChannel: Local/1001@agents-000000ff;1\nUniqueid: 9.9\nLinkedid: 9.8\n");
    assert_eq!(ev[0].kind, EventKind::Hold { agent: Some("Alice Martin".into()) });
    // A SIP phone of the same extension.
    let ev = map_text(&mut m, "Event: Hold\nChannel: PJSIP/1001-0000000a\nUniqueid: 9.7\nLinkedid: 9.6\n");
    assert_eq!(ev[0].kind, EventKind::Hold { agent: Some("Alice Martin".into()) });
    let ev = map_text(&mut m, "Event: Hold\nChannel: PJSIP/trunk-0000000b\nUniqueid: 9.5\nLinkedid: 9.4\n");
    assert_eq!(ev[0].kind, EventKind::Hold { agent: None });
}

#[test]
fn hangups_only_for_origin_and_tracked_legs() {
    let mut m = AmiMapper::default();
    map_text(&mut m, &format!("{JOIN}\n{CALLED}\n{CONNECT}"));
    assert_eq!(m.tracked(), (2, 1));
    assert_eq!(m.call_of("1795356687.2"), Some("1795356686.0"));
    let hangup = |chan: &str, uid: &str, cause: u16| {
        format!("Event: Hangup\nChannel: {chan}\nUniqueid: {uid}\nLinkedid: 1795356686.0\nCause: {cause}\n\n")
    };
    let text = [
        hangup("Local/1001@agents-00000001;2", "1795356687.3", 16),
        hangup("Local/1001@agents-00000001;1", "1795356687.2", 16),
        hangup("Local/support@inbound-00000000;1", "1795356686.0", 0),
        hangup("Local/support@inbound-00000000;2", "1795356686.1", 16),
    ]
    .concat();
    let ev = map_text(&mut m, &text);
    let legs: Vec<_> = ev.iter().map(|e| e.leg_id.as_str()).collect();
    assert_eq!(legs, ["1795356687.2", "1795356686.0", "1795356686.1"], "the agent's ;2 half is not a leg");
    assert_eq!(
        ev[0].kind,
        EventKind::Hangup { queue: None, agent: None, by: HangupBy::Unknown, cause: Some(16), reported_talk_ms: None }
    );
    assert!(matches!(ev[1].kind, EventKind::Hangup { cause: None, .. }), "cause 0 is no cause");
    assert_eq!(m.tracked(), (0, 0), "per-call state dropped");
}

#[test]
fn member_states() {
    let mut m = AmiMapper::default();
    let member = "Queue: support\nMemberName: Carla Jiménez\nInterface: Local/1003@agents/n\n\
                  StateInterface: Local/1003@agents/n\nMembership: dynamic\nLoginTime: 1795356684\n";
    let text = format!(
        "Event: QueueMemberAdded\nTimestamp: 1795356684.784869\n{member}Paused: 0\nPausedReason: \n\n\
         Event: QueueMemberPause\nTimestamp: 1795356743.784703\n{member}Paused: 1\nPausedReason: lunch\n\n\
         Event: QueueMemberPause\nTimestamp: 1795356813.785542\n{member}Paused: 0\nPausedReason: \n\n\
         Event: QueueMemberRemoved\nTimestamp: 1795356938.784559\n{member}Paused: 0\n\n\
         Event: QueueMemberAdded\nTimestamp: 1795356940\n{member}Paused: 1\nPausedReason: training\n"
    );
    let ev = map_text(&mut m, &text);
    let states: Vec<_> = ev
        .iter()
        .map(|e| match &e.kind {
            EventKind::AgentState { agent, queue, state } => {
                assert_eq!(
                    (agent.as_str(), queue.as_deref(), e.call_id.as_str()),
                    ("Carla Jiménez", Some("support"), "")
                );
                state.clone()
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        states,
        [
            AgentState::Login,
            AgentState::Paused { reason: "lunch".into() },
            AgentState::Available,
            AgentState::Logout,
            AgentState::Login,
            AgentState::Paused { reason: "training".into() },
        ]
    );
    assert_eq!(ev[0].source_time, Some(1_795_356_684_784_869_000));
    assert_eq!(m.member_name("Local/1003@agents-0000002f;1"), Some("Carla Jiménez"));
}

/// Asterisk 12+ agents (app_agent_pool): `AgentLogin`/`AgentLogoff` give
/// presence, and pauses with a reason give pause time, through the engine.
#[test]
fn agent_login_logoff_and_pauses_make_login_and_pause_time() {
    let mut m = AmiMapper::default();
    let t = |s: i64| 1_795_356_000 + s;
    let text = format!(
        "Event: QueueMemberAdded\nTimestamp: {}.0\nQueue: support\nInterface: Agent/1001\nMemberName: Alice Martin\nPaused: 0\n\n\
         Event: AgentLogin\nTimestamp: {}.0\nChannel: PJSIP/1001-00000001\nUniqueid: 9.1\nLinkedid: 9.1\nAgent: 1001\n\n\
         Event: QueueMemberPause\nTimestamp: {}.0\nQueue: support\nInterface: Agent/1001\nMemberName: Alice Martin\nPaused: 1\nPausedReason: lunch\n\n\
         Event: QueueMemberPause\nTimestamp: {}.0\nQueue: support\nInterface: Agent/1001\nMemberName: Alice Martin\nPaused: 0\n\n\
         Event: AgentLogoff\nTimestamp: {}.0\nChannel: PJSIP/1001-00000001\nUniqueid: 9.1\nLinkedid: 9.1\nAgent: 1001\nLogintime: 900\n\n\
         Event: AgentLogin\nTimestamp: {}.0\nAgent: 2002\n\n\
         Event: AgentLogoff\nTimestamp: {}.0\nLogintime: 5\n",
        t(0),
        t(0),
        t(300),
        t(600),
        t(900),
        t(910),
        t(915),
    );
    let ev = map_text(&mut m, &text);
    let states: Vec<(String, Option<String>, AgentState)> = ev
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::AgentState { agent, queue, state } => Some((agent.clone(), queue.clone(), state.clone())),
            _ => None,
        })
        .collect();
    let s = |a: &str, q: Option<&str>, st: AgentState| (a.to_owned(), q.map(str::to_owned), st);
    assert_eq!(
        states,
        [
            s("Alice Martin", Some("support"), AgentState::Login),
            s("Alice Martin", None, AgentState::Login),
            s("Alice Martin", Some("support"), AgentState::Paused { reason: "lunch".into() }),
            s("Alice Martin", Some("support"), AgentState::Available),
            s("Alice Martin", None, AgentState::Logout),
            // an agent with no queue membership seen: named by its id
            s("2002", None, AgentState::Login),
        ]
    );
    assert_eq!(m.unparsed().malformed, 1, "an AgentLogoff without Agent: is malformed");
}

#[test]
fn queue_status_members_are_state_assertions() {
    let mut m = AmiMapper::default();
    let ev = map_text(
        &mut m,
        "Event: QueueMember\nQueue: support\nName: Bob Nguyen\nLocation: Local/1002@agents/n\n\
         StateInterface: Local/1002@agents/n\nMembership: static\nLastPause: 1795356743\n\
         LoginTime: 1795356677\nPaused: 1\nPausedReason: lunch\nActionID: qstatus-1\n",
    );
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0].source_time, Some(1_795_356_677_000_000_000));
    assert_eq!(
        ev[0].kind,
        EventKind::AgentState { agent: "Bob Nguyen".into(), queue: Some("support".into()), state: AgentState::Login }
    );
    assert_eq!(ev[1].source_time, Some(1_795_356_743_000_000_000));
    assert!(
        matches!(&ev[1].kind, EventKind::AgentState { state: AgentState::Paused { reason }, .. } if reason == "lunch")
    );
    assert_eq!(m.member_name("Local/1002@agents/n"), Some("Bob Nguyen"));
}

const OUT_BEGIN: &str = "Event: DialBegin
Timestamp: 1795356833.786302
Channel: Local/1001@agents-00000036;1
CallerIDNum: 1001
Uniqueid: 1795356833.108
Linkedid: 1795356833.108
DestChannel: Local/0611111119@pstn-00000037;1
DestContext: pstn
DestExten: 0611111119
DestUniqueid: 1795356833.110
DialString: 0611111119@pstn
";

#[test]
fn outbound_dial() {
    let mut m = AmiMapper::default();
    // Names learnt from the QueueStatus reply.
    map_text(&mut m, "Event: QueueMember\nQueue: support\nName: Alice Martin\nLocation: Local/1001@agents/n\n");
    let ev = map_text(&mut m, OUT_BEGIN);
    assert_eq!((ev[0].call_id.as_str(), ev[0].leg_id.as_str()), ("1795356833.108", "1795356833.110"));
    assert_eq!(
        ev[0].kind,
        EventKind::CallOffered {
            direction: Direction::Outbound,
            caller: "Alice Martin".into(),
            called: "0611111119".into(),
            trunk: Some("pstn".into()),
        }
    );
    // The real DialEnd of an answered outbound call has no DestExten.
    let end = "Event: DialEnd\nChannel: Local/1001@agents-00000036;1\nUniqueid: 1795356833.108\n\
               Linkedid: 1795356833.108\nDestUniqueid: 1795356833.110\nDestContext: pstn\nDialStatus: ";
    let ev = map_text(&mut m, &format!("{end}NOANSWER\n\n{end}CANCEL\n"));
    assert_eq!(ev.len(), 1, "one result per dial");
    assert_eq!(
        ev[0].kind,
        EventKind::DialResult {
            agent: Some("Alice Martin".into()),
            dialled: "0611111119".into(),
            trunk: Some("pstn".into()),
            outcome: DialOutcome::NoAnswer,
            cause: None,
        }
    );
    for (status, outcome) in [
        ("ANSWER", DialOutcome::Answered),
        ("BUSY", DialOutcome::Busy),
        ("CONGESTION", DialOutcome::Congestion),
        ("CHANUNAVAIL", DialOutcome::Unavailable),
        ("CANCEL", DialOutcome::AgentAbandoned),
        ("ABORT", DialOutcome::Failed),
    ] {
        let mut m = AmiMapper::default();
        let ev = map_text(&mut m, &format!("{OUT_BEGIN}\n{end}{status}\n"));
        assert!(matches!(ev[1].kind, EventKind::DialResult { outcome: o, .. } if o == outcome), "{status}");
        // Unknown member: the CallerIDNum names the agent.
        assert!(matches!(&ev[0].kind, EventKind::CallOffered { caller, .. } if caller == "1001"));
    }
}

#[test]
fn dials_that_are_not_outbound() {
    let mut m = AmiMapper::default();
    // A queue ringing a member.
    map_text(&mut m, CALLED);
    let queue_dial = "Event: DialBegin\nChannel: Local/support@inbound-00000000;2\nUniqueid: 1795356686.1\n\
                      Linkedid: 1795356686.0\nDestChannel: Local/1001@agents-00000001;1\nDestContext: agents\n\
                      DestExten: 1001\nDestUniqueid: 1795356687.2\n";
    assert!(map_text(&mut m, queue_dial).is_empty());
    // A call file or Originate (no calling channel), even into pstn.
    assert!(map_text(&mut m, &OUT_BEGIN.replace("Channel: Local/1001@agents-00000036;1\n", "")).is_empty());
    // A queue member reached through the pstn context is still a queue offer.
    let mut m = AmiMapper::default();
    map_text(&mut m, &CALLED.replace("1795356687.2", "1795356833.110"));
    assert!(map_text(&mut m, OUT_BEGIN).is_empty());
    // A trunk named in the config.
    let mut m = AmiMapper::new(AmiMapperConfig { outbound_trunks: vec!["PJSIP/ovh".into()], ..Default::default() });
    let ev = map_text(
        &mut m,
        "Event: DialBegin\nChannel: PJSIP/1001-00000001\nCallerIDNum: 1001\nUniqueid: 5.1\nLinkedid: 5.1\n\
         DestChannel: PJSIP/ovh-00000002\nDestContext: from-internal\nDestExten: s\nDestUniqueid: 5.2\n\
         DialString: 0622222222@ovh\n",
    );
    assert_eq!(
        ev[0].kind,
        EventKind::CallOffered {
            direction: Direction::Outbound,
            caller: "1001".into(),
            called: "0622222222".into(),
            trunk: Some("PJSIP/ovh".into()),
        }
    );
    assert_eq!(m.unparsed().by_name.get("DialBegin"), None);
}

#[test]
fn user_events() {
    let mut m = AmiMapper::default();
    map_text(&mut m, CONNECT);
    let survey = "Event: UserEvent\nUniqueid: 1795356686.1\nLinkedid: 1795356686.0\nUserEvent: SurveyResult\n";
    let ev = map_text(&mut m, &format!("{survey}Queue: support\nAgent: Alice Martin\nScore: 2\n"));
    assert_eq!(
        ev[0].kind,
        EventKind::SurveyAnswer {
            metric: SurveyMetric::Csat,
            score: 2.0,
            scale_min: 1.0,
            scale_max: 5.0,
            queue: Some("support".into()),
            agent: Some("Alice Martin".into()),
        }
    );
    // Without Queue/Agent: the call's last connected agent.
    let ev = map_text(&mut m, &format!("{survey}Score: 5\n"));
    assert!(matches!(&ev[0].kind, EventKind::SurveyAnswer { queue: Some(q), agent: Some(a), .. }
        if q == "support" && a == "Alice Martin"));
    // Off the scale, or not a number: malformed.
    assert!(map_text(&mut m, &format!("{survey}Score: 9\n\n{survey}Score: x\n")).is_empty());
    assert_eq!(m.unparsed().malformed, 2);

    let ev = map_text(
        &mut m,
        "Event: UserEvent\nUniqueid: 1795356686.1\nLinkedid: 1795356686.0\nUserEvent: Disposition\n\
         Code: BILLING-OK\nResolved: 1\n",
    );
    assert_eq!(
        ev[0].kind,
        EventKind::Disposition { resolved: true, code: "BILLING-OK".into(), agent: Some("Alice Martin".into()) }
    );
    assert!(map_text(&mut m, "Event: UserEvent\nUserEvent: Hello\n").is_empty());
    assert_eq!(m.unparsed().by_name.get("UserEvent/Hello"), Some(&1));

    // Configurable names and scales.
    let config = AmiMapperConfig {
        survey_events: vec![SurveyEventConfig {
            name: "Nps".into(),
            metric: SurveyMetric::Nps,
            scale_min: 0.0,
            scale_max: 10.0,
        }],
        disposition_events: vec!["Wrap".into()],
        ..Default::default()
    };
    let mut m = AmiMapper::new(config);
    let ev = map_text(
        &mut m,
        "Event: UserEvent\nUserEvent: Nps\nScore: 0\n\nEvent: UserEvent\nUserEvent: Wrap\nResolved: no\n",
    );
    assert!(matches!(ev[0].kind, EventKind::SurveyAnswer { metric: SurveyMetric::Nps, score: 0.0, .. }));
    assert!(matches!(&ev[1].kind, EventKind::Disposition { resolved: false, code, agent: None } if code.is_empty()));
}

#[test]
fn responses_are_not_counted_and_other_events_are() {
    let mut m = AmiMapper::default();
    let ev = map_text(
        &mut m,
        "Asterisk Call Manager/11.0.0\nResponse: Success\nActionID: 1\n\n\
         Event: VarSet\nVariable: A\n\nEvent: VarSet\nVariable: B\n\nEvent: Newexten\n\n\
         Event: OriginateResponse\nResponse: Success\nActionID: drv-32\n",
    );
    assert!(ev.is_empty());
    let by_name: Vec<_> = m.unparsed().by_name.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(by_name, [("Newexten", 1), ("OriginateResponse", 1), ("VarSet", 2)]);
    assert_eq!(m.unparsed().malformed, 0);
}

#[test]
fn default_config_is_documented() {
    let c = AmiMapperConfig::default();
    assert_eq!(c.outbound_contexts, ["pstn", "outbound"]);
    assert!(c.outbound_trunks.is_empty());
    assert_eq!(c.survey_events, [SurveyEventConfig::default()]);
    assert_eq!(
        (
            c.survey_events[0].name.as_str(),
            c.survey_events[0].metric,
            c.survey_events[0].scale_min,
            c.survey_events[0].scale_max
        ),
        ("SurveyResult", SurveyMetric::Csat, 1.0, 5.0)
    );
    assert_eq!(c.disposition_events, ["Disposition"]);
    assert_eq!(c.max_tracked, 65_536);
}

#[test]
fn state_is_bounded() {
    let mut m = AmiMapper::new(AmiMapperConfig { max_tracked: 4, ..Default::default() });
    for i in 0..10 {
        map_text(&mut m, &format!("Event: QueueCallerJoin\nUniqueid: {i}.1\nLinkedid: {i}.0\nQueue: q\n"));
    }
    assert!(m.tracked().0 <= 4 && m.tracked().1 <= 4);
    assert!(m.evictions() >= 2);
}

// === the real recording ===

const RUN_A: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/asterisk/run-a");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{RUN_A}/{name}")).unwrap_or_else(|e| panic!("{RUN_A}/{name}: {e}"))
}

fn truth() -> serde_json::Value {
    serde_json::from_slice(&fixture("truth.json")).unwrap()
}

/// queue_log lines as fields: epoch, callid, queue, agent, verb, data...
fn queue_log() -> Vec<Vec<String>> {
    String::from_utf8(fixture("queue_log"))
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect()
}

struct Recording {
    events: Vec<FeedEvent>,
    mapper: AmiMapper,
}

fn recording() -> Recording {
    let mut mapper = AmiMapper::default();
    let mut events = Vec::new();
    mapper.map_bytes(&fixture("ami.log"), &mut events);
    Recording { events, mapper }
}

#[test]
fn recording_frames_cleanly() {
    let bytes = fixture("ami.log");
    let mut banners = 0;
    let mut by_event: BTreeMap<String, u64> = BTreeMap::new();
    let mut responses = 0;
    for frame in frames(&bytes) {
        match frame.expect("the real transcript frames without error") {
            Frame::Banner(b) => {
                banners += 1;
                assert_eq!(b.version, "11.0.0");
            }
            Frame::Message(m) => match m.kind() {
                MessageKind::Event => *by_event.entry(m.event().unwrap().into_owned()).or_default() += 1,
                MessageKind::Response => responses += 1,
                MessageKind::Unknown => panic!("neither event nor response: {m:?}"),
            },
        }
    }
    assert_eq!((banners, responses), (1, 11));
    assert_eq!(by_event.values().sum::<u64>(), 9022);
    let truth = truth();
    for (name, n) in truth["ami_event_counts_for_cross_check"].as_object().unwrap() {
        if let Some(n) = n.as_u64() {
            assert_eq!(by_event.get(name).copied().unwrap_or(0), n, "{name}");
        }
    }
    // Split into the reads the recorder saw: same frames.
    let index = String::from_utf8(fixture("ami.recv_index.tsv")).unwrap();
    let chunks: Vec<&[u8]> = index
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t').skip(1).map(|x| x.parse::<usize>().ok());
            let (off, n) = (f.next()??, f.next()??);
            bytes.get(off..off + n)
        })
        .collect();
    assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), bytes.len());
    assert_eq!(decode_stream(&chunks), decode_stream(&[&bytes]));
}

#[test]
fn recording_counts_agree_with_truth() {
    let Recording { events, mapper } = recording();
    assert_eq!(mapper.unparsed().malformed, 0);
    assert_eq!(mapper.unparsed().by_name.get("VarSet"), Some(&4579));
    assert!(!mapper.unparsed().by_name.keys().any(|k| k.starts_with("UserEvent")));
    assert_eq!(mapper.tracked(), (0, 0), "every call ended, every state dropped");
    assert_eq!(mapper.evictions(), 0);

    let mut n: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &events {
        let key = match &e.kind {
            EventKind::QueueJoin { .. } => "join",
            EventKind::QueueLeave { reason: LeaveReason::Abandon, .. } => "abandon",
            EventKind::QueueLeave { reason: LeaveReason::Unspecified, .. } => "leave",
            EventKind::Ringing { .. } => "ringing",
            EventKind::Answered { .. } => "answered",
            EventKind::OfferMissed { reason: MissReason::NoAnswer, .. } => "noanswer",
            EventKind::OfferMissed { reason: MissReason::Canceled, .. } => "canceled",
            EventKind::Hangup { by: HangupBy::Agent, .. } => "complete_agent",
            EventKind::Hangup { by: HangupBy::Caller, .. } => "complete_caller",
            EventKind::Hangup { agent: None, .. } => "hangup",
            EventKind::Transfer { kind: TransferKind::Blind, .. } => "blind",
            EventKind::Transfer { kind: TransferKind::Attended, .. } => "attended",
            EventKind::Hold { .. } => "hold",
            EventKind::Resume { .. } => "resume",
            EventKind::SurveyAnswer { .. } => "survey",
            EventKind::CallOffered { direction: Direction::Outbound, .. } => "outbound",
            EventKind::DialResult { .. } => "dial_result",
            EventKind::AgentState { .. } => "agent_state",
            other => panic!("unexpected {other:?}"),
        };
        *n.entry(key).or_default() += 1;
        if !matches!(e.kind, EventKind::AgentState { .. }) {
            assert!(e.source_time.is_some() && !e.call_id.is_empty() && !e.leg_id.is_empty(), "{e:?}");
        }
    }
    let expected = BTreeMap::from([
        ("join", 51),
        ("abandon", 12),
        ("leave", 51),
        ("ringing", 48),
        ("answered", 39),
        ("noanswer", 6),
        ("canceled", 3),
        ("complete_agent", 29),
        ("complete_caller", 5),
        ("blind", 2),
        ("attended", 3),
        ("hold", 5),
        ("resume", 2),
        ("survey", 21),
        ("outbound", 2),
        ("dial_result", 2),
        // 49 inbound + 2 outbound origin channels, 49 queued channels,
        // 48 member channels rung, 2 outbound dial legs.
        ("hangup", 150),
        // 8 QueueMember + Carla added/removed + Bob paused/unpaused.
        ("agent_state", 12),
    ]);
    assert_eq!(n, expected);

    // Per agent: connects, talk seconds, ring-no-answer ms as queue_log says.
    let truth = truth();
    let mut per_agent: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for e in &events {
        match &e.kind {
            EventKind::Answered { agent, .. } => per_agent.entry(agent.clone()).or_default().0 += 1,
            EventKind::Hangup { agent: Some(agent), reported_talk_ms: Some(t), .. }
            | EventKind::Transfer { agent: Some(agent), reported_talk_ms: Some(t), .. } => {
                per_agent.entry(agent.clone()).or_default().1 += t / 1000;
            }
            EventKind::OfferMissed { agent, reason: MissReason::NoAnswer, reported_ring_ms: Some(r), .. } => {
                per_agent.entry(agent.clone()).or_default().2 += r;
            }
            _ => {}
        }
    }
    for (agent, t) in truth["agents"].as_object().unwrap() {
        let got = per_agent.get(agent).copied().unwrap_or_default();
        let want = (
            t["connects"].as_u64().unwrap(),
            t["talk_seconds"].as_u64().unwrap(),
            t["ring_no_answer_ms_total"].as_u64().unwrap(),
        );
        assert_eq!(got, want, "{agent}");
    }
}

#[test]
fn recording_agent_states() {
    let Recording { events, .. } = recording();
    let states: Vec<(String, Option<String>, AgentState, i64)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::AgentState { agent, queue, state } => {
                Some((agent.clone(), queue.clone(), state.clone(), e.source_time.unwrap() / 1_000_000_000))
            }
            _ => None,
        })
        .collect();
    let carla: Vec<_> = states.iter().filter(|s| s.0 == "Carla Jiménez").map(|s| (s.2.clone(), s.3)).collect();
    assert_eq!(carla, [(AgentState::Login, 1_795_356_684), (AgentState::Logout, 1_795_356_938)]);
    let bob: Vec<_> = states
        .iter()
        .filter(|s| s.0 == "Bob Nguyen" && s.1.as_deref() == Some("support") && s.2 != AgentState::Login)
        .map(|s| (s.2.clone(), s.3))
        .collect();
    assert_eq!(
        bob,
        [(AgentState::Paused { reason: "lunch".into() }, 1_795_356_743), (AgentState::Available, 1_795_356_813)]
    );
    // QueueStatus at start and end: every static member logged in at QUEUESTART time.
    let logins: BTreeSet<_> = states
        .iter()
        .filter(|s| s.2 == AgentState::Login && s.3 == 1_795_356_677)
        .map(|s| (s.0.as_str(), s.1.as_deref().unwrap()))
        .collect();
    assert_eq!(
        logins,
        BTreeSet::from([
            ("Alice Martin", "support"),
            ("Bob Nguyen", "support"),
            ("Bob Nguyen", "sales"),
            ("Dmitri Petrov", "sales")
        ])
    );
}

#[test]
fn recording_outbound_calls() {
    let Recording { events, .. } = recording();
    let results: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::DialResult { agent, dialled, trunk, outcome, .. } => {
                Some((e.call_id.as_str(), agent.as_deref(), dialled.as_str(), trunk.as_deref(), *outcome))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        results,
        [
            ("1795356833.108", Some("Alice Martin"), "0611111119", Some("pstn"), DialOutcome::NoAnswer),
            ("1795356883.142", Some("Dmitri Petrov"), "0622222222", Some("pstn"), DialOutcome::Answered),
        ]
    );
    let truth = truth();
    let truth_out = truth["outbound_agent_calls_from_ami"].as_array().unwrap();
    for (t, r) in truth_out.iter().zip(&results) {
        assert_eq!(t["linkedid"].as_str(), Some(r.0));
        assert_eq!(t["dialled"].as_str(), Some(r.2));
    }
}

#[test]
fn recording_surveys_match_queue_log() {
    let Recording { events, .. } = recording();
    let mut ami: Vec<(String, String, String, u64)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::SurveyAnswer { score, queue, agent, metric: SurveyMetric::Csat, .. } => Some((
                // The survey runs on the queued channel, whose Uniqueid is queue_log's callid.
                e.leg_id.clone(),
                queue.clone().unwrap(),
                agent.clone().unwrap(),
                *score as u64,
            )),
            _ => None,
        })
        .collect();
    let mut ql: Vec<(String, String, String, u64)> = queue_log()
        .into_iter()
        .filter(|f| f.get(4).map(String::as_str) == Some("SURVEY"))
        .map(|f| (f[1].clone(), f[2].clone(), f[3].clone(), f[5].parse().unwrap()))
        .collect();
    ami.sort();
    ql.sort();
    assert_eq!(ami.len(), 21);
    assert_eq!(ami, ql);
}

#[test]
fn recording_calls_group_like_queue_log() {
    let Recording { events, .. } = recording();
    let ql = queue_log();
    // Linkedid → queued channel Uniqueids, and the reverse.
    let mut legs_of_call: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut calls_of_leg: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut joins: Vec<(&str, &str)> = Vec::new();
    for e in &events {
        if let EventKind::QueueJoin { queue, .. } = &e.kind {
            legs_of_call.entry(&e.call_id).or_default().insert(&e.leg_id);
            calls_of_leg.entry(&e.leg_id).or_default().insert(&e.call_id);
            joins.push((&e.leg_id, queue));
        }
    }
    assert!(legs_of_call.values().all(|s| s.len() == 1), "one queued channel per Linkedid");
    assert!(calls_of_leg.values().all(|s| s.len() == 1), "one Linkedid per queue_log callid");
    let mut ql_joins: Vec<(&str, &str)> =
        ql.iter().filter(|f| f[4] == "ENTERQUEUE").map(|f| (f[1].as_str(), f[2].as_str())).collect();
    joins.sort();
    ql_joins.sort();
    assert_eq!(joins, ql_joins, "the same (callid, queue) joins");
    assert_eq!(legs_of_call.len(), 49);
    // And the ids differ: Linkedid is the Local ;1 half, queue_log the ;2 half.
    assert!(legs_of_call.iter().all(|(call, legs)| !legs.contains(call)));

    // A blind-transferred call keeps its call_id across both queues.
    let leg_call: HashMap<&str, &str> =
        calls_of_leg.iter().map(|(leg, calls)| (*leg, *calls.iter().next().unwrap())).collect();
    let blind: Vec<&str> = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Transfer { kind: TransferKind::Blind, .. }))
        .map(|e| e.call_id.as_str())
        .collect();
    assert_eq!(blind, ["1795356872.138", "1795356930.174"]);
    for call in &blind {
        let queues: BTreeSet<&str> = joins.iter().filter(|(leg, _)| leg_call[leg] == *call).map(|(_, q)| *q).collect();
        assert_eq!(queues, BTreeSet::from(["sales", "support"]), "{call}");
    }
    let ql_blind: Vec<&str> = ql.iter().filter(|f| f[4] == "BLINDTRANSFER").map(|f| leg_call[f[1].as_str()]).collect();
    assert_eq!(ql_blind, blind);

    // Transfers: targets as queue_log has them.
    let targets: Vec<(TransferKind, &str, &str)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Transfer { kind, agent, target, .. } => Some((*kind, agent.as_deref()?, target.as_str())),
            _ => None,
        })
        .collect();
    let ql_targets: Vec<(TransferKind, &str, &str)> = ql
        .iter()
        .filter_map(|f| match f[4].as_str() {
            "BLINDTRANSFER" => Some((TransferKind::Blind, f[3].as_str(), "700@transfer")),
            "ATTENDEDTRANSFER" => Some((TransferKind::Attended, f[3].as_str(), f[6].as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(targets, ql_targets);

    // Waits: every CONNECT holdtime and ABANDON waittime of queue_log.
    let mut ami_waits: Vec<(&str, &str, u64)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Answered { queue, reported_wait_ms: Some(w), .. } => {
                let leg = legs_of_call[e.call_id.as_str()].iter().next().unwrap();
                Some((*leg, queue.as_deref().unwrap(), w / 1000))
            }
            EventKind::QueueLeave { queue, reason: LeaveReason::Abandon, reported_wait_ms: Some(w) } => {
                Some((e.leg_id.as_str(), queue.as_str(), w / 1000))
            }
            _ => None,
        })
        .collect();
    let mut ql_waits: Vec<(&str, &str, u64)> = ql
        .iter()
        .filter_map(|f| match f[4].as_str() {
            "CONNECT" => Some((f[1].as_str(), f[2].as_str(), f[5].parse().ok()?)),
            "ABANDON" => Some((f[1].as_str(), f[2].as_str(), f[7].parse().ok()?)),
            _ => None,
        })
        .collect();
    ami_waits.sort();
    ql_waits.sort();
    assert_eq!(ami_waits, ql_waits);
}

#[test]
fn recording_ring_canceled_matches_queue_log() {
    let Recording { events, .. } = recording();
    let ami: Vec<(&str, u64)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::OfferMissed { agent, reason: MissReason::Canceled, reported_ring_ms: Some(r), .. } => {
                Some((agent.as_str(), *r))
            }
            _ => None,
        })
        .collect();
    let ql: Vec<(String, u64)> = queue_log()
        .into_iter()
        .filter(|f| f[4] == "RINGCANCELED")
        .map(|f| (f[3].clone(), f[5].parse().unwrap()))
        .collect();
    assert_eq!(ami.len(), ql.len());
    for ((a, r), (qa, qr)) in ami.iter().zip(&ql) {
        assert_eq!(a, qa);
        // Both are differences of the same clock; they differ by a rounding.
        assert!(r.abs_diff(*qr) <= 2, "{a}: AMI {r} ms, queue_log {qr} ms");
    }
}

#[test]
fn recording_answer_order() {
    // The real order around an answer, documented in the module docs.
    let bytes = fixture("ami.log");
    let mut seq: Vec<String> = Vec::new();
    for frame in frames(&bytes) {
        if let Ok(Frame::Message(m)) = frame
            && m.get("Linkedid").as_deref() == Some("1795356686.0")
        {
            let name = m.event().unwrap_or_default().into_owned();
            if matches!(name.as_str(), "DialEnd" | "QueueCallerLeave" | "AgentConnect" | "QueueCallerAbandon") {
                seq.push(format!("{name} {}", m.get("DialStatus").unwrap_or_default()).trim().to_owned());
            }
        }
    }
    assert_eq!(seq, ["DialEnd ANSWER", "QueueCallerLeave", "AgentConnect"]);
}
