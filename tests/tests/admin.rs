//! An admin's first hour, scripted: the example configs of deploy/ edited
//! as the README says, the real binaries on loopback, and what the admin
//! sees at each step (outputs, exit codes, statuses) asserted.
//!
//! validate catches what run would fail on and warns about the examples'
//! secrets; a connected, caught-up agent shows lag 0 and a last contact
//! that moves with every batch, not only with heartbeats; `callkpi report`
//! shows today; `callkpi watch` survives an aggregator restart and stops
//! only on what retrying cannot mend.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use callkpi_tests::*;
use serde_json::Value;

const TOKEN: &str = "the-paris-pbx1-token-of-our-own";

/// Runs a binary of the workspace; (exit code, stdout, stderr).
fn run(bin: &str, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(bin_dir().join(bin))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    let out = child.wait_with_output().expect("wait");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// `text` with the line starting with `prefix` replaced by `line`.
fn set_line(text: &str, prefix: &str, line: &str) -> String {
    assert!(text.lines().any(|l| l.starts_with(prefix)), "the example has a line {prefix:?}");
    text.lines().map(|l| if l.starts_with(prefix) { line } else { l }).collect::<Vec<_>>().join("\n") + "\n"
}

/// `text` without the lines from `from` up to (not including) `until`.
fn cut(text: &str, from: &str, until: &str) -> String {
    let (head, rest) = text.split_once(from).expect("start of the cut");
    let (_, tail) = rest.split_once(until).expect("end of the cut");
    format!("{head}{until}{tail}")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn now_s() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// One answered call in queue_log form, entering at `t`.
fn call(id: &str, t: i64) -> String {
    format!(
        "{t}|{id}|support|NONE|ENTERQUEUE||0612345678|1\n\
         {}|{id}|support|Alice|CONNECT|4|{id}.2|2\n\
         {}|{id}|support|Alice|COMPLETECALLER|4|20|1\n",
        t + 4,
        t + 24
    )
}

fn agents_json(server: &str) -> Value {
    let (code, out, err) =
        run("callkpi", &["agents", "--server", server, "--token", TOKEN_READER, "--format", "json"], None);
    assert_eq!(code, 0, "callkpi agents: {err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("agents JSON ({e}): {out}"));
    v["agents"].as_array().and_then(|a| a.iter().find(|a| a["agent_id"] == "paris-pbx1")).cloned().expect("paris-pbx1")
}

#[test]
fn an_admins_first_hour() {
    let s = Setup::new();
    let dir = s.dir.path();
    let agg_example = std::fs::read_to_string(repo().join("deploy/aggregator.toml")).unwrap();
    let agent_example = std::fs::read_to_string(repo().join("deploy/agent.toml")).unwrap();

    // 1. hash-token gives the digest the aggregator's config wants.
    let (code, digest, _) = run("callkpi-aggregator", &["hash-token"], Some(TOKEN));
    assert_eq!((code, digest.trim()), (0, sha256_hex(TOKEN).as_str()));
    let (code, _, err) = run("callkpi-aggregator", &["hash-token"], Some(""));
    assert_eq!(code, 64, "no token on stdin: {err}");

    // 2. The aggregator's example, with only its paths and ports changed:
    // valid, but its example token is a warning.
    let store = dir.join("store");
    let agg = set_line(&agg_example, "store_path", &format!("store_path = {:?}", store.to_str().unwrap()));
    let agg = set_line(&agg, "listen", &format!("listen = \"127.0.0.1:{}\"", s.grpc));
    let agg = set_line(&agg, "metrics_listen", &format!("metrics_listen = \"127.0.0.1:{}\"", s.agg_http));
    let example_cfg = write(dir, "aggregator-example.toml", &agg);
    let (code, out, err) = run("callkpi-aggregator", &["validate", "--config", example_cfg.to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("valid (1 agents"), "{out}");
    assert!(err.contains("warning: agents[0].token_sha256") && err.contains("change-me"), "{err}");

    // A store that cannot be created is caught by validate, its cause said once.
    let bad = set_line(&agg, "store_path", "store_path = \"/proc/forbidden/store\"");
    let bad_cfg = write(dir, "aggregator-bad.toml", &bad);
    let (code, _, err) = run("callkpi-aggregator", &["validate", "--config", bad_cfg.to_str().unwrap()], None);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("store_path: cannot create /proc/forbidden/store: /proc is not writable"), "{err}");
    assert_eq!(err.matches("(os error").count(), 1, "the cause once: {err}");
    let (code, _, err) = run("callkpi-aggregator", &["run", "--config", bad_cfg.to_str().unwrap()], None);
    assert_eq!(code, 64, "run refuses it the same way, and systemd does not restart: {err}");
    let (code, _, _) = run("callkpi-aggregator", &["validate", "--config", "x", "--listen", "nowhere"], None);
    assert_eq!(code, 64, "a bad flag");

    // The admin's own config: their token, a reader, an idle heartbeat long
    // enough that only batches can tell the aggregator the agent is there.
    let agg = set_line(&agg, "token_sha256", &format!("token_sha256 = \"{}\"", sha256_hex(TOKEN)));
    let agg = set_line(&agg, "heartbeat_interval_ms", "heartbeat_interval_ms = 30000");
    let agg = format!("{agg}\n[[readers]]\nname = \"ops\"\ntoken_sha256 = \"{}\"\n", sha256_hex(TOKEN_READER));
    let agg_cfg = write(dir, "my-aggregator.toml", &agg);
    let (code, _, err) = run("callkpi-aggregator", &["validate", "--config", agg_cfg.to_str().unwrap()], None);
    assert_eq!((code, err.as_str()), (0, ""), "valid, no warning");

    // 3. The agent's example: it names no credential, which validate says.
    let spool = dir.join("spool");
    let agent = set_line(&agent_example, "path = \"/var/lib/callkpi", &format!("path = {spool:?}"));
    let agent = set_line(&agent, "url = ", &format!("url = \"http://127.0.0.1:{}\"", s.grpc));
    let agent = set_line(&agent, "listen = ", &format!("listen = \"127.0.0.1:{}\"", s.agent_http));
    let no_token = write(dir, "agent-example.toml", &agent);
    let (code, _, err) = run("callkpi-agent", &["validate", "--config", no_token.to_str().unwrap()], None);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("uplink.token: no credential"), "{err}");
    let placeholder =
        write(dir, "agent-change-me.toml", &agent.replace("[uplink]\n", "[uplink]\ntoken = \"change-me\"\n"));
    let (code, _, err) = run("callkpi-agent", &["validate", "--config", placeholder.to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning: uplink.token is the example's \"change-me\""), "{err}");
    assert!(err.contains("sources.ami[0].secret"), "the AMI secret too: {err}");
    let (code, _, err) = run("callkpi-agent", &["run", "--config", no_token.to_str().unwrap(), "--bogus"], None);
    assert_eq!(code, 64, "a bad flag: {err}");

    // A queue_log-only site: the AMI source goes, the queue_log is ours.
    let queue_log = dir.join("queue_log");
    let t0 = now_s() - 120;
    std::fs::write(&queue_log, call("1001.1", t0) + &call("1001.3", t0 + 30)).unwrap();
    let agent = agent.replace("[uplink]\n", &format!("[uplink]\ntoken = \"{TOKEN}\"\n"));
    let agent = cut(&agent, "[[sources.ami]]", "[[sources.queue_log]]");
    let agent = set_line(&agent, "path = \"/var/log/asterisk/queue_log\"", &format!("path = {queue_log:?}"));
    let agent_cfg = write(dir, "my-agent.toml", &agent);
    let (code, out, err) = run("callkpi-agent", &["validate", "--config", agent_cfg.to_str().unwrap()], None);
    assert_eq!((code, err.as_str()), (0, ""), "valid, no warning");
    assert!(out.contains("sources: 1 queue_log, 0 AMI"), "{out}");

    // 4. Both running: the agent delivers and is shown caught up.
    let start_agg =
        || Proc::start("callkpi-aggregator", &["run", "--config", agg_cfg.to_str().unwrap()], &s.path("agg.log"));
    let mut aggregator = start_agg();
    eventually(Duration::from_secs(20), || http_get(s.agg_http, "/healthz")).expect("the aggregator answers");
    let mut agent_proc = s.agent(&agent_cfg);
    s.wait_for_hwm("paris-pbx1", 6, Duration::from_secs(30), &[&aggregator, &agent_proc]);
    let server = format!("http://127.0.0.1:{}", s.grpc);
    let first = agents_json(&server);
    assert_eq!(first["connected"], true, "{first}");
    assert_eq!(first["acked_seq"], 6, "{first}");
    assert_eq!(first["lag_s"], 0.0, "connected and caught up: no lag: {first}");
    assert!(first["connected_since_ns"].as_i64().is_some(), "{first}");

    // Calls keep flowing: each batch is contact (heartbeats are 30 s apart).
    let appended_ns = i64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&queue_log)
        .unwrap()
        .write_all(call("1001.5", now_s() - 30).as_bytes())
        .unwrap();
    s.wait_for_hwm("paris-pbx1", 9, Duration::from_secs(30), &[&aggregator, &agent_proc]);
    let second = agents_json(&server);
    let seen = second["last_seen_ns"].as_i64().unwrap();
    assert!(seen >= appended_ns, "last contact moves with the batch: {seen} < {appended_ns}: {second}");
    assert!(second["spool_last_seq"].as_u64().unwrap() <= second["acked_seq"].as_u64().unwrap(), "{second}");
    assert_eq!(second["lag_s"], 0.0, "{second}");

    let metrics = http_get(s.agg_http, "/metrics").expect("metrics");
    let label = "{agent=\"paris-pbx1\"}";
    assert_eq!(metric(&metrics, &format!("callkpi_agent_delivery_lag_seconds{label}")), Some(0.0), "{metrics}");
    let since_event = metric(&metrics, &format!("callkpi_agent_since_event_seconds{label}")).expect("since event");
    // Captured when the agent read the appended lines, a moment ago.
    assert!((0.0..20.0).contains(&since_event), "{since_event}");
    let since_contact =
        metric(&metrics, &format!("callkpi_agent_since_contact_seconds{label}")).expect("since contact");
    assert!(since_contact < 20.0, "{since_contact}");

    // The agents table a person reads.
    let (code, out, err) = run("callkpi", &["agents", "--server", &server, "--token", TOKEN_READER], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("paris-pbx1") && out.contains("yes") && out.contains("1 agent;"), "{out}");

    // 5. Today's report, by default; rows without a call are left out.
    let (code, out, err) =
        run("callkpi", &["report", "--server", &server, "--token", TOKEN_READER, "--by", "queue"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("support"), "today's calls: {out}");
    assert!(!out.contains("│ -"), "no empty group row: {out}");
    assert!(!out.contains('\x1b'), "no colour codes in a pipe");
    let (code, _, err) =
        run("callkpi", &["report", "--server", &server, "--token", TOKEN_READER, "--interval", "5m"], None);
    assert_eq!(code, 64, "{err}");
    let (code, _, err) = run("callkpi", &["report", "--server", &server, "--token", "wrong"], None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Unauthenticated") && err.contains("reader token"), "{err}");
    let (code, _, err) = run(
        "callkpi",
        &["report", "--server", &format!("https://127.0.0.1:{}", s.grpc), "--token", TOKEN_READER],
        None,
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("pass --ca"), "{err}");

    // The HTTP port says what is where, also to a gRPC client sent there.
    let index = http_get(s.agg_http, "/").expect("GET /");
    assert!(index.contains("/wallboard/") && index.contains("/metrics"), "{index}");
    assert!(
        index.contains(&format!("gRPC (agents, callkpi report/watch/agents) is on 127.0.0.1:{}", s.grpc)),
        "{index}"
    );
    let http_port = format!("http://127.0.0.1:{}", s.agg_http);
    let (code, _, err) = run("callkpi", &["report", "--server", &http_port, "--token", TOKEN_READER], None);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "this is the aggregator's HTTP port (metrics, wallboard); gRPC is on 127.0.0.1:{}",
            s.grpc
        )),
        "{err}"
    );

    // 6. watch: a wrong token is final; an aggregator restart is not.
    let (code, _, err) = run("callkpi", &["watch", "--server", &server, "--token", "wrong", "--format", "json"], None);
    assert_eq!(code, 1, "{err}");
    let (code, out, err) = run(
        "callkpi",
        &["watch", "--server", &server, "--token", TOKEN_READER, "--format", "json", "--count", "1"]
            .into_iter()
            .chain(["--queue", "SUPPORT", "--queue", "billing"])
            .collect::<Vec<_>>(),
        None,
    );
    assert_eq!(code, 0, "{err}");
    let snap: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(snap["queues"][0]["queue"], "support", "any case: {snap}");
    assert_eq!(snap["queues"].as_array().map(Vec::len), Some(1), "{snap}");
    assert_eq!(snap["unknown_queues"], serde_json::json!(["billing"]), "{snap}");
    let watch_out = s.path("watch.out");
    let watch_err = s.path("watch.err");
    let mut watch = Command::new(bin_dir().join("callkpi"))
        .args(["watch", "--server", &server, "--token", TOKEN_READER, "--format", "json"])
        .stdout(std::fs::File::create(&watch_out).unwrap())
        .stderr(std::fs::File::create(&watch_err).unwrap())
        .spawn()
        .expect("callkpi watch");
    let snapshots = || std::fs::read_to_string(&watch_out).unwrap_or_default().lines().count();
    eventually(Duration::from_secs(10), || (snapshots() > 0).then_some(())).expect("a first snapshot");
    assert_eq!(aggregator.terminate(Duration::from_secs(15)), Some(0), "the aggregator stops cleanly");
    let said = eventually(Duration::from_secs(10), || {
        let e = std::fs::read_to_string(&watch_err).unwrap_or_default();
        e.contains("reconnecting in").then_some(e)
    });
    assert!(said.is_some(), "watch says it reconnects: {:?}", std::fs::read_to_string(&watch_err));
    assert!(watch.try_wait().unwrap().is_none(), "watch keeps going while the aggregator is away");
    let before = snapshots();
    let restarted = Instant::now();
    let mut aggregator = start_agg();
    let resumed = eventually(Duration::from_secs(40), || (snapshots() > before).then_some(()));
    assert!(resumed.is_some(), "watch resumes after the restart: {:?}", std::fs::read_to_string(&watch_err));
    assert!(restarted.elapsed() < Duration::from_secs(40));
    let _ = Command::new("kill").args(["-TERM", &watch.id().to_string()]).status();
    let _ = watch.wait();

    // 7. A clean stop, as systemd does it.
    assert_eq!(agent_proc.terminate(Duration::from_secs(15)), Some(0), "{}", tail(&agent_proc.log_text()));
    assert_eq!(aggregator.terminate(Duration::from_secs(15)), Some(0), "{}", tail(&aggregator.log_text()));
}

#[test]
fn the_cli_reaches_a_tls_aggregator_with_its_ca_and_the_name_it_is_told() {
    let tls = repo().join("crates/callkpi-aggregator/tests/integration/fixtures/tls");
    let s = Setup::new();
    let extra = format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n",
        tls.join("server.crt").to_str().unwrap(),
        tls.join("server.key").to_str().unwrap()
    );
    let mut agg = s.aggregator_with(&extra);
    let ca = tls.join("ca.crt");
    let ca = ca.to_str().unwrap();
    let agents = |server: &str, domain: Option<&str>| {
        let mut args = vec!["agents", "--server", server, "--token", TOKEN_READER, "--ca", ca, "--format", "json"];
        args.extend(domain.map(|d| ["--tls-domain", d]).into_iter().flatten());
        run("callkpi", &args, None)
    };
    let by_ip = format!("https://127.0.0.1:{}", s.grpc);
    let (code, out, err) = agents(&by_ip, None);
    assert_eq!(code, 0, "the certificate names 127.0.0.1: {err}");
    assert!(out.contains("\"agents\""), "{out}");
    // The certificate names localhost, not this: refused, and said once.
    let (code, _, err) = agents(&by_ip, Some("aggregator.example"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("cannot connect to {by_ip}")), "{err}");
    let lines: Vec<&str> = err.split(": ").collect();
    let mut unique = lines.clone();
    unique.dedup();
    assert_eq!(lines, unique, "no cause said twice in a row: {err}");
    let (code, _, err) = agents(&by_ip, Some("localhost"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(agg.terminate(Duration::from_secs(15)), Some(0));
}
