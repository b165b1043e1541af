//! The DB-export CSV form: header detection, column layouts, and the CSV
//! half of [`QueueLogMapper`]'s stream loop.

use csv_core::{ReadRecordResult, Reader};

use super::record::{Data, ParseError, ParseErrorKind, QueueLogRecord, check_verb, parse_csv_time};
use super::{InputForm, QueueLogMapper, latin1};
use crate::FeedEvent;

/// Most data columns a CSV layout reads (`data1`..`data9`).
const MAX_DATA_COLUMNS: usize = 9;
/// Which column of a DB-export CSV holds what, by header name (compared
/// ASCII case-insensitively). Built from a preset or a spec
/// ([`FromStr`](std::str::FromStr)):
///
/// - `asterisk`: Asterisk's realtime `queue_log` table: `time, callid,
///   queuename, agent, event, data1..data5`;
/// - `queuemetrics`: QueueMetrics' `queue_log` table: `time_id, call_id,
///   queue, agent, verb, data1..data5` (its `partition`, `serverid` and
///   `unique_row_count` columns are not read);
/// - `time=COL,callid=COL,queue=COL,agent=COL,verb=COL,data=COL;COL;...`:
///   any other layout. `time` and `verb` are required; `callid`, `queue`,
///   `agent` and `data` may be left out (read as empty). The data columns are
///   the verb's data fields in order (a column holding several `|`-joined
///   fields is split), so a table with named columns (`holdtime`,
///   `talktime`...) is read by listing them in the order queue_log writes
///   them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvColumns {
    /// Record time (epoch seconds or a datetime).
    pub time: String,
    /// Caller channel uniqueid.
    pub call_id: Option<String>,
    /// Queue name.
    pub queue: Option<String>,
    /// Agent.
    pub agent: Option<String>,
    /// The verb (`ENTERQUEUE`, `CONNECT`...).
    pub verb: String,
    /// Data columns, in order.
    pub data: Vec<String>,
}

impl CsvColumns {
    /// Asterisk's realtime `queue_log` table.
    pub fn asterisk() -> Self {
        Self::named("time", "callid", "queuename", "agent", "event")
    }

    /// QueueMetrics' `queue_log` table.
    pub fn queuemetrics() -> Self {
        Self::named("time_id", "call_id", "queue", "agent", "verb")
    }

    fn named(time: &str, call_id: &str, queue: &str, agent: &str, verb: &str) -> Self {
        Self {
            time: time.to_owned(),
            call_id: Some(call_id.to_owned()),
            queue: Some(queue.to_owned()),
            agent: Some(agent.to_owned()),
            verb: verb.to_owned(),
            data: (1..=5).map(|i| format!("data{i}")).collect(),
        }
    }
}

impl std::str::FromStr for CsvColumns {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        match spec.trim() {
            "asterisk" => return Ok(Self::asterisk()),
            "queuemetrics" => return Ok(Self::queuemetrics()),
            _ => {}
        }
        let (mut time, mut verb) = (None, None);
        let mut c =
            Self { time: String::new(), call_id: None, queue: None, agent: None, verb: String::new(), data: vec![] };
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let Some((role, col)) = item.split_once('=').map(|(r, c)| (r.trim(), c.trim())) else {
                return Err(format!("{item:?} is not ROLE=COLUMN"));
            };
            if col.is_empty() {
                return Err(format!("{role}: empty column name"));
            }
            match role {
                "time" => time = Some(col.to_owned()),
                "callid" => c.call_id = Some(col.to_owned()),
                "queue" => c.queue = Some(col.to_owned()),
                "agent" => c.agent = Some(col.to_owned()),
                "verb" => verb = Some(col.to_owned()),
                "data" => c.data = col.split(';').map(|d| d.trim().to_owned()).filter(|d| !d.is_empty()).collect(),
                other => {
                    return Err(format!(
                        "unknown role {other:?}: expected time, callid, queue, agent, verb or data \
                         (or a preset: asterisk, queuemetrics)"
                    ));
                }
            }
        }
        if c.data.len() > MAX_DATA_COLUMNS {
            return Err(format!("at most {MAX_DATA_COLUMNS} data columns"));
        }
        match (time, verb) {
            (Some(t), Some(v)) => Ok(Self { time: t, verb: v, ..c }),
            _ => Err("time=COLUMN and verb=COLUMN are required".to_owned()),
        }
    }
}

/// A CSV whose header is no layout callkpi knows: nothing of it is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvHeaderError {
    /// The column names of the header, as written.
    pub found: Vec<String>,
    /// The columns of the configured layout that the header lacks (empty
    /// when no layout was configured).
    pub missing: Vec<String>,
}

impl std::fmt::Display for CsvHeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "queue_log CSV header has the columns [{}]", self.found.join(", "))?;
        if self.missing.is_empty() {
            f.write_str(
                ", which is no layout callkpi knows: expected Asterisk's realtime queue_log table \
                 (time, callid, queuename, agent, event, data1..data5 or data) or QueueMetrics' \
                 (time_id, call_id, queue, agent, verb, data1..data5); map other layouts with \
                 --csv-columns (csv_columns in the agent's config)",
            )
        } else {
            write!(f, ", without [{}] named by the configured csv columns", self.missing.join(", "))
        }
    }
}

impl std::error::Error for CsvHeaderError {}

/// Column positions of a CSV layout.
#[derive(Debug, Clone)]
pub(super) struct CsvLayout {
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

    /// A layout from header names, if they name at least the time and the
    /// verb under the names of Asterisk's or QueueMetrics' table.
    fn from_header<'n>(names: impl Iterator<Item = &'n [u8]>) -> Option<Self> {
        let (mut time, mut call_id, mut queue, mut agent, mut event, mut single) = (None, None, None, None, None, None);
        let mut numbered: Vec<(u8, usize)> = Vec::new();
        for (i, raw) in names.enumerate() {
            let name = String::from_utf8_lossy(raw.trim_ascii()).to_ascii_lowercase();
            match name.as_str() {
                "time" | "time_id" => time = Some(i),
                "callid" | "call_id" => call_id = Some(i),
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

    /// The layout `columns` names in this header.
    fn from_columns(header: &[String], columns: &CsvColumns) -> Result<Self, CsvHeaderError> {
        let mut missing = Vec::new();
        let mut find = |name: &str| {
            let at = header.iter().position(|h| h.trim().eq_ignore_ascii_case(name.trim()));
            if at.is_none() {
                missing.push(name.to_owned());
            }
            at
        };
        let time = find(&columns.time);
        let event = find(&columns.verb);
        let call_id = columns.call_id.as_deref().and_then(&mut find);
        let queue = columns.queue.as_deref().and_then(&mut find);
        let agent = columns.agent.as_deref().and_then(&mut find);
        let data: Vec<usize> = columns.data.iter().filter_map(|d| find(d)).collect();
        match (time, event) {
            (Some(time), Some(event)) if missing.is_empty() => {
                Ok(Self { time, call_id, queue, agent, event, data, single_data: false })
            }
            _ => Err(CsvHeaderError { found: header.to_vec(), missing }),
        }
    }
}

/// Stream state of the CSV form.
#[derive(Debug)]
pub(super) struct CsvState {
    reader: Reader,
    /// `None` until the first record (header or not) has been seen.
    layout: Option<CsvLayout>,
    out: Vec<u8>,
    ends: Vec<usize>,
}

impl QueueLogMapper {
    pub(super) fn run_csv(&mut self, buf: &[u8], events: &mut Vec<FeedEvent>, eof: bool) -> usize {
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
        if self.csv_header_error.is_some() {
            return;
        }
        if csv.layout.is_none() {
            let names: Vec<String> =
                (0..nend).filter_map(field).map(|n| String::from_utf8_lossy(n).trim().to_owned()).collect();
            if let Some(columns) = &self.config.csv_columns {
                match CsvLayout::from_columns(&names, columns) {
                    Ok(layout) => csv.layout = Some(layout),
                    Err(e) => self.csv_header_error = Some(e),
                }
                return;
            }
            if let Some(layout) = CsvLayout::from_header((0..nend).filter_map(field)) {
                csv.layout = Some(layout);
                return;
            }
            // No header: a forced CSV input in the default column order,
            // whose first field is then a time. Anything else is a header
            // of an unknown layout: refuse it rather than read garbage.
            if names.first().is_some_and(|t| parse_csv_time(t, &self.config.time_zone).is_some()) {
                csv.layout = Some(CsvLayout::default_order());
            } else {
                self.csv_header_error = Some(CsvHeaderError { found: names, missing: Vec::new() });
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
}

/// The CSV header line (with its line end) at the start of `head`, when the
/// input is CSV by [`QueueLogConfig::form`](super::QueueLogConfig::form) or
/// by detection: a tailer resuming a CSV export mid-file pushes it first so
/// the mapper knows the columns.
pub fn csv_header_line(head: &[u8], form: Option<InputForm>) -> Option<&[u8]> {
    if form == Some(InputForm::File) {
        return None;
    }
    let nl = memchr::memchr(b'\n', head)?;
    let line = &head[..=nl];
    let text = line.strip_suffix(b"\n").unwrap_or(line);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    (detect_form(text) == InputForm::Csv).then_some(line)
}

/// The form a first line announces: the file form has `|` in every record;
/// a first line without `|`, with at least three comma-separated fields of
/// which the first is not a time, is a CSV header (of a layout known or not:
/// an unknown one is refused, not read as garbage lines).
pub(super) fn detect_form(first_line: &[u8]) -> InputForm {
    let line = first_line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(first_line);
    if memchr::memchr(b'|', line).is_some() {
        return InputForm::File;
    }
    fn unquote(n: &[u8]) -> &[u8] {
        let n = n.trim_ascii();
        n.strip_prefix(b"\"").and_then(|n| n.strip_suffix(b"\"")).unwrap_or(n)
    }
    if CsvLayout::from_header(line.split(|&b| b == b',').map(unquote)).is_some() {
        return InputForm::Csv;
    }
    let mut fields = line.split(|&b| b == b',').map(unquote);
    let first_is_time = fields.next().is_some_and(|f| f.first().is_some_and(u8::is_ascii_digit));
    if !first_is_time && fields.count() >= 2 { InputForm::Csv } else { InputForm::File }
}
