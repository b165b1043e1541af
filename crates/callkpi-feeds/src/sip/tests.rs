use std::net::IpAddr;

use callkpi_core::event::{DialOutcome, Direction, EventKind, HangupBy, LeaveReason, MissReason, TransferKind};

use super::sdp::{MediaDirection, summarize};
use super::*;
use crate::{FeedEvent, Status};

// === parser ===

#[test]
fn parses_a_request_lazily_with_compact_headers_and_folding() {
    let raw = b"\r\nINVITE sip:2100@pbx.example.com;user=phone SIP/2.0\n\
v: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-top\n\
Via: SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bKmid,\n SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-bottom;rport\n\
f: \"Dupont, Jean\" <sip:+33612345678@carrier.example;user=phone>;tag=abc\n\
t: sip:2100@pbx.example.com\n\
i: 42@host\n\
CSeq:   7   INVITE\n\
m: <sip:+33612345678@10.0.0.1:5060;transport=udp>;expires=60\n\
r: <sip:2001@pbx.example.com?Replaces=abc%3Bto-tag%3D1&x=y>\n\
b: <sip:agent@10.0.0.7>\n\
Reason: SIP;cause=200;text=\"Call completed elsewhere, thanks\", Q.850 ;cause=16\n\
c: application/sdp;charset=utf-8\n\
X-Long: part one\n\tpart two\n\
l: 5\n\
\n\
v=0\r\nignored";
    let m = SipMessage::parse_datagram(raw).unwrap();
    assert_eq!(m.method(), Some(Method::Invite));
    assert_eq!(m.status(), None);
    let ruri = m.request_uri().unwrap();
    assert_eq!(
        (ruri.scheme, ruri.user, ruri.host, ruri.port),
        (&b"sip"[..], Some(&b"2100"[..]), &b"pbx.example.com"[..], None)
    );
    assert_eq!(ruri.param("user"), Some(&b"phone"[..]));
    assert_eq!(m.call_id(), Some(&b"42@host"[..]));
    assert_eq!(m.cseq(), Some(CSeq { seq: 7, method: Method::Invite }));
    let from = m.from().unwrap();
    assert_eq!(from.display, Some(&b"Dupont, Jean"[..]));
    assert_eq!(from.user(), Some(&b"+33612345678"[..]));
    assert_eq!(from.tag(), Some(&b"abc"[..]));
    let to = m.to().unwrap();
    assert_eq!((to.user(), to.tag()), (Some(&b"2100"[..]), None));
    let vias: Vec<_> = m.vias().map(|v| (v.protocol, v.sent_by, v.branch())).collect();
    assert_eq!(
        vias,
        vec![
            (&b"SIP/2.0/UDP"[..], &b"10.0.0.9:5060"[..], Some(&b"z9hG4bK-top"[..])),
            (&b"SIP/2.0/TCP"[..], &b"[2001:db8::1]:5070"[..], Some(&b"z9hG4bKmid"[..])),
            (&b"SIP/2.0/UDP"[..], &b"10.0.0.1"[..], Some(&b"z9hG4bK-bottom"[..])),
        ]
    );
    assert_eq!(m.top_via().unwrap().branch(), Some(&b"z9hG4bK-top"[..]));
    assert_eq!(m.bottom_via().unwrap().branch(), Some(&b"z9hG4bK-bottom"[..]));
    let contact = m.contact().unwrap().uri().unwrap();
    assert_eq!((contact.host, contact.port), (&b"10.0.0.1"[..], Some(5060)));
    let refer = m.refer_to().unwrap().uri().unwrap();
    assert!(refer.has_replaces());
    assert_eq!(refer.user, Some(&b"2001"[..]));
    assert_eq!(m.referred_by().unwrap().user(), Some(&b"agent"[..]));
    let reasons: Vec<_> = m.reasons().collect();
    assert_eq!(reasons.len(), 2);
    assert_eq!(reasons[0].text, Some(&b"Call completed elsewhere, thanks"[..]));
    assert_eq!(reasons[0].cause, Some(200));
    assert_eq!(m.q850_cause(), Some(16));
    assert_eq!(m.content_type(), Some(&b"application/sdp"[..]));
    assert_eq!(m.content_length(), Some(5));
    // The body is cut to Content-Length.
    assert_eq!(m.body(), b"v=0\r\n");
    assert!(m.has_sdp());
    assert_eq!(m.header("x-long"), Some(&b"part one\n\tpart two"[..]));
    assert_eq!(m.headers().count(), 13);
}

#[test]
fn parses_responses_and_sipfrag() {
    let m = SipMessage::parse_datagram(
        b"SIP/2.0 486 Busy Here\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nTo: <sip:a@b>;tag=t1\r\n\r\n",
    )
    .unwrap();
    assert_eq!(m.status(), Some(486));
    assert!(matches!(m.start_line(), StartLine::Response { reason: b"Busy Here", .. }));
    assert_eq!(m.to().unwrap().tag(), Some(&b"t1"[..]));
    let m = SipMessage::parse_datagram(b"SIP/2.0 200\r\nCall-ID: x\r\n\r\n").unwrap();
    assert!(matches!(m.start_line(), StartLine::Response { code: 200, reason: b"" }));
    let n = SipMessage::parse_datagram(
        b"NOTIFY sip:a@b SIP/2.0\r\nEvent: refer;id=3\r\nContent-Type: message/sipfrag;version=2.0\r\n\r\nSIP/2.0 200 OK\r\n",
    )
    .unwrap();
    assert_eq!(n.event(), Some(&b"refer"[..]));
    assert_eq!(n.sipfrag_status(), Some(200));
    // A datagram whose header block has no empty line still parses.
    let m = SipMessage::parse_datagram(b"BYE sip:x SIP/2.0\r\nCall-ID: 1").unwrap();
    assert_eq!(m.call_id(), Some(&b"1"[..]));
}

#[test]
fn session_timer_replaces_reason_and_event_id_accessors() {
    let raw = b"INVITE sip:2002@p SIP/2.0\r\nx: 1800 ;refresher=uac\r\nReplaces: k1@h;to-tag=a;from-tag=b\r\n\
Reason: Q.850;cause=16, SIP ;cause=200;text=\"Call completed elsewhere\"\r\no: refer;id=7\r\n\
Call-ID: n@h\r\nCSeq: 2 INVITE\r\nContent-Length: 3\r\n\r\nabcEXTRA";
    let m = SipMessage::parse_datagram(raw).unwrap();
    assert_eq!(m.session_expires(), Some(1800));
    assert_eq!(m.replaces_call_id(), Some(&b"k1@h"[..]));
    assert!(m.completed_elsewhere());
    assert_eq!(m.event_id(), Some(&b"7"[..]));
    // Kept past the input: the same message again, body cut to Content-Length.
    let bytes = m.to_bytes();
    let again = SipMessage::parse_datagram(&bytes).unwrap();
    assert_eq!((again.method(), again.call_id(), again.body()), (Some(Method::Invite), Some(&b"n@h"[..]), &b"abc"[..]));
    assert_eq!(again.headers().count(), m.headers().count());
    let r = SipMessage::parse_datagram(b"SIP/2.0 200\nCall-ID: x").unwrap();
    let again = r.to_bytes();
    assert_eq!(SipMessage::parse_datagram(&again).unwrap().call_id(), Some(&b"x"[..]));
    assert!(!r.completed_elsewhere());
    assert_eq!(r.session_expires(), None);
}

#[test]
fn bad_messages_are_clear_errors() {
    let kind = |b: &[u8]| SipMessage::parse_datagram(b).unwrap_err().kind;
    assert_eq!(kind(b"\r\n\r\n"), SipErrorKind::Empty);
    assert_eq!(kind(b""), SipErrorKind::Empty);
    assert_eq!(kind(b"HTTP/1.1 200 OK\r\n\r\n"), SipErrorKind::BadStartLine);
    assert_eq!(kind(b"SIP/2.0 99 Low\r\n\r\n"), SipErrorKind::BadStartLine);
    assert_eq!(kind(b"SIP/2.0 2000 X\r\n\r\n"), SipErrorKind::BadStartLine);
    assert_eq!(kind(b"INVITE sip:x SIP/3.0\r\n\r\n"), SipErrorKind::BadStartLine);
    assert_eq!(kind(b"INV(TE sip:x SIP/2.0\r\n\r\n"), SipErrorKind::BadStartLine);
    let e = SipMessage::parse_datagram(b"BYE sip:x SIP/2.0\r\nCall-ID: 1\r\nno colon here\r\n\r\n").unwrap_err();
    assert_eq!((e.kind, e.offset), (SipErrorKind::BadHeader, 31));
    assert_eq!(kind(b"BYE sip:x SIP/2.0\r\n: empty name\r\n\r\n"), SipErrorKind::BadHeader);
    assert_eq!(kind(b"BYE sip:x SIP/2.0\r\nl: many\r\n\r\n"), SipErrorKind::BadContentLength);
    assert_eq!(e.to_string(), "malformed SIP header line at byte 31");
}

#[test]
fn a_stream_is_framed_by_content_length() {
    let one = b"MESSAGE sip:a SIP/2.0\r\nContent-Length: 5\r\n\r\nhello";
    let mut stream = b"\r\n\r\n".to_vec();
    stream.extend_from_slice(one);
    stream.extend_from_slice(b"OPTIONS sip:a SIP/2.0\r\n\r\n");
    let Ok(Status::Complete { value, consumed }) = SipMessage::parse(&stream) else { panic!() };
    assert_eq!((value.body(), consumed), (&b"hello"[..], 4 + one.len()));
    let Ok(Status::Complete { value, consumed }) = SipMessage::parse(&stream[consumed..]) else { panic!() };
    assert_eq!((value.method(), value.body(), consumed), (Some(Method::Options), &b""[..], 25));
    for cut in [0, 4, 10, one.len() - 1] {
        assert_eq!(SipMessage::parse(&one[..cut]), Ok(Status::Partial), "cut at {cut}");
    }
    let huge = vec![b'a'; MAX_HEADER_BLOCK + 10];
    assert_eq!(SipMessage::parse(&huge).unwrap_err().kind, SipErrorKind::TooLarge);
}

#[test]
fn uris_of_every_shape() {
    let u = SipUri::parse(b"sips:alice:secret@[2001:db8::5]:5061;transport=tls?subject=x").unwrap();
    assert_eq!((u.user, u.host, u.port), (Some(&b"alice"[..]), &b"[2001:db8::5]"[..], Some(5061)));
    assert_eq!((u.params, u.headers), (&b"transport=tls"[..], &b"subject=x"[..]));
    let t = SipUri::parse(b"tel:+33140000000;phone-context=example.com").unwrap();
    assert_eq!((t.user, t.host), (Some(&b"+33140000000"[..]), &b""[..]));
    let h = SipUri::parse(b"sip:pbx.example.com").unwrap();
    assert_eq!((h.user, h.host), (None, &b"pbx.example.com"[..]));
    assert_eq!(SipUri::parse(b"no-scheme"), None);
    assert_eq!(SipUri::parse(b":x"), None);
    let n = NameAddr::parse(b"sip:2001@h;tag=9").unwrap();
    assert_eq!((n.user(), n.tag()), (Some(&b"2001"[..]), Some(&b"9"[..])));
    let n = NameAddr::parse(b"\"a \\\"<b>\\\"\" <sip:c@d>;tag=e").unwrap();
    assert_eq!((n.user(), n.tag()), (Some(&b"c"[..]), Some(&b"e"[..])));
}

#[test]
fn sdp_direction_and_hold() {
    let s = |b: &[u8]| summarize(b);
    let base = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    assert_eq!(s(base).direction, MediaDirection::SendRecv);
    assert!(!s(base).is_hold());
    let with = |extra: &[u8]| [&base[..], extra].concat();
    assert!(s(&with(b"a=sendonly\r\n")).is_hold());
    assert!(s(&with(b"a=inactive\r\n")).is_hold());
    assert!(!s(&with(b"a=recvonly\r\n")).is_hold());
    // Session-level attribute, overridden at media level.
    assert!(s(b"v=0\r\na=sendonly\r\nm=audio 1 RTP/AVP 0\r\n").is_hold());
    assert!(!s(b"v=0\r\na=sendonly\r\nm=audio 1 RTP/AVP 0\r\na=sendrecv\r\n").is_hold());
    // RFC 2543 hold: the connection address zeroed.
    assert!(s(b"v=0\nc=IN IP4 0.0.0.0\nm=audio 1 RTP/AVP 0\n").is_hold());
    assert!(s(b"v=0\nm=audio 1 RTP/AVP 0\nc=IN IP6 ::\n").null_connection);
    // The audio stream counts, not a video one before it.
    let v = s(b"v=0\nm=video 2 RTP/AVP 96\na=inactive\nm=audio 1 RTP/AVP 0\na=sendrecv\n");
    assert_eq!((v.direction, v.has_media), (MediaDirection::SendRecv, true));
    assert!(!s(b"garbage\n=\nx").has_media);
}

// === tracker ===

const T0: i64 = 1_700_000_000_000_000_000;
const MS: i64 = 1_000_000;

/// Feeds hand-written SIP to a tracker, each message at a time and a
/// source/destination address.
struct Sim {
    tracker: SipTracker,
    out: Vec<FeedEvent>,
}

impl Sim {
    fn new(config: SipTrackerConfig) -> Self {
        Self { tracker: SipTracker::new(config), out: Vec::new() }
    }

    fn push(&mut self, at_ms: i64, src: &str, dst: &str, text: &str) {
        let raw = text.replace('\n', "\r\n");
        let msg = SipMessage::parse_datagram(raw.as_bytes()).unwrap_or_else(|e| panic!("{e}: {text}"));
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        let meta = PacketMeta { time: T0 + at_ms * MS, src: ip(src), dst: ip(dst) };
        self.tracker.push_sip(&meta, &msg, &mut self.out);
    }

    fn kinds(&self) -> Vec<&EventKind> {
        self.out.iter().map(|e| &e.kind).collect()
    }

    fn finish(&mut self) {
        self.tracker.finish(&mut self.out);
    }
}

/// A message of call `cid`: `first` line, Via branches top first, From/To
/// tags (`-` for none), CSeq, then extra header lines and an SDP body.
#[allow(clippy::too_many_arguments)] // one argument per field of the template
fn msg(
    first: &str,
    cid: &str,
    vias: &[&str],
    from: (&str, &str),
    to: (&str, &str),
    cseq: &str,
    extra: &str,
    sdp: &str,
) -> String {
    let mut s = format!("{first}\n");
    for v in vias {
        s.push_str(&format!("Via: SIP/2.0/UDP 10.9.9.9;branch={v}\n"));
    }
    let tag = |t: &str| if t == "-" { String::new() } else { format!(";tag={t}") };
    s.push_str(&format!("From: <sip:{}@example.com>{}\n", from.0, tag(from.1)));
    s.push_str(&format!("To: <sip:{}@example.com>{}\n", to.0, tag(to.1)));
    s.push_str(&format!("Call-ID: {cid}\nCSeq: {cseq}\n{extra}"));
    if sdp.is_empty() {
        s.push_str("Content-Length: 0\n\n");
    } else {
        // Sim::push turns every \n into \r\n.
        let len = sdp.len() + sdp.matches('\n').count();
        s.push_str(&format!("Content-Type: application/sdp\nContent-Length: {len}\n\n{sdp}"));
    }
    s
}

const CALLER: (&str, &str) = ("+33612345678", "ct");
const SDP_ON: &str = "v=0\nc=IN IP4 10.0.0.2\nm=audio 4000 RTP/AVP 0\na=sendrecv\n";
const SDP_HOLD: &str = "v=0\nc=IN IP4 10.0.0.2\nm=audio 4000 RTP/AVP 0\na=sendonly\n";

#[test]
fn a_direct_call_without_proxy_or_rules_names_the_agent_by_extension() {
    let mut s = Sim::new(SipTrackerConfig::default());
    let (c, a) = ("10.0.0.1", "10.0.0.2");
    let to = ("2001", "-");
    let ans = ("2001", "at");
    let contact = "Contact: <sip:2001@10.0.0.2>\n";
    s.push(0, c, a, &msg("INVITE sip:2001@10.0.0.2 SIP/2.0", "d1", &["z9hG4bKc1"], CALLER, to, "1 INVITE", "", SDP_ON));
    s.push(1, a, c, &msg("SIP/2.0 100 Trying", "d1", &["z9hG4bKc1"], CALLER, to, "1 INVITE", "", ""));
    s.push(2, a, c, &msg("SIP/2.0 180 Ringing", "d1", &["z9hG4bKc1"], CALLER, ans, "1 INVITE", contact, ""));
    s.push(3002, a, c, &msg("SIP/2.0 200 OK", "d1", &["z9hG4bKc1"], CALLER, ans, "1 INVITE", contact, SDP_ON));
    s.push(3003, c, a, &msg("ACK sip:2001@10.0.0.2 SIP/2.0", "d1", &["z9hG4bKc2"], CALLER, ans, "1 ACK", "", ""));
    let bye = msg("BYE sip:x SIP/2.0", "d1", &["z9hG4bKa1"], ans, CALLER, "1 BYE", "Reason: Q.850;cause=31\n", "");
    s.push(9003, a, c, &bye);
    s.push(9004, c, a, &msg("SIP/2.0 200 OK", "d1", &["z9hG4bKa1"], ans, CALLER, "1 BYE", "", ""));
    s.finish();
    let mut k = s.kinds();
    assert_eq!(k.len(), 5, "{k:#?}");
    assert!(
        matches!(k[0], EventKind::CallOffered { direction: Direction::Inbound, caller, called, .. } if caller == "+33612345678" && called == "2001")
    );
    // No queue rule: the call joins a queue named after the number dialled.
    assert!(matches!(k.remove(1), EventKind::QueueJoin { queue, .. } if queue == "2001"));
    assert_eq!(s.tracker.placements().by_dialled_number, 1);
    assert!(matches!(k[1], EventKind::Ringing { agent, .. } if agent == "2001"));
    assert!(matches!(k[2], EventKind::Answered { agent, reported_ring_ms: Some(3000), .. } if agent == "2001"));
    assert!(
        matches!(k[3], EventKind::Hangup { agent: Some(a), by: HangupBy::Agent, cause: Some(31), .. } if a == "2001")
    );
    assert_eq!(s.out[4].source_time, Some(T0 + 9003 * MS));
    assert!(s.out.iter().all(|e| e.call_id == "d1" && e.leg_id == "d1"));
}

/// A proxy at 10.0.0.5 between caller 10.0.0.1 and agent phones
/// 10.0.0.21/22: every message mirrored in and out.
fn proxied_config() -> SipTrackerConfig {
    SipTrackerConfig {
        agents: vec![
            AgentEntry { name: "alice".into(), address: Some("10.0.0.21".parse().unwrap()), extension: None },
            AgentEntry { name: "bob".into(), address: None, extension: Some("2002".into()) },
        ],
        default_queue: Some("sales".into()),
        ..SipTrackerConfig::default()
    }
}

const P: &str = "10.0.0.5";
const C: &str = "10.0.0.1";

/// The caller's INVITE in and its forwarded copy to `agent_ip` at `ext`.
fn invite_in_and_out(s: &mut Sim, at: i64, cid: &str, ext: &str, agent_ip: &str, copies: usize) {
    let to = (ext, "-");
    for _ in 0..copies {
        s.push(
            at,
            C,
            P,
            &msg(&format!("INVITE sip:{ext}@proxy SIP/2.0"), cid, &["z9hG4bKc"], CALLER, to, "1 INVITE", "", SDP_ON),
        );
        let out = msg(
            &format!("INVITE sip:{ext}@{agent_ip} SIP/2.0"),
            cid,
            &["z9hG4bKp.0", "z9hG4bKc"],
            CALLER,
            to,
            "1 INVITE",
            "",
            SDP_ON,
        );
        s.push(at, P, agent_ip, &out);
    }
}

/// A response from the agent: in to the proxy, then out to the caller.
#[allow(clippy::too_many_arguments)] // one argument per field of the template
fn reply_in_and_out(
    s: &mut Sim,
    at: i64,
    cid: &str,
    first: &str,
    agent_ip: &str,
    to: (&str, &str),
    cseq: &str,
    copies: usize,
) {
    for _ in 0..copies {
        s.push(at, agent_ip, P, &msg(first, cid, &["z9hG4bKp.0", "z9hG4bKc"], CALLER, to, cseq, "", ""));
        s.push(at, P, C, &msg(first, cid, &["z9hG4bKc"], CALLER, to, cseq, "", ""));
    }
}

fn proxied_call(copies: usize) -> Vec<EventKind> {
    let mut s = Sim::new(proxied_config());
    let ag = ("2001", "a1");
    invite_in_and_out(&mut s, 0, "p1", "2001", "10.0.0.21", copies);
    reply_in_and_out(&mut s, 5, "p1", "SIP/2.0 180 Ringing", "10.0.0.21", ag, "1 INVITE", copies);
    reply_in_and_out(&mut s, 2005, "p1", "SIP/2.0 200 OK", "10.0.0.21", ag, "1 INVITE", copies + 1);
    // The agent holds (re-INVITE sendonly) and resumes, each mirrored twice.
    for (at, sdp, cseq) in [(3000, SDP_HOLD, "1 INVITE"), (5000, SDP_ON, "2 INVITE")] {
        for hop in [("10.0.0.21", P), (P, C)] {
            for _ in 0..copies {
                let re = msg("INVITE sip:c@10.0.0.1 SIP/2.0", "p1", &["z9hG4bKr"], ag, CALLER, cseq, "", sdp);
                s.push(at, hop.0, hop.1, &re);
            }
        }
    }
    for hop in [(C, P), (P, "10.0.0.21")] {
        for _ in 0..copies {
            s.push(9000, hop.0, hop.1, &msg("BYE sip:a SIP/2.0", "p1", &["z9hG4bKb"], CALLER, ag, "2 BYE", "", ""));
        }
    }
    s.finish();
    s.out.into_iter().map(|e| e.kind).collect()
}

#[test]
fn mirrored_copies_and_retransmissions_count_once() {
    let once = proxied_call(1);
    assert_eq!(once, proxied_call(3), "three copies of everything change nothing");
    assert_eq!(once.len(), 7, "{once:#?}");
    assert!(matches!(&once[1], EventKind::QueueJoin { queue, .. } if queue == "sales"));
    assert!(matches!(&once[2], EventKind::Ringing { agent, .. } if agent == "alice"));
    assert!(matches!(&once[3], EventKind::Answered { agent, .. } if agent == "alice"));
    assert!(matches!(&once[4], EventKind::Hold { agent: Some(a) } if a == "alice"));
    assert!(matches!(&once[5], EventKind::Resume { agent: Some(a) } if a == "alice"));
    assert!(matches!(&once[6], EventKind::Hangup { by: HangupBy::Caller, cause: Some(16), .. }));
}

#[test]
fn an_authentication_challenge_is_not_the_end_of_the_call() {
    let mut s = Sim::new(proxied_config());
    let to = ("2002", "-");
    s.push(0, C, P, &msg("INVITE sip:2002@proxy SIP/2.0", "auth", &["z9hG4bKc1"], CALLER, to, "1 INVITE", "", SDP_ON));
    s.push(
        1,
        P,
        C,
        &msg(
            "SIP/2.0 407 Proxy Authentication Required",
            "auth",
            &["z9hG4bKc1"],
            CALLER,
            ("2002", "px"),
            "1 INVITE",
            "",
            "",
        ),
    );
    s.push(
        2,
        C,
        P,
        &msg("ACK sip:2002@proxy SIP/2.0", "auth", &["z9hG4bKc1"], CALLER, ("2002", "px"), "1 ACK", "", ""),
    );
    // The same call again, CSeq 2, new branch: rung at 2002 through the proxy.
    s.push(3, C, P, &msg("INVITE sip:2002@proxy SIP/2.0", "auth", &["z9hG4bKc2"], CALLER, to, "2 INVITE", "", SDP_ON));
    let fwd = msg(
        "INVITE sip:2002@10.0.0.22 SIP/2.0",
        "auth",
        &["z9hG4bKq.0", "z9hG4bKc2"],
        CALLER,
        to,
        "2 INVITE",
        "",
        SDP_ON,
    );
    s.push(3, P, "10.0.0.22", &fwd);
    let busy = ("2002", "b1");
    s.push(
        10,
        "10.0.0.22",
        P,
        &msg("SIP/2.0 486 Busy Here", "auth", &["z9hG4bKq.0", "z9hG4bKc2"], CALLER, busy, "2 INVITE", "", ""),
    );
    s.push(11, P, C, &msg("SIP/2.0 486 Busy Here", "auth", &["z9hG4bKc2"], CALLER, busy, "2 INVITE", "", ""));
    s.finish();
    let k = s.kinds();
    assert_eq!(k.len(), 5, "{k:#?}");
    assert!(matches!(k[0], EventKind::CallOffered { .. }));
    // bob: named by the extension he was rung at (the forwarded Request-URI).
    assert!(
        matches!(k[2], EventKind::OfferMissed { agent, reason: MissReason::Rejected, reported_ring_ms: Some(0), .. } if agent == "bob")
    );
    assert!(matches!(k[3], EventKind::QueueLeave { reason: LeaveReason::LeaveEmpty, reported_wait_ms: Some(11), .. }));
    assert!(matches!(k[4], EventKind::Hangup { by: HangupBy::Unknown, cause: Some(17), agent: None, .. }));
}

#[test]
fn a_cancel_crossing_the_answer_loses() {
    let mut s = Sim::new(proxied_config());
    let ag = ("2001", "a1");
    invite_in_and_out(&mut s, 0, "x1", "2001", "10.0.0.21", 1);
    reply_in_and_out(&mut s, 5, "x1", "SIP/2.0 180 Ringing", "10.0.0.21", ag, "1 INVITE", 1);
    s.push(
        4000,
        C,
        P,
        &msg("CANCEL sip:2001@proxy SIP/2.0", "x1", &["z9hG4bKc"], CALLER, ("2001", "-"), "1 CANCEL", "", ""),
    );
    reply_in_and_out(&mut s, 4000, "x1", "SIP/2.0 200 OK", "10.0.0.21", ag, "1 INVITE", 1);
    s.finish();
    let k = s.kinds();
    assert!(k.iter().any(|k| matches!(k, EventKind::Answered { .. })), "{k:#?}");
    assert!(!k.iter().any(|k| matches!(k, EventKind::QueueLeave { .. } | EventKind::OfferMissed { .. })), "{k:#?}");
}

#[test]
fn a_cancel_whose_487_was_lost_is_still_an_abandon_when_the_call_expires() {
    let cfg = SipTrackerConfig { setup_timeout_s: 60, ..proxied_config() };
    let mut s = Sim::new(cfg);
    invite_in_and_out(&mut s, 0, "lost", "2001", "10.0.0.21", 1);
    reply_in_and_out(&mut s, 5, "lost", "SIP/2.0 180 Ringing", "10.0.0.21", ("2001", "a1"), "1 INVITE", 1);
    s.push(
        2500,
        C,
        P,
        &msg("CANCEL sip:2001@proxy SIP/2.0", "lost", &["z9hG4bKc"], CALLER, ("2001", "-"), "1 CANCEL", "", ""),
    );
    // The proxy's own CANCEL to the phone does not count as the caller's.
    s.push(
        2501,
        P,
        "10.0.0.21",
        &msg("CANCEL sip:2001@10.0.0.21 SIP/2.0", "lost", &["z9hG4bKp.0"], CALLER, ("2001", "-"), "1 CANCEL", "", ""),
    );
    assert_eq!(s.out.len(), 3);
    // Another call, 61 s later, moves time on: the first one expires.
    s.push(
        63_000,
        C,
        P,
        &msg("OPTIONS sip:proxy SIP/2.0", "ka", &["z9hG4bKo"], CALLER, ("proxy", "-"), "1 OPTIONS", "", ""),
    );
    let k = s.kinds();
    assert_eq!(k.len(), 6, "{k:#?}");
    assert!(matches!(k[3], EventKind::OfferMissed { reason: MissReason::Canceled, reported_ring_ms: Some(2495), .. }));
    assert!(matches!(k[4], EventKind::QueueLeave { reason: LeaveReason::Abandon, reported_wait_ms: Some(2500), .. }));
    assert!(matches!(k[5], EventKind::Hangup { by: HangupBy::Caller, .. }));
    assert_eq!(s.out[4].source_time, Some(T0 + 2500 * MS));
    assert_eq!(s.tracker.stats().expired, 1);
    assert_eq!(s.tracker.active_calls(), 0);
    assert_eq!(s.tracker.unparsed().by_name.get("sip/OPTIONS"), Some(&1));
}

#[test]
fn an_answered_call_whose_bye_was_lost_gets_no_invented_hangup() {
    let cfg = SipTrackerConfig { call_timeout_s: 100, ..proxied_config() };
    let mut s = Sim::new(cfg);
    invite_in_and_out(&mut s, 0, "nobye", "2001", "10.0.0.21", 1);
    reply_in_and_out(&mut s, 5, "nobye", "SIP/2.0 200 OK", "10.0.0.21", ("2001", "a1"), "1 INVITE", 1);
    s.tracker.expire(T0 + 50_000 * MS, &mut s.out);
    assert_eq!(s.tracker.active_calls(), 1);
    s.tracker.expire(T0 + 200_000 * MS, &mut s.out);
    assert_eq!(s.tracker.active_calls(), 0);
    assert_eq!(s.tracker.stats().expired, 1);
    assert!(!s.kinds().iter().any(|k| matches!(k, EventKind::Hangup { .. })));
}

/// An answered call on which the agent (tag a1) sends REFER `refer_to`.
fn refer_call(refer_to: &str, refer_answer: &str, notify: Option<&str>) -> Sim {
    let mut s = Sim::new(proxied_config());
    let ag = ("2001", "a1");
    invite_in_and_out(&mut s, 0, "r1", "2001", "10.0.0.21", 1);
    reply_in_and_out(&mut s, 1000, "r1", "SIP/2.0 200 OK", "10.0.0.21", ag, "1 INVITE", 1);
    let refer = msg(
        "REFER sip:c@10.0.0.1 SIP/2.0",
        "r1",
        &["z9hG4bKr"],
        ag,
        CALLER,
        "1 REFER",
        &format!("Refer-To: {refer_to}\n"),
        "",
    );
    s.push(5000, "10.0.0.21", P, &refer);
    s.push(5001, C, P, &msg(refer_answer, "r1", &["z9hG4bKr"], ag, CALLER, "1 REFER", "", ""));
    if let Some(frag) = notify {
        let body = format!("Event: refer\nContent-Type: message/sipfrag\nContent-Length: {}\n\n{frag}", frag.len());
        let mut n = msg("NOTIFY sip:a SIP/2.0", "r1", &["z9hG4bKn"], CALLER, ag, "2 NOTIFY", "", "");
        n.truncate(n.find("Content-Length").unwrap());
        n.push_str(&body);
        s.push(6000, C, P, &n);
    }
    s.push(7000, "10.0.0.21", P, &msg("BYE sip:c SIP/2.0", "r1", &["z9hG4bKb"], ag, CALLER, "2 BYE", "", ""));
    s.finish();
    s
}

#[test]
fn transfers_attended_blind_and_refused() {
    let s = refer_call(
        "<sip:2002@proxy?Replaces=abc%3Bto-tag%3Dx%3Bfrom-tag%3Dy>",
        "SIP/2.0 202 Accepted",
        Some("SIP/2.0 200 OK"),
    );
    let k = s.kinds();
    assert!(
        matches!(k.last().unwrap(), EventKind::Transfer { kind: TransferKind::Attended, target, agent: Some(a), .. } if target == "2002" && a == "alice"),
        "{k:#?}"
    );
    assert_eq!(s.out.last().unwrap().source_time, Some(T0 + 5000 * MS));
    // No NOTIFY at all: the agent's BYE after an accepted REFER is the transfer.
    let s = refer_call("sip:2002@proxy", "SIP/2.0 202 Accepted", None);
    assert!(matches!(s.kinds().last().unwrap(), EventKind::Transfer { kind: TransferKind::Blind, .. }));
    assert!(!s.kinds().iter().any(|k| matches!(k, EventKind::Hangup { .. })));
    // Refused, or failed per the NOTIFY: the call goes on, the BYE is a hang-up.
    for s in [
        refer_call("sip:2002@proxy", "SIP/2.0 403 Forbidden", None),
        refer_call("sip:2002@proxy", "SIP/2.0 202 Accepted", Some("SIP/2.0 486 Busy Here")),
    ] {
        let k = s.kinds();
        assert!(!k.iter().any(|k| matches!(k, EventKind::Transfer { .. })), "{k:#?}");
        assert!(matches!(k.last().unwrap(), EventKind::Hangup { by: HangupBy::Agent, .. }));
    }
}

#[test]
fn an_agent_calling_out_is_an_outbound_dial() {
    let cfg = SipTrackerConfig { agent_extensions: vec!["2001".into()], ..SipTrackerConfig::default() };
    let mut s = Sim::new(cfg);
    let agent = ("2001", "o1");
    let to = ("0611111111", "-");
    s.push(
        0,
        "10.0.0.21",
        P,
        &msg("INVITE sip:0611111111@proxy SIP/2.0", "out1", &["z9hG4bKo"], agent, to, "1 INVITE", "", SDP_ON),
    );
    s.push(
        900,
        P,
        "10.0.0.21",
        &msg("SIP/2.0 486 Busy Here", "out1", &["z9hG4bKo"], agent, ("0611111111", "g"), "1 INVITE", "", ""),
    );
    s.push(
        1000,
        "10.0.0.21",
        P,
        &msg(
            "INVITE sip:0622222222@proxy SIP/2.0",
            "out2",
            &["z9hG4bKo2"],
            agent,
            ("0622222222", "-"),
            "1 INVITE",
            "",
            SDP_ON,
        ),
    );
    let callee = ("0622222222", "g2");
    s.push(3000, P, "10.0.0.21", &msg("SIP/2.0 200 OK", "out2", &["z9hG4bKo2"], agent, callee, "1 INVITE", "", SDP_ON));
    s.push(9000, P, "10.0.0.21", &msg("BYE sip:2001@x SIP/2.0", "out2", &["z9hG4bKx"], callee, agent, "1 BYE", "", ""));
    s.finish();
    let k = s.kinds();
    assert_eq!(k.len(), 5, "{k:#?}");
    assert!(
        matches!(k[0], EventKind::CallOffered { direction: Direction::Outbound, caller, called, .. } if caller == "2001" && called == "0611111111")
    );
    assert!(
        matches!(k[1], EventKind::DialResult { outcome: DialOutcome::Busy, agent: Some(a), cause: Some(17), .. } if a == "2001")
    );
    assert!(matches!(k[3], EventKind::DialResult { outcome: DialOutcome::Answered, .. }));
    assert!(matches!(k[4], EventKind::Hangup { by: HangupBy::Caller, agent: Some(_), .. }));
}

#[test]
fn the_queue_comes_from_a_header_or_the_dialled_number() {
    let cfg = SipTrackerConfig {
        queue_header: Some("X-Queue".into()),
        queues: vec![QueueEntry {
            name: "support".into(),
            numbers: vec!["0800".into()],
            prefixes: vec!["0899".into()],
        }],
        ..SipTrackerConfig::default()
    };
    let mut s = Sim::new(cfg);
    let inv = |cid: &str, to: &str, extra: &str| {
        msg(&format!("INVITE sip:{to}@p SIP/2.0"), cid, &[cid], CALLER, (to, "-"), "1 INVITE", extra, "")
    };
    s.push(0, C, P, &inv("q1", "5555", "X-Queue: sales\n"));
    s.push(1, C, P, &inv("q2", "5555", "X-Queue: <sip:0800@pbx>\n"));
    s.push(2, C, P, &inv("q3", "0899123", ""));
    s.push(3, C, P, &inv("q4", "5555", ""));
    let joins: Vec<(&str, &str)> = s
        .out
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::QueueJoin { queue, .. } => Some((e.call_id.as_str(), queue.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(joins, vec![("q1", "sales"), ("q2", "support"), ("q3", "support"), ("q4", "5555")]);
    let p = s.tracker.placements();
    assert_eq!((p.by_header, p.by_rule["support"], p.by_dialled_number, p.total()), (2, 1, 1, 4));
}

#[test]
fn unplaced_calls_can_stay_out_of_queues() {
    let mut s = Sim::new(SipTrackerConfig { queue_by_dialled_number: false, ..SipTrackerConfig::default() });
    s.push(0, C, P, &msg("INVITE sip:5555@p SIP/2.0", "n1", &["n1"], CALLER, ("5555", "-"), "1 INVITE", "", ""));
    assert!(!s.out.iter().any(|e| matches!(e.kind, EventKind::QueueJoin { .. })));
    assert_eq!(s.tracker.placements().not_queued, 1);
}

#[test]
fn memory_is_bounded_by_max_dialogs() {
    let cfg = SipTrackerConfig { max_dialogs: 2, ..SipTrackerConfig::default() };
    let mut s = Sim::new(cfg);
    for (i, cid) in ["m1", "m2", "m3", "m4"].iter().enumerate() {
        s.push(i as i64, C, P, &msg("INVITE sip:1@p SIP/2.0", cid, &[cid], CALLER, ("1", "-"), "1 INVITE", "", ""));
    }
    assert_eq!(s.tracker.active_calls(), 2);
    assert_eq!(s.tracker.stats().evicted, 2);
    assert_eq!(s.tracker.stats().calls, 4);
}

#[test]
fn what_is_not_a_call_is_counted_not_fatal() {
    let mut s = Sim::new(SipTrackerConfig::default());
    s.push(0, C, P, &msg("REGISTER sip:p SIP/2.0", "reg", &["z9hG4bKg"], CALLER, CALLER, "1 REGISTER", "", ""));
    s.push(1, C, P, &msg("BYE sip:p SIP/2.0", "gone", &["z9hG4bKg"], CALLER, ("x", "y"), "1 BYE", "", ""));
    s.push(2, C, P, "OPTIONS sip:p SIP/2.0\nVia: SIP/2.0/UDP h;branch=1\n\n");
    let mut out = Vec::new();
    s.tracker.push_datagram(b"not hep", None, &mut out);
    s.tracker.push_datagram(b"HEP3\x00\x10\x00\x00\x00\x0f\x00\x0a\x00\x00\x00\x00", None, &mut out);
    assert!(out.is_empty() && s.out.is_empty());
    let u = s.tracker.unparsed();
    assert_eq!(u.by_name.get("sip/REGISTER"), Some(&1));
    assert_eq!(u.by_name.get("sip/orphan"), Some(&1));
    assert_eq!(u.by_name.get("sip/no-call-id-or-cseq"), Some(&1));
    assert_eq!(u.by_name.get("hep/error"), Some(&1));
    // A HEP packet with a payload but no protocol type is not taken for SIP.
    assert_eq!(u.by_name.get("hep/no-protocol-type"), Some(&1));
    assert_eq!(u.malformed, 2);
}

#[test]
fn config_round_trips_through_toml_like_serde() {
    let cfg = proxied_config();
    let json = serde_json::to_string(&cfg).unwrap();
    let back: SipTrackerConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, cfg);
    let parsed: SipTrackerConfig = serde_json::from_str(
        r#"{"agent_networks": ["10.1.0.0/16", "192.0.2.7"], "queues": [{"name": "q", "numbers": ["1"]}]}"#,
    )
    .unwrap();
    assert!(parsed.in_agent_network("10.1.200.3".parse().unwrap()));
    assert!(parsed.in_agent_network("192.0.2.7".parse().unwrap()));
    assert!(!parsed.in_agent_network("192.0.2.8".parse().unwrap()));
    assert_eq!(parsed.setup_timeout_s, 600);
    assert!(parsed.validate().is_ok());
    assert!(serde_json::from_str::<SipTrackerConfig>(r#"{"agent_network": []}"#).is_err());
    assert!(serde_json::from_str::<SipTrackerConfig>(r#"{"agent_networks": ["10.0.0.0/40"]}"#).is_err());
    let bad = SipTrackerConfig {
        queues: vec![QueueEntry { name: "q".into(), numbers: vec![], prefixes: vec![] }],
        ..Default::default()
    };
    assert!(bad.validate().is_err());
}

// === B2BUA legs ===

const B2BUA: &str = "10.0.0.5";

/// A call through a B2BUA at 10.0.0.5: leg "a-leg" from the caller, leg
/// "b-leg" (its own Call-ID, `b_extra` headers, HEP `b_correlation`) to
/// alice at 10.0.0.21, who answers and hangs up; or, with `cancel`, the
/// caller gives up while alice rings.
fn b2bua_call(cfg: SipTrackerConfig, a_extra: &str, b_extra: &str, b_correlation: Option<&str>, cancel: bool) -> Sim {
    let mut s = Sim::new(cfg);
    let a_to = ("2100", "-");
    let b_from = ("+33612345678", "bt");
    let push_b = |s: &mut Sim, at: i64, src: &str, dst: &str, text: &str| match b_correlation {
        None => s.push(at, src, dst, text),
        Some(c) => {
            let raw = text.replace('\n', "\r\n");
            let ip = |v: &str| -> Vec<u8> { v.parse::<std::net::Ipv4Addr>().unwrap().octets().to_vec() };
            let (src_ip, dst_ip) = (ip(src), ip(dst));
            let secs = u32::try_from((T0 + at * MS) / 1_000_000_000).unwrap();
            let usec = u32::try_from((T0 + at * MS) % 1_000_000_000 / 1_000).unwrap();
            let chunks: [(u16, &[u8]); 7] = [
                (0x0003, &src_ip),
                (0x0004, &dst_ip),
                (0x0009, &secs.to_be_bytes()),
                (0x000a, &usec.to_be_bytes()),
                (0x000b, &[1]),
                (0x0011, c.as_bytes()),
                (0x000f, raw.as_bytes()),
            ];
            let mut body = Vec::new();
            for (t, v) in chunks {
                body.extend_from_slice(&[0, 0]);
                body.extend_from_slice(&t.to_be_bytes());
                body.extend_from_slice(&u16::try_from(v.len() + 6).unwrap().to_be_bytes());
                body.extend_from_slice(v);
            }
            let mut p = b"HEP3".to_vec();
            p.extend_from_slice(&u16::try_from(body.len() + 6).unwrap().to_be_bytes());
            p.extend_from_slice(&body);
            s.tracker.push_datagram(&p, None, &mut s.out);
        }
    };
    let inv_a = msg("INVITE sip:2100@pbx SIP/2.0", "a-leg", &["z9hG4bKa"], CALLER, a_to, "1 INVITE", a_extra, SDP_ON);
    s.push(0, C, B2BUA, &inv_a);
    s.push(1, B2BUA, C, &msg("SIP/2.0 100 Trying", "a-leg", &["z9hG4bKa"], CALLER, a_to, "1 INVITE", "", ""));
    let b_to = ("2001", "-");
    let inv_b =
        msg("INVITE sip:2001@10.0.0.21 SIP/2.0", "b-leg", &["z9hG4bKb"], b_from, b_to, "1 INVITE", b_extra, SDP_ON);
    push_b(&mut s, 10, B2BUA, "10.0.0.21", &inv_b);
    let ring_b = msg("SIP/2.0 180 Ringing", "b-leg", &["z9hG4bKb"], b_from, ("2001", "al"), "1 INVITE", "", "");
    push_b(&mut s, 20, "10.0.0.21", B2BUA, &ring_b);
    let a_tagged = ("2100", "pbx");
    s.push(21, B2BUA, C, &msg("SIP/2.0 180 Ringing", "a-leg", &["z9hG4bKa"], CALLER, a_tagged, "1 INVITE", "", ""));
    if cancel {
        s.push(
            4000,
            C,
            B2BUA,
            &msg("CANCEL sip:2100@pbx SIP/2.0", "a-leg", &["z9hG4bKa"], CALLER, a_to, "1 CANCEL", "", ""),
        );
        let t = "1 INVITE";
        s.push(
            4001,
            B2BUA,
            C,
            &msg("SIP/2.0 487 Request Terminated", "a-leg", &["z9hG4bKa"], CALLER, a_tagged, t, "", ""),
        );
        let cancel_b =
            msg("CANCEL sip:2001@10.0.0.21 SIP/2.0", "b-leg", &["z9hG4bKb"], b_from, b_to, "1 CANCEL", "", "");
        push_b(&mut s, 4002, B2BUA, "10.0.0.21", &cancel_b);
        let term = msg("SIP/2.0 487 Request Terminated", "b-leg", &["z9hG4bKb"], b_from, ("2001", "al"), t, "", "");
        push_b(&mut s, 4003, "10.0.0.21", B2BUA, &term);
    } else {
        let ok_b = msg("SIP/2.0 200 OK", "b-leg", &["z9hG4bKb"], b_from, ("2001", "al"), "1 INVITE", "", SDP_ON);
        push_b(&mut s, 3000, "10.0.0.21", B2BUA, &ok_b);
        s.push(
            3001,
            B2BUA,
            C,
            &msg("SIP/2.0 200 OK", "a-leg", &["z9hG4bKa"], CALLER, a_tagged, "1 INVITE", "", SDP_ON),
        );
        let bye_b = msg("BYE sip:b2bua SIP/2.0", "b-leg", &["z9hG4bKx"], ("2001", "al"), b_from, "2 BYE", "", "");
        push_b(&mut s, 9000, "10.0.0.21", B2BUA, &bye_b);
        s.push(9001, B2BUA, C, &msg("BYE sip:c SIP/2.0", "a-leg", &["z9hG4bKy"], a_tagged, CALLER, "2 BYE", "", ""));
    }
    s.finish();
    s
}

/// Names of the event kinds with their leg, in order.
fn kinds_by_leg(s: &Sim) -> Vec<(String, String)> {
    s.out
        .iter()
        .map(|e| {
            let kind = format!("{:?}", e.kind);
            (e.leg_id.clone(), kind.split([' ', '{']).next().unwrap_or_default().to_owned())
        })
        .collect()
}

fn b2bua_config() -> SipTrackerConfig {
    SipTrackerConfig {
        agents: vec![AgentEntry { name: "alice".into(), address: Some("10.0.0.21".parse().unwrap()), extension: None }],
        ..SipTrackerConfig::default()
    }
}

#[test]
fn a_b2bua_s_two_legs_are_one_call_by_x_cid_session_id_or_hep_correlation() {
    // RFC 7989 section 10 style values: the caller's UUID, passed on by the B2BUA.
    let sid = "Session-ID: ab30317f1a784dc48ff824d0d3715d86;remote=00000000000000000000000000000000\n";
    let sid_b = "Session-ID: AB30317F1A784DC48FF824D0D3715D86;remote=47755a9de7794ba387653f2099600ef2\n";
    let runs = [
        ("X-CID", b2bua_call(b2bua_config(), "", "X-CID: a-leg\n", None, false)),
        ("Session-ID", b2bua_call(b2bua_config(), sid, sid_b, None, false)),
        ("correlation", b2bua_call(b2bua_config(), "", "", Some("a-leg"), false)),
    ];
    let a = |k: &str| ("a-leg".to_owned(), k.to_owned());
    let b = |k: &str| ("b-leg".to_owned(), k.to_owned());
    for (how, s) in runs {
        assert!(s.out.iter().all(|e| e.call_id == "a-leg"), "{how}: {:#?}", s.out);
        assert_eq!(
            kinds_by_leg(&s),
            [a("CallOffered"), a("QueueJoin"), b("Ringing"), b("Answered"), b("Hangup")],
            "{how}: {:#?}",
            s.out
        );
        assert!(
            matches!(&s.out[3].kind, EventKind::Answered { agent, queue: Some(q), .. } if agent == "alice" && q == "2100")
        );
        assert!(
            matches!(&s.out[4].kind, EventKind::Hangup { agent: Some(a), by: HangupBy::Agent, .. } if a == "alice")
        );
        assert_eq!(s.tracker.stats().linked_legs, 1, "{how}");
    }
    // With no agent rule the B2BUA, which answers the caller leg, would be
    // an agent too: linked, only the phone behind it is.
    let s = b2bua_call(SipTrackerConfig::default(), "", "X-CID: a-leg\n", None, false);
    let agents: Vec<&str> = s
        .out
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Ringing { agent, .. } | EventKind::Answered { agent, .. } => Some(agent.as_str()),
            EventKind::Hangup { agent, .. } => agent.as_deref(),
            _ => None,
        })
        .collect();
    assert_eq!(agents, ["2001", "2001", "2001"], "{:#?}", s.out);
    // Without a link the legs are two calls, the B2BUA's answer counted too.
    let none = SipTrackerConfig { link_headers: Vec::new(), ..b2bua_config() };
    let s = b2bua_call(none, "", "X-CID: a-leg\n", None, false);
    let offered = s.out.iter().filter(|e| matches!(e.kind, EventKind::CallOffered { .. })).count();
    assert_eq!((offered, s.tracker.stats().linked_legs), (2, 0));
}

#[test]
fn an_abandon_through_a_b2bua_counts_once_and_the_agent_s_ring_is_a_canceled_offer() {
    let s = b2bua_call(b2bua_config(), "", "X-CID: a-leg\n", None, true);
    let a = |k: &str| ("a-leg".to_owned(), k.to_owned());
    let b = |k: &str| ("b-leg".to_owned(), k.to_owned());
    assert_eq!(
        kinds_by_leg(&s),
        [a("CallOffered"), a("QueueJoin"), b("Ringing"), a("QueueLeave"), a("Hangup"), b("OfferMissed")],
        "{:#?}",
        s.out
    );
    assert!(matches!(s.out[3].kind, EventKind::QueueLeave { reason: LeaveReason::Abandon, .. }));
    assert!(
        matches!(&s.out[5].kind, EventKind::OfferMissed { agent, reason: MissReason::Canceled, .. } if agent == "alice")
    );
}
