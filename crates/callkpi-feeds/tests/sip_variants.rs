//! The SIP tracker against traffic that differs from the Kamailio + sipp
//! harness of `tests/sip_hep.rs`: early media and PRACK/UPDATE, parallel and
//! sequential forking, redirects, session timers, re-INVITEs that are not
//! holds, attended and retried transfers, compact and oddly cased headers,
//! packets captured out of order. Each message is written as text, parsed
//! by the crate's parser and fed to the tracker as a HEP capture point
//! would (time, source and destination address).

use std::net::IpAddr;

use callkpi_core::event::{EventKind, HangupBy, LeaveReason, MissReason, TransferKind};
use callkpi_feeds::FeedEvent;
use callkpi_feeds::sip::{AgentEntry, PacketMeta, SipMessage, SipTracker, SipTrackerConfig};

const T0: i64 = 1_700_000_000_000_000_000;
const MS: i64 = 1_000_000;

/// Proxy (the capture point) between the caller's SBC and agent phones.
const P: &str = "10.0.0.5";
const C: &str = "10.0.0.1";
const ALICE: &str = "10.0.0.21";
const BOB: &str = "10.0.0.22";
const CAROL: &str = "10.0.0.23";

fn config() -> SipTrackerConfig {
    let agent =
        |name: &str, ip: &str| AgentEntry { name: name.into(), address: Some(ip.parse().unwrap()), extension: None };
    SipTrackerConfig {
        agents: vec![agent("alice", ALICE), agent("bob", BOB), agent("carol", CAROL)],
        default_queue: Some("sales".into()),
        ..SipTrackerConfig::default()
    }
}

struct Sim {
    tracker: SipTracker,
    out: Vec<FeedEvent>,
}

impl Sim {
    fn new() -> Self {
        Self::with(config())
    }

    fn with(config: SipTrackerConfig) -> Self {
        Self { tracker: SipTracker::new(config), out: Vec::new() }
    }

    /// One captured message at `at_ms`, from `src` to `dst`.
    fn push(&mut self, at_ms: i64, src: &str, dst: &str, text: &str) {
        let msg = SipMessage::parse_datagram(text.as_bytes()).unwrap_or_else(|e| panic!("{e}: {text}"));
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        let meta = PacketMeta { time: T0 + at_ms * MS, src: ip(src), dst: ip(dst) };
        self.tracker.push_sip(&meta, &msg, &mut self.out);
    }

    fn finish(&mut self) {
        self.tracker.finish(&mut self.out);
    }

    fn kinds(&self) -> Vec<&EventKind> {
        self.out.iter().map(|e| &e.kind).collect()
    }

    fn count(&self, f: impl Fn(&EventKind) -> bool) -> usize {
        self.out.iter().filter(|e| f(&e.kind)).count()
    }

    fn offers(&self) -> usize {
        self.count(|k| matches!(k, EventKind::CallOffered { .. }))
    }

    /// (agent, reason, ring ms) of every missed offer.
    fn missed(&self) -> Vec<(String, MissReason, u64)> {
        self.out
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::OfferMissed { agent, reason, reported_ring_ms, .. } => {
                    Some((agent.clone(), *reason, reported_ring_ms.unwrap_or(u64::MAX)))
                }
                _ => None,
            })
            .collect()
    }

    fn rung(&self) -> Vec<String> {
        self.out
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Ringing { agent, .. } => Some(agent.clone()),
                _ => None,
            })
            .collect()
    }

    /// (agent, ring ms) of the answers.
    fn answers(&self) -> Vec<(String, Option<u64>)> {
        self.out
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Answered { agent, reported_ring_ms, .. } => Some((agent.clone(), *reported_ring_ms)),
                _ => None,
            })
            .collect()
    }

    fn leave_reasons(&self) -> Vec<LeaveReason> {
        self.out
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::QueueLeave { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect()
    }
}

/// A SIP message: start line, header lines (`\n`-separated, no
/// Content-Length) and an optional `(content type, body)`; CRLF line ends.
fn sip(start: &str, headers: &str, body: Option<(&str, &str)>) -> String {
    let mut s = format!("{start}\r\n");
    for h in headers.lines().map(str::trim).filter(|h| !h.is_empty()) {
        s.push_str(h);
        s.push_str("\r\n");
    }
    let body = body.map(|(ct, b)| (ct, b.replace('\n', "\r\n")));
    match &body {
        Some((ct, b)) => s.push_str(&format!("Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n{b}", b.len())),
        None => s.push_str("Content-Length: 0\r\n\r\n"),
    }
    s
}

fn vias(branches: &[&str]) -> String {
    branches.iter().map(|b| format!("Via: SIP/2.0/UDP 10.9.9.9;branch={b}\n")).collect()
}

const SDP_ON: &str = "v=0\no=- 1 1 IN IP4 10.0.0.2\ns=-\nc=IN IP4 10.0.0.2\nt=0 0\nm=audio 4000 RTP/AVP 0 8\n";
const SDP_INACTIVE: &str =
    "v=0\no=- 1 2 IN IP4 10.0.0.2\ns=-\nc=IN IP4 10.0.0.2\nt=0 0\nm=audio 4000 RTP/AVP 0\na=inactive\n";
const SDP_PCMA_ONLY: &str =
    "v=0\no=- 1 3 IN IP4 10.0.0.2\ns=-\nc=IN IP4 10.0.0.2\nt=0 0\nm=audio 4000 RTP/AVP 8\na=sendrecv\n";

/// One call from the caller (user +33612345678, From-tag `ct`, top Via
/// branch `z9hG4bKc` + `suffix`) to `called` through the proxy.
struct Call {
    cid: String,
    called: String,
    /// The caller's transaction branch.
    cb: String,
}

impl Call {
    fn new(cid: &str, called: &str) -> Self {
        Self { cid: cid.into(), called: called.into(), cb: format!("z9hG4bKc-{cid}") }
    }

    fn from(&self) -> String {
        "From: \"Dupont, Jean\" <sip:+33612345678@carrier.example>;tag=ct".into()
    }

    fn to(&self, tag: Option<&str>) -> String {
        match tag {
            Some(t) => format!("To: <sip:{}@pbx.example>;tag={t}", self.called),
            None => format!("To: <sip:{}@pbx.example>", self.called),
        }
    }

    /// The caller's INVITE as it reaches the proxy, CSeq `seq`.
    fn invite_in(&self, seq: u32, extra: &str) -> String {
        sip(
            &format!("INVITE sip:{}@pbx.example SIP/2.0", self.called),
            &format!(
                "{}{}\n{}\nCall-ID: {}\nCSeq: {seq} INVITE\nContact: <sip:+33612345678@10.0.0.1>\n{extra}",
                vias(&[&self.cb]),
                self.from(),
                self.to(None),
                self.cid
            ),
            Some(("application/sdp", SDP_ON)),
        )
    }

    /// The proxy's copy to a phone at `ext`, on fork branch `fork`.
    fn invite_out(&self, fork: &str, ext: &str, ip: &str, seq: u32) -> String {
        sip(
            &format!("INVITE sip:{ext}@{ip} SIP/2.0"),
            &format!(
                "{}{}\n{}\nCall-ID: {}\nCSeq: {seq} INVITE\n",
                vias(&[fork, &self.cb]),
                self.from(),
                self.to(None),
                self.cid
            ),
            Some(("application/sdp", SDP_ON)),
        )
    }

    /// A response to the INVITE: on the fork (`Some(fork)`), or the copy to
    /// the caller (`None`).
    fn resp(&self, status: &str, fork: Option<&str>, tag: Option<&str>, seq: u32, extra: &str) -> String {
        let v = match fork {
            Some(f) => vias(&[f, &self.cb]),
            None => vias(&[&self.cb]),
        };
        let body = status.starts_with("200").then_some(("application/sdp", SDP_ON));
        sip(
            &format!("SIP/2.0 {status}"),
            &format!("{v}{}\n{}\nCall-ID: {}\nCSeq: {seq} INVITE\n{extra}", self.from(), self.to(tag), self.cid),
            body,
        )
    }

    /// A request inside the dialog with the agent (To-tag `atag`), sent by
    /// the caller (`by_caller`) or by the agent.
    fn in_dialog(
        &self,
        method: &str,
        atag: &str,
        by_caller: bool,
        cseq: u32,
        extra: &str,
        body: Option<(&str, &str)>,
    ) -> String {
        let caller = "<sip:+33612345678@carrier.example>;tag=ct";
        let agent = format!("<sip:{}@pbx.example>;tag={atag}", self.called);
        let (from, to, branch) =
            if by_caller { (caller.to_owned(), agent, "z9hG4bKdc") } else { (agent, caller.to_owned(), "z9hG4bKda") };
        sip(
            &format!("{method} sip:peer@10.0.0.5 SIP/2.0"),
            &format!(
                "{}From: {from}\nTo: {to}\nCall-ID: {}\nCSeq: {cseq} {method}\n{extra}",
                vias(&[&format!("{branch}{method}{cseq}")]),
                self.cid
            ),
            body,
        )
    }

    /// The response to an in-dialog request.
    fn in_dialog_resp(&self, status: &str, method: &str, atag: &str, by_caller: bool, cseq: u32) -> String {
        let caller = "<sip:+33612345678@carrier.example>;tag=ct";
        let agent = format!("<sip:{}@pbx.example>;tag={atag}", self.called);
        let (from, to, branch) =
            if by_caller { (caller.to_owned(), agent, "z9hG4bKdc") } else { (agent, caller.to_owned(), "z9hG4bKda") };
        sip(
            &format!("SIP/2.0 {status}"),
            &format!(
                "{}From: {from}\nTo: {to}\nCall-ID: {}\nCSeq: {cseq} {method}\n",
                vias(&[&format!("{branch}{method}{cseq}")]),
                self.cid
            ),
            None,
        )
    }

    /// The caller's CANCEL (`fork: None`) or the proxy's to one fork.
    fn cancel(&self, fork: Option<&str>, extra: &str) -> String {
        let v = match fork {
            Some(f) => vias(&[f]),
            None => vias(&[&self.cb]),
        };
        sip(
            &format!("CANCEL sip:{}@pbx.example SIP/2.0", self.called),
            &format!("{v}{}\n{}\nCall-ID: {}\nCSeq: 1 CANCEL\n{extra}", self.from(), self.to(None), self.cid),
            None,
        )
    }
}

/// Caller INVITE in and out to alice, her 180 and 200, both copies.
fn answered_by_alice(s: &mut Sim, call: &Call, extra_200: &str) {
    s.push(0, C, P, &call.invite_in(1, ""));
    s.push(1, P, ALICE, &call.invite_out("z9hG4bKp1", "2001", ALICE, 1));
    for (at, st) in [(10, "180 Ringing"), (2010, "200 OK")] {
        let extra = if st.starts_with("200") { extra_200 } else { "" };
        s.push(at, ALICE, P, &call.resp(st, Some("z9hG4bKp1"), Some("a1"), 1, extra));
        s.push(at + 1, P, C, &call.resp(st, None, Some("a1"), 1, extra));
    }
    s.push(2020, C, P, &call.in_dialog("ACK", "a1", true, 1, "", None));
}

// === early dialogs ===

#[test]
fn early_media_183_with_prack_and_update_rings_the_agent_once() {
    let mut s = Sim::new();
    let call = Call::new("em1", "2100");
    s.push(0, C, P, &call.invite_in(1, "Supported: 100rel, timer\n"));
    s.push(0, P, C, &call.resp("100 Trying", None, None, 1, ""));
    s.push(1, P, ALICE, &call.invite_out("z9hG4bKp1", "2001", ALICE, 1));
    // The phone's own 100 Trying with a To-tag, then early media, reliable.
    s.push(3, ALICE, P, &call.resp("100 Trying", Some("z9hG4bKp1"), Some("a1"), 1, ""));
    for (src, dst, fork) in [(ALICE, P, Some("z9hG4bKp1")), (P, C, None)] {
        let r = call.resp("183 Session Progress", fork, Some("a1"), 1, "Require: 100rel\nRSeq: 1\n");
        s.push(500, src, dst, &r);
    }
    s.push(520, C, P, &call.in_dialog("PRACK", "a1", true, 2, "RAck: 1 1 INVITE\n", None));
    s.push(530, P, C, &call.in_dialog_resp("200 OK", "PRACK", "a1", true, 2));
    // A caller's UPDATE in the early dialog changes the codec: not a hold.
    s.push(700, C, P, &call.in_dialog("UPDATE", "a1", true, 3, "", Some(("application/sdp", SDP_PCMA_ONLY))));
    s.push(710, P, C, &call.in_dialog_resp("200 OK", "UPDATE", "a1", true, 3));
    // The 183 retransmitted (unPRACKed copy), then the answer.
    s.push(800, P, C, &call.resp("183 Session Progress", None, Some("a1"), 1, "RSeq: 1\n"));
    s.push(4500, ALICE, P, &call.resp("200 OK", Some("z9hG4bKp1"), Some("a1"), 1, ""));
    s.push(4501, P, C, &call.resp("200 OK", None, Some("a1"), 1, ""));
    s.push(9000, C, P, &call.in_dialog("BYE", "a1", true, 4, "", None));
    s.finish();
    assert_eq!(s.rung(), ["alice"], "{:#?}", s.kinds());
    assert_eq!(s.answers(), [("alice".to_owned(), Some(4000))]);
    assert_eq!(
        s.out.iter().find(|e| matches!(e.kind, EventKind::Ringing { .. })).unwrap().source_time,
        Some(T0 + 500 * MS)
    );
    assert!(s.missed().is_empty());
    assert_eq!(s.count(|k| matches!(k, EventKind::Hold { .. } | EventKind::Resume { .. })), 0);
    assert_eq!(s.count(|k| matches!(k, EventKind::Hangup { by: HangupBy::Caller, .. })), 1);
}

#[test]
fn a_tagless_183_then_a_tagged_answer_is_one_phone() {
    // Some gateways send early media before they pick their To-tag (or a
    // stateless element strips it): the 200 with a tag is the same phone.
    let mut s = Sim::new();
    let call = Call::new("tl1", "2001");
    s.push(0, C, P, &call.invite_in(1, ""));
    s.push(1, P, ALICE, &call.invite_out("z9hG4bKp1", "2001", ALICE, 1));
    s.push(100, ALICE, P, &call.resp("183 Session Progress", Some("z9hG4bKp1"), None, 1, ""));
    s.push(3100, ALICE, P, &call.resp("200 OK", Some("z9hG4bKp1"), Some("a1"), 1, ""));
    s.push(9000, C, P, &call.in_dialog("BYE", "a1", true, 2, "", None));
    s.finish();
    assert_eq!(s.rung(), ["alice"]);
    assert_eq!(s.answers(), [("alice".to_owned(), Some(3000))]);
    assert!(s.missed().is_empty(), "{:#?}", s.kinds());
}

#[test]
fn a_181_forwarded_notice_is_not_ringing() {
    let mut s = Sim::new();
    let call = Call::new("fw1", "2001");
    s.push(0, C, P, &call.invite_in(1, ""));
    s.push(1, P, ALICE, &call.invite_out("z9hG4bKp1", "2001", ALICE, 1));
    s.push(5, ALICE, P, &call.resp("181 Call Is Being Forwarded", Some("z9hG4bKp1"), Some("a1"), 1, ""));
    s.push(6, P, C, &call.resp("480 Temporarily Unavailable", None, Some("px"), 1, ""));
    s.finish();
    assert!(s.rung().is_empty());
    assert_eq!(s.leave_reasons(), [LeaveReason::LeaveEmpty]);
}

// === forking ===

/// A ring group 2100: alice on fork p1 and bob on fork p2 both ring, bob
/// answers at 5 s; the proxy cancels alice with RFC 3326's reason.
fn ring_all(s: &mut Sim, call: &Call, alice_487: bool) {
    s.push(0, C, P, &call.invite_in(1, ""));
    s.push(1, P, ALICE, &call.invite_out("z9hG4bKp1", "2001", ALICE, 1));
    s.push(1, P, BOB, &call.invite_out("z9hG4bKp2", "2002", BOB, 1));
    s.push(10, ALICE, P, &call.resp("180 Ringing", Some("z9hG4bKp1"), Some("a1"), 1, ""));
    s.push(11, P, C, &call.resp("180 Ringing", None, Some("a1"), 1, ""));
    s.push(20, BOB, P, &call.resp("180 Ringing", Some("z9hG4bKp2"), Some("b1"), 1, ""));
    s.push(21, P, C, &call.resp("180 Ringing", None, Some("b1"), 1, ""));
    s.push(5020, BOB, P, &call.resp("200 OK", Some("z9hG4bKp2"), Some("b1"), 1, ""));
    s.push(5021, P, C, &call.resp("200 OK", None, Some("b1"), 1, ""));
    let reason = "Reason: SIP;cause=200;text=\"Call completed elsewhere\"\n";
    s.push(5022, P, ALICE, &call.cancel(Some("z9hG4bKp1"), reason));
    if alice_487 {
        s.push(5030, ALICE, P, &call.resp("487 Request Terminated", Some("z9hG4bKp1"), Some("a1"), 1, ""));
    }
    s.push(5040, C, P, &call.in_dialog("ACK", "b1", true, 1, "", None));
    s.push(65_000, C, P, &call.in_dialog("BYE", "b1", true, 2, "", None));
    s.finish();
}

#[test]
fn ring_all_losers_are_canceled_not_missed() {
    let mut s = Sim::new();
    ring_all(&mut s, &Call::new("ra1", "2100"), true);
    assert_eq!(s.rung(), ["alice", "bob"]);
    assert_eq!(s.answers(), [("bob".to_owned(), Some(5000))]);
    assert_eq!(s.missed(), [("alice".to_owned(), MissReason::Canceled, 5020)]);
}

#[test]
fn a_losing_fork_whose_487_was_not_captured_rang_until_the_answer() {
    let mut s = Sim::new();
    ring_all(&mut s, &Call::new("ra2", "2100"), false);
    // Before: rang until the call's last message (65 s), not the answer.
    let missed = s.missed();
    assert_eq!(missed.len(), 1, "{missed:?}");
    assert_eq!((missed[0].0.as_str(), missed[0].1), ("alice", MissReason::Canceled));
    assert!((5000..=5020).contains(&missed[0].2), "ring time {} ms", missed[0].2);
}

#[test]
fn a_cancel_for_a_call_completed_elsewhere_is_neither_a_miss_nor_an_abandon() {
    // An upstream PBX rings several agents in parallel, each on its own leg;
    // one answered elsewhere, and it cancels this leg with RFC 3326's reason.
    let mut s = Sim::new();
    let call = Call::new("ce1", "2001");
    s.push(0, C, P, &call.invite_in(1, ""));
    s.push(1, P, ALICE, &call.invite_out("z9hG4bKp1", "2001", ALICE, 1));
    s.push(10, ALICE, P, &call.resp("180 Ringing", Some("z9hG4bKp1"), Some("a1"), 1, ""));
    s.push(11, P, C, &call.resp("180 Ringing", None, Some("a1"), 1, ""));
    s.push(3000, C, P, &call.cancel(None, "Reason: SIP ;cause=200 ;text=\"Call completed elsewhere\"\n"));
    s.push(
        3001,
        P,
        ALICE,
        &call.cancel(Some("z9hG4bKp1"), "Reason: SIP;cause=200;text=\"Call completed elsewhere\"\n"),
    );
    s.push(3010, ALICE, P, &call.resp("487 Request Terminated", Some("z9hG4bKp1"), Some("a1"), 1, ""));
    s.push(3011, P, C, &call.resp("487 Request Terminated", None, Some("a1"), 1, ""));
    s.finish();
    assert_eq!(s.missed(), [("alice".to_owned(), MissReason::Canceled, 3000)]);
    let k = s.kinds();
    assert!(!s.leave_reasons().contains(&LeaveReason::Abandon), "{k:#?}");
    assert!(!k.iter().any(|k| matches!(k, EventKind::Hangup { by: HangupBy::Caller, .. })), "{k:#?}");
    // The caller's plain CANCEL is still an abandon.
    let mut s = Sim::new();
    let call = Call::new("ab1", "2001");
    s.push(0, C, P, &call.invite_in(1, ""));
    s.push(1, P, ALICE, &call.invite_out("z9hG4bKp1", "2001", ALICE, 1));
    s.push(10, ALICE, P, &call.resp("180 Ringing", Some("z9hG4bKp1"), Some("a1"), 1, ""));
    s.push(3000, C, P, &call.cancel(None, "Reason: Q.850;cause=16\n"));
    s.push(3011, P, C, &call.resp("487 Request Terminated", None, Some("a1"), 1, ""));
    s.finish();
    assert_eq!(s.leave_reasons(), [LeaveReason::Abandon]);
}

#[test]
fn sequential_hunting_misses_each_branch_with_its_reason() {
    let mut s = Sim::new();
    let call = Call::new("hunt1", "2100");
    s.push(0, C, P, &call.invite_in(1, ""));
    // alice: rings 15 s, the phone gives up (480); bob: busy (486); carol
    // declines (603) ... then the next round, alice answers.
    s.push(1, P, ALICE, &call.invite_out("z9hG4bKp1", "2001", ALICE, 1));
    s.push(10, ALICE, P, &call.resp("180 Ringing", Some("z9hG4bKp1"), Some("a1"), 1, ""));
    s.push(15_010, ALICE, P, &call.resp("480 Temporarily Unavailable", Some("z9hG4bKp1"), Some("a1"), 1, ""));
    s.push(15_020, P, BOB, &call.invite_out("z9hG4bKp2", "2002", BOB, 1));
    s.push(15_030, BOB, P, &call.resp("486 Busy Here", Some("z9hG4bKp2"), Some("b1"), 1, ""));
    s.push(15_040, P, CAROL, &call.invite_out("z9hG4bKp3", "2003", CAROL, 1));
    s.push(15_050, CAROL, P, &call.resp("180 Ringing", Some("z9hG4bKp3"), Some("c1"), 1, ""));
    s.push(17_050, CAROL, P, &call.resp("603 Decline", Some("z9hG4bKp3"), Some("c1"), 1, ""));
    s.push(17_060, P, ALICE, &call.invite_out("z9hG4bKp4", "2001", ALICE, 1));
    s.push(17_070, ALICE, P, &call.resp("180 Ringing", Some("z9hG4bKp4"), Some("a2"), 1, ""));
    s.push(19_070, ALICE, P, &call.resp("200 OK", Some("z9hG4bKp4"), Some("a2"), 1, ""));
    s.push(19_071, P, C, &call.resp("200 OK", None, Some("a2"), 1, ""));
    s.push(29_000, ALICE, P, &call.in_dialog("BYE", "a2", false, 1, "", None));
    s.finish();
    assert_eq!(
        s.missed(),
        [
            ("alice".to_owned(), MissReason::NoAnswer, 15_000),
            ("bob".to_owned(), MissReason::Rejected, 0),
            ("carol".to_owned(), MissReason::Rejected, 2000),
        ]
    );
    assert_eq!(s.answers(), [("alice".to_owned(), Some(2000))]);
    assert_eq!(s.count(|k| matches!(k, EventKind::Hangup { by: HangupBy::Agent, .. })), 1);
}

// === redirects ===

#[test]
fn a_redirect_relayed_to_the_caller_then_followed_is_one_answered_call() {
    // RFC 3261 section 8.1.3.4: the caller follows a 302 with a new INVITE,
    // same Call-ID, From and To, higher CSeq.
    let mut s = Sim::new();
    let call = Call::new("rd1", "2001");
    s.push(0, C, P, &call.invite_in(1, ""));
    s.push(1, P, ALICE, &call.invite_out("z9hG4bKp1", "2001", ALICE, 1));
    let contact = "Contact: <sip:2002@10.0.0.22>\n";
    s.push(5, ALICE, P, &call.resp("302 Moved Temporarily", Some("z9hG4bKp1"), Some("a1"), 1, contact));
    s.push(6, P, C, &call.resp("302 Moved Temporarily", None, Some("a1"), 1, contact));
    s.push(7, C, P, &call.in_dialog("ACK", "a1", true, 1, "", None));
    let mut second = Call::new("rd1", "2001");
    second.cb = "z9hG4bKc-rd1-2".into();
    s.push(50, C, P, &second.invite_in(2, ""));
    s.push(51, P, BOB, &second.invite_out("z9hG4bKp2", "2002", BOB, 2));
    s.push(60, BOB, P, &second.resp("180 Ringing", Some("z9hG4bKp2"), Some("b1"), 2, ""));
    s.push(3060, BOB, P, &second.resp("200 OK", Some("z9hG4bKp2"), Some("b1"), 2, ""));
    s.push(3061, P, C, &second.resp("200 OK", None, Some("b1"), 2, ""));
    s.push(9000, C, P, &second.in_dialog("BYE", "b1", true, 3, "", None));
    s.finish();
    let k = s.kinds();
    assert_eq!(s.offers(), 1, "{k:#?}");
    assert_eq!(s.answers(), [("bob".to_owned(), Some(3000))], "{k:#?}");
    assert!(s.leave_reasons().is_empty(), "{k:#?}");
    assert_eq!(s.count(|k| matches!(k, EventKind::Hangup { by: HangupBy::Caller, agent: Some(_), .. })), 1);
    // The redirecting phone did not take the call.
    assert_eq!(s.missed(), [("alice".to_owned(), MissReason::NoAnswer, 0)]);
}

#[test]
fn a_redirect_not_followed_ends_the_call_at_the_redirect() {
    let cfg = SipTrackerConfig { linger_s: 5, ..config() };
    let mut s = Sim::with(cfg);
    let call = Call::new("rd2", "2001");
    s.push(0, C, P, &call.invite_in(1, ""));
    s.push(6, P, C, &call.resp("302 Moved Temporarily", None, Some("px"), 1, "Contact: <sip:x@y>\n"));
    // Another call moves time on past the redirect's linger.
    s.push(40_000, C, P, &Call::new("other", "2002").invite_in(1, ""));
    let ends: Vec<_> =
        s.out.iter().filter(|e| e.call_id == "rd2" && matches!(e.kind, EventKind::Hangup { .. })).collect();
    assert_eq!(ends.len(), 1, "{:#?}", s.kinds());
    assert_eq!(ends[0].source_time, Some(T0 + 6 * MS));
    assert_eq!(s.leave_reasons(), [LeaveReason::Unspecified]);
}

// === re-INVITEs ===

#[test]
fn session_refresh_codec_change_and_sdpless_reinvites_are_not_holds() {
    let mut s = Sim::new();
    let call = Call::new("re1", "2001");
    answered_by_alice(&mut s, &call, "Session-Expires: 90;refresher=uac\nRequire: timer\n");
    // The caller's refresh (same SDP), the agent's codec change, an
    // SDP-less re-INVITE (offer in the 200, answer in the ACK).
    let se = "Session-Expires: 90;refresher=uac\n";
    s.push(40_000, C, P, &call.in_dialog("INVITE", "a1", true, 2, se, Some(("application/sdp", SDP_ON))));
    s.push(41_000, ALICE, P, &call.in_dialog("INVITE", "a1", false, 1, "", Some(("application/sdp", SDP_PCMA_ONLY))));
    s.push(42_000, ALICE, P, &call.in_dialog("UPDATE", "a1", false, 2, se, None));
    s.push(43_000, C, P, &call.in_dialog("INVITE", "a1", true, 3, "", None));
    // Hold with a=inactive, resume with no direction attribute at all.
    s.push(50_000, ALICE, P, &call.in_dialog("INVITE", "a1", false, 3, "", Some(("application/sdp", SDP_INACTIVE))));
    s.push(50_010, C, ALICE, &call.in_dialog_resp("200 OK", "INVITE", "a1", false, 3));
    s.push(60_000, ALICE, P, &call.in_dialog("INVITE", "a1", false, 4, "", Some(("application/sdp", SDP_ON))));
    s.push(70_000, ALICE, P, &call.in_dialog("BYE", "a1", false, 5, "", None));
    s.finish();
    let k = s.kinds();
    let holds: Vec<_> = s
        .out
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Hold { .. } | EventKind::Resume { .. }))
        .map(|e| (matches!(e.kind, EventKind::Hold { .. }), (e.source_time.unwrap() - T0) / MS))
        .collect();
    assert_eq!(holds, [(true, 50_000), (false, 60_000)], "{k:#?}");
    assert_eq!(s.count(|k| matches!(k, EventKind::Hangup { by: HangupBy::Agent, .. })), 1);
}

#[test]
fn a_hold_the_caller_refused_is_no_hold() {
    // 491 Request Pending (glare, RFC 3261 section 14.1) or 488: the
    // session did not change.
    let mut s = Sim::new();
    let call = Call::new("re2", "2001");
    answered_by_alice(&mut s, &call, "");
    s.push(10_000, ALICE, P, &call.in_dialog("INVITE", "a1", false, 1, "", Some(("application/sdp", SDP_INACTIVE))));
    s.push(10_020, C, P, &call.in_dialog_resp("491 Request Pending", "INVITE", "a1", false, 1));
    // Retried later, accepted this time.
    s.push(12_000, ALICE, P, &call.in_dialog("INVITE", "a1", false, 2, "", Some(("application/sdp", SDP_INACTIVE))));
    s.push(12_020, C, P, &call.in_dialog_resp("200 OK", "INVITE", "a1", false, 2));
    s.push(20_000, ALICE, P, &call.in_dialog("INVITE", "a1", false, 3, "", Some(("application/sdp", SDP_ON))));
    s.push(20_020, C, P, &call.in_dialog_resp("200 OK", "INVITE", "a1", false, 3));
    s.push(30_000, C, P, &call.in_dialog("BYE", "a1", true, 2, "", None));
    s.finish();
    let k = s.kinds();
    let holds: Vec<_> = s
        .out
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Hold { .. } | EventKind::Resume { .. }))
        .map(|e| (matches!(e.kind, EventKind::Hold { .. }), (e.source_time.unwrap() - T0) / MS))
        .collect();
    assert_eq!(holds, [(true, 12_000), (false, 20_000)], "{k:#?}");
}

// === ends ===

#[test]
fn bye_by_either_side_and_a_bye_answered_481() {
    for (by_caller, want) in [(true, HangupBy::Caller), (false, HangupBy::Agent)] {
        let mut s = Sim::new();
        let call = Call::new("bye1", "2001");
        answered_by_alice(&mut s, &call, "");
        s.push(9000, if by_caller { C } else { ALICE }, P, &call.in_dialog("BYE", "a1", by_caller, 7, "", None));
        s.push(9010, P, C, &call.in_dialog_resp("481 Call/Transaction Does Not Exist", "BYE", "a1", by_caller, 7));
        // The other side's BYE crossing it changes nothing.
        s.push(9005, if by_caller { ALICE } else { C }, P, &call.in_dialog("BYE", "a1", !by_caller, 8, "", None));
        s.finish();
        let hangups: Vec<_> = s
            .out
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Hangup { by, agent, .. } => Some((*by, agent.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(hangups, [(want, Some("alice".to_owned()))]);
    }
}

#[test]
fn a_call_whose_session_timer_expired_is_dropped_after_the_session_interval() {
    // RFC 4028: no refresh within Session-Expires means the session is over,
    // even if no BYE was captured; keeping it for call_timeout_s (4 h)
    // would hold the call open, and the agent busy, for hours.
    let mut s = Sim::new();
    let call = Call::new("st1", "2001");
    answered_by_alice(&mut s, &call, "Session-Expires: 120;refresher=uas\nRequire: timer\n");
    s.tracker.expire(T0 + 100_000 * MS, &mut s.out);
    assert_eq!(s.tracker.active_calls(), 1, "not yet expired");
    // A refresh at 100 s restarts the interval.
    s.push(100_000, ALICE, P, &call.in_dialog("UPDATE", "a1", false, 1, "Session-Expires: 120;refresher=uas\n", None));
    s.tracker.expire(T0 + 200_000 * MS, &mut s.out);
    assert_eq!(s.tracker.active_calls(), 1, "refreshed at 100 s");
    s.tracker.expire(T0 + 300_000 * MS, &mut s.out);
    assert_eq!(s.tracker.active_calls(), 0, "expired 120 s (+ margin) after the last refresh");
    assert_eq!(s.tracker.stats().expired, 1);
    // No invented hang-up: the engine closes it as an unknown end.
    assert_eq!(s.count(|k| matches!(k, EventKind::Hangup { .. })), 0);
}

// === transfers ===

#[test]
fn attended_transfer_with_replaces_is_not_a_new_offered_call() {
    // RFC 5589 section 7: alice consults bob (call "consult"), then REFERs
    // the caller to bob with Replaces; the caller's INVITE to bob carries a
    // Replaces header (RFC 3891). It continues the caller's call.
    let mut s = Sim::new();
    let call = Call::new("at1", "2001");
    answered_by_alice(&mut s, &call, "");
    let consult_invite = sip(
        "INVITE sip:2002@pbx.example SIP/2.0",
        "Via: SIP/2.0/UDP 10.0.0.21;branch=z9hG4bKcons\nFrom: <sip:2001@pbx.example>;tag=k1\n\
         To: <sip:2002@pbx.example>\nCall-ID: consult\nCSeq: 1 INVITE\n",
        Some(("application/sdp", SDP_ON)),
    );
    s.push(10_000, ALICE, P, &consult_invite);
    let refer_to = "Refer-To: <sip:2002@pbx.example?Replaces=consult%3Bto-tag%3Dk2%3Bfrom-tag%3Dk1>\n\
                    Referred-By: <sip:2001@pbx.example>\n";
    s.push(20_000, ALICE, P, &call.in_dialog("REFER", "a1", false, 2, refer_to, None));
    s.push(20_010, C, P, &call.in_dialog_resp("202 Accepted", "REFER", "a1", false, 2));
    // The caller's new INVITE to bob, replacing the consultation.
    let new_leg = sip(
        "INVITE sip:2002@pbx.example SIP/2.0",
        "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKnew\n\
         From: \"Dupont, Jean\" <sip:+33612345678@carrier.example>;tag=n1\n\
         To: <sip:2002@pbx.example>\nCall-ID: newleg\nCSeq: 1 INVITE\n\
         Replaces: consult;to-tag=k2;from-tag=k1\nReferred-By: <sip:2001@pbx.example>\n",
        Some(("application/sdp", SDP_ON)),
    );
    s.push(20_100, C, P, &new_leg);
    let ok = sip(
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKnew\n\
         From: \"Dupont, Jean\" <sip:+33612345678@carrier.example>;tag=n1\n\
         To: <sip:2002@pbx.example>;tag=bb\nCall-ID: newleg\nCSeq: 1 INVITE\nContact: <sip:2002@10.0.0.22>\n",
        Some(("application/sdp", SDP_ON)),
    );
    s.push(20_200, BOB, C, &ok);
    s.push(
        20_300,
        C,
        P,
        &call.in_dialog("NOTIFY", "a1", true, 3, "Event: refer\n", Some(("message/sipfrag", "SIP/2.0 200 OK\n"))),
    );
    s.push(20_400, ALICE, P, &call.in_dialog("BYE", "a1", false, 3, "", None));
    s.finish();
    let k = s.kinds();
    // The original call and alice's consultation: no third offered call.
    assert_eq!(s.offers(), 2, "{k:#?}");
    assert_eq!(s.count(|k| matches!(k, EventKind::QueueJoin { .. })), 1, "{k:#?}");
    let t: Vec<_> = s.out.iter().filter(|e| matches!(e.kind, EventKind::Transfer { .. })).collect();
    assert_eq!(t.len(), 1);
    assert!(matches!(&t[0].kind, EventKind::Transfer { kind: TransferKind::Attended, target, .. } if target == "2002"));
    // bob's answer of the new leg belongs to the original call.
    let bob = s.out.iter().find(|e| e.leg_id == "newleg" && matches!(e.kind, EventKind::Answered { .. }));
    assert_eq!(bob.map(|e| e.call_id.as_str()), Some("at1"), "{k:#?}");
}

#[test]
fn a_second_refer_after_a_failed_one_is_the_transfer() {
    let mut s = Sim::new();
    let call = Call::new("rt1", "2001");
    answered_by_alice(&mut s, &call, "");
    let refer = |to: &str| format!("Refer-To: <sip:{to}@pbx.example>\n");
    s.push(10_000, ALICE, P, &call.in_dialog("REFER", "a1", false, 2, &refer("2002"), None));
    s.push(10_010, C, P, &call.in_dialog_resp("202 Accepted", "REFER", "a1", false, 2));
    fn frag(st: &str) -> Option<(&str, &str)> {
        Some(("message/sipfrag;version=2.0", st))
    }
    let ev = "o: refer;id=2\nSubscription-State: terminated;reason=noresource\n";
    s.push(25_000, C, P, &call.in_dialog("NOTIFY", "a1", true, 3, ev, frag("SIP/2.0 486 Busy Here\n")));
    // The agent tries another colleague.
    s.push(30_000, ALICE, P, &call.in_dialog("REFER", "a1", false, 3, &refer("2003"), None));
    s.push(30_010, C, P, &call.in_dialog_resp("202 Accepted", "REFER", "a1", false, 3));
    // The first REFER's final NOTIFY retransmitted: about REFER 2, not 3.
    s.push(30_500, C, P, &call.in_dialog("NOTIFY", "a1", true, 3, ev, frag("SIP/2.0 486 Busy Here\n")));
    s.push(32_000, C, P, &call.in_dialog("NOTIFY", "a1", true, 4, "Event: refer;id=3\n", frag("SIP/2.0 200 OK\n")));
    s.push(32_100, ALICE, P, &call.in_dialog("BYE", "a1", false, 4, "", None));
    s.finish();
    let k = s.kinds();
    let t: Vec<_> = s
        .out
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Transfer { target, kind, .. } => {
                Some((target.as_str(), *kind, (e.source_time.unwrap() - T0) / MS))
            }
            _ => None,
        })
        .collect();
    assert_eq!(t, [("2003", TransferKind::Blind, 30_000)], "{k:#?}");
    assert_eq!(s.count(|k| matches!(k, EventKind::Hangup { .. })), 0, "{k:#?}");
}

// === syntax seen in the field ===

#[test]
fn compact_and_oddly_cased_headers_are_the_same_call() {
    let mut s = Sim::new();
    // Compact forms, lower/upper case names, a multi-value Via, a quoted
    // comma in the display name, a Call-ID with @host, bare LF line ends.
    let invite = "INVITE sip:2001@pbx.example SIP/2.0\n\
        v: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKp1, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKcx\n\
        f: \"Dupont, Jean\" <sip:+33612345678@carrier.example>;tag=CT\n\
        t: <sip:2001@pbx.example>\n\
        i: 1a2b3c@10.0.0.1\n\
        cseq: 1 INVITE\n\
        k: 100rel\n\
        l: 0\n\n";
    s.push(0, P, ALICE, invite);
    let ringing = "SIP/2.0 180 Ringing\n\
        VIA: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKp1\n\
        via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKcx\n\
        FROM: \"Dupont, Jean\" <sip:+33612345678@carrier.example>;tag=CT\n\
        TO: <sip:2001@pbx.example>;tag=A1\n\
        CALL-ID: 1a2b3c@10.0.0.1\n\
        CSEQ: 1 INVITE\n\
        Content-Length: 0\n\n";
    s.push(10, ALICE, P, ringing);
    let ok = ringing.replace("180 Ringing", "200 OK");
    s.push(2010, ALICE, P, &ok);
    let bye = "BYE sip:2001@10.0.0.21 SIP/2.0\n\
        v: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKbye\n\
        f: <sip:+33612345678@carrier.example>;tag=CT\n\
        t: \"Agent, A\" <sip:2001@pbx.example>;tag=A1\n\
        i: 1a2b3c@10.0.0.1\n\
        CSeq: 2 BYE\n\
        Reason: Q.850 ;cause=16 ;text=\"Normal, clearing\"\n\
        l: 0\n\n";
    s.push(8000, C, ALICE, bye);
    s.finish();
    let k = s.kinds();
    assert_eq!(s.offers(), 1, "{k:#?}");
    assert!(
        matches!(k[0], EventKind::CallOffered { caller, called, .. } if caller == "+33612345678" && called == "2001")
    );
    assert_eq!(s.rung(), ["alice"]);
    assert_eq!(s.answers(), [("alice".to_owned(), Some(2000))]);
    assert!(
        k.iter().any(|k| matches!(k, EventKind::Hangup { by: HangupBy::Caller, cause: Some(16), agent: Some(a), .. } if a == "alice")),
        "{k:#?}"
    );
}

// === capture order ===

#[test]
fn a_response_captured_a_few_ms_before_its_invite_still_counts() {
    // Two capture nodes: the phone's 180 and 200 reach the collector before
    // the proxy's copy of the INVITE does.
    let mut s = Sim::new();
    let call = Call::new("ooo1", "2001");
    s.push(5, ALICE, P, &call.resp("180 Ringing", Some("z9hG4bKp1"), Some("a1"), 1, ""));
    s.push(0, C, P, &call.invite_in(1, ""));
    s.push(1, P, ALICE, &call.invite_out("z9hG4bKp1", "2001", ALICE, 1));
    s.push(2006, P, C, &call.resp("200 OK", None, Some("a1"), 1, ""));
    s.push(2005, ALICE, P, &call.resp("200 OK", Some("z9hG4bKp1"), Some("a1"), 1, ""));
    s.push(9000, C, P, &call.in_dialog("BYE", "a1", true, 2, "", None));
    s.finish();
    let k = s.kinds();
    assert_eq!(s.rung(), ["alice"], "{k:#?}");
    // Answered at the first copy captured (the caller's, 1 ms after the phone's).
    assert_eq!(s.answers(), [("alice".to_owned(), Some(2001))], "{k:#?}");
    assert_eq!(s.count(|k| matches!(k, EventKind::Hangup { by: HangupBy::Caller, .. })), 1);
    assert_eq!(s.tracker.unparsed().by_name.get("sip/orphan"), None);
    // A response whose INVITE never comes is an orphan once the wait is over.
    let mut s = Sim::new();
    s.push(0, ALICE, P, &Call::new("lost", "2001").resp("180 Ringing", Some("z9hG4bKp1"), Some("a1"), 1, ""));
    s.push(5000, C, P, &Call::new("later", "2002").invite_in(1, ""));
    assert_eq!(s.tracker.unparsed().by_name.get("sip/orphan"), Some(&1));
    assert_eq!(s.offers(), 1);
}

// === transport ===

/// A HEPv3 datagram (RFC-less but de facto: sipcapture's HEP3 chunks)
/// carrying `payload` as SIP over TCP, from `src` to `dst` at `at_ms`.
fn hep3(at_ms: i64, src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let t = T0 + at_ms * MS;
    let (sec, usec) = (u32::try_from(t / 1_000_000_000).unwrap(), u32::try_from(t % 1_000_000_000 / 1000).unwrap());
    let mut chunks = Vec::new();
    let mut chunk = |kind: u16, v: &[u8]| {
        chunks.extend_from_slice(&0u16.to_be_bytes());
        chunks.extend_from_slice(&kind.to_be_bytes());
        chunks.extend_from_slice(&u16::try_from(v.len() + 6).unwrap().to_be_bytes());
        chunks.extend_from_slice(v);
    };
    chunk(1, &[2]);
    chunk(2, &[6]);
    chunk(3, &src);
    chunk(4, &dst);
    chunk(7, &5060u16.to_be_bytes());
    chunk(8, &5060u16.to_be_bytes());
    chunk(9, &sec.to_be_bytes());
    chunk(10, &usec.to_be_bytes());
    chunk(11, &[1]);
    chunk(12, &2001u32.to_be_bytes());
    chunk(15, payload);
    let mut d = b"HEP3".to_vec();
    d.extend_from_slice(&u16::try_from(chunks.len() + 6).unwrap().to_be_bytes());
    d.extend_from_slice(&chunks);
    d
}

#[test]
fn several_messages_in_one_tcp_segment_are_each_processed() {
    let mut s = Sim::new();
    let call = Call::new("tcp1", "2001");
    let mut out = Vec::new();
    let (c, p, alice) = ([10, 0, 0, 1], [10, 0, 0, 5], [10, 0, 0, 21]);
    s.tracker.push_datagram(&hep3(0, c, p, call.invite_in(1, "").as_bytes()), None, &mut out);
    s.tracker.push_datagram(
        &hep3(1, p, alice, call.invite_out("z9hG4bKp1", "2001", ALICE, 1).as_bytes()),
        None,
        &mut out,
    );
    // The phone's 180 and 200 coalesced in one segment, with keep-alive CRLFs.
    let mut seg = call.resp("180 Ringing", Some("z9hG4bKp1"), Some("a1"), 1, "").into_bytes();
    seg.extend_from_slice(b"\r\n\r\n");
    seg.extend_from_slice(call.resp("200 OK", Some("z9hG4bKp1"), Some("a1"), 1, "").as_bytes());
    s.tracker.push_datagram(&hep3(2000, alice, p, &seg), None, &mut out);
    s.out = out;
    assert_eq!(s.rung(), ["alice"], "{:#?}", s.kinds());
    assert_eq!(s.answers(), [("alice".to_owned(), Some(0))]);
    assert_eq!(s.tracker.stats().messages, 4);
    assert_eq!(s.tracker.stats().sip_errors, 0);
}

#[test]
fn a_caller_without_via_branches_rfc2543_can_still_abandon() {
    // Old gateways send no branch parameter (RFC 3261 section 17.2.3 falls
    // back to the Via's sent-by to match transactions).
    let mut s = Sim::new();
    let head = |start: &str, via: &str, to_tag: &str, cseq: &str| {
        sip(
            start,
            &format!(
                "{via}From: <sip:+33612345678@carrier.example>;tag=ct\nTo: <sip:2001@pbx.example>{to_tag}\n\
                 Call-ID: old1\nCSeq: {cseq}\n"
            ),
            None,
        )
    };
    let caller_via = "Via: SIP/2.0/UDP 10.0.0.1:5060\n";
    let both = format!("Via: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKp1\n{caller_via}");
    s.push(0, C, P, &head("INVITE sip:2001@pbx.example SIP/2.0", caller_via, "", "1 INVITE"));
    s.push(1, P, ALICE, &head("INVITE sip:2001@10.0.0.21 SIP/2.0", &both, "", "1 INVITE"));
    s.push(10, ALICE, P, &head("SIP/2.0 180 Ringing", &both, ";tag=a1", "1 INVITE"));
    s.push(11, P, C, &head("SIP/2.0 180 Ringing", caller_via, ";tag=a1", "1 INVITE"));
    s.push(4000, C, P, &head("CANCEL sip:2001@pbx.example SIP/2.0", caller_via, "", "1 CANCEL"));
    s.push(
        4001,
        P,
        ALICE,
        &head("CANCEL sip:2001@10.0.0.21 SIP/2.0", "Via: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKp1\n", "", "1 CANCEL"),
    );
    s.push(4010, ALICE, P, &head("SIP/2.0 487 Request Terminated", &both, ";tag=a1", "1 INVITE"));
    s.push(4011, P, C, &head("SIP/2.0 487 Request Terminated", caller_via, ";tag=a1", "1 INVITE"));
    let k = s.kinds();
    assert_eq!(s.leave_reasons(), [LeaveReason::Abandon], "{k:#?}");
    assert_eq!(s.missed(), [("alice".to_owned(), MissReason::Canceled, 4000)]);
    assert_eq!(s.count(|k| matches!(k, EventKind::Hangup { by: HangupBy::Caller, .. })), 1);
}

// === races and retransmissions ===

#[test]
fn a_cancel_before_any_provisional_is_an_abandon_without_ringing() {
    let mut s = Sim::new();
    let call = Call::new("cx1", "2001");
    s.push(0, C, P, &call.invite_in(1, ""));
    s.push(1, P, C, &call.resp("100 Trying", None, None, 1, ""));
    s.push(1, P, ALICE, &call.invite_out("z9hG4bKp1", "2001", ALICE, 1));
    s.push(300, C, P, &call.cancel(None, ""));
    s.push(301, P, ALICE, &call.cancel(Some("z9hG4bKp1"), ""));
    s.push(310, ALICE, P, &call.resp("487 Request Terminated", Some("z9hG4bKp1"), Some("a1"), 1, ""));
    s.push(311, P, C, &call.resp("487 Request Terminated", None, Some("a1"), 1, ""));
    // ACK for the non-2xx final, hop by hop.
    s.push(312, C, P, &call.in_dialog("ACK", "a1", true, 1, "", None));
    s.finish();
    assert!(s.rung().is_empty());
    assert_eq!(s.leave_reasons(), [LeaveReason::Abandon]);
    // Canceled offers are not missed-offer KPIs; no ring time.
    assert_eq!(s.missed(), [("alice".to_owned(), MissReason::Canceled, 0)]);
}

#[test]
fn a_cancel_after_the_answer_and_a_lost_ack_change_nothing() {
    let mut s = Sim::new();
    let call = Call::new("cx2", "2001");
    answered_by_alice(&mut s, &call, "");
    // The caller's CANCEL crossed the 200; the ACK was lost, so the caller
    // retransmits its INVITE and the phone its 200.
    s.push(2015, C, P, &call.cancel(None, ""));
    s.push(2500, C, P, &call.invite_in(1, ""));
    s.push(2600, ALICE, P, &call.resp("200 OK", Some("z9hG4bKp1"), Some("a1"), 1, ""));
    s.push(2601, P, C, &call.resp("200 OK", None, Some("a1"), 1, ""));
    s.push(9000, ALICE, P, &call.in_dialog("BYE", "a1", false, 2, "", None));
    s.finish();
    let k = s.kinds();
    assert_eq!(s.offers(), 1);
    assert_eq!(s.answers(), [("alice".to_owned(), Some(2000))], "{k:#?}");
    assert!(s.leave_reasons().is_empty() && s.missed().is_empty(), "{k:#?}");
    assert_eq!(s.count(|k| matches!(k, EventKind::Hangup { by: HangupBy::Agent, .. })), 1);
}

#[test]
fn two_devices_of_one_agent_forked_in_parallel_are_one_offer() {
    // Desk phone and softphone registered on extension 2002: the proxy
    // forks to both contacts; the agent is rung once, not missed when the
    // device she did not use is cancelled.
    let cfg = SipTrackerConfig {
        agents: vec![AgentEntry { name: "bob".into(), address: None, extension: Some("2002".into()) }],
        default_queue: Some("sales".into()),
        ..SipTrackerConfig::default()
    };
    let mut s = Sim::with(cfg);
    let call = Call::new("dev1", "2002");
    s.push(0, C, P, &call.invite_in(1, ""));
    s.push(1, P, "10.0.0.40", &call.invite_out("z9hG4bKp1", "2002", "10.0.0.40", 1));
    s.push(1, P, "10.0.0.41", &call.invite_out("z9hG4bKp2", "2002", "10.0.0.41", 1));
    s.push(10, "10.0.0.40", P, &call.resp("180 Ringing", Some("z9hG4bKp1"), Some("d1"), 1, ""));
    s.push(30, "10.0.0.41", P, &call.resp("180 Ringing", Some("z9hG4bKp2"), Some("d2"), 1, ""));
    s.push(4010, "10.0.0.41", P, &call.resp("200 OK", Some("z9hG4bKp2"), Some("d2"), 1, ""));
    s.push(4011, P, C, &call.resp("200 OK", None, Some("d2"), 1, ""));
    s.push(
        4012,
        P,
        "10.0.0.40",
        &call.cancel(Some("z9hG4bKp1"), "Reason: SIP;cause=200;text=\"Call completed elsewhere\"\n"),
    );
    s.push(4020, "10.0.0.40", P, &call.resp("487 Request Terminated", Some("z9hG4bKp1"), Some("d1"), 1, ""));
    s.push(9000, C, P, &call.in_dialog("BYE", "d2", true, 2, "", None));
    s.finish();
    let k = s.kinds();
    assert_eq!(s.rung(), ["bob"], "{k:#?}");
    assert_eq!(s.answers(), [("bob".to_owned(), Some(4000))], "{k:#?}");
    assert!(s.missed().is_empty(), "{k:#?}");
}
