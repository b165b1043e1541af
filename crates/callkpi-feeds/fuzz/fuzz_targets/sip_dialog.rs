//! The SIP call tracker on arbitrary message sequences: never panics, and
//! forgets every call at the end. Input: NUL-separated records, each one
//! byte of time step (x 100 ms) and one of addresses, then a SIP message
//! (or, with the top address bit set, a HEP datagram).
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use callkpi_feeds::sip::{AgentEntry, PacketMeta, QueueEntry, SipMessage, SipTracker, SipTrackerConfig};
use libfuzzer_sys::fuzz_target;

fn config(rules: bool) -> SipTrackerConfig {
    if !rules {
        return SipTrackerConfig { max_dialogs: 8, setup_timeout_s: 30, call_timeout_s: 60, ..Default::default() };
    }
    SipTrackerConfig {
        agents: vec![AgentEntry { name: "a".into(), address: Some("10.0.0.3".parse().unwrap()), extension: None }],
        agent_extensions: vec!["2001".into()],
        agent_prefixes: vec!["3".into()],
        agent_networks: vec!["10.0.1.0/24".parse().unwrap()],
        queues: vec![QueueEntry { name: "q".into(), numbers: vec!["2100".into()], prefixes: vec!["08".into()] }],
        queue_header: Some("X-Queue".into()),
        default_queue: Some("d".into()),
        queue_by_dialled_number: true,
        link_headers: vec!["X-CID".into(), "Session-ID".into()],
        max_dialogs: 8,
        setup_timeout_s: 30,
        call_timeout_s: 60,
        linger_s: 5,
        transfer_window_s: 10,
    }
}

fuzz_target!(|data: &[u8]| {
    let rules = data.first().is_some_and(|b| b & 1 == 1);
    let mut tracker = SipTracker::new(config(rules));
    let mut out = Vec::new();
    let mut now: i64 = 1_700_000_000_000_000_000;
    for record in data.split(|&b| b == 0) {
        let [step, addrs, msg @ ..] = record else { continue };
        now += i64::from(*step) * 100_000_000;
        let ip = |n: u8| IpAddr::V4(Ipv4Addr::new(10, 0, n >> 2 & 1, (n & 3) + 1));
        if addrs & 0x80 != 0 {
            tracker.push_datagram(msg, Some(now), &mut out);
            continue;
        }
        let meta = PacketMeta { time: now, src: Some(ip(*addrs)), dst: Some(ip(addrs >> 3)) };
        if let Ok(m) = SipMessage::parse_datagram(msg) {
            tracker.push_sip(&meta, &m, &mut out);
        }
    }
    tracker.expire(now + 10_000_000_000, &mut out);
    tracker.finish(&mut out);
    assert_eq!(tracker.active_calls(), 0);
});
