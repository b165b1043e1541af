//! The ESL mapper on arbitrary input: as a recorded stream, and as event
//! bodies (so the fuzzer drives the header values directly).
#![no_main]

use callkpi_feeds::esl::{EslMapper, parse_event};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut mapper = EslMapper::default();
    let mut out = Vec::new();
    mapper.map_bytes(data, &mut out);
    // NUL-separated blocks as event bodies, through the same mapper (state).
    for block in data.split(|&b| b == 0) {
        if let Ok(ev) = parse_event(block) {
            mapper.map_event(&ev, &mut out);
        }
    }
});
