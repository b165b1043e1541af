//! `callkpi spool status`: what an agent's spool holds, read from its
//! directory (depth, bytes, oldest event, seqs, checkpoints, quarantined
//! copies). The spool must not be in use: a running agent holds its lock
//! and reports the same figures on its metrics endpoint.

use std::io::Write;
use std::path::{Path, PathBuf};

use callkpi_agent::sources::queue_log::Checkpoint;
use callkpi_agent::spool::{Spool, SpoolError};
use callkpi_durable::DurableError;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use crate::analyze::UsageError;

/// `callkpi spool ...`.
#[derive(Debug, Subcommand)]
pub enum SpoolCommand {
    /// Show what a spool directory holds.
    Status(StatusArgs),
}

/// Options of `callkpi spool status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The spool directory (`[spool] path` of the agent's config).
    #[arg(long)]
    pub path: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = StatusFormat::Table)]
    pub format: StatusFormat,
}

/// Output formats of `spool status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    /// Lines for a person.
    Table,
    /// One JSON object.
    Json,
}

/// Copies of this spool moved aside as corrupt (`<dir>.quarantine-<secs>`).
fn quarantined(path: &Path) -> Vec<PathBuf> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else { return Vec::new() };
    let prefix = format!("{}.quarantine-", name.to_string_lossy());
    let mut out: Vec<PathBuf> = std::fs::read_dir(if parent.as_os_str().is_empty() { Path::new(".") } else { parent })
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn describe_checkpoint(value: &[u8]) -> serde_json::Value {
    match Checkpoint::decode(value) {
        Some(c) => json!({"kind": "queue_log", "inode": c.inode, "offset": c.offset}),
        None => json!({"kind": "opaque", "bytes": value.len()}),
    }
}

/// Runs `spool status`.
///
/// # Errors
/// A [`UsageError`] when the directory is missing or in use; others when it
/// cannot be read.
pub fn status(a: &StatusArgs) -> anyhow::Result<()> {
    if !a.path.is_dir() {
        return Err(UsageError(format!("{} is not a spool directory", a.path.display())).into());
    }
    let inspection = match Spool::inspect(&a.path) {
        Ok(i) => i,
        Err(SpoolError::Durable(DurableError::InUse { .. })) => {
            return Err(UsageError(format!(
                "{} is in use by a running agent: read its metrics endpoint (callkpi_spool_*) instead, or stop it",
                a.path.display()
            ))
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    let s = &inspection.stats;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64);
    let oldest_age_s =
        (s.depth > 0 && s.oldest_captured_at_ns > 0).then(|| (now - s.oldest_captured_at_ns) as f64 / 1e9);
    let doc = json!({
        "path": a.path.display().to_string(),
        "agent_id": inspection.agent_id,
        "depth_events": s.depth,
        "bytes": s.bytes,
        "max_bytes": s.max_bytes,
        "first_seq": s.first_seq,
        "last_seq": s.last_seq,
        "acked_seq": s.acked_seq,
        "oldest_event_age_s": oldest_age_s,
        "checkpoints": inspection.checkpoints.iter().map(|(k, v)| (k.clone(), describe_checkpoint(v))).collect::<serde_json::Map<_, _>>(),
        "quarantined": quarantined(&a.path).iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
    });
    let mut out = std::io::stdout().lock();
    match a.format {
        StatusFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?,
        StatusFormat::Table => {
            writeln!(out, "spool       {}", a.path.display())?;
            writeln!(out, "agent       {}", inspection.agent_id)?;
            writeln!(out, "depth       {} events, {} of {} bytes", s.depth, s.bytes, s.max_bytes)?;
            writeln!(out, "seqs        first {} last {} acked {}", s.first_seq, s.last_seq, s.acked_seq)?;
            match oldest_age_s {
                Some(age) => writeln!(out, "oldest      {age:.0} s old")?,
                None => writeln!(out, "oldest      (empty)")?,
            }
            for (k, v) in &inspection.checkpoints {
                writeln!(out, "checkpoint  {k}: {}", describe_checkpoint(v))?;
            }
            for q in quarantined(&a.path) {
                writeln!(out, "quarantined {}", q.display())?;
            }
        }
    }
    Ok(())
}
