//! HEP decoding and capture-file reading on arbitrary bytes: never panics;
//! a datagram that decodes also parses as one whole stream packet, and the
//! same bytes split in two frame the same stream packets.
#![no_main]

use callkpi_feeds::Status;
use callkpi_feeds::hep::{HepPacket, capture};
use libfuzzer_sys::fuzz_target;

/// Payloads of the HEPv3 packets of a stream read in the given chunks;
/// `None` at the first error.
fn decode(chunks: &[&[u8]]) -> Vec<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            // HEPv1/v2 have no length: a stream of them is not framed.
            if buf.first().is_some_and(|&b| b != b'H') {
                return out;
            }
            match HepPacket::parse(&buf) {
                Ok(Status::Complete { value, consumed }) => {
                    out.push(Some(value.payload.unwrap_or_default().to_vec()));
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
    if let Ok(p) = HepPacket::decode(data) {
        let _ = p.timestamp();
        if p.version == 3 {
            assert!(matches!(HepPacket::parse(data), Ok(Status::Complete { consumed, .. }) if consumed == data.len()));
        }
    }
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let (a, b) = data.split_at(split);
    assert_eq!(decode(&[a, b]), decode(&[data]));
    // The same bytes as a capture file (raw, pcap or pcapng by their magic).
    let mut datagrams = capture::datagrams(data);
    for d in datagrams.by_ref() {
        match d {
            Ok(d) => {
                let _ = HepPacket::decode(d.data);
            }
            Err(_) => break,
        }
    }
    let _ = datagrams.skipped();
});
