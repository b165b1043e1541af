//! The `callkpi` command's library: each subcommand is a module, so tests and
//! other binaries (the demo, later) call the same code the command runs.
//!
//! # Layout
//! - [`agents`]: the agents an aggregator knows and how late each is.
//! - [`analyze`]: offline analysis of PBX logs through the KPI engine.
//! - [`calls`]: calls and one call's timeline from a running aggregator.
//! - [`demo`]: agent, aggregator and a simulated PBX in one process.
//! - [`report`]: the same report asked of a running aggregator.
//! - [`spool`]: what an agent's spool directory holds.
//! - [`watch`]: live per-queue figures, redrawn in place.
//! - [`output`]: tables, CSV and JSON.

pub mod agents;
pub mod analyze;
pub mod calls;
pub mod demo;
pub mod output;
pub mod report;
pub mod spool;
pub mod watch;

/// An error and its causes on one line, each cause once
/// ([`callkpi_durable::error_text`]).
pub fn error_text(e: &anyhow::Error) -> String {
    callkpi_durable::error_text(e.as_ref())
}

/// Whether `e` comes from writing to a pipe whose reader has gone.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        let kind = c
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .or_else(|| c.downcast_ref::<serde_json::Error>().and_then(serde_json::Error::io_error_kind));
        kind == Some(std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory (os error 2)");
        let e = anyhow::Error::new(io).context("creating /proc/forbidden: No such file or directory (os error 2)");
        assert_eq!(error_text(&e), "creating /proc/forbidden: No such file or directory (os error 2)");
        let e = anyhow::anyhow!("tcp connect error").context("tcp connect error").context("cannot connect to x");
        assert_eq!(error_text(&e), "cannot connect to x: tcp connect error");
        let pipe = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe)).context("writing");
        assert!(is_broken_pipe(&pipe) && !is_broken_pipe(&e));
    }
}
