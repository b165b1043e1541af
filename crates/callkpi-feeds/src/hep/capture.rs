//! Capture files of HEP datagrams, read from a buffer: what `callkpi analyze
//! --hep PATH` takes.
//!
//! Three formats, told apart by their first bytes ([`detect`]):
//!
//! - **Length-prefixed raw datagrams** ([`CaptureFormat::LengthPrefixed`]):
//!   records of a big-endian u32 length N then the N bytes of one datagram,
//!   as received (the sip-hep harness's `hep.raw`). No timestamps of their
//!   own: the HEP time chunks carry them. A record longer than 65 535 bytes
//!   (more than a UDP datagram, and more than a HEP length can say) means the
//!   file is not of this format, or is damaged: reading stops there with
//!   [`CaptureErrorKind::BadRecordLength`].
//! - **Classic pcap** ([`CaptureFormat::Pcap`], both byte orders, micro- and
//!   nanosecond variants), read with `pcap-parser`.
//! - **pcapng** ([`CaptureFormat::Pcapng`], what `tshark -w` writes by
//!   default): enhanced and simple packet blocks, each interface's link type
//!   and time resolution.
//!
//! From pcap and pcapng, every UDP datagram over IPv4 or IPv6 is yielded
//! with its addresses and the capture time, whatever its port (HEP
//! collectors listen on 9060, 9061, ...): the HEP decoder rejects what is
//! not HEP. Link types: Ethernet (with VLAN tags), Linux cooked (SLL and
//! SLL2), BSD loopback, and raw IP. Frames that carry no UDP (TCP, ARP, IP
//! fragments, which are not reassembled) or whose link type is unknown are
//! skipped and counted ([`Datagrams::skipped`]); a damaged frame ends the
//! file with an error, since nothing after it can be trusted.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use callkpi_core::event::{NANOS_PER_SEC, UnixNanos};
use etherparse::{SlicedPacket, TransportSlice};
use pcap_parser::nom;
use pcap_parser::pcapng::{Block, parse_block_be, parse_block_le};
use pcap_parser::{Linktype, PcapHeader, parse_pcap_frame, parse_pcap_frame_be, parse_pcap_header};

/// A capture file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CaptureFormat {
    /// Classic libpcap.
    Pcap,
    /// pcapng.
    Pcapng,
    /// Big-endian u32 length, then one datagram; repeated.
    LengthPrefixed,
}

/// Tells the format from the first bytes: the pcap and pcapng magic
/// numbers, else length-prefixed.
pub fn detect(buf: &[u8]) -> CaptureFormat {
    match buf.get(..4) {
        Some(
            [0xa1, 0xb2, 0xc3, 0xd4] | [0xd4, 0xc3, 0xb2, 0xa1] | [0xa1, 0xb2, 0x3c, 0x4d] | [0x4d, 0x3c, 0xb2, 0xa1],
        ) => CaptureFormat::Pcap,
        Some([0x0a, 0x0d, 0x0d, 0x0a]) => CaptureFormat::Pcapng,
        _ => CaptureFormat::LengthPrefixed,
    }
}

// === impl CaptureError ===

/// Why a capture file could not be read on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CaptureErrorKind {
    /// The file ends inside a record, frame or block.
    Truncated,
    /// A length-prefixed record claims more than 65 535 bytes.
    BadRecordLength,
    /// The pcap or pcapng header, or a block, cannot be parsed.
    BadFormat,
}

/// A capture file error: what went wrong and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaptureError {
    /// What went wrong.
    pub kind: CaptureErrorKind,
    /// Byte offset in the file of the record, frame or block concerned.
    pub offset: usize,
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            CaptureErrorKind::Truncated => "capture file truncated",
            CaptureErrorKind::BadRecordLength => "record longer than a datagram (not a length-prefixed HEP file?)",
            CaptureErrorKind::BadFormat => "unreadable pcap/pcapng data",
        };
        write!(f, "{what} at byte {}", self.offset)
    }
}

impl std::error::Error for CaptureError {}

// === impl Datagram ===

/// One datagram from a capture file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// The UDP payload: one HEP packet, normally.
    pub data: &'a [u8],
    /// When the capture saw it (pcap, pcapng); `None` for raw records.
    pub time: Option<UnixNanos>,
    /// Sender (pcap, pcapng).
    pub src: Option<SocketAddr>,
    /// Receiver (pcap, pcapng).
    pub dst: Option<SocketAddr>,
}

// === impl Datagrams ===

/// Iterator over a capture file's datagrams; see [`datagrams`].
///
/// After an error it yields nothing more.
#[derive(Debug)]
pub struct Datagrams<'a> {
    buf: &'a [u8],
    pos: usize,
    format: CaptureFormat,
    state: State,
    skipped: u64,
    done: bool,
}

#[derive(Debug)]
enum State {
    Raw,
    Pcap { linktype: Linktype, big_endian: bool, nanos: bool },
    Pcapng { big_endian: bool, interfaces: Vec<Interface> },
    Failed(CaptureError),
}

/// What a pcapng interface description says about its packets.
#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: Linktype,
    /// Timestamp units per second.
    units_per_sec: u64,
    /// Seconds added to every timestamp.
    offset_s: i64,
}

/// Reads the datagrams of a capture file held in memory, in file order.
pub fn datagrams(buf: &[u8]) -> Datagrams<'_> {
    let format = detect(buf);
    let mut d = Datagrams { buf, pos: 0, format, state: State::Raw, skipped: 0, done: false };
    d.state = match format {
        CaptureFormat::LengthPrefixed => State::Raw,
        CaptureFormat::Pcap => match parse_pcap_header(buf) {
            Ok((rest, header)) => {
                d.pos = buf.len() - rest.len();
                pcap_state(&header)
            }
            Err(_) => State::Failed(CaptureError { kind: CaptureErrorKind::BadFormat, offset: 0 }),
        },
        // The section header block sets the byte order; it is read as the
        // first block.
        CaptureFormat::Pcapng => State::Pcapng { big_endian: false, interfaces: Vec::new() },
    };
    d
}

fn pcap_state(h: &PcapHeader) -> State {
    State::Pcap { linktype: h.network, big_endian: h.is_bigendian(), nanos: h.is_nanosecond_precision() }
}

impl<'a> Datagrams<'a> {
    /// The file's format.
    pub fn format(&self) -> CaptureFormat {
        self.format
    }

    /// Frames skipped so far: not UDP over IP, IP fragments, unknown link types.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    fn fail(&mut self, kind: CaptureErrorKind, offset: usize) -> Option<Result<Datagram<'a>, CaptureError>> {
        self.done = true;
        Some(Err(CaptureError { kind, offset }))
    }

    fn next_raw(&mut self) -> Option<Result<Datagram<'a>, CaptureError>> {
        let at = self.pos;
        let rest = self.buf.get(at..).unwrap_or_default();
        if rest.is_empty() {
            return None;
        }
        let Some(len) = rest.get(..4) else {
            return self.fail(CaptureErrorKind::Truncated, at);
        };
        let n = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        if n > u32::from(u16::MAX) {
            return self.fail(CaptureErrorKind::BadRecordLength, at);
        }
        let n = n as usize;
        let Some(data) = rest.get(4..4 + n) else {
            return self.fail(CaptureErrorKind::Truncated, at);
        };
        self.pos = at + 4 + n;
        Some(Ok(Datagram { data, time: None, src: None, dst: None }))
    }

    fn next_pcap(
        &mut self,
        linktype: Linktype,
        big_endian: bool,
        nanos: bool,
    ) -> Option<Result<Datagram<'a>, CaptureError>> {
        loop {
            let at = self.pos;
            let rest = self.buf.get(at..).unwrap_or_default();
            if rest.is_empty() {
                return None;
            }
            let parsed = if big_endian { parse_pcap_frame_be(rest) } else { parse_pcap_frame(rest) };
            let (after, frame) = match parsed {
                Ok(v) => v,
                Err(nom::Err::Incomplete(_)) => return self.fail(CaptureErrorKind::Truncated, at),
                Err(_) => return self.fail(CaptureErrorKind::BadFormat, at),
            };
            self.pos = self.buf.len() - after.len();
            let frac = if nanos { i64::from(frame.ts_usec) } else { i64::from(frame.ts_usec) * 1_000 };
            let time = i64::from(frame.ts_sec).checked_mul(NANOS_PER_SEC).and_then(|s| s.checked_add(frac));
            match udp_of(linktype, frame.data) {
                Some((data, src, dst)) => return Some(Ok(Datagram { data, time, src: Some(src), dst: Some(dst) })),
                None => self.skipped += 1,
            }
        }
    }

    fn next_pcapng(&mut self) -> Option<Result<Datagram<'a>, CaptureError>> {
        loop {
            let at = self.pos;
            let rest = self.buf.get(at..).unwrap_or_default();
            if rest.is_empty() {
                return None;
            }
            let State::Pcapng { big_endian, interfaces } = &mut self.state else {
                return None;
            };
            let parsed = if *big_endian { parse_block_be(rest) } else { parse_block_le(rest) };
            let (after, block) = match parsed {
                Ok(v) => v,
                Err(nom::Err::Incomplete(_)) => return self.fail(CaptureErrorKind::Truncated, at),
                Err(_) => return self.fail(CaptureErrorKind::BadFormat, at),
            };
            self.pos = self.buf.len() - after.len();
            let (data, time, linktype) = match block {
                // A new section sets the byte order and starts its own
                // interface numbering.
                Block::SectionHeader(shb) => {
                    *big_endian = shb.big_endian();
                    interfaces.clear();
                    continue;
                }
                Block::InterfaceDescription(idb) => {
                    interfaces.push(Interface {
                        linktype: idb.linktype,
                        units_per_sec: idb.ts_resolution().unwrap_or(1_000_000),
                        offset_s: idb.ts_offset(),
                    });
                    continue;
                }
                Block::EnhancedPacket(epb) => {
                    let Some(ifc) = usize::try_from(epb.if_id).ok().and_then(|i| interfaces.get(i)) else {
                        self.skipped += 1;
                        continue;
                    };
                    let units = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                    (without_padding(epb.data, epb.caplen), ng_time(units, ifc), ifc.linktype)
                }
                Block::SimplePacket(spb) => {
                    let Some(ifc) = interfaces.first() else {
                        self.skipped += 1;
                        continue;
                    };
                    (without_padding(spb.data, spb.origlen), None, ifc.linktype)
                }
                _ => continue,
            };
            match udp_of(linktype, data) {
                Some((data, src, dst)) => return Some(Ok(Datagram { data, time, src: Some(src), dst: Some(dst) })),
                None => self.skipped += 1,
            }
        }
    }
}

/// A pcapng block's packet bytes without the padding to 32 bits.
fn without_padding(data: &[u8], len: u32) -> &[u8] {
    usize::try_from(len).ok().and_then(|n| data.get(..n)).unwrap_or(data)
}

/// A pcapng timestamp in ns, without overflow on hostile resolutions.
fn ng_time(units: u64, ifc: &Interface) -> Option<UnixNanos> {
    let per = ifc.units_per_sec.max(1);
    let secs = i64::try_from(units / per).ok()?.checked_add(ifc.offset_s)?;
    let frac = u128::from(units % per) * u128::from(NANOS_PER_SEC.unsigned_abs()) / u128::from(per);
    secs.checked_mul(NANOS_PER_SEC)?.checked_add(i64::try_from(frac).ok()?)
}

impl<'a> Iterator for Datagrams<'a> {
    type Item = Result<Datagram<'a>, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match &self.state {
            State::Raw => self.next_raw(),
            &State::Pcap { linktype, big_endian, nanos } => self.next_pcap(linktype, big_endian, nanos),
            State::Pcapng { .. } => self.next_pcapng(),
            State::Failed(e) => {
                let e = *e;
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// The UDP payload and addresses of one link-layer frame, if it is UDP
/// over IP and not a fragment.
fn udp_of(linktype: Linktype, frame: &[u8]) -> Option<(&[u8], SocketAddr, SocketAddr)> {
    let sliced = match linktype {
        Linktype::ETHERNET => SlicedPacket::from_ethernet(frame).ok()?,
        Linktype::LINUX_SLL => SlicedPacket::from_linux_sll(frame).ok()?,
        // SLL2: protocol type first, 20 bytes in all.
        Linktype::LINUX_SLL2 => {
            let proto = u16::from_be_bytes([*frame.first()?, *frame.get(1)?]);
            SlicedPacket::from_ether_type(proto.into(), frame.get(20..)?).ok()?
        }
        // BSD loopback: a 4-byte address family, host order (NULL) or
        // network order (LOOP); the IP version nibble says the rest.
        Linktype::NULL | Linktype::LOOP => SlicedPacket::from_ip(frame.get(4..)?).ok()?,
        Linktype::RAW | Linktype::IPV4 | Linktype::IPV6 => SlicedPacket::from_ip(frame).ok()?,
        // DLT_RAW is 12 or 14 on some BSDs.
        Linktype(12 | 14) => SlicedPacket::from_ip(frame).ok()?,
        _ => return None,
    };
    let net = sliced.net.as_ref()?;
    if net.ip_payload_ref()?.fragmented {
        return None;
    }
    let (src, dst): (IpAddr, IpAddr) = match net {
        etherparse::NetSlice::Ipv4(v4) => (v4.header().source_addr().into(), v4.header().destination_addr().into()),
        etherparse::NetSlice::Ipv6(v6) => (v6.header().source_addr().into(), v6.header().destination_addr().into()),
        etherparse::NetSlice::Arp(_) => return None,
    };
    let Some(TransportSlice::Udp(udp)) = &sliced.transport else {
        return None;
    };
    Some((udp.payload(), SocketAddr::new(src, udp.source_port()), SocketAddr::new(dst, udp.destination_port())))
}
