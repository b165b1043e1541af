//! ESL parser throughput.
//!
//! The real recording (`tests/fixtures/freeswitch/eventstream.txt`) holds one
//! event, too little to time, so the input is built from it: every event is
//! the recording's `CHANNEL_CREATE` channel data (about 130 headers, its
//! raw SDP left out), re-encoded as FreeSWITCH sends it (URL-encoded values),
//! with the event name, UUIDs, timestamps and mod_callcenter headers of a
//! queue call set on top. 250 calls, 8 events each (create, queue start,
//! offering, bridge start, hold, unhold, bridge end, hang-up complete), each
//! a `text/event-plain` frame: about 9 MB.
//!
//! - `reference_memchr_newlines`: the least any line reader does.
//! - `framing`: frames and event headers, borrowed from the buffer.
//! - `framing+mapping`: the same, then [`EslMapper`] into `FeedEvent`s.

use std::fmt::Write as _;
use std::hint::black_box;

use callkpi_feeds::Status;
use callkpi_feeds::esl::{DEFAULT_MAX_FRAME_SIZE, EslFrame, EslMapper, parse_event, parse_frame};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

const RECORDING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/freeswitch/eventstream.txt");

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

/// The recording's channel data, as (name, value) pairs.
fn channel_data() -> Vec<(String, String)> {
    let bytes = std::fs::read(RECORDING).expect("the FreeSWITCH recording");
    let mut mapper_input = Vec::new();
    for frame in callkpi_feeds::esl::frames(&bytes) {
        let Ok(frame) = frame else { continue };
        if let Some(Ok(ev)) = frame.event() {
            for h in ev.headers() {
                let name = h.name_str().into_owned();
                if name == "variable_switch_r_sdp" || name.starts_with("Event-") {
                    continue;
                }
                mapper_input.push((name, h.value().into_owned()));
            }
        }
    }
    assert!(mapper_input.len() > 100, "the recording's CHANNEL_CREATE");
    mapper_input
}

fn frame(out: &mut String, headers: &[(&str, String)], base: &[(String, String)]) {
    let mut body = String::new();
    for (k, v) in
        headers.iter().map(|(k, v)| (*k, v.as_str())).chain(base.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    {
        let _ = writeln!(body, "{k}: {}", utf8_percent_encode(v, UNSAFE));
    }
    body.push('\n');
    let _ = write!(out, "Content-Length: {}\nContent-Type: text/event-plain\n\n{body}", body.len());
}

fn stream(calls: usize) -> Vec<u8> {
    let base = channel_data();
    let mut out = String::new();
    let t0: i64 = 1_795_356_000_000_000;
    for i in 0..calls {
        let t = |s: i64| (t0 + i as i64 * 30_000_000 + s * 1_000_000).to_string();
        let member = format!("0a0b0c0d-0000-4000-8000-{i:012}");
        let agent_leg = format!("0a0b0c0d-1111-4000-8000-{i:012}");
        let agent = format!("{}@default", 1000 + i % 8);
        let cc = |action: &str, ts: i64| -> Vec<(&'static str, String)> {
            vec![
                ("Event-Name", "CUSTOM".into()),
                ("Event-Subclass", "callcenter::info".into()),
                ("Event-Date-Timestamp", t(ts)),
                ("CC-Queue", "support@default".into()),
                ("CC-Action", action.into()),
                ("CC-Agent", agent.clone()),
                ("CC-Agent-UUID", agent_leg.clone()),
                ("CC-Member-Session-UUID", member.clone()),
                ("CC-Member-CID-Number", format!("+3361{i:07}")),
            ]
        };
        let chan = |name: &str, uuid: &str, ts: i64| -> Vec<(&'static str, String)> {
            vec![("Event-Name", name.into()), ("Event-Date-Timestamp", t(ts)), ("Unique-ID", uuid.into())]
        };
        frame(&mut out, &chan("CHANNEL_CREATE", &member, 0), &base);
        frame(&mut out, &cc("member-queue-start", 1), &base);
        frame(&mut out, &cc("agent-offering", 2), &[]);
        frame(&mut out, &cc("bridge-agent-start", 6), &base);
        frame(&mut out, &chan("CHANNEL_HOLD", &agent_leg, 20), &base);
        frame(&mut out, &chan("CHANNEL_UNHOLD", &agent_leg, 25), &base);
        frame(&mut out, &cc("bridge-agent-end", 60), &base);
        frame(&mut out, &chan("CHANNEL_HANGUP_COMPLETE", &member, 61), &base);
    }
    out.into_bytes()
}

/// Frames the whole buffer as a reader would.
fn frame_all(buf: &[u8], mut each: impl FnMut(&EslFrame<'_>)) -> usize {
    let mut pos = 0;
    let mut n = 0;
    while pos < buf.len() {
        match parse_frame(&buf[pos..], DEFAULT_MAX_FRAME_SIZE) {
            Ok(Status::Complete { value, consumed }) => {
                each(&value);
                pos += consumed;
                n += 1;
            }
            Ok(Status::Partial) | Err(_) => break,
        }
    }
    n
}

fn esl(c: &mut Criterion) {
    let bytes = stream(250);
    assert_eq!(frame_all(&bytes, |_| {}), 2000);
    let mut group = c.benchmark_group("esl");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("reference_memchr_newlines", |b| {
        b.iter(|| memchr::memchr_iter(b'\n', black_box(&bytes)).count())
    });
    group.bench_function("framing", |b| {
        b.iter(|| {
            frame_all(black_box(&bytes), |f| {
                if let Some(body) = f.body() {
                    black_box(parse_event(body).map(|e| e.headers().len()).unwrap_or(0));
                }
            })
        });
    });
    group.bench_function("framing+mapping", |b| {
        let mut out = Vec::with_capacity(32 * 1024);
        b.iter(|| {
            let mut mapper = EslMapper::default();
            out.clear();
            frame_all(black_box(&bytes), |f| mapper.map_frame(f, &mut out));
            black_box(out.len())
        });
    });
    group.finish();
}

criterion_group!(benches, esl);
criterion_main!(benches);
