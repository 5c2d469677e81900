//! Batched offset commits.
//!
//! [`sink`] gathers [`CommittableOffset`]s and commits the highest offset per
//! partition once [`max_batch`](CommitterSettings::max_batch) offsets arrived
//! or [`max_interval`](CommitterSettings::max_interval) passed, whichever comes
//! first, with up to [`parallelism`](CommitterSettings::parallelism) commits in
//! flight. Commits run on the consumer's own thread, never on a tokio worker.
//!
//! When the consumer starts holding a revocation (rebalance-safe commits),
//! the committer commits its partial batch at once if it holds an offset of
//! a revoked partition, and while the revocation is held it commits each
//! arriving chunk that does without waiting for the batch to fill, so the
//! revocation completes as soon as the records are processed. Offsets of
//! the partitions the consumer keeps batch as usual.
//! A committer watches the consumer of the first offset it receives; one
//! committer shared by several consumers flushes early only for that one.
//!
//! [`sink`] hands offsets to its task in chunks: one per `max_batch`
//! offsets (at most 1,024), and whenever `forward` flushes it because its
//! source has nothing for a moment. Each hand-over wakes the task. While a
//! commit is in flight the consumer merges what it receives into its next
//! commit, sent when the one in flight is answered; so meanwhile the sink
//! hands over only every 16 chunks and leaves what a flush gives it in a
//! deposit that the task takes when the answer comes (at once on a held
//! revocation or on close). A busy pipeline wakes the task about once per
//! commit instead of once per chunk; what is committed stays the same.
//!
//! A commit that fails (after its retries, with
//! [`CommitDelivery::WaitForAck`](crate::CommitDelivery::WaitForAck)) fails
//! the committer and ends the consumers it commits for with the same error:
//! their streams end with it, `Control::is_shutdown` resolves with it, and
//! their held revocations are released. A pipeline
//! `source.map(..).forward(committer::sink(..))` hears of it at once, also
//! while its source is idle: the sink's `poll_flush`, which `forward` calls
//! whenever the stream has nothing, returns the error.

mod batch;
mod flow;
mod run;
mod sink;
#[cfg(test)]
mod tests;

pub use batch::CommittableOffsetBatch;
pub use flow::CommitterFlow;
pub use sink::CommitterSink;

use futures::{Stream, StreamExt};

use crate::consumer::CommittableOffset;
use crate::error::Result;
use crate::settings::{CommitWhen, CommitterSettings};
use crate::task_sink::{Pace, TaskSink};

/// The most offsets handed to the batching loop at once. They arrive folded
/// into runs (one or two values per partition), so a hand-over is small; the
/// default `max_batch` (1000) fits in one.
const CHUNK: usize = 1024;

/// How many times larger the sink's hand-overs grow while a commit is in
/// flight (see `CommitterFlow::paced`).
const IN_FLIGHT_CHUNKS: usize = 16;

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
    let chunk = settings.max_batch.clamp(1, CHUNK);
    let pace = Pace::deferring_to(chunk, chunk * IN_FLIGHT_CHUNKS);
    let on_receipt = settings.when == CommitWhen::OffsetFirstObserved;
    let inner = TaskSink::spawn("committer::sink", pace.clone(), move |rx| {
        flow::drive(CommitterFlow::new(settings, rx).paced(pace))
    })?;
    Ok(CommitterSink::new(inner, on_receipt))
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
    let chunks = offsets
        .ready_chunks(settings.max_batch.clamp(1, CHUNK))
        .map(run::runs);
    Ok(CommitterFlow::new(settings, chunks))
}
