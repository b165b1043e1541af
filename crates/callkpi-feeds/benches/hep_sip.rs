//! HEP + SIP throughput over the real Kamailio recording
//! (`tests/fixtures/sip-hep/hep.raw`: 885 datagrams, 479 kB, 56 call legs).
//!
//! - `reference_memchr_newlines`: the least any SIP reader does, finding
//!   every line break of the same bytes (the ratio's denominator).
//! - `hep_decode`: walk the length-prefixed file and decode every HEPv3 packet.
//! - `hep+sip_parse`: the same, then parse each SIP payload and read the
//!   Call-ID, CSeq, From/To tags and top Via branch.
//! - `hep+sip+tracking`: the whole path, [`SipTracker::push_datagram`] into
//!   `FeedEvent`s, with the harness's agent configuration.
//!
//! Throughput is in packets (datagrams); bytes/s = packets/s x 541.

use std::hint::black_box;

use callkpi_feeds::hep::{HepPacket, capture};
use callkpi_feeds::sip::{AgentEntry, QueueEntry, SipMessage, SipTracker, SipTrackerConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const RECORDING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/sip-hep/hep.raw");

fn config() -> SipTrackerConfig {
    SipTrackerConfig {
        agents: (1..=6)
            .map(|n| AgentEntry {
                name: format!("200{n}"),
                address: Some(format!("127.0.0.{}", n + 2).parse().expect("address")),
                extension: None,
            })
            .collect(),
        queues: vec![QueueEntry { name: "group".into(), numbers: vec!["2100".into()], prefixes: vec![] }],
        default_queue: Some("direct".into()),
        ..SipTrackerConfig::default()
    }
}

fn hep_sip(c: &mut Criterion) {
    let bytes = std::fs::read(RECORDING).expect("the sip-hep recording");
    let packets = capture::datagrams(&bytes).count() as u64;
    let mut group = c.benchmark_group("hep_sip");
    group.throughput(Throughput::Elements(packets));
    group.bench_function("reference_memchr_newlines", |b| {
        b.iter(|| memchr::memchr_iter(b'\n', black_box(&bytes)).count())
    });
    group.bench_function("hep_decode", |b| {
        b.iter(|| {
            capture::datagrams(black_box(&bytes))
                .filter_map(Result::ok)
                .filter_map(|d| HepPacket::decode(d.data).ok())
                .map(|p| p.payload.map_or(0, <[u8]>::len))
                .sum::<usize>()
        })
    });
    group.bench_function("hep+sip_parse", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for d in capture::datagrams(black_box(&bytes)).filter_map(Result::ok) {
                let Some(payload) = HepPacket::decode(d.data).ok().and_then(|p| p.payload) else { continue };
                let Ok(m) = SipMessage::parse_datagram(payload) else { continue };
                let tags = (m.from().and_then(|f| f.tag()), m.to().and_then(|t| t.tag()));
                black_box((m.call_id(), m.cseq(), tags, m.top_via().and_then(|v| v.branch())));
                n += 1;
            }
            n
        })
    });
    group.bench_function("hep+sip+tracking", |b| {
        let cfg = config();
        let mut out = Vec::with_capacity(512);
        b.iter(|| {
            let mut tracker = SipTracker::new(cfg.clone());
            out.clear();
            for d in capture::datagrams(black_box(&bytes)).filter_map(Result::ok) {
                tracker.push_datagram(d.data, d.time, &mut out);
            }
            tracker.finish(&mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, hep_sip);
criterion_main!(benches);
