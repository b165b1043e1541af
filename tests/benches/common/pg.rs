//! PostgreSQL 15 side of the query benches: a throwaway cluster, the
//! synthetic calls as one row per queue visit, the KPIs per 15 min x queue
//! as SQL, and the rows of both sides in one comparable form.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A throwaway cluster; stopped with `pg_ctl stop` (its own data directory,
/// so only its postmaster) when dropped.
pub struct Pg {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
}

pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.trim_ascii() == b"0").unwrap_or(false)
}

impl Pg {
    pub fn cmd(&self, prog: &str) -> Command {
        let path = self.bin.join(prog);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    pub fn start(dir: &Path) -> Pg {
        let bin = PathBuf::from(std::env::var("PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()));
        assert!(
            bin.join("initdb").exists(),
            "no PostgreSQL server in {} (apt-get install -y postgresql-15, or set PG_BIN)",
            bin.display()
        );
        let data = dir.join("pgdata");
        let as_postgres = is_root();
        if as_postgres {
            // initdb refuses to run as root: the cluster belongs to postgres.
            let st = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir).status().expect("chown");
            assert!(st.success(), "chown of {} to postgres failed", dir.display());
        }
        let pg = Pg { bin, data, port: callkpi_tests::free_port(), as_postgres };
        let out = pg
            .cmd("initdb")
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "-D"])
            .arg(&pg.data)
            .output()
            .expect("initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c shared_buffers=2GB \
             -c work_mem=256MB -c maintenance_work_mem=1GB -c max_wal_size=8GB -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_parallel_workers_per_gather=2",
            pg.port,
            pg.data.display()
        );
        let out = pg
            .cmd("pg_ctl")
            .arg("-D")
            .arg(&pg.data)
            .args(["-w", "-t", "60", "-o", &opts, "-l"])
            .arg(dir.join("pg.log"))
            .arg("start")
            .output()
            .expect("pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(dir.join("pg.log")).unwrap_or_default()
        );
        pg
    }

    /// Runs `script` with psql; its stdout. Panics on an SQL error.
    pub fn psql(&self, script: &str) -> String {
        let out = Command::new("psql")
            .args(["-X", "-q", "-At", "-F", "|", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres"])
            .args(["-p", &self.port.to_string(), "-d", "postgres", "-c", script])
            .output()
            .expect("running psql");
        assert!(out.status.success(), "psql failed on {script:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8 psql output")
    }

    /// Runs `sql` `reps` times with `\timing` and output to /dev/null; the
    /// time psql reports for each rep (summed over its statements).
    pub fn timed(&self, sql: &str, reps: usize) -> Vec<Duration> {
        let mut script = String::from("\\timing on\n\\o /dev/null\n");
        for _ in 0..reps {
            script.push_str(sql);
            script.push('\n');
        }
        let out = Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres"])
            .args(["-p", &self.port.to_string(), "-d", "postgres"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().expect("stdin").write_all(script.as_bytes())?;
                c.wait_with_output()
            })
            .expect("running psql");
        assert!(out.status.success(), "psql failed: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        let times: Vec<Duration> = text
            .lines()
            .filter_map(|l| l.strip_prefix("Time: "))
            .filter_map(|l| l.split(' ').next()?.parse::<f64>().ok())
            .map(|ms| Duration::from_secs_f64(ms / 1000.0))
            .collect();
        // One line per statement; a rep's statements are summed.
        let per_rep = sql.matches(';').count().max(1);
        assert_eq!(times.len(), reps * per_rep, "psql \\timing lines: {text}");
        times.chunks(per_rep).map(|c| c.iter().sum()).collect()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = self.cmd("pg_ctl").arg("-D").arg(&self.data).args(["-w", "-m", "fast", "stop"]).output();
    }
}

pub const SCHEMA: &str = "
CREATE TABLE queue_visit (
    call_id     bigint      NOT NULL,
    queue       text        NOT NULL,
    agent       text,
    caller      text,
    entered_at  timestamptz NOT NULL,
    answered_at timestamptz,
    left_at     timestamptz NOT NULL,
    outcome     text        NOT NULL CHECK (outcome IN ('answered', 'abandoned', 'timeout')),
    wait_ms     integer     NOT NULL,
    talk_ms     integer     NOT NULL,
    hold_ms     integer     NOT NULL,
    wrap_ms     integer     NOT NULL
);";

pub const INDEXES: &str = "
CREATE INDEX queue_visit_entered ON queue_visit (entered_at, queue);
CREATE INDEX queue_visit_handled ON queue_visit (left_at, queue) WHERE outcome = 'answered';";

/// The KPIs per 15 min x queue, with callkpi's default definitions: short
/// abandon <= 5 s (excluded from offered, abandoned and SL), SL = answered
/// within T / offered, offered figures in the interval of queue entry,
/// handled and AHT in the interval of hang-up.
pub const KPI_SQL: &str = "
WITH offered AS (
    SELECT date_bin('15 minutes', entered_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket, queue,
           count(*) AS entered,
           count(*) FILTER (WHERE outcome = 'abandoned' AND wait_ms <= 5000) AS short_abandoned,
           count(*) FILTER (WHERE outcome = 'answered') AS answered,
           count(*) FILTER (WHERE outcome = 'abandoned' AND wait_ms > 5000) AS abandoned,
           count(*) FILTER (WHERE outcome = 'timeout') AS timed_out,
           sum(wait_ms) FILTER (WHERE outcome = 'answered') AS answered_wait_ms,
           count(*) FILTER (WHERE outcome = 'answered' AND wait_ms <= 18000) AS sl18,
           count(*) FILTER (WHERE outcome = 'answered' AND wait_ms <= 20000) AS sl20,
           count(*) FILTER (WHERE outcome = 'answered' AND wait_ms <= 60000) AS sl60
    FROM queue_visit GROUP BY 1, 2
), handled AS (
    SELECT date_bin('15 minutes', left_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket, queue,
           count(*) AS handled, sum(talk_ms + hold_ms + wrap_ms) AS handle_ms
    FROM queue_visit WHERE outcome = 'answered' GROUP BY 1, 2
)
SELECT extract(epoch FROM bucket)::bigint, queue,
       coalesce(o.entered - o.short_abandoned, 0) AS offered,
       coalesce(o.answered, 0), coalesce(o.abandoned, 0), coalesce(o.short_abandoned, 0), coalesce(o.timed_out, 0),
       o.answered_wait_ms::float8 / 1000 / nullif(o.answered, 0) AS asa_s,
       o.sl18::float8 * 100 / nullif(o.entered - o.short_abandoned, 0),
       o.sl20::float8 * 100 / nullif(o.entered - o.short_abandoned, 0),
       o.sl60::float8 * 100 / nullif(o.entered - o.short_abandoned, 0),
       coalesce(h.handled, 0), h.handle_ms::float8 / 1000 / nullif(h.handled, 0) AS aht_s
FROM offered o FULL JOIN handled h USING (bucket, queue)
ORDER BY 1, 2;";

/// One row as both sides give it: counts, then ASA, SL 18/20/60, AHT.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub counts: [u64; 6],
    pub ratios: [Option<f64>; 5],
}

pub fn pg_rows(text: &str) -> BTreeMap<(i64, String), Figures> {
    let mut rows = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('|').collect();
        assert_eq!(f.len(), 13, "row {line:?}");
        let n = |i: usize| f[i].parse::<u64>().unwrap_or_else(|_| panic!("count {:?} in {line:?}", f[i]));
        let r = |i: usize| (!f[i].is_empty()).then(|| f[i].parse::<f64>().expect("a float"));
        let fig = Figures { counts: [n(2), n(3), n(4), n(5), n(6), n(11)], ratios: [r(7), r(8), r(9), r(10), r(12)] };
        rows.insert((f[0].parse::<i64>().expect("epoch"), f[1].to_owned()), fig);
    }
    rows
}

pub fn engine_rows(report: &callkpi_core::Report) -> BTreeMap<(i64, String), Figures> {
    let mut rows = BTreeMap::new();
    for row in &report.rows {
        let Some(Some(queue)) = row.group.get("queue") else { continue };
        let k = &row.kpis;
        if k.entered == 0 && k.handled == 0 {
            continue; // presence only: the SQL table has no logins
        }
        let sl = |t: &str| k.service_level_pct.get(t).copied().flatten();
        let fig = Figures {
            counts: [k.offered, k.answered, k.abandoned, k.short_abandoned, k.timed_out, k.handled],
            ratios: [k.asa_s, sl("18"), sl("20"), sl("60"), k.aht_s],
        };
        rows.insert((row.start_ns / 1_000_000_000, queue.clone()), fig);
    }
    rows
}

pub fn same(a: &Figures, b: &Figures) -> bool {
    let close = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
        (None, None) => true,
        _ => false,
    };
    a.counts == b.counts && a.ratios.iter().zip(&b.ratios).all(|(x, y)| close(*x, *y))
}

/// `ms` since the epoch as `YYYY-MM-DD HH:MM:SS.mmm+00`, as a CDR export
/// holds it.
pub fn ts(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .expect("a time within jiff's range")
        .strftime("%Y-%m-%d %H:%M:%S%.3f+00")
        .to_string()
}

/// Writes the queue visits of `synth::calls_from(t0_ms, calls, days, agents, seed)` as CSV
/// rows of [`SCHEMA`]; the row count.
pub fn write_csv(path: &Path, t0_ms: i64, calls: u64, days: u64, agents: u32, seed: u64) -> u64 {
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).expect("csv file"));
    let mut rows = 0;
    for c in crate::synth::calls_from(t0_ms, calls, days, agents, seed) {
        let answered = c.answered_ms();
        let agent = if answered.is_some() { crate::synth::agent_name(c.agent) } else { String::new() };
        writeln!(
            w,
            "{},{},{},{},{},{},{},{},{},{},{},{}",
            c.index,
            c.queue,
            agent,
            c.caller,
            ts(c.entered_ms),
            answered.map(ts).unwrap_or_default(),
            ts(c.left_ms()),
            c.outcome.as_str(),
            c.wait_ms,
            c.talk_ms,
            c.hold_ms,
            c.wrap_ms
        )
        .expect("write csv");
        rows += 1;
    }
    w.flush().expect("flush csv");
    rows
}

pub fn gib(kib: u64) -> f64 {
    kib as f64 / (1024.0 * 1024.0)
}
