//! The batching loop shared by [`sink`](super::sink) and
//! [`flow`](super::flow), as a stream: takes chunks of offsets, commits by
//! size, by interval and at the stream's end, and yields one outcome per
//! acknowledged commit. Failures of `SendAndForget` commits are logged and
//! yield nothing.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, Stream, StreamExt};
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::WatchStream;

use super::run::Run;
use super::CommittableOffsetBatch;
use crate::consumer::CommittableOffset;
use crate::error::{Report, Result};
use crate::outcome::CommitOutcome;
use crate::settings::{CommitDelivery, CommitWhen, CommitterSettings};
use crate::task_sink::Pace;

type Chunks = Pin<Box<dyn Stream<Item = Vec<Run>> + Send>>;

/// The stream returned by [`flow`](super::flow): one [`CommitOutcome`] per
/// commit, then the end once its offsets ended and every commit was
/// answered, or the first commit error.
///
/// Cancel safety: dropping it does not cancel commits already sent; offsets
/// it received but had not sent are not committed.
#[must_use = "streams do nothing unless polled"]
pub struct CommitterFlow {
    settings: CommitterSettings,
    chunks: Chunks,
    batch: CommittableOffsetBatch,
    held: Held,
    in_flight: FuturesUnordered<BoxFuture<'static, Result<Option<CommitOutcome>>>>,
    /// When the batch must go out whatever its size; armed by its first offset.
    interval: Pin<Box<Sleep>>,
    /// The consumer's count of held revocations, from the first offset.
    revoking: Option<WatchStream<usize>>,
    /// The last count seen: above zero, nothing may wait.
    revocations: usize,
    upstream_done: bool,
    finished: bool,
    /// How the committer sink hands offsets over (see [`Self::paced`]).
    pace: Option<Pace<Run>>,
}

impl fmt::Debug for CommitterFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommitterFlow")
            .field("batched", &self.batch.len())
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl CommitterFlow {
    pub(super) fn new<S>(settings: CommitterSettings, chunks: S) -> Self
    where
        S: Stream<Item = Vec<Run>> + Send + 'static,
    {
        CommitterFlow {
            settings,
            chunks: Box::pin(chunks),
            batch: CommittableOffsetBatch::new(),
            held: Held::default(),
            in_flight: FuturesUnordered::new(),
            interval: Box::pin(tokio::time::sleep(Duration::ZERO)),
            revoking: None,
            revocations: 0,
            upstream_done: false,
            finished: false,
            pace: None,
        }
    }

    /// Lets the flow pace the committer sink's hand-overs. Each hand-over
    /// wakes this task. While a commit is in flight (and no revocation is
    /// held) the consumer would only merge what it receives into its next
    /// commit, sent once the one in flight is answered, so the flow defers:
    /// the sink hands over in larger chunks and its flushes leave their
    /// offsets in a deposit. When the last commit in flight is
    /// answered the flow takes the deposit and the sink hands over every
    /// chunk again. What is committed, and when, stays what it was; the
    /// wake-ups do not.
    pub(super) fn paced(mut self, pace: Pace<Run>) -> Self {
        self.pace = Some(pace);
        self
    }

    /// Tells the sink whether the flow defers, for the state it is in.
    /// True when it stopped deferring: the deposit is then to be taken.
    fn update_pace(&mut self) -> bool {
        let Some(pace) = &self.pace else {
            return false;
        };
        let defer = !self.in_flight.is_empty() && self.revocations == 0 && !self.upstream_done;
        if defer == pace.deferring() {
            return false;
        }
        pace.defer(defer);
        !defer
    }

    /// The sink's deposit, unless the flow defers.
    fn take_deposit(&self) -> Option<Vec<Run>> {
        self.pace
            .as_ref()
            .filter(|pace| !pace.deferring())
            .and_then(Pace::take_deposit)
    }

    /// Sends the batch and adds the wait for its answer to `in_flight`.
    ///
    /// No timer of ours races the commit: the consumer retries retriable
    /// failures until `commit_timeout`, and a commit librdkafka has sent is
    /// answered by the broker or fails after librdkafka's
    /// `socket.timeout.ms`. (A timer here once failed commits that the
    /// broker acknowledged a moment later, after a freeze.)
    fn dispatch(&mut self) {
        let delivery = self.settings.delivery;
        let consumers = self.batch.consumers();
        let commit = self.batch.dispatch(self.settings.commit_timeout, true);
        self.in_flight.push(
            async move {
                let result = commit.await;
                match (result, delivery) {
                    (Ok(outcome), _) => Ok(Some(outcome)),
                    (Err(e), CommitDelivery::SendAndForget) => {
                        tracing::warn!(error = %Report(&e), "commit failed (send-and-forget: ignored)");
                        Ok(None)
                    }
                    (Err(e), CommitDelivery::WaitForAck) => {
                        // The pipeline fails: so do the consumers it commits for.
                        for consumer in &consumers {
                            consumer.fail_consumer(e.clone());
                        }
                        Err(e)
                    }
                }
            }
            .boxed(),
        );
    }

    fn take_chunk(&mut self, chunk: Vec<Run>) {
        if self.revoking.is_none() {
            self.revoking = chunk
                .first()
                .map(|r| WatchStream::new(r.highest.partition.revoking()));
        }
        if self.batch.is_empty() {
            let deadline = Instant::now() + self.settings.max_interval;
            self.interval.as_mut().reset(deadline);
        }
        match self.settings.when {
            CommitWhen::OffsetFirstObserved => {
                for run in chunk {
                    self.batch.add_run(run);
                }
            }
            CommitWhen::NextOffsetObserved => self.held.observe(chunk, &mut self.batch),
        }
    }
}

impl Stream for CommitterFlow {
    type Item = Result<CommitOutcome>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        this.update_pace();
        // Each turn handles one event, in this order of priority: an answer,
        // a dispatch, offsets, the interval, a revocation.
        loop {
            if let Poll::Ready(Some(result)) = this.in_flight.poll_next_unpin(cx) {
                match result {
                    Ok(Some(outcome)) => return Poll::Ready(Some(Ok(outcome))),
                    Ok(None) => continue,
                    Err(e) => {
                        this.finished = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            }
            if this.upstream_done && this.batch.is_empty() && this.in_flight.is_empty() {
                this.finished = true;
                return Poll::Ready(None);
            }
            let room = this.in_flight.len() < this.settings.parallelism;
            // A full batch, the stream's end or an offset of a partition
            // whose revocation is held dispatches as soon as a commit slot is
            // free. Until then offsets keep merging into the batch: a slow
            // broker means fewer, larger commits, not a slower stream, and
            // the partitions that are not revoked batch as usual.
            if room
                && !this.batch.is_empty()
                && (this.upstream_done
                    || this.batch.len() >= this.settings.max_batch
                    || (this.revocations > 0 && this.batch.has_revoking()))
            {
                this.dispatch();
                continue;
            }
            if !this.upstream_done {
                match this.chunks.as_mut().poll_next(cx) {
                    Poll::Ready(Some(chunk)) => {
                        this.take_chunk(chunk);
                        continue;
                    }
                    Poll::Ready(None) => {
                        // Offsets a flush deposited (the channel's are older).
                        if let Some(deposit) = this.pace.as_ref().and_then(Pace::take_deposit) {
                            this.take_chunk(deposit);
                        }
                        this.upstream_done = true;
                        // At the end nothing follows: held offsets are committed too.
                        this.held.release(&mut this.batch);
                        continue;
                    }
                    Poll::Pending => {
                        // The channel is empty: what a flush deposited is next.
                        if let Some(deposit) = this.take_deposit() {
                            this.take_chunk(deposit);
                            continue;
                        }
                    }
                }
            }
            if room && !this.batch.is_empty() && this.interval.as_mut().poll(cx).is_ready() {
                this.dispatch();
                continue;
            }
            if let (false, Some(revoking)) = (this.upstream_done, this.revoking.as_mut()) {
                match revoking.poll_next_unpin(cx) {
                    Poll::Ready(Some(n)) => {
                        if n > 0 && this.revocations == 0 {
                            tracing::debug!(
                                offsets = this.batch.len(),
                                "partitions revoked: committing the partial batch"
                            );
                            this.held.release(&mut this.batch);
                        }
                        this.revocations = n;
                        continue;
                    }
                    // The consumer is gone: nothing more to watch.
                    Poll::Ready(None) => {
                        this.revoking = None;
                        this.revocations = 0;
                        continue;
                    }
                    Poll::Pending => {}
                }
            }
            if this.update_pace() {
                continue; // stopped deferring: take the deposit
            }
            return Poll::Pending;
        }
    }
}

/// Drives a flow to its end: the body of the committer sink's task.
pub(super) async fn drive(mut flow: CommitterFlow) -> Result<()> {
    while let Some(outcome) = flow.next().await {
        outcome?;
    }
    Ok(())
}

/// For [`CommitWhen::NextOffsetObserved`]: the newest offset of each
/// partition, held back until a newer one of the same partition arrives.
#[derive(Default)]
pub(super) struct Held {
    offsets: Vec<CommittableOffset>,
}

impl Held {
    /// Observes each run's next highest offset, then its highest: what
    /// observing all its offsets would do, as the others are lower.
    pub(super) fn observe(&mut self, chunk: Vec<Run>, batch: &mut CommittableOffsetBatch) {
        for run in chunk {
            batch.count_folded(run.folded);
            if let Some(o) = run.next_highest {
                self.observe_one(o, batch);
            }
            self.observe_one(run.highest, batch);
        }
    }

    fn observe_one(&mut self, offset: CommittableOffset, batch: &mut CommittableOffsetBatch) {
        match self.offsets.iter_mut().find(|h| h.same_partition(&offset)) {
            Some(h) if h.offset() < offset.offset() || h.generation() != offset.generation() => {
                offset.hold();
                batch.add(std::mem::replace(h, offset));
            }
            Some(_) => batch.add(offset),
            None => {
                offset.hold();
                self.offsets.push(offset);
            }
        }
    }

    pub(super) fn release(&mut self, batch: &mut CommittableOffsetBatch) {
        batch.extend(self.offsets.drain(..));
    }
}
