//! The DB-export CSV form: header detection, column layouts, and the CSV
//! half of [`QueueLogMapper`]'s stream loop.

use csv_core::{ReadRecordResult, Reader};

use super::record::{Data, ParseError, ParseErrorKind, QueueLogRecord, check_verb, parse_csv_time};
use super::{InputForm, QueueLogMapper, latin1};
use crate::FeedEvent;

/// Most data columns a CSV layout reads (`data1`..`data9`).
const MAX_DATA_COLUMNS: usize = 9;
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
}

/// The form a first line announces.
pub(super) fn detect_form(first_line: &[u8]) -> InputForm {
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
