//! Delivery end to end: the real `callkpi-agent` and `callkpi-aggregator`
//! binaries on 127.0.0.1, killed and restarted, with the real recordings.
//!
//! The check is always the same: after the run, the aggregator's store holds
//! exactly the events the input maps to, each once (compared as a multiset of
//! call id, source time and event content), with contiguous sequence numbers.

use std::io::Write;
use std::time::Duration;

use callkpi_tests::*;
use rand::Rng;

#[test]
fn aggregator_down_for_a_while_then_up_everything_delivered_once() {
    let s = Setup::new();
    let file = s.path("queue_log");
    std::fs::copy(fixture("asterisk/run-a/queue_log"), &file).unwrap();
    let cfg = s.agent_config("agent-a", TOKEN_A, 64 << 20, &s.queue_log_source(&file));
    let mut agent = s.agent(&cfg);
    // The agent spools while the aggregator is down; give it time to retry a few times.
    let spooled = eventually(Duration::from_secs(20), || {
        http_get(s.agent_http, "/metrics")
            .and_then(|t| metric(&t, "callkpi_spool_last_seq"))
            .filter(|v| *v as usize == queue_log_signatures(&std::fs::read(&file).unwrap()).len())
    });
    assert!(spooled.is_some(), "agent did not spool the file:\n{}", tail(&agent.log_text()));
    std::thread::sleep(Duration::from_millis(700));
    let mut agg = s.aggregator();
    let input = std::fs::read(&file).unwrap();
    let n = queue_log_signatures(&input).len();
    s.wait_for_hwm("agent-a", n, Duration::from_secs(30), &[&agent, &agg]);
    // Everything acked: the agent's spool empties.
    let drained = eventually(Duration::from_secs(10), || {
        http_get(s.agent_http, "/metrics").and_then(|t| metric(&t, "callkpi_spool_depth_events")).filter(|d| *d == 0.0)
    });
    assert!(drained.is_some(), "agent spool never drained");
    assert_eq!(agent.terminate(Duration::from_secs(15)), Some(0), "agent exits cleanly on SIGTERM");
    assert_eq!(agg.terminate(Duration::from_secs(15)), Some(0), "aggregator exits cleanly on SIGTERM");
    assert_exactly(&s.stored("agent-a"), &input);
}

#[test]
fn twenty_kill9_of_the_agent_then_twenty_of_the_aggregator_while_the_log_grows() {
    let s = Setup::new();
    let file = s.path("queue_log");
    std::fs::write(&file, b"").unwrap();
    // Three copies of the recording: ~530 lines written over the run.
    let lines: Vec<Vec<u8>> = (0..3).flat_map(|_| fixture_lines()).collect();
    let total_lines = lines.len();
    let writer_file = file.clone();
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new().append(true).open(&writer_file).unwrap();
        for (i, l) in lines.iter().enumerate() {
            f.write_all(l).unwrap();
            if i % 4 == 0 {
                std::thread::sleep(Duration::from_millis(15));
            }
        }
    });
    let cfg = s.agent_config("agent-a", TOKEN_A, 64 << 20, &s.queue_log_source(&file));
    let mut agg = s.aggregator();
    let mut agent = s.agent(&cfg);
    let mut rng = rand::rng();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(rng.random_range(50..350)));
        agent.kill9();
        agent = s.agent(&cfg);
    }
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(rng.random_range(50..350)));
        agg.kill9();
        agg = s.aggregator();
    }
    writer.join().unwrap();
    let input = std::fs::read(&file).unwrap();
    assert_eq!(input.iter().filter(|b| **b == b'\n').count(), total_lines);
    let n = queue_log_signatures(&input).len();
    s.wait_for_hwm("agent-a", n, Duration::from_secs(60), &[&agent, &agg]);
    agent.terminate(Duration::from_secs(15));
    agg.terminate(Duration::from_secs(15));
    assert_exactly(&s.stored("agent-a"), &input);
}

#[test]
fn wrong_token_is_refused_and_an_agent_cannot_write_as_another() {
    let s = Setup::new();
    let file = s.path("queue_log");
    std::fs::copy(fixture("asterisk/run-a/queue_log"), &file).unwrap();
    let mut agg = s.aggregator();

    // An unknown token.
    let cfg = s.agent_config("agent-a", "not-a-valid-token", 64 << 20, &s.queue_log_source(&file));
    let mut agent = s.agent(&cfg);
    let refused = eventually(Duration::from_secs(15), || {
        s.agg_metric("callkpi_ingest_auth_failures_total")
            .or_else(|| {
                http_get(s.agg_http, "/metrics")
                    .map(|t| t.lines().filter(|l| l.starts_with("callkpi_ingest_auth_failures_total")).count() as f64)
            })
            .filter(|v| *v > 0.0)
    });
    assert!(refused.is_some(), "the aggregator did not count the refused token");
    agent.kill9();

    // Agent B's identity with agent A's credential.
    let cfg = s.agent_config("agent-b", TOKEN_A, 64 << 20, &s.queue_log_source(&file));
    let mut agent = s.agent(&cfg);
    let denied = eventually(Duration::from_secs(15), || {
        let log = agent.log_text();
        (log.contains("PermissionDenied") || log.contains("permission denied") || log.contains("IDENTITY_MISMATCH"))
            .then_some(())
    });
    assert!(denied.is_some(), "agent was not told it may not write as agent-b:\n{}", tail(&agent.log_text()));
    agent.kill9();
    agg.terminate(Duration::from_secs(15));
    assert!(s.stored("agent-a").is_empty(), "nothing stored for agent-a");
    assert!(s.stored("agent-b").is_empty(), "nothing stored for agent-b");
}

#[test]
fn spool_cap_applies_its_policy_without_crashing() {
    let s = Setup::new();
    let file = s.path("queue_log");
    let lines = fixture_lines();
    std::fs::write(&file, lines[..20].concat()).unwrap();
    // No aggregator, and a spool far smaller than the input: the replayable
    // queue_log source must pause (refusals), never drop.
    let cfg = s.agent_config("agent-a", TOKEN_A, 8 * 1024, &s.queue_log_source(&file));
    let mut agent = s.agent(&cfg);
    let first = eventually(Duration::from_secs(20), || {
        http_get(s.agent_http, "/metrics").and_then(|t| metric(&t, "callkpi_spool_last_seq")).filter(|v| *v > 0.0)
    });
    assert!(first.is_some(), "the first lines were not spooled:\n{}", tail(&agent.log_text()));
    // The rest arrives in small appends while the spool is over its cap.
    let mut f = std::fs::OpenOptions::new().append(true).open(&file).unwrap();
    for chunk in lines[20..].chunks(10) {
        f.write_all(&chunk.concat()).unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
    let refusals = eventually(Duration::from_secs(20), || {
        http_get(s.agent_http, "/metrics")
            .and_then(|t| {
                metric(&t, "callkpi_spool_full_refusals_total").or_else(|| metric(&t, "callkpi_spool_full_refusals"))
            })
            .filter(|v| *v > 0.0)
    });
    assert!(refusals.is_some(), "the cap never refused input:\n{}", tail(&agent.log_text()));
    let text = http_get(s.agent_http, "/metrics").unwrap();
    let dropped =
        metric(&text, "callkpi_spool_dropped_events_total").or_else(|| metric(&text, "callkpi_spool_dropped_events"));
    assert_eq!(dropped, Some(0.0), "a replayable source loses nothing");
    assert!(agent.child.try_wait().unwrap().is_none(), "agent still running");

    // Once the aggregator comes, everything is delivered after all.
    let mut agg = s.aggregator();
    let input = std::fs::read(&file).unwrap();
    s.wait_for_hwm("agent-a", queue_log_signatures(&input).len(), Duration::from_secs(60), &[&agent, &agg]);
    agent.terminate(Duration::from_secs(15));
    agg.terminate(Duration::from_secs(15));
    assert_exactly(&s.stored("agent-a"), &input);
}

#[test]
fn corrupt_spool_is_quarantined_and_the_agent_starts() {
    let s = Setup::new();
    let file = s.path("queue_log");
    std::fs::copy(fixture("asterisk/run-a/queue_log"), &file).unwrap();
    let cfg = s.agent_config("agent-a", TOKEN_A, 64 << 20, &s.queue_log_source(&file));
    let mut agent = s.agent(&cfg);
    let spooled = eventually(Duration::from_secs(20), || {
        http_get(s.agent_http, "/metrics").and_then(|t| metric(&t, "callkpi_spool_last_seq")).filter(|v| *v > 0.0)
    });
    assert!(spooled.is_some());
    agent.kill9();
    // Garbage over the spool's files.
    let spool = s.path("spool-agent-a");
    for name in ["conf", "db"] {
        let p = spool.join(name);
        let len = std::fs::metadata(&p).map(|m| m.len() as usize).unwrap_or(0);
        std::fs::write(&p, vec![0x5Au8; len.clamp(64, 4096)]).unwrap();
    }
    let mut agent = s.agent(&cfg);
    let up = eventually(Duration::from_secs(20), || http_get(s.agent_http, "/metrics"));
    assert!(up.is_some(), "agent did not start on a corrupt spool:\n{}", tail(&agent.log_text()));
    let aside = std::fs::read_dir(s.dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with("spool-agent-a.quarantine-"));
    assert!(aside, "the corrupt spool was moved aside");
    assert!(agent.log_text().contains("quarantin"), "the log says so");
    agent.terminate(Duration::from_secs(15));
}

/// Signatures of what the AMI mapper makes of a transcript.
fn ami_signatures(bytes: &[u8]) -> Vec<Signature> {
    use callkpi_feeds::ami::AmiMapper;
    let mut out = Vec::new();
    AmiMapper::default().map_bytes(bytes, &mut out);
    let mut sigs: Vec<Signature> =
        out.into_iter().map(|e| (e.call_id, e.source_time, format!("{:?}", e.kind))).collect();
    sigs.sort();
    sigs
}

#[test]
fn ami_source_against_a_replayed_asterisk_delivers_the_transcript() {
    let s = Setup::new();
    let transcript = std::fs::read(fixture("asterisk/run-a/ami.log")).unwrap();
    // One connection only: after the recording's Shutdown the agent
    // reconnects and must find nobody, not a second copy.
    let (port, server) = ami_replay_server(transcript.clone(), 1);
    let source = format!(
        "[[sources.ami]]\nname = \"pbx\"\naddress = \"127.0.0.1:{port}\"\nusername = \"callkpi\"\nsecret = \"s3cret\"\nqueue_status_on_connect = false\nbackoff_initial_ms = 200\nbackoff_max_ms = 1000\n"
    );
    let cfg = s.agent_config("agent-a", TOKEN_A, 64 << 20, &source);
    let mut agg = s.aggregator();
    let mut agent = s.agent(&cfg);
    // The transcript without the banner and the recorded login reply, as served.
    let served = &transcript[transcript.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    let expected = ami_signatures(served);
    assert!(expected.len() > 400, "the recording maps to hundreds of events: {}", expected.len());
    s.wait_for_hwm("agent-a", expected.len(), Duration::from_secs(60), &[&agent, &agg]);
    agent.terminate(Duration::from_secs(15));
    agg.terminate(Duration::from_secs(15));
    assert_eq!(server.join().unwrap(), 1);
    let stored = s.stored("agent-a");
    let events: Vec<_> = stored.iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(wire_signatures(&events), expected, "every AMI event exactly once");
}

#[test]
fn queue_log_rotation_and_truncation_mid_stream_lose_and_repeat_nothing() {
    let s = Setup::new();
    let file = s.path("queue_log");
    let lines = fixture_lines();
    let (a, rest) = lines.split_at(60);
    let (b, rest) = rest.split_at(40);
    let (c, d) = rest.split_at(40);
    std::fs::write(&file, a.concat()).unwrap();
    let cfg = s.agent_config("agent-a", TOKEN_A, 64 << 20, &s.queue_log_source(&file));
    let mut agg = s.aggregator();
    let mut agent = s.agent(&cfg);
    let mut written: Vec<u8> = a.concat();
    let wait_spooled = |written: &[u8], agent: &Proc| {
        let n = queue_log_signatures(written).len();
        let ok = eventually(Duration::from_secs(20), || {
            http_get(s.agent_http, "/metrics")
                .and_then(|t| metric(&t, "callkpi_spool_last_seq"))
                .filter(|v| *v as usize == n)
        });
        assert!(ok.is_some(), "agent did not spool {n} events:\n{}", tail(&agent.log_text()));
    };
    wait_spooled(&written, &agent);

    // Rotation: rename, two more lines land in the old file, then a new file.
    let rotated = s.path("queue_log.1");
    std::fs::rename(&file, &rotated).unwrap();
    let mut old = std::fs::OpenOptions::new().append(true).open(&rotated).unwrap();
    old.write_all(&b[..2].concat()).unwrap();
    drop(old);
    std::fs::write(&file, b[2..].concat()).unwrap();
    written.extend(b.concat());
    wait_spooled(&written, &agent);

    // Truncation in place, then new lines.
    let f = std::fs::OpenOptions::new().write(true).truncate(true).open(&file).unwrap();
    drop(f);
    std::thread::sleep(Duration::from_millis(200));
    let mut f = std::fs::OpenOptions::new().append(true).open(&file).unwrap();
    f.write_all(&c.concat()).unwrap();
    written.extend(c.concat());
    wait_spooled(&written, &agent);

    // A restart of the agent in the middle of the last part.
    agent.terminate(Duration::from_secs(15));
    f.write_all(&d.concat()).unwrap();
    written.extend(d.concat());
    let mut agent = s.agent(&cfg);
    let n = queue_log_signatures(&written).len();
    s.wait_for_hwm("agent-a", n, Duration::from_secs(30), &[&agent, &agg]);
    let text = http_get(s.agent_http, "/metrics").unwrap_or_default();
    agent.terminate(Duration::from_secs(15));
    agg.terminate(Duration::from_secs(15));
    assert!(text.contains("callkpi_source_rotations_total"), "rotation counter exported");
    assert_exactly(&s.stored("agent-a"), &written);
}

/// A queue_log source polling every 20 ms that waits `rotate_wait_ms` for a
/// rotated file to be quiet.
fn queue_log_source_waiting(file: &std::path::Path, rotate_wait_ms: u64) -> String {
    format!(
        "[[sources.queue_log]]\nname = \"ql\"\npath = \"{}\"\npoll_interval_ms = 20\nrotate_wait_ms = {rotate_wait_ms}\n",
        file.display()
    )
}

/// The events with the lowest `old.len()`-many seqs are exactly the events
/// of `old`: a rotated file's lines were all stored before the new file's.
fn assert_old_file_first(stored: &[(u64, callkpi_proto::pb::Event)], old: &[u8]) {
    let want = queue_log_signatures(old);
    let first: Vec<_> = stored.iter().filter(|(seq, _)| *seq <= want.len() as u64).map(|(_, e)| e.clone()).collect();
    assert_eq!(wire_signatures(&first), want, "the rotated file's events come before the new file's");
}

/// A rotation scene: the recording's lines in three parts (a: before the
/// rotation, b: the old file's last lines, c: the new file's), an agent
/// waiting `rotate_wait_ms` for a rotated file, an aggregator, and part a
/// already stored.
struct RotationScene {
    s: Setup,
    file: std::path::PathBuf,
    cfg: std::path::PathBuf,
    parts: [Vec<u8>; 3],
    agg: Proc,
    agent: Proc,
}

impl RotationScene {
    fn start(rotate_wait_ms: u64) -> Self {
        let s = Setup::new();
        let file = s.path("queue_log");
        let lines = fixture_lines();
        let parts = [lines[..60].concat(), lines[60..120].concat(), lines[120..].concat()];
        std::fs::write(&file, &parts[0]).unwrap();
        let cfg = s.agent_config("agent-a", TOKEN_A, 64 << 20, &queue_log_source_waiting(&file, rotate_wait_ms));
        let agg = s.aggregator();
        let agent = s.agent(&cfg);
        s.wait_for_hwm("agent-a", queue_log_signatures(&parts[0]).len(), Duration::from_secs(20), &[&agent, &agg]);
        Self { s, file, cfg, parts, agg, agent }
    }

    /// Waits for every part at the aggregator, stops both, and checks the
    /// store: each event once, parts a and b before c. Returns the agent's
    /// metrics text and log taken before it stopped.
    fn finish(mut self) -> (String, String) {
        let written = self.parts.concat();
        let n = queue_log_signatures(&written).len();
        self.s.wait_for_hwm("agent-a", n, Duration::from_secs(30), &[&self.agent, &self.agg]);
        let text = http_get(self.s.agent_http, "/metrics").unwrap_or_default();
        let log = self.agent.log_text();
        self.agent.terminate(Duration::from_secs(15));
        self.agg.terminate(Duration::from_secs(15));
        let stored = self.s.stored("agent-a");
        assert_exactly(&stored, &written);
        assert_old_file_first(&stored, &self.parts[..2].concat());
        (text, log)
    }
}

#[test]
fn queue_log_rotated_by_logrotate_create_is_read_until_logger_reload() {
    // Debian's Asterisk logrotate: rename, create an empty queue_log, then
    // `logger reload`; until the reload Asterisk appends to the renamed file.
    let scene = RotationScene::start(1500);
    let rotated = scene.s.path("queue_log.1");
    std::fs::rename(&scene.file, &rotated).unwrap();
    std::fs::write(&scene.file, b"").unwrap();
    // Asterisk, not reloaded yet, goes on writing to the renamed file while
    // the agent has long seen the new one (20 ms polls).
    let mut old = std::fs::OpenOptions::new().append(true).open(&rotated).unwrap();
    let b: Vec<&[u8]> = scene.parts[1].split_inclusive(|c| *c == b'\n').collect();
    for part in b.chunks(20) {
        std::thread::sleep(Duration::from_millis(400));
        old.write_all(&part.concat()).unwrap();
    }
    drop(old);
    // `logger reload`: the new file is written from now on.
    std::fs::write(&scene.file, &scene.parts[2]).unwrap();
    let (text, _) = scene.finish();
    assert_eq!(metric(&text, "callkpi_source_rotations_total{source=\"ql\"}"), Some(1.0), "one rotation");
}

#[test]
fn queue_log_rotated_while_the_agent_was_stopped_is_finished_from_its_inode() {
    let mut scene = RotationScene::start(500);
    assert_eq!(scene.agent.terminate(Duration::from_secs(15)), Some(0), "agent stops");
    // While the agent is down: more lines, the rotation, the last lines
    // Asterisk wrote to the renamed file, and the new file's first lines.
    let b: Vec<&[u8]> = scene.parts[1].split_inclusive(|c| *c == b'\n').collect();
    let mut f = std::fs::OpenOptions::new().append(true).open(&scene.file).unwrap();
    f.write_all(&b[..30].concat()).unwrap();
    drop(f);
    let rotated = scene.s.path("queue_log.1");
    std::fs::rename(&scene.file, &rotated).unwrap();
    let mut old = std::fs::OpenOptions::new().append(true).open(&rotated).unwrap();
    old.write_all(&b[30..].concat()).unwrap();
    drop(old);
    std::fs::write(&scene.file, &scene.parts[2]).unwrap();
    scene.agent = scene.s.agent(&scene.cfg);
    let (_, log) = scene.finish();
    assert!(log.contains("finishing the rotated file first"), "the rotated file was found:\n{}", tail(&log));
}

#[test]
fn spool_status_reports_depth_checkpoints_and_refuses_a_spool_in_use() {
    let s = Setup::new();
    let file = s.path("queue_log");
    std::fs::copy(fixture("asterisk/run-a/queue_log"), &file).unwrap();
    let cfg = s.agent_config("agent-a", TOKEN_A, 64 << 20, &s.queue_log_source(&file));
    let mut agent = s.agent(&cfg);
    let n = queue_log_signatures(&std::fs::read(&file).unwrap()).len();
    let spooled = eventually(Duration::from_secs(20), || {
        http_get(s.agent_http, "/metrics")
            .and_then(|t| metric(&t, "callkpi_spool_last_seq"))
            .filter(|v| *v as usize == n)
    });
    assert!(spooled.is_some());
    let spool = s.path("spool-agent-a");
    let status = |spool: &std::path::Path| {
        std::process::Command::new(bin_dir().join("callkpi"))
            .args(["spool", "status", "--path", spool.to_str().unwrap(), "--format", "json"])
            .output()
            .unwrap()
    };
    let busy = status(&spool);
    assert_eq!(busy.status.code(), Some(64), "a spool in use is refused");
    assert!(String::from_utf8_lossy(&busy.stderr).contains("in use"));
    agent.kill9();
    let out = eventually(Duration::from_secs(10), || Some(status(&spool)).filter(|o| o.status.success()))
        .expect("spool status after the agent stopped");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["depth_events"], n as u64);
    assert_eq!(doc["last_seq"], n as u64);
    assert_eq!(doc["acked_seq"], 0);
    assert_eq!(doc["agent_id"], "agent-a");
    let len = std::fs::metadata(&file).unwrap().len();
    assert_eq!(doc["checkpoints"]["queue_log:ql"]["offset"], len, "{doc}");
    assert!(doc["oldest_event_age_s"].as_f64().is_some_and(|a| a >= 0.0));
}
