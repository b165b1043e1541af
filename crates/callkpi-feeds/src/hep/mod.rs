//! HEP (Homer Encapsulation Protocol) decoding: what Kamailio's `siptrace`,
//! OpenSIPS' `proto_hep`, heplify, captagent and rtpengine send to a
//! collector, and the two capture files `callkpi analyze --hep` reads.
//!
//! Checked against a real Kamailio 5.6.3 recording
//! (`tests/fixtures/sip-hep/hep.raw`, 885 datagrams).
//!
//! # HEPv3 ([`HepPacket::decode`], [`HepPacket::parse`])
//!
//! ```text
//! "HEP3" | total length u16 | chunk | chunk | ...
//! chunk = vendor id u16 | chunk type u16 | chunk length u16 (header included) | value
//! ```
//!
//! All integers are big-endian. Vendor 0 holds the generic chunks below;
//! chunks of other vendors (OpenSIPS uses 3 for its extra chunks) and unknown
//! generic types are skipped and counted in [`HepPacket::skipped_chunks`].
//! A repeated chunk replaces the earlier value.
//!
//! | type | field | value |
//! |---|---|---|
//! | 0x0001 | [`ip_family`](HepPacket::ip_family) | u8: 2 = IPv4, 10 = IPv6 |
//! | 0x0002 | [`ip_proto`](HepPacket::ip_proto) | u8: 17 = UDP, 6 = TCP, 132 = SCTP |
//! | 0x0003 / 0x0004 | [`src_ip`](HepPacket::src_ip) / [`dst_ip`](HepPacket::dst_ip) | IPv4, 4 bytes |
//! | 0x0005 / 0x0006 | the same | IPv6, 16 bytes |
//! | 0x0007 / 0x0008 | [`src_port`](HepPacket::src_port) / [`dst_port`](HepPacket::dst_port) | u16 |
//! | 0x0009 / 0x000a | [`ts_sec`](HepPacket::ts_sec) / [`ts_usec`](HepPacket::ts_usec) | u32, capture time |
//! | 0x000b | [`proto_type`](HepPacket::proto_type) | u8: 1 = SIP, 5 = RTCP, 100 = log, ... ([`proto`]) |
//! | 0x000c | [`capture_id`](HepPacket::capture_id) | u32 (captagent/heplify node id) |
//! | 0x000d | [`keep_alive`](HepPacket::keep_alive) | u16 timer, s |
//! | 0x000e | [`auth_key`](HepPacket::auth_key) | octets (heplify NodePW) |
//! | 0x000f | [`payload`](HepPacket::payload) | the captured message |
//! | 0x0010 | the same, [`payload_compressed`](HepPacket::payload_compressed) set | gzip/deflate-compressed message (OpenSIPS `payload_compression`) |
//! | 0x0011 | [`correlation_id`](HepPacket::correlation_id) | octets (Kamailio dialog mode, rtpengine: the Call-ID) |
//! | 0x0012 | [`vlan`](HepPacket::vlan) | u16 |
//! | 0x0013 | [`node_name`](HepPacket::node_name) | octets (heplify `-hn`) |
//! | 0x0014 / 0x0015 | [`src_mac`](HepPacket::src_mac) / [`dst_mac`](HepPacket::dst_mac) | 6 bytes, or 8 (a u64) |
//! | 0x0016 | [`ether_type`](HepPacket::ether_type) | u16 |
//! | 0x0017 | [`tcp_flags`](HepPacket::tcp_flags) | u8 |
//! | 0x0018 | [`ip_tos`](HepPacket::ip_tos) | u8 |
//! | 0x0020 / 0x0021 | [`mos`](HepPacket::mos) / [`r_factor`](HepPacket::r_factor) | u16 |
//! | 0x0022 | [`geo_location`](HepPacket::geo_location) | octets |
//! | 0x0023 | [`jitter`](HepPacket::jitter) | u32 |
//! | 0x0024 | [`transaction_type`](HepPacket::transaction_type) | octets |
//! | 0x0025 / 0x0026 | [`payload_json_keys`](HepPacket::payload_json_keys) / [`tags`](HepPacket::tags) | octets |
//! | 0x0027 / 0x0028 | [`tag_type`](HepPacket::tag_type) / [`event_type`](HepPacket::event_type) | u16 |
//! | 0x0029 | [`group_id`](HepPacket::group_id) | octets |
//!
//! Integer chunks are read as big-endian of whatever width 1 to 8 bytes the
//! sender used (some agents send a u16 capture id), and rejected when the
//! value does not fit ([`HepErrorKind::BadChunkValue`]). Address chunks must
//! have their exact size.
//!
//! A compressed payload (chunk 0x0010) is kept as sent and inflated on
//! demand by [`HepPacket::message`]: OpenSIPS' `proto_hep` compresses with
//! its `compression` module, which writes zlib (RFC 1950) or gzip (RFC
//! 1952); raw deflate (RFC 1951) is accepted too. The three are told apart
//! by their headers (gzip's `1f 8b`; zlib's CMF/FLG pair, a multiple of
//! 31); anything else is raw deflate. Inflating stops at
//! [`MAX_INFLATED_PAYLOAD`] bytes, so a small packet cannot expand without
//! bound; an undecodable or oversized one is
//! [`HepErrorKind::BadCompressedPayload`].
//!
//! # HEPv1 and HEPv2
//!
//! The older fixed headers are decoded too: version u8, header length u8,
//! family u8, protocol u8, source and destination port u16 (network order),
//! source and destination address (4 or 16 bytes), then for v2 a C struct
//! of seconds u32, microseconds u32 and capture id u16, in the sender's byte
//! order (little-endian on every platform Kamailio and OpenSIPS run on) and
//! padded to 12 bytes; the payload is the rest of the datagram. The header
//! length does not count the v2 time part (Kamailio 5.6 sends 16 for IPv4);
//! a length counting it is accepted too. Checked against Kamailio 5.6.3 with
//! `hep_version=2` (`tests/fixtures/sip-hep/hepv2-one-call.raw`).
//!
//! # Errors and framing
//!
//! A datagram holds exactly one packet: [`HepPacket::decode`] insists the
//! declared length equals the datagram's. Over TCP packets follow each other:
//! [`HepPacket::parse`] answers [`Status::Partial`] until a whole packet is
//! there, then how many bytes it used. Errors are a small `Copy`
//! [`HepError`] with the byte offset where the problem was seen. Nothing
//! here panics on any input (fuzzed: `fuzz/fuzz_targets/hep.rs`).
//!
//! # Capture files ([`capture`])
//!
//! Classic pcap and pcapng of HEP over UDP, and the length-prefixed raw
//! datagram file the sip-hep test harness writes.

pub mod capture;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use callkpi_core::event::{NANOS_PER_SEC, UnixNanos};

use crate::Status;

/// Well-known values of the protocol type chunk (0x000b).
pub mod proto {
    /// SIP.
    pub const SIP: u8 = 0x01;
    /// XMPP.
    pub const XMPP: u8 = 0x02;
    /// SDP.
    pub const SDP: u8 = 0x03;
    /// RTP.
    pub const RTP: u8 = 0x04;
    /// RTCP as JSON (rtpengine, heplify).
    pub const RTCP: u8 = 0x05;
    /// MGCP.
    pub const MGCP: u8 = 0x06;
    /// MEGACO / H.248.
    pub const MEGACO: u8 = 0x07;
    /// M2UA.
    pub const M2UA: u8 = 0x08;
    /// M3UA.
    pub const M3UA: u8 = 0x09;
    /// IAX.
    pub const IAX: u8 = 0x0a;
    /// H.322.
    pub const H322: u8 = 0x0b;
    /// H.321.
    pub const H321: u8 = 0x0c;
    /// M2PA.
    pub const M2PA: u8 = 0x0d;
    /// Diameter.
    pub const DIAMETER: u8 = 0x22;
    /// GSM MAP.
    pub const GSM_MAP: u8 = 0x23;
    /// RTCP XR.
    pub const RTCP_XR: u8 = 0x24;
    /// Call quality reports (JSON).
    pub const QOS_JSON: u8 = 0x20;
    /// Log lines (Kamailio/heplify).
    pub const LOG: u8 = 0x64;
}

/// The magic that starts every HEPv3 packet.
pub const HEP3_MAGIC: &[u8; 4] = b"HEP3";

/// Most bytes a compressed payload may inflate to. A SIP message over UDP
/// fits in 64 KiB, and a captured TCP segment is no larger; four times that
/// leaves room for a stream reassembled by the capture agent.
pub const MAX_INFLATED_PAYLOAD: usize = 256 * 1024;

/// Length of a HEPv3 packet header (`HEP3` and the total length).
const HEP3_HEADER: usize = 6;
/// Length of a chunk header (vendor, type, length).
const CHUNK_HEADER: usize = 6;

// === impl HepError ===

/// What was wrong with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HepErrorKind {
    /// Neither `HEP3` nor a plausible HEPv1/v2 header.
    BadMagic,
    /// Fewer bytes than the packet header, or than the length it declares.
    Truncated,
    /// The declared total length is shorter than a header, or (for a
    /// datagram) differs from the datagram's length.
    BadLength,
    /// A chunk's length is under 6 or runs past the packet's end.
    BadChunkLength,
    /// A fixed-size chunk has the wrong size, or an integer does not fit.
    BadChunkValue,
    /// A compressed payload (chunk 0x0010) does not inflate, or inflates
    /// beyond [`MAX_INFLATED_PAYLOAD`].
    BadCompressedPayload,
}

/// A decoding error: what went wrong and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HepError {
    /// What went wrong.
    pub kind: HepErrorKind,
    /// Byte offset from the start of the packet where it was noticed.
    pub offset: usize,
    /// The chunk type concerned, for chunk errors.
    pub chunk_type: Option<u16>,
}

impl HepError {
    fn new(kind: HepErrorKind, offset: usize) -> Self {
        Self { kind, offset, chunk_type: None }
    }

    fn chunk(kind: HepErrorKind, offset: usize, chunk_type: u16) -> Self {
        Self { kind, offset, chunk_type: Some(chunk_type) }
    }
}

impl fmt::Display for HepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            HepErrorKind::BadMagic => "not a HEP packet",
            HepErrorKind::Truncated => "HEP packet truncated",
            HepErrorKind::BadLength => "HEP packet length does not match",
            HepErrorKind::BadChunkLength => "bad HEP chunk length",
            HepErrorKind::BadChunkValue => "bad HEP chunk value",
            HepErrorKind::BadCompressedPayload => "HEP compressed payload does not inflate",
        };
        match self.chunk_type {
            Some(t) => write!(f, "{what} (chunk 0x{t:04x}) at byte {}", self.offset),
            None => write!(f, "{what} at byte {}", self.offset),
        }
    }
}

impl std::error::Error for HepError {}

// === impl HepPacket ===

/// One decoded HEP packet; octet fields borrow from the input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HepPacket<'a> {
    /// 1, 2 or 3.
    pub version: u8,
    /// IP family of the captured packet (2 = IPv4, 10 = IPv6).
    pub ip_family: Option<u8>,
    /// IP protocol of the captured packet (17 = UDP).
    pub ip_proto: Option<u8>,
    /// Source address of the captured packet.
    pub src_ip: Option<IpAddr>,
    /// Destination address of the captured packet.
    pub dst_ip: Option<IpAddr>,
    /// Source port of the captured packet.
    pub src_port: Option<u16>,
    /// Destination port of the captured packet.
    pub dst_port: Option<u16>,
    /// Capture time, seconds since the epoch.
    pub ts_sec: Option<u32>,
    /// Capture time, microseconds within the second.
    pub ts_usec: Option<u32>,
    /// What the payload is ([`proto`]).
    pub proto_type: Option<u8>,
    /// Capture agent id.
    pub capture_id: Option<u32>,
    /// Keep-alive timer, s.
    pub keep_alive: Option<u16>,
    /// Authentication key (password) of the capture agent.
    pub auth_key: Option<&'a [u8]>,
    /// The captured message (compressed when [`payload_compressed`](Self::payload_compressed)).
    pub payload: Option<&'a [u8]>,
    /// The payload came in chunk 0x0010, compressed.
    pub payload_compressed: bool,
    /// Correlation id (a Call-ID for Kamailio's dialog mode and rtpengine).
    pub correlation_id: Option<&'a [u8]>,
    /// VLAN id.
    pub vlan: Option<u16>,
    /// Capture node name.
    pub node_name: Option<&'a [u8]>,
    /// Source MAC address.
    pub src_mac: Option<[u8; 6]>,
    /// Destination MAC address.
    pub dst_mac: Option<[u8; 6]>,
    /// Ethernet type.
    pub ether_type: Option<u16>,
    /// TCP flags.
    pub tcp_flags: Option<u8>,
    /// IP type of service.
    pub ip_tos: Option<u8>,
    /// MOS x 100.
    pub mos: Option<u16>,
    /// R-factor.
    pub r_factor: Option<u16>,
    /// Geographic location.
    pub geo_location: Option<&'a [u8]>,
    /// Jitter.
    pub jitter: Option<u32>,
    /// Transaction type.
    pub transaction_type: Option<&'a [u8]>,
    /// Payload JSON keys.
    pub payload_json_keys: Option<&'a [u8]>,
    /// Tag values.
    pub tags: Option<&'a [u8]>,
    /// Tag type.
    pub tag_type: Option<u16>,
    /// Event type.
    pub event_type: Option<u16>,
    /// Group id.
    pub group_id: Option<&'a [u8]>,
    /// Chunks skipped: other vendors' and unknown generic types.
    pub skipped_chunks: u16,
}

impl<'a> HepPacket<'a> {
    /// Decodes one UDP datagram holding exactly one HEP packet.
    ///
    /// # Errors
    /// [`HepError`] when the bytes are not one well-formed packet.
    pub fn decode(datagram: &'a [u8]) -> Result<Self, HepError> {
        match Self::parse(datagram)? {
            Status::Complete { value, consumed } if consumed == datagram.len() => Ok(value),
            Status::Complete { consumed, .. } => Err(HepError::new(HepErrorKind::BadLength, consumed)),
            Status::Partial => Err(HepError::new(HepErrorKind::Truncated, datagram.len())),
        }
    }

    /// Parses the packet at the start of `buf` (a TCP stream, or a
    /// datagram): [`Status::Partial`] until the whole packet is there.
    /// HEPv1/v2 have no length field: their payload is the rest of `buf`,
    /// so they can only be read from datagrams.
    ///
    /// # Errors
    /// [`HepError`] when the bytes cannot start a well-formed packet; a
    /// stream reader cannot resynchronise after one and should reconnect.
    pub fn parse(buf: &'a [u8]) -> Result<Status<Self>, HepError> {
        match buf.first() {
            None => Ok(Status::Partial),
            Some(b'H') => parse_v3(buf),
            Some(1 | 2) => parse_v2(buf),
            Some(_) => Err(HepError::new(HepErrorKind::BadMagic, 0)),
        }
    }

    /// Capture time in ns since the epoch, from the time chunks (microseconds
    /// default to 0; a sender's microseconds above a second are carried over).
    pub fn timestamp(&self) -> Option<UnixNanos> {
        let sec = i64::from(self.ts_sec?);
        let usec = i64::from(self.ts_usec.unwrap_or(0));
        sec.checked_mul(NANOS_PER_SEC)?.checked_add(usec.checked_mul(1_000)?)
    }

    /// The captured message, inflated when it came compressed (chunk
    /// 0x0010; see the [module documentation](self)); `None` without a
    /// payload chunk.
    ///
    /// # Errors
    /// [`HepErrorKind::BadCompressedPayload`] when a compressed payload
    /// does not inflate, or inflates beyond [`MAX_INFLATED_PAYLOAD`].
    pub fn message(&self) -> Result<Option<Cow<'a, [u8]>>, HepError> {
        match self.payload {
            None => Ok(None),
            Some(p) if !self.payload_compressed => Ok(Some(Cow::Borrowed(p))),
            Some(p) => inflate(p).map(|v| Some(Cow::Owned(v))).ok_or(HepError::chunk(
                HepErrorKind::BadCompressedPayload,
                0,
                0x0010,
            )),
        }
    }

    /// Whether the payload is SIP (protocol type 1).
    pub fn is_sip(&self) -> bool {
        self.proto_type == Some(proto::SIP)
    }
}

fn parse_v3(buf: &[u8]) -> Result<Status<HepPacket<'_>>, HepError> {
    if buf.len() < HEP3_HEADER {
        // Say no early when what is there already is not HEP3.
        if !HEP3_MAGIC.starts_with(&buf[..buf.len().min(4)]) {
            return Err(HepError::new(HepErrorKind::BadMagic, 0));
        }
        return Ok(Status::Partial);
    }
    if &buf[..4] != HEP3_MAGIC {
        return Err(HepError::new(HepErrorKind::BadMagic, 0));
    }
    let total = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
    if total < HEP3_HEADER {
        return Err(HepError::new(HepErrorKind::BadLength, 4));
    }
    let Some(packet) = buf.get(..total) else {
        return Ok(Status::Partial);
    };
    let mut p = HepPacket { version: 3, ..HepPacket::default() };
    let mut off = HEP3_HEADER;
    while off < total {
        let Some(h) = packet.get(off..off + CHUNK_HEADER) else {
            return Err(HepError::new(HepErrorKind::BadChunkLength, off));
        };
        let vendor = u16::from_be_bytes([h[0], h[1]]);
        let ctype = u16::from_be_bytes([h[2], h[3]]);
        let clen = usize::from(u16::from_be_bytes([h[4], h[5]]));
        if clen < CHUNK_HEADER {
            return Err(HepError::chunk(HepErrorKind::BadChunkLength, off, ctype));
        }
        let Some(value) = packet.get(off + CHUNK_HEADER..off + clen) else {
            return Err(HepError::chunk(HepErrorKind::BadChunkLength, off, ctype));
        };
        if vendor == 0 {
            apply_chunk(&mut p, ctype, value).map_err(|kind| HepError::chunk(kind, off, ctype))?;
        } else {
            p.skipped_chunks = p.skipped_chunks.saturating_add(1);
        }
        off += clen;
    }
    Ok(Status::Complete { value: p, consumed: total })
}

/// Stores one generic chunk's value.
fn apply_chunk<'a>(p: &mut HepPacket<'a>, ctype: u16, v: &'a [u8]) -> Result<(), HepErrorKind> {
    match ctype {
        0x0001 => p.ip_family = Some(int(v)?),
        0x0002 => p.ip_proto = Some(int(v)?),
        0x0003 => p.src_ip = Some(IpAddr::V4(ipv4(v)?)),
        0x0004 => p.dst_ip = Some(IpAddr::V4(ipv4(v)?)),
        0x0005 => p.src_ip = Some(IpAddr::V6(ipv6(v)?)),
        0x0006 => p.dst_ip = Some(IpAddr::V6(ipv6(v)?)),
        0x0007 => p.src_port = Some(int(v)?),
        0x0008 => p.dst_port = Some(int(v)?),
        0x0009 => p.ts_sec = Some(int(v)?),
        0x000a => p.ts_usec = Some(int(v)?),
        0x000b => p.proto_type = Some(int(v)?),
        0x000c => p.capture_id = Some(int(v)?),
        0x000d => p.keep_alive = Some(int(v)?),
        0x000e => p.auth_key = Some(v),
        0x000f => {
            p.payload = Some(v);
            p.payload_compressed = false;
        }
        0x0010 => {
            p.payload = Some(v);
            p.payload_compressed = true;
        }
        0x0011 => p.correlation_id = Some(v),
        0x0012 => p.vlan = Some(int(v)?),
        0x0013 => p.node_name = Some(v),
        0x0014 => p.src_mac = Some(mac(v)?),
        0x0015 => p.dst_mac = Some(mac(v)?),
        0x0016 => p.ether_type = Some(int(v)?),
        0x0017 => p.tcp_flags = Some(int(v)?),
        0x0018 => p.ip_tos = Some(int(v)?),
        0x0020 => p.mos = Some(int(v)?),
        0x0021 => p.r_factor = Some(int(v)?),
        0x0022 => p.geo_location = Some(v),
        0x0023 => p.jitter = Some(int(v)?),
        0x0024 => p.transaction_type = Some(v),
        0x0025 => p.payload_json_keys = Some(v),
        0x0026 => p.tags = Some(v),
        0x0027 => p.tag_type = Some(int(v)?),
        0x0028 => p.event_type = Some(int(v)?),
        0x0029 => p.group_id = Some(v),
        _ => p.skipped_chunks = p.skipped_chunks.saturating_add(1),
    }
    Ok(())
}

/// Inflates gzip, zlib or raw deflate `data`, at most
/// [`MAX_INFLATED_PAYLOAD`] bytes; `None` when it does not decode or is
/// larger.
fn inflate(data: &[u8]) -> Option<Vec<u8>> {
    use std::io::Read as _;

    let zlib = data.len() >= 2
        && data[0] & 0x0f == 8
        && data[0] >> 4 <= 7
        && (u16::from(data[0]) << 8 | u16::from(data[1])) % 31 == 0;
    let reader: Box<dyn std::io::Read + '_> = if data.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(data))
    } else if zlib {
        Box::new(flate2::read::ZlibDecoder::new(data))
    } else {
        Box::new(flate2::read::DeflateDecoder::new(data))
    };
    let mut out = Vec::new();
    // One byte more than allowed tells an oversized payload from one that fits.
    reader.take(MAX_INFLATED_PAYLOAD as u64 + 1).read_to_end(&mut out).ok()?;
    (out.len() <= MAX_INFLATED_PAYLOAD && !out.is_empty()).then_some(out)
}

/// A big-endian unsigned integer of 1 to 8 bytes that fits in `T`.
fn int<T: TryFrom<u64>>(v: &[u8]) -> Result<T, HepErrorKind> {
    if v.is_empty() || v.len() > 8 {
        return Err(HepErrorKind::BadChunkValue);
    }
    let n = v.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b));
    T::try_from(n).map_err(|_| HepErrorKind::BadChunkValue)
}

fn ipv4(v: &[u8]) -> Result<Ipv4Addr, HepErrorKind> {
    <[u8; 4]>::try_from(v).map(Ipv4Addr::from).map_err(|_| HepErrorKind::BadChunkValue)
}

fn ipv6(v: &[u8]) -> Result<Ipv6Addr, HepErrorKind> {
    <[u8; 16]>::try_from(v).map(Ipv6Addr::from).map_err(|_| HepErrorKind::BadChunkValue)
}

/// Six bytes, or a u64 whose low six bytes are the address.
fn mac(v: &[u8]) -> Result<[u8; 6], HepErrorKind> {
    match v.len() {
        6 => <[u8; 6]>::try_from(v).map_err(|_| HepErrorKind::BadChunkValue),
        8 => <[u8; 6]>::try_from(&v[2..]).map_err(|_| HepErrorKind::BadChunkValue),
        _ => Err(HepErrorKind::BadChunkValue),
    }
}

/// HEPv1/v2: `version | hdr len | family | proto | sport | dport | src | dst [| sec | usec | capid]`.
fn parse_v2(buf: &[u8]) -> Result<Status<HepPacket<'_>>, HepError> {
    const FIXED: usize = 8;
    // struct hep_timehdr { u32 sec; u32 usec; u16 captid; }: 10 bytes, 12
    // with the C struct's padding, which is what is sent.
    const TIME: usize = 12;
    let Some(fixed) = buf.get(..FIXED) else {
        return Ok(Status::Partial);
    };
    let version = fixed[0];
    let hdr_len = usize::from(fixed[1]);
    let family = fixed[2];
    let addr_len = match family {
        2 => 4,
        10 => 16,
        _ => return Err(HepError::new(HepErrorKind::BadMagic, 2)),
    };
    let time_len = if version == 2 { TIME } else { 0 };
    let base = FIXED + 2 * addr_len;
    // Senders disagree on whether the length counts the v2 time header.
    if hdr_len != base && hdr_len != base + time_len {
        return Err(HepError::new(HepErrorKind::BadMagic, 1));
    }
    let Some(head) = buf.get(..base + time_len) else {
        return Ok(Status::Partial);
    };
    let addr = |at: usize| -> Option<IpAddr> {
        let v = head.get(at..at + addr_len)?;
        if addr_len == 4 { ipv4(v).ok().map(IpAddr::V4) } else { ipv6(v).ok().map(IpAddr::V6) }
    };
    let mut p = HepPacket {
        version,
        ip_family: Some(family),
        ip_proto: Some(fixed[3]),
        src_port: Some(u16::from_be_bytes([fixed[4], fixed[5]])),
        dst_port: Some(u16::from_be_bytes([fixed[6], fixed[7]])),
        src_ip: addr(FIXED),
        dst_ip: addr(FIXED + addr_len),
        // v1/v2 carry SIP only.
        proto_type: Some(proto::SIP),
        ..HepPacket::default()
    };
    if version == 2 {
        let t = &head[base..];
        p.ts_sec = Some(u32::from_le_bytes([t[0], t[1], t[2], t[3]]));
        p.ts_usec = Some(u32::from_le_bytes([t[4], t[5], t[6], t[7]]));
        p.capture_id = Some(u32::from(u16::from_le_bytes([t[8], t[9]])));
    }
    // No length field covers the payload: it is the rest of the datagram.
    p.payload = Some(&buf[base + time_len..]);
    Ok(Status::Complete { value: p, consumed: buf.len() })
}
