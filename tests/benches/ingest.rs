//! Aggregator ingest over loopback: the real `callkpi-aggregator` release
//! binary, fed by 10 concurrent gRPC clients speaking `callkpi.v1.Ingest`
//! directly (Hello, Welcome, pipelined Batches of 1000 pre-encoded events,
//! Acks; at most `Welcome.max_in_flight_batches` unacked per client), so the
//! figure is the aggregator's receive + check + sled write + fsync rate, not
//! any agent's. Issue target: 300 k events/s with 10 agents.
//!
//! Events are what the agent makes of the run-a queue_log (shifted copies,
//! so call ids differ), encoded exactly as the agent encodes them
//! (`pb::Event` with agent id, seq, site, capture clocks), Batch CRC by
//! `callkpi_proto::events_crc32c`. Encoding happens before the clock starts.
//! No compression (the agent's default is zstd: that would add client and
//! server CPU on the same two cores; see BENCHMARKS.md).
//!
//! In the same run, each repetition measures, in this order:
//! - reference `file`: the same Batch bytes appended to one file on the same
//!   disk with one `fdatasync` per Batch: the cost of the durability promise
//!   an Ack makes, with nothing else (no sled, no gRPC, no checks);
//! - `10 clients`: the figure;
//! - `1 client`: one stream alone (no group commit across streams possible).
//!
//! `cargo bench -p callkpi-tests --bench ingest`; knobs:
//! `BENCH_INGEST_BATCHES` (Batches per client per repetition, default 100),
//! `BENCH_SOLO_BATCHES` (default 100), `BENCH_REPS` (default 3).

#![allow(clippy::print_stdout, missing_docs)]

mod common;

use std::io::Write as _;
use std::time::{Duration, Instant};

use common::*;

const CLIENTS: usize = 10;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let batches = env_or("BENCH_INGEST_BATCHES", 100) as usize;
    let solo_batches = env_or("BENCH_SOLO_BATCHES", 100) as usize;
    let reps = env_or("BENCH_REPS", 3).max(1) as usize;
    let bins = release_bins();
    println!("load average before: {}", loadavg());
    let dir = scratch("callkpi-bench-ingest-");
    let fixture = fixture_queue_log();
    let pool = map_queue_log(&queue_log_copies(&fixture, 0, 20));
    let mut agents: Vec<String> = (0..CLIENTS).map(|i| format!("agent-{i:02}")).collect();
    agents.push("agent-solo".into());
    let agg = Aggregator::start(&bins, dir.path(), "aggregator", 0, &agents);
    let rt = runtime();
    let mut next_seq = vec![1u64; agents.len()];
    let work = |clients: &[usize], n: usize, next_seq: &mut [u64]| {
        let mut work = Vec::new();
        let mut bytes = 0;
        for &c in clients {
            let (b, eb) = encode_batches(&pool, &agents[c], next_seq[c], n);
            bytes += eb;
            work.push((agents[c].clone(), next_seq[c], b));
            next_seq[c] += (n * BATCH_EVENTS) as u64;
        }
        (work, bytes)
    };
    let ten: Vec<usize> = (0..CLIENTS).collect();
    let solo = [CLIENTS];

    // Warm-up: connections, sled's first pages, the page cache.
    let (w, _) = work(&ten, 5, &mut next_seq);
    ingest(&rt, agg.grpc, w);
    let (w, _) = work(&solo, 5, &mut next_seq);
    ingest(&rt, agg.grpc, w);

    println!(
        "ingest: {CLIENTS} clients x {batches} Batches x {BATCH_EVENTS} events, 1 client x {solo_batches} Batches, {reps} repetitions"
    );
    let (mut file_rates, mut ten_rates, mut solo_rates) = (Vec::new(), Vec::new(), Vec::new());
    let mut mean_event = 0.0;
    let (mut agg_cpu_per_event, mut client_cpu_per_event) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        let (w, event_bytes) = work(&ten, batches, &mut next_seq);
        let events = (CLIENTS * batches * BATCH_EVENTS) as f64;
        mean_event = event_bytes as f64 / events;
        let msg_bytes: usize = w.iter().flat_map(|(_, _, b)| b.iter().map(|b| b.bytes.len())).sum();

        // Reference: the same bytes, one fdatasync per Batch.
        let path = dir.path().join("reference.bin");
        let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(&path).expect("file");
        let t = Instant::now();
        for (_, _, bs) in &w {
            for b in bs {
                f.write_all(&b.bytes).expect("write");
                f.sync_data().expect("fdatasync");
            }
        }
        let file = t.elapsed();
        drop(f);
        std::fs::remove_file(&path).expect("rm reference file");
        file_rates.push(events / file.as_secs_f64());

        let (agg_cpu, own_cpu) = (cpu_secs(agg.proc.pid()), cpu_secs(std::process::id()));
        let run = ingest(&rt, agg.grpc, w);
        ten_rates.push(run.rate());
        if let (Some(a0), Some(a1), Some(o0), Some(o1)) =
            (agg_cpu, cpu_secs(agg.proc.pid()), own_cpu, cpu_secs(std::process::id()))
        {
            agg_cpu_per_event.push((a1 - a0) / events * 1e6);
            client_cpu_per_event.push((o1 - o0) / events * 1e6);
        }

        let (w, _) = work(&solo, solo_batches, &mut next_seq);
        let one = ingest(&rt, agg.grpc, w);
        solo_rates.push(one.rate());
        println!(
            "  rep {rep}: file {}/s ({:.2} s, {} MB), 10 clients {}/s ({:.2} s), 1 client {}/s ({:.2} s)",
            si(events / file.as_secs_f64()),
            file.as_secs_f64(),
            msg_bytes / 1_000_000,
            si(run.rate()),
            run.elapsed.as_secs_f64(),
            si(one.rate()),
            one.elapsed.as_secs_f64()
        );
    }
    let acked: f64 =
        agents.iter().map(|a| agg.metric(&format!("callkpi_agent_hwm{{agent=\"{a}\"}}")).unwrap_or(0.0)).sum();
    let expected: u64 = next_seq.iter().map(|s| s - 1).sum();
    assert_eq!(acked as u64, expected, "the aggregator holds every event sent");
    let lat_sum = agg.metric("callkpi_ingest_ack_latency_seconds_sum").unwrap_or(f64::NAN);
    let lat_count = agg.metric("callkpi_ingest_ack_latency_seconds_count").unwrap_or(f64::NAN);
    let store = agg.metric("callkpi_store_size_bytes").unwrap_or(f64::NAN);

    let (f, t, s) = (median(&mut file_rates), median(&mut ten_rates), median(&mut solo_rates));
    println!();
    println!(
        "mean event encoding: {mean_event:.0} B; store now holds {expected} events, {:.0} MB on disk",
        store / 1e6
    );
    println!("mean Batch received -> Ack sent (aggregator histogram): {:.2} ms", lat_sum / lat_count * 1e3);
    if !agg_cpu_per_event.is_empty() {
        println!(
            "CPU per event, 10 clients (median): aggregator {:.1} us, the bench's clients {:.1} us \
             (2 cores: the aggregator alone could do at most {}/s at that cost)",
            median(&mut agg_cpu_per_event),
            median(&mut client_cpu_per_event),
            si(2e6 / median(&mut agg_cpu_per_event))
        );
    }
    println!("| bench | events/s (median of {reps}) | ratio to reference |");
    println!("|---|---|---|");
    println!("| reference: same Batch bytes to a file, fdatasync per Batch | {} | 1 |", si(f));
    println!("| aggregator, 10 clients | {} | {:.3} |", si(t), t / f);
    println!("| aggregator, 1 client | {} | {:.3} |", si(s), s / f);
    println!("10 clients / 1 client: {:.2}; 10 clients / target 300 k: {:.3}", t / s, t / 300_000.0);

    let mut agg = agg;
    let code = agg.proc.terminate(Duration::from_secs(20));
    assert_eq!(code, Some(0), "aggregator exits cleanly:\n{}", agg.proc.log_tail());
    println!("load average after: {}", loadavg());
    drop(dir);
}
