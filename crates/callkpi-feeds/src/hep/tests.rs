use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::capture::{self, CaptureErrorKind, CaptureFormat};
use super::*;

/// Builds a HEPv3 packet from (vendor, type, value) chunks.
fn hep3(chunks: &[(u16, u16, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (vendor, ctype, value) in chunks {
        body.extend_from_slice(&vendor.to_be_bytes());
        body.extend_from_slice(&ctype.to_be_bytes());
        body.extend_from_slice(&(u16::try_from(value.len() + 6).unwrap()).to_be_bytes());
        body.extend_from_slice(value);
    }
    let mut p = b"HEP3".to_vec();
    p.extend_from_slice(&(u16::try_from(body.len() + 6).unwrap()).to_be_bytes());
    p.extend_from_slice(&body);
    p
}

/// What Kamailio's siptrace sends, chunk for chunk (tests/fixtures/sip-hep).
fn kamailio_like(payload: &[u8]) -> Vec<u8> {
    hep3(&[
        (0, 0x0001, &[2]),
        (0, 0x0002, &[17]),
        (0, 0x0003, &[127, 0, 0, 2]),
        (0, 0x0004, &[127, 0, 0, 1]),
        (0, 0x0007, &5060u16.to_be_bytes()),
        (0, 0x0008, &5060u16.to_be_bytes()),
        (0, 0x0009, &1_795_616_090u32.to_be_bytes()),
        (0, 0x000a, &158_099u32.to_be_bytes()),
        (0, 0x000b, &[1]),
        (0, 0x000c, &2001u32.to_be_bytes()),
        (0, 0x000f, payload),
    ])
}

#[test]
fn decodes_the_chunks_kamailio_sends() {
    let p = kamailio_like(b"OPTIONS sip:x SIP/2.0\r\n\r\n");
    // 99 bytes of HEP around the payload, as observed.
    assert_eq!(p.len(), 99 + 25);
    let h = HepPacket::decode(&p).unwrap();
    assert_eq!(h.version, 3);
    assert_eq!(h.ip_family, Some(2));
    assert_eq!(h.ip_proto, Some(17));
    assert_eq!(h.src_ip, Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));
    assert_eq!(h.dst_ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    assert_eq!((h.src_port, h.dst_port), (Some(5060), Some(5060)));
    assert_eq!(h.timestamp(), Some(1_795_616_090_158_099_000));
    assert!(h.is_sip());
    assert_eq!(h.capture_id, Some(2001));
    assert_eq!(h.payload, Some(&b"OPTIONS sip:x SIP/2.0\r\n\r\n"[..]));
    assert!(!h.payload_compressed);
    assert_eq!(h.skipped_chunks, 0);
}

#[test]
fn decodes_every_generic_chunk_and_skips_the_rest() {
    let v6a = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    let v6b = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
    let p = hep3(&[
        (0, 0x0001, &[10]),
        (0, 0x0002, &[6]),
        (0, 0x0005, &v6a.octets()),
        (0, 0x0006, &v6b.octets()),
        (0, 0x0007, &5061u16.to_be_bytes()),
        (0, 0x0008, &5062u16.to_be_bytes()),
        (0, 0x0009, &10u32.to_be_bytes()),
        (0, 0x000a, &1_500_000u32.to_be_bytes()),
        (0, 0x000b, &[proto::RTCP]),
        // heplify-style u16 capture id
        (0, 0x000c, &7u16.to_be_bytes()),
        (0, 0x000d, &30u16.to_be_bytes()),
        (0, 0x000e, b"secret"),
        (0, 0x0010, b"\x1f\x8bgz"),
        (0, 0x0011, b"call-1@host"),
        (0, 0x0012, &100u16.to_be_bytes()),
        (0, 0x0013, b"node-a"),
        (0, 0x0014, &[1, 2, 3, 4, 5, 6]),
        (0, 0x0015, &0x0000_0a0b_0c0d_0e0fu64.to_be_bytes()),
        (0, 0x0016, &0x0800u16.to_be_bytes()),
        (0, 0x0017, &[0x18]),
        (0, 0x0018, &[0xb8]),
        (0, 0x0020, &430u16.to_be_bytes()),
        (0, 0x0021, &93u16.to_be_bytes()),
        (0, 0x0022, b"48.85,2.35"),
        (0, 0x0023, &12u32.to_be_bytes()),
        (0, 0x0024, b"call"),
        (0, 0x0025, b"k"),
        (0, 0x0026, b"t"),
        (0, 0x0027, &2u16.to_be_bytes()),
        (0, 0x0028, &3u16.to_be_bytes()),
        (0, 0x0029, b"g1"),
        // An OpenSIPS vendor chunk and an unknown generic one.
        (3, 0x0001, b"opensips"),
        (0, 0x00ff, b"future"),
    ]);
    let h = HepPacket::decode(&p).unwrap();
    assert_eq!(h.ip_family, Some(10));
    assert_eq!(h.ip_proto, Some(6));
    assert_eq!(h.src_ip, Some(IpAddr::V6(v6a)));
    assert_eq!(h.dst_ip, Some(IpAddr::V6(v6b)));
    assert_eq!((h.src_port, h.dst_port), (Some(5061), Some(5062)));
    // Microseconds over a second are carried, not dropped.
    assert_eq!(h.timestamp(), Some(11_500_000_000));
    assert!(!h.is_sip());
    assert_eq!(h.capture_id, Some(7));
    assert_eq!(h.keep_alive, Some(30));
    assert_eq!(h.auth_key, Some(&b"secret"[..]));
    assert_eq!(h.payload, Some(&b"\x1f\x8bgz"[..]));
    assert!(h.payload_compressed);
    assert_eq!(h.correlation_id, Some(&b"call-1@host"[..]));
    assert_eq!(h.vlan, Some(100));
    assert_eq!(h.node_name, Some(&b"node-a"[..]));
    assert_eq!(h.src_mac, Some([1, 2, 3, 4, 5, 6]));
    assert_eq!(h.dst_mac, Some([0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f]));
    assert_eq!(h.ether_type, Some(0x0800));
    assert_eq!((h.tcp_flags, h.ip_tos), (Some(0x18), Some(0xb8)));
    assert_eq!((h.mos, h.r_factor, h.jitter), (Some(430), Some(93), Some(12)));
    assert_eq!(h.geo_location, Some(&b"48.85,2.35"[..]));
    assert_eq!(h.transaction_type, Some(&b"call"[..]));
    assert_eq!((h.payload_json_keys, h.tags), (Some(&b"k"[..]), Some(&b"t"[..])));
    assert_eq!((h.tag_type, h.event_type), (Some(2), Some(3)));
    assert_eq!(h.group_id, Some(&b"g1"[..]));
    assert_eq!(h.skipped_chunks, 2);
}

#[test]
fn malformed_packets_are_clear_errors() {
    let good = kamailio_like(b"x");
    let err = |b: &[u8]| HepPacket::decode(b).unwrap_err();
    assert_eq!(err(b"HEP2\x00\x06").kind, HepErrorKind::BadMagic);
    assert_eq!(err(b"GET / HTTP/1.1\r\n").kind, HepErrorKind::BadMagic);
    assert_eq!(err(b"").kind, HepErrorKind::Truncated);
    assert_eq!(err(&good[..good.len() - 1]).kind, HepErrorKind::Truncated);
    let mut longer = good.clone();
    longer.push(0);
    assert_eq!(err(&longer), HepError { kind: HepErrorKind::BadLength, offset: good.len(), chunk_type: None });
    assert_eq!(err(b"HEP3\x00\x03").kind, HepErrorKind::BadLength);
    // A chunk length under its own header, and one running past the end.
    assert_eq!(err(b"HEP3\x00\x0c\x00\x00\x00\x01\x00\x05").kind, HepErrorKind::BadChunkLength);
    let e = err(b"HEP3\x00\x0d\x00\x00\x00\x0b\x00\x08\x01");
    assert_eq!((e.kind, e.offset, e.chunk_type), (HepErrorKind::BadChunkLength, 6, Some(0x0b)));
    assert_eq!(err(b"HEP3\x00\x0a\x00\x00\x00\x01").kind, HepErrorKind::BadChunkLength);
    // Wrong sizes: a 3-byte IPv4 address, a protocol type that does not fit a u8.
    let e = err(&hep3(&[(0, 0x0003, &[1, 2, 3])]));
    assert_eq!((e.kind, e.chunk_type), (HepErrorKind::BadChunkValue, Some(3)));
    assert_eq!(err(&hep3(&[(0, 0x000b, &[1, 0])])).kind, HepErrorKind::BadChunkValue);
    assert_eq!(err(&hep3(&[(0, 0x000c, &[])])).kind, HepErrorKind::BadChunkValue);
    assert_eq!(err(&hep3(&[(0, 0x0014, &[1, 2, 3])])).kind, HepErrorKind::BadChunkValue);
    assert_eq!(err(&hep3(&[(0, 0x0003, &[1, 2, 3])])).to_string(), "bad HEP chunk value (chunk 0x0003) at byte 6");
}

#[test]
fn a_stream_is_framed_by_the_declared_length() {
    let a = kamailio_like(b"first");
    let b = kamailio_like(b"second");
    let mut stream = a.clone();
    stream.extend_from_slice(&b);
    let Ok(Status::Complete { value, consumed }) = HepPacket::parse(&stream) else { panic!() };
    assert_eq!((consumed, value.payload), (a.len(), Some(&b"first"[..])));
    let Ok(Status::Complete { value, .. }) = HepPacket::parse(&stream[consumed..]) else { panic!() };
    assert_eq!(value.payload, Some(&b"second"[..]));
    for cut in [0, 1, 3, 5, 6, a.len() - 1] {
        assert_eq!(HepPacket::parse(&a[..cut]), Ok(Status::Partial), "cut at {cut}");
    }
    assert_eq!(HepPacket::parse(b"HEX").unwrap_err().kind, HepErrorKind::BadMagic);
}

/// A HEPv2 datagram as Kamailio's siptrace writes it: network-order ports,
/// little-endian time and capture id, the time struct padded to 12 bytes.
fn hep2(hdr_len_counts_time: bool) -> Vec<u8> {
    let hl: u8 = if hdr_len_counts_time { 28 } else { 16 };
    let mut p = vec![2, hl, 2, 17];
    p.extend_from_slice(&5060u16.to_be_bytes());
    p.extend_from_slice(&5080u16.to_be_bytes());
    p.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    p.extend_from_slice(&1_700_000_000u32.to_le_bytes());
    p.extend_from_slice(&250_000u32.to_le_bytes());
    p.extend_from_slice(&42u16.to_le_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(b"BYE sip:a SIP/2.0\r\n\r\n");
    p
}

#[test]
fn decodes_hepv2_and_v1() {
    for counts_time in [false, true] {
        let p = hep2(counts_time);
        let h = HepPacket::decode(&p).unwrap();
        assert_eq!(h.version, 2);
        assert_eq!(h.src_ip, Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))));
        assert_eq!(h.dst_ip, Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))));
        assert_eq!((h.src_port, h.dst_port), (Some(5060), Some(5080)));
        assert_eq!(h.timestamp(), Some(1_700_000_000_250_000_000));
        assert_eq!(h.capture_id, Some(42));
        assert!(h.is_sip());
        assert_eq!(h.payload, Some(&b"BYE sip:a SIP/2.0\r\n\r\n"[..]));
    }
    let mut v1 = vec![1, 16, 2, 17, 0x13, 0xc4, 0x13, 0xc4, 1, 1, 1, 1, 2, 2, 2, 2];
    v1.extend_from_slice(b"ACK");
    let h = HepPacket::decode(&v1).unwrap();
    assert_eq!((h.version, h.timestamp(), h.payload), (1, None, Some(&b"ACK"[..])));
    // An unknown family or a header length matching neither convention.
    assert_eq!(HepPacket::decode(&[2, 16, 7, 17, 0, 0, 0, 0]).unwrap_err().kind, HepErrorKind::BadMagic);
    assert_eq!(HepPacket::decode(&[2, 17, 2, 17, 0, 0, 0, 0]).unwrap_err().kind, HepErrorKind::BadMagic);
    assert_eq!(HepPacket::decode(&hep2(false)[..20]).unwrap_err().kind, HepErrorKind::Truncated);
}

// === capture files ===

fn raw_file(datagrams: &[&[u8]]) -> Vec<u8> {
    let mut f = Vec::new();
    for d in datagrams {
        f.extend_from_slice(&u32::try_from(d.len()).unwrap().to_be_bytes());
        f.extend_from_slice(d);
    }
    f
}

#[test]
fn reads_length_prefixed_files_and_stops_at_damage() {
    let a = kamailio_like(b"a");
    let b = kamailio_like(b"bb");
    let f = raw_file(&[&a, &b]);
    assert_eq!(capture::detect(&f), CaptureFormat::LengthPrefixed);
    let got: Vec<_> = capture::datagrams(&f).map(|d| d.unwrap()).collect();
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].data, got[1].data), (&a[..], &b[..]));
    assert_eq!((got[0].time, got[0].src), (None, None));
    assert_eq!(capture::datagrams(b"").count(), 0);

    let cut = &f[..f.len() - 3];
    let got: Vec<_> = capture::datagrams(cut).collect();
    assert_eq!(got.len(), 2);
    let e = got[1].unwrap_err();
    assert_eq!((e.kind, e.offset), (CaptureErrorKind::Truncated, 4 + a.len()));
    let e = capture::datagrams(&[0, 1, 0, 0, 1]).next().unwrap().unwrap_err();
    assert_eq!(e.kind, CaptureErrorKind::BadRecordLength);
    assert_eq!(capture::datagrams(&[0, 0]).next().unwrap().unwrap_err().kind, CaptureErrorKind::Truncated);
}

/// An Ethernet/IPv4/UDP frame carrying `payload` from 127.0.0.1:5060 to 127.0.0.1:9060.
fn udp_frame(payload: &[u8]) -> Vec<u8> {
    let b =
        etherparse::PacketBuilder::ethernet2([0; 6], [0; 6]).ipv4([127, 0, 0, 1], [127, 0, 0, 1], 64).udp(5060, 9060);
    let mut f = Vec::new();
    b.write(&mut f, payload).unwrap();
    f
}

fn pcap_file(big_endian: bool, nanos: bool, linktype: u32, frames: &[(u32, u32, Vec<u8>)]) -> Vec<u8> {
    let w32 = |v: u32| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
    let w16 = |v: u16| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
    let mut f = Vec::new();
    f.extend_from_slice(&w32(if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }));
    f.extend_from_slice(&w16(2));
    f.extend_from_slice(&w16(4));
    f.extend_from_slice(&w32(0));
    f.extend_from_slice(&w32(0));
    f.extend_from_slice(&w32(65535));
    f.extend_from_slice(&w32(linktype));
    for (sec, frac, data) in frames {
        f.extend_from_slice(&w32(*sec));
        f.extend_from_slice(&w32(*frac));
        f.extend_from_slice(&w32(u32::try_from(data.len()).unwrap()));
        f.extend_from_slice(&w32(u32::try_from(data.len()).unwrap()));
        f.extend_from_slice(data);
    }
    f
}

#[test]
fn reads_classic_pcap_in_both_byte_orders_and_precisions() {
    let hep = kamailio_like(b"INVITE");
    for (big_endian, nanos) in [(false, false), (true, false), (false, true), (true, true)] {
        let frac = if nanos { 123_456_789 } else { 123_456 };
        let f = pcap_file(big_endian, nanos, 1, &[(1_700_000_000, frac, udp_frame(&hep)), (1, 0, vec![0; 20])]);
        assert_eq!(capture::detect(&f), CaptureFormat::Pcap);
        let mut it = capture::datagrams(&f);
        let d = it.next().unwrap().unwrap();
        assert_eq!(d.data, &hep[..]);
        let want = if nanos { 1_700_000_000_123_456_789 } else { 1_700_000_000_123_456_000 };
        assert_eq!(d.time, Some(want), "be={big_endian} ns={nanos}");
        assert_eq!(d.src.unwrap().to_string(), "127.0.0.1:5060");
        assert_eq!(d.dst.unwrap().to_string(), "127.0.0.1:9060");
        // The 20 zero bytes are no UDP: skipped, not an error.
        assert!(it.next().is_none());
        assert_eq!(it.skipped(), 1);
    }
    // Raw IP link type, and a truncated last frame.
    let ip_only = udp_frame(&hep)[14..].to_vec();
    let f = pcap_file(false, false, 101, &[(5, 0, ip_only)]);
    assert_eq!(capture::datagrams(&f).next().unwrap().unwrap().data, &hep[..]);
    let e = capture::datagrams(&f[..f.len() - 1]).last().unwrap().unwrap_err();
    assert_eq!((e.kind, e.offset), (CaptureErrorKind::Truncated, 24));
    assert_eq!(capture::datagrams(&f[..10]).next().unwrap().unwrap_err().kind, CaptureErrorKind::BadFormat);
}

/// A pcapng block: type, total length, body, total length (little-endian).
fn ng_block(kind: u32, body: &[u8]) -> Vec<u8> {
    let mut body = body.to_vec();
    while !body.len().is_multiple_of(4) {
        body.push(0);
    }
    let len = u32::try_from(body.len() + 12).unwrap();
    let mut b = kind.to_le_bytes().to_vec();
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(&body);
    b.extend_from_slice(&len.to_le_bytes());
    b
}

#[test]
fn reads_pcapng_with_interface_time_resolution() {
    let hep = kamailio_like(b"BYE");
    let frame = udp_frame(&hep);
    let mut shb = 0x1a2b_3c4du32.to_le_bytes().to_vec();
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    // Interface 0: Ethernet, nanosecond timestamps (if_tsresol = 9).
    let mut idb = 1u16.to_le_bytes().to_vec();
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&65535u32.to_le_bytes());
    idb.extend_from_slice(&[9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
    let ts: u64 = 1_700_000_000_987_654_321;
    let mut epb = 0u32.to_le_bytes().to_vec();
    epb.extend_from_slice(&u32::try_from(ts >> 32).unwrap().to_le_bytes());
    epb.extend_from_slice(&u32::try_from(ts & 0xffff_ffff).unwrap().to_le_bytes());
    epb.extend_from_slice(&u32::try_from(frame.len()).unwrap().to_le_bytes());
    epb.extend_from_slice(&u32::try_from(frame.len()).unwrap().to_le_bytes());
    epb.extend_from_slice(&frame);
    // An EPB naming an interface that was never described is skipped.
    let mut stray = epb.clone();
    stray[..4].copy_from_slice(&5u32.to_le_bytes());
    let mut f = ng_block(0x0a0d_0d0a, &shb);
    f.extend(ng_block(1, &idb));
    f.extend(ng_block(6, &epb));
    f.extend(ng_block(6, &stray));
    assert_eq!(capture::detect(&f), CaptureFormat::Pcapng);
    let mut it = capture::datagrams(&f);
    let d = it.next().unwrap().unwrap();
    assert_eq!(d.data, &hep[..]);
    assert_eq!(d.time, Some(1_700_000_000_987_654_321));
    assert!(it.next().is_none());
    assert_eq!(it.skipped(), 1);
    let e = capture::datagrams(&f[..f.len() - 4]).last().unwrap().unwrap_err();
    assert_eq!(e.kind, CaptureErrorKind::Truncated);
}

#[test]
fn compressed_payloads_inflate_within_a_bound() {
    use std::io::Write as _;

    let sip = b"OPTIONS sip:x SIP/2.0\r\nCall-ID: z\r\nCSeq: 1 OPTIONS\r\n\r\n";
    let packet = |payload: &[u8]| hep3(&[(0, 0x000b, &[1]), (0, 0x0010, payload)]);
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(sip).unwrap();
        e.finish().unwrap()
    };
    let zl = {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(sip).unwrap();
        e.finish().unwrap()
    };
    let raw = {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(sip).unwrap();
        e.finish().unwrap()
    };
    for c in [&gz, &zl, &raw] {
        let bytes = packet(c);
        let h = HepPacket::decode(&bytes).unwrap();
        assert_eq!(h.message().unwrap().as_deref(), Some(&sip[..]));
    }
    // Plain payloads are borrowed, not copied.
    let plain = kamailio_like(sip);
    assert!(matches!(HepPacket::decode(&plain).unwrap().message(), Ok(Some(Cow::Borrowed(_)))));
    // Garbage, a truncated stream and a bomb are errors, not panics or OOM.
    let bomb = {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&vec![b'a'; MAX_INFLATED_PAYLOAD + 1]).unwrap();
        e.finish().unwrap()
    };
    assert!(bomb.len() < 2000, "{} bytes", bomb.len());
    for bad in [&b"\x1f\x8bgz"[..], &gz[..gz.len() / 2], &bomb, b""] {
        let bytes = packet(bad);
        let err = HepPacket::decode(&bytes).unwrap().message().unwrap_err();
        assert_eq!((err.kind, err.chunk_type), (HepErrorKind::BadCompressedPayload, Some(0x0010)));
    }
}
