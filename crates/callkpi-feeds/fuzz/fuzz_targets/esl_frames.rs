//! ESL framing on arbitrary bytes: never panics, and a stream split in two
//! reads frames exactly as the whole does.
#![no_main]

use callkpi_feeds::Status;
use callkpi_feeds::esl::{EslClient, Subscription, frames, parse_event, parse_frame, skip_frame};
use libfuzzer_sys::fuzz_target;

/// Frames a stream read in the given chunks; `None` at the first error.
fn decode(chunks: &[&[u8]]) -> Vec<Option<(usize, Option<Vec<u8>>)>> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match parse_frame(&buf, 4096) {
                Ok(Status::Complete { value, consumed }) => {
                    out.push(Some((value.headers().len(), value.body().map(<[u8]>::to_vec))));
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
    let _ = parse_event(data);
    let _ = skip_frame(data);
    for frame in frames(data).flatten() {
        let _ = frame.event();
    }
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let (a, b) = data.split_at(split);
    assert_eq!(decode(&[a, b]), decode(&[data]));
    let mut client = EslClient::new("ClueCon", Subscription::default()).expect("valid");
    let _ = client.feed(a, |_| {});
    let _ = client.feed(b, |_| {});
    let _ = client.take_output();
});
