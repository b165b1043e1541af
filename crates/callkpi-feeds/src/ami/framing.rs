//! AMI framing: the banner line, then `Key: Value` messages ended by an empty line.
//!
//! Everything here borrows from the caller's buffer and never panics. See the
//! [module documentation](super) for the exact rules.

use std::borrow::Cow;
use std::fmt;

use memchr::{memchr, memmem};

use callkpi_core::event::UnixNanos;

use crate::Status;

/// Default limit on the size of one message (banner included), in bytes.
///
/// The largest messages Asterisk sends are `Response: Follows` command
/// outputs and long `QueueStatus` lists, which are split into one event per
/// entry; 1 MiB is far above anything legitimate, and low enough that a
/// broken peer cannot make the reader's buffer grow without bound.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;

/// What every AMI banner starts with (`Asterisk Call Manager/11.0.0`).
const BANNER_PREFIX: &[u8] = b"Asterisk Call Manager";

/// A banner longer than this is not a banner.
const MAX_BANNER_LEN: usize = 256;

/// Ends the free-text body of a `Response: Follows` (Asterisk up to 13).
const END_COMMAND: &[u8] = b"--END COMMAND--";

// === impl ParseError ===

/// Why bytes could not be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParseErrorKind {
    /// No message end within the size limit: the peer is broken or hostile.
    TooLarge,
    /// The first line does not look like `Asterisk Call Manager/x.y.z`.
    InvalidBanner,
    /// The input ended inside a message ([`Frames`] only: a streaming
    /// parser answers [`Status::Partial`] instead).
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
            ParseErrorKind::TooLarge => "AMI message larger than the size limit",
            ParseErrorKind::InvalidBanner => "not an AMI banner",
            ParseErrorKind::Truncated => "input ends inside an AMI message",
        };
        write!(f, "{what} at byte {}", self.offset)
    }
}

impl std::error::Error for ParseError {}

// === impl Header ===

/// One `Key: Value` line, as raw bytes (line ending and the one space after
/// the colon removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// Key, as sent (compare with [`eq_ignore_ascii_case`](slice::eq_ignore_ascii_case)).
    pub name: &'a [u8],
    /// Value; may itself contain `": "`.
    pub value: &'a [u8],
}

impl<'a> Header<'a> {
    /// The key, lossily decoded (borrowed when it is valid UTF-8).
    pub fn name_str(&self) -> Cow<'a, str> {
        String::from_utf8_lossy(self.name)
    }

    /// The value, lossily decoded (borrowed when it is valid UTF-8).
    pub fn value_str(&self) -> Cow<'a, str> {
        String::from_utf8_lossy(self.value)
    }
}

// === impl AmiMessage ===

/// What a message is, from its first defining header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// Has an `Event:` header (including `OriginateResponse`, which also
    /// carries `Response:`).
    Event,
    /// A reply to an action: `Response:` without `Event:`.
    Response,
    /// Neither (not sent by Asterisk; kept so nothing is lost).
    Unknown,
}

/// One framed AMI message, borrowing from the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmiMessage<'a> {
    headers: Vec<Header<'a>>,
    body: Option<&'a [u8]>,
}

impl<'a> AmiMessage<'a> {
    /// Every header in order, repeated keys included.
    pub fn headers(&self) -> &[Header<'a>] {
        &self.headers
    }

    /// Free text that followed the headers: the output of a
    /// `Response: Follows` (without `--END COMMAND--`), or any lines without
    /// a `Key:` part. Raw bytes, line endings as sent.
    pub fn body(&self) -> Option<&'a [u8]> {
        self.body
    }

    /// Value of the first header named `name` (ASCII case-insensitive).
    pub fn get_bytes(&self, name: &str) -> Option<&'a [u8]> {
        let name = name.as_bytes();
        self.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
    }

    /// Value of the first header named `name`, lossily decoded: borrowed
    /// when valid UTF-8, with U+FFFD replacements otherwise.
    pub fn get(&self, name: &str) -> Option<Cow<'a, str>> {
        self.get_bytes(name).map(String::from_utf8_lossy)
    }

    /// Values of every header named `name`, in order (e.g. `ChanVariable`).
    pub fn get_all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a [u8]> + 's {
        let name = name.as_bytes();
        self.headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
    }

    /// The `Event:` name, if this is an event.
    pub fn event(&self) -> Option<Cow<'a, str>> {
        self.get("Event")
    }

    /// The `Response:` value (`Success`, `Error`, `Follows`, ...), if any.
    pub fn response(&self) -> Option<Cow<'a, str>> {
        self.get("Response")
    }

    /// The `ActionID:` the reply or list event belongs to, if any.
    pub fn action_id(&self) -> Option<Cow<'a, str>> {
        self.get("ActionID")
    }

    /// Event, response or neither.
    pub fn kind(&self) -> MessageKind {
        if self.get_bytes("Event").is_some() {
            MessageKind::Event
        } else if self.get_bytes("Response").is_some() {
            MessageKind::Response
        } else {
            MessageKind::Unknown
        }
    }
}

/// The greeting Asterisk sends once per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Banner<'a> {
    /// The whole line without its line ending, e.g. `Asterisk Call Manager/11.0.0`.
    pub line: &'a str,
    /// The AMI protocol version after the last `/` (`11.0.0`), empty if none.
    pub version: &'a str,
}

/// One unit of an AMI byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// The connection banner.
    Banner(Banner<'a>),
    /// A message (event or response).
    Message(AmiMessage<'a>),
}

// === parsing ===

/// Parses the banner line at the start of `buf`.
///
/// # Errors
/// [`ParseErrorKind::InvalidBanner`] if `buf` does not start with
/// `Asterisk Call Manager` or the line is not UTF-8;
/// [`ParseErrorKind::TooLarge`] if no line end comes within 256 bytes.
pub fn parse_banner(buf: &[u8]) -> Result<Status<Banner<'_>>, ParseError> {
    let n = buf.len().min(BANNER_PREFIX.len());
    if buf[..n] != BANNER_PREFIX[..n] {
        return Err(ParseError::new(ParseErrorKind::InvalidBanner, 0));
    }
    let window = &buf[..buf.len().min(MAX_BANNER_LEN)];
    let Some(nl) = memchr(b'\n', window) else {
        return if buf.len() >= MAX_BANNER_LEN {
            Err(ParseError::new(ParseErrorKind::TooLarge, MAX_BANNER_LEN))
        } else {
            Ok(Status::Partial)
        };
    };
    let line = strip_cr(&buf[..nl]);
    let line =
        std::str::from_utf8(line).map_err(|e| ParseError::new(ParseErrorKind::InvalidBanner, e.valid_up_to()))?;
    let version = line.rsplit_once('/').map_or("", |(_, v)| v.trim());
    Ok(Status::Complete { value: Banner { line, version }, consumed: nl + 1 })
}

/// Parses one message at the start of `buf`, with the default size limit.
///
/// Empty lines before the message are skipped (and counted in `consumed`).
/// This function does not recognise the banner: use [`parse_frame`] on a
/// stream that may contain one.
///
/// # Errors
/// [`ParseErrorKind::TooLarge`] when 1 MiB ([`DEFAULT_MAX_MESSAGE_SIZE`])
/// holds no complete message. Incomplete input is [`Status::Partial`].
pub fn parse_message(buf: &[u8]) -> Result<Status<AmiMessage<'_>>, ParseError> {
    parse_message_with_limit(buf, DEFAULT_MAX_MESSAGE_SIZE)
}

/// [`parse_message`] with an explicit size limit in bytes (leading empty
/// lines and the terminating empty line included).
///
/// # Errors
/// [`ParseErrorKind::TooLarge`] with `offset == max` when the first `max`
/// bytes hold no complete message. Resynchronise with [`skip_message`].
pub fn parse_message_with_limit(buf: &[u8], max: usize) -> Result<Status<AmiMessage<'_>>, ParseError> {
    let window = &buf[..buf.len().min(max)];
    let need_more = || {
        if buf.len() >= max { Err(ParseError::new(ParseErrorKind::TooLarge, max)) } else { Ok(Status::Partial) }
    };
    let Some(mut pos) = skip_empty_lines(window) else {
        return need_more();
    };
    let mut headers = Vec::with_capacity(24);
    let mut follows = false;
    loop {
        let Some(nl) = memchr(b'\n', &window[pos..]) else {
            return need_more();
        };
        let line = strip_cr(&window[pos..pos + nl]);
        let next = pos + nl + 1;
        if line.is_empty() {
            return Ok(Status::Complete { value: AmiMessage { headers, body: None }, consumed: next });
        }
        match split_header(line) {
            Some(h) if !follows || is_follows_header(h.name) => {
                if h.name.eq_ignore_ascii_case(b"Response") && h.value.eq_ignore_ascii_case(b"Follows") {
                    follows = true;
                }
                headers.push(h);
                pos = next;
            }
            _ if follows => return parse_follows_body(window, pos, headers).or_else(|()| need_more()),
            _ => {
                // Free text without a key: everything up to the empty line is body.
                let Some(end) = find_empty_line(window, pos) else {
                    return need_more();
                };
                let body = &window[pos..end.start];
                return Ok(Status::Complete { value: AmiMessage { headers, body: Some(body) }, consumed: end.end });
            }
        }
    }
}

/// Parses the banner or a message, whichever starts `buf`.
///
/// # Errors
/// As [`parse_banner`] and [`parse_message_with_limit`].
pub fn parse_frame(buf: &[u8], max: usize) -> Result<Status<Frame<'_>>, ParseError> {
    let Some(start) = skip_empty_lines(&buf[..buf.len().min(max)]) else {
        return if buf.len() >= max {
            Err(ParseError::new(ParseErrorKind::TooLarge, max))
        } else {
            Ok(Status::Partial)
        };
    };
    let rest = &buf[start..];
    let n = rest.len().min(BANNER_PREFIX.len());
    if rest[..n] == BANNER_PREFIX[..n] {
        if n < BANNER_PREFIX.len() {
            return Ok(Status::Partial);
        }
        return match parse_banner(rest) {
            Ok(Status::Complete { value, consumed }) => {
                Ok(Status::Complete { value: Frame::Banner(value), consumed: start + consumed })
            }
            Ok(Status::Partial) => Ok(Status::Partial),
            Err(e) => Err(e.shifted(start)),
        };
    }
    match parse_message_with_limit(buf, max)? {
        Status::Complete { value, consumed } => Ok(Status::Complete { value: Frame::Message(value), consumed }),
        Status::Partial => Ok(Status::Partial),
    }
}

/// After an error, how many bytes to drop to reach the next message: up to
/// and including the next empty line.
///
/// After [`ParseErrorKind::TooLarge`] a streaming reader may not hold the
/// whole bad message: it drops what it has but the last byte (a line end
/// may be split across reads) and calls this again on new input until it
/// answers [`Status::Complete`].
pub fn skip_message(buf: &[u8]) -> Status<usize> {
    if let Some(rest) = strip_line_end(buf) {
        // The buffer starts with an empty line.
        let n = buf.len() - rest.len();
        return Status::Complete { value: n, consumed: n };
    }
    match find_empty_line(buf, 0) {
        Some(end) => Status::Complete { value: end.end, consumed: end.end },
        None => Status::Partial,
    }
}

/// Iterates over every frame of a complete input (a recorded transcript):
/// resynchronises after errors and reports a truncated tail.
pub fn frames(buf: &[u8]) -> Frames<'_> {
    Frames { buf, pos: 0, max: DEFAULT_MAX_MESSAGE_SIZE }
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
    type Item = Result<Frame<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        let buf: &'a [u8] = self.buf;
        let rest = buf.get(self.pos..)?;
        if rest.is_empty() {
            return None;
        }
        match parse_frame(rest, self.max) {
            Ok(Status::Complete { value, consumed }) => {
                self.pos += consumed.max(1);
                Some(Ok(value))
            }
            Ok(Status::Partial) => {
                let at = self.pos;
                self.pos = buf.len();
                // A tail of empty lines is not a truncated message.
                match skip_empty_lines(rest) {
                    Some(n) if n == rest.len() => None,
                    _ => Some(Err(ParseError::new(ParseErrorKind::Truncated, at))),
                }
            }
            Err(e) => {
                let at = self.pos;
                self.pos = match skip_message(rest) {
                    Status::Complete { consumed, .. } => at + consumed.max(1),
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

/// If `buf` starts with an empty line (`\r\n` or `\n`), the rest after it.
fn strip_line_end(buf: &[u8]) -> Option<&[u8]> {
    buf.strip_prefix(b"\r\n").or_else(|| buf.strip_prefix(b"\n"))
}

/// Offset of the first byte that does not belong to a leading run of empty
/// lines; `None` if the buffer ends in the middle of one (a lone `\r`).
fn skip_empty_lines(buf: &[u8]) -> Option<usize> {
    let mut rest = buf;
    while let Some(r) = strip_line_end(rest) {
        rest = r;
    }
    if rest == b"\r" { None } else { Some(buf.len() - rest.len()) }
}

/// `Key: Value` or `Key:Value`; the key must be non-empty and hold no blank.
fn split_header(line: &[u8]) -> Option<Header<'_>> {
    let colon = memchr(b':', line)?;
    let name = &line[..colon];
    if name.is_empty() || name.iter().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let value = &line[colon + 1..];
    Some(Header { name, value: value.strip_prefix(b" ").unwrap_or(value) })
}

/// Headers Asterisk puts before the free text of a `Response: Follows`.
fn is_follows_header(name: &[u8]) -> bool {
    [&b"Response"[..], b"Privilege", b"ActionID", b"Message"].iter().any(|k| name.eq_ignore_ascii_case(k))
}

/// Where an empty line is found: its first byte and the byte after it.
struct EmptyLine {
    start: usize,
    end: usize,
}

/// The first empty line starting at a line boundary at or after `from`
/// (`from` itself must be a line start).
fn find_empty_line(buf: &[u8], from: usize) -> Option<EmptyLine> {
    let mut pos = from;
    loop {
        let nl = memchr(b'\n', buf.get(pos..)?)?;
        let next = pos + nl + 1;
        let rest = &buf[next..];
        if let Some(after) = strip_line_end(rest) {
            return Some(EmptyLine { start: next, end: buf.len() - after.len() });
        }
        if rest.is_empty() || rest == b"\r" {
            return None;
        }
        pos = next;
    }
}

/// Body of a `Response: Follows`, ended by `--END COMMAND--`, its line end
/// and the empty line after it (both tolerated when missing).
fn parse_follows_body<'a>(
    window: &'a [u8],
    body_start: usize,
    headers: Vec<Header<'a>>,
) -> Result<Status<AmiMessage<'a>>, ()> {
    let at = memmem::find(&window[body_start..], END_COMMAND).ok_or(())?;
    let marker = body_start + at;
    let after_marker = marker + END_COMMAND.len();
    let nl = memchr(b'\n', &window[after_marker..]).ok_or(())?;
    let mut consumed = after_marker + nl + 1;
    let rest = &window[consumed..];
    if let Some(after) = strip_line_end(rest) {
        consumed = window.len() - after.len();
    } else if rest.is_empty() || rest == b"\r" {
        // The empty line after the marker has not arrived yet.
        return Err(());
    }
    let body = &window[body_start..marker];
    Ok(Status::Complete { value: AmiMessage { headers, body: Some(body) }, consumed })
}

// === impl RecvIndex ===

/// When each byte of a recorded transcript arrived: a side file with one
/// line per `recv()` of the recording connection, `epoch<TAB>offset<TAB>length`
/// (epoch seconds with a fraction; the byte offset into the transcript and
/// how many bytes that `recv()` returned), as the bundled recording's
/// `ami.recv_index.tsv`.
///
/// Asterisk stamps events only with `timestampevents = yes` in
/// manager.conf (default no); without it, the receive time of the `recv()`
/// that completed a message is the best time there is, within network and
/// scheduling delay (milliseconds on the same host). Empty lines and lines
/// starting with `#` are skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecvIndex {
    /// (first byte after the chunk, receive time), by offset.
    ends: Vec<(u64, UnixNanos)>,
}

/// A receive-time index line that is not `epoch<TAB>offset<TAB>length`, or
/// chunks out of order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvIndexError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub what: &'static str,
}

impl fmt::Display for RecvIndexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.what)
    }
}

impl std::error::Error for RecvIndexError {}

impl RecvIndex {
    /// Reads the side file.
    ///
    /// # Errors
    /// [`RecvIndexError`] on a line that is not three tab-separated numbers,
    /// or a chunk that starts before the previous one ended.
    pub fn parse(text: &str) -> Result<Self, RecvIndexError> {
        let mut ends: Vec<(u64, UnixNanos)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |what| RecvIndexError { line: i + 1, what };
            let mut f = line.split('\t');
            let (Some(epoch), Some(offset), Some(len), None) = (f.next(), f.next(), f.next(), f.next()) else {
                return Err(err("expected epoch, offset and length separated by tabs"));
            };
            let time = super::mapper::parse_timestamp(epoch.as_bytes()).ok_or(err("bad epoch"))?;
            let offset: u64 = offset.parse().map_err(|_| err("bad offset"))?;
            let len: u64 = len.parse().map_err(|_| err("bad length"))?;
            if ends.last().is_some_and(|&(end, _)| offset < end) {
                return Err(err("chunk starts before the previous one ends"));
            }
            ends.push((offset.checked_add(len).ok_or(err("bad length"))?, time));
        }
        Ok(Self { ends })
    }

    /// Receive time of the `recv()` that delivered byte `offset`; `None`
    /// past the last chunk.
    pub fn time_of(&self, offset: u64) -> Option<UnixNanos> {
        let i = self.ends.partition_point(|&(end, _)| end <= offset);
        self.ends.get(i).map(|&(_, t)| t)
    }

    /// Number of `recv()` chunks.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the index has no chunk.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

#[cfg(test)]
mod recv_index_tests {
    use super::*;

    #[test]
    fn a_byte_gets_the_time_of_the_recv_that_delivered_it() {
        let ix = RecvIndex::parse("# epoch\toffset\tlen\n10.5\t0\t30\n\n11.000000001\t30\t10\n").expect("valid");
        assert_eq!(ix.len(), 2);
        assert_eq!(ix.time_of(0), Some(10_500_000_000));
        assert_eq!(ix.time_of(29), Some(10_500_000_000));
        assert_eq!(ix.time_of(30), Some(11_000_000_001));
        assert_eq!(ix.time_of(39), Some(11_000_000_001));
        assert_eq!(ix.time_of(40), None);
    }

    #[test]
    fn bad_lines_are_named() {
        let bad = |s: &str| RecvIndex::parse(s).expect_err(s).line;
        assert_eq!(bad("1\t0\t5\nx\t5\t1\n"), 2);
        assert_eq!(bad("1\t0\n"), 1);
        assert_eq!(bad("1\t0\t5\t9\n"), 1);
        assert_eq!(bad("1\t0\t5\n2\t4\t1\n"), 2, "overlapping chunks");
        assert_eq!(bad("1\t-3\t5\n"), 1);
        assert_eq!(RecvIndex::parse("1\t0\t5\n2\t7\t1\n").expect("a gap is fine").time_of(6), Some(2_000_000_000));
    }
}
