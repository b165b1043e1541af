//! Source tasks: each reads one PBX feed, maps it with a sans-IO mapper from
//! `callkpi-feeds`, and hands the events to the spool.
//!
//! A source never talks to the spool directly but through [`EventSink`], a
//! two-method trait the spool implements ([`SpoolSink`]) and tests replace
//! with an in-memory twin.
//!
//! Replay and the spool's byte cap:
//! - [`queue_log`] can replay (the file is still there): it submits events
//!   with `replayable = true` together with its checkpoint, and on
//!   [`AppendOutcome::Full`] it waits and retries the same chunk, never
//!   advancing its checkpoint. Nothing is lost; reading pauses.
//! - [`ami`] cannot replay (a socket): it submits with `replayable = false`;
//!   when the spool is full it drops its oldest events to make room and
//!   counts them (`callkpi_spool_dropped_events_total`). [`linemon`] (a
//!   serial line), [`esl`] and [`hep`] (sockets) do the same.
//!
//! # Layout
//! - [`queue_log`]: tails an Asterisk queue_log file with byte-offset checkpoints.
//! - [`ami`]: an Asterisk Manager Interface client.
//! - [`linemon`]: the analogue line monitor board on a serial port.
//! - [`esl`]: a FreeSWITCH event-socket client (channel and mod_callcenter events).
//! - [`hep`]: a HEP listener (UDP, TCP) tracking the SIP calls a proxy mirrors.

pub mod ami;
pub mod esl;
pub mod hep;
pub mod linemon;
pub mod queue_log;

use std::future::Future;

use crate::spool::{AppendOutcome, Spool, SpoolError, SpoolHandle, SpoolInput};

/// Where sources put their events: the spool, or a twin in tests.
pub trait EventSink: Clone + Send + Sync + 'static {
    /// The checkpoint stored under `key` (written by a previous
    /// [`submit`](Self::submit)), if any.
    ///
    /// # Errors
    /// When the spool cannot be read.
    fn checkpoint(&self, key: &str) -> Result<Option<Vec<u8>>, SpoolError>;

    /// Stores `inputs` and `checkpoint` atomically (one sled batch) and
    /// returns once they are durable.
    ///
    /// # Errors
    /// When the spool cannot be written.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping the future may or may not have stored the
    /// inputs. Sources only drop it at shutdown and replay from their last
    /// confirmed checkpoint.
    fn submit(
        &self,
        inputs: Vec<SpoolInput>,
        checkpoint: Option<(String, Vec<u8>)>,
    ) -> impl Future<Output = Result<AppendOutcome, SpoolError>> + Send;
}

/// The real sink: reads checkpoints from the [`Spool`], writes through the
/// group-commit writer's [`SpoolHandle`].
#[derive(Clone)]
pub struct SpoolSink {
    spool: Spool,
    handle: SpoolHandle,
}

impl std::fmt::Debug for SpoolSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolSink").finish_non_exhaustive()
    }
}

impl SpoolSink {
    /// A sink over `spool` and its writer.
    pub fn new(spool: Spool, handle: SpoolHandle) -> Self {
        Self { spool, handle }
    }
}

impl EventSink for SpoolSink {
    fn checkpoint(&self, key: &str) -> Result<Option<Vec<u8>>, SpoolError> {
        self.spool.checkpoint(key)
    }

    async fn submit(
        &self,
        inputs: Vec<SpoolInput>,
        checkpoint: Option<(String, Vec<u8>)>,
    ) -> Result<AppendOutcome, SpoolError> {
        self.handle.submit(inputs, checkpoint).await
    }
}
