//! AMI transcripts of Asterisk versions other than the run-a recording
//! (Asterisk 22), through the path of `callkpi analyze --ami`:
//! [`AmiMapper::map_bytes`], events numbered in order as one pseudo agent,
//! the core [`Engine`] closed at the end of input, then a report. Expected
//! figures are derived by hand from the KPI definitions of DESIGN.md.
//!
//! Header names of Asterisk 1.4 to 11 are those documented by asterisk-java
//! (`AgentCalledEvent`: `AgentCalled`, `AgentName`, `DestinationChannel`;
//! `AgentConnectEvent`: `Member`, `MemberName`, `HoldTime`, `BridgedChannel`
//! "the unique ID of the queue member channel", `RingTime`; `HoldEvent`:
//! "as of Asterisk 1.6 only HoldEvent is sent with the status set to false
//! to indicate unhold"), and those of 12+ the Asterisk AMI event reference.

mod common;

use callkpi_core::KpiParams;
use callkpi_core::event::{EventKind, SourceKind};
use callkpi_core::params::GroupBy;
use callkpi_core::report::Kpis;
use callkpi_core::time::Interval;
use callkpi_feeds::FeedEvent;
use callkpi_feeds::ami::{AmiMapper, AmiMapperConfig};
use common::close;

fn map(text: &str) -> (Vec<FeedEvent>, AmiMapper) {
    let mut m = AmiMapper::new(AmiMapperConfig::default());
    let mut out = Vec::new();
    m.map_bytes(text.replace('\n', "\r\n").as_bytes(), &mut out);
    (out, m)
}

fn kpis(events: Vec<FeedEvent>, group_by: &[GroupBy]) -> Vec<(Option<String>, Kpis)> {
    let e = common::engine(events, SourceKind::AsteriskAmi);
    let p = KpiParams { interval: Interval::All, group_by: group_by.to_vec(), ..KpiParams::default() };
    let key = group_by.first().map(|g| g.as_str());
    e.report(&p, &[])
        .expect("report")
        .rows
        .into_iter()
        .map(|r| (key.and_then(|k| r.group.get(k).cloned().flatten()), r.kpis))
        .collect()
}

/// One queued call as Asterisk 11 reports it (`timestampevents = yes`, no
/// `Linkedid` on queue events): `Join`, `AgentCalled` naming the member
/// `AgentName`, `AgentConnect` with `BridgedChannel`, a hold and unhold sent
/// as two `Hold` events with `Status: On` / `Status: Off` on the member's
/// channel, `AgentComplete` whose `TalkTime` covers the hold.
const ASTERISK_11: &str = "\
Asterisk Call Manager/1.3

Event: Join
Privilege: call,all
Timestamp: 1795356000.000000
Channel: SIP/trunk-00000001
CallerIDNum: 0612345678
CallerIDName: Jean Dupont
Queue: support
Position: 1
Count: 1
Uniqueid: 1795356000.1

Event: AgentCalled
Privilege: agent,all
Timestamp: 1795356002.000000
Queue: support
AgentCalled: SIP/1001
AgentName: Alice
ChannelCalling: SIP/trunk-00000001
DestinationChannel: SIP/1001-00000002
CallerIDNum: 0612345678
Uniqueid: 1795356000.1

Event: AgentConnect
Privilege: agent,all
Timestamp: 1795356012.000000
Queue: support
Uniqueid: 1795356000.1
Channel: SIP/1001-00000002
Member: SIP/1001
MemberName: Alice
Holdtime: 12
BridgedChannel: 1795356002.2
Ringtime: 10

Event: Hold
Privilege: call,all
Timestamp: 1795356042.000000
Status: On
Channel: SIP/1001-00000002
Uniqueid: 1795356002.2

Event: Hold
Privilege: call,all
Timestamp: 1795356062.000000
Status: Off
Channel: SIP/1001-00000002
Uniqueid: 1795356002.2

Event: AgentComplete
Privilege: agent,all
Timestamp: 1795356112.000000
Queue: support
Uniqueid: 1795356000.1
Channel: SIP/1001-00000002
Member: SIP/1001
MemberName: Alice
HoldTime: 12
TalkTime: 100
Reason: caller

";

#[test]
fn asterisk_11_call_with_hold_and_unhold() {
    let (events, m) = map(ASTERISK_11);
    assert_eq!(m.unparsed().malformed, 0, "{:?}", m.unparsed());
    // Every event of the call, the member channel's hold included, belongs to
    // the caller's call.
    assert!(events.iter().all(|e| e.call_id == "1795356000.1"), "{events:#?}");
    let kinds: Vec<&EventKind> = events.iter().map(|e| &e.kind).collect();
    assert!(matches!(kinds[0], EventKind::QueueJoin { caller: Some(c), .. } if c == "0612345678"));
    assert!(matches!(kinds[1], EventKind::Ringing { agent, .. } if agent == "Alice"));
    assert_eq!(kinds[3], &EventKind::Hold { agent: Some("Alice".into()) });
    assert_eq!(kinds[4], &EventKind::Resume { agent: Some("Alice".into()) });

    let rows = kpis(events, &[]);
    assert_eq!(rows.len(), 1);
    let k = &rows[0].1;
    assert_eq!((k.entered, k.answered, k.handled, k.holds), (1, 1, 1, 1));
    close(k.asa_s, 12.0);
    // TalkTime 100 s covers the 20 s hold: talk 80 s, hold 20 s, AHT 100 s.
    close(k.talk_s, 80.0);
    close(k.hold_s, 20.0);
    close(k.aht_s, 100.0);
}

/// Asterisk 1.4's `Join` gives the number as `CallerID`.
#[test]
fn asterisk_14_join_caller_id() {
    let (events, _) =
        map("Event: Join\nChannel: Zap/1-1\nCallerID: 0698765432\nCallerIDName: X\nQueue: q\nPosition: 1\nCount: 1\n\
         Uniqueid: 1795356000.7\n\n");
    assert!(matches!(&events[0].kind, EventKind::QueueJoin { caller: Some(c), .. } if c == "0698765432"));
}

/// Asterisk 12+ (`Hold` and `Unhold`, `Linkedid`, `DestUniqueid`): the same
/// call gives the same figures, so the hold rule is not version-specific.
#[test]
fn asterisk_12_and_later_hold_and_unhold() {
    let text = "\
Event: QueueCallerJoin
Timestamp: 1795356000.000000
Channel: PJSIP/trunk-00000001
CallerIDNum: 0612345678
Uniqueid: 1795356000.1
Linkedid: 1795356000.1
Queue: support
Position: 1

Event: AgentCalled
Timestamp: 1795356002.000000
Uniqueid: 1795356000.1
Linkedid: 1795356000.1
DestChannel: PJSIP/1001-00000002
DestUniqueid: 1795356002.2
Queue: support
MemberName: Alice
Interface: PJSIP/1001

Event: AgentConnect
Timestamp: 1795356012.000000
Uniqueid: 1795356000.1
Linkedid: 1795356000.1
DestUniqueid: 1795356002.2
Queue: support
MemberName: Alice
Interface: PJSIP/1001
HoldTime: 12
RingTime: 10

Event: Hold
Timestamp: 1795356042.000000
Channel: PJSIP/1001-00000002
Uniqueid: 1795356002.2
Linkedid: 1795356000.1

Event: Unhold
Timestamp: 1795356062.000000
Channel: PJSIP/1001-00000002
Uniqueid: 1795356002.2
Linkedid: 1795356000.1

Event: AgentComplete
Timestamp: 1795356112.000000
Uniqueid: 1795356000.1
Linkedid: 1795356000.1
DestUniqueid: 1795356002.2
Queue: support
MemberName: Alice
Interface: PJSIP/1001
HoldTime: 12
TalkTime: 100
Reason: agent

";
    let (events, m) = map(text);
    assert_eq!(m.unparsed().malformed, 0);
    let rows = kpis(events, &[GroupBy::Agent]);
    let alice = &rows.iter().find(|(a, _)| a.as_deref() == Some("Alice")).expect("Alice").1;
    assert_eq!((alice.handled, alice.holds), (1, 1));
    close(alice.talk_s, 80.0);
    close(alice.hold_s, 20.0);
    close(alice.aht_s, 100.0);
}

/// Asterisk 12+ agents (app_agent_pool), as the AMI event reference names
/// them: `AgentLogin`/`AgentLogoff` with `Agent:`, `QueueMemberAdded`,
/// `QueueMemberPause` with `PausedReason`, `QueueMemberRemoved`. Alice is a
/// member of support for 900 s, paused 300 s of them for lunch. Her login
/// names the agent id; the mapper knows it as `Agent/1001`'s member name.
const AGENT_POOL: &str = "\
Asterisk Call Manager/5.0.1

Event: QueueMemberAdded
Timestamp: 1795356000.000000
Queue: support
Interface: Agent/1001
MemberName: Alice Martin
Membership: dynamic
Paused: 0

Event: AgentLogin
Timestamp: 1795356000.100000
Channel: PJSIP/1001-00000001
Uniqueid: 1795356000.1
Linkedid: 1795356000.1
Agent: 1001

Event: QueueMemberPause
Timestamp: 1795356300.100000
Queue: support
Interface: Agent/1001
MemberName: Alice Martin
Paused: 1
PausedReason: lunch

Event: QueueMemberPause
Timestamp: 1795356600.100000
Queue: support
Interface: Agent/1001
MemberName: Alice Martin
Paused: 0
PausedReason: 

Event: QueueMemberRemoved
Timestamp: 1795356900.100000
Queue: support
Interface: Agent/1001
MemberName: Alice Martin

Event: AgentLogoff
Timestamp: 1795356900.200000
Channel: PJSIP/1001-00000001
Uniqueid: 1795356000.1
Linkedid: 1795356000.1
Agent: 1001
Logintime: 900

";

#[test]
fn agent_pool_login_and_pause_time() {
    let (events, m) = map(AGENT_POOL);
    assert_eq!(m.unparsed().malformed, 0);
    let rows = kpis(events.clone(), &[GroupBy::Agent]);
    let names: Vec<_> = rows.iter().map(|(a, _)| a.clone()).collect();
    assert_eq!(names, [Some("Alice Martin".to_owned())], "one agent, not one per name");
    assert!((rows[0].1.logged_in_s - 900.0).abs() < 0.5, "logged in {}", rows[0].1.logged_in_s);
    // Pause time of her membership of support (the per-queue figure).
    let rows = kpis(events, &[GroupBy::Queue]);
    let (_, k) = rows.into_iter().find(|(q, _)| q.as_deref() == Some("support")).expect("support row");
    assert!((k.logged_in_s - 900.1).abs() < 1e-6, "logged in {}", k.logged_in_s);
    assert!((k.paused_s - 300.0).abs() < 1e-6, "paused {}", k.paused_s);
}
