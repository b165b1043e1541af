//! The file-form record parser: one `epoch|callid|queue|agent|verb|data...`
//! line to a borrowed [`QueueLogRecord`], and the time formats both forms use.

use std::fmt;
use std::str::FromStr;

use callkpi_core::event::{NANOS_PER_SEC, UnixNanos};
use jiff::tz::TimeZone;

use crate::Status;

/// Longest verb accepted; longer names are garbage, not verbs to count.
const MAX_VERB_LEN: usize = 32;
// === errors ===

/// Why a line is not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParseErrorKind {
    /// The line is empty or only whitespace (skipped, not counted).
    Blank,
    /// The line is not valid UTF-8.
    InvalidUtf8,
    /// Fewer than the five fields time, callid, queue, agent and verb.
    TooFewFields,
    /// The time is neither epoch seconds nor a datetime.
    BadTime,
    /// The verb is empty, too long, or not ASCII letters, digits and `_`.
    BadVerb,
    /// The verb is known but its data cannot make its event (mapper only).
    BadData,
}

/// A line that is not a record, and where it went wrong.
///
/// A malformed line is always a complete line: skip past its `\n` and go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParseError {
    /// What is wrong.
    pub kind: ParseErrorKind,
    /// Byte offset of the problem from the start of the buffer given.
    pub offset: usize,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ParseErrorKind::Blank => "blank line",
            ParseErrorKind::InvalidUtf8 => "invalid UTF-8",
            ParseErrorKind::TooFewFields => "fewer than five fields",
            ParseErrorKind::BadTime => "time is not epoch seconds or a datetime",
            ParseErrorKind::BadVerb => "verb is empty or not a name",
            ParseErrorKind::BadData => "data does not fit the verb",
        };
        write!(f, "queue_log: {what} at byte {}", self.offset)
    }
}

impl std::error::Error for ParseError {}

// === records ===

/// One queue_log record, borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLogRecord<'a> {
    /// Record time, ns since the Unix epoch.
    pub time: UnixNanos,
    /// Caller channel uniqueid, or `NONE`, `MANAGER`, `REALTIME`... as logged.
    pub call_id: &'a str,
    /// Queue name, or `NONE`.
    pub queue: &'a str,
    /// Agent (member name or interface), or `NONE`.
    pub agent: &'a str,
    /// Event verb (`ENTERQUEUE`, `CONNECT`, ...).
    pub verb: &'a str,
    /// Verb-specific data fields.
    pub data: Data<'a>,
}

/// The data fields of a record: pipe-separated text, or CSV data columns
/// (each of which may itself hold pipe-joined fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Data<'a>(DataRepr<'a>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataRepr<'a> {
    Piped(&'a str),
    Columns(&'a [&'a str]),
}

impl<'a> Data<'a> {
    /// Data given as one pipe-separated string (file form, CSV `data` column).
    /// An empty string holds no field.
    pub fn piped(data: &'a str) -> Self {
        Self(DataRepr::Piped(data))
    }

    /// Data given as CSV columns `data1`, `data2`, ... in order.
    pub fn columns(columns: &'a [&'a str]) -> Self {
        Self(DataRepr::Columns(columns))
    }

    /// The data fields in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + 'a {
        let (piped, columns) = match self.0 {
            DataRepr::Piped(s) => (Some(s).filter(|s| !s.is_empty()), None),
            DataRepr::Columns(c) => (None, Some(c)),
        };
        piped.into_iter().flat_map(|s| s.split('|')).chain(columns.into_iter().flatten().flat_map(|c| c.split('|')))
    }

    /// Field `i` (0 for `data1`), or `""` when absent.
    pub fn get(&self, i: usize) -> &'a str {
        self.iter().nth(i).unwrap_or("")
    }

    /// Number of fields, trailing empty ones included.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there is no field at all.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

/// Looks for one file-form record at the start of `buf`.
///
/// Answers [`Status::Partial`] until `buf` holds a whole line (up to and
/// including `\n`); `consumed` then covers the line and its terminator. At
/// the end of the input, a last line without terminator goes to
/// [`parse_record`].
///
/// # Errors
///
/// A complete line that is not a record (see [`ParseErrorKind`]); the caller
/// skips it, up to and including its `\n`.
pub fn parse_line(buf: &[u8]) -> Result<Status<QueueLogRecord<'_>>, ParseError> {
    match memchr::memchr(b'\n', buf) {
        None => Ok(Status::Partial),
        Some(nl) => parse_record(&buf[..nl]).map(|value| Status::Complete { value, consumed: nl + 1 }),
    }
}

/// Parses one file-form line without its `\n` (a trailing `\r` is ignored).
///
/// # Errors
///
/// The line is not a record (see [`ParseErrorKind`]).
pub fn parse_record(line: &[u8]) -> Result<QueueLogRecord<'_>, ParseError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err(ParseError { kind: ParseErrorKind::Blank, offset: 0 });
    }
    let line = std::str::from_utf8(line)
        .map_err(|e| ParseError { kind: ParseErrorKind::InvalidUtf8, offset: e.valid_up_to() })?;
    let mut fields = line.splitn(6, '|');
    let mut next = || fields.next();
    let (Some(time), Some(call_id), Some(queue), Some(agent), Some(verb)) = (next(), next(), next(), next(), next())
    else {
        return Err(ParseError { kind: ParseErrorKind::TooFewFields, offset: line.len() });
    };
    let data = fields.next().unwrap_or("");
    let time = parse_epoch(time).ok_or(ParseError { kind: ParseErrorKind::BadTime, offset: 0 })?;
    let verb_at = offset_in(line, verb);
    check_verb(verb, verb_at)?;
    Ok(QueueLogRecord { time, call_id, queue, agent, verb, data: Data::piped(data) })
}

/// Byte offset of `part` (a subslice of `whole`) within `whole`.
fn offset_in(whole: &str, part: &str) -> usize {
    (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize)
}

pub(super) fn check_verb(verb: &str, offset: usize) -> Result<(), ParseError> {
    let ok =
        !verb.is_empty() && verb.len() <= MAX_VERB_LEN && verb.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok { Ok(()) } else { Err(ParseError { kind: ParseErrorKind::BadVerb, offset }) }
}

/// Unix seconds, integer or fractional (`1795356677`, `1795356677.25`), to ns.
pub(super) fn parse_epoch(s: &str) -> Option<UnixNanos> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = int.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nanos += i64::from(b - b'0') * 10_i64.pow(8 - i as u32);
    }
    secs.checked_mul(NANOS_PER_SEC)?.checked_add(nanos)
}

/// A CSV `time`: epoch seconds, an RFC 3339-like timestamp with offset, or a
/// civil datetime in `tz`.
pub(super) fn parse_csv_time(s: &str, tz: &TimeZone) -> Option<UnixNanos> {
    if s.bytes().next().is_some_and(|b| b.is_ascii_digit()) && !s.contains('-') {
        return parse_epoch(s);
    }
    let ts = match jiff::Timestamp::from_str(s) {
        Ok(ts) => ts,
        Err(_) => tz.to_timestamp(jiff::civil::DateTime::from_str(s).ok()?).ok()?,
    };
    i64::try_from(ts.as_nanosecond()).ok()
}
