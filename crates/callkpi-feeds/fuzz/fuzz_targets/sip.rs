//! The SIP parser on arbitrary bytes: never panics with every typed
//! accessor used, and a stream split in two frames as the whole does.
#![no_main]

use callkpi_feeds::Status;
use callkpi_feeds::sip::{SipMessage, sdp};
use libfuzzer_sys::fuzz_target;

fn touch(m: &SipMessage<'_>) {
    let _ = (m.start_line(), m.method(), m.status(), m.request_uri(), m.call_id(), m.cseq());
    for n in [m.from(), m.to(), m.contact(), m.refer_to(), m.referred_by()].into_iter().flatten() {
        let _ = (n.tag(), n.user(), n.uri().map(|u| (u.param("user"), u.has_replaces())));
    }
    for v in m.vias() {
        let _ = v.branch();
    }
    let _ = (m.top_via(), m.bottom_via(), m.q850_cause(), m.reasons().count());
    let _ = (m.content_type(), m.content_length(), m.event(), m.sdp(), m.sipfrag_status());
    let _ = (m.headers().count(), m.header("X-Queue"), m.body());
}

/// (header count, body) of the messages of a stream read in chunks;
/// `None` at the first error.
fn decode(chunks: &[&[u8]]) -> Vec<Option<(usize, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match SipMessage::parse(&buf) {
                Ok(Status::Complete { value, consumed }) => {
                    out.push(Some((value.headers().count(), value.body().to_vec())));
                    buf.drain(..consumed);
                }
                Ok(Status::Partial) => break,
                Err(_) => {
                    out.push(None);
                    return out;
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = SipMessage::parse_datagram(data) {
        touch(&m);
    }
    let _ = sdp::summarize(data);
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let (a, b) = data.split_at(split);
    assert_eq!(decode(&[a, b]), decode(&[data]));
});
