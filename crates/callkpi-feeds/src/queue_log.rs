//! Asterisk `queue_log`: records in, normalised queue, agent and call events out.
//!
//! `app_queue` writes one record for every step of a queued call (entry,
//! answer, end, abandon, transfer) and for every change of a member (added,
//! removed, paused). It is the most precise source Asterisk has for
//! contact-centre KPIs: it carries the durations Asterisk measured itself
//! (hold time in the queue, ring time, talk time), which
//! [`callkpi_core::event`] keeps as `reported_*` fields.
//!
//! This module is sans-IO: [`parse_line`] looks at bytes and answers a
//! borrowed [`QueueLogRecord`] or [`Status::Partial`]; [`QueueLogMapper`]
//! keeps the little state a stream needs and turns records into
//! [`FeedEvent`]s. Nothing here panics on any input; a bad line is counted in
//! [`Unparsed::malformed`] and skipped.
//!
//! # Input forms
//!
//! **File form** (`/var/log/asterisk/queue_log`): one record per line,
//! terminated by LF or CRLF, fields separated by `|`:
//!
//! ```text
//! epoch|callid|queuename|agent|verb|data1|data2|...
//! 1795356691|1795356686.1|support|Alice Martin|CONNECT|4|1795356687.2|4
//! ```
//!
//! `epoch` is Unix seconds, integer or fractional (`1795356691.250`). The
//! data fields are whatever the verb logs, possibly none. The format has no
//! quoting: a field can hold any byte but `|` and the line end. Asterisk
//! writes queue and member names as configured, so a line that is not UTF-8
//! (a Latin-1 `queues.conf`) is read as ISO-8859-1 by the mapper
//! ([`parse_record`] itself reports [`ParseErrorKind::InvalidUtf8`]).
//!
//! **DB-export CSV form** (the realtime `queue_log` table, exported): RFC 4180
//! CSV (parsed with `csv-core`) whose first line is a header naming the
//! columns, in any order, for example
//! `time,callid,queuename,agent,event,data1,data2,data3,data4,data5`.
//! `queue` and `verb` are accepted for `queuename` and `event`; unknown
//! columns (such as an `id` key) are ignored. The older schema has a single
//! `data` column holding the data pipe-joined, as in the file form. Asterisk
//! itself puts any surplus data in the last column, pipe-joined, so each data
//! column is split on `|` too. `time` is either epoch seconds or a datetime
//! `YYYY-MM-DD HH:MM:SS[.ffffff]` (a `T` separator and a trailing UTC offset
//! are accepted). A datetime without offset is read in
//! [`QueueLogConfig::time_zone`] (UTC by default); in the repeated hour of a
//! DST change, the earlier instant is taken. A field holding exactly `\N`
//! (MySQL's NULL) reads as empty.
//!
//! The form is detected from the first line: a line without `|` whose
//! comma-separated names include `time` and `event` is a CSV header; any other
//! first line starts the file form. [`QueueLogConfig::form`] can force a form;
//! a forced CSV input without a recognisable header is read in the default
//! column order above. To resume a CSV export at a checkpoint, push its header
//! line first, then the bytes from the checkpoint on.
//!
//! # Verbs and the events they become
//!
//! Common to all: `source_time` is the record's time in ns; `call_id` is the
//! `callid` field (`NONE` reads as empty), except for agent-state and
//! `QUEUESTART` events, which concern no call and get an empty `call_id`
//! (Asterisk writes `NONE` or `MANAGER` there); `leg_id` is empty except for
//! `CONNECT`, where it is the member channel's uniqueid. A queue or agent field
//! `NONE` (or empty) becomes `None` where the event has an `Option`, and an
//! empty string elsewhere. Durations in seconds become milliseconds; a
//! duration or position that is not a non-negative integer becomes `None`.
//!
//! | verb | data (Asterisk 13+) | event |
//! |---|---|---|
//! | `ENTERQUEUE` | url\|callerid\|position[\|calleridname] | `QueueJoin { caller: callerid if not empty, position }`; the name (`log_cidname = yes`) is not kept |
//! | `CONNECT` | holdtime\|member uniqueid\|ringtime (s) | `Answered { reported_wait_ms: holdtime, reported_ring_ms: ringtime }`, `leg_id` = member uniqueid |
//! | `COMPLETEAGENT` | holdtime\|calltime\|origposition | `Hangup { by: Agent, cause: None, reported_talk_ms: calltime }` |
//! | `COMPLETECALLER` | holdtime\|calltime\|origposition | `Hangup { by: Caller, .. }` likewise |
//! | `ABANDON` | position\|origposition\|waittime | `QueueLeave { Abandon, reported_wait_ms: waittime }` |
//! | `EXITWITHTIMEOUT` | position\|origposition\|waittime | `QueueLeave { Timeout, waittime }` (before 1.6 only position: no wait) |
//! | `EXITWITHKEY` | key\|position\|origposition\|waittime | `QueueLeave { ExitWithKey, waittime }` (before 1.6 key\|position: no wait) |
//! | `EXITEMPTY` | position\|origposition\|waittime | `QueueLeave { LeaveEmpty, waittime }` |
//! | `LEAVEEMPTY` | as `EXITEMPTY`, when present | `QueueLeave { LeaveEmpty, waittime if logged }` |
//! | `FULL` / `JOINEMPTY` | (not used) | `QueueLeave { Full / JoinEmpty, reported_wait_ms: None }`: the caller never waited |
//! | `RINGNOANSWER` | ringtime (**ms**) | `OfferMissed { NoAnswer, reported_ring_ms }` |
//! | `RINGCANCELED` | ringtime (**ms**) | `OfferMissed { Canceled, reported_ring_ms }` |
//! | `AGENTDUMP` | - | `OfferMissed { Rejected, reported_ring_ms: None }` |
//! | `BLINDTRANSFER`, `TRANSFER` | extension\|context\|holdtime\|calltime\|origposition | `Transfer { Blind, target: "extension@context", reported_talk_ms: calltime }` |
//! | `ATTENDEDTRANSFER` | method\|key...\|holdtime\|calltime\|origposition | `Transfer { Attended, target: "method:key", reported_talk_ms: calltime }` |
//! | `ADDMEMBER` / `REMOVEMEMBER` | empty, or `PAUSED` for a member added paused (Asterisk releases of 20, 21 and 22 from early 2025 on) | `AgentState { Login / Logout, queue: Some }`; added paused: `Paused`, which logs in too |
//! | `AGENTLOGIN`, `AGENTCALLBACKLOGIN` | channel | `AgentState { Login, queue unless NONE }` |
//! | `AGENTLOGOFF`, `AGENTCALLBACKLOGOFF` | channel\|logintime | `AgentState { Logout, queue unless NONE }` |
//! | `PAUSE` / `PAUSEALL` | reason | `AgentState { Paused { reason } }`, queue `None` for `PAUSEALL` |
//! | `UNPAUSE` / `UNPAUSEALL` | - | `AgentState { Available }`, queue `None` for `UNPAUSEALL` |
//! | `QUEUESTART` | - | `QueueStart` |
//! | `DID` | DID | `CallOffered { Inbound, caller: "", called: DID, trunk: None }` |
//! | `SYSCOMPAT` | - | `QueueLeave { Unspecified }`: the call was dropped after an agent answered (incompatible channels) |
//! | `CONFIGRELOAD`, `INFO` | - | none: known and informational, not counted |
//!
//! # Agent aliases
//!
//! With `log_membername_as_agent = no` in queues.conf (Asterisk's default),
//! `AddQueueMember` and `RemoveQueueMember` log `ADDMEMBER`/`REMOVEMEMBER`
//! under the member's **interface** (`PJSIP/1001`), while every other record
//! of that member (`CONNECT`, `COMPLETE*`, `RINGNOANSWER`, `PAUSE`...) names
//! its **member name** (`Alice`): one person becomes two agents, one logged
//! in and idle, the other working without a login. Nothing in the file links
//! the two names, so [`QueueLogConfig::agent_aliases`] lets the admin say so:
//! an exact, case-sensitive map from the name as logged to the name reported,
//! applied to the agent field of every record before it is mapped. Names are
//! never guessed from interfaces (`Local/1001@agents/n` or `PJSIP/1001` and
//! `Alice` share nothing a program could safely match).
//!
//! The method of `ATTENDEDTRANSFER` is `BRIDGE` (key: the bridge id), `APP`
//! (key: the application) or `LINK` (key: the two channels, `|`-joined), so
//! its durations are read from the end of the data.
//!
//! # callkpi's custom verbs
//!
//! Asterisk logs no survey, disposition, outbound call or wrap-up. The
//! dialplan can, with `QueueLog(queue,${UNIQUEID},agent,VERB,data)`; callkpi
//! reads these verbs (queue and agent as for Asterisk's own; `NONE` allowed):
//!
//! | verb | data | event |
//! |---|---|---|
//! | `SURVEY` | score\|metric\|min\|max | `SurveyAnswer { queue, agent }`. `metric` is `csat` (default), `nps` or `ces`, with the scales 1-5, 0-10 and 1-7 unless `min`/`max` are given. A score that is not a number within the scale is malformed. |
//! | `DISPOSITION` | code\|resolved | `Disposition { code, resolved, agent }`; `resolved` is `1`/`0`, `yes`/`no` or `true`/`false` (any case) |
//! | `OUTDIAL` | number\|trunk | `CallOffered { Outbound, caller: agent or "", called: number, trunk }` |
//! | `OUTRESULT` | dialstatus\|cause\|number | `DialResult { outcome, cause, dialled, trunk }`: `dialstatus` is Asterisk's `DIALSTATUS`, `cause` the optional Q.850 cause, `number` the optional dialled number (else the one the call's `OUTDIAL` gave, whose trunk is also reused) |
//! | `OUTANSWER` | number | `DialResult { Answered }`, the same as `OUTRESULT` with `ANSWER` |
//! | `WRAPUPSTART` / `WRAPUPEND` | - | `WrapUpStart` / `WrapUpEnd { agent, queue }` |
//!
//! `DIALSTATUS` maps as `ANSWER` → `Answered`, `BUSY` → `Busy`, `NOANSWER` →
//! `NoAnswer`, `CONGESTION` → `Congestion`, `CHANUNAVAIL` → `Unavailable`,
//! `CANCEL` → `AgentAbandoned`, and `FAILED`, `INVALIDARGS`, `DONTCALL`,
//! `TORTURE` → `Failed`.
//!
//! # What is counted as unparsed
//!
//! - [`Unparsed::by_name`]: well-formed records whose verb is none of the
//!   above (for example `PENALTY`), by verb.
//! - [`Unparsed::malformed`]: lines that are not records (fewer
//!   than five fields, a time that is not a time, a verb that is not 1 to 32
//!   ASCII letters, digits or `_`), and records of a known verb whose data
//!   cannot make its event (a `SURVEY` without a numeric score, an
//!   agent-state verb with agent `NONE`, an unknown `DIALSTATUS`...).
//!   [`QueueLogMapper::last_malformed`] says where the last one was.
//! - Blank lines are skipped and not counted.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use callkpi_core::event::{
    AgentState, DialOutcome, Direction, EventKind, HangupBy, LeaveReason, MissReason, NANOS_PER_SEC, SurveyMetric,
    TransferKind, UnixNanos,
};
use csv_core::{ReadRecordResult, Reader};
use jiff::tz::TimeZone;

use crate::{FeedEvent, Status, Unparsed};

/// What Asterisk writes for an absent call id, queue or agent.
const NONE: &str = "NONE";
/// Longest verb accepted; longer names are garbage, not verbs to count.
const MAX_VERB_LEN: usize = 32;
/// Most data columns a CSV layout reads (`data1`..`data9`).
const MAX_DATA_COLUMNS: usize = 9;
/// Outbound calls remembered between `OUTDIAL` and `OUTRESULT`.
const MAX_OPEN_OUTDIALS: usize = 4096;

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

fn check_verb(verb: &str, offset: usize) -> Result<(), ParseError> {
    let ok =
        !verb.is_empty() && verb.len() <= MAX_VERB_LEN && verb.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok { Ok(()) } else { Err(ParseError { kind: ParseErrorKind::BadVerb, offset }) }
}

/// Unix seconds, integer or fractional (`1795356677`, `1795356677.25`), to ns.
fn parse_epoch(s: &str) -> Option<UnixNanos> {
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
fn parse_csv_time(s: &str, tz: &TimeZone) -> Option<UnixNanos> {
    if s.bytes().next().is_some_and(|b| b.is_ascii_digit()) && !s.contains('-') {
        return parse_epoch(s);
    }
    let ts = match jiff::Timestamp::from_str(s) {
        Ok(ts) => ts,
        Err(_) => tz.to_timestamp(jiff::civil::DateTime::from_str(s).ok()?).ok()?,
    };
    i64::try_from(ts.as_nanosecond()).ok()
}

// === mapper ===

/// Which of the two input forms a stream is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputForm {
    /// `epoch|callid|queue|agent|verb|data...` lines.
    File,
    /// DB-export CSV with a header line.
    Csv,
}

/// Settings of a [`QueueLogMapper`].
#[derive(Debug, Clone, PartialEq)]
pub struct QueueLogConfig {
    /// Time zone of CSV datetimes written without offset (the database
    /// server's zone). Default UTC.
    pub time_zone: TimeZone,
    /// The input form; `None` (default) detects it from the first line.
    pub form: Option<InputForm>,
    /// Agent names as logged mapped to the names reported (see "Agent
    /// aliases" above). Empty by default.
    pub agent_aliases: AgentAliases,
}

impl Default for QueueLogConfig {
    fn default() -> Self {
        Self { time_zone: TimeZone::UTC, form: None, agent_aliases: AgentAliases::default() }
    }
}

/// A checked map `agent name as logged -> agent name reported`.
///
/// Exact and case-sensitive: queue_log holds each name exactly as it was
/// configured or given to `AddQueueMember`. Built by
/// [`AgentAliases::new`], which refuses maps that cannot mean what the admin
/// wants: an empty or `NONE` name, or a chain (`a -> b` with `b -> c`), whose
/// result would depend on how often the map is applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentAliases(HashMap<String, String>);

/// Why an alias map is refused; `logged` is the key of the faulty entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentAliasError {
    /// An empty name, as logged or as reported.
    EmptyName {
        /// The key of the entry (empty when the key itself is empty).
        logged: String,
    },
    /// `NONE`, which queue_log writes for "no agent", as logged or as reported.
    NoneName {
        /// The key of the entry.
        logged: String,
    },
    /// The reported name is itself a logged name of the map.
    Chain {
        /// The key of the entry.
        logged: String,
        /// Its reported name, also a key.
        reported: String,
    },
}

impl AgentAliasError {
    /// The logged name (map key) the error is about.
    pub fn logged(&self) -> &str {
        match self {
            Self::EmptyName { logged } | Self::NoneName { logged } | Self::Chain { logged, .. } => logged,
        }
    }
}

impl fmt::Display for AgentAliasError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyName { logged } if logged.is_empty() => f.write_str("agent alias with an empty logged name"),
            Self::EmptyName { logged } => write!(f, "agent alias {logged:?} maps to an empty name"),
            Self::NoneName { logged } => {
                write!(f, "agent alias {logged:?}: NONE means \"no agent\" in queue_log and cannot be aliased")
            }
            Self::Chain { logged, reported } if logged == reported => {
                write!(f, "agent alias {logged:?} maps to itself")
            }
            Self::Chain { logged, reported } => write!(
                f,
                "agent alias {logged:?} maps to {reported:?}, which is itself aliased: \
                 map {logged:?} to the final name"
            ),
        }
    }
}

impl std::error::Error for AgentAliasError {}

impl AgentAliases {
    /// Checks and builds an alias map.
    ///
    /// # Errors
    /// The first faulty entry in key order (see [`AgentAliasError`]).
    pub fn new(map: impl IntoIterator<Item = (String, String)>) -> Result<Self, AgentAliasError> {
        let map: HashMap<String, String> = map.into_iter().collect();
        let mut keys: Vec<&String> = map.keys().collect();
        keys.sort_unstable();
        for logged in keys {
            let reported = &map[logged];
            if logged.is_empty() || reported.is_empty() {
                return Err(AgentAliasError::EmptyName { logged: logged.clone() });
            }
            if logged == NONE || reported == NONE {
                return Err(AgentAliasError::NoneName { logged: logged.clone() });
            }
            if map.contains_key(reported) {
                return Err(AgentAliasError::Chain { logged: logged.clone(), reported: reported.clone() });
            }
        }
        Ok(Self(map))
    }

    /// The name to report for an agent logged as `logged`.
    pub fn resolve<'a>(&'a self, logged: &'a str) -> &'a str {
        self.0.get(logged).map_or(logged, String::as_str)
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of aliases.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Where the last malformed record was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed {
    /// Stream offset of the start of the line or CSV record.
    pub at: u64,
    /// What was wrong; `offset` is relative to `at` (for CSV, to the
    /// record's unquoted fields, laid end to end).
    pub error: ParseError,
}

/// Column positions of a CSV layout.
#[derive(Debug, Clone)]
struct CsvLayout {
    time: usize,
    call_id: Option<usize>,
    queue: Option<usize>,
    agent: Option<usize>,
    event: usize,
    /// `data1`.. columns in order, or the single `data` column.
    data: Vec<usize>,
    /// Whether `data` is the old single pipe-joined column.
    single_data: bool,
}

impl CsvLayout {
    /// `time,callid,queuename,agent,event,data1..data5`.
    fn default_order() -> Self {
        Self {
            time: 0,
            call_id: Some(1),
            queue: Some(2),
            agent: Some(3),
            event: 4,
            data: (5..10).collect(),
            single_data: false,
        }
    }

    /// A layout from header names, if they name at least `time` and `event`.
    fn from_header<'n>(names: impl Iterator<Item = &'n [u8]>) -> Option<Self> {
        let (mut time, mut call_id, mut queue, mut agent, mut event, mut single) = (None, None, None, None, None, None);
        let mut numbered: Vec<(u8, usize)> = Vec::new();
        for (i, raw) in names.enumerate() {
            let name = String::from_utf8_lossy(raw.trim_ascii()).to_ascii_lowercase();
            match name.as_str() {
                "time" => time = Some(i),
                "callid" => call_id = Some(i),
                "queuename" | "queue" => queue = Some(i),
                "agent" => agent = Some(i),
                "event" | "verb" => event = Some(i),
                "data" => single = Some(i),
                n => {
                    if let Some(d) = n.strip_prefix("data").and_then(|d| d.parse::<u8>().ok())
                        && (1..=MAX_DATA_COLUMNS as u8).contains(&d)
                    {
                        numbered.push((d, i));
                    }
                }
            }
        }
        numbered.sort_unstable();
        let (data, single_data) = match (numbered.is_empty(), single) {
            (true, Some(s)) => (vec![s], true),
            _ => (numbered.into_iter().map(|(_, i)| i).collect(), false),
        };
        Some(Self { time: time?, call_id, queue, agent, event: event?, data, single_data })
    }
}

/// Stream state of the CSV form.
#[derive(Debug)]
struct CsvState {
    reader: Reader,
    /// `None` until the first record (header or not) has been seen.
    layout: Option<CsvLayout>,
    out: Vec<u8>,
    ends: Vec<usize>,
}

/// Outcome of mapping one record.
enum Mapped {
    Event { kind: EventKind, leg_id: String, call_scoped: bool },
    Informational,
    Unknown,
    Malformed,
}

/// Turns a queue_log byte stream into [`FeedEvent`]s.
///
/// Two ways to drive it:
///
/// - a whole file in memory (the CLI): [`QueueLogMapper::map_all`];
/// - a file being tailed (the agent): keep a buffer of unconsumed bytes, call
///   [`push`](QueueLogMapper::push) after each read, drop the bytes it says
///   it consumed, and call [`finish`](QueueLogMapper::finish) at the end of
///   the input. Only complete lines (CSV: records) are consumed, so
///   [`offset`](QueueLogMapper::offset) is always a record boundary covering
///   exactly the events returned so far: store it with them as the checkpoint.
///
/// ```no_run
/// use callkpi_feeds::queue_log::{QueueLogConfig, QueueLogMapper};
///
/// let mut mapper = QueueLogMapper::new(QueueLogConfig::default());
/// let mut pending: Vec<u8> = Vec::new();
/// let mut events = Vec::new();
/// # let chunks: Vec<Vec<u8>> = Vec::new();
/// for chunk in chunks {
///     pending.extend_from_slice(&chunk);
///     let consumed = mapper.push(&pending, &mut events);
///     pending.drain(..consumed);
///     // spool `events`, with `mapper.offset()` as the checkpoint
///     events.clear();
/// }
/// mapper.finish(&pending, &mut events);
/// ```
#[derive(Debug)]
pub struct QueueLogMapper {
    config: QueueLogConfig,
    form: Option<InputForm>,
    csv: Option<CsvState>,
    unparsed: Unparsed,
    last_malformed: Option<Malformed>,
    /// Stream offset of the first byte not consumed yet.
    offset: u64,
    /// Dialled number and trunk of open `OUTDIAL`s, by call id.
    outdials: HashMap<String, (String, Option<String>)>,
}

impl QueueLogMapper {
    /// A mapper at the start of a stream.
    pub fn new(config: QueueLogConfig) -> Self {
        Self {
            form: config.form,
            config,
            csv: None,
            unparsed: Unparsed::default(),
            last_malformed: None,
            offset: 0,
            outdials: HashMap::new(),
        }
    }

    /// Sets the stream offset of the first byte pushed (when resuming at a
    /// checkpoint), so that [`offset`](Self::offset) and
    /// [`last_malformed`](Self::last_malformed) stay absolute.
    #[must_use]
    pub fn starting_at(mut self, offset: u64) -> Self {
        self.offset = offset;
        self
    }

    /// Maps every complete line (CSV: record) at the start of `buf`, appending
    /// the events to `events`, and returns the number of bytes consumed. The
    /// bytes after that belong to an incomplete line: present them again,
    /// followed by more input, on the next call.
    pub fn push(&mut self, buf: &[u8], events: &mut Vec<FeedEvent>) -> usize {
        self.run(buf, events, false)
    }

    /// Like [`push`](Self::push), then treats the rest of `buf` as the last
    /// line of the input even without a terminator. Consumes all of `buf`.
    pub fn finish(&mut self, buf: &[u8], events: &mut Vec<FeedEvent>) -> usize {
        self.run(buf, events, true)
    }

    /// Maps a whole input held in memory.
    pub fn map_all(&mut self, input: &[u8]) -> Vec<FeedEvent> {
        let mut events = Vec::with_capacity(input.len() / 64);
        self.finish(input, &mut events);
        events
    }

    /// Stream offset up to which input has been consumed: a record boundary,
    /// and a checkpoint for the events returned so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The input form, once known.
    pub fn form(&self) -> Option<InputForm> {
        self.form
    }

    /// Records not turned into events so far.
    pub fn unparsed(&self) -> &Unparsed {
        &self.unparsed
    }

    /// The last malformed record seen, for a log line with context.
    pub fn last_malformed(&self) -> Option<Malformed> {
        self.last_malformed
    }

    fn run(&mut self, buf: &[u8], events: &mut Vec<FeedEvent>, eof: bool) -> usize {
        let form = match self.form {
            Some(form) => form,
            None => match memchr::memchr(b'\n', buf) {
                Some(nl) => detect_form(&buf[..nl]),
                None if eof && !buf.is_empty() => detect_form(buf),
                None => return if eof { buf.len() } else { 0 },
            },
        };
        self.form = Some(form);
        let consumed = match form {
            InputForm::File => self.run_file(buf, events, eof),
            InputForm::Csv => self.run_csv(buf, events, eof),
        };
        self.offset += consumed as u64;
        consumed
    }

    fn run_file(&mut self, buf: &[u8], events: &mut Vec<FeedEvent>, eof: bool) -> usize {
        let mut pos = 0;
        while pos < buf.len() {
            let rest = &buf[pos..];
            let (line, len) = match memchr::memchr(b'\n', rest) {
                Some(nl) => (&rest[..nl], nl + 1),
                None if eof => (rest, rest.len()),
                None => break,
            };
            // A UTF-8 BOM may open the file.
            let (line, bom) = match line.strip_prefix(b"\xef\xbb\xbf") {
                Some(l) if self.offset == 0 && pos == 0 => (l, 3),
                _ => (line, 0),
            };
            match parse_record(line) {
                Ok(rec) => self.map(&rec, pos, events),
                Err(e) if e.kind == ParseErrorKind::Blank => {}
                // Asterisk writes member and queue names as configured, so a
                // Latin-1 queues.conf or realtime table gives Latin-1 lines.
                // Such a line is still a record: read it as ISO-8859-1 rather
                // than lose, say, the CONNECT of a call.
                Err(e) if e.kind == ParseErrorKind::InvalidUtf8 => {
                    let text = latin1(line);
                    match parse_record(text.as_bytes()) {
                        Ok(rec) => self.map(&rec, pos, events),
                        Err(mut error) => {
                            error.offset += bom;
                            self.malformed(pos, error);
                        }
                    }
                }
                Err(mut error) => {
                    error.offset += bom;
                    self.malformed(pos, error);
                }
            }
            pos += len;
        }
        pos
    }

    fn run_csv(&mut self, buf: &[u8], events: &mut Vec<FeedEvent>, eof: bool) -> usize {
        let mut csv = self.csv.take().unwrap_or_else(|| CsvState {
            reader: Reader::new(),
            layout: None,
            out: vec![0; 1024],
            ends: vec![0; 16],
        });
        let mut pos = 0;
        let (mut nin, mut nout, mut nend) = (0, 0, 0);
        loop {
            let input = &buf[pos + nin..];
            if input.is_empty() && (!eof || pos == buf.len()) {
                break;
            }
            let (res, i, o, e) = csv.reader.read_record(input, &mut csv.out[nout..], &mut csv.ends[nend..]);
            nin += i;
            nout += o;
            nend += e;
            match res {
                ReadRecordResult::OutputFull => {
                    let len = csv.out.len() * 2;
                    csv.out.resize(len, 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    let len = csv.ends.len() * 2;
                    csv.ends.resize(len, 0);
                }
                ReadRecordResult::InputEmpty if input.is_empty() => break,
                ReadRecordResult::InputEmpty if !eof => break,
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::Record => {
                    self.csv_record(&mut csv, nout, nend, pos, events);
                    csv.reader.reset();
                    pos += nin;
                    (nin, nout, nend) = (0, 0, 0);
                }
                ReadRecordResult::End => {
                    pos = buf.len();
                    break;
                }
            }
        }
        // Bytes of an incomplete record are read again next time.
        csv.reader.reset();
        self.csv = Some(csv);
        if eof { buf.len() } else { pos }
    }

    fn csv_record(&mut self, csv: &mut CsvState, nout: usize, nend: usize, pos: usize, events: &mut Vec<FeedEvent>) {
        let out = &csv.out[..nout];
        let ends = &csv.ends[..nend];
        let field = |i: usize| -> Option<&[u8]> {
            let end = *ends.get(i)?;
            let start = if i == 0 { 0 } else { ends[i - 1] };
            out.get(start..end)
        };
        if nend <= 1 && out.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        if csv.layout.is_none() {
            let header = CsvLayout::from_header((0..nend).filter_map(field));
            let is_header = header.is_some();
            csv.layout = Some(header.unwrap_or_else(CsvLayout::default_order));
            if is_header {
                return;
            }
        }
        let Some(layout) = csv.layout.as_ref() else { return };
        // Not UTF-8: read the fields as ISO-8859-1, as for the file form.
        let (recoded, recoded_ends);
        let (text, ends) = match std::str::from_utf8(out) {
            Ok(text) => (text, ends),
            Err(_) => {
                let mut text = String::with_capacity(out.len() * 2);
                let mut new_ends = Vec::with_capacity(nend);
                for i in 0..nend {
                    text.push_str(&latin1(field(i).unwrap_or_default()));
                    new_ends.push(text.len());
                }
                (recoded, recoded_ends) = (text, new_ends);
                (recoded.as_str(), recoded_ends.as_slice())
            }
        };
        let column = |i: Option<usize>| -> &str {
            let Some(i) = i.filter(|&i| i < nend) else { return "" };
            let start = if i == 0 { 0 } else { ends[i - 1] };
            match text.get(start..ends[i]) {
                Some("\\N") | None => "",
                Some(s) => s,
            }
        };
        let time_text = column(Some(layout.time)).trim();
        let Some(time) = parse_csv_time(time_text, &self.config.time_zone) else {
            return self.malformed(pos, ParseError { kind: ParseErrorKind::BadTime, offset: 0 });
        };
        let verb = column(Some(layout.event)).trim();
        if let Err(error) = check_verb(verb, 0) {
            return self.malformed(pos, error);
        }
        let mut cols = [""; MAX_DATA_COLUMNS];
        let mut n = 0;
        for (slot, &i) in cols.iter_mut().zip(&layout.data) {
            *slot = column(Some(i));
            n += 1;
        }
        let data = if layout.single_data { Data::piped(cols[0]) } else { Data::columns(&cols[..n]) };
        let rec = QueueLogRecord {
            time,
            call_id: column(layout.call_id),
            queue: column(layout.queue),
            agent: column(layout.agent),
            verb,
            data,
        };
        self.map(&rec, pos, events);
    }

    fn malformed(&mut self, pos: usize, error: ParseError) {
        self.unparsed.malformed += 1;
        self.last_malformed = Some(Malformed { at: self.offset + pos as u64, error });
    }

    fn map(&mut self, rec: &QueueLogRecord<'_>, pos: usize, events: &mut Vec<FeedEvent>) {
        // Aliasing the record's agent field, before any verb looks at it,
        // renames the agent in every event the verb makes.
        let aliased;
        let rec = match self.config.agent_aliases.0.get(rec.agent) {
            Some(reported) => {
                aliased = QueueLogRecord { agent: reported.as_str(), ..*rec };
                &aliased
            }
            None => rec,
        };
        match map_record(rec, &mut self.outdials) {
            Mapped::Event { kind, leg_id, call_scoped } => events.push(FeedEvent {
                call_id: if call_scoped { none_empty(rec.call_id).to_owned() } else { String::new() },
                leg_id,
                source_time: Some(rec.time),
                kind,
            }),
            Mapped::Informational => {}
            Mapped::Unknown => self.unparsed.count(rec.verb),
            Mapped::Malformed => self.malformed(pos, ParseError { kind: ParseErrorKind::BadData, offset: 0 }),
        }
    }
}

/// ISO-8859-1 bytes as text: every byte is the code point of the same value.
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// The form a first line announces.
fn detect_form(first_line: &[u8]) -> InputForm {
    let line = first_line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(first_line);
    if memchr::memchr(b'|', line).is_some() {
        return InputForm::File;
    }
    fn unquote(n: &[u8]) -> &[u8] {
        let n = n.trim_ascii();
        n.strip_prefix(b"\"").and_then(|n| n.strip_suffix(b"\"")).unwrap_or(n)
    }
    match CsvLayout::from_header(line.split(|&b| b == b',').map(unquote)) {
        Some(_) => InputForm::Csv,
        None => InputForm::File,
    }
}

// === verb mapping ===

/// `NONE` reads as empty.
fn none_empty(s: &str) -> &str {
    if s == NONE { "" } else { s }
}

/// `NONE` or empty reads as `None`.
fn opt(s: &str) -> Option<String> {
    match none_empty(s) {
        "" => None,
        s => Some(s.to_owned()),
    }
}

/// Seconds as logged, in ms.
fn secs_ms(s: &str) -> Option<u64> {
    s.parse::<u64>().ok()?.checked_mul(1000)
}

fn ms(s: &str) -> Option<u64> {
    s.parse().ok()
}

/// Data fields without the trailing empty ones (CSV rows pad with them).
fn trimmed_fields<'a>(data: &Data<'a>) -> Vec<&'a str> {
    let mut fields: Vec<&str> = data.iter().collect();
    while fields.last() == Some(&"") {
        fields.pop();
    }
    fields
}

fn map_record(rec: &QueueLogRecord<'_>, outdials: &mut HashMap<String, (String, Option<String>)>) -> Mapped {
    let d = |i: usize| rec.data.get(i);
    let queue = || none_empty(rec.queue).to_owned();
    let agent = || none_empty(rec.agent).to_owned();
    let event = |kind: EventKind| Mapped::Event { kind, leg_id: String::new(), call_scoped: true };
    let leave = |reason: LeaveReason, wait: Option<&str>| {
        event(EventKind::QueueLeave { queue: queue(), reason, reported_wait_ms: wait.and_then(secs_ms) })
    };
    let missed = |reason: MissReason, ring: Option<u64>| {
        event(EventKind::OfferMissed { queue: opt(rec.queue), agent: agent(), reason, reported_ring_ms: ring })
    };
    let agent_state = |state: AgentState, queue: Option<String>| match opt(rec.agent) {
        Some(agent) => Mapped::Event {
            kind: EventKind::AgentState { agent, queue, state },
            leg_id: String::new(),
            call_scoped: false,
        },
        None => Mapped::Malformed,
    };
    match rec.verb {
        "ENTERQUEUE" => {
            let fields = trimmed_fields(&rec.data);
            // url|callerid|origposition[|calleridname]: Asterisk appends the
            // caller's name when queues.conf sets `log_cidname` ("Queue Logs"
            // reference). With four or more fields and a number in the third,
            // the third is the position and the rest the name; otherwise the
            // last field is the position and a callerid holding `|` keeps its
            // pieces.
            let named = fields.len() >= 4 && fields[2].parse::<u32>().is_ok();
            let (caller, position) = match fields.len() {
                0 | 1 => (String::new(), None),
                2 => (fields[1].to_owned(), None),
                _ if named => (fields[1].to_owned(), fields[2].parse().ok()),
                n => (fields[1..n - 1].join("|"), fields[n - 1].parse().ok()),
            };
            let caller = Some(caller).filter(|c| !c.is_empty());
            event(EventKind::QueueJoin { queue: queue(), caller, position })
        }
        "CONNECT" => Mapped::Event {
            kind: EventKind::Answered {
                queue: opt(rec.queue),
                agent: agent(),
                reported_wait_ms: secs_ms(d(0)),
                reported_ring_ms: secs_ms(d(2)),
            },
            leg_id: d(1).to_owned(),
            call_scoped: true,
        },
        verb @ ("COMPLETEAGENT" | "COMPLETECALLER") => event(EventKind::Hangup {
            queue: opt(rec.queue),
            agent: opt(rec.agent),
            by: if verb == "COMPLETEAGENT" { HangupBy::Agent } else { HangupBy::Caller },
            cause: None,
            reported_talk_ms: secs_ms(d(1)),
        }),
        "ABANDON" => leave(LeaveReason::Abandon, Some(d(2))),
        "EXITWITHTIMEOUT" => leave(LeaveReason::Timeout, Some(d(2))),
        "EXITWITHKEY" => leave(LeaveReason::ExitWithKey, Some(d(3))),
        "EXITEMPTY" | "LEAVEEMPTY" => leave(LeaveReason::LeaveEmpty, Some(d(2))),
        "FULL" => leave(LeaveReason::Full, None),
        "JOINEMPTY" => leave(LeaveReason::JoinEmpty, None),
        "RINGNOANSWER" => missed(MissReason::NoAnswer, ms(d(0))),
        "RINGCANCELED" => missed(MissReason::Canceled, ms(d(0))),
        "AGENTDUMP" => missed(MissReason::Rejected, None),
        "BLINDTRANSFER" | "TRANSFER" => {
            let (exten, context) = (d(0), d(1));
            let target = if context.is_empty() { exten.to_owned() } else { format!("{exten}@{context}") };
            event(EventKind::Transfer {
                kind: TransferKind::Blind,
                queue: opt(rec.queue),
                agent: opt(rec.agent),
                target,
                reported_talk_ms: secs_ms(d(3)),
            })
        }
        "ATTENDEDTRANSFER" => {
            let fields = trimmed_fields(&rec.data);
            let Some((&method, rest)) = fields.split_first() else { return Mapped::Malformed };
            // method|key...|holdtime|calltime|origposition
            let (key, talk) = match rest.len() {
                n if n >= 4 => (rest[..n - 3].join("|"), secs_ms(rest[n - 2])),
                _ => (rest.join("|"), None),
            };
            let target = if key.is_empty() { method.to_owned() } else { format!("{method}:{key}") };
            event(EventKind::Transfer {
                kind: TransferKind::Attended,
                queue: opt(rec.queue),
                agent: opt(rec.agent),
                target,
                reported_talk_ms: talk,
            })
        }
        // A member added paused (AMI QueueAdd with `Paused: true`, or the
        // dialplan's equivalent) is logged in but takes no calls: counting it as
        // available would inflate available time until its first UNPAUSE.
        "ADDMEMBER" if d(0) == "PAUSED" => agent_state(AgentState::Paused { reason: String::new() }, opt(rec.queue)),
        "ADDMEMBER" => agent_state(AgentState::Login, opt(rec.queue)),
        "REMOVEMEMBER" => agent_state(AgentState::Logout, opt(rec.queue)),
        "AGENTLOGIN" | "AGENTCALLBACKLOGIN" => agent_state(AgentState::Login, opt(rec.queue)),
        "AGENTLOGOFF" | "AGENTCALLBACKLOGOFF" => agent_state(AgentState::Logout, opt(rec.queue)),
        "PAUSE" => agent_state(AgentState::Paused { reason: d(0).to_owned() }, opt(rec.queue)),
        "PAUSEALL" => agent_state(AgentState::Paused { reason: d(0).to_owned() }, None),
        "UNPAUSE" => agent_state(AgentState::Available, opt(rec.queue)),
        "UNPAUSEALL" => agent_state(AgentState::Available, None),
        "QUEUESTART" => Mapped::Event { kind: EventKind::QueueStart, leg_id: String::new(), call_scoped: false },
        "DID" => match d(0) {
            "" => Mapped::Malformed,
            did => event(EventKind::CallOffered {
                direction: Direction::Inbound,
                caller: String::new(),
                called: did.to_owned(),
                trunk: None,
            }),
        },
        // "A call was answered by an agent, but the call was dropped because
        // the channels were not compatible" (Queue Logs): app_queue hangs the
        // member up and returns, so the caller's stay in the queue ends here,
        // neither answered nor abandoned by the caller. Some versions log an
        // ABANDON after it, which then gives the reason.
        "SYSCOMPAT" => leave(LeaveReason::Unspecified, None),
        "CONFIGRELOAD" | "INFO" => Mapped::Informational,
        "SURVEY" => match survey(rec) {
            Some(kind) => event(kind),
            None => Mapped::Malformed,
        },
        "DISPOSITION" => {
            let resolved = match d(1).to_ascii_lowercase().as_str() {
                "1" | "yes" | "true" => true,
                "0" | "no" | "false" => false,
                _ => return Mapped::Malformed,
            };
            event(EventKind::Disposition { resolved, code: d(0).to_owned(), agent: opt(rec.agent) })
        }
        "OUTDIAL" => {
            let called = d(0);
            if called.is_empty() {
                return Mapped::Malformed;
            }
            let trunk = opt(d(1));
            let call_id = none_empty(rec.call_id);
            if !call_id.is_empty() {
                if outdials.len() >= MAX_OPEN_OUTDIALS {
                    outdials.clear();
                }
                outdials.insert(call_id.to_owned(), (called.to_owned(), trunk.clone()));
            }
            event(EventKind::CallOffered {
                direction: Direction::Outbound,
                caller: agent(),
                called: called.to_owned(),
                trunk,
            })
        }
        verb @ ("OUTRESULT" | "OUTANSWER") => {
            let (outcome, cause, number) = if verb == "OUTANSWER" {
                (Some(DialOutcome::Answered), None, d(0))
            } else {
                (dial_outcome(d(0)), d(1).parse::<u16>().ok(), d(2))
            };
            let Some(outcome) = outcome else { return Mapped::Malformed };
            let open = outdials.remove(none_empty(rec.call_id));
            let (dialled, trunk) = match (number, open) {
                ("", Some((dialled, trunk))) => (dialled, trunk),
                (number, open) => (number.to_owned(), open.and_then(|(_, trunk)| trunk)),
            };
            event(EventKind::DialResult { agent: opt(rec.agent), dialled, trunk, outcome, cause })
        }
        verb @ ("WRAPUPSTART" | "WRAPUPEND") => {
            let Some(agent) = opt(rec.agent) else { return Mapped::Malformed };
            let queue = opt(rec.queue);
            event(if verb == "WRAPUPSTART" {
                EventKind::WrapUpStart { agent, queue }
            } else {
                EventKind::WrapUpEnd { agent, queue }
            })
        }
        _ => Mapped::Unknown,
    }
}

/// Asterisk's `DIALSTATUS`.
fn dial_outcome(status: &str) -> Option<DialOutcome> {
    Some(match status.to_ascii_uppercase().as_str() {
        "ANSWER" | "ANSWERED" => DialOutcome::Answered,
        "BUSY" => DialOutcome::Busy,
        "NOANSWER" | "NO ANSWER" => DialOutcome::NoAnswer,
        "CONGESTION" => DialOutcome::Congestion,
        "CHANUNAVAIL" => DialOutcome::Unavailable,
        "CANCEL" => DialOutcome::AgentAbandoned,
        "FAILED" | "INVALIDARGS" | "DONTCALL" | "TORTURE" => DialOutcome::Failed,
        _ => return None,
    })
}

/// `SURVEY`: score|metric|min|max.
fn survey(rec: &QueueLogRecord<'_>) -> Option<EventKind> {
    let score: f64 = rec.data.get(0).trim().parse().ok()?;
    let (metric, min, max) = match rec.data.get(1).trim().to_ascii_lowercase().as_str() {
        "" | "csat" => (SurveyMetric::Csat, 1.0, 5.0),
        "nps" => (SurveyMetric::Nps, 0.0, 10.0),
        "ces" => (SurveyMetric::Ces, 1.0, 7.0),
        _ => return None,
    };
    let bound = |i: usize, default: f64| match rec.data.get(i).trim() {
        "" => Some(default),
        s => s.parse::<f64>().ok(),
    };
    let (scale_min, scale_max) = (bound(2, min)?, bound(3, max)?);
    let valid = score.is_finite() && scale_min.is_finite() && scale_max.is_finite() && scale_min < scale_max;
    if !valid || score < scale_min || score > scale_max {
        return None;
    }
    Some(EventKind::SurveyAnswer { metric, score, scale_min, scale_max, queue: opt(rec.queue), agent: opt(rec.agent) })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use callkpi_core::event::NANOS_PER_MS;
    use proptest::prelude::*;

    use super::*;

    const T0: i64 = 1_795_356_691;

    fn mapper() -> QueueLogMapper {
        QueueLogMapper::new(QueueLogConfig::default())
    }

    fn map(input: &str) -> (Vec<FeedEvent>, QueueLogMapper) {
        let mut m = mapper();
        let events = m.map_all(input.as_bytes());
        (events, m)
    }

    /// The one event a single line maps to.
    fn one(line: &str) -> FeedEvent {
        let (mut events, m) = map(line);
        assert_eq!(m.unparsed(), &Unparsed::default(), "{line}");
        assert_eq!(events.len(), 1, "{line}");
        events.remove(0)
    }

    fn kind(line: &str) -> EventKind {
        one(line).kind
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    // --- record parser ---

    #[test]
    fn parse_line_borrows_fields_and_reports_consumed() {
        let buf = b"1795356691|1795356686.1|support|Alice Martin|CONNECT|4|1795356687.2|4\nnext";
        let Ok(Status::Complete { value, consumed }) = parse_line(buf) else { panic!("not complete") };
        assert_eq!(consumed, 70);
        assert_eq!(value.time, T0 * NANOS_PER_SEC);
        assert_eq!(value.call_id, "1795356686.1");
        assert_eq!(value.queue, "support");
        assert_eq!(value.agent, "Alice Martin");
        assert_eq!(value.verb, "CONNECT");
        assert_eq!(value.data.iter().collect::<Vec<_>>(), ["4", "1795356687.2", "4"]);
        assert_eq!(value.data.get(1), "1795356687.2");
        assert_eq!(value.data.get(7), "");
        assert_eq!(parse_line(b"1795356691|x|q|a|CONN"), Ok(Status::Partial));
        assert_eq!(parse_line(b""), Ok(Status::Partial));
    }

    #[test]
    fn parse_record_handles_absent_data_crlf_and_fractional_epochs() {
        let rec = parse_record(b"1795356677.25|NONE|NONE|NONE|QUEUESTART\r").expect("record");
        assert_eq!(rec.time, 1_795_356_677 * NANOS_PER_SEC + 250 * NANOS_PER_MS);
        assert_eq!(rec.verb, "QUEUESTART");
        assert!(rec.data.is_empty());
        assert_eq!(rec.data.len(), 0);
        let rec = parse_record(b"1795356677.123456789999|NONE|NONE|NONE|QUEUESTART|").expect("record");
        assert_eq!(rec.time, 1_795_356_677_123_456_789);
        assert!(rec.data.is_empty());
    }

    #[test]
    fn parse_errors_carry_kind_and_offset() {
        let err = |line: &[u8]| parse_record(line).expect_err("malformed");
        assert_eq!(err(b"17953x|a|b|c|CONNECT").kind, ParseErrorKind::BadTime);
        assert_eq!(err(b"|a|b|c|CONNECT").kind, ParseErrorKind::BadTime);
        assert_eq!(err(b"-5|a|b|c|CONNECT").kind, ParseErrorKind::BadTime);
        assert_eq!(err(b"99999999999999999999|a|b|c|CONNECT").kind, ParseErrorKind::BadTime);
        assert_eq!(err(b"1795356691|a|b|c"), ParseError { kind: ParseErrorKind::TooFewFields, offset: 16 });
        assert_eq!(err(b"1795356691|a|b|\xff|X"), ParseError { kind: ParseErrorKind::InvalidUtf8, offset: 15 });
        assert_eq!(err(b"1795356691|a|b|c||x"), ParseError { kind: ParseErrorKind::BadVerb, offset: 17 });
        assert_eq!(err(b"1795356691|a|b|c|NOT A VERB|x").kind, ParseErrorKind::BadVerb);
        assert_eq!(err(b"  \r").kind, ParseErrorKind::Blank);
        assert_eq!(
            parse_line(b"bad\n").expect_err("malformed").to_string(),
            "queue_log: fewer than five fields at byte 3"
        );
    }

    // --- verb mapping, Asterisk's own verbs ---

    #[test]
    fn enterqueue_maps_to_queue_join() {
        let ev = one("1795356687|1795356686.1|support|NONE|ENTERQUEUE||0639987952|1\n");
        assert_eq!(ev.call_id, "1795356686.1");
        assert_eq!(ev.leg_id, "");
        assert_eq!(ev.source_time, Some(1_795_356_687 * NANOS_PER_SEC));
        assert_eq!(
            ev.kind,
            EventKind::QueueJoin { queue: "support".into(), caller: s("0639987952"), position: Some(1) }
        );
        assert_eq!(
            kind("1|c|sales|NONE|ENTERQUEUE|||3"),
            EventKind::QueueJoin { queue: "sales".into(), caller: None, position: Some(3) }
        );
        // log_cidname = yes appends the caller's name after the position.
        assert_eq!(
            kind("1|c|sales|NONE|ENTERQUEUE||0612345678|2|Jean Dupont"),
            EventKind::QueueJoin { queue: "sales".into(), caller: s("0612345678"), position: Some(2) }
        );
        assert_eq!(
            kind("1|c|sales|NONE|ENTERQUEUE||0612345678|2|Dupont|Jean"),
            EventKind::QueueJoin { queue: "sales".into(), caller: s("0612345678"), position: Some(2) }
        );
        // A caller id with a pipe keeps its pieces; the position is the last field.
        assert_eq!(
            kind("1|c|sales|NONE|ENTERQUEUE||Pat|Pipe|2"),
            EventKind::QueueJoin { queue: "sales".into(), caller: s("Pat|Pipe"), position: Some(2) }
        );
    }

    #[test]
    fn connect_maps_to_answered_with_the_member_leg() {
        let ev = one("1795356691|1795356686.1|support|Alice Martin|CONNECT|4|1795356687.2|3");
        assert_eq!(ev.call_id, "1795356686.1");
        assert_eq!(ev.leg_id, "1795356687.2");
        assert_eq!(
            ev.kind,
            EventKind::Answered {
                queue: s("support"),
                agent: "Alice Martin".into(),
                reported_wait_ms: Some(4000),
                reported_ring_ms: Some(3000),
            }
        );
    }

    #[test]
    fn completes_map_to_hangups() {
        let hangup = |by, talk| EventKind::Hangup {
            queue: s("sales"),
            agent: s("Dmitri Petrov"),
            by,
            cause: None,
            reported_talk_ms: talk,
        };
        assert_eq!(kind("1|c|sales|Dmitri Petrov|COMPLETEAGENT|4|24|1"), hangup(HangupBy::Agent, Some(24_000)));
        assert_eq!(kind("1|c|sales|Dmitri Petrov|COMPLETECALLER|16|11|1"), hangup(HangupBy::Caller, Some(11_000)));
        assert_eq!(kind("1|c|sales|Dmitri Petrov|COMPLETECALLER|16|-1|1"), hangup(HangupBy::Caller, None));
    }

    #[test]
    fn exits_map_to_queue_leaves_with_asterisk_data_layouts() {
        let leave = |reason, wait| EventKind::QueueLeave { queue: "support".into(), reason, reported_wait_ms: wait };
        let cases = [
            ("ABANDON|1|4|23", leave(LeaveReason::Abandon, Some(23_000))),
            ("EXITWITHTIMEOUT|2|5|30", leave(LeaveReason::Timeout, Some(30_000))),
            ("EXITWITHTIMEOUT|2", leave(LeaveReason::Timeout, None)),
            ("EXITWITHKEY|5|1|3|17", leave(LeaveReason::ExitWithKey, Some(17_000))),
            ("EXITWITHKEY|5|1", leave(LeaveReason::ExitWithKey, None)),
            ("EXITEMPTY|1|2|9", leave(LeaveReason::LeaveEmpty, Some(9_000))),
            ("LEAVEEMPTY|1|2|8", leave(LeaveReason::LeaveEmpty, Some(8_000))),
            ("LEAVEEMPTY", leave(LeaveReason::LeaveEmpty, None)),
            ("FULL||0611|1", leave(LeaveReason::Full, None)),
            ("JOINEMPTY||0611|1", leave(LeaveReason::JoinEmpty, None)),
        ];
        for (tail, want) in cases {
            let ev = one(&format!("1795356732|1795356708.23|support|NONE|{tail}\n"));
            assert_eq!(ev.kind, want, "{tail}");
            assert_eq!(ev.call_id, "1795356708.23");
        }
    }

    #[test]
    fn ring_verbs_map_to_missed_offers_in_milliseconds() {
        let missed = |reason, ring| EventKind::OfferMissed {
            queue: s("support"),
            agent: "Carla Jiménez".into(),
            reason,
            reported_ring_ms: ring,
        };
        assert_eq!(kind("1|c|support|Carla Jiménez|RINGNOANSWER|10000"), missed(MissReason::NoAnswer, Some(10_000)));
        assert_eq!(kind("1|c|support|Carla Jiménez|RINGCANCELED|528"), missed(MissReason::Canceled, Some(528)));
        assert_eq!(kind("1|c|support|Carla Jiménez|AGENTDUMP"), missed(MissReason::Rejected, None));
    }

    #[test]
    fn transfers_map_with_their_targets() {
        let blind = |talk| EventKind::Transfer {
            kind: TransferKind::Blind,
            queue: s("support"),
            agent: s("Alice Martin"),
            target: "700@transfer".into(),
            reported_talk_ms: talk,
        };
        assert_eq!(kind("1|c|support|Alice Martin|BLINDTRANSFER|700|transfer|34|17|3"), blind(Some(17_000)));
        assert_eq!(kind("1|c|support|Alice Martin|TRANSFER|700|transfer|34|17|3"), blind(Some(17_000)));
        let attended = |target: &str, talk| EventKind::Transfer {
            kind: TransferKind::Attended,
            queue: s("support"),
            agent: s("Bob Nguyen"),
            target: target.into(),
            reported_talk_ms: talk,
        };
        assert_eq!(
            kind("1|c|support|Bob Nguyen|ATTENDEDTRANSFER|BRIDGE|431e145d-3d0e-40d4-88c0-4f9b38092371|3|28|2"),
            attended("BRIDGE:431e145d-3d0e-40d4-88c0-4f9b38092371", Some(28_000))
        );
        assert_eq!(
            kind("1|c|support|Bob Nguyen|ATTENDEDTRANSFER|APP|Voicemail|5|40|1"),
            attended("APP:Voicemail", Some(40_000))
        );
        assert_eq!(
            kind("1|c|support|Bob Nguyen|ATTENDEDTRANSFER|LINK|Local/1@a-1;1|Local/2@a-2;2|5|41|1"),
            attended("LINK:Local/1@a-1;1|Local/2@a-2;2", Some(41_000))
        );
        assert_eq!(kind("1|c|support|Bob Nguyen|ATTENDEDTRANSFER|BRIDGE|x"), attended("BRIDGE:x", None));
    }

    #[test]
    fn member_verbs_map_to_agent_states_without_a_call() {
        let state = |line: &str| {
            let ev = one(line);
            assert_eq!(ev.call_id, "", "{line}");
            ev.kind
        };
        let agent_state = |queue: Option<&str>, state| EventKind::AgentState {
            agent: "Carla Jiménez".into(),
            queue: queue.map(str::to_owned),
            state,
        };
        let paused = |reason: &str| AgentState::Paused { reason: reason.into() };
        let cases = [
            ("MANAGER|support|Carla Jiménez|ADDMEMBER|", agent_state(Some("support"), AgentState::Login)),
            ("MANAGER|support|Carla Jiménez|ADDMEMBER|PAUSED", agent_state(Some("support"), paused(""))),
            ("MANAGER|support|Carla Jiménez|REMOVEMEMBER|", agent_state(Some("support"), AgentState::Logout)),
            ("NONE|NONE|Carla Jiménez|AGENTLOGIN|Local/1003@agents", agent_state(None, AgentState::Login)),
            (
                "NONE|support|Carla Jiménez|AGENTLOGIN|Local/1003@agents",
                agent_state(Some("support"), AgentState::Login),
            ),
            ("NONE|NONE|Carla Jiménez|AGENTLOGOFF|Local/1003@agents|240", agent_state(None, AgentState::Logout)),
            ("NONE|NONE|Carla Jiménez|AGENTCALLBACKLOGIN|1003@agents", agent_state(None, AgentState::Login)),
            ("NONE|support|Carla Jiménez|PAUSE|lunch", agent_state(Some("support"), paused("lunch"))),
            ("NONE|support|Carla Jiménez|PAUSE|", agent_state(Some("support"), paused(""))),
            ("NONE|NONE|Carla Jiménez|PAUSEALL|break", agent_state(None, paused("break"))),
            ("NONE|support|Carla Jiménez|UNPAUSE|", agent_state(Some("support"), AgentState::Available)),
            ("NONE|support|Carla Jiménez|UNPAUSEALL|", agent_state(None, AgentState::Available)),
        ];
        for (tail, want) in cases {
            assert_eq!(state(&format!("1795356684|{tail}")), want, "{tail}");
        }
        // An agent-state verb without agent cannot say whose state changed.
        let (events, m) = map("1|NONE|support|NONE|PAUSE|x\n");
        assert!(events.is_empty());
        assert_eq!(m.unparsed().malformed, 1);
    }

    fn aliases(pairs: &[(&str, &str)]) -> Result<AgentAliases, AgentAliasError> {
        AgentAliases::new(pairs.iter().map(|&(a, b)| (a.to_owned(), b.to_owned())))
    }

    /// The agent field of each event, in order (`None`: the event has none).
    fn agents_of(events: &[FeedEvent]) -> Vec<Option<String>> {
        events
            .iter()
            .map(|e| match &e.kind {
                EventKind::AgentState { agent, .. }
                | EventKind::Answered { agent, .. }
                | EventKind::OfferMissed { agent, .. }
                | EventKind::WrapUpStart { agent, .. }
                | EventKind::WrapUpEnd { agent, .. } => Some(agent.clone()),
                EventKind::Hangup { agent, .. }
                | EventKind::Transfer { agent, .. }
                | EventKind::SurveyAnswer { agent, .. }
                | EventKind::Disposition { agent, .. }
                | EventKind::DialResult { agent, .. } => agent.clone(),
                EventKind::CallOffered { caller, .. } => Some(caller.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn agent_aliases_rename_the_agent_of_every_verb_exactly() {
        let input = "\
1|MANAGER|support|PJSIP/1001|ADDMEMBER|
2|NONE|support|Alice|PAUSE|lunch
3|NONE|NONE|PJSIP/1001|PAUSEALL|
4|c1|support|PJSIP/1001|RINGNOANSWER|15000
5|c1|support|PJSIP/1001|CONNECT|4|c2|3
6|c1|support|PJSIP/1001|COMPLETECALLER|4|60|1
7|c1|support|PJSIP/1001|SURVEY|5|csat
8|c1|support|PJSIP/1001|DISPOSITION|sale|1
9|c1|support|PJSIP/1001|WRAPUPSTART|
10|c3|NONE|PJSIP/1001|OUTDIAL|0612345678|trunk1
11|c3|NONE|PJSIP/1001|OUTRESULT|BUSY|17
12|c1|support|pjsip/1001|CONNECT|4|c2|3
13|MANAGER|support|PJSIP/1001|REMOVEMEMBER|
";
        let plain = QueueLogMapper::new(QueueLogConfig::default()).map_all(input.as_bytes());
        let config =
            QueueLogConfig { agent_aliases: aliases(&[("PJSIP/1001", "Alice")]).expect("valid"), ..Default::default() };
        let mut m = QueueLogMapper::new(config);
        let aliased = m.map_all(input.as_bytes());
        assert_eq!(m.unparsed(), &Unparsed::default());
        let a = || Some("Alice".to_owned());
        // Exact and case-sensitive: `pjsip/1001` is another logged name.
        let expected = [a(), a(), a(), a(), a(), a(), a(), a(), a(), a(), a(), s("pjsip/1001"), a()];
        assert_eq!(agents_of(&aliased), expected);
        // Only the agent changes: same events otherwise.
        assert_eq!(plain.len(), aliased.len());
        assert_eq!(agents_of(&plain)[0], s("PJSIP/1001"));
        assert_eq!(agents_of(&plain)[1], a());
        for (p, q) in plain.iter().zip(&aliased) {
            assert_eq!((&p.call_id, &p.leg_id, p.source_time), (&q.call_id, &q.leg_id, q.source_time));
        }
        // The CSV form goes through the same path.
        let csv = "time,callid,queuename,agent,event,data1\n1,MANAGER,support,PJSIP/1001,ADDMEMBER,\n";
        let config =
            QueueLogConfig { agent_aliases: aliases(&[("PJSIP/1001", "Alice")]).expect("valid"), ..Default::default() };
        assert_eq!(agents_of(&QueueLogMapper::new(config).map_all(csv.as_bytes())), [a()]);
    }

    #[test]
    fn agent_alias_maps_are_checked() {
        let ok = aliases(&[("PJSIP/1001", "Alice"), ("Local/1002@agents/n", "Bob"), ("PJSIP/1003", "Alice")])
            .expect("two interfaces may name one person");
        assert_eq!((ok.len(), ok.resolve("PJSIP/1003"), ok.resolve("Bob")), (3, "Alice", "Bob"));
        assert!(AgentAliases::default().is_empty());
        assert_eq!(aliases(&[("", "Alice")]), Err(AgentAliasError::EmptyName { logged: String::new() }));
        assert_eq!(aliases(&[("PJSIP/1001", "")]), Err(AgentAliasError::EmptyName { logged: "PJSIP/1001".into() }));
        assert_eq!(aliases(&[("NONE", "Alice")]), Err(AgentAliasError::NoneName { logged: "NONE".into() }));
        let chain = aliases(&[("PJSIP/1001", "Alice"), ("Alice", "Alice Martin")]).expect_err("chain");
        assert_eq!(chain, AgentAliasError::Chain { logged: "PJSIP/1001".into(), reported: "Alice".into() });
        assert_eq!(chain.logged(), "PJSIP/1001");
        assert!(chain.to_string().contains("itself aliased"), "{chain}");
        let own = aliases(&[("Alice", "Alice")]).expect_err("self");
        assert_eq!(own.to_string(), "agent alias \"Alice\" maps to itself");
    }

    #[test]
    fn queuestart_did_and_informational_verbs() {
        let ev = one("1795356677|NONE|NONE|NONE|QUEUESTART|");
        assert_eq!((ev.kind, ev.call_id.as_str()), (EventKind::QueueStart, ""));
        let ev = one("1|1795356686.1|support|NONE|DID|0155501234");
        assert_eq!(ev.call_id, "1795356686.1");
        assert_eq!(
            ev.kind,
            EventKind::CallOffered {
                direction: Direction::Inbound,
                caller: String::new(),
                called: "0155501234".into(),
                trunk: None,
            }
        );
        let (events, m) = map("1|NONE|NONE|NONE|CONFIGRELOAD|\n2|c|q|NONE|INFO|x|y\n");
        assert!(events.is_empty());
        assert_eq!(m.unparsed(), &Unparsed::default());
        // SYSCOMPAT: the call was dropped; the caller's stay in the queue ends.
        assert_eq!(
            kind("3|c|q|a|SYSCOMPAT"),
            EventKind::QueueLeave { queue: "q".into(), reason: LeaveReason::Unspecified, reported_wait_ms: None }
        );
    }

    #[test]
    fn unknown_verbs_are_counted_by_name() {
        let (events, m) = map("1|NONE|q|a|PENALTY|3\n2|NONE|q|a|PENALTY|4\n3|c|q|a|MYVERB\n4|c|q|NONE|ABANDON|1|1|5\n");
        assert_eq!(events.len(), 1);
        let want: BTreeMap<String, u64> = [("MYVERB".to_owned(), 1), ("PENALTY".to_owned(), 2)].into();
        assert_eq!(m.unparsed().by_name, want);
        assert_eq!(m.unparsed().malformed, 0);
    }

    // --- callkpi's custom verbs ---

    #[test]
    fn survey_scores_with_metric_and_scale() {
        let survey = |metric, score, min, max| EventKind::SurveyAnswer {
            metric,
            score,
            scale_min: min,
            scale_max: max,
            queue: s("support"),
            agent: s("Alice Martin"),
        };
        let line = |data: &str| format!("1795356719|1795356686.1|support|Alice Martin|SURVEY|{data}");
        assert_eq!(kind(&line("2")), survey(SurveyMetric::Csat, 2.0, 1.0, 5.0));
        assert_eq!(kind(&line("4|csat")), survey(SurveyMetric::Csat, 4.0, 1.0, 5.0));
        assert_eq!(kind(&line("9|NPS")), survey(SurveyMetric::Nps, 9.0, 0.0, 10.0));
        assert_eq!(kind(&line("0|nps")), survey(SurveyMetric::Nps, 0.0, 0.0, 10.0));
        assert_eq!(kind(&line("6|ces")), survey(SurveyMetric::Ces, 6.0, 1.0, 7.0));
        assert_eq!(kind(&line("8|csat|1|10")), survey(SurveyMetric::Csat, 8.0, 1.0, 10.0));
        assert_eq!(kind(&line("4.5|ces||5")), survey(SurveyMetric::Ces, 4.5, 1.0, 5.0));
        assert_eq!(one(&line("3")).call_id, "1795356686.1");
        for bad in ["", "x", "6", "0", "3|foo", "3|csat|5|1", "NaN", "inf|nps"] {
            let (events, m) = map(&line(bad));
            assert!(events.is_empty(), "{bad}");
            assert_eq!(m.unparsed().malformed, 1, "{bad}");
            assert_eq!(m.last_malformed().map(|e| e.error.kind), Some(ParseErrorKind::BadData));
        }
    }

    #[test]
    fn disposition_codes() {
        let disposition = |resolved, agent: Option<&str>| EventKind::Disposition {
            resolved,
            code: "BILLING".into(),
            agent: agent.map(str::to_owned),
        };
        for (flag, resolved) in
            [("1", true), ("yes", true), ("TRUE", true), ("0", false), ("No", false), ("false", false)]
        {
            let line = format!("1|c|support|Bob Nguyen|DISPOSITION|BILLING|{flag}");
            assert_eq!(kind(&line), disposition(resolved, Some("Bob Nguyen")), "{flag}");
        }
        assert_eq!(kind("1|c|NONE|NONE|DISPOSITION|BILLING|1"), disposition(true, None));
        let (events, m) = map("1|c|q|a|DISPOSITION|BILLING|maybe\n1|c|q|a|DISPOSITION|BILLING\n");
        assert!(events.is_empty());
        assert_eq!(m.unparsed().malformed, 2);
    }

    #[test]
    fn outbound_dial_and_its_result() {
        let input = "\
1|1795356900.1|NONE|Alice Martin|OUTDIAL|0611111119|trunk-a
16|1795356900.1|NONE|Alice Martin|OUTRESULT|NOANSWER|19
20|1795356950.2|NONE|Dmitri Petrov|OUTDIAL|0622222222
25|1795356950.2|NONE|Dmitri Petrov|OUTANSWER
30|1795356960.3|NONE|NONE|OUTRESULT|BUSY|17|0633333333
40|1795356970.4|NONE|NONE|OUTRESULT|CHANUNAVAIL
";
        let (events, m) = map(input);
        assert_eq!(m.unparsed(), &Unparsed::default());
        let kinds: Vec<EventKind> = events.into_iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EventKind::CallOffered {
                    direction: Direction::Outbound,
                    caller: "Alice Martin".into(),
                    called: "0611111119".into(),
                    trunk: s("trunk-a"),
                },
                EventKind::DialResult {
                    agent: s("Alice Martin"),
                    dialled: "0611111119".into(),
                    trunk: s("trunk-a"),
                    outcome: DialOutcome::NoAnswer,
                    cause: Some(19),
                },
                EventKind::CallOffered {
                    direction: Direction::Outbound,
                    caller: "Dmitri Petrov".into(),
                    called: "0622222222".into(),
                    trunk: None,
                },
                EventKind::DialResult {
                    agent: s("Dmitri Petrov"),
                    dialled: "0622222222".into(),
                    trunk: None,
                    outcome: DialOutcome::Answered,
                    cause: None,
                },
                EventKind::DialResult {
                    agent: None,
                    dialled: "0633333333".into(),
                    trunk: None,
                    outcome: DialOutcome::Busy,
                    cause: Some(17),
                },
                EventKind::DialResult {
                    agent: None,
                    dialled: String::new(),
                    trunk: None,
                    outcome: DialOutcome::Unavailable,
                    cause: None,
                },
            ]
        );
        for (status, outcome) in [
            ("ANSWER", DialOutcome::Answered),
            ("CONGESTION", DialOutcome::Congestion),
            ("CANCEL", DialOutcome::AgentAbandoned),
            ("FAILED", DialOutcome::Failed),
            ("INVALIDARGS", DialOutcome::Failed),
        ] {
            let got = kind(&format!("1|c|NONE|a|OUTRESULT|{status}||0611"));
            assert!(matches!(got, EventKind::DialResult { outcome: o, .. } if o == outcome), "{status}");
        }
        let (events, m) = map("1|c|NONE|a|OUTRESULT|WHATEVER\n1|c|NONE|a|OUTDIAL|\n");
        assert!(events.is_empty());
        assert_eq!(m.unparsed().malformed, 2);
    }

    #[test]
    fn wrap_up_verbs() {
        assert_eq!(
            kind("1|c|support|Alice Martin|WRAPUPSTART"),
            EventKind::WrapUpStart { agent: "Alice Martin".into(), queue: s("support") }
        );
        assert_eq!(
            kind("1|c|NONE|Alice Martin|WRAPUPEND|"),
            EventKind::WrapUpEnd { agent: "Alice Martin".into(), queue: None }
        );
        let (events, m) = map("1|c|support|NONE|WRAPUPSTART\n");
        assert!(events.is_empty());
        assert_eq!(m.unparsed().malformed, 1);
    }

    // --- streaming ---

    #[test]
    fn crlf_lines_map_like_lf_lines() {
        let lf = "1|c|q|NONE|ABANDON|1|4|23\n2|NONE|q|Bob|PAUSE|lunch\n";
        let crlf = lf.replace('\n', "\r\n");
        let (a, ma) = map(lf);
        let (b, mb) = map(&crlf);
        assert_eq!(a.len(), 2);
        assert_eq!(a, b);
        assert_eq!(ma.unparsed(), mb.unparsed());
        assert_eq!(mb.offset(), crlf.len() as u64);
    }

    #[test]
    fn a_record_split_across_two_pushes() {
        let line = b"1795356691|1795356686.1|support|Alice Martin|CONNECT|4|1795356687.2|4\n";
        let mut m = mapper();
        let mut events = Vec::new();
        let (head, tail) = line.split_at(30);
        assert_eq!(parse_line(head), Ok(Status::Partial));
        assert_eq!(m.push(head, &mut events), 0);
        assert!(events.is_empty());
        assert_eq!(m.offset(), 0);
        let mut pending = head.to_vec();
        pending.extend_from_slice(tail);
        assert_eq!(m.push(&pending, &mut events), line.len());
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].leg_id, "1795356687.2");
        assert_eq!(m.offset(), line.len() as u64);
    }

    #[test]
    fn a_final_line_without_newline_waits_for_finish() {
        let input = b"1|c|q|NONE|ENTERQUEUE||0611|1\n2|c|q|NONE|ABANDON|1|1|7";
        let mut m = mapper();
        let mut events = Vec::new();
        let consumed = m.push(input, &mut events);
        assert_eq!(consumed, 30);
        assert_eq!(events.len(), 1);
        assert_eq!(m.finish(&input[consumed..], &mut events), input.len() - 30);
        assert_eq!(events.len(), 2);
        assert!(matches!(events[1].kind, EventKind::QueueLeave { reported_wait_ms: Some(7000), .. }));
        assert_eq!(m.offset(), input.len() as u64);
        assert_eq!(m.form(), Some(InputForm::File));
    }

    #[test]
    fn malformed_lines_are_counted_and_skipped() {
        let input = b"\xef\xbb\xbf1|c|q|NONE|ENTERQUEUE||0611|1\n\
abc|c|q|NONE|ABANDON|1|1|7\n\
2|c|q\n\
\n\
3|c|q|Jos\xe9|CONNECT|1|l|1\r\n\
4|c|q|NONE|ABANDON|1|1|7\n";
        let mut m = mapper();
        let events = m.map_all(input);
        // The Latin-1 line is a record, read as ISO-8859-1.
        assert_eq!(events.len(), 3);
        assert!(matches!(&events[1].kind, EventKind::Answered { agent, .. } if agent == "Jos\u{e9}"));
        assert_eq!(m.unparsed().malformed, 2);
        assert!(m.unparsed().by_name.is_empty());
        let last = m.last_malformed().expect("malformed");
        assert_eq!(last.error.kind, ParseErrorKind::TooFewFields);
        assert_eq!(last.at, 33 + 27);
        assert_eq!(last.error.offset, 5);
        assert_eq!(m.offset(), input.len() as u64);
        // Resumed at a checkpoint: offsets stay absolute, and no BOM is expected.
        let mut m = mapper().starting_at(1000);
        let events = m.map_all(&input[33..]);
        assert_eq!((events.len(), m.unparsed().malformed), (2, 2));
        assert_eq!(m.last_malformed().map(|e| e.at), Some(1000 + 27));
        assert_eq!(m.offset(), 1000 + input.len() as u64 - 33);
    }

    // --- CSV form ---

    #[test]
    fn csv_with_quoted_fields_and_datetimes() {
        let input = "\
time,callid,queuename,agent,event,data1,data2,data3,data4,data5
2026-11-22 10:04:47.250000,1795356686.1,support,NONE,ENTERQUEUE,,\"0639987952\",1,,
2026-11-22 10:04:51,1795356686.1,support,\"Martin, Alice \"\"Al\"\"\",CONNECT,4,1795356687.2,4,,
1795356720,1795356689.9,support,Bob Nguyen,ATTENDEDTRANSFER,BRIDGE,431e,3,28,2
1795356720,1795356689.9,\"sup
port\",Bob,ABANDON,1,2,\"12\",,
";
        let (events, m) = map(input);
        assert_eq!(m.form(), Some(InputForm::Csv));
        assert_eq!(m.unparsed(), &Unparsed::default());
        assert_eq!(events.len(), 4);
        let base = jiff::Timestamp::from_str("2026-11-22T10:04:47.25Z").expect("ts").as_nanosecond() as i64;
        assert_eq!(events[0].source_time, Some(base));
        assert_eq!(
            events[0].kind,
            EventKind::QueueJoin { queue: "support".into(), caller: s("0639987952"), position: Some(1) }
        );
        assert_eq!(events[1].source_time, Some(base + 3750 * NANOS_PER_MS));
        assert_eq!(events[1].leg_id, "1795356687.2");
        assert_eq!(
            events[1].kind,
            EventKind::Answered {
                queue: s("support"),
                agent: "Martin, Alice \"Al\"".into(),
                reported_wait_ms: Some(4000),
                reported_ring_ms: Some(4000),
            }
        );
        assert_eq!(events[2].source_time, Some(1_795_356_720 * NANOS_PER_SEC));
        assert!(
            matches!(&events[2].kind, EventKind::Transfer { target, reported_talk_ms: Some(28_000), .. } if target == "BRIDGE:431e")
        );
        assert_eq!(
            events[3].kind,
            EventKind::QueueLeave {
                queue: "sup\nport".into(),
                reason: LeaveReason::Abandon,
                reported_wait_ms: Some(12_000)
            }
        );
    }

    #[test]
    fn csv_header_in_another_order_with_crlf() {
        let input = "id,\"event\",agent,time,queuename,callid,data3,data1,data2\r\n\
7,COMPLETEAGENT,Alice Martin,1795356717,support,1795356686.1,1,4,26\r\n\
8,ENTERQUEUE,NONE,1795356717,support,1795356717.31,6,,0565373532\r\n";
        let (events, m) = map(input);
        assert_eq!(m.unparsed(), &Unparsed::default());
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].call_id, "1795356686.1");
        assert_eq!(
            events[0].kind,
            EventKind::Hangup {
                queue: s("support"),
                agent: s("Alice Martin"),
                by: HangupBy::Agent,
                cause: None,
                reported_talk_ms: Some(26_000),
            }
        );
        assert_eq!(
            events[1].kind,
            EventKind::QueueJoin { queue: "support".into(), caller: s("0565373532"), position: Some(6) }
        );
    }

    #[test]
    fn csv_with_a_single_data_column() {
        let input = "time,callid,queuename,agent,event,data\n\
1795356720,1795356689.9,support,Bob Nguyen,ATTENDEDTRANSFER,BRIDGE|431e|3|28|2\n\
1795356743,NONE,support,Bob Nguyen,PAUSE,lunch\n\
1795356743,\\N,\\N,Bob Nguyen,UNPAUSEALL,\\N\n";
        let (events, m) = map(input);
        assert_eq!(m.unparsed(), &Unparsed::default());
        assert_eq!(events.len(), 3);
        assert!(
            matches!(&events[0].kind, EventKind::Transfer { target, reported_talk_ms: Some(28_000), .. } if target == "BRIDGE:431e")
        );
        assert_eq!(
            events[1].kind,
            EventKind::AgentState {
                agent: "Bob Nguyen".into(),
                queue: s("support"),
                state: AgentState::Paused { reason: "lunch".into() },
            }
        );
        assert_eq!(
            events[2].kind,
            EventKind::AgentState { agent: "Bob Nguyen".into(), queue: None, state: AgentState::Available }
        );
    }

    #[test]
    fn csv_datetimes_in_europe_paris() {
        let tz = TimeZone::get("Europe/Paris").expect("tzdb");
        let config = QueueLogConfig { time_zone: tz, ..QueueLogConfig::default() };
        let input = "time,callid,queuename,agent,event,data1,data2,data3\n\
2026-01-15 09:00:00,a,q,NONE,ABANDON,1,1,5\n\
2026-07-15 09:00:00.5,b,q,NONE,ABANDON,1,1,5\n\
2026-07-15T09:00:00+00:00,c,q,NONE,ABANDON,1,1,5\n\
2026-10-25 02:30:00,d,q,NONE,ABANDON,1,1,5\n\
2026-13-45 09:00:00,e,q,NONE,ABANDON,1,1,5\n";
        let mut m = QueueLogMapper::new(config);
        let events = m.map_all(input.as_bytes());
        let utc = |s: &str| jiff::Timestamp::from_str(s).expect("ts").as_nanosecond() as i64;
        let times: Vec<_> = events.iter().map(|e| e.source_time).collect();
        assert_eq!(
            times,
            [
                Some(utc("2026-01-15T08:00:00Z")),
                Some(utc("2026-07-15T07:00:00.5Z")),
                Some(utc("2026-07-15T09:00:00Z")),
                // The repeated hour of the DST change: the earlier instant.
                Some(utc("2026-10-25T00:30:00Z")),
            ]
        );
        assert_eq!(m.unparsed().malformed, 1);
        assert_eq!(m.last_malformed().map(|e| e.error.kind), Some(ParseErrorKind::BadTime));
    }

    #[test]
    fn csv_record_split_across_pushes_and_forced_csv_without_header() {
        let input = b"time,callid,queuename,agent,event,data1,data2,data3\n1,c,q,NONE,ABANDON,1,\"1\n\",5\n";
        let mut m = mapper();
        let mut events = Vec::new();
        assert_eq!(m.push(&input[..20], &mut events), 0);
        assert_eq!(m.push(&input[..70], &mut events), 52);
        assert!(events.is_empty());
        assert_eq!(m.push(&input[52..], &mut events), input.len() - 52);
        assert_eq!(events.len(), 1);
        assert_eq!(m.offset(), input.len() as u64);

        let mut m = QueueLogMapper::new(QueueLogConfig { form: Some(InputForm::Csv), ..QueueLogConfig::default() });
        let events = m.map_all(b"2026-11-22 10:00:00,c,q,NONE,ABANDON,1,1,5");
        assert_eq!(events.len(), 1);
        assert!(matches!(events[0].kind, EventKind::QueueLeave { reported_wait_ms: Some(5000), .. }));
    }

    #[test]
    fn form_detection() {
        assert_eq!(detect_form(b"time,callid,queuename,agent,event,data1"), InputForm::Csv);
        assert_eq!(detect_form(b"\xef\xbb\xbf\"TIME\",\"Event\",data\r"), InputForm::Csv);
        assert_eq!(detect_form(b"1795356677|NONE|NONE|NONE|QUEUESTART|"), InputForm::File);
        assert_eq!(detect_form(b"callid,queuename"), InputForm::File);
        assert_eq!(detect_form(b""), InputForm::File);
        let mut m = mapper();
        assert_eq!(m.push(b"time,callid,qu", &mut Vec::new()), 0);
        assert_eq!(m.form(), None);
    }

    // --- the real recording ---

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../../tests/fixtures/asterisk/run-a/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The Asterisk verb an event of the recording came from.
    fn verb_of(kind: &EventKind) -> &'static str {
        match kind {
            EventKind::QueueJoin { .. } => "ENTERQUEUE",
            EventKind::Answered { .. } => "CONNECT",
            EventKind::Hangup { by: HangupBy::Agent, .. } => "COMPLETEAGENT",
            EventKind::Hangup { .. } => "COMPLETECALLER",
            EventKind::SurveyAnswer { .. } => "SURVEY",
            EventKind::QueueLeave { reason: LeaveReason::Abandon, .. } => "ABANDON",
            EventKind::QueueLeave { .. } => "other exit",
            EventKind::OfferMissed { reason: MissReason::NoAnswer, .. } => "RINGNOANSWER",
            EventKind::OfferMissed { .. } => "RINGCANCELED",
            EventKind::Transfer { kind: TransferKind::Attended, .. } => "ATTENDEDTRANSFER",
            EventKind::Transfer { .. } => "BLINDTRANSFER",
            EventKind::QueueStart => "QUEUESTART",
            EventKind::AgentState { state: AgentState::Login, .. } => "ADDMEMBER",
            EventKind::AgentState { state: AgentState::Logout, .. } => "REMOVEMEMBER",
            EventKind::AgentState { state: AgentState::Paused { .. }, .. } => "PAUSE",
            EventKind::AgentState { .. } => "UNPAUSE",
            _ => "other",
        }
    }

    #[test]
    fn real_recording_matches_truth_verb_counts() {
        let truth: serde_json::Value = serde_json::from_slice(&fixture("truth.json")).expect("truth.json");
        let want: BTreeMap<String, u64> = truth["queue_log_verb_counts"]
            .as_object()
            .expect("queue_log_verb_counts")
            .iter()
            .map(|(verb, n)| (verb.clone(), n.as_u64().expect("count")))
            .collect();
        let input = fixture("queue_log");
        let mut m = mapper();
        let events = m.map_all(&input);
        let mut got: BTreeMap<String, u64> = BTreeMap::new();
        for ev in &events {
            *got.entry(verb_of(&ev.kind).to_owned()).or_default() += 1;
        }
        assert_eq!(got, want);
        assert_eq!(want["ENTERQUEUE"], 51);
        assert_eq!(m.unparsed(), &Unparsed::default());
        assert_eq!(m.offset(), input.len() as u64);
        // Durations as Asterisk measured them.
        let talk: u64 = events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Hangup { queue, reported_talk_ms, .. }
                | EventKind::Transfer { queue, reported_talk_ms, .. }
                    if queue.as_deref() == Some("sales") =>
                {
                    *reported_talk_ms
                }
                _ => None,
            })
            .sum();
        assert_eq!(talk, truth["queues"]["sales"]["total_talk_s"].as_u64().expect("total_talk_s") * 1000);
        // The same bytes fed in small chunks, as the agent tails them.
        let (chunked, unparsed, offset) = tail(&input, &[7, 300, 1, 64]);
        assert_eq!(chunked, events);
        assert_eq!(unparsed, Unparsed::default());
        assert_eq!(offset, input.len() as u64);
    }

    // --- properties ---

    /// Feeds `input` the way the agent does, in chunks of the given sizes
    /// (cycled), keeping unconsumed bytes; checks the checkpoint on the way.
    fn tail(input: &[u8], chunk_sizes: &[usize]) -> (Vec<FeedEvent>, Unparsed, u64) {
        let mut m = mapper();
        let mut pending = Vec::new();
        let mut events = Vec::new();
        let mut fed = 0;
        for &size in chunk_sizes.iter().cycle() {
            if fed == input.len() {
                break;
            }
            let end = (fed + size.max(1)).min(input.len());
            pending.extend_from_slice(&input[fed..end]);
            fed = end;
            let consumed = m.push(&pending, &mut events);
            pending.drain(..consumed);
            assert_eq!(m.offset(), (fed - pending.len()) as u64);
        }
        m.finish(&pending, &mut events);
        (events, m.unparsed().clone(), m.offset())
    }

    const FILE_LINES: &[&str] = &[
        "1795356677|NONE|NONE|NONE|QUEUESTART|\n",
        "1795356687|1795356686.1|support|NONE|ENTERQUEUE||0639987952|1\r\n",
        "1795356691.5|1795356686.1|support|Alice Martin|CONNECT|4|1795356687.2|4\n",
        "1795356720|1795356689.9|support|Bob Nguyen|ATTENDEDTRANSFER|BRIDGE|431e|3|28|2\n",
        "1795356732|1795356708.23|support|Carla Jiménez|RINGCANCELED|528\n",
        "1795356743|NONE|support|Bob Nguyen|PAUSE|lunch\n",
        "1795356719|1795356686.1|support|Alice Martin|SURVEY|2\n",
        "1|c|q|a|PENALTY|3\n",
        "bad line\n",
        "\n",
    ];

    const CSV_ROWS: &[&str] = &[
        "1795356687,1795356686.1,support,NONE,ENTERQUEUE,,0639987952,1,,\n",
        "2026-11-22 10:04:51,1795356686.1,support,\"Martin, Alice\",CONNECT,4,x,4,,\r\n",
        "1795356732,c,\"sup\nport\",NONE,ABANDON,1,4,23,,\n",
        "x,c,q,a,ABANDON\n",
        "1,c,q,a,MYVERB\n",
    ];

    fn byte() -> impl Strategy<Value = u8> {
        prop_oneof![any::<u8>(), Just(b'|'), Just(b'\n'), Just(b','), Just(b'"'), Just(b'\r'), b'0'..=b'9']
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            head in prop::sample::select(vec!["", "time,event,data\n", "time,callid,queuename,agent,event,data1,data2\n"]),
            body in prop::collection::vec(byte(), 0..400),
            forced in prop::sample::select(vec![None, Some(InputForm::File), Some(InputForm::Csv)]),
            sizes in prop::collection::vec(1usize..64, 1..4),
        ) {
            let mut input = head.as_bytes().to_vec();
            input.extend_from_slice(&body);
            let mut m = QueueLogMapper::new(QueueLogConfig { form: forced, ..QueueLogConfig::default() });
            let _ = m.map_all(&input);
            prop_assert_eq!(m.offset(), input.len() as u64);
            let _ = parse_line(&input);
            let _ = tail(&input, &sizes);
        }

        #[test]
        fn any_split_of_file_input_gives_the_same_events(
            lines in prop::collection::vec(prop::sample::select(FILE_LINES.to_vec()), 1..12),
            sizes in prop::collection::vec(1usize..80, 1..5),
            last_newline in any::<bool>(),
        ) {
            let mut input = lines.concat().into_bytes();
            if !last_newline && input.last() == Some(&b'\n') {
                input.pop();
            }
            let mut whole = mapper();
            let events = whole.map_all(&input);
            let (chunked, unparsed, offset) = tail(&input, &sizes);
            prop_assert_eq!(&chunked, &events);
            prop_assert_eq!(&unparsed, whole.unparsed());
            prop_assert_eq!(offset, input.len() as u64);
        }

        #[test]
        fn any_split_of_csv_input_gives_the_same_events(
            rows in prop::collection::vec(prop::sample::select(CSV_ROWS.to_vec()), 1..10),
            sizes in prop::collection::vec(1usize..80, 1..5),
        ) {
            let input = format!("time,callid,queuename,agent,event,data1,data2,data3,data4,data5\n{}", rows.concat());
            let input = input.as_bytes();
            let mut whole = mapper();
            let events = whole.map_all(input);
            prop_assert_eq!(whole.form(), Some(InputForm::Csv));
            let (chunked, unparsed, offset) = tail(input, &sizes);
            prop_assert_eq!(&chunked, &events);
            prop_assert_eq!(&unparsed, whole.unparsed());
            prop_assert_eq!(offset, input.len() as u64);
        }
    }
}
