//! The wire format: round trips, golden bytes, and rejection of damage.

use linemon::frame::{
    BOARD_LINE, CRC, DecodeError, Deframer, Direction, EncodeError, Event, Frame, MAX_FRAME_LEN, RawPayload,
};

pub(crate) fn samples() -> Vec<Frame> {
    let events = [
        Event::Boot { firmware: [0, 1, 0], lines: 2, reset_cause: 1 },
        Event::Ringing { cadence: 3 },
        Event::Answered { rings: 2, ring_ms: 7_950 },
        Event::HungUp { duration_ms: 185_000, direction: Direction::Incoming },
        Event::Abandoned { rings: 5, ring_ms: 21_500 },
        Event::OffHook,
        Event::Polarity { reversed: true },
        Event::Heartbeat { dropped: 0, rejected_bursts: 12, states: 0xFFFF_FF21 },
        Event::Flash { duration_ms: 270 },
        Event::Unknown { kind: 0x42, payload: RawPayload::new(&[1, 0, 2]) },
    ];
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| Frame { seq: i as u32 * 0x0101_0101, line: i as u8 % 3, tick: 0xFFFF_0000 + i as u32, event })
        .collect()
}

pub(crate) fn encode(f: &Frame) -> Vec<u8> {
    let mut buf = [0u8; MAX_FRAME_LEN];
    let n = f.encode(&mut buf).unwrap();
    buf[..n].to_vec()
}

/// COBS + delimiter around raw bytes, with a correct CRC appended.
fn wrap_raw(body: &[u8]) -> Vec<u8> {
    let mut raw = body.to_vec();
    raw.extend_from_slice(&CRC.checksum(body).to_le_bytes());
    let mut out = vec![0u8; cobs::max_encoding_length(raw.len()) + 1];
    let n = cobs::encode(&raw, &mut out);
    out.truncate(n);
    out.push(0);
    out
}

#[test]
fn every_kind_round_trips() {
    for f in samples() {
        let bytes = encode(&f);
        assert!(bytes.len() <= MAX_FRAME_LEN);
        assert_eq!(bytes.iter().filter(|&&b| b == 0).count(), 1, "only the delimiter is 0x00");
        assert_eq!(Frame::decode(&bytes), Ok(f));
        assert_eq!(Frame::decode(&bytes[..bytes.len() - 1]), Ok(f), "delimiter optional");
    }
}

#[test]
fn deframer_resyncs_after_garbage() {
    let mut stream = vec![0x13, 0x37, 0xFF, 0x00, 0x00, 0x00];
    for f in samples() {
        stream.extend(encode(&f));
    }
    stream.extend([0xAA; 40]);
    stream.push(0);
    let mut d = Deframer::new();
    let results: Vec<_> = stream.iter().filter_map(|&b| d.push(b)).collect();
    assert!(results[0].is_err(), "leading garbage: {:?}", results[0]);
    let frames: Vec<_> = results[1..results.len() - 1].iter().map(|r| r.unwrap()).collect();
    assert_eq!(frames, samples());
    assert_eq!(results.last(), Some(&Err(DecodeError::TooLong)));
}

#[test]
fn every_truncation_is_rejected() {
    for f in samples().into_iter().filter(|f| !matches!(f.event, Event::Unknown { .. })) {
        let bytes = encode(&f);
        let body = &bytes[..bytes.len() - 1];
        for cut in 0..body.len() {
            assert!(Frame::decode(&body[..cut]).is_err(), "{f:?} cut at {cut}");
        }
    }
}

#[test]
fn every_single_bit_flip_is_rejected() {
    for f in samples() {
        let bytes = encode(&f);
        for i in 0..bytes.len() - 1 {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[i] ^= 1 << bit;
                assert!(Frame::decode(&damaged).is_err(), "{f:?} byte {i} bit {bit}");
            }
        }
    }
}

#[test]
fn versions_kinds_and_payloads() {
    let header = |version: u8, kind: u8| vec![version, kind, 0, 1, 0, 0, 0, 2, 0, 0, 0];
    // another version
    assert_eq!(Frame::decode(&wrap_raw(&header(2, 0x01))), Err(DecodeError::UnsupportedVersion(2)));
    // an unknown kind passes through
    let mut unknown = header(1, 0x7E);
    unknown.extend([9, 8, 7]);
    let f = Frame::decode(&wrap_raw(&unknown)).unwrap();
    assert_eq!(f.event, Event::Unknown { kind: 0x7E, payload: RawPayload::new(&[9, 8, 7]) });
    // a longer payload (a later revision appending a field) is accepted
    let mut longer = header(1, 0x01);
    longer.extend([4, 0xEE, 0xEE]);
    assert_eq!(Frame::decode(&wrap_raw(&longer)).unwrap().event, Event::Ringing { cadence: 4 });
    // short payload, bad enum values
    assert_eq!(Frame::decode(&wrap_raw(&header(1, 0x02))), Err(DecodeError::BadPayload { kind: 0x02 }));
    let mut bad_dir = header(1, 0x03);
    bad_dir.extend([0, 0, 0, 0, 9]);
    assert_eq!(Frame::decode(&wrap_raw(&bad_dir)), Err(DecodeError::BadPayload { kind: 0x03 }));
    let mut bad_bool = header(1, 0x06);
    bad_bool.push(2);
    assert_eq!(Frame::decode(&wrap_raw(&bad_bool)), Err(DecodeError::BadPayload { kind: 0x06 }));
    // too short for a header, too long for any frame, empty
    assert_eq!(Frame::decode(&wrap_raw(&[1, 1, 0])), Err(DecodeError::TooShort));
    assert_eq!(Frame::decode(&[0x55; 40]), Err(DecodeError::TooLong));
    assert_eq!(Frame::decode(&[0]), Err(DecodeError::Empty));
    assert_eq!(Frame::decode(&[3, 1, 0, 4, 0]), Err(DecodeError::Cobs));
}

#[test]
fn small_buffer_is_an_error() {
    let f = Frame { seq: 0, line: BOARD_LINE, tick: 0, event: Event::OffHook };
    let mut buf = [0u8; 8];
    assert!(matches!(f.encode(&mut buf), Err(EncodeError::BufferTooSmall { .. })));
}
