//! Batched offset commits.
//!
//! [`sink`] gathers [`CommittableOffset`]s and commits the highest offset per
//! partition once [`max_batch`](CommitterSettings::max_batch) offsets arrived
//! or [`max_interval`](CommitterSettings::max_interval) passed, whichever comes
//! first, with up to [`parallelism`](CommitterSettings::parallelism) commits in
//! flight. Commits run on the consumer's own thread, never on a tokio worker.
//!
//! When the consumer starts holding a revocation (rebalance-safe commits),
//! the committer commits its partial batch at once, and while a revocation is
//! held it commits each arriving chunk without waiting for the batch to
//! fill, so the revocation completes as soon as the records are processed.
//! A committer watches the consumer of the first offset it receives; one
//! committer shared by several consumers flushes early only for that one.

mod batch;
pub(crate) mod tracker;

pub use batch::CommittableOffsetBatch;

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::FuturesUnordered;
use futures::{Sink, Stream, StreamExt, TryStreamExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::consumer::{CommitOutcome, CommittableOffset};
use crate::error::{Error, ErrorKind, Result};
use crate::settings::{CommitDelivery, CommitWhen, CommitterSettings};
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
    let inner = TaskSink::spawn("committer::sink", chunk, move |rx| {
        commit_batches(settings, rx).try_for_each(|_| futures::future::ready(Ok(())))
    })?;
    Ok(CommitterSink { inner })
}

/// Commits the offsets of `offsets` like [`sink`] does, and yields what each
/// commit did (partitions and offsets committed, stale offsets dropped, time
/// taken), so work can follow a commit. Ends after the last commit once
/// `offsets` ends; fails with the first commit error.
///
/// Must be polled inside a tokio runtime (it uses its timer).
pub fn flow<S>(settings: CommitterSettings, offsets: S) -> Result<CommitterFlow>
where
    S: Stream<Item = CommittableOffset> + Send + 'static,
{
    settings.validate()?;
    let chunks = offsets.ready_chunks(settings.max_batch.clamp(1, 256));
    Ok(CommitterFlow {
        inner: Box::pin(commit_batches(settings, Box::pin(chunks))),
    })
}

/// The stream returned by [`flow`]: one [`CommitOutcome`] per commit.
#[must_use = "streams do nothing unless polled"]
pub struct CommitterFlow {
    inner: Pin<Box<dyn Stream<Item = Result<CommitOutcome>> + Send>>,
}

impl fmt::Debug for CommitterFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommitterFlow").finish_non_exhaustive()
    }
}

impl Stream for CommitterFlow {
    type Item = Result<CommitOutcome>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
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

/// The batching loop shared by [`sink`] and [`flow`]: takes chunks of
/// offsets, commits by size, interval and stream end, yields one outcome per
/// acknowledged commit (failures of `SendAndForget` commits are logged and
/// yield nothing).
fn commit_batches<S>(
    settings: CommitterSettings,
    mut chunks: S,
) -> impl Stream<Item = Result<CommitOutcome>> + Send
where
    S: Stream<Item = Vec<CommittableOffset>> + Send + Unpin + 'static,
{
    async_stream::try_stream! {
        let mut batch = CommittableOffsetBatch::new();
        let mut held = Held::default();
        let mut inflight = FuturesUnordered::new();
        let mut deadline = Instant::now();
        let mut upstream_done = false;
        // The consumer's count of held revocations, from the first offset.
        let mut revoking: Option<watch::Receiver<usize>> = None;
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
                    (Ok(outcome), _) => Ok(Some(outcome)),
                    (Err(e), CommitDelivery::SendAndForget) => {
                        tracing::warn!(error = %e, "commit failed (send-and-forget: ignored)");
                        Ok(None)
                    }
                    (Err(e), CommitDelivery::WaitForAck) => Err(e),
                }
            })
        };
        loop {
            if upstream_done && batch.is_empty() && inflight.is_empty() {
                break;
            }
            let room = inflight.len() < settings.parallelism;
            // A full batch, the stream's end or a held revocation (nothing
            // may wait then) dispatches as soon as a commit slot is free.
            // Until then offsets keep merging into the batch: a slow broker
            // means fewer, larger commits, not a slower stream.
            if room
                && !batch.is_empty()
                && (upstream_done
                    || batch.len() >= settings.max_batch
                    || revoking.as_ref().is_some_and(|r| *r.borrow() > 0))
            {
                inflight.push(dispatch(&mut batch)?);
                continue;
            }
            // The branches only pick the event: `?` works outside `select!`.
            let event = tokio::select! {
                biased;
                Some(result) = inflight.next(), if !inflight.is_empty() => Event::Answered(result),
                chunk = chunks.next(), if !upstream_done => Event::Offsets(chunk),
                _ = tokio::time::sleep_until(deadline), if !batch.is_empty() && room => Event::Interval,
                _ = revocation(&mut revoking), if !upstream_done => Event::Revoking,
            };
            match event {
                Event::Answered(result) => {
                    if let Some(outcome) = result? {
                        yield outcome;
                    }
                }
                Event::Offsets(Some(chunk)) => {
                    if revoking.is_none() {
                        revoking = chunk
                            .first()
                            .map(|o| o.partition.link.shared.revoking.subscribe());
                    }
                    if batch.is_empty() {
                        deadline = Instant::now() + settings.max_interval;
                    }
                    match settings.when {
                        CommitWhen::OffsetFirstObserved => batch.extend(chunk),
                        CommitWhen::NextOffsetObserved => held.observe(chunk, &mut batch),
                    }
                }
                Event::Offsets(None) => {
                    upstream_done = true;
                    // At the end nothing follows: held offsets are committed too.
                    held.release(&mut batch);
                }
                Event::Interval => inflight.push(dispatch(&mut batch)?),
                Event::Revoking => {
                    tracing::debug!(offsets = batch.len(), "partitions revoked: committing the partial batch");
                    held.release(&mut batch);
                }
            }
        }
    }
}

enum Event {
    Answered(Result<Option<CommitOutcome>>),
    Offsets(Option<Vec<CommittableOffset>>),
    Interval,
    Revoking,
}

/// Resolves when the consumer starts holding a revocation for commits;
/// never when there is no consumer to watch (yet).
async fn revocation(revoking: &mut Option<watch::Receiver<usize>>) {
    let Some(rx) = revoking else {
        return std::future::pending().await;
    };
    loop {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
        if *rx.borrow_and_update() > 0 {
            return;
        }
    }
}

/// For [`CommitWhen::NextOffsetObserved`]: the newest offset of each
/// partition, held back until a newer one of the same partition arrives.
#[derive(Default)]
struct Held {
    offsets: Vec<CommittableOffset>,
}

impl Held {
    fn observe(&mut self, chunk: Vec<CommittableOffset>, batch: &mut CommittableOffsetBatch) {
        for offset in chunk {
            match self.offsets.iter_mut().find(|h| h.same_partition(&offset)) {
                Some(h)
                    if h.offset() < offset.offset() || h.generation() != offset.generation() =>
                {
                    batch.add(std::mem::replace(h, offset));
                }
                Some(_) => batch.add(offset),
                None => self.offsets.push(offset),
            }
        }
    }

    fn release(&mut self, batch: &mut CommittableOffsetBatch) {
        batch.extend(self.offsets.drain(..));
    }
}
