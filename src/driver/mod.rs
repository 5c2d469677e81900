//! The consumer engine: one dedicated thread per consumer owns the librdkafka
//! handle and every blocking call on it. Async code talks to it through
//! commands and receives records through a bounded channel.

mod batch;
mod commit_queue;
mod context;
mod engine;
mod partition_queue;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::Thread;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use crate::committer::tracker::{Outstanding, PartitionTracker};
use crate::consumer::{CommitOutcome, ConsumerMetrics, DrainReport, Subscription};
use crate::error::{Error, Result};
use crate::record::{ConsumerRecord, TopicPartition};
use crate::settings::ConsumerSettings;

pub(crate) use engine::{spawn, Outlet};

/// What the engine hands to a source: records of one partition, in offset order.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) partition: Arc<PartitionHandle>,
    pub(crate) records: Vec<ConsumerRecord>,
}

/// One assignment of one partition: commits made through it are checked
/// against the generation, so an offset from before a revocation is reported
/// stale instead of being committed.
///
/// Each batch carries its own copy (one allocation per batch): every
/// committable offset clones it, and a counter shared by all batches would
/// have the consuming task and the committer fight over it.
#[derive(Debug, Clone)]
pub(crate) struct PartitionHandle {
    pub(crate) tp: TopicPartition,
    pub(crate) generation: u64,
    pub(crate) link: Arc<EngineLink>,
    /// With out-of-order commits: the acknowledgements of this assignment.
    pub(crate) tracker: Option<Arc<PartitionTracker>>,
    /// What the source handed out of this assignment.
    pub(crate) assignment: Arc<Assignment>,
}

/// The hand-over point between a source and the engine for one assignment:
/// the next offset after the last record the source handed to the user, or
/// released. A record is handed only while the assignment is not released,
/// so once the engine releases a partition, no record of it reaches the
/// user, and every record that did is known to the engine.
#[derive(Debug)]
pub(crate) struct Assignment {
    handed_next: AtomicI64,
}

impl Assignment {
    const NONE: i64 = -1;
    const RELEASED: i64 = i64::MIN;

    pub(crate) fn new() -> Self {
        Assignment {
            handed_next: AtomicI64::new(Self::NONE),
        }
    }

    /// Called by the source before it hands out the record at `offset`;
    /// false once the partition is released (the record must be dropped).
    #[inline]
    pub(crate) fn hand(&self, offset: i64) -> bool {
        let current = self.handed_next.load(Ordering::Acquire);
        current != Self::RELEASED
            && self
                .handed_next
                .compare_exchange(current, offset + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// True once released.
    pub(crate) fn is_released(&self) -> bool {
        self.handed_next.load(Ordering::Acquire) == Self::RELEASED
    }

    /// The next offset after the last record handed out (`None`: nothing
    /// handed out, or released).
    pub(crate) fn handed_next(&self) -> Option<i64> {
        match self.handed_next.load(Ordering::Acquire) {
            Self::NONE | Self::RELEASED => None,
            n => Some(n),
        }
    }

    /// Releases the assignment if nothing was handed out since the engine
    /// read `handed_next`; false if the source handed more meanwhile.
    pub(crate) fn release_if(&self, handed_next: Option<i64>) -> bool {
        let expected = handed_next.unwrap_or(Self::NONE);
        self.handed_next
            .compare_exchange(
                expected,
                Self::RELEASED,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Releases the assignment whatever was handed out; returns that.
    pub(crate) fn release(&self) -> Option<i64> {
        match self.handed_next.swap(Self::RELEASED, Ordering::AcqRel) {
            Self::NONE | Self::RELEASED => None,
            n => Some(n),
        }
    }
}

/// The command path to an engine. Held by partition handles (and so by every
/// committable offset); does not keep the engine alive.
#[derive(Debug)]
pub(crate) struct EngineLink {
    pub(crate) id: u64,
    commands: mpsc::Sender<Command>,
    thread: Thread,
    pub(crate) shared: Arc<Shared>,
}

impl EngineLink {
    pub(crate) fn send(&self, command: Command) -> Result<()> {
        self.commands
            .send(command)
            .map_err(|_| Error::closed("the consumer is closed"))?;
        self.thread.unpark();
        Ok(())
    }

    pub(crate) fn wake(&self) {
        self.thread.unpark();
    }
}

/// A user's hold on an engine (the source stream and each `Control`). When the
/// last one is dropped, the engine closes the consumer on its own thread.
#[derive(Debug)]
pub(crate) struct EngineHandle {
    pub(crate) link: Arc<EngineLink>,
    pub(crate) close_timeout: Duration,
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        // Never blocks: a channel send and an unpark.
        let _ = self.link.send(Command::Released);
    }
}

/// Offsets to commit for one engine: the partition's assignment and the next
/// offset to read (last processed + 1).
pub(crate) type CommitRequest = Vec<(Arc<PartitionHandle>, i64)>;

#[derive(Debug)]
pub(crate) enum Command {
    Commit {
        offsets: CommitRequest,
        reply: Option<oneshot::Sender<Result<CommitOutcome>>>,
        /// Retriable failures are retried (with backoff) until then.
        retry_until: Option<Instant>,
    },
    Stop,
    Drain {
        deadline: Instant,
        reply: oneshot::Sender<DrainReport>,
    },
    Shutdown,
    /// A source was dropped: nothing more is delivered to it.
    SourceDropped {
        scope: SourceScope,
    },
    Released,
}

/// Which stream a dropped source was.
#[derive(Debug)]
pub(crate) enum SourceScope {
    /// The single stream of a non-partitioned source.
    All,
    /// The stream of sub-streams of a partitioned source.
    Assignments,
    /// One partition's sub-stream (of one assignment).
    Partition(Arc<Assignment>),
}

/// Where the engine delivers records.
#[derive(Debug)]
pub(crate) enum Output {
    /// Every partition into one stream.
    Single(tokio::sync::mpsc::Sender<Batch>),
    /// A sub-stream per assigned partition, announced on this channel.
    Partitioned(tokio::sync::mpsc::UnboundedSender<SubSource>),
}

/// A partition's sub-stream as the engine announces it.
#[derive(Debug)]
pub(crate) struct SubSource {
    pub(crate) tp: TopicPartition,
    pub(crate) assignment: Arc<Assignment>,
    pub(crate) rx: tokio::sync::mpsc::Receiver<Batch>,
}

/// Lifecycle of an engine, observed through `Control`.
#[derive(Debug, Clone)]
pub(crate) enum EngineState {
    Running,
    Stopped,
    Closed(Result<()>),
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) records: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) assigned_partitions: AtomicU64,
    pub(crate) assignments: AtomicU64,
    pub(crate) revocations: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) commit_failures: AtomicU64,
    pub(crate) commit_retries: AtomicU64,
    pub(crate) commits_in_flight: AtomicU64,
    pub(crate) offsets_committed: AtomicU64,
    pub(crate) offsets_stale: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) state: watch::Sender<EngineState>,
    pub(crate) counters: Counters,
    /// With out-of-order commits: offsets handed out and not yet committable.
    pub(crate) outstanding: Option<Outstanding>,
    /// How many revocations wait for commits; committers flush at once
    /// while it is above zero.
    pub(crate) revoking: watch::Sender<usize>,
}

impl Shared {
    pub(crate) fn metrics(&self) -> ConsumerMetrics {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ConsumerMetrics {
            records: get(&c.records),
            batches: get(&c.batches),
            assigned_partitions: get(&c.assigned_partitions),
            assignments: get(&c.assignments),
            revocations: get(&c.revocations),
            commits: get(&c.commits),
            commit_failures: get(&c.commit_failures),
            commit_retries: get(&c.commit_retries),
            commits_in_flight: get(&c.commits_in_flight),
            offsets_committed: get(&c.offsets_committed),
            offsets_stale: get(&c.offsets_stale),
        }
    }
}

/// What `spawn` needs to know.
#[derive(Debug)]
pub(crate) struct EngineConfig {
    pub(crate) settings: ConsumerSettings,
    pub(crate) subscription: Subscription,
    pub(crate) committable: bool,
    pub(crate) partitioned: bool,
}

pub(crate) fn next_engine_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
