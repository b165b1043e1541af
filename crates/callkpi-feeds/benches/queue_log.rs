//! Throughput of the queue_log parser and mapper on the real Asterisk
//! recording (`tests/fixtures/asterisk/run-a/queue_log`), in input bytes.

use std::hint::black_box;

use callkpi_feeds::Status;
use callkpi_feeds::queue_log::{QueueLogConfig, QueueLogMapper, parse_line};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn recording() -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/asterisk/run-a/queue_log");
    std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The same records as a DB-export CSV, to compare the two forms.
fn as_csv(file_form: &[u8]) -> Vec<u8> {
    let mut csv = b"time,callid,queuename,agent,event,data1,data2,data3,data4,data5\n".to_vec();
    for line in file_form.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let fields: Vec<&[u8]> = line.split(|&b| b == b'|').collect();
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                csv.push(b',');
            }
            let quote = field.iter().any(|&b| b == b',' || b == b'"');
            if quote {
                csv.push(b'"');
            }
            for &b in *field {
                if b == b'"' {
                    csv.push(b'"');
                }
                csv.push(b);
            }
            if quote {
                csv.push(b'"');
            }
        }
        csv.push(b'\n');
    }
    csv
}

fn queue_log(c: &mut Criterion) {
    let input = recording();
    let csv = as_csv(&input);
    let mut group = c.benchmark_group("queue_log");

    group.throughput(Throughput::Bytes(input.len() as u64));
    // Reference for ratios: the least any line reader does, finding every newline.
    group.bench_function("reference_memchr_newlines", |b| {
        b.iter(|| memchr::memchr_iter(b'\n', black_box(&input)).count())
    });
    group.bench_function("parse_line", |b| {
        b.iter(|| {
            let mut buf = black_box(&input[..]);
            let mut records = 0_usize;
            while let Ok(Status::Complete { value, consumed }) = parse_line(buf) {
                black_box(value);
                records += 1;
                buf = &buf[consumed..];
            }
            records
        })
    });
    group.bench_function("map_all_file", |b| {
        b.iter(|| QueueLogMapper::new(QueueLogConfig::default()).map_all(black_box(&input)))
    });

    group.throughput(Throughput::Bytes(csv.len() as u64));
    group.bench_function("map_all_csv", |b| {
        b.iter(|| QueueLogMapper::new(QueueLogConfig::default()).map_all(black_box(&csv)))
    });
    group.finish();
}

criterion_group!(benches, queue_log);
criterion_main!(benches);
