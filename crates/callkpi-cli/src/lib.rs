//! The `callkpi` command's library: each subcommand is a module, so tests and
//! other binaries (the demo, later) call the same code the command runs.
//!
//! # Layout
//! - [`analyze`]: offline analysis of PBX logs through the KPI engine.
//! - [`report`]: the same report asked of a running aggregator.
//! - [`spool`]: what an agent's spool directory holds.
//! - [`watch`]: live per-queue figures, redrawn in place.
//! - [`output`]: tables, CSV and JSON.

pub mod analyze;
pub mod output;
pub mod report;
pub mod spool;
pub mod watch;
