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
//! borrowed [`QueueLogRecord`] or [`Status::Partial`](crate::Status::Partial); [`QueueLogMapper`]
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
//! `queue` and `verb` are accepted for `queuename` and `event`, and
//! QueueMetrics' table (`time_id`, `call_id`, `queue`, `agent`, `verb`,
//! `data1`..) is recognised too; unknown columns (such as an `id` key, or
//! QueueMetrics' `partition` and `serverid`) are ignored. Any other layout
//! is read with [`QueueLogConfig::csv_columns`] ([`CsvColumns`]: presets
//! `asterisk` and `queuemetrics`, or one column name per role). The older schema has a single
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
//! comma-separated names include a time and a verb column, or any line
//! without `|` of three or more comma-separated fields whose first is not a
//! time, is a CSV header; any other first line starts the file form.
//! [`QueueLogConfig::form`] can force a form; a forced CSV input whose first
//! row starts with a time has no header and is read in the default column
//! order above. A header that is no known layout, or lacks a column the
//! configured [`CsvColumns`] name, is refused as a whole: nothing is read and
//! [`QueueLogMapper::csv_header_error`] names the columns found and the
//! layouts expected (it used to be read as garbage). To resume a CSV export at a checkpoint, push its header
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
//! | `RINGNOANSWER` | ringtime (**ms**) | `OfferMissed { NoAnswer, reported_ring_ms }`; ringtime 0 (the device refused within the second: busy, congestion, failure) is `Rejected` |
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
//! | `WITHDRAW` | position\|origposition\|waittime\|info | `QueueLeave { Unspecified, waittime }`: removed by AMI `QueueWithdrawCaller` |
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
//!
//! # Layout of this module
//!
//! - `record`: the file-form record parser ([`parse_line`], [`parse_record`]);
//! - `csv`: the DB-export CSV form (header detection, column layouts);
//! - `aliases`: [`AgentAliases`];
//! - `verbs`: what each verb becomes;
//! - this file: [`QueueLogMapper`], which drives them over a byte stream.

mod aliases;
mod csv;
mod record;
#[cfg(test)]
mod tests;
mod verbs;
pub(crate) use verbs::refused_at_once;

use std::collections::HashMap;

use jiff::tz::TimeZone;

pub use aliases::{AgentAliasError, AgentAliases};
pub use csv::{CsvColumns, CsvHeaderError, csv_header_line};
use csv::{CsvState, detect_form};
pub use record::{Data, ParseError, ParseErrorKind, QueueLogRecord, parse_line, parse_record};
use verbs::{Mapped, map_record, none_empty};

use crate::{FeedEvent, Unparsed};

/// What Asterisk writes for an absent call id, queue or agent.
const NONE: &str = "NONE";
/// Outbound calls remembered between `OUTDIAL` and `OUTRESULT`.
const MAX_OPEN_OUTDIALS: usize = 4096;
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
    /// Column layout of the CSV form; `None` (default) recognises the
    /// header of Asterisk's or QueueMetrics' table.
    pub csv_columns: Option<CsvColumns>,
}

impl Default for QueueLogConfig {
    fn default() -> Self {
        Self { time_zone: TimeZone::UTC, form: None, agent_aliases: AgentAliases::default(), csv_columns: None }
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
    /// Set when a CSV header is no known layout; nothing more is read.
    csv_header_error: Option<CsvHeaderError>,
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
            csv_header_error: None,
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

    /// Why a CSV input is not read at all: its header is no known layout
    /// (or lacks the configured columns). Check it after mapping: the input
    /// is then an error to report, not a stream of malformed records.
    pub fn csv_header_error(&self) -> Option<&CsvHeaderError> {
        self.csv_header_error.as_ref()
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
