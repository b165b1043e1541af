//! callkpi's pure core: the event model, call and case correlation, and the
//! KPI engine. No clock, no I/O, no async: "now" is always an argument, so the
//! aggregator, `callkpi analyze` and the tests run one implementation.
//!
//! # Layout
//! - [`event`]: the normalised event every feed produces.
//! - [`call`]: one call rebuilt from its events (visits, segments, offers).
//! - [`agent`]: agent presence (logged-in, paused) over time.
//! - [`counters`]: additive primitive counters per quarter hour and group.
//! - [`engine`]: the incremental engine that keeps the counters current.
//! - [`live`]: callers waiting and agent activity now, for wallboards.
//! - [`params`]: report parameters (thresholds, formula variants).
//! - [`report`]: rows and KPIs as pure functions of counters and parameters.
//! - [`time`]: quarter-hour buckets and DST-correct local intervals.

pub mod agent;
pub mod bounds;
pub mod call;
pub mod counters;
pub mod engine;
pub mod event;
pub mod live;
pub mod params;
pub mod report;
pub mod time;

pub use engine::{Engine, EngineConfig};
pub use params::KpiParams;
pub use report::{Report, Row, Watermark};
