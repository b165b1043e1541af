//! Group commit: one task owns appends, so many sources share each fsync.
//!
//! Sources call [`SpoolHandle::submit`] and await durability. The writer
//! takes the first queued request, keeps gathering for at most
//! `flush_interval` or until `flush_events` events are queued, commits the
//! group with [`Spool::append_group`] (one sled batch, one sync) on the
//! blocking pool, then answers every request of the group. Requests queue up
//! while a commit syncs, so under load groups grow by themselves.
//!
//! On shutdown (the token is cancelled) the writer stops accepting requests
//! (a later `submit` gets [`SpoolError::WriterClosed`]), commits everything
//! already queued, syncs and exits. It also exits when every handle is gone.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{AppendOutcome, AppendRequest, Spool, SpoolConfig, SpoolError, SpoolInput};

/// Requests that may wait for the writer before `submit` waits itself.
const QUEUE_REQUESTS: usize = 1024;

/// A request and where its outcome goes.
struct Submission {
    request: AppendRequest,
    reply: oneshot::Sender<Result<AppendOutcome, SpoolError>>,
}

/// Where sources submit events to the group-commit writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct SpoolHandle {
    tx: mpsc::Sender<Submission>,
}

impl std::fmt::Debug for Submission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submission").field("events", &self.request.0.len()).finish_non_exhaustive()
    }
}

impl SpoolHandle {
    /// Submits one source's events and checkpoint and waits until they are
    /// durable (or refused: [`AppendOutcome::Full`]). Semantics as
    /// [`Spool::append`].
    ///
    /// # Errors
    /// [`SpoolError::WriterClosed`] when the writer has stopped (nothing
    /// stored), [`SpoolError::GroupCommit`] when the commit failed,
    /// [`SpoolError::WriterPanicked`] when its outcome is unknown.
    ///
    /// # Cancel safety
    /// Not cancel safe: once the request is queued, dropping the future does
    /// not withdraw it; it is committed and its outcome is lost to the caller.
    pub async fn submit(
        &self,
        inputs: Vec<SpoolInput>,
        checkpoint: Option<(String, Vec<u8>)>,
    ) -> Result<AppendOutcome, SpoolError> {
        let (reply, outcome) = oneshot::channel();
        self.tx
            .send(Submission { request: (inputs, checkpoint), reply })
            .await
            .map_err(|_| SpoolError::WriterClosed)?;
        outcome.await.map_err(|_| SpoolError::WriterClosed)?
    }
}

/// Starts the group-commit writer for `spool` on the current tokio runtime.
///
/// Returns the handle sources submit through and the writer's task, which
/// ends after `shutdown` is cancelled and the queue is drained and synced
/// (or when every handle is dropped).
pub fn spawn_writer(spool: Spool, cfg: &SpoolConfig, shutdown: CancellationToken) -> (SpoolHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE_REQUESTS);
    let writer = Writer { spool, rx, interval: cfg.flush_interval, max_events: cfg.flush_events.max(1) };
    let task = tokio::spawn(writer.run(shutdown));
    (SpoolHandle { tx }, task)
}

struct Writer {
    spool: Spool,
    rx: mpsc::Receiver<Submission>,
    interval: Duration,
    max_events: usize,
}

impl Writer {
    async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let first = tokio::select! {
                msg = self.rx.recv() => match msg {
                    Some(m) => m,
                    None => break,
                },
                () = shutdown.cancelled() => break,
            };
            let mut events = first.request.0.len();
            let mut group = vec![first];
            let deadline = Instant::now() + self.interval;
            while events < self.max_events {
                tokio::select! {
                    msg = self.rx.recv() => match msg {
                        Some(m) => {
                            events += m.request.0.len();
                            group.push(m);
                        }
                        None => break,
                    },
                    () = tokio::time::sleep_until(deadline) => break,
                    () = shutdown.cancelled() => break,
                }
            }
            self.commit(group).await;
        }

        // Drain: refuse new requests, commit what is queued.
        self.rx.close();
        let mut drained = 0usize;
        loop {
            let mut group = Vec::new();
            let mut events = 0;
            while events < self.max_events {
                match self.rx.try_recv() {
                    Ok(m) => {
                        events += m.request.0.len();
                        group.push(m);
                    }
                    Err(_) => break,
                }
            }
            if group.is_empty() {
                break;
            }
            drained += group.len();
            self.commit(group).await;
        }
        let spool = self.spool.clone();
        let synced = tokio::task::spawn_blocking(move || spool.flush()).await;
        match synced {
            Ok(Ok(())) => tracing::info!(drained, "Spool writer stopped; queue drained and synced."),
            Ok(Err(error)) => tracing::error!(%error, drained, "Spool writer stopped; final sync failed."),
            Err(error) => tracing::error!(%error, drained, "Spool writer stopped; final sync panicked."),
        }
    }

    async fn commit(&self, group: Vec<Submission>) {
        let (requests, replies): (Vec<AppendRequest>, Vec<_>) = group.into_iter().map(|s| (s.request, s.reply)).unzip();
        let spool = self.spool.clone();
        let result = tokio::task::spawn_blocking(move || spool.append_group(requests)).await;
        match result {
            Ok(Ok(outcomes)) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Ok(Err(error)) => {
                tracing::error!(%error, requests = replies.len(), "Spool group commit failed.");
                let error = Arc::new(error);
                for reply in replies {
                    let _ = reply.send(Err(SpoolError::GroupCommit(Arc::clone(&error))));
                }
            }
            Err(error) => {
                tracing::error!(%error, requests = replies.len(), "Spool group commit panicked.");
                for reply in replies {
                    let _ = reply.send(Err(SpoolError::WriterPanicked));
                }
            }
        }
    }
}
