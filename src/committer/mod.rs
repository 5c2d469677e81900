//! Batched offset commits.
//!
//! [`sink`] gathers [`CommittableOffset`]s and commits the highest offset per
//! partition once [`max_batch`](CommitterSettings::max_batch) offsets arrived
//! or [`max_interval`](CommitterSettings::max_interval) passed, whichever comes
//! first, with up to [`parallelism`](CommitterSettings::parallelism) commits in
//! flight. Commits run on the consumer's own thread, never on a tokio worker.

mod batch;

pub use batch::CommittableOffsetBatch;

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::channel::mpsc;
use futures::stream::FuturesUnordered;
use futures::{Sink, StreamExt};
use tokio::time::Instant;

use crate::consumer::CommittableOffset;
use crate::error::{Error, ErrorKind, Result};
use crate::settings::{CommitDelivery, CommitterSettings};
use crate::task_sink::TaskSink;

/// A sink that commits the offsets it receives, in batches.
///
/// Must be created inside a tokio runtime: the batching runs as a task, so
/// [`max_interval`](CommitterSettings::max_interval) is honoured even while no
/// offsets arrive.
///
/// Closing the sink (as `StreamExt::forward` does when its stream ends)
/// commits the partial batch and waits for every commit; it fails with the
/// first commit error. Dropping it without closing still commits what reached
/// the batching task, without waiting.
///
/// ```no_run
/// # async fn run() -> reactive_kafka::Result<()> {
/// use futures::StreamExt;
/// use reactive_kafka::{committer, consumer, CommitterSettings, ConsumerSettings, Subscription};
///
/// let settings = ConsumerSettings::new("127.0.0.1:9092").group_id("billing");
/// let (source, control) = consumer::committable_source(settings, Subscription::topics(["orders"]))?;
/// source
///     .map(|msg| {
///         let msg = msg?;
///         // process msg.record here
///         Ok(msg.offset)
///     })
///     .forward(committer::sink(CommitterSettings::default())?)
///     .await?;
/// control.shutdown().await
/// # }
/// ```
pub fn sink(settings: CommitterSettings) -> Result<CommitterSink> {
    settings.validate()?;
    let chunk = settings.max_batch.clamp(1, 256);
    let inner = TaskSink::spawn("committer::sink", chunk, move |rx| run(rx, settings))?;
    Ok(CommitterSink { inner })
}

/// The sink returned by [`sink`].
#[must_use = "sinks do nothing unless offsets are sent to them"]
pub struct CommitterSink {
    inner: TaskSink<CommittableOffset>,
}

impl fmt::Debug for CommitterSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommitterSink")
            .field("buffered", &self.inner.buffered())
            .finish_non_exhaustive()
    }
}

impl Sink<CommittableOffset> for CommitterSink {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: CommittableOffset) -> Result<()> {
        Pin::new(&mut self.get_mut().inner).start_send(item)
    }

    /// Hands every buffered offset to the batching task. It does not force a
    /// commit: that happens by batch size, by interval, or on close.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    /// Commits everything received and waits for the answers.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

async fn run(
    mut rx: mpsc::Receiver<Vec<CommittableOffset>>,
    settings: CommitterSettings,
) -> Result<()> {
    let mut batch = CommittableOffsetBatch::new();
    let mut inflight = FuturesUnordered::new();
    let mut deadline = Instant::now();
    let mut upstream_done = false;
    let timeout = settings.commit_timeout;
    let delivery = settings.delivery;
    let dispatch = |batch: &mut CommittableOffsetBatch| -> Result<_> {
        let offsets = batch.len();
        let commit = batch.dispatch(timeout)?;
        Ok(async move {
            let result = match tokio::time::timeout(timeout, commit).await {
                Ok(r) => r,
                Err(_) => Err(Error::new(
                    ErrorKind::Timeout,
                    format!("commit of {offsets} offsets not acknowledged within {timeout:?} (commit_timeout)"),
                )),
            };
            match (result, delivery) {
                (Ok(_), _) => Ok(()),
                (Err(e), CommitDelivery::SendAndForget) => {
                    tracing::warn!(error = %e, "commit failed (send-and-forget: ignored)");
                    Ok(())
                }
                (Err(e), CommitDelivery::WaitForAck) => Err(e),
            }
        })
    };
    loop {
        if upstream_done && batch.is_empty() && inflight.is_empty() {
            return Ok(());
        }
        let room = inflight.len() < settings.parallelism;
        tokio::select! {
            biased;
            Some(result) = inflight.next(), if !inflight.is_empty() => result?,
            chunk = rx.next(), if !upstream_done && room => match chunk {
                Some(chunk) => {
                    if batch.is_empty() {
                        deadline = Instant::now() + settings.max_interval;
                    }
                    batch.extend(chunk);
                    if batch.len() >= settings.max_batch {
                        inflight.push(dispatch(&mut batch)?);
                    }
                }
                None => {
                    upstream_done = true;
                    if !batch.is_empty() {
                        inflight.push(dispatch(&mut batch)?);
                    }
                }
            },
            _ = tokio::time::sleep_until(deadline), if !batch.is_empty() && room => {
                inflight.push(dispatch(&mut batch)?);
            }
        }
    }
}
