//! The HEP decoder and SIP tracker against a real recording: Kamailio 5.6.3
//! proxying 50 sipp calls and mirroring them as HEPv3
//! (`tests/fixtures/sip-hep/`, see its README), checked against the ground
//! truth computed from sipp's own logs, then through the KPI engine.

use std::collections::{BTreeMap, BTreeSet};

use callkpi_core::event::{
    EventId, EventKind, HangupBy, LeaveReason, MissReason, NANOS_PER_MS, SourceKind, TransferKind, UnixNanos,
};
use callkpi_core::params::{GroupBy, KpiParams};
use callkpi_core::time::Interval;
use callkpi_core::{Engine, EngineConfig};
use callkpi_feeds::hep::capture::{self, CaptureFormat};
use callkpi_feeds::hep::{HepPacket, proto};
use callkpi_feeds::sip::{AgentEntry, QueueEntry, SipMessage, SipTracker, SipTrackerConfig};
use callkpi_feeds::{CaptureTime, FeedEvent};
use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/sip-hep");
/// Ring, answer, talk and hold times must match sipp's within this.
const TOLERANCE_MS: i64 = 100;

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{DIR}/{name}")).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn truth() -> Value {
    serde_json::from_slice(&read("ground_truth.json")).expect("ground_truth.json")
}

/// The harness's agents (kamailio.cfg: 2001 -> 127.0.0.3, ...), named by
/// address, and its ring group as a queue; every other inbound call is in
/// the "direct" queue.
pub fn harness_config() -> SipTrackerConfig {
    let agents = (1..=6)
        .map(|n| AgentEntry {
            name: format!("200{n}"),
            address: Some(format!("127.0.0.{}", n + 2).parse().unwrap()),
            extension: None,
        })
        .collect();
    SipTrackerConfig {
        agents,
        queues: vec![QueueEntry { name: "group".into(), numbers: vec!["2100".into()], prefixes: vec![] }],
        default_queue: Some("direct".into()),
        ..SipTrackerConfig::default()
    }
}

fn agent_of_ip(ip: &str) -> String {
    let last: u8 = ip.rsplit('.').next().unwrap().parse().unwrap();
    format!("200{}", last - 2)
}

fn track(bytes: &[u8], config: SipTrackerConfig) -> (Vec<FeedEvent>, SipTracker) {
    let mut tracker = SipTracker::new(config);
    let mut out = Vec::new();
    for d in capture::datagrams(bytes) {
        let d = d.expect("readable capture");
        tracker.push_datagram(d.data, d.time, &mut out);
    }
    tracker.finish(&mut out);
    (out, tracker)
}

fn t_ns(v: &Value) -> UnixNanos {
    (v.as_f64().expect("a time") * 1e9).round() as i64
}

fn close(what: &str, call: &str, ours: UnixNanos, theirs: UnixNanos) {
    let d = (ours - theirs) / NANOS_PER_MS;
    assert!(d.abs() <= TOLERANCE_MS, "{call}: {what} differs from sipp's by {d} ms");
}

fn time(e: &FeedEvent) -> UnixNanos {
    e.source_time.expect("HEP events carry the HEP time")
}

#[test]
fn raw_file_decodes_every_datagram_as_hep3_sip() {
    let bytes = read("hep.raw");
    assert_eq!(capture::detect(&bytes), CaptureFormat::LengthPrefixed);
    let summary: Value = serde_json::from_slice(&read("hep_summary.json")).unwrap();
    let mut n = 0;
    let mut methods: BTreeMap<String, u64> = BTreeMap::new();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    for d in capture::datagrams(&bytes) {
        let d = d.unwrap();
        let p = HepPacket::decode(d.data).unwrap_or_else(|e| panic!("datagram {n}: {e}"));
        n += 1;
        assert_eq!(p.version, 3);
        assert_eq!(p.proto_type, Some(proto::SIP));
        assert_eq!(p.capture_id, Some(2001));
        assert_eq!((p.ip_family, p.ip_proto), (Some(2), Some(17)));
        assert!(p.src_ip.is_some() && p.dst_ip.is_some() && p.src_port.is_some() && p.dst_port.is_some());
        assert!(p.timestamp().is_some());
        assert_eq!(p.skipped_chunks, 0);
        let msg = SipMessage::parse_datagram(p.payload.unwrap()).unwrap_or_else(|e| panic!("datagram {n}: {e}"));
        assert!(msg.call_id().is_some() && msg.cseq().is_some());
        match (msg.method(), msg.status()) {
            (Some(m), None) => *methods.entry(m.to_string()).or_default() += 1,
            (None, Some(code)) => *statuses.entry(format!("{code} {}", msg.cseq().unwrap().method)).or_default() += 1,
            _ => unreachable!(),
        }
    }
    // The harness's own decoder (hep_listen.py) counted the same.
    assert_eq!(n, summary["packets"].as_u64().unwrap());
    let want = |k: &str| -> BTreeMap<String, u64> {
        summary[k].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap())).collect()
    };
    assert_eq!(methods, want("sip_methods"));
    assert_eq!(statuses, want("sip_statuses"));
}

#[test]
fn pcap_excerpt_holds_the_same_datagrams_as_the_raw_file() {
    // The first 120 frames tshark captured, and the raw records: the same
    // bytes, though tshark and the socket may order simultaneous ones apart.
    let pcap = read("hep-first-120.pcap");
    assert_eq!(capture::detect(&pcap), CaptureFormat::Pcap);
    let mut it = capture::datagrams(&pcap);
    let frames: Vec<_> = it.by_ref().map(|d| d.expect("readable pcap")).collect();
    assert_eq!(frames.len(), 120);
    assert_eq!(it.skipped(), 0);
    for f in &frames {
        assert_eq!(f.dst.unwrap().to_string(), "127.0.0.1:9060");
        let hep_time = HepPacket::decode(f.data).unwrap().timestamp().unwrap();
        // Kamailio stamps before it sends; the capture sees it a little later.
        let lag = f.time.unwrap() - hep_time;
        assert!((0..50 * NANOS_PER_MS).contains(&lag), "pcap time - HEP time = {lag} ns");
    }
    let raw = read("hep.raw");
    let mut raw_set: Vec<&[u8]> = capture::datagrams(&raw).map(|d| d.unwrap().data).take(130).collect();
    for f in &frames {
        let i = raw_set.iter().position(|r| *r == f.data).expect("a pcap frame missing from the raw file");
        raw_set.remove(i);
    }
}

/// Everything the tracker said about one SIP Call-ID (leg).
#[derive(Debug, Default)]
struct Leg<'a> {
    events: Vec<&'a FeedEvent>,
}

impl<'a> Leg<'a> {
    fn kinds(&self, f: impl Fn(&EventKind) -> bool) -> Vec<&'a FeedEvent> {
        self.events.iter().copied().filter(|e| f(&e.kind)).collect()
    }
    fn one(&self, what: &str, call: &str, f: impl Fn(&EventKind) -> bool) -> &'a FeedEvent {
        let v = self.kinds(f);
        assert_eq!(v.len(), 1, "{call}: expected one {what}, got {v:#?}");
        v[0]
    }
}

#[test]
fn every_call_of_the_recording_is_tracked_as_sipp_saw_it() {
    let (events, tracker) = track(&read("hep.raw"), harness_config());
    let truth = truth();
    let calls = truth["calls"].as_array().unwrap();
    assert_eq!(tracker.stats().hep_errors + tracker.stats().sip_errors, 0);
    assert_eq!(tracker.active_calls(), 0, "finish() drops every call");

    let mut legs: BTreeMap<&str, Leg<'_>> = BTreeMap::new();
    for e in &events {
        legs.entry(e.leg_id.as_str()).or_default().events.push(e);
    }
    let known: BTreeSet<&str> = calls.iter().map(|c| c["call_id"].as_str().unwrap()).collect();
    let ours: BTreeSet<&str> = legs.keys().copied().collect();
    assert_eq!(ours, known, "every call, and no other, produced events");

    let summary = &truth["summary"];
    let offered: Vec<_> = events.iter().filter(|e| matches!(e.kind, EventKind::CallOffered { .. })).collect();
    assert_eq!(offered.len() as u64, summary["offered"].as_u64().unwrap(), "every inbound call offered once");

    for c in calls {
        let id = c["call_id"].as_str().unwrap();
        let leg = &legs[id];
        let outcome = c["outcome"].as_str().unwrap();
        let inbound = c["inbound"].as_bool().unwrap();
        let queue = if c["dialled"] == "2100" { "group" } else { "direct" };
        if inbound {
            assert!(leg.events.iter().all(|e| e.call_id == id), "{id}: its own call id");
            let o = leg.one("CallOffered", id, |k| matches!(k, EventKind::CallOffered { .. }));
            let EventKind::CallOffered { caller, called, .. } = &o.kind else { unreachable!() };
            assert_eq!(caller, c["caller"].as_str().unwrap());
            assert_eq!(called, c["dialled"].as_str().unwrap());
            close("INVITE", id, time(o), t_ns(&c["t_invite"]));
            let j = leg.one("QueueJoin", id, |k| matches!(k, EventKind::QueueJoin { .. }));
            assert!(matches!(&j.kind, EventKind::QueueJoin { queue: q, .. } if q == queue), "{id}: {j:?}");
        } else {
            // A transfer's new leg belongs to the call it was transferred from.
            let from = c["referred_from"].as_str().unwrap();
            assert!(leg.events.iter().all(|e| e.call_id == from), "{id}: events on the original call {from}");
            assert!(leg.kinds(|k| matches!(k, EventKind::CallOffered { .. } | EventKind::QueueJoin { .. })).is_empty());
        }

        // Ringing: one per phone that sent 18x, the first at sipp's first ring.
        let rings = leg.kinds(|k| matches!(k, EventKind::Ringing { .. }));
        assert_eq!(rings.len() as u64, c["ring_responses"].as_u64().unwrap(), "{id}: ringing phones");
        if let Some(first) = rings.iter().map(|e| time(e)).min() {
            close("first ring", id, first, t_ns(&c["t_first_ring"]));
        }
        let offered_agents: BTreeSet<String> =
            c["agents_offered"].as_array().unwrap().iter().map(|a| agent_of_ip(a.as_str().unwrap())).collect();
        for r in &rings {
            let EventKind::Ringing { agent, .. } = &r.kind else { unreachable!() };
            assert!(offered_agents.contains(agent), "{id}: {agent} rang but was not offered the call");
        }

        let answered = leg.kinds(|k| matches!(k, EventKind::Answered { .. }));
        if c["answered"].as_bool().unwrap() {
            assert_eq!(answered.len(), 1, "{id}: answered once");
            let a = answered[0];
            let EventKind::Answered { agent, .. } = &a.kind else { unreachable!() };
            assert_eq!(*agent, agent_of_ip(c["agent_ip"].as_str().unwrap()), "{id}: answering agent");
            close("answer", id, time(a), t_ns(&c["t_answer"]));
            if let Some(first) = rings.iter().map(|e| time(e)).min() {
                let ring_ms = (time(a) - first) / NANOS_PER_MS;
                let want = (c["ring_s"].as_f64().unwrap() * 1000.0).round() as i64;
                assert!((ring_ms - want).abs() <= TOLERANCE_MS, "{id}: ring {ring_ms} ms, sipp {want} ms");
            }
        } else {
            assert!(answered.is_empty(), "{id}: never answered");
        }

        let hangups = leg.kinds(|k| matches!(k, EventKind::Hangup { .. }));
        let transfers = leg.kinds(|k| matches!(k, EventKind::Transfer { .. }));
        match outcome {
            "answered" => {
                assert_eq!(hangups.len(), 1, "{id}");
                let h = hangups[0];
                let EventKind::Hangup { by, agent, .. } = &h.kind else { unreachable!() };
                let want_by = match c["hangup_by"].as_str().unwrap() {
                    "caller" => HangupBy::Caller,
                    _ => HangupBy::Agent,
                };
                assert_eq!(*by, want_by, "{id}: who hung up");
                assert_eq!(agent.as_deref(), Some(agent_of_ip(c["agent_ip"].as_str().unwrap()).as_str()));
                close("hang-up", id, time(h), t_ns(&c["t_hangup"]));
                let talk = time(h) - time(answered[0]);
                close("talk", id, talk, (c["talk_s"].as_f64().unwrap() * 1e9).round() as i64);
                assert!(transfers.is_empty());
            }
            "transferred" => {
                assert!(hangups.is_empty(), "{id}: the transferring agent's segment ends with the transfer");
                assert_eq!(transfers.len(), 1, "{id}");
                let t = transfers[0];
                let EventKind::Transfer { kind, target, agent, .. } = &t.kind else { unreachable!() };
                assert_eq!(*kind, TransferKind::Blind);
                assert_eq!(target, c["transfer_target"].as_str().unwrap());
                assert_eq!(agent.as_deref(), Some("2004"));
                close("REFER", id, time(t), t_ns(&c["t_refer"]));
                let talk = time(t) - time(answered[0]);
                close("talk before REFER", id, talk, (c["talk_before_refer_s"].as_f64().unwrap() * 1e9) as i64);
            }
            _ => {
                assert_eq!(hangups.len(), 1, "{id}: the unanswered call ends once");
                let EventKind::Hangup { by, agent, .. } = &hangups[0].kind else { unreachable!() };
                assert_eq!(*agent, None);
                let want_by = if outcome == "abandoned" { HangupBy::Caller } else { HangupBy::Unknown };
                assert_eq!(*by, want_by, "{id}");
                let leave = leg.one("QueueLeave", id, |k| matches!(k, EventKind::QueueLeave { .. }));
                let EventKind::QueueLeave { reason, .. } = &leave.kind else { unreachable!() };
                let want = match outcome {
                    "abandoned" => LeaveReason::Abandon,
                    "no_answer" => LeaveReason::Timeout,
                    "busy" | "unavailable" => LeaveReason::LeaveEmpty,
                    "not_found" => LeaveReason::JoinEmpty,
                    other => panic!("{id}: unexpected outcome {other}"),
                };
                assert_eq!(*reason, want, "{id}");
                close("end", id, time(leave), t_ns(&c["t_end"]));
                let wait = time(leave) - t_ns(&c["t_invite"]);
                close("wait", id, wait, (c["wait_s"].as_f64().unwrap() * 1e9).round() as i64);
            }
        }

        // Missed offers: the phones offered the call that did not take it.
        let missed: Vec<(String, MissReason)> = leg
            .kinds(|k| matches!(k, EventKind::OfferMissed { .. }))
            .iter()
            .map(|e| match &e.kind {
                EventKind::OfferMissed { agent, reason, .. } => (agent.clone(), *reason),
                _ => unreachable!(),
            })
            .collect();
        let want_missed: Vec<(String, MissReason)> = match outcome {
            "abandoned" => vec![("2003".into(), MissReason::Canceled)],
            "busy" => vec![("2002".into(), MissReason::Rejected)],
            "unavailable" => vec![("2005".into(), MissReason::NoAnswer)],
            "no_answer" => vec![("2003".into(), MissReason::NoAnswer)],
            // The ring group's other phone: cancelled because 2001 answered.
            _ if c["forked"].as_bool().unwrap() => vec![("2003".into(), MissReason::Canceled)],
            _ => vec![],
        };
        assert_eq!(missed, want_missed, "{id}: missed offers");

        // Hold and resume, at the re-INVITEs sipp received.
        let holds = leg.kinds(|k| matches!(k, EventKind::Hold { .. }));
        let resumes = leg.kinds(|k| matches!(k, EventKind::Resume { .. }));
        if c["hold_s"].is_null() {
            assert!(holds.is_empty() && resumes.is_empty(), "{id}: no hold");
        } else {
            assert_eq!((holds.len(), resumes.len()), (1, 1), "{id}: one hold, one resume");
            assert!(matches!(&holds[0].kind, EventKind::Hold { agent: Some(a) } if a == "2006"));
            close("hold", id, time(holds[0]), t_ns(&c["t_hold"]));
            close("resume", id, time(resumes[0]), t_ns(&c["t_resume"]));
        }
    }
}

#[test]
fn reading_the_capture_again_gives_the_same_events() {
    let bytes = read("hep.raw");
    let (a, _) = track(&bytes, harness_config());
    let (b, _) = track(&bytes, harness_config());
    assert_eq!(a, b);
}

fn kpi_rows(events: Vec<FeedEvent>, by: Vec<GroupBy>) -> Vec<callkpi_core::Row> {
    let mut engine = Engine::new(EngineConfig::default());
    for (i, fe) in events.into_iter().enumerate() {
        let wall = fe.source_time.unwrap_or(0);
        let time = CaptureTime { wall, monotonic: 0, clock_synced: true };
        let id = EventId { agent_id: "file:0".into(), seq: i as u64 + 1 };
        engine.ingest(fe.into_event(id, "site", SourceKind::SipHep, time));
    }
    engine.refresh(None, true);
    let params = KpiParams { interval: Interval::All, group_by: by, ..KpiParams::default() };
    engine.report(&params, &[]).expect("report").rows
}

#[test]
fn kpis_per_queue_match_the_ground_truth() {
    let (events, _) = track(&read("hep.raw"), harness_config());
    let truth = truth();
    let calls = truth["calls"].as_array().unwrap();
    let rows = kpi_rows(events, vec![GroupBy::Queue]);
    for queue in ["direct", "group"] {
        let mine: Vec<&Value> =
            calls.iter().filter(|c| c["inbound"] == true && ((c["dialled"] == "2100") == (queue == "group"))).collect();
        let n = |f: &dyn Fn(&Value) -> bool| mine.iter().filter(|c| f(c)).count() as u64;
        let row = rows
            .iter()
            .find(|r| r.group.get("queue").cloned().flatten().as_deref() == Some(queue))
            .unwrap_or_else(|| panic!("no row for queue {queue}"));
        let k = &row.kpis;
        let short = n(&|c| c["short_abandon"] == true);
        assert_eq!(k.entered, mine.len() as u64, "{queue}: entered");
        assert_eq!(k.offered, mine.len() as u64 - short, "{queue}: offered (short abandons excluded)");
        assert_eq!(k.answered, n(&|c| c["answered"] == true), "{queue}: answered");
        assert_eq!(k.short_abandoned, short, "{queue}: short abandons");
        assert_eq!(k.abandoned + k.short_abandoned, n(&|c| c["outcome"] == "abandoned"), "{queue}: abandoned");
        assert_eq!(k.timed_out, n(&|c| c["outcome"] == "no_answer"), "{queue}: timeouts");
        let others =
            n(&|c| ["busy", "unavailable", "not_found", "no_answer"].contains(&c["outcome"].as_str().unwrap()));
        assert_eq!(k.other_exits, others, "{queue}: other exits");
        assert_eq!(k.transfers, n(&|c| c["outcome"] == "transferred"), "{queue}: transfers");
        assert_eq!(k.holds, n(&|c| !c["hold_s"].is_null()), "{queue}: holds");
        // ASA: the mean wait of answered calls, against sipp's.
        let waits: Vec<f64> =
            mine.iter().filter(|c| c["answered"] == true).map(|c| c["wait_s"].as_f64().unwrap()).collect();
        if !waits.is_empty() {
            let asa = waits.iter().sum::<f64>() / waits.len() as f64;
            let ours = k.asa_s.expect("ASA");
            assert!((ours - asa).abs() < 0.1, "{queue}: ASA {ours} s, sipp {asa} s");
        }
    }
    let total: u64 = rows.iter().map(|r| r.kpis.entered).sum();
    assert_eq!(total, truth["summary"]["offered"].as_u64().unwrap());
}

#[test]
fn agent_kpis_count_missed_offers_and_talk() {
    let (events, _) = track(&read("hep.raw"), harness_config());
    let truth = truth();
    let calls = truth["calls"].as_array().unwrap();
    let rows = kpi_rows(events, vec![GroupBy::Agent]);
    let row = |agent: &str| {
        rows.iter()
            .find(|r| r.group.get("agent").cloned().flatten().as_deref() == Some(agent))
            .unwrap_or_else(|| panic!("no row for agent {agent}"))
    };
    let count = |f: &dyn Fn(&Value) -> bool| calls.iter().filter(|c| f(c)).count() as u64;
    // 2002 is busy and 2005 unavailable every time; 2003 lets every direct call ring out or be abandoned.
    assert_eq!(row("2002").kpis.missed_offers, count(&|c| c["outcome"] == "busy"));
    assert_eq!(row("2005").kpis.missed_offers, count(&|c| c["outcome"] == "unavailable"));
    assert_eq!(row("2003").kpis.missed_offers, count(&|c| c["outcome"] == "no_answer"));
    // Handled segments: 2001 takes direct and ring-group calls and every transferred leg.
    let by_2001 = count(&|c| c["agent_ip"] == "127.0.0.3");
    assert_eq!(row("2001").kpis.handled, by_2001);
    assert_eq!(row("2004").kpis.handled, count(&|c| c["outcome"] == "transferred"));
    assert_eq!(row("2006").kpis.holds, count(&|c| !c["hold_s"].is_null()));
    // Talk of 2006's calls: the engine excludes hold; sipp's talk includes it.
    let want: f64 = calls
        .iter()
        .filter(|c| c["agent_ip"] == "127.0.0.8")
        .map(|c| c["talk_s"].as_f64().unwrap() - c["hold_s"].as_f64().unwrap())
        .sum();
    let got = row("2006").kpis.talk_total_s;
    assert!((got - want).abs() < 0.1 * 4.0, "2006 talk {got} s, sipp {want} s");
}

#[test]
fn kamailio_hepv2_decodes_and_tracks_too() {
    // One call (ring 1 s, talk 2 s) through the same Kamailio with
    // `hep_version=2`: see the fixture README.
    let bytes = read("hepv2-one-call.raw");
    let mut n = 0;
    for d in capture::datagrams(&bytes) {
        let p = HepPacket::decode(d.unwrap().data).unwrap();
        assert_eq!((p.version, p.capture_id, p.ip_proto), (2, Some(2001), Some(17)));
        assert!(p.timestamp().unwrap() > 1_795_000_000 * 1_000_000_000);
        let m = SipMessage::parse_datagram(p.payload.unwrap()).unwrap();
        assert!(m.call_id().is_some());
        n += 1;
    }
    assert_eq!(n, 14);
    let (events, _) = track(&bytes, harness_config());
    let kinds: Vec<&EventKind> = events.iter().map(|e| &e.kind).collect();
    assert_eq!(kinds.len(), 5, "{kinds:#?}");
    assert!(matches!(kinds[2], EventKind::Ringing { agent, .. } if agent == "2001"));
    assert!(matches!(kinds[3], EventKind::Answered { agent, reported_ring_ms: Some(ring), .. }
        if agent == "2001" && ring.abs_diff(1000) <= 100));
    assert!(matches!(kinds[4], EventKind::Hangup { by: HangupBy::Caller, .. }));
    let talk_ms = (time(&events[4]) - time(&events[3])) / NANOS_PER_MS;
    assert!((talk_ms - 2000).abs() <= TOLERANCE_MS, "talk {talk_ms} ms");
}

/// The first 120 datagrams of the recording with every SIP payload
/// compressed by C zlib (gzip, zlib and raw deflate in turn; made by
/// tests/peers/sip-hep/compress_hep.py, as OpenSIPS' `payload_compression`
/// sends them): inflated, they give exactly the events of the plain ones.
#[test]
fn compressed_payloads_are_inflated_to_the_same_events() {
    let plain = read("hep.raw");
    let first: Vec<u8> = {
        let mut out = Vec::new();
        let mut pos = 0;
        for _ in 0..120 {
            let n = u32::from_be_bytes(plain[pos..pos + 4].try_into().unwrap()) as usize;
            out.extend_from_slice(&plain[pos..pos + 4 + n]);
            pos += 4 + n;
        }
        out
    };
    let compressed = read("hep-compressed-first-120.raw");
    let kinds: BTreeSet<bool> = capture::datagrams(&compressed)
        .map(|d| HepPacket::decode(d.expect("readable").data).expect("HEP").payload_compressed)
        .collect();
    assert_eq!(kinds, BTreeSet::from([true]), "every payload is in chunk 0x0010");
    let (want, plain_tracker) = track(&first, harness_config());
    let (got, tracker) = track(&compressed, harness_config());
    assert!(want.len() > 20, "{} events", want.len());
    assert_eq!(got, want);
    assert_eq!(tracker.stats().inflated, 120);
    assert_eq!(tracker.stats().messages, plain_tracker.stats().messages);
    assert!(tracker.unparsed().by_name.keys().all(|k| !k.contains("compressed")), "{:?}", tracker.unparsed());
}

/// A real recording of calls whose two legs have different Call-IDs:
/// Kamailio 5.6.3 with `topoh` masking the Call-ID towards the agent and
/// adding `X-CID: <caller leg's Call-ID>` (tests/peers/sip-hep/b2bua/; 3
/// sipp calls answered by 2001 and hung up by the caller after 2 s).
#[test]
fn a_recorded_b2bua_s_legs_are_linked_by_x_cid() {
    let bytes = read("hep-b2bua-topoh.raw");
    let (events, tracker) = track(&bytes, SipTrackerConfig::default());
    assert_eq!(tracker.stats().linked_legs, 3);
    let mut calls: BTreeMap<&str, Vec<(&str, &EventKind, UnixNanos)>> = BTreeMap::new();
    for e in &events {
        calls.entry(e.call_id.as_str()).or_default().push((e.leg_id.as_str(), &e.kind, time(e)));
    }
    assert_eq!(calls.len(), 3, "{events:#?}");
    for (call, evs) in &calls {
        assert!(call.ends_with("@127.0.0.2"), "the caller leg's Call-ID names the call: {call}");
        let names: Vec<(bool, String)> = evs
            .iter()
            .map(|(leg, k, _)| (leg == call, format!("{k:?}").split([' ', '{']).next().unwrap_or_default().to_owned()))
            .collect();
        let want =
            [(true, "CallOffered"), (true, "QueueJoin"), (false, "Ringing"), (false, "Answered"), (false, "Hangup")];
        assert_eq!(names, want.map(|(c, n)| (c, n.to_owned())), "{call}: {evs:#?}");
        assert!(evs[2..].iter().all(|(leg, _, _)| leg.starts_with("!!:")), "topoh's masked Call-ID: {evs:#?}");
        assert!(matches!(evs[3].1, EventKind::Answered { agent, .. } if agent == "2001"));
        assert!(matches!(evs[4].1, EventKind::Hangup { agent: Some(a), by: HangupBy::Caller, .. } if a == "2001"));
        close("talk", call, evs[4].2 - evs[3].2, 2_000 * NANOS_PER_MS);
    }
    // Without the header the B2BUA's legs are six calls.
    let (unlinked, _) = track(&bytes, SipTrackerConfig { link_headers: Vec::new(), ..SipTrackerConfig::default() });
    let offered = unlinked.iter().filter(|e| matches!(e.kind, EventKind::CallOffered { .. })).count();
    assert_eq!(offered, 6);
}
