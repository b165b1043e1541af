//! Retention: deletes raw events and sealed-call index entries once older
//! than `[retention]` says, in the background, in bounded steps. Rollups are
//! never deleted: KPIs over any period stay available.
//!
//! Raw events are deleted only up to what the KPI engine has applied and
//! checkpointed (a restart never needs them again), and a whole stored
//! group at a time. Each pass also measures the store per tree and the age
//! of the oldest raw event, for `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use callkpi_core::event::NANOS_PER_SEC;
use tokio_util::sync::CancellationToken;

use crate::config::RetentionConfig;
use crate::metrics::Metrics;
use crate::reports::KpiFollower;
use crate::store::{Store, StoreError};

/// Groups deleted per agent per step, and calls per step: bounded so that a
/// first pass over years of data does not hold the store for long.
const STEP: usize = 1000;

/// What one pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pass {
    pub(crate) events: u64,
    pub(crate) calls: u64,
}

fn days_before(now_ns: i64, days: u32) -> i64 {
    now_ns.saturating_sub(i64::from(days).saturating_mul(86_400 * NANOS_PER_SEC))
}

/// One pass as of `now_ns`. Blocking.
///
/// # Errors
/// When the store cannot be read or written.
pub(crate) fn pass(
    store: &Store,
    follower: &KpiFollower,
    cfg: &RetentionConfig,
    now_ns: i64,
) -> Result<Pass, StoreError> {
    let mut done = Pass::default();
    if cfg.raw_events_days > 0 {
        let before = days_before(now_ns, cfg.raw_events_days);
        for agent in store.agents()? {
            let up_to = follower.durable_applied(&agent.agent_id);
            loop {
                let (groups, events) = store.expire_events(&agent.agent_id, before, up_to, STEP)?;
                done.events += events;
                if groups < STEP as u64 {
                    break;
                }
            }
        }
    }
    if cfg.calls_days > 0 {
        let before = days_before(now_ns, cfg.calls_days);
        loop {
            let n = follower.kpi().expire_calls(before, STEP)?;
            done.calls += n as u64;
            if n < STEP {
                break;
            }
        }
    }
    Ok(done)
}

/// Runs a pass every `interval_s` until `stop`, and updates the store gauges.
pub(crate) async fn run(
    store: Store,
    follower: Arc<KpiFollower>,
    cfg: RetentionConfig,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(cfg.interval_s.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (store, follower, cfg, metrics) = (store.clone(), Arc::clone(&follower), cfg.clone(), Arc::clone(&metrics));
        let ran = tokio::task::spawn_blocking(move || {
            let done = pass(&store, &follower, &cfg, crate::now_ns())?;
            metrics.record_retention(&store, done);
            Ok::<_, StoreError>(done)
        })
        .await;
        match ran {
            Ok(Ok(done)) if done != Pass::default() => {
                tracing::info!(events = done.events, calls = done.calls, "Retention deleted old raw events and calls.");
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!(%error, "Retention pass failed."),
            Err(error) => tracing::error!(%error, "Retention task failed."),
        }
    }
}
