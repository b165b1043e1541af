//! ESL framing: header blocks ended by an empty line, `Content-Length`
//! bodies, and the `text/event-plain` body that is itself a header block.
//!
//! Everything here borrows from the caller's buffer and never panics. See the
//! [module documentation](super) for the exact rules.

use std::borrow::Cow;
use std::fmt;

use callkpi_core::event::UnixNanos;
use memchr::memchr;
use percent_encoding::percent_decode;

use crate::Status;

/// Default limit on the size of one frame (headers and body), in bytes.
///
/// The largest frames FreeSWITCH sends to an event listener are events
/// carrying every channel variable and SDP (tens of KiB) and `api` replies
/// such as `show channels` on a busy box; 8 MiB is far above both, and low
/// enough that a broken peer cannot make the reader's buffer grow without
/// bound.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 8 << 20;

/// FreeSWITCH header names hold letters, digits, `-`, `_` and the like;
/// longer "names" are not headers.
const MAX_NAME_LEN: usize = 256;

// === impl ParseError ===

/// Why bytes could not be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParseErrorKind {
    /// No frame end within the size limit, or a `Content-Length` above it.
    TooLarge,
    /// A `Content-Length` that is not a decimal number, or (inside an
    /// event) larger than what follows it.
    InvalidContentLength,
    /// A header block whose first line is not `Name: value`.
    InvalidHeader,
    /// The input ended inside a frame ([`Frames`] only: a streaming parser
    /// answers [`Status::Partial`] instead).
    Truncated,
}

/// A framing error: what went wrong and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParseError {
    /// What went wrong.
    pub kind: ParseErrorKind,
    /// Byte offset, from the start of the buffer given to the parser (from
    /// the start of the whole input for [`Frames`]), where it was noticed.
    pub offset: usize,
}

impl ParseError {
    fn new(kind: ParseErrorKind, offset: usize) -> Self {
        Self { kind, offset }
    }

    fn shifted(self, by: usize) -> Self {
        Self { kind: self.kind, offset: self.offset.saturating_add(by) }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ParseErrorKind::TooLarge => "ESL frame larger than the size limit",
            ParseErrorKind::InvalidContentLength => "invalid ESL Content-Length",
            ParseErrorKind::InvalidHeader => "ESL header block does not start with a header",
            ParseErrorKind::Truncated => "input ends inside an ESL frame",
        };
        write!(f, "{what} at byte {}", self.offset)
    }
}

impl std::error::Error for ParseError {}

// === impl Header ===

/// One `Name: value` line, as raw bytes (line ending and the one space
/// after the colon removed). A value that ran over several lines (raw SDP
/// in an unencoded recording) spans them, inner line ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// Name, as sent.
    pub name: &'a [u8],
    /// Value, as sent (still URL-encoded inside an event).
    pub value: &'a [u8],
}

impl<'a> Header<'a> {
    /// The name, lossily decoded (borrowed when valid UTF-8).
    pub fn name_str(&self) -> Cow<'a, str> {
        String::from_utf8_lossy(self.name)
    }

    /// The value as sent, lossily decoded (borrowed when valid UTF-8).
    pub fn raw_value(&self) -> Cow<'a, str> {
        String::from_utf8_lossy(self.value)
    }

    /// The value URL-decoded (`%20` → space; `+` stays `+`, as FreeSWITCH's
    /// own decoder leaves it), then lossily decoded as UTF-8. Borrowed when
    /// there was nothing to decode.
    pub fn value(&self) -> Cow<'a, str> {
        percent_decode(self.value).decode_utf8_lossy()
    }
}

fn find<'h, 'a>(headers: &'h [Header<'a>], name: &str) -> Option<&'h Header<'a>> {
    let name = name.as_bytes();
    headers.iter().find(|h| h.name.eq_ignore_ascii_case(name))
}

// === impl EslFrame ===

/// What a frame is, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentType {
    /// `auth/request`: the server wants `auth <password>`.
    AuthRequest,
    /// `command/reply`: the answer to a command, in `Reply-Text`.
    CommandReply,
    /// `api/response`: the output of an `api` command, in the body.
    ApiResponse,
    /// `text/event-plain`: an event, its body a header block.
    EventPlain,
    /// `text/event-json`: an event as JSON (not parsed here).
    EventJson,
    /// `text/event-xml`: an event as XML (not parsed here).
    EventXml,
    /// `text/disconnect-notice`: the server is closing the connection.
    DisconnectNotice,
    /// `text/rude-rejection`: the server's ACL refused the connection.
    RudeRejection,
    /// `log/data`: a log line (after the `log` command).
    LogData,
    /// Anything else, or no `Content-Type`.
    Other,
}

/// One framed ESL message, borrowing from the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EslFrame<'a> {
    headers: Vec<Header<'a>>,
    body: Option<&'a [u8]>,
}

impl<'a> EslFrame<'a> {
    /// Every header in order.
    pub fn headers(&self) -> &[Header<'a>] {
        &self.headers
    }

    /// The `Content-Length` bytes after the header block, if any.
    pub fn body(&self) -> Option<&'a [u8]> {
        self.body
    }

    /// Value of the first header named `name` (ASCII case-insensitive), raw.
    pub fn get_bytes(&self, name: &str) -> Option<&'a [u8]> {
        find(&self.headers, name).map(|h| h.value)
    }

    /// Value of the first header named `name`, lossily decoded. Frame
    /// headers are not URL-encoded (event headers are: see [`EslEvent`]).
    pub fn get(&self, name: &str) -> Option<Cow<'a, str>> {
        self.get_bytes(name).map(String::from_utf8_lossy)
    }

    /// The frame's kind.
    pub fn content_type(&self) -> ContentType {
        match self.get_bytes("Content-Type") {
            Some(b"auth/request") => ContentType::AuthRequest,
            Some(b"command/reply") => ContentType::CommandReply,
            Some(b"api/response") => ContentType::ApiResponse,
            Some(b"text/event-plain") => ContentType::EventPlain,
            Some(b"text/event-json") => ContentType::EventJson,
            Some(b"text/event-xml") => ContentType::EventXml,
            Some(b"text/disconnect-notice") => ContentType::DisconnectNotice,
            Some(b"text/rude-rejection") => ContentType::RudeRejection,
            Some(b"log/data") => ContentType::LogData,
            _ => ContentType::Other,
        }
    }

    /// `Reply-Text` of a `command/reply`, e.g. `+OK accepted`, `-ERR invalid`.
    pub fn reply_text(&self) -> Option<Cow<'a, str>> {
        self.get("Reply-Text")
    }

    /// Whether a reply says `+OK` (`Some(true)`) or `-ERR` (`Some(false)`):
    /// `Reply-Text` of a `command/reply`, else the start of the body (an
    /// `api/response`). `None` when it says neither.
    pub fn reply_ok(&self) -> Option<bool> {
        let text = self.get_bytes("Reply-Text").or(self.body)?.trim_ascii_start();
        if text.starts_with(b"+OK") {
            Some(true)
        } else if text.starts_with(b"-ERR") {
            Some(false)
        } else {
            None
        }
    }

    /// The event of a `text/event-plain` frame, parsed from its body.
    /// `None` for other frames.
    ///
    /// # Errors
    /// As [`parse_event`].
    pub fn event(&self) -> Option<Result<EslEvent<'a>, ParseError>> {
        (self.content_type() == ContentType::EventPlain).then(|| parse_event(self.body.unwrap_or_default()))
    }
}

// === impl EslEvent ===

/// One event of a `text/event-plain` frame: URL-encoded headers, then
/// maybe its own `Content-Length` body (e.g. a `BACKGROUND_JOB` result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EslEvent<'a> {
    headers: Vec<Header<'a>>,
    body: Option<&'a [u8]>,
}

impl<'a> EslEvent<'a> {
    /// Every header in order, values still URL-encoded.
    pub fn headers(&self) -> &[Header<'a>] {
        &self.headers
    }

    /// The event's own body, if it has one.
    pub fn body(&self) -> Option<&'a [u8]> {
        self.body
    }

    /// Raw (still URL-encoded) value of the first header named `name`
    /// (ASCII case-insensitive, as FreeSWITCH looks headers up).
    pub fn get_bytes(&self, name: &str) -> Option<&'a [u8]> {
        find(&self.headers, name).map(|h| h.value)
    }

    /// URL-decoded value of the first header named `name` (see
    /// [`Header::value`]).
    pub fn get(&self, name: &str) -> Option<Cow<'a, str>> {
        find(&self.headers, name).map(Header::value)
    }

    /// [`get`](Self::get), with an empty value taken as absent, and so
    /// `_undef_`, which `switch_event_serialize` writes for an empty value.
    pub fn get_nonempty(&self, name: &str) -> Option<Cow<'a, str>> {
        self.get(name).filter(|v| !v.is_empty() && v != "_undef_")
    }

    /// `Event-Name` (`CHANNEL_ANSWER`, `CUSTOM`, ...).
    pub fn name(&self) -> Option<Cow<'a, str>> {
        self.get("Event-Name")
    }

    /// `Event-Subclass` of a `CUSTOM` event (`callcenter::info`).
    pub fn subclass(&self) -> Option<Cow<'a, str>> {
        self.get("Event-Subclass")
    }

    /// `Event-Date-Timestamp` (microseconds since the epoch) in nanoseconds.
    pub fn timestamp(&self) -> Option<UnixNanos> {
        self.get_bytes("Event-Date-Timestamp").and_then(parse_micros)
    }
}

/// A decimal count of microseconds since the epoch, in nanoseconds.
pub(super) fn parse_micros(v: &[u8]) -> Option<UnixNanos> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let micros = v.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
    micros.checked_mul(1000)
}

// === parsing ===

/// Result of reading one header block.
struct Block<'a> {
    headers: Vec<Header<'a>>,
    /// Offset just past the empty line ending the block, or past the last
    /// line when the input ended without one (`complete == false`).
    end: usize,
    complete: bool,
}

/// Reads `Name: value` lines from `buf[start..]` up to an empty line.
///
/// A line that is not a header continues the previous header's value, so a
/// value with raw line breaks (SDP in an unencoded recording) stays whole.
/// With `keep_last`, a last line without its line end is kept as a header
/// (an event body that ends without an empty line); else it is left for
/// more input.
fn read_block(buf: &[u8], start: usize, capacity: usize, keep_last: bool) -> Result<Block<'_>, ParseError> {
    let mut headers: Vec<Header<'_>> = Vec::with_capacity(capacity);
    let mut value_start = 0;
    let mut pos = start;
    loop {
        let Some(nl) = memchr(b'\n', &buf[pos..]) else {
            if keep_last && pos < buf.len() {
                add_line(buf, pos, buf.len(), &mut headers, &mut value_start)?;
            }
            return Ok(Block { headers, end: buf.len(), complete: false });
        };
        let line_end = pos + nl;
        let next = line_end + 1;
        let line = strip_cr(&buf[pos..line_end]);
        if line.is_empty() {
            return Ok(Block { headers, end: next, complete: true });
        }
        add_line(buf, pos, line_end, &mut headers, &mut value_start)?;
        pos = next;
    }
}

fn add_line<'a>(
    buf: &'a [u8],
    pos: usize,
    line_end: usize,
    headers: &mut Vec<Header<'a>>,
    value_start: &mut usize,
) -> Result<(), ParseError> {
    let line = strip_cr(&buf[pos..line_end]);
    match split_header(line) {
        Some((name, value_off)) => {
            *value_start = pos + value_off;
            headers.push(Header { name, value: &buf[*value_start..pos + line.len()] });
        }
        None => match headers.last_mut() {
            Some(last) => last.value = &buf[*value_start..pos + line.len()],
            None => return Err(ParseError::new(ParseErrorKind::InvalidHeader, pos)),
        },
    }
    Ok(())
}

/// `Name: value` (or `Name:` with nothing after it): the name and the offset
/// of the value in `line`. The name holds no blank and no `=` (which tells a
/// header from a raw SDP line such as `a=rtpmap:0 PCMU/8000`).
fn split_header(line: &[u8]) -> Option<(&[u8], usize)> {
    let colon = memchr(b':', line)?;
    let name = &line[..colon];
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.iter().any(|&b| b.is_ascii_whitespace() || b == b'=') {
        return None;
    }
    match line.get(colon + 1) {
        None => Some((name, colon + 1)),
        Some(b' ') => Some((name, colon + 2)),
        Some(_) => None,
    }
}

fn content_length(headers: &[Header<'_>], at: usize) -> Result<Option<usize>, ParseError> {
    let Some(h) = find(headers, "Content-Length") else {
        return Ok(None);
    };
    let v = h.value.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::new(ParseErrorKind::InvalidContentLength, at));
    }
    let n = v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    usize::try_from(n).map(Some).map_err(|_| ParseError::new(ParseErrorKind::InvalidContentLength, at))
}

/// Parses one frame at the start of `buf`, with a size limit in bytes
/// (leading empty lines, headers and body included).
///
/// Empty lines before the frame are skipped (and counted in `consumed`).
///
/// # Errors
/// [`ParseErrorKind::TooLarge`] when `max` bytes hold no complete header
/// block or the `Content-Length` reaches past `max`;
/// [`ParseErrorKind::InvalidContentLength`] and
/// [`ParseErrorKind::InvalidHeader`] on a malformed header block.
/// Resynchronise with [`skip_frame`]. Incomplete input is
/// [`Status::Partial`].
pub fn parse_frame(buf: &[u8], max: usize) -> Result<Status<EslFrame<'_>>, ParseError> {
    let window = &buf[..buf.len().min(max)];
    let need_more = || {
        if buf.len() >= max { Err(ParseError::new(ParseErrorKind::TooLarge, max)) } else { Ok(Status::Partial) }
    };
    let Some(start) = skip_empty_lines(window) else {
        return need_more();
    };
    if start == window.len() {
        return need_more();
    }
    let block = read_block(window, start, 4, false)?;
    if !block.complete {
        return need_more();
    }
    let header_end = block.end;
    let len = content_length(&block.headers, start)?.unwrap_or(0);
    let Some(end) = header_end.checked_add(len).filter(|&e| e <= max) else {
        return Err(ParseError::new(ParseErrorKind::TooLarge, start));
    };
    if buf.len() < end {
        return Ok(Status::Partial);
    }
    let body = (len > 0).then(|| &buf[header_end..end]);
    Ok(Status::Complete { value: EslFrame { headers: block.headers, body }, consumed: end })
}

/// Parses the body of a `text/event-plain` frame.
///
/// The header block may end with an empty line or with the body itself (as
/// in some recordings); a `Content-Length` in it introduces the event's own
/// body, which must fit in what follows.
///
/// # Errors
/// [`ParseErrorKind::InvalidHeader`] when the first line is not a header;
/// [`ParseErrorKind::InvalidContentLength`] when the event's own
/// `Content-Length` is malformed or longer than the rest of `body`.
pub fn parse_event(body: &[u8]) -> Result<EslEvent<'_>, ParseError> {
    let start = skip_empty_lines(body).unwrap_or(body.len());
    let block = read_block(body, start, 160, true)?;
    let body = match content_length(&block.headers, start)? {
        Some(0) | None => None,
        Some(len) => {
            let end = block.end.checked_add(len).filter(|&e| block.complete && e <= body.len());
            let Some(end) = end else {
                return Err(ParseError::new(ParseErrorKind::InvalidContentLength, block.end));
            };
            Some(&body[block.end..end])
        }
    };
    Ok(EslEvent { headers: block.headers, body })
}

/// After an error, how many bytes to drop to reach the next frame: past the
/// bad header block and, when it gave a readable `Content-Length`, its body.
///
/// A streaming reader that does not yet hold that many bytes drops what it
/// has and keeps dropping until the count is reached; [`Status::Partial`]
/// means the header block itself has not ended yet.
pub fn skip_frame(buf: &[u8]) -> Status<usize> {
    let start = skip_empty_lines(buf).unwrap_or(buf.len());
    // Find the empty line by hand: a block that fails to parse as headers
    // must still be skippable.
    let mut pos = start;
    loop {
        let Some(nl) = memchr(b'\n', &buf[pos..]) else {
            return Status::Partial;
        };
        let next = pos + nl + 1;
        if strip_cr(&buf[pos..pos + nl]).is_empty() {
            let len = read_block(buf, start, 4, false)
                .ok()
                .and_then(|b| content_length(&b.headers, 0).ok().flatten())
                .unwrap_or(0);
            let n = next.saturating_add(len);
            return Status::Complete { value: n, consumed: n };
        }
        pos = next;
    }
}

/// Iterates over every frame of a complete input (a recorded stream):
/// resynchronises after errors and reports a truncated tail.
pub fn frames(buf: &[u8]) -> Frames<'_> {
    Frames { buf, pos: 0, max: DEFAULT_MAX_FRAME_SIZE }
}

/// Iterator returned by [`frames`].
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    buf: &'a [u8],
    pos: usize,
    max: usize,
}

impl Frames<'_> {
    /// Uses another size limit.
    pub fn with_limit(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// Bytes of the input consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<EslFrame<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        let buf: &'a [u8] = self.buf;
        let rest = buf.get(self.pos..)?;
        if rest.is_empty() {
            return None;
        }
        let at = self.pos;
        match parse_frame(rest, self.max) {
            Ok(Status::Complete { value, consumed }) => {
                self.pos += consumed.max(1);
                Some(Ok(value))
            }
            Ok(Status::Partial) => {
                self.pos = buf.len();
                // A tail of empty lines is not a truncated frame.
                match skip_empty_lines(rest) {
                    Some(n) if n == rest.len() => None,
                    _ => Some(Err(ParseError::new(ParseErrorKind::Truncated, at))),
                }
            }
            Err(e) => {
                self.pos = match skip_frame(rest) {
                    Status::Complete { consumed, .. } => at.saturating_add(consumed.max(1)).min(buf.len()),
                    Status::Partial => buf.len(),
                };
                Some(Err(e.shifted(at)))
            }
        }
    }
}

// === helpers ===

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Offset of the first byte that does not belong to a leading run of empty
/// lines; `None` if the buffer ends in the middle of one (a lone `\r`).
fn skip_empty_lines(buf: &[u8]) -> Option<usize> {
    let mut rest = buf;
    while let Some(r) = rest.strip_prefix(b"\r\n").or_else(|| rest.strip_prefix(b"\n")) {
        rest = r;
    }
    if rest == b"\r" { None } else { Some(buf.len() - rest.len()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lines_and_continuations() {
        assert_eq!(split_header(b"Event-Name: CHANNEL_ANSWER"), Some((&b"Event-Name"[..], 12)));
        assert_eq!(split_header(b"Empty:"), Some((&b"Empty"[..], 6)));
        assert_eq!(split_header(b"a=rtpmap:0 PCMU/8000"), None);
        assert_eq!(split_header(b"o=- 1 1 IN IP4 10.0.0.1"), None);
        assert_eq!(split_header(b"s=Talk: x"), None);
        assert_eq!(split_header(b"Key:value"), None);
        let ev = parse_event(b"A: 1\nB: v=0\no=- 1\nc=IN IP4 x\nC: %2B33%20612\n\n").unwrap();
        assert_eq!(ev.get("b").as_deref(), Some("v=0\no=- 1\nc=IN IP4 x"));
        assert_eq!(ev.get("C").as_deref(), Some("+33 612"));
        assert_eq!(ev.headers().len(), 3);
    }

    #[test]
    fn micros() {
        assert_eq!(parse_micros(b"1422468044671081"), Some(1_422_468_044_671_081_000));
        assert_eq!(parse_micros(b"0"), Some(0));
        assert_eq!(parse_micros(b"-1"), None);
        assert_eq!(parse_micros(b"999999999999999999"), None);
        assert_eq!(parse_micros(b""), None);
    }
}
