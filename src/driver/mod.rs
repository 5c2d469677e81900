//! The consumer driver: one dedicated thread per consumer owns the librdkafka
//! handle and every blocking call on it. Async code talks to it only through
//! the methods of [`DriverHandle`] and [`PartitionHandle`] and receives
//! records through bounded channels; the commands and the state the thread
//! shares with them are private to this module.
//!
//! Parts, each in its own file and each testable without librdkafka but the
//! last two:
//!
//! - `handover`: the hand-over point between a source and the driver for one
//!   assignment (which records reached the user);
//! - `ack`: out-of-order acknowledgements and their watermark;
//! - `table`: the partitions assigned now, their outputs, pending batches
//!   and committed offsets;
//! - `revocation`: revocations held until handed-out records are committed;
//! - `pipeline`: commits: one in flight, merging, retries, stale offsets;
//! - `delivery`: batches of a partition to its source, in order;
//! - `run`: the thread's loop, which ties the parts to the consumer;
//! - `context` and `ffi`: librdkafka callbacks and every `unsafe` call.

mod ack;
mod context;
mod delivery;
#[cfg(any(test, feature = "testkit"))]
pub(crate) mod fake;
mod ffi;
#[cfg(feature = "metrics")]
pub(crate) use ffi::message_latency_us;
mod handover;
mod missing;
mod pipeline;
mod records;
mod revocation;
mod run;
mod spawn;
mod table;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::task::{Context, Poll};
use std::thread::Thread;
use std::time::{Duration, Instant};

use rdkafka::consumer::ConsumerGroupMetadata;
use tokio::sync::{oneshot, watch};

use crate::counted::Counted;
use crate::error::{Error, Result};
use crate::listener::RebalanceListener;
use crate::outcome::{CommitOutcome, ConsumerMetrics, DrainReport};
use crate::record::{ConsumerRecord, TopicPartition};
use crate::settings::ConsumerSettings;
use crate::subscription::Subscription;

use ack::{AckTracker, Outstanding};
pub(crate) use handover::HandOver;
pub(crate) use spawn::spawn;

/// What [`spawn`] needs to know.
#[derive(Debug)]
pub(crate) struct DriverConfig {
    pub(crate) settings: ConsumerSettings,
    pub(crate) subscription: Subscription,
    pub(crate) committable: bool,
    pub(crate) partitioned: bool,
}

/// What the driver hands to a source: records of one partition, in offset order.
#[derive(Debug)]
pub(crate) struct RecordBatch {
    pub(crate) partition: Counted<PartitionHandle>,
    pub(crate) records: Vec<ConsumerRecord>,
}

/// The receiving end of a driver's output, held by the source.
#[derive(Debug)]
pub(crate) enum SourceRx {
    /// Every partition into one stream.
    Single(tokio::sync::mpsc::Receiver<RecordBatch>),
    /// A sub-stream per assigned partition, announced on this channel.
    Partitioned(tokio::sync::mpsc::UnboundedReceiver<SubSource>),
}

/// A partition's sub-stream as the driver announces it.
#[derive(Debug)]
pub(crate) struct SubSource {
    pub(crate) tp: TopicPartition,
    pub(crate) handover: Arc<HandOver>,
    pub(crate) rx: tokio::sync::mpsc::Receiver<RecordBatch>,
}

/// Which stream a dropped source was.
#[derive(Debug)]
pub(crate) enum SourceScope {
    /// The single stream of a non-partitioned source.
    All,
    /// The stream of sub-streams of a partitioned source.
    Assignments,
    /// One partition's sub-stream (of one assignment).
    Partition(Arc<HandOver>),
}

/// Lifecycle of a driver, observed through `Control` and the sources.
#[derive(Debug, Clone)]
pub(crate) enum DriverState {
    Running,
    Stopped,
    Closed(Result<()>),
}

/// Offsets to commit (next to read), each with its partition's assignment.
pub(crate) type CommitOffsets = Vec<(Counted<PartitionHandle>, i64)>;

/// A consumer's group metadata (member id, generation), opaque.
pub(crate) struct GroupMetadata(pub(crate) ConsumerGroupMetadata);

impl std::fmt::Debug for GroupMetadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupMetadata")
    }
}

/// Commands from async code to the driver thread.
#[derive(Debug)]
enum Command {
    Commit {
        offsets: CommitOffsets,
        reply: oneshot::Sender<Result<CommitOutcome>>,
        /// Retriable failures are retried (with backoff) until then.
        retry_until: Instant,
        /// From a committer: waits for `min_commit_interval` even when no
        /// commit is in flight (its task asks again only once answered).
        spaced: bool,
    },
    Stop,
    Drain {
        deadline: Instant,
        reply: oneshot::Sender<DrainReport>,
    },
    Shutdown,
    /// A source was dropped: nothing more is delivered to it.
    SourceDropped(SourceScope),
    /// Every `DriverHandle` was dropped.
    Released,
    /// The pipeline that commits for this consumer failed: close with this error.
    Fail(Error),
    /// The consumer group's metadata (member, generation), for a
    /// transaction to commit offsets with.
    GroupMetadata(oneshot::Sender<Option<GroupMetadata>>),
    /// A producer's transaction committed these offsets (next offsets to
    /// read) for the group: record them as committed.
    CommittedInTransaction {
        offsets: CommitOffsets,
        reply: oneshot::Sender<CommitOutcome>,
    },
}

/// Where a link's commands go.
#[derive(Debug)]
enum Target {
    /// The driver thread: a channel, and an unpark to wake it.
    Thread {
        commands: mpsc::Sender<Command>,
        thread: Thread,
    },
    /// A test double that answers on the caller's thread.
    #[cfg(any(test, feature = "testkit"))]
    Fake(Arc<fake::Recorder>),
}

/// The command path to a driver and the state it shares. Held by partition
/// handles (and so by every committable offset); does not keep the driver
/// alive.
#[derive(Debug)]
struct DriverLink {
    id: u64,
    target: Target,
    shared: Shared,
}

/// A new driver's id: tells consumers apart in logs and thread names.
fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl DriverLink {
    fn new(id: u64, target: Target, shared: Shared) -> Self {
        DriverLink { id, target, shared }
    }

    fn send(&self, command: Command) -> Result<()> {
        match &self.target {
            Target::Thread { commands, thread } => {
                commands
                    .send(command)
                    .map_err(|_| Error::closed("the consumer is closed"))?;
                thread.unpark();
                Ok(())
            }
            #[cfg(any(test, feature = "testkit"))]
            Target::Fake(recorder) => {
                recorder.handle(command, &self.shared);
                Ok(())
            }
        }
    }

    fn wake(&self) {
        match &self.target {
            Target::Thread { thread, .. } => thread.unpark(),
            #[cfg(any(test, feature = "testkit"))]
            Target::Fake(_) => {}
        }
    }
}

/// State the driver thread shares with async code.
#[derive(Debug)]
struct Shared {
    state: watch::Sender<DriverState>,
    counters: Counters,
    handed_out: HandedOutCounts,
    health: Health,
    /// librdkafka's latest statistics, when `statistics.interval.ms` is set.
    statistics: watch::Sender<Option<Arc<rdkafka::statistics::Statistics>>>,
    /// With out-of-order commits: offsets handed out and not yet committable.
    outstanding: Option<Outstanding>,
    /// How many revocations wait for commits; committers flush at once
    /// while it is above zero.
    revoking: watch::Sender<usize>,
    /// What was committed and what was not when the consumer closed: the
    /// report of every drain asked for after that.
    final_report: OnceLock<DrainReport>,
}

impl Shared {
    fn new(max_outstanding: Option<usize>) -> Self {
        Shared {
            state: watch::channel(DriverState::Running).0,
            counters: Counters::default(),
            handed_out: HandedOutCounts::default(),
            health: Health::new(),
            statistics: watch::channel(None).0,
            outstanding: max_outstanding.map(Outstanding::new),
            revoking: watch::channel(0).0,
            final_report: OnceLock::new(),
        }
    }

    fn set_state(&self, state: DriverState) {
        self.state.send_replace(state);
    }

    /// The figures now, with every source's count of records handed out.
    fn metrics(&self) -> ConsumerMetrics {
        self.counters.snapshot(self.handed_out.total())
    }
}

/// Records one source handed out. Only that source writes it (a load and a
/// store per record, no locked instruction), on a cache line of its own, so
/// neither the driver nor another source's thread contends for it.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct HandedOut(AtomicU64);

impl HandedOut {
    /// Counts one record; called only by the source that owns the count.
    #[inline]
    pub(crate) fn one(&self) {
        let n = self.0.load(Ordering::Relaxed);
        self.0.store(n + 1, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The live sources' counts of records handed out, and what the sources
/// that ended handed out.
#[derive(Debug, Default)]
struct HandedOutCounts {
    inner: std::sync::Mutex<(u64, Vec<Arc<HandedOut>>)>,
}

impl HandedOutCounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, Vec<Arc<HandedOut>>)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open(&self) -> Arc<HandedOut> {
        let count = Arc::new(HandedOut::default());
        self.lock().1.push(count.clone());
        count
    }

    fn close(&self, count: &Arc<HandedOut>) {
        let mut inner = self.lock();
        inner.0 += count.get();
        inner.1.retain(|c| !Arc::ptr_eq(c, count));
    }

    fn total(&self) -> u64 {
        let inner = self.lock();
        inner.0 + inner.1.iter().map(|c| c.get()).sum::<u64>()
    }
}

#[derive(Debug, Default)]
struct Counters {
    records: AtomicU64,
    bytes: AtomicU64,
    batches: AtomicU64,
    assigned_partitions: AtomicU64,
    assignments: AtomicU64,
    revocations: AtomicU64,
    commits: AtomicU64,
    commit_failures: AtomicU64,
    commit_retries: AtomicU64,
    commits_in_flight: AtomicU64,
    offsets_committed: AtomicU64,
    offsets_stale: AtomicU64,
    retried_errors: AtomicU64,
    revocation_hold_nanos: AtomicU64,
    partition_pauses: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters now, with the sources' count of records handed out.
    fn snapshot(&self, records_handed_out: u64) -> ConsumerMetrics {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ConsumerMetrics {
            records: get(&self.records),
            records_handed_out,
            bytes: get(&self.bytes),
            batches: get(&self.batches),
            assigned_partitions: get(&self.assigned_partitions),
            assignments: get(&self.assignments),
            revocations: get(&self.revocations),
            commits: get(&self.commits),
            commit_failures: get(&self.commit_failures),
            commit_retries: get(&self.commit_retries),
            commits_in_flight: get(&self.commits_in_flight),
            offsets_committed: get(&self.offsets_committed),
            offsets_stale: get(&self.offsets_stale),
            retried_errors: get(&self.retried_errors),
            revocation_hold_time: std::time::Duration::from_nanos(get(&self.revocation_hold_nanos)),
            partition_pauses: get(&self.partition_pauses),
        }
    }
}

/// Per partition, `consumer_lag` from librdkafka's statistics (partitions
/// whose lag librdkafka does not know yet left out), sorted.
pub(crate) fn lag_of(
    stats: Option<&rdkafka::statistics::Statistics>,
) -> Vec<(crate::record::TopicPartition, i64)> {
    let Some(stats) = stats else {
        return Vec::new();
    };
    let mut lag: Vec<_> = stats
        .topics
        .iter()
        .flat_map(|(topic, t)| {
            t.partitions
                .values()
                .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
                .map(move |p| {
                    (
                        crate::record::TopicPartition::new(topic.as_str(), p.partition),
                        p.consumer_lag,
                    )
                })
        })
        .collect();
    lag.sort_by(|a, b| (&*a.0.topic, a.0.partition).cmp(&(&*b.0.topic, b.0.partition)));
    lag
}

/// Whether a source was pulled since the driver last looked, on a cache
/// line of its own: sources read it on every pull and write it only after
/// the driver cleared it, where a count bumped per record would move the
/// line between the two threads' cores for every record.
#[derive(Debug, Default)]
#[repr(align(64))]
struct PullFlag(std::sync::atomic::AtomicBool);

/// When things last happened, for `Control::health`: milliseconds since
/// the driver started, plus one (0: never).
#[derive(Debug)]
struct Health {
    started: std::time::Instant,
    pulled: AtomicU64,
    polled: AtomicU64,
    committed: AtomicU64,
    stalls: AtomicU64,
    /// Set by a source on each pull, cleared by the driver when it looks;
    /// `pulled` is when the driver last found it set.
    pull_seen: PullFlag,
    /// Sources holding records of a batch they took, not yet handed out.
    holding: AtomicU64,
    last_error: std::sync::Mutex<Option<Error>>,
}

impl Health {
    fn new() -> Self {
        Health {
            started: std::time::Instant::now(),
            pulled: AtomicU64::new(0),
            polled: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            pull_seen: PullFlag::default(),
            holding: AtomicU64::new(0),
            last_error: std::sync::Mutex::new(None),
        }
    }

    fn mark(&self, at: &AtomicU64) {
        at.store(
            self.started.elapsed().as_millis() as u64 + 1,
            Ordering::Relaxed,
        );
    }

    fn since(&self, at: &AtomicU64) -> Option<Duration> {
        match at.load(Ordering::Relaxed) {
            0 => None,
            t => Some(
                self.started
                    .elapsed()
                    .saturating_sub(Duration::from_millis(t - 1)),
            ),
        }
    }

    /// Notes the time if the source was pulled since the last look (the
    /// driver thread's, each pass of its loop).
    fn look_at_pulls(&self) {
        let flag = &self.pull_seen.0;
        if flag.load(Ordering::Relaxed) && flag.swap(false, Ordering::Relaxed) {
            self.mark(&self.pulled);
        }
    }

    fn error(&self, e: &Error) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
    }
}

/// A user's hold on a driver (the source stream and each `Control`). When the
/// last one is dropped, the driver closes the consumer on its own thread.
#[derive(Debug)]
pub(crate) struct DriverHandle {
    link: Arc<DriverLink>,
    close_timeout: Duration,
}

impl DriverHandle {
    /// A number that tells consumers apart in logs and `Debug` output.
    pub(crate) fn id(&self) -> u64 {
        self.link.id
    }

    /// How long closing the consumer may take.
    pub(crate) fn close_timeout(&self) -> Duration {
        self.close_timeout
    }

    /// Asks the driver to stop fetching.
    pub(crate) fn stop(&self) -> Result<()> {
        self.link.send(Command::Stop)
    }

    /// Asks the driver to close the consumer.
    pub(crate) fn shutdown(&self) -> Result<()> {
        self.link.send(Command::Shutdown)
    }

    /// Asks the driver to stop, wait until `deadline` for handed-out records
    /// to be committed, then close; the report arrives on the receiver.
    pub(crate) fn drain(&self, deadline: Instant) -> Result<oneshot::Receiver<DrainReport>> {
        let (reply, rx) = oneshot::channel();
        self.link.send(Command::Drain { deadline, reply })?;
        Ok(rx)
    }

    /// The drain report of a consumer that has closed.
    pub(crate) fn final_report(&self) -> Option<DrainReport> {
        self.link.shared.final_report.get().cloned()
    }

    /// Tells the driver a source was dropped. Never blocks.
    pub(crate) fn source_dropped(&self, scope: SourceScope) {
        let _ = self.link.send(Command::SourceDropped(scope));
    }

    /// The driver's lifecycle, to wait on.
    pub(crate) fn state(&self) -> watch::Receiver<DriverState> {
        self.link.shared.state.subscribe()
    }

    /// The driver's lifecycle now.
    pub(crate) fn state_now(&self) -> DriverState {
        self.link.shared.state.borrow().clone()
    }

    /// A snapshot of the counters.
    pub(crate) fn metrics(&self) -> ConsumerMetrics {
        self.link.shared.metrics()
    }

    /// Per partition, the lag in the latest statistics.
    pub(crate) fn lag(&self) -> Vec<(crate::record::TopicPartition, i64)> {
        // The latest statistics, taken out of the watch before the work.
        let stats = self.link.shared.statistics.borrow().clone();
        lag_of(stats.as_deref())
    }

    /// librdkafka's statistics as they come.
    pub(crate) fn statistics(
        &self,
    ) -> watch::Receiver<Option<Arc<rdkafka::statistics::Statistics>>> {
        self.link.shared.statistics.subscribe()
    }

    /// The source was pulled: for the health view and the stall watchdog.
    /// A relaxed load per pull, and a store only once the driver cleared
    /// the flag (a clock read per record would cost a few percent of
    /// throughput); the driver thread notes the time it finds it set.
    #[inline]
    pub(crate) fn pulled(&self) {
        let flag = &self.link.shared.health.pull_seen.0;
        if !flag.load(Ordering::Relaxed) {
            flag.store(true, Ordering::Relaxed);
        }
    }

    /// A count of records handed out for a new source; give it back with
    /// [`close_handed_out`](Self::close_handed_out) when the source ends.
    pub(crate) fn open_handed_out(&self) -> Arc<HandedOut> {
        self.link.shared.handed_out.open()
    }

    /// Adds an ending source's count to the consumer's total.
    pub(crate) fn close_handed_out(&self, count: &Arc<HandedOut>) {
        self.link.shared.handed_out.close(count);
    }

    /// A source now holds records it took and has not handed out (true),
    /// or no longer does (false).
    pub(crate) fn holding(&self, holding: bool) {
        let count = &self.link.shared.health.holding;
        if holding {
            count.fetch_add(1, Ordering::Relaxed);
        } else {
            count.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn health(&self) -> crate::outcome::ConsumerHealth {
        let shared = &self.link.shared;
        let h = &shared.health;
        crate::outcome::ConsumerHealth {
            running: matches!(*shared.state.borrow(), DriverState::Running),
            assigned_partitions: shared.counters.assigned_partitions.load(Ordering::Relaxed),
            since_pulled: h.since(&h.pulled),
            since_polled: h.since(&h.polled),
            since_committed: h.since(&h.committed),
            stalls: h.stalls.load(Ordering::Relaxed),
            last_error: h
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Tells the driver the source took a batch, so there is room for more.
    pub(crate) fn wake(&self) {
        self.link.wake();
    }

    /// With out-of-order commits: ready while fewer records than the limit
    /// are handed out and not yet covered by a committable watermark.
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        match &self.link.shared.outstanding {
            Some(outstanding) => outstanding.poll_room(cx),
            None => Poll::Ready(()),
        }
    }

    /// With out-of-order commits: takes room for up to `want` records (at
    /// least one), ready once any is free. Without: all of them at once.
    pub(crate) fn poll_reserve(&self, want: usize, cx: &mut Context<'_>) -> Poll<usize> {
        match &self.link.shared.outstanding {
            Some(outstanding) => outstanding.poll_reserve(want, cx),
            None => Poll::Ready(want),
        }
    }
}

impl Drop for DriverHandle {
    fn drop(&mut self) {
        // Never blocks: a channel send and an unpark.
        let _ = self.link.send(Command::Released);
    }
}

/// One assignment of one partition: commits made through it are checked
/// against the generation, so an offset from before a revocation is reported
/// stale instead of being committed.
///
/// Each batch carries its own copy (one allocation per batch), shared by
/// its committable offsets through a [`Counted`] whose references the
/// source takes for the whole batch at once; a counter shared by all
/// batches would have the consuming task and the committer fight over it.
#[derive(Debug, Clone)]
pub(crate) struct PartitionHandle {
    tp: TopicPartition,
    generation: u64,
    link: Arc<DriverLink>,
    /// With out-of-order commits: the acknowledgements of this assignment.
    acks: Option<Arc<AckTracker>>,
    /// What the source handed out of this assignment.
    handover: Arc<HandOver>,
    /// Counts the copies of this handle: the partition table's and one per
    /// record batch (shared by the batch's records and offsets, committer
    /// batches and commits in flight). Cloned per batch, never per record.
    copies: Arc<()>,
}

impl PartitionHandle {
    pub(crate) fn tp(&self) -> &TopicPartition {
        &self.tp
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn handover(&self) -> &HandOver {
        &self.handover
    }

    /// True while a copy of this handle other than this one exists: called
    /// on the partition table's, false means no offset of the assignment is
    /// left anywhere, so no commit of it can come.
    pub(crate) fn has_copies(&self) -> bool {
        Arc::strong_count(&self.copies) > 1
    }

    /// True when both come from the same consumer and partition (of any assignment).
    pub(crate) fn same_partition(&self, other: &PartitionHandle) -> bool {
        self.link.id == other.link.id && self.tp == other.tp
    }

    /// With out-of-order commits: records that the source is about to hand
    /// out from a batch, in offset order, whose room it took with
    /// [`DriverHandle::poll_reserve`].
    pub(crate) fn register_handed(&self, offsets: impl ExactSizeIterator<Item = i64>) {
        match (&self.acks, &self.link.shared.outstanding) {
            (Some(acks), Some(outstanding)) => acks.register_reserved(offsets, outstanding),
            // Nothing tracks this assignment's acknowledgements.
            (None, Some(outstanding)) => outstanding.release(offsets.len()),
            _ => {}
        }
    }

    /// True when the consumer tracks out-of-order acknowledgements of this
    /// assignment (`out_of_order_commits`).
    pub(crate) fn tracks_acknowledgements(&self) -> bool {
        self.acks.is_some()
    }

    /// With out-of-order commits: a committer holds the record at `offset`
    /// back; it no longer takes up the source's room, and the watermark
    /// still waits for it.
    pub(crate) fn free_room(&self, offset: i64) {
        if let (Some(acks), Some(outstanding)) = (&self.acks, &self.link.shared.outstanding) {
            acks.free_room(offset, outstanding);
        }
    }

    /// Marks the record at `offset` processed and returns the offset to
    /// commit: `offset + 1`, or with out-of-order commits the partition's
    /// watermark (`None` while an earlier record is still in flight).
    #[inline]
    pub(crate) fn ack(&self, offset: i64) -> Option<i64> {
        match (&self.acks, &self.link.shared.outstanding) {
            (Some(acks), Some(outstanding)) => acks.ack(offset, outstanding),
            _ => Some(offset + 1),
        }
    }

    /// True when both come from the same consumer.
    pub(crate) fn same_consumer(&self, other: &PartitionHandle) -> bool {
        self.link.id == other.link.id
    }

    /// Ends this consumer with `err`: the pipeline that commits for it
    /// failed. Never blocks; ignored once the consumer is closed.
    pub(crate) fn fail_consumer(&self, err: Error) {
        let _ = self.link.send(Command::Fail(err));
    }

    /// The count of revocations that wait for commits on this consumer.
    pub(crate) fn revoking(&self) -> watch::Receiver<usize> {
        self.link.shared.revoking.subscribe()
    }
}

/// `offsets` grouped by the consumer (driver) they came from, in order.
fn by_driver(offsets: CommitOffsets) -> Vec<(Arc<DriverLink>, CommitOffsets)> {
    let mut groups: Vec<(Arc<DriverLink>, CommitOffsets)> = Vec::new();
    for (handle, offset) in offsets {
        match groups.iter_mut().find(|(l, _)| l.id == handle.link.id) {
            Some((_, group)) => group.push((handle, offset)),
            None => groups.push((handle.link.clone(), vec![(handle, offset)])),
        }
    }
    groups
}

/// `offsets` grouped by the consumer they came from, in order.
pub(crate) fn by_consumer(offsets: CommitOffsets) -> Vec<CommitOffsets> {
    by_driver(offsets).into_iter().map(|(_, o)| o).collect()
}

/// Commits `offsets` (next offsets to read, each with its partition's
/// assignment), one command per consumer, and returns a future of the merged
/// outcome. The commands are sent before this returns, so dropping the
/// future does not cancel them; retriable failures are retried until
/// `retry_until`. `spaced`: a committer's batch, which waits for the
/// consumer's `min_commit_interval` even when no commit is in flight.
pub(crate) fn commit(
    offsets: CommitOffsets,
    retry_until: Instant,
    spaced: bool,
) -> impl Future<Output = Result<CommitOutcome>> + Send + 'static {
    let by_driver = by_driver(offsets);
    let replies: Vec<_> = by_driver
        .into_iter()
        .map(|(link, offsets)| {
            let (reply, rx) = oneshot::channel();
            let sent = link.send(Command::Commit {
                offsets,
                reply,
                retry_until,
                spaced,
            });
            async move {
                sent?;
                rx.await
                    .map_err(|_| Error::closed("the consumer closed before answering the commit"))?
            }
        })
        .collect();
    async move {
        let mut total = CommitOutcome::default();
        for outcome in futures::future::try_join_all(replies).await? {
            total.merge(outcome);
        }
        Ok(total)
    }
}

/// The group metadata of the consumer `handle` came from, as a transaction
/// needs it at commit time (KIP-447: the broker fences a transaction whose
/// member or generation is no longer current).
pub(crate) async fn group_metadata(handle: &PartitionHandle) -> Result<GroupMetadata> {
    let (reply, rx) = oneshot::channel();
    handle.link.send(Command::GroupMetadata(reply))?;
    rx.await
        .map_err(|_| Error::closed("the consumer closed before giving its group metadata"))?
        .ok_or_else(|| {
            Error::closed(
                "the consumer is closing or has no group: its offsets cannot be committed in a transaction",
            )
        })
}

/// Tells each consumer that a transaction committed `offsets` for it, so
/// that its revocation holds settle and its drain report counts them; the
/// merged outcome names offsets of partitions revoked meanwhile as stale.
pub(crate) async fn committed_in_transaction(offsets: CommitOffsets) -> Result<CommitOutcome> {
    let by_driver = by_driver(offsets);
    let mut total = CommitOutcome::default();
    for (link, offsets) in by_driver {
        let (reply, rx) = oneshot::channel();
        link.send(Command::CommittedInTransaction { offsets, reply })?;
        total.merge(rx.await.map_err(|_| {
            Error::closed("the consumer closed before recording the transaction's offsets")
        })?);
    }
    Ok(total)
}

/// The listener a driver calls, shared by the context and the loop.
type Listener = Option<Arc<dyn RebalanceListener>>;

#[cfg(test)]
mod tests {
    use super::*;

    /// A link whose commands go nowhere, for unit tests of the parts.
    pub(super) fn test_link(max_outstanding: Option<usize>) -> Arc<DriverLink> {
        let (commands, _) = mpsc::channel();
        Arc::new(DriverLink::new(
            next_id(),
            Target::Thread {
                commands,
                thread: std::thread::current(),
            },
            Shared::new(max_outstanding),
        ))
    }

    /// A handle of `link` for `tp` in `generation`.
    pub(super) fn test_handle(
        link: &Arc<DriverLink>,
        tp: &TopicPartition,
        generation: u64,
    ) -> Counted<PartitionHandle> {
        Counted::new(PartitionHandle {
            tp: tp.clone(),
            generation,
            link: link.clone(),
            acks: None,
            handover: Arc::new(HandOver::new()),
            copies: Arc::new(()),
        })
    }

    /// A table with `tps` assigned in generation 1.
    pub(super) fn test_table(tps: &[TopicPartition]) -> table::PartitionTable {
        let link = test_link(None);
        let mut table = table::PartitionTable::default();
        let g = table.next_generation();
        for tp in tps {
            table.insert(table::Partition::new(test_handle(&link, tp, g), None));
        }
        table
    }

    #[test]
    fn commits_to_a_closed_driver_fail_without_hanging() {
        let link = test_link(None);
        let tp = TopicPartition::new("t", 0);
        let handle = test_handle(&link, &tp, 1);
        let result = futures::executor::block_on(commit(vec![(handle, 5)], Instant::now(), false));
        assert_eq!(result.unwrap_err().kind(), crate::ErrorKind::Closed);
    }

    #[test]
    fn records_handed_out_add_up_over_live_and_ended_sources() {
        let counts = HandedOutCounts::default();
        let (a, b) = (counts.open(), counts.open());
        a.one();
        a.one();
        b.one();
        assert_eq!(counts.total(), 3);
        counts.close(&a);
        assert_eq!(counts.total(), 3, "an ended source's records still count");
        b.one();
        assert_eq!(counts.total(), 4);
        assert_eq!(
            counts.lock().1.len(),
            1,
            "the ended source's count is let go"
        );
    }
}
