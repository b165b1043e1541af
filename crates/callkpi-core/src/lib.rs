//! callkpi's pure core: the event model, call and case correlation, and the
//! KPI engine. No clock, no I/O, no async: "now" is always an argument, so the
//! aggregator, `callkpi analyze` and the tests run one implementation.
//!
//! # Layout
//! - [`event`]: the normalised event every feed produces.

pub mod event;
