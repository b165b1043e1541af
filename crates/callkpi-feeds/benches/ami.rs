//! AMI parser throughput over the real Asterisk 22 recording
//! (`tests/fixtures/asterisk/run-a/ami.log`, 4.1 MB, ~9 000 events).
//!
//! - `framing`: banner and messages, headers borrowed from the buffer.
//! - `framing+mapping`: the same, then [`AmiMapper`] into `FeedEvent`s.

use std::hint::black_box;

use callkpi_feeds::Status;
use callkpi_feeds::ami::{AmiMapper, DEFAULT_MAX_MESSAGE_SIZE, Frame, parse_frame};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const RECORDING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/asterisk/run-a/ami.log");

/// Frames the whole buffer as a reader would (no iterator conveniences).
fn frame_all(buf: &[u8], mut each: impl FnMut(&Frame<'_>)) -> usize {
    let mut pos = 0;
    let mut n = 0;
    while pos < buf.len() {
        match parse_frame(&buf[pos..], DEFAULT_MAX_MESSAGE_SIZE) {
            Ok(Status::Complete { value, consumed }) => {
                each(&value);
                pos += consumed;
                n += 1;
            }
            Ok(Status::Partial) | Err(_) => break,
        }
    }
    n
}

fn ami(c: &mut Criterion) {
    let bytes = std::fs::read(RECORDING).expect("the run-a recording");
    let mut group = c.benchmark_group("ami");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    // Reference for ratios: the least any line reader does, finding every newline.
    group.bench_function("reference_memchr_newlines", |b| {
        b.iter(|| memchr::memchr_iter(b'\n', black_box(&bytes)).count())
    });
    group.bench_function("framing", |b| {
        b.iter(|| {
            frame_all(black_box(&bytes), |f| {
                black_box(f);
            })
        });
    });
    group.bench_function("framing+mapping", |b| {
        let mut out = Vec::with_capacity(1024);
        b.iter(|| {
            let mut mapper = AmiMapper::default();
            out.clear();
            frame_all(black_box(&bytes), |f| mapper.map_frame(f, &mut out));
            black_box(out.len())
        });
    });
    group.finish();
}

criterion_group!(benches, ami);
criterion_main!(benches);
