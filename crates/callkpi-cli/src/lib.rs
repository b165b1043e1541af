//! The `callkpi` command's library: each subcommand is a module, so tests and
//! other binaries (the demo, later) call the same code the command runs.
//!
//! # Layout
//! - [`analyze`]: offline analysis of PBX logs through the KPI engine.
//! - [`calls`]: calls and one call's timeline from a running aggregator.
//! - [`demo`]: agent, aggregator and a simulated PBX in one process.
//! - [`report`]: the same report asked of a running aggregator.
//! - [`spool`]: what an agent's spool directory holds.
//! - [`watch`]: live per-queue figures, redrawn in place.
//! - [`output`]: tables, CSV and JSON.

pub mod analyze;
pub mod calls;
pub mod demo;
pub mod output;
pub mod report;
pub mod spool;
pub mod watch;
