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
use std::task::{ready, Context, Poll};

use futures::channel::mpsc;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, Sink, StreamExt};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::consumer::CommittableOffset;
use crate::error::{Error, ErrorKind, Result};
use crate::settings::{CommitDelivery, CommitterSettings};

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
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| Error::config("committer::sink must be created inside a tokio runtime"))?;
    let (tx, rx) = mpsc::channel(4);
    let chunk = settings.max_batch.clamp(1, 256);
    let task = runtime.spawn(run(rx, settings));
    Ok(CommitterSink {
        buf: Vec::with_capacity(chunk),
        chunk,
        tx,
        task: Some(task),
        result: None,
    })
}

/// The sink returned by [`sink`].
#[must_use = "sinks do nothing unless offsets are sent to them"]
pub struct CommitterSink {
    buf: Vec<CommittableOffset>,
    chunk: usize,
    tx: mpsc::Sender<Vec<CommittableOffset>>,
    task: Option<JoinHandle<Result<()>>>,
    result: Option<Result<()>>,
}

impl fmt::Debug for CommitterSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommitterSink")
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl CommitterSink {
    /// Waits for the batching task to end and returns how it ended.
    fn poll_task(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if let Some(task) = &mut self.task {
            let joined = ready!(task.poll_unpin(cx));
            self.task = None;
            self.result = Some(match joined {
                Ok(r) => r,
                Err(e) => Err(Error::closed(format!(
                    "the committer task ended abnormally: {e}"
                ))),
            });
        }
        Poll::Ready(self.result.clone().unwrap_or(Ok(())))
    }

    /// Hands the local buffer to the batching task.
    fn poll_send_buf(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.buf.is_empty() {
            return Poll::Ready(Ok(()));
        }
        if ready!(self.tx.poll_ready(cx)).is_err() {
            // The task ended, so it failed: report why.
            return self
                .poll_task(cx)
                .map(|r| r.and(Err(Error::closed("the committer has stopped"))));
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(self.chunk));
        if self.tx.start_send(chunk).is_err() {
            return self
                .poll_task(cx)
                .map(|r| r.and(Err(Error::closed("the committer has stopped"))));
        }
        Poll::Ready(Ok(()))
    }
}

impl Sink<CommittableOffset> for CommitterSink {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        if this.buf.len() >= this.chunk {
            ready!(this.poll_send_buf(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: CommittableOffset) -> Result<()> {
        self.get_mut().buf.push(item);
        Ok(())
    }

    /// Hands every buffered offset to the batching task. It does not force a
    /// commit: that happens by batch size, by interval, or on close.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_buf(cx))?;
        if ready!(Pin::new(&mut this.tx).poll_flush(cx)).is_err() {
            return this
                .poll_task(cx)
                .map(|r| r.and(Err(Error::closed("the committer has stopped"))));
        }
        Poll::Ready(Ok(()))
    }

    /// Commits everything received and waits for the answers.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_buf(cx))?;
        this.tx.close_channel();
        this.poll_task(cx)
    }
}

impl Drop for CommitterSink {
    fn drop(&mut self) {
        // Best effort, never blocks: what reaches the task is still committed.
        if !self.buf.is_empty() {
            let _ = self.tx.try_send(std::mem::take(&mut self.buf));
        }
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
        let commit = batch.dispatch()?;
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
