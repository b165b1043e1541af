//! FreeSWITCH event socket: the real recorded stream framed and mapped, then
//! call-centre scenarios through the KPI engine.
//!
//! The recording (`tests/fixtures/freeswitch/eventstream.txt`, see its
//! PROVENANCE.md) is all the real FreeSWITCH output we have: a login, a
//! disconnect notice and one `CHANNEL_CREATE`. The scenarios are written
//! event by event from what `mod_callcenter.c` fires (which headers, on
//! which channel's data, in which order; see `src/esl/mod.rs`), URL-encoded
//! as `switch_event_serialize` sends them, and every expected KPI is worked
//! out by hand from the timestamps written next to it.

use std::collections::BTreeMap;

use callkpi_core::event::{
    AgentState, DialOutcome, Direction, EventId, EventKind, HangupBy, LeaveReason, MissReason, SourceKind, TransferKind,
};
use callkpi_core::params::GroupBy;
use callkpi_core::report::Kpis;
use callkpi_core::time::Interval;
use callkpi_core::{Engine, EngineConfig, KpiParams};
use callkpi_feeds::esl::{
    ClientState, ContentType, DEFAULT_MAX_FRAME_SIZE, EslClient, EslFrame, EslMapper, ParseErrorKind, Subscription,
    frames, parse_event, parse_frame,
};
use callkpi_feeds::{CaptureTime, FeedEvent, Status};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use proptest::prelude::*;

const RECORDING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/freeswitch/eventstream.txt");

fn recording() -> Vec<u8> {
    std::fs::read(RECORDING).unwrap_or_else(|e| panic!("{RECORDING}: {e}"))
}

// === helpers ===

/// An owned copy of a frame, to compare parses of differently split input.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owned {
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Option<Vec<u8>>,
}

fn own(f: &EslFrame<'_>) -> Owned {
    Owned {
        headers: f.headers().iter().map(|h| (h.name.to_vec(), h.value.to_vec())).collect(),
        body: f.body().map(<[u8]>::to_vec),
    }
}

/// Feeds `chunks` into a growing buffer as a socket reader would, framing
/// as soon as a frame is whole; an error ends decoding.
fn decode_stream(chunks: &[&[u8]]) -> Vec<Result<Owned, ParseErrorKind>> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match parse_frame(&buf, DEFAULT_MAX_FRAME_SIZE) {
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

/// Splits `bytes` at the given offsets (taken modulo the length, sorted).
fn split_at_points<'a>(bytes: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = points.iter().map(|p| p % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut prev = 0;
    for c in cuts {
        chunks.push(&bytes[prev..c]);
        prev = c;
    }
    chunks.push(&bytes[prev..]);
    chunks
}

/// URL-unsafe characters, escaped in event header values as FreeSWITCH does.
const UNSAFE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b':')
    .add(b';')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

const T0_US: i64 = 1_795_356_000_000_000; // 2026-11-22T13:20:00Z, a quarter-hour start

/// Writes an event-socket stream as FreeSWITCH sends it to a listener.
#[derive(Default)]
struct Fs {
    out: String,
}

impl Fs {
    /// One `text/event-plain` frame at `secs` after T0.
    fn event(&mut self, secs: f64, headers: &[(&str, &str)]) -> &mut Self {
        let mut body = String::new();
        let ts = (T0_US + (secs * 1e6).round() as i64).to_string();
        for (k, v) in headers.iter().copied().chain([("Event-Date-Timestamp", ts.as_str())]) {
            body.push_str(&format!("{k}: {}\n", utf8_percent_encode(v, UNSAFE)));
        }
        body.push('\n');
        self.out.push_str(&format!("Content-Length: {}\nContent-Type: text/event-plain\n\n{body}", body.len()));
        self
    }

    /// A channel event: `Unique-ID`, `Channel-Call-UUID` and extras.
    fn chan(&mut self, secs: f64, name: &str, uuid: &str, call: &str, extra: &[(&str, &str)]) -> &mut Self {
        let mut h = vec![("Event-Name", name), ("Unique-ID", uuid), ("Channel-Call-UUID", call)];
        h.extend_from_slice(extra);
        self.event(secs, &h)
    }

    /// An inbound caller's channel created (its own call).
    fn caller(&mut self, secs: f64, uuid: &str, number: &str, did: &str) -> &mut Self {
        let name = format!("sofia/external/{number}@carrier.example");
        self.chan(
            secs,
            "CHANNEL_CREATE",
            uuid,
            uuid,
            &[
                ("Call-Direction", "inbound"),
                ("Channel-Name", &name),
                ("Caller-Caller-ID-Number", number),
                ("Caller-Destination-Number", did),
            ],
        )
    }

    /// The channel mod_callcenter originates to an agent (callback agent,
    /// `user/<ext>@pbx.example`): its originate variables.
    fn agent_leg(&mut self, secs: f64, uuid: &str, agent: &str, queue: &str, member: &str) -> &mut Self {
        let ext = agent.split('@').next().unwrap_or(agent);
        let name = format!("sofia/internal/{ext}@10.0.0.2");
        self.chan(
            secs,
            "CHANNEL_CREATE",
            uuid,
            uuid,
            &[
                ("Call-Direction", "outbound"),
                ("Channel-Name", &name),
                ("variable_cc_side", "agent"),
                ("variable_cc_agent", agent),
                ("variable_cc_queue", queue),
                ("variable_cc_member_session_uuid", member),
                ("variable_dialed_user", ext),
                ("variable_dialed_domain", "pbx.example"),
            ],
        )
    }

    /// A `callcenter::info` event.
    fn cc(&mut self, secs: f64, action: &str, queue: &str, member: &str, extra: &[(&str, &str)]) -> &mut Self {
        let mut h = vec![
            ("Event-Name", "CUSTOM"),
            ("Event-Subclass", "callcenter::info"),
            ("CC-Queue", queue),
            ("CC-Action", action),
            ("CC-Member-UUID", member),
            ("CC-Member-Session-UUID", member),
        ];
        h.extend_from_slice(extra);
        self.event(secs, &h)
    }

    fn bytes(&self) -> Vec<u8> {
        self.out.clone().into_bytes()
    }
}

fn map(bytes: &[u8]) -> (Vec<FeedEvent>, EslMapper) {
    let mut m = EslMapper::default();
    let mut out = Vec::new();
    m.map_bytes(bytes, &mut out);
    (out, m)
}

/// Runs mapped events through the engine, as `callkpi analyze` does.
fn kpis(events: &[FeedEvent], by: Vec<GroupBy>) -> BTreeMap<String, Kpis> {
    let mut engine = Engine::new(EngineConfig::default());
    for (i, fe) in events.iter().cloned().enumerate() {
        let wall = fe.source_time.unwrap_or(0);
        let id = EventId { agent_id: "esl".into(), seq: i as u64 + 1 };
        engine.ingest(fe.into_event(
            id,
            "hq",
            SourceKind::FreeswitchEsl,
            CaptureTime { wall, monotonic: 0, clock_synced: true },
        ));
    }
    engine.refresh(None, true);
    let params = KpiParams { interval: Interval::All, group_by: by.clone(), ..KpiParams::default() };
    let report = engine.report(&params, &[]).unwrap();
    report
        .rows
        .into_iter()
        .map(|r| {
            let key: Vec<String> =
                by.iter().map(|g| r.group.get(g.as_str()).cloned().flatten().unwrap_or_default()).collect();
            (key.join("/"), r.kpis)
        })
        .collect()
}

fn total(events: &[FeedEvent]) -> Kpis {
    kpis(events, vec![]).remove("").expect("one row")
}

fn close(a: Option<f64>, b: f64) {
    let a = a.unwrap_or_else(|| panic!("expected {b}, got null"));
    assert!((a - b).abs() < 1e-6, "expected {b}, got {a}");
}

// === the real recording ===

#[test]
fn recording_frames_completely() {
    let bytes = recording();
    let all: Vec<EslFrame<'_>> = frames(&bytes).collect::<Result<_, _>>().expect("the recording frames cleanly");
    // By hand (`cat -A`): auth/request, two command/replies (+OK accepted,
    // +OK bye), a disconnect notice with a 67-byte body, one event of 5407.
    let types: Vec<ContentType> = all.iter().map(EslFrame::content_type).collect();
    assert_eq!(
        types,
        [
            ContentType::AuthRequest,
            ContentType::CommandReply,
            ContentType::CommandReply,
            ContentType::DisconnectNotice,
            ContentType::EventPlain
        ]
    );
    assert_eq!(all[1].reply_text().as_deref(), Some("+OK accepted"));
    assert_eq!((all[1].reply_ok(), all[2].reply_text().as_deref()), (Some(true), Some("+OK bye")));
    let notice = all[3].body().unwrap();
    assert_eq!(notice.len(), 67);
    assert!(notice.starts_with(b"Disconnected, goodbye.\nSee you at ClueCon!"));
    assert_eq!(all[4].body().map(<[u8]>::len), Some(5407));

    let ev = all[4].event().unwrap().unwrap();
    // 149 lines: 128 headers, then `variable_switch_r_sdp: v=0` and the 20
    // more lines of its raw SDP (o= ... a=rtcp:4017), which stay its value.
    assert_eq!(ev.headers().len(), 129);
    assert_eq!(ev.name().as_deref(), Some("CHANNEL_CREATE"));
    assert_eq!(ev.get("Unique-ID").as_deref(), Some("d0b1da34-a727-11e4-9728-6f83a2e5e50a"));
    assert_eq!(ev.get("Channel-Call-UUID").as_deref(), Some("d0b1da34-a727-11e4-9728-6f83a2e5e50a"));
    assert_eq!(ev.get("Event-Date-GMT").as_deref(), Some("Wed, 28 Jan 2015 18:00:44 GMT"));
    assert_eq!(ev.timestamp(), Some(1_422_468_044_671_081_000));
    assert_eq!(ev.get("Caller-Caller-ID-Name").as_deref(), Some("edev - 100"));
    assert_eq!(
        ev.get("variable_sip_full_from").as_deref(),
        Some("\"edev - 100\" <sip:100@192.168.50.4>;tag=ocZZPAo1FTdXA10orlmCaYeqc4mzYem1")
    );
    let sdp = ev.get("variable_switch_r_sdp").unwrap();
    assert_eq!(sdp.lines().count(), 21);
    assert!(sdp.starts_with("v=0\no=- 3631463817 3631463817 IN IP4 172.16.7.70\n"));
    assert!(sdp.ends_with("a=rtcp:4017 IN IP4 172.16.7.70"));
    // The header after the SDP-less part is read as a header again.
    assert_eq!(ev.get("variable_presence_id").as_deref(), Some("100@192.168.50.4"));
    assert_eq!(ev.body(), None);
}

#[test]
fn recording_frames_the_same_split_anywhere() {
    let bytes = recording();
    let whole = decode_stream(&[&bytes]);
    assert_eq!(whole.len(), 5);
    assert!(whole.iter().all(Result::is_ok));
    for i in 0..=bytes.len() {
        let (a, b) = bytes.split_at(i);
        assert_eq!(decode_stream(&[a, b]), whole, "split at {i}");
    }
    let singles: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(decode_stream(&singles), whole);
}

#[test]
fn recording_maps_to_one_internal_call() {
    let bytes = recording();
    let (events, mapper) = map(&bytes);
    // The one event is user 100 (authenticated: variable_user_name=100)
    // calling 101 on the same switch: an internal call, no queue, no agent.
    assert_eq!(
        events,
        [FeedEvent {
            call_id: "d0b1da34-a727-11e4-9728-6f83a2e5e50a".into(),
            leg_id: "d0b1da34-a727-11e4-9728-6f83a2e5e50a".into(),
            source_time: Some(1_422_468_044_671_081_000),
            kind: EventKind::CallOffered {
                direction: Direction::Internal,
                caller: "100".into(),
                called: "101".into(),
                trunk: None
            },
        }]
    );
    assert_eq!(mapper.unparsed(), &Default::default());
    // Reading it again gives identical events.
    assert_eq!(map(&bytes).0, events);
    // Through the engine: no queue was entered, no agent answered, so no
    // figure at all.
    let rows = kpis(&events, vec![]);
    assert!(rows.values().all(|k| (k.entered, k.offered, k.answered, k.handled) == (0, 0, 0, 0)), "{rows:#?}");
}

#[test]
fn client_logs_in_on_the_recording() {
    let bytes = recording();
    // Byte by byte, then whole: the same conversation.
    for chunked in [true, false] {
        let mut client = EslClient::new("ClueCon", Subscription::default()).unwrap();
        let mut sent = Vec::new();
        let mut names = Vec::new();
        let chunks: Vec<&[u8]> = if chunked { bytes.chunks(1).collect() } else { vec![&bytes] };
        let mut states = vec![client.state()];
        for c in chunks {
            client.feed(c, |ev| names.push(ev.name().unwrap().into_owned())).unwrap();
            sent.extend(client.take_output());
            if states.last() != Some(&client.state()) {
                states.push(client.state());
            }
        }
        let sent = String::from_utf8(sent).unwrap();
        assert!(sent.starts_with("auth ClueCon\n\nevent plain CHANNEL_CREATE "), "{sent}");
        assert!(sent.ends_with(" CUSTOM callcenter::info\n\n"), "{sent}");
        // `+OK bye` is taken as the reply to the subscription: any +OK is.
        let expected: &[ClientState] = if chunked {
            &[
                ClientState::AwaitingAuthRequest,
                ClientState::Authenticating,
                ClientState::Subscribing,
                ClientState::Ready,
                ClientState::Disconnected,
            ]
        } else {
            &[ClientState::AwaitingAuthRequest, ClientState::Disconnected]
        };
        assert_eq!(states, expected);
        assert!(client.disconnect_notice().unwrap().starts_with("Disconnected, goodbye."));
        // The event after the notice is data: it is passed on, not dropped.
        assert_eq!(names, ["CHANNEL_CREATE"]);
    }
}

// === framing edge cases ===

#[test]
fn event_bodies_and_errors() {
    // An event with its own body (BACKGROUND_JOB), values URL-encoded.
    let inner = "Event-Name: BACKGROUND_JOB\nJob-Command: originate\nJob-Command-Arg: user%2F1001%20%26park\nContent-Length: 4\n\n+OK\n";
    let frame = format!("Content-Length: {}\nContent-Type: text/event-plain\n\n{inner}", inner.len());
    let f = match parse_frame(frame.as_bytes(), 1 << 20) {
        Ok(Status::Complete { value, consumed }) => {
            assert_eq!(consumed, frame.len());
            value
        }
        other => panic!("{other:?}"),
    };
    let ev = f.event().unwrap().unwrap();
    assert_eq!(ev.get("job-command-arg").as_deref(), Some("user/1001 &park"));
    assert_eq!(ev.body(), Some(&b"+OK\n"[..]));
    // An inner Content-Length longer than what follows.
    assert_eq!(
        parse_event(b"Event-Name: X\nContent-Length: 9\n\nab").unwrap_err().kind,
        ParseErrorKind::InvalidContentLength
    );
    // A body that starts with no header at all.
    assert_eq!(parse_event(b"garbage\n\n").unwrap_err().kind, ParseErrorKind::InvalidHeader);
    // A bad outer Content-Length, then a good frame: resynchronised.
    let bytes = b"Content-Length: x\nContent-Type: api/response\n\nContent-Type: auth/request\n\n";
    let got: Vec<_> = frames(bytes).map(|f| f.map(|f| f.content_type())).collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].unwrap_err().kind, ParseErrorKind::InvalidContentLength);
    assert_eq!(got[1], Ok(ContentType::AuthRequest));
    // Over the limit: an error, not a buffer that grows.
    assert_eq!(parse_frame(b"Content-Length: 100\n\n", 50).unwrap_err().kind, ParseErrorKind::TooLarge);
    assert_eq!(parse_frame(&[b'x'; 64], 50).unwrap_err().kind, ParseErrorKind::TooLarge);
    // Truncated tail, and a tail of empty lines.
    let got: Vec<_> = frames(b"Content-Type: auth/request\n\nContent-Ty").collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].as_ref().unwrap_err().kind, ParseErrorKind::Truncated);
    assert_eq!(frames(b"Content-Type: auth/request\n\n\n\n\r\n").count(), 1);
    // CRLF works as LF does.
    let f = match parse_frame(b"Content-Type: command/reply\r\nReply-Text: -ERR invalid\r\n\r\n", 1024) {
        Ok(Status::Complete { value, .. }) => value,
        other => panic!("{other:?}"),
    };
    assert_eq!((f.content_type(), f.reply_ok()), (ContentType::CommandReply, Some(false)));
}

// === properties ===

fn scenario_bytes() -> Vec<u8> {
    let mut fs = Fs::default();
    answered_via_queue(&mut fs);
    let mut bytes = recording();
    bytes.extend(fs.bytes());
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any split of a stream into reads gives the frames of the whole.
    #[test]
    fn any_chunking_gives_the_same_frames(points in proptest::collection::vec(any::<usize>(), 0..12)) {
        let bytes = scenario_bytes();
        let whole = decode_stream(&[&bytes]);
        prop_assert_eq!(whole.len(), 5 + 9);
        let chunks = split_at_points(&bytes, &points);
        prop_assert_eq!(decode_stream(&chunks), whole);
        // The client sees the same events too.
        let events = |chunks: &[&[u8]]| {
            let mut c = EslClient::new("pw", Subscription::default()).unwrap();
            let mut names = Vec::new();
            for ch in chunks {
                c.feed(ch, |ev| names.push(ev.headers().len())).unwrap();
            }
            names
        };
        prop_assert_eq!(events(&chunks), events(&[&bytes]));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_frame(&bytes, 512);
        let _ = parse_event(&bytes);
        let _ = callkpi_feeds::esl::skip_frame(&bytes);
        let _ = frames(&bytes).count();
        let _ = map(&bytes);
        let mut c = EslClient::new("pw", Subscription::default()).unwrap();
        let _ = c.feed(&bytes, |_| {});
    }

    /// ESL-ish pieces reach the interesting paths; a split never changes
    /// the frames, and mapping never panics.
    #[test]
    fn eslish_bytes_frame_the_same_when_split(
        parts in proptest::collection::vec(
            prop::sample::select(vec![
                "Content-Length: ", "Content-Type: text/event-plain\n", "Content-Type: auth/request\n", "0", "5", "12",
                "\n", "\r\n", "\r", ": ", ":", "Event-Name: ", "CUSTOM\n", "CHANNEL_HANGUP_COMPLETE\n",
                "Event-Subclass: callcenter::info\n", "CC-Action: bridge-agent-end\n", "CC-Queue: q\n",
                "CC-Member-Session-UUID: m\n", "CC-Agent: a\n", "Unique-ID: u\n", "a=rtpmap:0 PCMU/8000\n", "%41", "\u{e9}",
            ]),
            0..80,
        ),
        split in 0usize..4096,
    ) {
        let bytes: Vec<u8> = parts.concat().into_bytes();
        let whole = decode_stream(&[&bytes]);
        let (a, b) = bytes.split_at(split.min(bytes.len()));
        prop_assert_eq!(decode_stream(&[a, b]), whole);
        let _ = map(&bytes);
    }
}

// === scenarios through the engine ===

const CALLER: &str = "c1a11e40-0000-4000-8000-000000000001";
const LEG_A: &str = "a9e47000-0000-4000-8000-0000000000a1";
const LEG_B: &str = "a9e47000-0000-4000-8000-0000000000b1";
const ALICE: &str = "1001@default";
const BOB: &str = "1002@default";
const SUPPORT: &str = "support@default";

/// +33612345678 calls the DID 0155501234, joins `support` at 1 s, Alice is
/// offered the call at 2 s, answers (bridge) at 9 s, puts the caller on hold
/// from 30 to 50 s; the caller hangs up at 69.5 s, the switch hangs up
/// Alice's leg at 70 s (answered 61 s earlier: billmsec 61000 by her own
/// clock, the bridge being a few ms after her answer).
fn answered_via_queue(fs: &mut Fs) {
    let cc_member = [("CC-Member-CID-Number", "+33612345678"), ("Unique-ID", CALLER), ("Channel-Call-UUID", CALLER)];
    let agent = [("CC-Agent", ALICE), ("CC-Agent-Type", "callback"), ("CC-Agent-System", "single_box")];
    fs.caller(0.0, CALLER, "+33612345678", "0155501234")
        .cc(1.0, "member-queue-start", SUPPORT, CALLER, &cc_member)
        .cc(2.0, "agent-offering", SUPPORT, CALLER, &agent)
        .agent_leg(2.01, LEG_A, ALICE, SUPPORT, CALLER)
        .cc(
            9.0,
            "bridge-agent-start",
            SUPPORT,
            CALLER,
            &[
                ("CC-Agent", ALICE),
                ("CC-Agent-UUID", LEG_A),
                ("Unique-ID", LEG_A),
                ("CC-Agent-Called-Time", "1795356002"),
                ("CC-Agent-Answered-Time", "1795356009"),
            ],
        )
        .chan(30.0, "CHANNEL_HOLD", LEG_A, LEG_A, &[("variable_cc_side", "agent"), ("variable_cc_agent", ALICE)])
        .chan(50.0, "CHANNEL_UNHOLD", LEG_A, LEG_A, &[("variable_cc_side", "agent"), ("variable_cc_agent", ALICE)])
        .chan(69.5, "CHANNEL_HANGUP_COMPLETE", CALLER, CALLER, &[("Hangup-Cause", "NORMAL_CLEARING")])
        .chan(
            70.0,
            "CHANNEL_HANGUP_COMPLETE",
            LEG_A,
            LEG_A,
            &[
                ("Hangup-Cause", "NORMAL_CLEARING"),
                ("variable_sip_hangup_disposition", "send_bye"),
                ("variable_billmsec", "61000"),
                ("variable_billsec", "61"),
            ],
        );
}

#[test]
fn queue_call_answered_with_hold() {
    let mut fs = Fs::default();
    answered_via_queue(&mut fs);
    // mod_callcenter's own end of the bridge, after the leg's hang-up.
    fs.cc(
        70.05,
        "bridge-agent-end",
        SUPPORT,
        CALLER,
        &[("CC-Agent", ALICE), ("CC-Agent-UUID", LEG_A), ("Unique-ID", LEG_A)],
    )
    .cc(70.1, "member-queue-end", SUPPORT, CALLER, &[("CC-Cause", "Terminated"), ("CC-Agent", ALICE)]);
    let (events, mapper) = map(&fs.bytes());
    assert_eq!(mapper.unparsed(), &Default::default());
    assert_eq!(mapper.tracked_channels(), 0, "every channel ended");
    // Deterministic: reading the same stream again gives identical events.
    assert_eq!(map(&fs.bytes()).0, events);
    let kinds: Vec<&EventKind> = events.iter().map(|e| &e.kind).collect();
    assert!(
        matches!(kinds[0], EventKind::CallOffered { direction: Direction::Inbound, caller, called, .. } if caller == "+33612345678" && called == "0155501234")
    );
    assert!(
        matches!(kinds[1], EventKind::QueueJoin { queue, caller: Some(c), .. } if queue == SUPPORT && c == "+33612345678")
    );
    assert!(matches!(kinds[2], EventKind::Ringing { agent, .. } if agent == ALICE));
    assert!(matches!(kinds[3], EventKind::Answered { agent, reported_ring_ms: Some(7000), .. } if agent == ALICE));
    assert!(matches!(kinds[4], EventKind::Hold { agent: Some(a) } if a == ALICE));
    assert!(matches!(kinds[5], EventKind::Resume { agent: Some(a) } if a == ALICE));
    assert!(matches!(kinds[6], EventKind::Hangup { agent: None, cause: Some(16), .. }));
    assert!(matches!(
        kinds[7],
        EventKind::Hangup { agent: Some(a), by: HangupBy::Caller, cause: Some(16), reported_talk_ms: Some(61_000), .. } if a == ALICE
    ));
    assert_eq!(kinds.len(), 8, "bridge-agent-end and Terminated add nothing: {kinds:#?}");
    // One call: every event has the caller's channel as call id.
    assert!(events.iter().all(|e| e.call_id == CALLER));
    assert_eq!(events[3].leg_id, LEG_A);

    let k = total(&events);
    assert_eq!((k.entered, k.offered, k.answered, k.abandoned, k.handled), (1, 1, 1, 0, 1));
    close(k.asa_s, 8.0); // joined at 1 s, answered at 9 s
    close(k.hold_s, 20.0); // 30 → 50 s
    close(k.talk_s, 41.0); // billmsec 61 s, hold excluded
    assert_eq!(k.holds, 1);
    close(k.service_level_pct["18"], 100.0);
}

#[test]
fn queue_call_abandoned() {
    let mut fs = Fs::default();
    // Joins at 0 s, Alice rings from 1 s, the caller hangs up at 25 s: the
    // callcenter application ends with BREAK_OUT on a channel in hang-up,
    // and the agent's originate is cancelled.
    fs.caller(0.0, CALLER, "0612345678", "0155501234")
        .cc(0.0, "member-queue-start", SUPPORT, CALLER, &[("CC-Member-CID-Number", "0612345678")])
        .cc(1.0, "agent-offering", SUPPORT, CALLER, &[("CC-Agent", ALICE)])
        .chan(25.0, "CHANNEL_HANGUP", CALLER, CALLER, &[("Hangup-Cause", "NORMAL_CLEARING")])
        .cc(
            25.01,
            "member-queue-end",
            SUPPORT,
            CALLER,
            &[
                ("CC-Cause", "Cancel"),
                ("CC-Cancel-Reason", "BREAK_OUT"),
                ("Unique-ID", CALLER),
                ("Channel-State", "CS_HANGUP"),
                ("Channel-Call-State", "HANGUP"),
                ("Answer-State", "hangup"),
            ],
        )
        .cc(
            25.02,
            "bridge-agent-fail",
            SUPPORT,
            CALLER,
            &[
                ("CC-Agent", ALICE),
                ("CC-Hangup-Cause", "ORIGINATOR_CANCEL"),
                ("CC-Agent-Called-Time", "1795356001"),
                ("CC-Agent-Aborted-Time", "1795356025"),
            ],
        )
        .chan(25.1, "CHANNEL_HANGUP_COMPLETE", CALLER, CALLER, &[("Hangup-Cause", "NORMAL_CLEARING")]);
    let (events, mapper) = map(&fs.bytes());
    assert_eq!(mapper.unparsed(), &Default::default());
    let leave = events.iter().find_map(|e| match &e.kind {
        EventKind::QueueLeave { reason, .. } => Some(*reason),
        _ => None,
    });
    assert_eq!(leave, Some(LeaveReason::Abandon));
    assert!(events.iter().any(|e| matches!(
        e.kind,
        EventKind::OfferMissed { reason: MissReason::Canceled, reported_ring_ms: None, .. }
    )));
    // One hang-up for the caller's channel, though both hang-up events came.
    assert_eq!(events.iter().filter(|e| matches!(e.kind, EventKind::Hangup { .. })).count(), 1);
    let k = total(&events);
    assert_eq!((k.entered, k.offered, k.answered, k.abandoned, k.short_abandoned), (1, 1, 0, 1, 0));
    close(k.abandonment_rate_pct, 100.0);
    close(k.avg_wait_s, 25.01);
    // The caller left while Alice rang: not a missed offer of hers.
    assert_eq!(k.missed_offers, 0);
}

#[test]
fn leave_reasons_by_cancel_reason() {
    let reasons = [
        ("TIMEOUT", false, LeaveReason::Timeout),
        ("NO_AGENT_TIMEOUT", false, LeaveReason::LeaveEmpty),
        ("EXIT_WITH_KEY", false, LeaveReason::ExitWithKey),
        ("BREAK_OUT", false, LeaveReason::Transfer),
        ("BREAK_OUT", true, LeaveReason::Abandon),
        ("NONE", false, LeaveReason::Unspecified),
    ];
    for (reason, gone, want) in reasons {
        let mut fs = Fs::default();
        let state: &[(&str, &str)] = if gone {
            &[("Channel-State", "CS_REPORTING"), ("Answer-State", "hangup")]
        } else {
            &[("Channel-State", "CS_EXECUTE"), ("Channel-Call-State", "ACTIVE"), ("Answer-State", "answered")]
        };
        let mut extra = vec![("CC-Cause", "Cancel"), ("CC-Cancel-Reason", reason)];
        extra.extend_from_slice(state);
        fs.cc(0.0, "member-queue-start", SUPPORT, CALLER, &[]).cc(90.0, "member-queue-end", SUPPORT, CALLER, &extra);
        let (events, _) = map(&fs.bytes());
        assert!(
            matches!(events[1].kind, EventKind::QueueLeave { reason, reported_wait_ms: None, .. } if reason == want),
            "{reason}: {:?}",
            events[1]
        );
    }
    // Through the engine, a timeout is its own exit.
    let mut fs = Fs::default();
    fs.cc(0.0, "member-queue-start", SUPPORT, CALLER, &[]).cc(
        300.0,
        "member-queue-end",
        SUPPORT,
        CALLER,
        &[("CC-Cause", "Cancel"), ("CC-Cancel-Reason", "TIMEOUT"), ("Answer-State", "answered")],
    );
    let k = total(&map(&fs.bytes()).0);
    assert_eq!((k.entered, k.offered, k.abandoned, k.timed_out), (1, 1, 0, 1));
    assert_eq!(k.max_wait_s, Some(300));
}

#[test]
fn agent_no_answer_then_another_answers() {
    let mut fs = Fs::default();
    // Joins at 0 s; Alice rings 1 → 16 s (NO_ANSWER); Bob rings from 17 s,
    // answers at 21 s; Bob hangs up (his phone sends BYE) at 100 s.
    fs.caller(0.0, CALLER, "0612345678", "0155501234")
        .cc(0.0, "member-queue-start", SUPPORT, CALLER, &[("CC-Member-CID-Number", "0612345678")])
        .cc(1.0, "agent-offering", SUPPORT, CALLER, &[("CC-Agent", ALICE)])
        .agent_leg(1.01, LEG_A, ALICE, SUPPORT, CALLER)
        .chan(
            16.0,
            "CHANNEL_HANGUP_COMPLETE",
            LEG_A,
            LEG_A,
            &[("Hangup-Cause", "NO_ANSWER"), ("variable_cc_side", "agent")],
        )
        .cc(16.0, "bridge-agent-fail", SUPPORT, CALLER, &[("CC-Agent", ALICE), ("CC-Hangup-Cause", "NO_ANSWER")])
        .cc(17.0, "agent-offering", SUPPORT, CALLER, &[("CC-Agent", BOB)])
        .agent_leg(17.01, LEG_B, BOB, SUPPORT, CALLER)
        .cc(
            21.0,
            "bridge-agent-start",
            SUPPORT,
            CALLER,
            &[("CC-Agent", BOB), ("CC-Agent-UUID", LEG_B), ("Unique-ID", LEG_B)],
        )
        .chan(
            100.0,
            "CHANNEL_HANGUP",
            LEG_B,
            LEG_B,
            &[("Hangup-Cause", "NORMAL_CLEARING"), ("variable_sip_hangup_disposition", "recv_bye")],
        )
        .cc(
            100.05,
            "bridge-agent-end",
            SUPPORT,
            CALLER,
            &[
                ("CC-Agent", BOB),
                ("CC-Agent-UUID", LEG_B),
                ("Unique-ID", LEG_B),
                ("variable_sip_hangup_disposition", "recv_bye"),
            ],
        )
        .chan(
            100.1,
            "CHANNEL_HANGUP_COMPLETE",
            LEG_B,
            LEG_B,
            &[("Hangup-Cause", "NORMAL_CLEARING"), ("variable_billmsec", "79000")],
        )
        .chan(100.2, "CHANNEL_HANGUP_COMPLETE", CALLER, CALLER, &[("Hangup-Cause", "NORMAL_CLEARING")]);
    let (events, mapper) = map(&fs.bytes());
    assert_eq!(mapper.tracked_channels(), 0);
    let ends: Vec<&EventKind> =
        events.iter().map(|e| &e.kind).filter(|k| matches!(k, EventKind::Hangup { agent: Some(_), .. })).collect();
    // The first hang-up event of Bob's leg ends his conversation, once.
    assert_eq!(ends.len(), 1);
    assert!(matches!(ends[0], EventKind::Hangup { by: HangupBy::Agent, reported_talk_ms: None, .. }));
    let by_agent = kpis(&events, vec![GroupBy::Agent]);
    let (alice, bob) = (&by_agent[ALICE], &by_agent[BOB]);
    assert_eq!((alice.missed_offers, alice.handled), (1, 0));
    assert!((alice.missed_offer_ring_s - 15.0).abs() < 1e-6, "{}", alice.missed_offer_ring_s);
    assert_eq!((bob.missed_offers, bob.handled), (0, 1));
    close(bob.talk_s, 79.0); // 21 → 100 s
    let k = total(&events);
    assert_eq!((k.entered, k.answered, k.missed_offers), (1, 1, 1));
    close(k.asa_s, 21.0);
}

#[test]
fn blind_transfer_to_another_queue() {
    let mut fs = Fs::default();
    let sales = "sales@default";
    // Alice answers from support at 5 s; at 40 s her phone transfers the
    // caller (REFER to 2000, the sales queue's extension): her leg hangs up
    // with recv_refer, the caller enters sales at 41 s, Bob answers at 50 s,
    // the caller hangs up at 80 s.
    fs.caller(0.0, CALLER, "0612345678", "0155501234")
        .cc(0.0, "member-queue-start", SUPPORT, CALLER, &[("CC-Member-CID-Number", "0612345678")])
        .cc(1.0, "agent-offering", SUPPORT, CALLER, &[("CC-Agent", ALICE)])
        .agent_leg(1.01, LEG_A, ALICE, SUPPORT, CALLER)
        .cc(
            5.0,
            "bridge-agent-start",
            SUPPORT,
            CALLER,
            &[("CC-Agent", ALICE), ("CC-Agent-UUID", LEG_A), ("Unique-ID", LEG_A)],
        )
        .chan(
            40.0,
            "CHANNEL_HANGUP",
            LEG_A,
            LEG_A,
            &[
                ("Hangup-Cause", "NORMAL_CLEARING"),
                ("variable_sip_hangup_disposition", "recv_refer"),
                ("variable_sip_refer_to", "<sip:2000@pbx.example>"),
            ],
        )
        .cc(
            40.05,
            "bridge-agent-end",
            SUPPORT,
            CALLER,
            &[("CC-Agent", ALICE), ("CC-Agent-UUID", LEG_A), ("Unique-ID", LEG_A)],
        )
        .cc(40.06, "member-queue-end", SUPPORT, CALLER, &[("CC-Cause", "Terminated"), ("CC-Agent", ALICE)])
        .cc(41.0, "member-queue-start", sales, CALLER, &[("CC-Member-CID-Number", "0612345678")])
        .cc(42.0, "agent-offering", sales, CALLER, &[("CC-Agent", BOB)])
        .agent_leg(42.01, LEG_B, BOB, sales, CALLER)
        .cc(
            50.0,
            "bridge-agent-start",
            sales,
            CALLER,
            &[("CC-Agent", BOB), ("CC-Agent-UUID", LEG_B), ("Unique-ID", LEG_B)],
        )
        .chan(
            80.0,
            "CHANNEL_HANGUP",
            LEG_B,
            LEG_B,
            &[("Hangup-Cause", "NORMAL_CLEARING"), ("variable_sip_hangup_disposition", "send_bye")],
        )
        .cc(
            80.05,
            "bridge-agent-end",
            sales,
            CALLER,
            &[("CC-Agent", BOB), ("CC-Agent-UUID", LEG_B), ("Unique-ID", LEG_B)],
        );
    let (events, _) = map(&fs.bytes());
    let transfers: Vec<&EventKind> =
        events.iter().map(|e| &e.kind).filter(|k| matches!(k, EventKind::Transfer { .. })).collect();
    assert_eq!(transfers.len(), 1);
    assert!(matches!(
        transfers[0],
        EventKind::Transfer { kind: TransferKind::Blind, agent: Some(a), target, .. } if a == ALICE && target == "2000"
    ));
    let by_queue = kpis(&events, vec![GroupBy::Queue]);
    let (s, q) = (&by_queue[SUPPORT], &by_queue[sales]);
    assert_eq!((s.entered, s.answered, s.transfers), (1, 1, 1));
    close(s.asa_s, 5.0);
    close(s.talk_s, 35.0); // 5 → 40 s
    assert_eq!((q.entered, q.answered, q.transfers), (1, 1, 0));
    close(q.asa_s, 9.0); // 41 → 50 s
    close(q.talk_s, 30.0); // 50 → 80 s
    // One caller, one case, not resolved at first contact (transferred).
    let k = total(&events);
    assert_eq!((k.cases, k.transfers, k.transfers_blind), (1, 1, 1));
    close(k.fcr_pct, 0.0);

    // An attended transfer (REFER with Replaces) is told apart.
    let mut fs = Fs::default();
    fs.cc(0.0, "member-queue-start", SUPPORT, CALLER, &[])
        .cc(
            5.0,
            "bridge-agent-start",
            SUPPORT,
            CALLER,
            &[("CC-Agent", ALICE), ("CC-Agent-UUID", LEG_A), ("Unique-ID", LEG_A)],
        )
        .cc(
            40.0,
            "bridge-agent-end",
            SUPPORT,
            CALLER,
            &[
                ("CC-Agent", ALICE),
                ("CC-Agent-UUID", LEG_A),
                ("variable_sip_hangup_disposition", "recv_refer"),
                ("variable_sip_refer_to", "<sip:1002@pbx.example?Replaces=abc%3Bto-tag%3D1>"),
            ],
        );
    let (events, _) = map(&fs.bytes());
    assert!(
        matches!(&events[2].kind, EventKind::Transfer { kind: TransferKind::Attended, target, .. } if target == "1002")
    );
}

#[test]
fn agent_status_is_presence() {
    let mut fs = Fs::default();
    // Alice logs in (Available) at 0 s, goes On Break 600 → 900 s, logs out
    // at 1200 s; Idle/Waiting states say nothing more.
    let status = |s: &'static str| [("CC-Agent", ALICE), ("CC-Agent-Status", s)];
    fs.cc(0.0, "agent-status-change", "", "", &status("Available"))
        .cc(1.0, "agent-state-change", "", "", &[("CC-Agent", ALICE), ("CC-Agent-State", "Waiting")])
        .cc(600.0, "agent-status-change", "", "", &status("On Break"))
        .cc(900.0, "agent-status-change", "", "", &status("Available (On Demand)"))
        .cc(901.0, "agent-state-change", "", "", &[("CC-Agent", ALICE), ("CC-Agent-State", "Idle")])
        .cc(1200.0, "agent-status-change", "", "", &status("Logged Out"))
        .cc(1200.0, "agent-add", "", "", &[("CC-Agent", ALICE)]);
    let (events, mapper) = map(&fs.bytes());
    let states: Vec<(i64, &AgentState)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::AgentState { agent, queue: None, state } if agent == ALICE => {
                Some(((e.source_time.unwrap() / 1000 - T0_US) / 1_000_000, state))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        [
            (0, &AgentState::Login),
            (0, &AgentState::Available),
            (600, &AgentState::Login),
            (600, &AgentState::Paused { reason: "On Break".into() }),
            (900, &AgentState::Login),
            (900, &AgentState::Available),
            (1200, &AgentState::Logout),
        ]
    );
    assert_eq!(mapper.unparsed().by_name.get("callcenter::info/agent-add"), Some(&1));
    let k = &kpis(&events, vec![GroupBy::Agent])[ALICE];
    assert!((k.logged_in_s - 1200.0).abs() < 1e-6, "{}", k.logged_in_s);
    assert!((k.paused_s - 300.0).abs() < 1e-6, "{}", k.paused_s);
}

#[test]
fn outbound_calls_through_a_gateway() {
    let mut fs = Fs::default();
    // Alice's extension (1001, learnt from her queue leg) dials out twice
    // through the `ovh` gateway: answered, then busy.
    fs.agent_leg(0.0, LEG_A, ALICE, SUPPORT, CALLER);
    for (i, (answer, cause)) in [(true, "NORMAL_CLEARING"), (false, "USER_BUSY")].into_iter().enumerate() {
        let t = 100.0 * (i as f64 + 1.0);
        let a = format!("0a0a0a0a-0000-4000-8000-00000000000{i}");
        let b = format!("0b0b0b0b-0000-4000-8000-00000000000{i}");
        fs.chan(
            t,
            "CHANNEL_CREATE",
            &a,
            &a,
            &[
                ("Call-Direction", "inbound"),
                ("variable_user_name", "1001"),
                ("Caller-Caller-ID-Number", "1001"),
                ("Caller-Destination-Number", "0611111119"),
            ],
        )
        .chan(
            t + 0.1,
            "CHANNEL_CREATE",
            &b,
            &a,
            &[
                ("Call-Direction", "outbound"),
                ("Channel-Name", "sofia/gateway/ovh/0611111119"),
                ("Caller-Destination-Number", "0611111119"),
            ],
        );
        if answer {
            fs.chan(t + 8.0, "CHANNEL_ANSWER", &b, &a, &[]);
        }
        fs.chan(t + 30.0, "CHANNEL_HANGUP_COMPLETE", &b, &a, &[("Hangup-Cause", cause)]).chan(
            t + 30.1,
            "CHANNEL_HANGUP_COMPLETE",
            &a,
            &a,
            &[("Hangup-Cause", cause)],
        );
    }
    let (events, mapper) = map(&fs.bytes());
    assert_eq!(mapper.agent_for_user("1001@pbx.example"), Some(ALICE));
    let dials: Vec<(String, Option<String>, DialOutcome)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::DialResult { agent, trunk, outcome, .. } => {
                Some((agent.clone().unwrap_or_default(), trunk.clone(), *outcome))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        dials,
        [
            (ALICE.to_owned(), Some("ovh".to_owned()), DialOutcome::Answered),
            (ALICE.to_owned(), Some("ovh".to_owned()), DialOutcome::Busy)
        ]
    );
    let k = total(&events);
    assert_eq!((k.outbound_attempts, k.outbound_connected, k.entered), (2, 1, 0));
    close(k.asr_pct, 50.0);
}

#[test]
fn missing_headers_are_malformed_and_unknown_events_counted() {
    let mut fs = Fs::default();
    fs.event(
        0.0,
        &[("Event-Name", "CUSTOM"), ("Event-Subclass", "callcenter::info"), ("CC-Action", "member-queue-start")],
    )
    .event(1.0, &[("Event-Name", "CHANNEL_DESTROY"), ("Unique-ID", "x")])
    .event(2.0, &[("Event-Name", "CUSTOM"), ("Event-Subclass", "sofia::register")])
    .event(3.0, &[("Unique-ID", "no name")])
    // An empty value is serialized as `_undef_`: absent.
    .cc(4.0, "member-queue-start", SUPPORT, CALLER, &[("CC-Member-CID-Number", "_undef_")]);
    let (events, m) = map(&fs.bytes());
    assert_eq!(events.len(), 1);
    assert!(matches!(&events[0].kind, EventKind::QueueJoin { caller: None, .. }));
    assert_eq!(m.unparsed().malformed, 2);
    assert_eq!(m.unparsed().by_name.get("CHANNEL_DESTROY"), Some(&1));
    assert_eq!(m.unparsed().by_name.get("CUSTOM/sofia::register"), Some(&1));
}

#[test]
fn state_is_bounded() {
    let mut m = EslMapper::new(callkpi_feeds::esl::EslMapperConfig { max_tracked: 4 });
    let mut fs = Fs::default();
    for i in 0..10 {
        let u = format!("u{i}");
        fs.caller(f64::from(i), &u, "0612345678", "1");
    }
    let mut out = Vec::new();
    m.map_bytes(&fs.bytes(), &mut out);
    assert_eq!(out.len(), 10);
    assert!(m.tracked_channels() <= 4);
    assert_eq!(m.evictions(), 2);
}
