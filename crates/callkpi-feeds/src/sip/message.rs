//! The SIP message parser: start line and header block found eagerly,
//! everything else typed lazily on access, borrowing from the input.

use std::fmt;

use memchr::memchr;

use super::sdp::{self, SdpSummary};
use crate::Status;

/// Largest header block [`SipMessage::parse`] waits for on a stream before
/// it gives up ([`SipErrorKind::TooLarge`]).
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;

// === impl SipError ===

/// What was wrong with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SipErrorKind {
    /// Nothing but line breaks and spaces (a keep-alive).
    Empty,
    /// The first line is neither `METHOD uri SIP/2.0` nor `SIP/2.0 code reason`.
    BadStartLine,
    /// A header line without a colon, or with an empty name.
    BadHeader,
    /// No end of the header block within [`MAX_HEADER_BLOCK`] bytes.
    TooLarge,
    /// `Content-Length` is not a number.
    BadContentLength,
}

/// A SIP parsing error: what went wrong and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SipError {
    /// What went wrong.
    pub kind: SipErrorKind,
    /// Byte offset from the start of the input where it was noticed.
    pub offset: usize,
}

impl SipError {
    fn new(kind: SipErrorKind, offset: usize) -> Self {
        Self { kind, offset }
    }
}

impl fmt::Display for SipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            SipErrorKind::Empty => "empty SIP message (keep-alive)",
            SipErrorKind::BadStartLine => "not a SIP request or status line",
            SipErrorKind::BadHeader => "malformed SIP header line",
            SipErrorKind::TooLarge => "SIP header block larger than the limit",
            SipErrorKind::BadContentLength => "SIP Content-Length is not a number",
        };
        write!(f, "{what} at byte {}", self.offset)
    }
}

impl std::error::Error for SipError {}

// === impl Method ===

/// A request method (case-sensitive, as RFC 3261 says).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method<'a> {
    /// INVITE.
    Invite,
    /// ACK.
    Ack,
    /// BYE.
    Bye,
    /// CANCEL.
    Cancel,
    /// REFER.
    Refer,
    /// NOTIFY.
    Notify,
    /// UPDATE.
    Update,
    /// PRACK.
    Prack,
    /// OPTIONS.
    Options,
    /// REGISTER.
    Register,
    /// SUBSCRIBE.
    Subscribe,
    /// INFO.
    Info,
    /// MESSAGE.
    Message,
    /// PUBLISH.
    Publish,
    /// Any other token.
    Other(&'a [u8]),
}

impl<'a> Method<'a> {
    /// The method named by `token`.
    pub fn from_bytes(token: &'a [u8]) -> Self {
        match token {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"REFER" => Method::Refer,
            b"NOTIFY" => Method::Notify,
            b"UPDATE" => Method::Update,
            b"PRACK" => Method::Prack,
            b"OPTIONS" => Method::Options,
            b"REGISTER" => Method::Register,
            b"SUBSCRIBE" => Method::Subscribe,
            b"INFO" => Method::Info,
            b"MESSAGE" => Method::Message,
            b"PUBLISH" => Method::Publish,
            other => Method::Other(other),
        }
    }

    /// The method's name.
    pub fn as_bytes(&self) -> &'a [u8] {
        match self {
            Method::Invite => b"INVITE",
            Method::Ack => b"ACK",
            Method::Bye => b"BYE",
            Method::Cancel => b"CANCEL",
            Method::Refer => b"REFER",
            Method::Notify => b"NOTIFY",
            Method::Update => b"UPDATE",
            Method::Prack => b"PRACK",
            Method::Options => b"OPTIONS",
            Method::Register => b"REGISTER",
            Method::Subscribe => b"SUBSCRIBE",
            Method::Info => b"INFO",
            Method::Message => b"MESSAGE",
            Method::Publish => b"PUBLISH",
            Method::Other(t) => t,
        }
    }
}

impl fmt::Display for Method<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

// === impl StartLine ===

/// The first line of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartLine<'a> {
    /// `METHOD Request-URI SIP/2.0`.
    Request {
        /// The method.
        method: Method<'a>,
        /// The Request-URI, raw.
        uri: &'a [u8],
    },
    /// `SIP/2.0 code reason`.
    Response {
        /// Status code, 100 to 699.
        code: u16,
        /// Reason phrase (may be empty).
        reason: &'a [u8],
    },
}

fn parse_start_line(line: &[u8]) -> Option<StartLine<'_>> {
    if let Some(rest) = strip_prefix_ci(line, b"SIP/2.0 ") {
        let rest = rest.trim_ascii_start();
        let digits = rest.get(..3)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let code = digits.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
        if !(100..=699).contains(&code) {
            return None;
        }
        let after = rest.get(3..).unwrap_or_default();
        if after.first().is_some_and(|b| !b.is_ascii_whitespace()) {
            return None;
        }
        return Some(StartLine::Response { code, reason: after.trim_ascii() });
    }
    let mut parts = line.split(|&b| b == b' ').filter(|p| !p.is_empty());
    let method = parts.next()?;
    let uri = parts.next()?;
    let version = parts.next()?;
    if parts.next().is_some() || !version.eq_ignore_ascii_case(b"SIP/2.0") || !method.iter().all(is_token_char) {
        return None;
    }
    Some(StartLine::Request { method: Method::from_bytes(method), uri })
}

fn is_token_char(b: &u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(b)
}

// === impl SipMessage ===

/// One SIP message. Parsing finds the start line, the header block and the
/// body, and notes where the first of each header the tracker uses starts;
/// values are split and typed only when asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipMessage<'a> {
    start: StartLine<'a>,
    /// Header lines, from the one after the start line to the empty line
    /// (excluded).
    head: &'a [u8],
    body: &'a [u8],
    /// Offset in `head` of the first line of each [`KNOWN`] header.
    index: [u32; KNOWN.len()],
}

/// Headers located at parse time: (name, compact form).
const KNOWN: [(&str, Option<u8>); 12] = [
    ("Call-ID", Some(b'i')),
    ("CSeq", None),
    ("From", Some(b'f')),
    ("To", Some(b't')),
    ("Via", Some(b'v')),
    ("Contact", Some(b'm')),
    ("Content-Type", Some(b'c')),
    ("Content-Length", Some(b'l')),
    ("Refer-To", Some(b'r')),
    ("Referred-By", Some(b'b')),
    ("Reason", None),
    ("Event", Some(b'o')),
];
const CALL_ID: usize = 0;
const CSEQ: usize = 1;
const FROM: usize = 2;
const TO: usize = 3;
const VIA: usize = 4;
const CONTACT: usize = 5;
const CONTENT_TYPE: usize = 6;
const CONTENT_LENGTH: usize = 7;
const REFER_TO: usize = 8;
const REFERRED_BY: usize = 9;
const REASON: usize = 10;
const EVENT: usize = 11;
const ABSENT: u32 = u32::MAX;

/// Where the first line of each known header starts in `head`.
fn index_headers(head: &[u8]) -> [u32; KNOWN.len()] {
    let mut index = [ABSENT; KNOWN.len()];
    let mut pos = 0;
    while pos < head.len() {
        let rest = &head[pos..];
        let end = memchr(b'\n', rest).unwrap_or(rest.len());
        let line = &rest[..end];
        if !matches!(line.first(), Some(b' ' | b'\t'))
            && let Some(colon) = memchr(b':', line)
        {
            let h = Header { name: line[..colon].trim_ascii(), value: b"" };
            if let Some(k) = KNOWN.iter().position(|(name, compact)| h.is(name, *compact))
                && index[k] == ABSENT
            {
                index[k] = u32::try_from(pos).unwrap_or(ABSENT);
            }
        }
        pos += end + 1;
    }
    index
}

/// Where the header block ended and what it said about the body.
struct HeadScan {
    /// End of the start line (its line break excluded).
    start_line_end: usize,
    /// First byte of the header lines.
    head_start: usize,
    /// Last byte (excluded) of the header lines.
    head_end: usize,
    /// First byte of the body.
    body_start: usize,
    content_length: Option<usize>,
}

/// Finds the start line, the header lines and Content-Length; `Ok(None)`
/// when the empty line has not arrived yet.
fn scan_head(buf: &[u8], skip: usize) -> Result<Option<HeadScan>, SipError> {
    let Some(nl) = memchr(b'\n', &buf[skip..]) else {
        return Ok(None);
    };
    let start_line_end = skip + nl;
    let head_start = start_line_end + 1;
    let mut pos = head_start;
    let mut content_length = None;
    loop {
        let Some(nl) = memchr(b'\n', buf.get(pos..).unwrap_or_default()) else {
            return Ok(None);
        };
        let line = trim_cr(&buf[pos..pos + nl]);
        if line.is_empty() {
            return Ok(Some(HeadScan {
                start_line_end,
                head_start,
                head_end: pos,
                body_start: pos + nl + 1,
                content_length,
            }));
        }
        if !matches!(line[0], b' ' | b'\t') {
            let Some(colon) = memchr(b':', line) else {
                return Err(SipError::new(SipErrorKind::BadHeader, pos));
            };
            let name = line[..colon].trim_ascii();
            if name.is_empty() {
                return Err(SipError::new(SipErrorKind::BadHeader, pos));
            }
            if name.eq_ignore_ascii_case(b"Content-Length") || name.eq_ignore_ascii_case(b"l") {
                let v = line[colon + 1..].trim_ascii();
                let n = parse_usize(v).ok_or(SipError::new(SipErrorKind::BadContentLength, pos))?;
                content_length = Some(n);
            }
        }
        pos += nl + 1;
    }
}

impl<'a> SipMessage<'a> {
    /// Parses a message that fills a whole datagram (a HEP payload). The
    /// body is what follows the header block, cut to `Content-Length` when
    /// that is shorter; a body shorter than `Content-Length` is kept as it is.
    ///
    /// # Errors
    /// [`SipError`] when the bytes are not a SIP message.
    pub fn parse_datagram(buf: &'a [u8]) -> Result<Self, SipError> {
        let skip = leading_blank(buf);
        if skip == buf.len() {
            return Err(SipError::new(SipErrorKind::Empty, 0));
        }
        let scan = match scan_head(buf, skip)? {
            Some(s) => s,
            // A datagram without the empty line: its headers run to the end.
            None => HeadScan {
                start_line_end: skip + memchr(b'\n', &buf[skip..]).unwrap_or(buf.len() - skip),
                head_start: (skip + memchr(b'\n', &buf[skip..]).map_or(buf.len() - skip, |n| n + 1)).min(buf.len()),
                head_end: buf.len(),
                body_start: buf.len(),
                content_length: None,
            },
        };
        let rest = &buf[scan.body_start..];
        let body = match scan.content_length {
            Some(n) if n < rest.len() => &rest[..n],
            _ => rest,
        };
        Self::assemble(buf, skip, &scan, body)
    }

    /// Parses the message at the start of a stream (SIP over TCP): skips
    /// keep-alive line breaks, waits for the header block and the
    /// `Content-Length` bytes of body (none when the header is absent).
    ///
    /// # Errors
    /// [`SipError`] when the bytes cannot start a SIP message.
    pub fn parse(buf: &'a [u8]) -> Result<Status<Self>, SipError> {
        let skip = leading_blank(buf);
        if skip == buf.len() {
            return Ok(Status::Partial);
        }
        let Some(scan) = scan_head(buf, skip)? else {
            if buf.len() - skip > MAX_HEADER_BLOCK {
                return Err(SipError::new(SipErrorKind::TooLarge, skip));
            }
            return Ok(Status::Partial);
        };
        let n = scan.content_length.unwrap_or(0);
        let Some(body) = buf.get(scan.body_start..scan.body_start.saturating_add(n)) else {
            return Ok(Status::Partial);
        };
        let msg = Self::assemble(buf, skip, &scan, body)?;
        Ok(Status::Complete { value: msg, consumed: scan.body_start + n })
    }

    fn assemble(buf: &'a [u8], skip: usize, scan: &HeadScan, body: &'a [u8]) -> Result<Self, SipError> {
        let line = trim_cr(&buf[skip..scan.start_line_end]);
        let start = parse_start_line(line).ok_or(SipError::new(SipErrorKind::BadStartLine, skip))?;
        let head = buf.get(scan.head_start..scan.head_end).unwrap_or_default();
        Ok(SipMessage { start, head, body, index: index_headers(head) })
    }

    /// The start line.
    pub fn start_line(&self) -> StartLine<'a> {
        self.start
    }

    /// The method of a request.
    pub fn method(&self) -> Option<Method<'a>> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    /// The Request-URI of a request.
    pub fn request_uri(&self) -> Option<SipUri<'a>> {
        match self.start {
            StartLine::Request { uri, .. } => SipUri::parse(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// The body.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// Every header line, in order (folded lines joined; values trimmed, a
    /// folded value keeps its inner line breaks).
    pub fn headers(&self) -> Headers<'a> {
        Headers { rest: self.head }
    }

    /// Header lines from the first known header `k` on.
    fn headers_from(&self, k: usize) -> Option<Headers<'a>> {
        let at = usize::try_from(self.index[k]).ok()?;
        Some(Headers { rest: self.head.get(at..)? })
    }

    /// The first value of known header `k`.
    fn first(&self, k: usize) -> Option<&'a [u8]> {
        let (name, compact) = KNOWN[k];
        self.headers_from(k)?.find(|h| h.is(name, compact)).map(|h| h.value)
    }

    /// The first header named `name` (ASCII case-insensitive; compact forms
    /// are not applied, use the typed accessors for those).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers().find(|h| h.name.eq_ignore_ascii_case(name.as_bytes())).map(|h| h.value)
    }

    /// `Call-ID` (`i`).
    pub fn call_id(&self) -> Option<&'a [u8]> {
        self.first(CALL_ID).filter(|v| !v.is_empty())
    }

    /// `CSeq`.
    pub fn cseq(&self) -> Option<CSeq<'a>> {
        CSeq::parse(self.first(CSEQ)?)
    }

    /// `From` (`f`).
    pub fn from(&self) -> Option<NameAddr<'a>> {
        NameAddr::parse(first_item(self.first(FROM)?))
    }

    /// `To` (`t`).
    pub fn to(&self) -> Option<NameAddr<'a>> {
        NameAddr::parse(first_item(self.first(TO)?))
    }

    /// The first `Contact` (`m`).
    pub fn contact(&self) -> Option<NameAddr<'a>> {
        NameAddr::parse(first_item(self.first(CONTACT)?))
    }

    /// `Refer-To` (`r`).
    pub fn refer_to(&self) -> Option<NameAddr<'a>> {
        NameAddr::parse(first_item(self.first(REFER_TO)?))
    }

    /// `Referred-By` (`b`).
    pub fn referred_by(&self) -> Option<NameAddr<'a>> {
        NameAddr::parse(first_item(self.first(REFERRED_BY)?))
    }

    /// Every Via entry (`v`), top (most recent hop) first, across headers
    /// and comma-separated values.
    pub fn vias(&self) -> impl Iterator<Item = Via<'a>> + 'a {
        self.headers_from(VIA)
            .into_iter()
            .flatten()
            .filter(|h| h.is("Via", Some(b'v')))
            .flat_map(|h| split_top_level(h.value))
            .filter_map(Via::parse)
    }

    /// The top Via: the last hop that sent this message.
    pub fn top_via(&self) -> Option<Via<'a>> {
        self.vias().next()
    }

    /// The bottom Via: the request's originator.
    pub fn bottom_via(&self) -> Option<Via<'a>> {
        self.vias().last()
    }

    /// Every `Reason` entry (RFC 3326).
    pub fn reasons(&self) -> impl Iterator<Item = Reason<'a>> + 'a {
        self.headers_from(REASON)
            .into_iter()
            .flatten()
            .filter(|h| h.is("Reason", None))
            .flat_map(|h| split_top_level(h.value))
            .filter_map(Reason::parse)
    }

    /// The Q.850 cause of the first `Reason: Q.850;cause=N`.
    pub fn q850_cause(&self) -> Option<u16> {
        self.reasons().find(|r| r.protocol.eq_ignore_ascii_case(b"Q.850")).and_then(|r| r.cause)
    }

    /// `Content-Type` (`c`) media type, without parameters.
    pub fn content_type(&self) -> Option<&'a [u8]> {
        let v = self.first(CONTENT_TYPE)?;
        Some(v.split(|&b| b == b';').next().unwrap_or_default().trim_ascii())
    }

    /// `Content-Length` (`l`), when it is a number.
    pub fn content_length(&self) -> Option<usize> {
        parse_usize(self.first(CONTENT_LENGTH)?)
    }

    /// `Event` (`o`) package, without parameters.
    pub fn event(&self) -> Option<&'a [u8]> {
        let v = self.first(EVENT)?;
        Some(v.split(|&b| b == b';').next().unwrap_or_default().trim_ascii())
    }

    /// The first header named `name` or its compact form (ASCII
    /// case-insensitive), for headers not indexed at parse time.
    pub fn header_or_compact(&self, name: &str, compact: u8) -> Option<&'a [u8]> {
        self.headers().find(|h| h.is(name, Some(compact))).map(|h| h.value)
    }

    /// `Session-Expires` (`x`, RFC 4028) delta-seconds.
    pub fn session_expires(&self) -> Option<u32> {
        let v = self.header_or_compact("Session-Expires", b'x')?;
        parse_u32(split_once(v, b';').0)
    }

    /// The Call-ID of the dialog a `Replaces` header (RFC 3891) names.
    pub fn replaces_call_id(&self) -> Option<&'a [u8]> {
        let v = self.header("Replaces")?;
        Some(split_once(v, b';').0.trim_ascii()).filter(|c| !c.is_empty())
    }

    /// Whether a `Reason: SIP;cause=200` says the call was answered
    /// elsewhere (RFC 3326 section 2; "Call completed elsewhere").
    pub fn completed_elsewhere(&self) -> bool {
        self.reasons().any(|r| r.protocol.eq_ignore_ascii_case(b"SIP") && r.cause == Some(200))
    }

    /// The message as text again: start line, header lines and body, for a
    /// caller that must keep it past the input's lifetime.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.head.len() + self.body.len() + 64);
        match self.start {
            StartLine::Request { method, uri } => {
                out.extend_from_slice(method.as_bytes());
                out.push(b' ');
                out.extend_from_slice(uri);
                out.extend_from_slice(b" SIP/2.0\r\n");
            }
            StartLine::Response { code, reason } => {
                out.extend_from_slice(format!("SIP/2.0 {code} ").as_bytes());
                out.extend_from_slice(reason);
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(self.head);
        if !self.head.is_empty() && !self.head.ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(self.body);
        out
    }

    /// The `id` parameter of `Event` (`o`): for `refer`, the CSeq number
    /// of the REFER a NOTIFY reports on (RFC 3515 section 2.4.6).
    pub fn event_id(&self) -> Option<&'a [u8]> {
        let v = self.first(EVENT)?;
        param(split_once(v, b';').1, "id")
    }

    /// Whether the body is SDP.
    pub fn has_sdp(&self) -> bool {
        !self.body.is_empty() && self.content_type().is_some_and(|t| t.eq_ignore_ascii_case(b"application/sdp"))
    }

    /// The media summary of an SDP body (see [`sdp`](super::sdp)).
    pub fn sdp(&self) -> Option<SdpSummary> {
        self.has_sdp().then(|| sdp::summarize(self.body))
    }

    /// The status code of a `message/sipfrag` body (the progress of a
    /// REFER, in its NOTIFYs).
    pub fn sipfrag_status(&self) -> Option<u16> {
        if !self.content_type()?.eq_ignore_ascii_case(b"message/sipfrag") {
            return None;
        }
        let first = self.body.split(|&b| b == b'\n').next().map(trim_cr)?;
        match parse_start_line(first.trim_ascii())? {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }
}

// === impl Headers ===

/// One header line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// Name as sent.
    pub name: &'a [u8],
    /// Value, trimmed.
    pub value: &'a [u8],
}

impl Header<'_> {
    /// Whether this header is `name` (ASCII case-insensitive) or its
    /// compact form.
    pub fn is(&self, name: &str, compact: Option<u8>) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
            || compact.is_some_and(|c| self.name.len() == 1 && self.name[0].eq_ignore_ascii_case(&c))
    }
}

/// Iterator over header lines; see [`SipMessage::headers`].
#[derive(Debug, Clone)]
pub struct Headers<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Headers<'a> {
    type Item = Header<'a>;

    fn next(&mut self) -> Option<Header<'a>> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            // A header runs to the first line break not followed by a space
            // or tab (RFC 3261 line folding).
            let mut end = 0;
            let next = loop {
                match memchr(b'\n', &self.rest[end..]) {
                    Some(nl) => {
                        let after = end + nl + 1;
                        if matches!(self.rest.get(after), Some(b' ' | b'\t')) {
                            end = after;
                            continue;
                        }
                        end += nl;
                        break after;
                    }
                    None => {
                        end = self.rest.len();
                        break self.rest.len();
                    }
                }
            };
            let line = trim_cr(&self.rest[..end]);
            self.rest = &self.rest[next..];
            // Stray continuation lines and lines without a colon were
            // rejected by the parser; skip them if a caller built the block.
            if let Some(colon) = memchr(b':', line) {
                let name = line[..colon].trim_ascii();
                if !name.is_empty() {
                    return Some(Header { name, value: line[colon + 1..].trim_ascii() });
                }
            }
        }
    }
}

// === impl CSeq ===

/// `CSeq: 314159 INVITE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    /// Sequence number.
    pub seq: u32,
    /// Method.
    pub method: Method<'a>,
}

impl<'a> CSeq<'a> {
    fn parse(v: &'a [u8]) -> Option<Self> {
        let mut parts = v.split(|b| b.is_ascii_whitespace()).filter(|p| !p.is_empty());
        let seq = parse_u32(parts.next()?)?;
        let method = parts.next()?;
        Some(CSeq { seq, method: Method::from_bytes(method) })
    }
}

// === impl SipUri ===

/// A `sip:`, `sips:` or `tel:` URI, split but not unescaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipUri<'a> {
    /// `sip`, `sips`, `tel`, ...
    pub scheme: &'a [u8],
    /// User part (the number of a `tel:` URI), password removed.
    pub user: Option<&'a [u8]>,
    /// Host (an IPv6 reference keeps its brackets); empty for `tel:`.
    pub host: &'a [u8],
    /// Port.
    pub port: Option<u16>,
    /// URI parameters after the first `;` (`;user=phone;lr`).
    pub params: &'a [u8],
    /// URI headers after `?` (`?Replaces=...`).
    pub headers: &'a [u8],
}

impl<'a> SipUri<'a> {
    /// Splits a URI; `None` without a scheme.
    pub fn parse(v: &'a [u8]) -> Option<Self> {
        let v = v.trim_ascii();
        let colon = memchr(b':', v)?;
        let scheme = &v[..colon];
        if scheme.is_empty() || !scheme.iter().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b)) {
            return None;
        }
        let rest = &v[colon + 1..];
        let (rest, headers) = match memchr(b'?', rest) {
            Some(q) => (&rest[..q], &rest[q + 1..]),
            None => (rest, &b""[..]),
        };
        if scheme.eq_ignore_ascii_case(b"tel") {
            let (number, params) = split_once(rest, b';');
            return Some(SipUri { scheme, user: Some(number), host: b"", port: None, params, headers });
        }
        // The user part may itself hold ';' (user parameters): split at the
        // last '@' first.
        let (user, hostpart) = match rest.iter().rposition(|&b| b == b'@') {
            Some(at) => {
                let userinfo = &rest[..at];
                (Some(split_once(userinfo, b':').0), &rest[at + 1..])
            }
            None => (None, rest),
        };
        let (hostport, params) = split_once(hostpart, b';');
        let (host, port) = split_host_port(hostport);
        Some(SipUri { scheme, user, host, port, params, headers })
    }

    /// The value of URI parameter `name` (empty for a flag).
    pub fn param(&self, name: &str) -> Option<&'a [u8]> {
        param(self.params, name)
    }

    /// Whether the URI carries a `Replaces` header (an attended transfer's Refer-To).
    pub fn has_replaces(&self) -> bool {
        self.headers.split(|&b| b == b'&').any(|h| {
            let name = split_once(h, b'=').0;
            name.eq_ignore_ascii_case(b"Replaces")
        })
    }
}

fn split_host_port(hp: &[u8]) -> (&[u8], Option<u16>) {
    if hp.first() == Some(&b'[') {
        let Some(close) = memchr(b']', hp) else {
            return (hp, None);
        };
        let port = hp.get(close + 1..).and_then(|r| r.strip_prefix(b":")).and_then(parse_u16);
        return (&hp[..=close], port);
    }
    match memchr(b':', hp) {
        Some(c) => (&hp[..c], parse_u16(&hp[c + 1..])),
        None => (hp, None),
    }
}

// === impl NameAddr ===

/// `"Display" <uri>;params` or `uri;params` (From, To, Contact, Refer-To, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// Display name, quotes removed.
    pub display: Option<&'a [u8]>,
    /// The URI, raw.
    pub uri_raw: &'a [u8],
    /// Header parameters after the URI (`;tag=...`).
    pub params: &'a [u8],
}

impl<'a> NameAddr<'a> {
    /// Splits one name-addr or addr-spec.
    pub fn parse(v: &'a [u8]) -> Option<Self> {
        let v = v.trim_ascii();
        if v.is_empty() {
            return None;
        }
        // Find '<' outside a quoted display name.
        let mut in_quotes = false;
        let mut escaped = false;
        let mut lt = None;
        for (i, &b) in v.iter().enumerate() {
            if escaped {
                escaped = false;
                continue;
            }
            match b {
                b'\\' if in_quotes => escaped = true,
                b'"' => in_quotes = !in_quotes,
                b'<' if !in_quotes => {
                    lt = Some(i);
                    break;
                }
                _ => {}
            }
        }
        match lt {
            Some(lt) => {
                let gt = lt + memchr(b'>', &v[lt..])?;
                let display = v[..lt].trim_ascii();
                let display = display.strip_prefix(b"\"").and_then(|d| d.strip_suffix(b"\"")).unwrap_or(display);
                let params = v[gt + 1..].trim_ascii_start();
                let params = params.strip_prefix(b";").unwrap_or(params);
                Some(NameAddr { display: (!display.is_empty()).then_some(display), uri_raw: &v[lt + 1..gt], params })
            }
            // addr-spec: parameters after the URI are the header's.
            None => {
                let (uri, params) = split_once(v, b';');
                Some(NameAddr { display: None, uri_raw: uri.trim_ascii(), params })
            }
        }
    }

    /// The URI.
    pub fn uri(&self) -> Option<SipUri<'a>> {
        SipUri::parse(self.uri_raw)
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&'a [u8]> {
        param(self.params, "tag").filter(|t| !t.is_empty())
    }

    /// The user part of the URI.
    pub fn user(&self) -> Option<&'a [u8]> {
        self.uri()?.user.filter(|u| !u.is_empty())
    }
}

// === impl Via ===

/// One Via entry: `SIP/2.0/UDP host:port;branch=z9hG4bK...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    /// `SIP/2.0/UDP`.
    pub protocol: &'a [u8],
    /// `host[:port]`.
    pub sent_by: &'a [u8],
    /// Parameters.
    pub params: &'a [u8],
}

impl<'a> Via<'a> {
    fn parse(v: &'a [u8]) -> Option<Self> {
        let v = v.trim_ascii();
        let (head, params) = split_once(v, b';');
        let mut parts = head.split(|b| b.is_ascii_whitespace()).filter(|p| !p.is_empty());
        let protocol = parts.next()?;
        let sent_by = parts.next().unwrap_or_default();
        Some(Via { protocol, sent_by, params })
    }

    /// The `branch` parameter: the transaction id of the hop that added it.
    pub fn branch(&self) -> Option<&'a [u8]> {
        param(self.params, "branch").filter(|b| !b.is_empty())
    }
}

// === impl Reason ===

/// One `Reason` entry: `Q.850;cause=16;text="Normal call clearing"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason<'a> {
    /// `SIP` or `Q.850`.
    pub protocol: &'a [u8],
    /// `cause`.
    pub cause: Option<u16>,
    /// `text`, quotes removed.
    pub text: Option<&'a [u8]>,
}

impl<'a> Reason<'a> {
    fn parse(v: &'a [u8]) -> Option<Self> {
        let (protocol, params) = split_once(v.trim_ascii(), b';');
        let protocol = protocol.trim_ascii();
        if protocol.is_empty() {
            return None;
        }
        Some(Reason { protocol, cause: param(params, "cause").and_then(parse_u16), text: param(params, "text") })
    }
}

// === byte helpers ===

/// The value of `name` in `a=1;b;c="x"` (quotes removed, empty for a flag).
pub(crate) fn param<'a>(params: &'a [u8], name: &str) -> Option<&'a [u8]> {
    params.split(|&b| b == b';').find_map(|p| {
        let (k, v) = split_once(p, b'=');
        if !k.trim_ascii().eq_ignore_ascii_case(name.as_bytes()) {
            return None;
        }
        let v = v.trim_ascii();
        Some(v.strip_prefix(b"\"").and_then(|x| x.strip_suffix(b"\"")).unwrap_or(v))
    })
}

/// Splits at the first `sep`; the second part is empty without one.
fn split_once(v: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match memchr(sep, v) {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, &v[v.len()..]),
    }
}

/// The first comma-separated item of a header value.
fn first_item(v: &[u8]) -> &[u8] {
    split_top_level(v).next().unwrap_or(v)
}

/// Splits a header value at commas outside quotes and angle brackets.
fn split_top_level(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = v;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (mut quoted, mut angle, mut escaped) = (false, false, false);
        let mut cut = rest.len();
        for (i, &b) in rest.iter().enumerate() {
            if escaped {
                escaped = false;
                continue;
            }
            match b {
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b'<' if !quoted => angle = true,
                b'>' if !quoted => angle = false,
                b',' if !quoted && !angle => {
                    cut = i;
                    break;
                }
                _ => {}
            }
        }
        let item = rest[..cut].trim_ascii();
        rest = rest.get(cut + 1..).unwrap_or_default();
        Some(item)
    })
    .filter(|i| !i.is_empty())
}

fn strip_prefix_ci<'a>(v: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = v.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &v[prefix.len()..])
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Bytes of line breaks and spaces before the first line.
fn leading_blank(buf: &[u8]) -> usize {
    buf.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(buf.len())
}

fn parse_u64(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn parse_u32(v: &[u8]) -> Option<u32> {
    u32::try_from(parse_u64(v)?).ok()
}

fn parse_u16(v: &[u8]) -> Option<u16> {
    u16::try_from(parse_u64(v)?).ok()
}

fn parse_usize(v: &[u8]) -> Option<usize> {
    usize::try_from(parse_u64(v)?).ok()
}
