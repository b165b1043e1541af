//! Line monitor end to end: a simulated board (the firmware's own state
//! machine and framer) writes into a pseudo-terminal; the real
//! `callkpi-agent` reads it as its serial device and delivers to the real
//! `callkpi-aggregator`. The stored events, and the KPIs the core engine
//! computes from them, must be those of the simulated calls, despite line
//! noise, a corrupt frame, a lost frame and a board reboot on the way.

#[path = "../../crates/callkpi-agent/tests/agent/linemon_sim.rs"]
mod sim;

use std::process::Command;
use std::time::Duration;

use callkpi_tests::*;

const PATIENCE: Duration = Duration::from_secs(30);

fn agent_metric(s: &Setup, name: &str) -> Option<f64> {
    http_get(s.agent_http, "/metrics").and_then(|t| metric(&t, name))
}

#[test]
fn a_simulated_board_through_the_real_agent_and_aggregator() {
    let s = Setup::new();
    let mut serial = sim::FakeSerial::plugged(&s.path("ttyLINEMON"));
    let sources = format!(
        "[sources.linemon]\ndevice = \"{}\"\nbackoff_initial_ms = 50\nbackoff_max_ms = 500\n{}",
        serial.path().display(),
        sim::lines_toml()
    );
    let cfg = s.agent_config("agent-a", TOKEN_A, 64 << 20, &sources);
    let mut agg = s.aggregator();
    let mut agent = s.agent(&cfg);
    let open =
        eventually(PATIENCE, || agent_metric(&s, "callkpi_source_connected{source=\"linemon\"}").filter(|v| *v == 1.0));
    assert!(open.is_some(), "the agent never opened the device:\n{}", tail(&agent.log_text()));

    let scenario = sim::scenario();
    for piece in &scenario.wire {
        serial.send(piece);
    }
    let n = sim::scenario_event_count();
    s.wait_for_hwm("agent-a", n, PATIENCE, &[&agent, &agg]);
    let counter = |name: &str| agent_metric(&s, &format!("callkpi_source_{name}_total{{source=\"linemon\"}}"));
    assert_eq!(counter("malformed_records"), Some(scenario.bad_frames as f64));
    assert_eq!(counter("lost_records"), Some(scenario.lost_frames as f64));
    assert_eq!(counter("device_restarts"), Some(1.0));
    assert_eq!(counter("spooled_events"), Some(n as f64));
    assert_eq!(agent.terminate(Duration::from_secs(15)), Some(0), "agent exits cleanly on SIGTERM");
    assert_eq!(agg.terminate(Duration::from_secs(15)), Some(0), "aggregator exits cleanly on SIGTERM");
    let log = agent.log_text();
    assert!(log.contains("Line monitor restarted"), "the reboot is logged:\n{}", tail(&log));

    let stored = s.stored("agent-a");
    let seqs: Vec<u64> = stored.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=n as u64).collect::<Vec<_>>(), "every event stored once, in order");
    let events: Vec<callkpi_core::event::Event> = stored
        .into_iter()
        .map(|(_, e)| callkpi_core::event::Event::try_from(e).expect("stored event converts"))
        .collect();
    assert!(events.iter().all(|e| e.site == "paris" && e.id.agent_id == "agent-a"));
    sim::assert_scenario_events(&events);
    sim::assert_scenario_kpis(&events);
}

#[test]
fn a_bad_linemon_section_exits_64_naming_the_key() {
    let s = Setup::new();
    for (section, key) in [
        ("[sources.linemon]\n[[sources.linemon.lines]]\nline = 0\nqueue = \"q\"\n", "sources.linemon.device"),
        ("[sources.linemon]\ndevice = \"/dev/ttyUSB0\"\n", "sources.linemon.lines"),
        (
            "[sources.linemon]\ndevice = \"/dev/ttyUSB0\"\n[[sources.linemon.lines]]\nline = 255\nqueue = \"q\"\n",
            "sources.linemon.lines[0].line",
        ),
    ] {
        let cfg = s.agent_config("agent-a", TOKEN_A, 64 << 20, section);
        let out = Command::new(bin_dir().join("callkpi-agent"))
            .args(["validate", "--config", cfg.to_str().expect("utf-8 path")])
            .output()
            .expect("running callkpi-agent validate");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{section}: {stderr}");
        assert!(stderr.contains(key), "{section}: {stderr} lacks {key}");
    }
}
